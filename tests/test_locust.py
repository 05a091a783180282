"""The Locust harness (loadtest/locustfile.py), run for real: short headless runs.

Each test runs ``python -m locust`` as a subprocess for a few seconds against a
server on port 0 (the project's own, or a deliberately wrong one in a thread
here) and reads the ``--csv`` reports. Subprocesses always have a timeout and
are killed in ``finally``; nothing here asserts on timings.
"""

import csv
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LOCUSTFILE = ROOT / "loadtest" / "locustfile.py"
RUN_TIMEOUT = 40.0
"""Generous: a 3 s run ends in about 5 s, but the machine may be busy."""


# -- running locust -------------------------------------------------------------


class LocustRun:
    def __init__(self, returncode: int, stdout: str, stderr: str, prefix: Path):
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr
        self.stats = _read_csv(prefix.with_name(prefix.name + "_stats.csv"), "Name")
        failures = prefix.with_name(prefix.name + "_failures.csv")
        self.failures = list(csv.DictReader(failures.open())) if failures.exists() else []

    def requests(self, name: str) -> int:
        return int(self.stats[name]["Request Count"])

    def failed(self, name: str) -> int:
        return int(self.stats[name]["Failure Count"])

    def errors(self, name: str) -> list[str]:
        return [row["Error"] for row in self.failures if row["Name"] == name]

    def __str__(self) -> str:  # shown when an assertion fails
        return (
            f"exit {self.returncode}\n--- stdout\n{self.stdout[-3000:]}"
            f"\n--- stderr\n{self.stderr[-3000:]}"
        )


def _read_csv(path: Path, key: str) -> dict:
    if not path.exists():
        return {}
    with path.open() as file:
        return {row[key]: row for row in csv.DictReader(file)}


def run_locust(tmp_path, host: str, *options: str, users: int = 5, run_time: str = "3s"):
    prefix = tmp_path / "run"
    command = [
        sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless",
        "-u", str(users), "-r", str(users), "-t", run_time, "--host", host,
        "--csv", str(prefix), "--only-summary", *options,
    ]  # fmt: skip
    process = subprocess.Popen(
        command,
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group: --processes children die with it
    )
    try:
        stdout, stderr = process.communicate(timeout=RUN_TIMEOUT)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.communicate(timeout=10)
    return LocustRun(process.returncode, stdout, stderr, prefix)


def assert_no_crash(run: LocustRun) -> None:
    # Locust exits 1 when requests failed, 2 (or worse) on unhandled exceptions.
    assert run.returncode in (0, 1), run
    assert "Traceback" not in run.stderr, run


# -- deliberately wrong servers -------------------------------------------------


class FakeServer:
    """A threaded line server on 127.0.0.1 port 0 that answers with ``answer(line)``.

    With ``close_on_keyword`` false it never closes after DESCONEXION: it keeps
    reading (and ignoring) until the client gives up and closes.
    """

    def __init__(self, answer, close_on_keyword: bool = True):
        self.answer = answer
        self.close_on_keyword = close_on_keyword
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.2)
        self.port = self.listener.getsockname()[1]
        self.stopping = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.stopping.is_set():
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        conn.settimeout(30)
        pending = b""
        ended = False
        with conn:
            try:
                while data := conn.recv(65536):
                    if ended:
                        continue
                    *lines, pending = (pending + data).split(b"\n")
                    replies = []
                    for line in lines:
                        if line.rstrip(b"\r") == b"DESCONEXION":
                            ended = True
                            break
                        replies.append(self.answer(line) + b"\n")
                    conn.sendall(b"".join(replies))
                    if ended and self.close_on_keyword:
                        conn.shutdown(socket.SHUT_WR)
            except OSError:
                pass

    def stop(self) -> None:
        self.stopping.set()
        self.listener.close()


@pytest.fixture
def fake_server():
    started = []

    def start(answer, close_on_keyword: bool = True) -> FakeServer:
        server = FakeServer(answer, close_on_keyword)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def _upper(line: bytes) -> bytes:
    return line.decode("utf-8", "surrogateescape").upper().encode("utf-8", "surrogateescape")


# -- the tests --------------------------------------------------------------------


def test_against_the_project_server_nothing_fails(tmp_path, server):
    run = run_locust(
        tmp_path, f"tcp://127.0.0.1:{server.port}", "--unicode", "--message-size", "48"
    )
    assert run.returncode == 0, run
    for name in ("connect", "upper", "DESCONEXION"):
        assert run.requests(name) > 0, run
        assert run.failed(name) == 0, run
    assert run.requests("upper") >= run.requests("DESCONEXION"), run
    assert run.failed("Aggregated") == 0, run
    assert run.failures == [], run


def test_processes_2_nothing_fails(tmp_path, server):
    run = run_locust(tmp_path, f"127.0.0.1:{server.port}", "--processes", "2", users=4)
    assert run.returncode == 0, run
    for name in ("connect", "upper", "DESCONEXION"):
        assert run.requests(name) > 0, run
    assert run.failed("Aggregated") == 0, run


