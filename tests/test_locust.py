"""The Locust harness (loadtest/locustfile.py), run for real: short headless runs.

Each test runs ``python -m locust`` as a subprocess for a few seconds against a
server on port 0 (the project's own, or a deliberately wrong one from
``locust_wrong_servers``) and reads its final report (``--json`` and the error
report); nothing here asserts on timings. The wrong-server matrix is in
test_locust_wrong_servers.py.
"""

import re
import socket
import subprocess
import sys

import pytest
from locust_runs import ROOT, RUN_TIMEOUT, assert_no_crash, run_locust
from locust_wrong_servers import EchoServer, SlowServer, host

# -- the tests --------------------------------------------------------------------


def test_against_the_project_server_nothing_fails(tmp_path, server):
    run = run_locust(f"tcp://127.0.0.1:{server.port}", "--unicode", "--message-size", "48")
    assert run.returncode == 0, run
    for name in ("connect", "upper", "DESCONEXION"):
        assert run.requests(name) > 0, run
        assert run.failed(name) == 0, run
    assert run.requests("upper") >= run.requests("DESCONEXION"), run
    assert run.failed("Aggregated") == 0, run
    assert run.failures == [], run


def test_processes_2_nothing_fails(tmp_path, server):
    run = run_locust(f"127.0.0.1:{server.port}", "--processes", "2", users=4)
    assert run.returncode == 0, run
    for name in ("connect", "upper", "DESCONEXION"):
        assert run.requests(name) > 0, run
    assert run.failed("Aggregated") == 0, run


def test_wrong_replies_are_upper_failures_showing_expected_and_got(tmp_path):
    with EchoServer() as echo:  # echoes without uppercasing
        run = run_locust(host(echo), run_time="2s")
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


def test_nothing_listening_gives_connect_failures_without_crashing(tmp_path):
    with socket.create_server(("127.0.0.1", 0)) as probe:
        port = probe.getsockname()[1]  # free once closed: nothing listens there
    run = run_locust(f"tcp://127.0.0.1:{port}", run_time="2s")
    assert_no_crash(run)
    assert run.returncode == 1, run
    assert run.failed("connect") == run.requests("connect") > 0, run
    assert "upper" not in run.stats and "DESCONEXION" not in run.stats, run
    assert any("connection refused" in error for error in run.errors("connect")), run


@pytest.mark.parametrize("host", ["http://127.0.0.1:5000", "127.0.0.1", "tcp://:5000"])
def test_malformed_host_is_a_clear_error_at_start(tmp_path, host):
    run = run_locust(host, run_time="2s")
    assert run.returncode != 0, run
    assert "invalid host" in run.stderr and "tcp://HOST:PORT" in run.stderr, run
    assert "Traceback" not in run.stderr, run
    assert not run.stats, run  # stopped before any request


def test_slow_replies_within_the_timeout_are_not_failures(tmp_path):
    # Each reply takes 0.05 s, well within --socket-timeout; a connection's replies
    # together take much longer than it: the timeout is per reply, never cumulative.
    with SlowServer(0.05) as slow:
        run = run_locust(host(slow), "--socket-timeout", "0.4",
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
