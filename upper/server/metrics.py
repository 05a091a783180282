"""Prometheus metrics (``--metrics-port``), with ``prometheus_client``'s multiprocess mode.

Every serving process (the single process, or each worker) writes its figures
to files in one directory (``PROMETHEUS_MULTIPROC_DIR``, made at start and
removed at exit); the main process serves ``/metrics`` with a
``MultiProcessCollector`` that adds them up. So one scrape gives totals over
every worker, including those replaced after a crash or a reload: a counter's
file outlives its process. The open-connections gauge is a ``livesum``, and
the supervisor calls ``worker_exited`` for each worker it reaps, so a dead
worker's connections stop counting as open.

Process metrics (open descriptors against their limit, resident memory, CPU) are
read from ``/proc`` at each scrape, by prometheus_client's ``ProcessCollector``:
``process_*`` is the process serving ``/metrics`` (the server itself in a single
process, the supervisor with ``--workers``), and ``upper_worker_process_*`` has one
series per worker, labelled by ``pid``. Per worker rather than summed: each worker
has its own open-file limit, and that ratio, not a total, is what runs out. Where
there is no ``/proc`` (macOS, Windows) they are absent.

Nothing runs per message: the server's ``ServerStats`` are plain attributes,
and ``Exporter.export`` copies their growth into the metrics every
``EXPORT_INTERVAL`` seconds and once more when the server stops. Only the
session-duration histogram is fed per session, when the session ends.

``prometheus_client`` picks its multiprocess storage when it is first
imported, so ``prepare()`` must run before that; this module imports it only
inside its functions.
"""

import os
import shutil
import tempfile

DIRECTORY_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"
EXPORT_INTERVAL = 0.5
SESSION_BUCKETS = (0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 1800, float("inf"))

# (metric name, help, ServerStats field, labels) for every counter that follows a field.
COUNTERS = (
    ("upper_connections", "Connections accepted", "connections_served", {}),
    ("upper_lines_received", "Lines received from clients", "lines_in", {}),
    ("upper_lines_sent", "Lines sent to clients", "lines_out", {}),
    ("upper_bytes_received", "Bytes received from clients", "bytes_in", {}),
    ("upper_bytes_sent", "Bytes sent to clients", "bytes_out", {}),
    ("upper_idle_timeouts", "Connections closed by the idle timeout", "idle_timeouts", {}),
    ("upper_errors", "Errors, by kind", "errors", {"kind": "connection"}),
    ("upper_errors", "Errors, by kind", "accept_errors", {"kind": "accept"}),
    (
        "upper_proxy_header_rejections",
        "Connections closed for their PROXY header, by reason",
        "proxy_rejected_source",
        {"reason": "source not allowed"},
    ),
    (
        "upper_proxy_header_rejections",
        "Connections closed for their PROXY header, by reason",
        "proxy_rejected_invalid",
        {"reason": "invalid"},
    ),
    (
        "upper_proxy_header_rejections",
        "Connections closed for their PROXY header, by reason",
        "proxy_rejected_timeout",
        {"reason": "timeout"},
    ),
    ("upper_tls_handshake_failures", "TLS handshakes that failed", "failed_handshakes", {}),
    (
        "upper_tls_renegotiations_refused",
        "TLS connections closed for asking to renegotiate",
        "refused_renegotiations",
        {},
    ),
)


def prepare() -> str:
    """Make the directory every process of this server writes to; call before any import
    of ``prometheus_client``. Worker processes inherit the variable."""
    directory = tempfile.mkdtemp(prefix="upper-metrics-")
    os.environ[DIRECTORY_VARIABLE] = directory
    return directory


def remove(directory: str) -> None:
    shutil.rmtree(directory, ignore_errors=True)


def serve(host: str, port: int):
    """Serve ``/metrics`` (totals over every process) from a thread; the HTTP server.

    Raises ``OSError`` if the address cannot be listened on.
    """
    from prometheus_client import CollectorRegistry, ProcessCollector, start_http_server
    from prometheus_client.multiprocess import MultiProcessCollector

    registry = CollectorRegistry()
    MultiProcessCollector(registry)
    ProcessCollector(registry=registry)
    registry.register(WorkerProcesses())
    server, _thread = start_http_server(port, addr=host, registry=registry)
    return server


_worker_pids = tuple
"""Returns the pids of the workers now (``report_workers``); none until a supervisor runs."""


def report_workers(pids) -> None:
    """From now on ``/metrics`` shows the process figures of the workers ``pids()`` names
    (called from the scraping thread: it must only read, e.g. ``tuple(supervisor.workers)``)."""
    global _worker_pids
    _worker_pids = pids


class WorkerProcesses:
    """A collector: ``ProcessCollector``'s figures for each worker, labelled by ``pid``."""

    namespace = "upper_worker"

    def collect(self):
        from prometheus_client import ProcessCollector
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        merged = {}
        for pid in _worker_pids():
            reader = ProcessCollector(self.namespace, pid=lambda pid=pid: pid, registry=None)
            for family in reader.collect():  # nothing for a worker gone since: /proc says so
                if family.name not in merged:
                    kind = CounterMetricFamily if family.type == "counter" else GaugeMetricFamily
                    merged[family.name] = kind(family.name, family.documentation, labels=["pid"])
                for sample in family.samples:
                    merged[family.name].add_metric([str(pid)], sample.value)
        return list(merged.values())


def worker_exited(pid: int) -> None:
    """A worker is gone: its open connections no longer count (its counters still do)."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(pid)


class Exporter:
    """One serving process's metrics, fed from its ``ServerStats``."""

    def __init__(self) -> None:
        from prometheus_client import Counter, Gauge, Histogram

        counters = {}
        self._counters = []
        for name, description, field, labels in COUNTERS:
            if name not in counters:
                counters[name] = Counter(name, description, list(labels), registry=None)
            counter = counters[name].labels(**labels) if labels else counters[name]
            self._counters.append((counter, field))
        self._exported = dict.fromkeys((field for _name, _help, field, _labels in COUNTERS), 0)
        self._open = Gauge(
            "upper_connections_open",
            "Connections open now",
            registry=None,
            multiprocess_mode="livesum",
        )
        self._sessions = Histogram(
            "upper_session_duration_seconds",
            "Time from accept to close, per connection",
            buckets=SESSION_BUCKETS,
            registry=None,
        )

    def export(self, stats) -> None:
        """Add what ``stats`` gained since the last call."""
        exported = self._exported
        for counter, field in self._counters:
            value = getattr(stats, field)
            if value != exported[field]:
                counter.inc(value - exported[field])
                exported[field] = value
        self._open.set(stats.open_connections)

    def session_ended(self, seconds: float) -> None:
        self._sessions.observe(seconds)
