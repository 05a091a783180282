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
- ``c10k``: 10,000 sessions arrive at 2,000 a second; each sends a line, waits
  for its reply, waits 2 s more (Tsung's think time), and again, until the run
  ends: 10,000 connections open and 5,000 requests a second once all are in.
  Not the project's C10K (10,000 connections, each with one line always in
  flight): Tsung cannot drive that here. Asked to, it started 280 to 451 of the
  10,000 users, its busy users starving its launcher on its one CPU.

What it can and cannot check: a reply must *contain* the uppercase line
(Tsung's ``match``: mismatches are counted), but it is not compared byte for
byte, and a reply is whatever one read returned. So its figures are rates and
latencies; the project's driver is the one that verifies every byte.
Latency is Tsung's per-request sample (``backend="fullstats"``: every one is
kept), from the send to the first bytes back, in milliseconds with microsecond
resolution; percentiles are computed here over the whole run, ramp included.

The server is pinned to CPU 0, Tsung to the others (``taskset``), as in
``benchmarks.bench``; Tsung's own CPU is reported so a driver-bound row shows,
and so are the sessions it started against those it was asked for: a row where
it started fewer than 90 % is marked "driver short".

Before each run the script waits (``--time-wait-limit``) until the machine's
TCP sockets in TIME_WAIT, which every churned connection leaves for 60 s, have
drained: with 12,613 left by the runs before, the same settings started 6,946 of
12,000 sessions instead of 11,974, and with 19,081 only 953: Tsung's CPU went
to the kernel (connect()'s search for a free local port); see
docs/performance.md. Load only 127.0.0.1; every run is bounded by ``--duration``.
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
C10K_USERS = 10_000
C10K_ARRIVALS_PER_S = 2_000
C10K_THINK_S = 2
"""Each C10K connection's pause between a reply and its next line."""
SHORT_FRACTION = 0.9
"""A run whose driver started fewer sessions than this share of those offered
measured the driver's arrival rate, not the offered load."""
SOCKSTAT = Path("/proc/net/sockstat")
TIME_WAIT_LIMIT = 1_000
TIME_WAIT_TIMEOUT_S = 90.0
"""TIME_WAIT lasts 60 s on Linux (a kernel constant): 90 s is enough for any
count to drain, and bounds the wait when something else keeps churning."""


def offered_sessions(load: str, duration: float, rate: int) -> int:
    """How many sessions ``config`` asks Tsung to start."""
    if load == "churn":
        return rate * int(duration)
    if load == "c10k":
        return C10K_USERS
    raise ValueError(load)


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
        arrival = (f'<users arrivalrate="{C10K_ARRIVALS_PER_S}" unit="second" '
                   f'maxnumber="{C10K_USERS}"/>')
        # Tsung's arrivals are random (exponential gaps): one second more, so maxnumber,
        # not the phase's end, is what stops them.
        phase = C10K_USERS // C10K_ARRIVALS_PER_S + 1
        think = f'<thinktime value="{C10K_THINK_S}" random="false"/>'
        session = f'<for from="1" to="100000000" var="i">{request}{think}</for>'
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
    offered: int = 0
    matches: int = 0
    mismatches: int = 0
    errors: int = 0
    time_wait_at_start: int | None = None
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

    @property
    def driver_short(self) -> bool:
        return self.sessions < SHORT_FRACTION * self.offered


def time_wait_sockets(sockstat: str) -> int:
    """The TCP sockets in TIME_WAIT, from the text of ``/proc/net/sockstat``
    (``TCP: inuse 1 orphan 0 tw 8 alloc 1 mem 250``); one count for IPv4 and IPv6."""
    match = re.search(r"^TCP:.*\btw (\d+)", sockstat, re.MULTILINE)
    if match is None:
        raise ValueError(f"no TIME_WAIT count in {sockstat!r}")
    return int(match.group(1))


def wait_for_time_wait(limit: int, timeout: float = TIME_WAIT_TIMEOUT_S,
                       sockstat: Path = SOCKSTAT, sleep=time.sleep,
                       clock=time.monotonic) -> int | None:
    """Wait until fewer than ``limit`` sockets are in TIME_WAIT, or ``timeout``
    seconds; the count then. None where the kernel does not publish it (not
    Linux): the run goes ahead and its row shows no count."""
    try:
        read = sockstat.read_text
        count = time_wait_sockets(read())
    except OSError:
        return None
    deadline = clock() + timeout
    while count >= limit and clock() < deadline:
        sleep(1.0)
        count = time_wait_sockets(read())
    return count


def error_count(totals: dict[str, int]) -> int:
    """Tsung's failures (``error_connect_econnrefused``, ``error_timeout``, ...)."""
    return sum(count for name, count in totals.items() if name.startswith("error_"))


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


def measure(tsung: str, name: str, load: str, duration: float, rate: int, cpus: set[int],
            time_wait_limit: int | None = None) -> Run:
    """One Tsung run against a fresh server; first, with ``time_wait_limit``,
    wait for the TIME_WAIT sockets of earlier runs to drain below it."""
    result = Run(name, load, offered=offered_sessions(load, duration, rate))
    if time_wait_limit is not None:
        result.time_wait_at_start = wait_for_time_wait(time_wait_limit)
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
    result.errors = error_count(totals)
    result.seconds = float(duration)
    result.mean_ms = statistics.fmean(samples)
    result.p50_ms = samples[len(samples) // 2]
    result.p99_ms = samples[min(len(samples) - 1, int(len(samples) * 0.99))]
    result.driver_cpu_frac = driver_cpu / elapsed / max(1, len(cpus))
    result.server_cpu_frac = (server_after - server_before) / elapsed
    return result


def table(runs: list[Run]) -> str:
    lines = [
        "| load | server | sessions started of offered | requests/s | p50 ms | p99 ms "
        "| mismatches | errors | server CPU µs/request | server CPU | tsung CPU "
        "| TIME_WAIT at start |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for run in runs:
        time_wait = "" if run.time_wait_at_start is None else f"{run.time_wait_at_start:,}"
        if run.failed:
            lines.append(f"| {run.load} | {run.server} | {run.failed} "
                         f"| | | | | | | | | {time_wait} |")
            continue
        bound = " (driver-bound)" if run.driver_cpu_frac >= 0.9 else ""
        short = " (driver short)" if run.driver_short else ""
        lines.append(
            f"| {run.load} | {run.server} | {run.sessions:,} of {run.offered:,}{short} | "
            f"{run.requests_per_s:,.0f} | {run.p50_ms:.3f} | {run.p99_ms:.3f} | "
            f"{run.mismatches} | {run.errors} | "
            f"{run.server_cpu_us_per_request:.1f} | {run.server_cpu_frac:.0%} | "
            f"{run.driver_cpu_frac:.0%}{bound} | {time_wait} |"
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
    parser.add_argument("--time-wait-limit", type=int, default=TIME_WAIT_LIMIT,
                        help=f"before each run, wait (at most {TIME_WAIT_TIMEOUT_S:g} s) until "
                             "fewer TCP sockets than this are in TIME_WAIT")
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
                run = measure(tsung, name, load, args.duration, args.rate, driver_cpus,
                              args.time_wait_limit)
                print(f"{load} {name}: {run.sessions:,} of {run.offered:,} sessions, "
                      f"{run.requests_per_s:,.0f} requests/s p99 {run.p99_ms:.3f} ms, "
                      f"TIME_WAIT at start {run.time_wait_at_start} {run.failed}",
                      file=sys.stderr, flush=True)
                runs.append(run)
    print(table(runs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
