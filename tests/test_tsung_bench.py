"""The second load driver (``benchmarks.tsung_bench``) runs Tsung for real and reads it right.

No timing assertions: a short churn run must complete sessions with every reply
matched, and a server that does not uppercase must show up as mismatches.
"""

from __future__ import annotations

import shutil
import sys

import pytest
from helpers import ECHO_SERVER, require_tool

from benchmarks import tsung_bench
from benchmarks.bench import SERVERS

ECHO = "tests-echo"


@pytest.fixture
def tsung():
    return require_tool("tsung", "tsung")


@pytest.fixture
def echo_server(monkeypatch):
    """A server that answers every line unchanged: Tsung's match must catch it."""
    monkeypatch.setitem(SERVERS, ECHO, [sys.executable, "-c", ECHO_SERVER])
    return ECHO


def test_churn_against_upper_matches_every_reply(tsung):
    run = tsung_bench.measure(tsung, "upper", "churn", 3, 200, {0})
    assert not run.failed, run
    assert run.offered == 600 and run.errors == 0, run
    assert run.sessions > 0 and run.requests > 0, run
    assert run.mismatches == 0 and run.matches > 0, run
    assert 0 < run.p50_ms <= run.p99_ms, run
    assert run.server_cpu_us_per_request > 0, run


def test_c10k_starts_its_users_and_matches_every_reply(tsung, monkeypatch):
    """The C10K load's XML (think time included) as Tsung runs it, at a hundredth the size."""
    monkeypatch.setattr(tsung_bench, "C10K_USERS", 100)
    monkeypatch.setattr(tsung_bench, "C10K_ARRIVALS_PER_S", 50)
    run = tsung_bench.measure(tsung, "upper", "c10k", 4, 0, {0})
    assert not run.failed, run
    # Under the whole suite's load Tsung started 94 of the 100 once (CI, 2026-12-07).
    assert run.offered == 100 and not run.driver_short, run
    # Each user sends at once, then every C10K_THINK_S (2 s): one or two lines in 4 s
    # (without the think time, thousands).
    assert run.sessions <= run.requests < 300 and run.mismatches == 0 and run.errors == 0, run


def test_a_server_that_does_not_uppercase_is_caught(tsung, echo_server):
    run = tsung_bench.measure(tsung, echo_server, "churn", 2, 100, {0})
    assert not run.failed, run
    assert run.requests > 0 and run.mismatches == run.requests and run.matches == 0, run


def test_the_table_marks_a_driver_bound_row():
    busy = tsung_bench.Run("upper", "churn", requests=10, seconds=1.0, driver_cpu_frac=0.95)
    quiet = tsung_bench.Run("upper", "churn", requests=10, seconds=1.0, driver_cpu_frac=0.5)
    rows = tsung_bench.table([busy, quiet]).splitlines()[2:]
    assert "(driver-bound)" in rows[0] and "(driver-bound)" not in rows[1]


def test_without_tsung_one_line_and_exit_1(monkeypatch, capsys):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    assert tsung_bench.main(["--loads", "churn"]) == 1
    assert capsys.readouterr().err.strip() == (
        "tsung_bench: tsung is not installed (Debian: apt-get install tsung)"
    )


def test_the_table_marks_a_row_whose_driver_started_too_few_sessions():
    short = tsung_bench.Run("upper", "churn", sessions=899, offered=1000, seconds=1.0)
    enough = tsung_bench.Run("upper", "churn", sessions=900, offered=1000, seconds=1.0)
    rows = tsung_bench.table([short, enough]).splitlines()[2:]
    assert "899 of 1,000 (driver short)" in rows[0]
    assert "900 of 1,000 |" in rows[1] and "(driver short)" not in rows[1]


def test_sessions_offered_follow_the_config():
    assert tsung_bench.offered_sessions("churn", 8, 1500) == 12_000
    assert tsung_bench.offered_sessions("c10k", 8, 1500) == 10_000
    c10k = tsung_bench.config("c10k", 5000, 8, 1500)
    assert 'maxnumber="10000"' in c10k and 'arrivalrate="2000"' in c10k
    assert '<thinktime value="2" random="false"/>' in c10k
    assert 'arrivalrate="1500"' in tsung_bench.config("churn", 5000, 8, 1500)


SOCKSTAT = """sockets: used 9
TCP: inuse 1 orphan 0 tw {tw} alloc 1 mem 250
UDP: inuse 0 mem 0
"""


def test_time_wait_is_read_from_sockstat():
    assert tsung_bench.time_wait_sockets(SOCKSTAT.format(tw=19081)) == 19081
    with pytest.raises(ValueError):
        tsung_bench.time_wait_sockets("UDP: inuse 0 mem 0\n")


def test_the_machine_publishes_its_time_wait_count():
    """On Linux (CI) the real file parses, so the bench's wait is not skipped there."""
    assert tsung_bench.time_wait_sockets(tsung_bench.SOCKSTAT.read_text()) >= 0


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.now += seconds


def test_the_wait_ends_when_time_wait_drains(tmp_path):
    counts = iter([5000, 3000, 999, 0])
    clock = FakeClock()
    sockstat = tmp_path / "sockstat"
    sockstat.write_text(SOCKSTAT.format(tw=next(counts)))

    def sleep(seconds):
        clock.sleep(seconds)
        sockstat.write_text(SOCKSTAT.format(tw=next(counts)))

    assert tsung_bench.wait_for_time_wait(1000, 90, sockstat, sleep, clock) == 999
    assert clock.now == 2.0


def test_the_wait_is_bounded(tmp_path):
    clock = FakeClock()
    sockstat = tmp_path / "sockstat"
    sockstat.write_text(SOCKSTAT.format(tw=20000))
    assert tsung_bench.wait_for_time_wait(1000, 5, sockstat, clock.sleep, clock) == 20000
    assert clock.now == 5.0


def test_without_sockstat_there_is_no_wait_and_no_count(tmp_path):
    clock = FakeClock()
    missing = tmp_path / "absent"
    assert tsung_bench.wait_for_time_wait(1000, 90, missing, clock.sleep, clock) is None
    assert clock.now == 0.0


def test_errors_sum_every_error_counter():
    totals = {"match": 10, "error_connect_eaddrnotavail": 3, "error_timeout": 2, "connected": 4}
    assert tsung_bench.error_count(totals) == 5
