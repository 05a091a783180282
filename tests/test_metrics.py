"""--metrics-port: the Prometheus text format, scraped over HTTP, against known sessions."""

import signal
import socket
import subprocess
import sys
import urllib.request

import psutil
import pytest
from helpers import eventually, free_port, read_until_eof, require_tool, wait_for_workers
from prometheus_client.parser import text_string_to_metric_families

TIMEOUT = 10.0
LINES = (b"uno\n", b"dos\n", b"tres\n")


def scrape(port: int) -> dict[tuple, float]:
    """{(sample name, sorted labels): value} from http://127.0.0.1:PORT/metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=TIMEOUT) as reply:
        assert reply.status == 200
        assert reply.headers["Content-Type"].startswith("text/plain")
        text = reply.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def run_sessions(address, count: int) -> None:
    for _ in range(count):
        with socket.create_connection(address, timeout=TIMEOUT) as sock:
            sock.sendall(b"".join(LINES) + b"DESCONEXION\n")
            assert read_until_eof(sock) == b"".join(LINES).upper()


def figures_reach(port: int, sessions: int) -> bool:
    """Whether the scrape shows exactly ``sessions`` finished sessions of ``run_sessions``."""
    metrics = scrape(port)
    sent = sum(len(line) for line in LINES)
    expected = {
        ("upper_connections_total", ()): sessions,
        ("upper_lines_received_total", ()): sessions * (len(LINES) + 1),
        ("upper_lines_sent_total", ()): sessions * len(LINES),
        ("upper_bytes_received_total", ()): sessions * (sent + len(b"DESCONEXION\n")),
        ("upper_bytes_sent_total", ()): sessions * sent,
        ("upper_session_duration_seconds_count", ()): sessions,
        ("upper_connections_open", ()): 0,
    }
    return all(metrics.get(key) == value for key, value in expected.items())


def test_single_process_counts_every_session(start_server):
    port = free_port()
    server = start_server("--metrics-port", str(port), "--log-level", "warning")
    run_sessions(server.address, 5)
    assert eventually(lambda: figures_reach(port, 5)), scrape(port)
    metrics = scrape(port)
    assert metrics[("upper_idle_timeouts_total", ())] == 0
    assert metrics[("upper_errors_total", (("kind", "connection"),))] == 0
    assert metrics[("upper_errors_total", (("kind", "accept"),))] == 0
    assert ("upper_proxy_header_rejections_total", (("reason", "timeout"),)) in metrics
    assert metrics[("upper_session_duration_seconds_bucket", (("le", "+Inf"),))] == 5
    assert server.stop() == 0


def test_workers_totals_survive_reloads_and_dead_workers(start_server, seen_workers):
    port = free_port()
    server = start_server("--workers", "2", "--metrics-port", str(port), "--log-level", "warning")
    parent = psutil.Process(server.pid)
    run_sessions(server.address, 6)
    assert eventually(lambda: figures_reach(port, 6)), scrape(port)

    before = {child.pid for child in parent.children()}
    server.send_signal(signal.SIGHUP)
    assert eventually(lambda: not {child.pid for child in parent.children()} & before)
    run_sessions(server.address, 4)
    assert eventually(lambda: figures_reach(port, 10)), scrape(port)

    # A connection held open counts as open until its worker dies, however it dies.
    held = socket.create_connection(server.address, timeout=TIMEOUT)
    held.sendall(b"hola\n")
    assert held.recv(10) == b"HOLA\n"
    open_now = ("upper_connections_open", ())
    assert eventually(lambda: scrape(port).get(open_now) == 1)
    holder = next(
        child
        for child in parent.children()
        for connection in _connections(child)
        if connection.raddr and connection.raddr.port == held.getsockname()[1]
    )
    seen_workers[holder.pid] = holder.create_time()
    holder.send_signal(signal.SIGKILL)
    assert eventually(lambda: scrape(port).get(open_now) == 0), scrape(port)
    held.close()
    run_sessions(server.address, 2)
    # The killed worker's sessions, and those of the workers a reload replaced, still count.
    assert eventually(lambda: scrape(port)[("upper_connections_total", ())] == 13), scrape(port)
    assert server.stop() == 0


def _connections(process: psutil.Process) -> list:
    try:
        return process.net_connections()
    except psutil.NoSuchProcess:  # a worker a reload retired, gone while we looked
        return []


def test_a_metrics_port_in_use_is_one_line_and_exit_1():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "upper_server", "--port", "0", "--metrics-port", str(port)],
            capture_output=True,
            text=True,
            timeout=30,
            stdin=subprocess.DEVNULL,
        )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"python -m upper_server: error: cannot serve metrics on 127.0.0.1:{port}: "
        "Address already in use"
    ]
    assert result.stdout == ""


# -- process metrics ----------------------------------------------------------------------


def open_file_limit(pid: int) -> float:
    return float(psutil.Process(pid).rlimit(psutil.RLIMIT_NOFILE)[0])


def test_single_process_reports_its_descriptors_and_memory(start_server, connect):
    port = free_port()
    server = start_server("--metrics-port", str(port), "--log-level", "warning")
    metrics = scrape(port)
    assert metrics[("process_max_fds", ())] == open_file_limit(server.pid)
    assert metrics[("process_resident_memory_bytes", ())] > 0
    assert metrics[("process_start_time_seconds", ())] == pytest.approx(
        psutil.Process(server.pid).create_time(), abs=1.0
    )
    idle = metrics[("process_open_fds", ())]
    held = [connect(server.address) for _ in range(20)]
    for sock in held:
        sock.sendall(b"hola\n")
        assert sock.recv(10) == b"HOLA\n"
    # Every connection is one descriptor of the server's, so the figure follows them.
    assert scrape(port)[("process_open_fds", ())] >= idle + len(held)
    assert not any(name.startswith("upper_worker_process_") for name, _labels in metrics)
    assert server.stop() == 0


def worker_figures(port: int, name: str) -> dict[int, float]:
    return {
        int(dict(labels)["pid"]): value
        for (sample, labels), value in scrape(port).items()
        if sample == f"upper_worker_process_{name}"
    }


def test_each_worker_reports_its_descriptors_labelled_by_pid(start_server, seen_workers):
    port = free_port()
    server = start_server("--workers", "2", "--metrics-port", str(port), "--log-level", "warning")
    parent = psutil.Process(server.pid)
    workers = wait_for_workers(parent, 2)
    seen_workers.update(workers)
    assert eventually(lambda: set(worker_figures(port, "open_fds")) == set(workers))
    assert worker_figures(port, "max_fds") == {pid: open_file_limit(pid) for pid in workers}
    assert all(value > 0 for value in worker_figures(port, "resident_memory_bytes").values())
    assert set(worker_figures(port, "cpu_seconds_total")) == set(workers)
    # The supervisor's own figures are the usual unlabelled process_* ones.
    assert scrape(port)[("process_max_fds", ())] == open_file_limit(server.pid)

    server.send_signal(signal.SIGHUP)
    replacements = wait_for_workers(parent, 2, exclude=workers)
    seen_workers.update(replacements)
    # The retired workers' series go with them; the new workers' come.
    assert eventually(lambda: set(worker_figures(port, "open_fds")) == set(replacements))
    assert server.stop() == 0


@pytest.mark.parametrize("workers", ["1", "2"])
def test_promtool_finds_the_exposition_clean(start_server, seen_workers, workers):
    promtool = require_tool("promtool", package="prometheus")
    port = free_port()
    server = start_server(
        "--workers", workers, "--metrics-port", str(port), "--log-level", "warning"
    )
    if workers == "2":
        seen_workers.update(wait_for_workers(psutil.Process(server.pid), 2))
        assert eventually(lambda: len(worker_figures(port, "open_fds")) == 2)
    run_sessions(server.address, 2)
    assert eventually(lambda: figures_reach(port, 2)), scrape(port)
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=TIMEOUT) as reply:
        text = reply.read()
    assert b"process_open_fds" in text
    result = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, timeout=30
    )
    assert (result.returncode, result.stdout, result.stderr) == (0, b"", b""), result
    assert server.stop() == 0