def test_wrong_replies_are_upper_failures_showing_expected_and_got(tmp_path, fake_server):
    echo = fake_server(lambda line: line)  # echoes without uppercasing
    run = run_locust(tmp_path, f"tcp://127.0.0.1:{echo.port}", run_time="2s")
    assert_no_crash(run)
    assert run.returncode == 1, run
    assert run.failed("upper") == run.requests("upper") > 0, run
    assert run.failed("connect") == run.failed("DESCONEXION") == 0, run
    for error in run.errors("upper"):
        # e.g. WrongReply("expected 'HOLA SERVIDOR', got 'hola servidor'")
        shown = re.fullmatch(r"""WrongReply\("expected '(.*)', got '(.*)'"\)""", error)
        assert shown, error
        expected, got = shown.groups()
        assert expected == got.upper() != got, error


def test_server_that_never_closes_gives_desconexion_failures_and_stops_on_time(
    tmp_path, fake_server
):
    stubborn = fake_server(_upper, close_on_keyword=False)
    run = run_locust(
        tmp_path, f"tcp://127.0.0.1:{stubborn.port}", "--socket-timeout", "0.5",
        "--messages-per-connection", "3", run_time="3s",
    )  # fmt: skip
    # Reaching here at all means the stop did not wait for users blocked in DESCONEXION.
    assert_no_crash(run)
    assert run.failed("DESCONEXION") > 0, run
    assert run.failed("upper") == 0 and run.requests("upper") > 0, run
    assert any("did not close the connection" in error for error in run.errors("DESCONEXION"))


def test_nothing_listening_gives_connect_failures_without_crashing(tmp_path):
    with socket.create_server(("127.0.0.1", 0)) as probe:
        port = probe.getsockname()[1]  # free once closed: nothing listens there
    run = run_locust(tmp_path, f"tcp://127.0.0.1:{port}", run_time="2s")
    assert_no_crash(run)
    assert run.returncode == 1, run
    assert run.failed("connect") == run.requests("connect") > 0, run
    assert "upper" not in run.stats and "DESCONEXION" not in run.stats, run
    assert any("connection refused" in error for error in run.errors("connect")), run


@pytest.mark.parametrize(
    "host, options",
    [
        ("http://127.0.0.1:5000", ()),
        ("127.0.0.1", ()),
        ("tcp://:5000", ()),
        ("127.0.0.1:notaport", ("--processes", "2")),  # the workers must not linger either
    ],
)
def test_malformed_host_is_a_clear_error_at_start(tmp_path, host, options):
    run = run_locust(tmp_path, host, *options, run_time="2s")
    assert run.returncode != 0, run
    assert "invalid host" in run.stderr and "tcp://HOST:PORT" in run.stderr, run
    assert "Traceback" not in run.stderr, run
    assert not run.stats, run  # stopped before any request


def test_stop_while_every_user_is_blocked_ends_the_run(tmp_path, fake_server):
    stubborn = fake_server(_upper, close_on_keyword=False)
    # Each user's DESCONEXION waits up to 60 s, longer than RUN_TIMEOUT: the run can
    # only end by killing the waiting users, and those waits are not failures.
    run = run_locust(
        tmp_path, f"tcp://127.0.0.1:{stubborn.port}", "--socket-timeout", "60",
        "--messages-per-connection", "1", run_time="2s",
    )  # fmt: skip
    assert run.returncode == 0, run
    assert run.requests("upper") == run.requests("connect") > 0, run
    assert "DESCONEXION" not in run.stats, run


def test_slow_replies_within_the_timeout_are_not_failures(tmp_path, fake_server):
    def slow_upper(line: bytes) -> bytes:
        time.sleep(0.05)
        return _upper(line)

    slow = fake_server(slow_upper)
    # Each reply takes 0.05 s, well within --socket-timeout; a connection's replies
    # together take much longer than it: the timeout is per reply, never cumulative.
    run = run_locust(
        tmp_path, f"tcp://127.0.0.1:{slow.port}", "--socket-timeout", "0.4",
        "--messages-per-connection", "30", users=3, run_time="3s",
    )  # fmt: skip
    assert run.returncode == 0, run
    assert run.requests("upper") > 30, run


def test_locust_benchmark_reports_verified_messages():
    done = subprocess.run(
        [
            sys.executable, "-m", "benchmarks.locust_bench", "--runs", "1", "--duration", "2",
            "--users", "2", "--messages-per-connection", "10",
        ],
        cwd=ROOT, capture_output=True, text=True, timeout=RUN_TIMEOUT + 30,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    rows = [line.split("|")[1:-1] for line in done.stdout.splitlines() if line.startswith("| 1 |")]
    assert len(rows) == 1, done.stdout
    messages_per_second, failures = rows[0][1].strip(), rows[0][2].strip()
    assert float(messages_per_second.replace(",", "")) > 0, done.stdout
    assert failures == "0", done.stdout
    assert "median" in done.stdout, done.stdout
