"""How many verified messages per second one Locust process drives.

    python -m benchmarks.locust_bench [--runs 3] [--users 50] [--duration 30] [--pipeline-depth 1]

Starts the project's server pinned to one CPU, then runs ``--runs`` headless
Locust processes (``loadtest/locustfile.py``) one after the other, pinned to
another CPU, with long connections so that the figure is about lines, not
handshakes. For each run it prints the ``upper`` requests per second and the
failures from Locust's own final report (``--json``), the CPU used by Locust and by the
server, and how much CPU the hypervisor took from this VM meanwhile (steal),
which explains much of the spread between runs on a shared machine.
"""

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import psutil

from benchmarks.bench import cpu_seconds, start_server

LOCUSTFILE = Path(__file__).resolve().parent.parent / "loadtest" / "locustfile.py"
RUN_GRACE = 60.0
"""Seconds a run may take beyond ``--duration`` (start-up and shutdown) before it is killed."""


def steal_seconds() -> float:
    """CPU time the hypervisor has taken from this machine, all CPUs, since boot."""
    with open("/proc/stat") as stat:
        fields = stat.readline().split()
    return int(fields[8]) / os.sysconf("SC_CLK_TCK") if len(fields) > 8 else 0.0


def children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def upper_entry(report: str) -> dict:
    """The ``upper`` entry of the final statistics that ``locust --json`` prints last."""
    start = report.find("[\n")
    for entry in json.loads(report[start:]) if start != -1 else []:
        if entry["name"] == "upper":
            return entry
    raise RuntimeError("the Locust report has no 'upper' entry: no message was sent")


def run_locust(port: int, cpu: int, args) -> dict:
    command = [
        sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless",
        "-u", str(args.users), "-r", str(args.users), "-t", f"{args.duration}s",
        "--host", f"tcp://127.0.0.1:{port}",
        "--messages-per-connection", str(args.messages_per_connection),
        "--message-size", str(args.message_size),
        "--pipeline-depth", str(args.pipeline_depth),
        "--json", "--only-summary",
    ]  # fmt: skip
    cpu_before, steal_before, started = children_cpu_seconds(), steal_seconds(), time.monotonic()
    locust = subprocess.run(
        command,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=args.duration + RUN_GRACE,
        preexec_fn=lambda: os.sched_setaffinity(0, {cpu}),
    )
    wall = time.monotonic() - started
    if locust.returncode != 0:
        raise RuntimeError(f"locust exited {locust.returncode}: {locust.stderr[-2000:]}")
    entry = upper_entry(locust.stdout)
    requests = entry["num_requests"]
    # Locust's own requests per second: over the time from the first request to the last.
    locust_cpu = children_cpu_seconds() - cpu_before
    return {
        "rps": requests / max(entry["last_request_timestamp"] - entry["start_time"], 1e-9),
        "requests": requests,
        "failures": entry["num_failures"],
        "locust_cpu_percent": 100 * locust_cpu / wall,
        "locust_us_per_message": 1e6 * locust_cpu / requests,
        "steal_percent": 100 * (steal_seconds() - steal_before) / (wall * os.cpu_count()),
        "wall": wall,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--users", type=int, default=50)
    parser.add_argument("--duration", type=int, default=30, help="seconds per run")
    parser.add_argument("--messages-per-connection", type=int, default=1000)
    parser.add_argument("--message-size", type=int, default=32)
    parser.add_argument("--pipeline-depth", type=int, default=1, help="lines in flight per user")
    args = parser.parse_args(argv)
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        parser.error("needs at least 2 CPUs: one for the server, one for Locust")
    server_cpu, locust_cpu = cpus[0], cpus[1]

    server = start_server("upper", server_cpu)
    port = server.port
    server_process = psutil.Process(server.pid)
    print(
        f"server on CPU {server_cpu}, Locust on CPU {locust_cpu}: {args.users} users, "
        f"{args.messages_per_connection} lines of {args.message_size} B per connection, "
        f"{args.pipeline_depth} in flight, "
        f"{args.duration} s per run\n"
    )
    print("| run | upper msg/s | failures | Locust CPU | Locust µs/msg | server CPU | steal |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    results = []
    try:
        for run in range(1, args.runs + 1):
            server_before = cpu_seconds(server_process)
            result = run_locust(port, locust_cpu, args)
            server_percent = 100 * (cpu_seconds(server_process) - server_before) / result["wall"]
            results.append(result)
            print(
                f"| {run} | {result['rps']:,.0f} | {result['failures']} "
                f"| {result['locust_cpu_percent']:.0f} % "
                f"| {result['locust_us_per_message']:.1f} "
                f"| {server_percent:.0f} % | {result['steal_percent']:.1f} % |",
                flush=True,
            )
    finally:
        server.stop()
    rates = [result["rps"] for result in results]
    median = statistics.median(rates)
    print(f"\nmedian {median:,.0f} msg/s (min {min(rates):,.0f}, max {max(rates):,.0f})")
    return 0 if all(result["failures"] == 0 for result in results) else 1


if __name__ == "__main__":
    sys.exit(main())
