"""The side-by-side benchmark: ``python -m benchmarks.bench``.

Runs the project's server and the peer servers (``benchmarks.peers``) under the
same loads, one at a time, each server pinned to one CPU and the load driver
pinned to the others. The driver is the native one (``benchmarks/native``, C
on epoll, built on first use); ``--driver python`` (or a machine without a C
compiler) uses the Python driver (``benchmarks.driver``) instead, and every
output then says so, because that driver saturates its core before the fast
servers do. Runs alternate between servers, and every figure is the median of
``--runs`` runs. Prints a markdown table and writes it, the raw results (JSON)
and a chart (PNG) to ``--output``.

By default the servers are those the comparison is about: ``upper``, as
``python -m upper_server`` runs (lines and bytes are not counted unless
reported); ``upper-counting``, the same with the counters on (as with
``--stats-interval`` or ``--metrics-port``); the
leanest greenlet handler, ``gevent-lean`` (the green-thread model with every
feature taken out: upper against it is what the features cost); uvloop's
``Protocol`` (the model against the fastest Python event loop); asyncio's
``Protocol``. ``--servers`` picks any of them and the other peers.

Figures per server and load: verified messages per second and its ratio to
uvloop-protocol and to gevent-lean, p50 and p99 round-trip latency, server
CPU microseconds per message (measured over the driver's window), the
driver's own CPU (a row where it was 90 % busy or more is marked
driver-bound: there the driver may be what limits the rate) and the
server's (a row where neither is near 100 % was limited by something else,
such as other processes on a shared machine), RSS per idle
connection read ``--settle`` seconds (default 5) after the last reply, errors.

Loads 6 and 7, ping-pong and idle memory over TLS, give every TLS-capable server (``upper`` and the
asyncio/uvloop peers, with their framework's own ``ssl=`` transport) a test
certificate made for the run (trustme), and drives it with the native driver's
OpenSSL build (``--tls-cafile``: the certificate is verified, every reply
checked byte by byte). Servers without TLS show "no TLS option" there.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from benchmarks.native import LoadDriver, NativeDriverUnavailable, driver_binary, load_driver
from benchmarks.peers import NATIVE_PEERS, PEERS, TLS_PEERS
from upper.server.launcher import ServerFailedToStart, ServerProcess

UPPER = [sys.executable, "-m", "upper_server", "--log-level", "warning"]
SERVERS: dict[str, list[str]] = {
    "upper": UPPER,
    # Counting lines and bytes, as with --metrics-port; an hourly stats line never comes.
    "upper-counting": [*UPPER, "--stats-interval", "3600"],
    **PEERS,
    **NATIVE_PEERS,
}
DEFAULT_SERVERS = [
    "upper", "upper-counting", "gevent-lean", "uvloop-protocol", "asyncio-protocol", "c-epoll",
]
TLS_SERVERS = {"upper", "upper-counting", *TLS_PEERS}
"""The servers that take ``--tls-cert FILE --tls-key FILE``; the others skip TLS loads."""
RATIO_BASES = ("uvloop-protocol", "gevent-lean")
"""Every figure is also given as a ratio to these servers' (when they ran)."""
DRIVER_BOUND = 0.9
"""A row where the driver's CPU was at least this busy is marked driver-bound."""
DEFAULT_SETTLE = 5.0
STARTUP_TIMEOUT = 20.0


@dataclass(frozen=True)
class Load:
    name: str
    title: str
    driver_args: tuple[str, ...]
    duration: float
    warmup: float = 1.0
    idle: bool = False
    settle: float = 0.0
    """Idle: seconds of silence after the last reply before the server's RSS is read."""
    tls: bool = False
    """Over TLS: the server gets a certificate, the driver (native, OpenSSL build) verifies it."""


