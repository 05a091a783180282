"""A second, independent load driver: ``python -m benchmarks.tsung_bench``.

Tsung (Debian's ``tsung``, Erlang) is a load tool a user could pick on their own;
it speaks raw TCP (``ts_raw``) and is built for many connections. This script
drives the benchmark's servers (``benchmarks.bench.SERVERS``) with it, under the
two loads where upper trails uvloop, and prints a markdown table:

- ``churn``: sessions arrive at ``--rate`` per second (open loop, unlike the
  project's driver, whose 200 connections reconnect as fast as they can); each
  sends 5 lines one at a time, waiting for each reply, then ``DESCONEXION``, and
  closes. Tsung's Erlang VM starts users more slowly than it is asked to on a
  small machine, and reaches its own CPU limit long before a server does: so
  the column to compare servers by is the server's CPU per request (connection
  set-up and teardown included), at the same offered load.
- ``c10k``: 10,000 sessions arrive at 5,000 a second and each keeps one line in
  flight (ping-pong) until the run ends.

What it can and cannot check: a reply must *contain* the uppercase line
(Tsung's ``match``: mismatches are counted), but it is not compared byte for
byte, and a reply is whatever one read returned. So its figures are rates and
latencies; the project's driver is the one that verifies every byte.
Latency is Tsung's per-request sample (``backend="fullstats"``: every one is
kept), from the send to the first bytes back, in milliseconds with microsecond
resolution; percentiles are computed here over the whole run, ramp included.

The server is pinned to CPU 0, Tsung to the others (``taskset``), as in
``benchmarks.bench``; Tsung's own CPU is reported so a driver-bound row shows.
Load only 127.0.0.1; every run is bounded by ``--duration``.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

from benchmarks.bench import SERVERS, cpu_seconds, start_server
from upper.server.launcher import ServerFailedToStart

LINE = "hola servidor 0123"
DTD = "/usr/share/tsung/tsung-1.0.dtd"


def config(load: str, port: int, duration: float, rate: int) -> str:
    """Tsung's XML for one run of ``load`` against 127.0.0.1:``port``."""
    request = (
        f'<request><match do="continue" when="nomatch">{LINE.upper()}</match>'
        f'<raw data="{LINE}&#10;" ack="local"/></request>'
    )
    if load == "churn":
        arrival = f'<users arrivalrate="{rate}" unit="second"/>'
        phase = duration
        session = f'<for from="1" to="5" var="i">{request}</for>' \
            '<request><raw data="DESCONEXION&#10;" ack="no_ack"/></request>'
    elif load == "c10k":
        arrival = '<users arrivalrate="5000" unit="second" maxnumber="10000"/>'
        phase = 2
        session = f'<for from="1" to="100000000" var="i">{request}</for>'
    else:
        raise ValueError(load)
    return f"""<?xml version="1.0"?>
<!DOCTYPE tsung SYSTEM "{DTD}">
<tsung loglevel="error" dumptraffic="false" backend="fullstats">
  <clients><client host="localhost" use_controller_vm="true" maxusers="60000"/></clients>
  <servers><server host="127.0.0.1" port="{port}" type="tcp"/></servers>
  <load duration="{int(duration)}" unit="second">
    <arrivalphase phase="1" duration="{int(phase)}" unit="second">{arrival}</arrivalphase>
  </load>
  <sessions><session name="{load}" probability="100" type="ts_raw">{session}</session></sessions>
</tsung>
"""


