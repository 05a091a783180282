"""Running the Locust harness (loadtest/locustfile.py) for real, as a subprocess.

Subprocesses always have a timeout and are killed, with their process group
(``--processes`` children included), in ``finally``.
"""

import json
import os
import re
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import psutil
from helpers import free_port

ROOT = Path(__file__).resolve().parent.parent
LOCUSTFILE = ROOT / "loadtest" / "locustfile.py"
RUN_TIMEOUT = 40.0
"""Generous: a 3 s run ends in about 5 s, but the machine may be busy."""


class LocustRun:
    """A finished run: its exit code, output, and final statistics.

    The statistics come from ``--json`` (stdout) and the failures from the error
    report (stderr), both printed once the run is over. (The ``--csv`` files are
    rewritten every second while it runs, so they can miss its last second,
    including the failures recorded as the users are stopped.)
    """

    def __init__(self, returncode: int, stdout: str, stderr: str, marker: str):
        self.returncode = returncode
        self.marker = marker
        self.stdout = stdout
        self.stderr = stderr
        entries = _final_stats(stdout)
        self.stats = {entry["name"]: entry for entry in entries}
        if entries:
            self.stats["Aggregated"] = {
                key: sum(entry[key] for entry in entries)
                for key in ("num_requests", "num_failures")
            }
        self.failures = _error_report(stderr)

    def requests(self, name: str) -> int:
        return self.stats[name]["num_requests"]

    def failed(self, name: str) -> int:
        return self.stats[name]["num_failures"]

    def errors(self, name: str) -> list[str]:
        return [row["Error"] for row in self.failures if row["Name"] == name]

    def __repr__(self) -> str:  # shown when an assertion fails
        return (
            f"exit {self.returncode}\n--- stdout\n{self.stdout[-3000:]}"
            f"\n--- stderr\n{self.stderr[-3000:]}"
        )


def _final_stats(stdout: str) -> list[dict]:
    start = stdout.find("[\n")  # Locust prints the JSON list last, indented
    return json.loads(stdout[start:]) if start != -1 else []


_ERROR_ROW = re.compile(r"(\d+) +(\S+) (.+?): (.*)")


def _error_report(output: str) -> list[dict]:
    """The rows of the "Error report" table Locust prints at the end."""
    _, found, report = output.partition("Error report\n")
    rows = []
    for line in report.splitlines()[2:] if found else []:
        if line.startswith("---"):
            break
        if matched := _ERROR_ROW.fullmatch(line.rstrip()):
            occurrences, method, name, error = matched.groups()
            rows.append(
                {"Occurrences": int(occurrences), "Method": method, "Name": name, "Error": error}
            )
    return rows


def run_locust(
    host: str, *options: str, users: int = 5, run_time: str = "3s", locustfile=LOCUSTFILE
) -> LocustRun:
    """A headless run of ``locustfile``, to its end; its processes carry ``MARKER`` in
    their environment (see ``leftovers()``)."""
    return start_locust(host, *options, users=users, run_time=run_time, locustfile=locustfile)()


def start_locust(
    host: str, *options: str, users: int = 5, run_time: str = "3s", locustfile=LOCUSTFILE
):
    """Start a headless run; returns ``finish``, which waits for its end -> ``LocustRun``.
    ``finish.process`` is the ``Popen``."""
    marker = uuid.uuid4().hex
    if {"--processes", "--master"} & set(options) and "--master-bind-port" not in options:
        # Never Locust's fixed 5557: runs in parallel (xdist, other checkouts) would clash.
        port = str(free_port())
        options = (*options, "--master-bind-port", port, "--master-port", port)
    command = [
        sys.executable, "-m", "locust", "-f", str(locustfile), "--headless",
        "-u", str(users), "-r", str(users), "-t", run_time,
        *(["--host", host] if host is not None else []),
        "--json", "--only-summary", *options,
    ]  # fmt: skip
    process = subprocess.Popen(
        command,
        cwd=ROOT,
        env={**os.environ, MARKER: marker},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group: --processes children die with it
    )

    def finish() -> LocustRun:
        try:
            stdout, stderr = process.communicate(timeout=RUN_TIMEOUT)
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.communicate(timeout=10)
        return LocustRun(process.returncode, stdout, stderr, marker)

    finish.process = process
    return finish


MARKER = "UPPER_LOCUST_TEST_RUN"


def leftovers(marker: str) -> list[psutil.Process]:
    """Processes of the run ``marker`` still alive (zombies aside)."""
    found = []
    for process in psutil.process_iter():
        try:
            if process.environ().get(MARKER) == marker and process.status() != psutil.STATUS_ZOMBIE:
                found.append(process)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


def assert_no_crash(run: LocustRun) -> None:
    # Locust exits 1 when requests failed, 2 (or worse) on unhandled exceptions.
    assert run.returncode in (0, 1), run
    assert "Traceback" not in run.stderr, run