LOADS = [
    Load("pingpong", "1. ping-pong: 50 conns, one 16 B line in flight",
         ("--mode", "pingpong", "--connections", "50", "--line-size", "16"), 4.0),
    Load("pipelined", "2. pipelined: 50 conns, 16 lines of 64 B per round trip",
         ("--mode", "pipeline", "--connections", "50", "--lines-per-round", "16",
          "--line-size", "64"), 4.0),
    Load("c10k", "3. C10K: 10,000 conns in ping-pong",
         ("--mode", "pingpong", "--connections", "10000", "--line-size", "16",
          "--connect-rate", "5000", "--ramp-timeout", "30"), 5.0, warmup=2.0),
    Load("churn", "4. churn: 200 conns, 5 messages, DESCONEXION, reconnect",
         ("--mode", "churn", "--connections", "200", "--messages-per-connection", "5",
          "--line-size", "16"), 4.0),
    Load("idle", "5. idle memory: 10,000 idle conns",
         ("--mode", "idle", "--connections", "10000", "--connect-rate", "5000",
          "--ramp-timeout", "30"), 2.0, warmup=0.0, idle=True, settle=DEFAULT_SETTLE),
    Load("pingpong-tls", "6. ping-pong over TLS: 50 conns, one 16 B line in flight",
         ("--mode", "pingpong", "--connections", "50", "--line-size", "16"), 4.0, tls=True),
    Load("idle-tls", "7. idle memory over TLS: 10,000 idle conns",
         ("--mode", "idle", "--connections", "10000", "--connect-rate", "5000",
          "--ramp-timeout", "30"), 2.0, warmup=0.0, idle=True, settle=DEFAULT_SETTLE, tls=True),
]
HOLD_19K = Load("hold19k", "19,000 concurrent connections in one process",
                ("--mode", "idle", "--connections", "19000", "--connect-rate", "5000",
                 "--ramp-timeout", "60"), 2.0, warmup=0.0, idle=True, settle=DEFAULT_SETTLE)


@dataclass
class Measurement:
    server: str
    load: str
    messages_per_s: float = 0.0
    p50_us: float = 0.0
    p99_us: float = 0.0
    server_cpu_us_per_message: float = 0.0
    server_user_us_per_message: float = 0.0
    """The part of it in user space: the rest is the kernel's (TCP, epoll), which differs
    little between servers, so this is where they differ (docs/performance.md)."""
    server_cpu_frac: float = 0.0
    rss_per_connection: float = 0.0
    connections: int = 0
    errors: int = 0
    driver_cpu_frac: float = 0.0
    driver_saturated: bool = False
    failed: str = ""
    raw: dict = field(default_factory=dict)


_CERTIFICATES: list[Path] = []


def tls_files() -> tuple[Path, Path, Path]:
    """(certificate, key, CA) for 127.0.0.1, made once per run with trustme (test CA)."""
    if not _CERTIFICATES:
        import trustme

        folder = Path(tempfile.mkdtemp(prefix="upper-bench-tls-"))
        ca = trustme.CA()
        leaf = ca.issue_cert("127.0.0.1", "localhost")
        for name, blob in (("cert.pem", leaf.cert_chain_pems[0]),
                           ("key.pem", leaf.private_key_pem), ("ca.pem", ca.cert_pem)):
            blob.write_to_path(str(folder / name))
            _CERTIFICATES.append(folder / name)
    cert, key, ca = _CERTIFICATES
    return cert, key, ca


def start_server(name: str, cpu: int, extra: tuple[str, ...] = ()) -> ServerProcess:
    command = [*SERVERS[name], "--host", "127.0.0.1", "--port", "0", *extra]
    # A file, not a pipe: a pipe nobody reads during the run could fill and stall the
    # server; the file still tells why a server did not start.
    stderr = tempfile.TemporaryFile(prefix=f"upper-bench-{name}-")
    return ServerProcess(command=command, cpu=cpu, stderr=stderr).start(STARTUP_TIMEOUT)


def cpu_seconds(process: psutil.Process) -> float:
    times = process.cpu_times()
    return times.user + times.system + times.children_user + times.children_system


def user_cpu_seconds(process: psutil.Process) -> float:
    times = process.cpu_times()
    return times.user + times.children_user


