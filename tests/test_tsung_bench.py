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
    assert run.sessions > 0 and run.requests > 0, run
    assert run.mismatches == 0 and run.matches > 0, run
    assert 0 < run.p50_ms <= run.p99_ms, run
    assert run.server_cpu_us_per_request > 0, run


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