@dataclass
class Run:
    server: str
    load: str
    requests: int = 0
    sessions: int = 0
    matches: int = 0
    mismatches: int = 0
    server_cpu_us_per_request: float = 0.0
    seconds: float = 0.0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    mean_ms: float = 0.0
    driver_cpu_frac: float = 0.0
    server_cpu_frac: float = 0.0
    failed: str = ""

    @property
    def requests_per_s(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


_ENTRY = re.compile(r"\{(sample|sum),(\w+),\s*(\[[^\]]*\]|\d+)\}")
"""``{sample,NAME,[ms, ...]}`` and ``{sum,NAME,COUNT}``: one of each per name in
every periodic dump of ``tsung-fullstats.log``."""


def read_logs(folder: Path) -> tuple[dict[str, list[float]], dict[str, int]]:
    """Every sample (ms) and the total of every counter, by name (``request``,
    ``connect``, ``nomatch``: replies without the uppercase line).

    Both come from ``tsung-fullstats.log``, from the same dumps, where they
    agreed in every run checked; ``tsung.log``'s last dump is another
    snapshot, and once gave 685 mismatches for 870 samples under load."""
    (run_folder,) = [p for p in folder.iterdir() if p.is_dir()]
    full = (run_folder / "tsung-fullstats.log").read_text()
    samples: dict[str, list[float]] = {}
    totals: dict[str, int] = {}
    for kind, name, value in _ENTRY.findall(full):
        if kind == "sample":
            samples.setdefault(name, []).extend(
                float(x) for x in value.strip("[]").split(",") if x.strip())
        else:
            totals[name] = totals.get(name, 0) + int(value)
    return samples, totals


def measure(tsung: str, name: str, load: str, duration: float, rate: int, cpus: set[int]) -> Run:
    result = Run(name, load)
    try:
        server = start_server(name, 0)
    except ServerFailedToStart as exc:
        result.failed = str(exc)
        return result
    with tempfile.TemporaryDirectory(prefix="upper-tsung-") as folder:
        folder = Path(folder)
        (folder / "run.xml").write_text(config(load, server.port, duration, rate))
        watched = psutil.Process(server.pid)
        server_before = cpu_seconds(watched)
        started = time.monotonic()
        process = subprocess.Popen(
            # -n: no web GUI (it would take port 8091); -i: a controller of its own, so
            # two runs at once (parallel tests) do not meet.
            [tsung, "-n", "-i", f"upper{os.getpid()}", "-f", str(folder / "run.xml"),
             "-l", str(folder / "log"), "start"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            # Erlang leaves erl_crash.dump in its working directory when stopped
            # abnormally: keep it in the throwaway folder, not the user's.
            cwd=folder,
            preexec_fn=lambda: os.sched_setaffinity(0, cpus),
        )
        driver = psutil.Process(process.pid)
        driver_cpu = 0.0
        try:
            while process.poll() is None:
                # Tsung's Erlang VM is a child of its start script: sum the tree.
                driver_cpu = max(driver_cpu, sum(
                    cpu_seconds(p) for p in [driver, *driver.children(recursive=True)]
                    if p.is_running()
                ))
                if time.monotonic() - started > duration + 120:
                    process.kill()
                    result.failed = "tsung did not finish"
                    return result
                time.sleep(0.2)
        except psutil.Error:
            pass
        finally:
            elapsed = time.monotonic() - started
            server_after = cpu_seconds(watched)
            server.stop()
        if process.returncode != 0:
            result.failed = f"tsung exit {process.returncode}"
            return result
        by_name, totals = read_logs(folder / "log")
    samples = by_name.get("request", [])
    if not samples:
        result.failed = "no request completed"
        return result
    samples.sort()
    result.requests = len(samples)
    result.sessions = len(by_name.get("connect", []))
    result.server_cpu_us_per_request = (server_after - server_before) * 1e6 / len(samples)
    result.matches = totals.get("match", 0)
    result.mismatches = totals.get("nomatch", 0)
    result.seconds = float(duration)
    result.mean_ms = statistics.fmean(samples)
    result.p50_ms = samples[len(samples) // 2]
    result.p99_ms = samples[min(len(samples) - 1, int(len(samples) * 0.99))]
    result.driver_cpu_frac = driver_cpu / elapsed / max(1, len(cpus))
    result.server_cpu_frac = (server_after - server_before) / elapsed
    return result


def table(runs: list[Run]) -> str:
    lines = [
        "| load | server | sessions | requests/s | p50 ms | p99 ms | mismatches "
        "| server CPU µs/request | server CPU | tsung CPU |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for run in runs:
        if run.failed:
            lines.append(f"| {run.load} | {run.server} | {run.failed} | | | | | | | |")
            continue
        bound = " (driver-bound)" if run.driver_cpu_frac >= 0.9 else ""
        lines.append(
            f"| {run.load} | {run.server} | {run.sessions:,} | {run.requests_per_s:,.0f} | "
            f"{run.p50_ms:.3f} | {run.p99_ms:.3f} | {run.mismatches} | "
            f"{run.server_cpu_us_per_request:.1f} | {run.server_cpu_frac:.0%} | "
            f"{run.driver_cpu_frac:.0%}{bound} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.tsung_bench", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--servers", nargs="+", choices=sorted(SERVERS),
                        default=["upper", "uvloop-protocol", "gevent-lean", "c-epoll"])
    parser.add_argument("--loads", nargs="+", default=["churn", "c10k"], choices=["churn", "c10k"])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per run")
    parser.add_argument("--rate", type=int, default=4000, help="churn sessions arriving per second")
    parser.add_argument("--runs", type=int, default=1, help="alternating runs per server and load")
    args = parser.parse_args(argv)
    tsung = shutil.which("tsung")
    if tsung is None:
        print("tsung_bench: tsung is not installed (Debian: apt-get install tsung)",
              file=sys.stderr)
        return 1
    cpus = sorted(os.sched_getaffinity(0))
    driver_cpus = set(cpus[1:]) or set(cpus)
    runs = []
    for load in args.loads:
        for _ in range(args.runs):
            for name in args.servers:
                run = measure(tsung, name, load, args.duration, args.rate, driver_cpus)
                print(f"{load} {name}: {run.requests_per_s:,.0f} requests/s "
                      f"p99 {run.p99_ms:.3f} ms {run.failed}", file=sys.stderr, flush=True)
                runs.append(run)
    print(table(runs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