def measure(
    name: str, load: Load, server_cpu: int, driver_cpus: set[int], driver: LoadDriver
) -> Measurement:
    result = Measurement(name, load.name)
    server_args: tuple[str, ...] = ()
    driver_command = driver.command
    if load.tls:
        if name not in TLS_SERVERS:
            result.failed = "no TLS option"
            return result
        try:
            driver_command = (str(driver_binary(tls=True)),)
        except NativeDriverUnavailable as exc:
            result.failed = f"TLS load: {exc}"
            return result
        cert, key, ca = tls_files()
        server_args = ("--tls-cert", str(cert), "--tls-key", str(key))
        driver_command = (*driver_command, "--tls-cafile", str(ca))
    try:
        server = start_server(name, server_cpu, server_args)
        port = server.port
    except ServerFailedToStart as exc:
        result.failed = str(exc)
        return result
    process = None
    try:
        watched = psutil.Process(server.pid)
        time.sleep(0.3)
        rss_before = watched.memory_info().rss
        command = [
            *driver_command, "--port", str(port),
            "--duration", str(load.duration), "--warmup", str(load.warmup),
            *load.driver_args,
        ]
        if load.idle:
            command += ["--settle", str(load.settle)]
        process = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            preexec_fn=lambda: os.sched_setaffinity(0, driver_cpus),
        )
        cpu_start = cpu_end = user_start = user_end = None
        rss_loaded = rss_before
        complaints = []
        for line in process.stderr:
            event = _event(line)
            if event == "measuring":
                cpu_start, user_start = cpu_seconds(watched), user_cpu_seconds(watched)
                if load.idle:  # the connections have been silent for load.settle seconds
                    rss_loaded = watched.memory_info().rss
            elif event == "measured":
                cpu_end, user_end = cpu_seconds(watched), user_cpu_seconds(watched)
                if not load.idle:
                    rss_loaded = watched.memory_info().rss
            elif event is None and line.strip():
                complaints.append(line.strip())
        output, _ = process.communicate(timeout=load.duration + load.warmup + load.settle + 180)
        if process.returncode != 0:
            result.failed = f"driver exit {process.returncode}: {' '.join(complaints)[-200:]}"
            return result
        raw = json.loads(output)
    except (subprocess.TimeoutExpired, json.JSONDecodeError, psutil.Error) as exc:
        result.failed = f"{type(exc).__name__}: {exc}"
        return result
    finally:
        if process is not None and process.poll() is None:
            process.kill()
            process.communicate()
        server.stop()
    result.raw = raw
    result.errors = raw.get("errors", 0)
    result.connections = raw.get("connections", 0)
    result.driver_cpu_frac = raw.get("driver_cpu_frac") or 0.0
    result.driver_saturated = not load.idle and result.driver_cpu_frac >= DRIVER_BOUND
    if load.idle:
        verified = raw.get("verified", 0)
        result.connections = verified
        result.errors += raw.get("connections_target", 0) - verified
        if verified:
            result.rss_per_connection = (rss_loaded - rss_before) / verified
        return result
    result.messages_per_s = raw.get("messages_per_s") or 0.0
    result.p50_us = raw.get("p50_us") or 0.0
    result.p99_us = raw.get("p99_us") or 0.0
    if cpu_start is not None and cpu_end is not None and raw.get("messages"):
        result.server_cpu_us_per_message = (cpu_end - cpu_start) * 1e6 / raw["messages"]
        result.server_user_us_per_message = (user_end - user_start) * 1e6 / raw["messages"]
    if cpu_start is not None and cpu_end is not None and raw.get("seconds"):
        result.server_cpu_frac = (cpu_end - cpu_start) / raw["seconds"]
    return result


def _event(line: str) -> str | None:
    try:
        return json.loads(line).get("event")
    except (json.JSONDecodeError, AttributeError):
        return None


def median_of(runs: list[Measurement]) -> Measurement:
    good = [run for run in runs if not run.failed] or runs
    first = good[0]
    pick = lambda attribute: statistics.median(getattr(run, attribute) for run in good)  # noqa: E731
    return Measurement(
        first.server,
        first.load,
        messages_per_s=pick("messages_per_s"),
        p50_us=pick("p50_us"),
        p99_us=pick("p99_us"),
        server_cpu_us_per_message=pick("server_cpu_us_per_message"),
        server_user_us_per_message=pick("server_user_us_per_message"),
        server_cpu_frac=pick("server_cpu_frac"),
        rss_per_connection=pick("rss_per_connection"),
        connections=min(run.connections for run in good),
        errors=max(run.errors for run in good),
        driver_cpu_frac=pick("driver_cpu_frac"),
        driver_saturated=any(run.driver_saturated for run in good),
        failed="; ".join(sorted({run.failed for run in runs if run.failed})),
    )


def ratio(value: float, base: float | None) -> str:
    """``value / base`` as ``0.82x``; a dash when there is nothing to compare with."""
    if not base or not value:
        return "–"
    return f"{value / base:.2f}x"


def markdown_table(
    results: dict[str, dict[str, Measurement]], loads: list[Load], driver: LoadDriver
) -> str:
    bases = [base for base in RATIO_BASES if base in results]
    lines = []
    for load in loads:
        lines.append(f"\n**{load.title}**\n")
        by_server = {server: by_load[load.name] for server, by_load in results.items()
                     if load.name in by_load}
        if load.idle:
            lines.append(
                f"RSS read {load.settle:g} s after the last reply, divided by the connections "
                "verified afterwards.\n"
            )
            lines.append("| server | connections held | RSS per connection | "
                         + "".join(f"vs {base} | " for base in bases) + "errors | note |")
            lines.append("| --- | ---: | ---: | " + "---: | " * len(bases) + "---: | --- |")
        else:
            lines.append("| server | messages/s | "
                         + "".join(f"vs {base} | " for base in bases)
                         + "p50 | p99 | server CPU/msg | of it user | server CPU | driver CPU "
                         "| errors | note |")
            lines.append("| --- | ---: | " + "---: | " * len(bases)
                         + "---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
        for server, m in by_server.items():
            notes = []
            if m.failed:
                notes.append(f"failed: {m.failed[:60]}")
            if m.driver_saturated:
                notes.append("driver-bound")
            if driver.fallback:
                notes.append("python driver (fallback)")
            note = ", ".join(notes)
            if load.idle:
                ratios = "".join(
                    f"{ratio(m.rss_per_connection, by_server[base].rss_per_connection)} | "
                    for base in bases if base in by_server
                )
                lines.append(
                    f"| {server} | {m.connections:,} | {m.rss_per_connection / 1024:.1f} KiB "
                    f"| {ratios}{m.errors} | {note} |"
                )
                continue
            ratios = "".join(
                f"{ratio(m.messages_per_s, by_server[base].messages_per_s)} | "
                for base in bases if base in by_server
            )
            lines.append(
                f"| {server} | {m.messages_per_s:,.0f} | {ratios}{m.p50_us / 1000:.2f} ms "
                f"| {m.p99_us / 1000:.2f} ms | {m.server_cpu_us_per_message:.1f} µs "
                f"| {m.server_user_us_per_message:.1f} µs "
                f"| {m.server_cpu_frac:.0%} | {m.driver_cpu_frac:.0%} | {m.errors} | {note} |"
            )
    return "\n".join(lines) + "\n"


def draw_chart(
    results: dict[str, dict[str, Measurement]], loads: list[Load], path: Path,
    driver_label: str = "",
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    servers = list(results)
    panels = [(load.name, load) for load in loads]
    if "pingpong" in results[servers[0]]:
        panels.append(("cpu", None))
    columns = 3
    rows = -(-len(panels) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(13, 3.6 * rows), squeeze=False)
    palette = {"upper": "tab:red", "upper-counting": "tab:pink", "gevent-lean": "tab:orange",
               "uvloop-protocol": "tab:blue"}
    colors = [palette.get(server, "tab:gray") for server in servers]
    for axis, (name, load) in zip(axes.flat, panels, strict=False):
        bound = [False] * len(servers)
        if load is None:
            values = [results[s]["pingpong"].server_cpu_us_per_message for s in servers]
            title = "ping-pong: server CPU µs per message\n(lower is better)"
        elif load.idle:
            values = [results[s][name].rss_per_connection / 1024 for s in servers]
            title = f"{name}: KiB per idle connection, {load.settle:g} s idle\n(lower is better)"
        else:
            values = [results[s][name].messages_per_s / 1000 for s in servers]
            bound = [results[s][name].driver_saturated for s in servers]
            title = f"{name}: thousand messages/s\n(higher is better; * driver-bound)"
        axis.set_title(title, fontsize=9)
        axis.barh(servers, values, color=colors)
        axis.invert_yaxis()
        axis.tick_params(labelsize=8)
        for y, value in enumerate(values):
            axis.text(value, y, f" {value:,.1f}{' *' if bound[y] else ''}", va="center",
                      fontsize=7)
        axis.margins(x=0.25)
    for axis in list(axes.flat)[len(panels):]:
        axis.axis("off")
    figure.suptitle(
        f"UPPER servers, each pinned to one core, {driver_label or 'load driver'} on the other "
        f"({psutil.cpu_count()} CPUs, {platform.machine()}); median of runs",
        fontsize=10,
    )
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def replot(results_json: Path, output: Path) -> None:
    """Draw the chart again from a saved ``bench.json``, without measuring."""
    saved = json.loads(results_json.read_text())
    results = {
        server: {name: Measurement(**fields) for name, fields in by_load.items()}
        for server, by_load in saved["results"].items()
    }
    loads = [load for load in LOADS if load.name in next(iter(saved["results"].values()))]
    draw_chart(results, loads, output, saved.get("driver", ""))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.bench", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--servers", nargs="+", choices=list(SERVERS), default=DEFAULT_SERVERS,
                        help=f"default: {' '.join(DEFAULT_SERVERS)}")
    parser.add_argument("--loads", nargs="+", choices=[load.name for load in LOADS],
                        default=[load.name for load in LOADS])
    parser.add_argument("--driver", choices=("native", "python"), default="native",
                        help="load driver: native (C, built on first use; default) or the "
                             "Python fallback")
    parser.add_argument("--runs", type=int, default=3, help="runs per figure (median)")
    parser.add_argument("--scale", type=float, default=1.0,
                        help="multiply durations (0.3 for a quick look)")
    parser.add_argument("--settle", type=float, default=DEFAULT_SETTLE,
                        help="idle: seconds after the last reply before reading RSS (default 5)")
    parser.add_argument("--hold-19k", action="store_true",
                        help="also check that the project's server holds 19,000 connections")
    parser.add_argument("--output", type=Path, default=Path("bench-results"))
    parser.add_argument("--replot", type=Path, metavar="BENCH_JSON",
                        help="only redraw the chart from a saved bench.json into --output")
    args = parser.parse_args(argv)
    if args.replot:
        args.output.mkdir(parents=True, exist_ok=True)
        replot(args.replot, args.output / "bench.png")
        return 0

    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        parser.error("needs at least 2 CPUs: one for the server, the rest for the driver")
    server_cpu, driver_cpus = cpus[0], set(cpus[1:])
    driver = load_driver(args.driver)
    if driver.fallback and args.driver == "native":
        print(f"bench: {driver.why_fallback}", file=sys.stderr)
    print(f"bench: load driver: {driver.label}", file=sys.stderr)
    loads = [
        dataclasses.replace(
            load, duration=max(1.0, load.duration * args.scale),
            warmup=max(0.5, load.warmup * args.scale) if not load.idle else load.warmup,
            settle=args.settle if load.idle else 0.0)
        for load in LOADS if load.name in args.loads
    ]
    runs: dict[tuple[str, str], list[Measurement]] = {}
    for run in range(1, args.runs + 1):
        for load in loads:
            # Alternate servers within each run so drift on the machine hits all alike.
            order = args.servers if run % 2 else list(reversed(args.servers))
            for server in order:
                m = measure(server, load, server_cpu, driver_cpus, driver)
                runs.setdefault((server, load.name), []).append(m)
                figure = (f"{m.rss_per_connection / 1024:.1f} KiB/conn" if load.idle
                          else f"{m.messages_per_s:,.0f} msg/s p99 {m.p99_us / 1000:.2f} ms "
                               f"CPU server {m.server_cpu_frac:.0%} driver {m.driver_cpu_frac:.0%}")
                print(f"run {run} {load.name:9s} {server:17s} {figure} errors={m.errors}"
                      f"{' FAILED ' + m.failed if m.failed else ''}", file=sys.stderr, flush=True)
    results = {
        server: {load.name: median_of(runs[(server, load.name)]) for load in loads}
        for server in args.servers
    }
    extra = ""
    if args.hold_19k and "upper" in args.servers:
        hold = dataclasses.replace(HOLD_19K, settle=args.settle)
        held = measure("upper", hold, server_cpu, driver_cpus, driver)
        extra = (f"\n**{HOLD_19K.title}**: upper held {held.connections:,} verified connections, "
                 f"{held.errors} errors, {held.rss_per_connection / 1024:.1f} KiB each "
                 f"({args.settle:g} s after the last reply).\n")
        results_19k = {"upper": held.__dict__}
    else:
        results_19k = {}
    saturated = sorted({f"{server}/{load}" for server, by_load in results.items()
                        for load, m in by_load.items() if m.driver_saturated})
    header = (
        f"Machine: {psutil.cpu_count()} CPUs, {platform.machine()}, Linux "
        f"{platform.release()}, Python {platform.python_version()}. Server on CPU {server_cpu}, "
        f"driver on CPU(s) {sorted(driver_cpus)}; median of {args.runs} run(s).\n"
        f"Load driver: {driver.label}.\n"
        f"Command: `python -m benchmarks.bench "
        f"{' '.join(sys.argv[1:] if argv is None else argv)}`\n"
    )
    if saturated:
        header += (f"\nThe driver was {DRIVER_BOUND:.0%} busy or more (driver-bound) in: "
                   + ", ".join(saturated) + ". There the messages/s figures measure the driver "
                   "as much as the server; server CPU per message is the fairer comparison.\n")
    table = header + markdown_table(results, loads, driver) + extra
    print(table)
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "bench.md").write_text(table)
    (args.output / "bench.json").write_text(json.dumps(
        {"driver": driver.label,
         "results": {server: {load: m.__dict__ for load, m in by_load.items()}
                     for server, by_load in results.items()},
         "hold19k": results_19k}, indent=1, default=str))
    draw_chart(results, loads, args.output / "bench.png", driver.label)
    print(f"wrote {args.output / 'bench.md'}, {args.output / 'bench.png'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
