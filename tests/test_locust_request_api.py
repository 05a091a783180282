"""``LocustUpperClient.request()`` and ``catch_response``, used by a Locust user written
only against the documented API (tests/locustfiles/catch_response.py), in a real run."""

import ast
import re
from pathlib import Path

from locust_runs import run_locust

LOCUSTFILE = Path(__file__).parent / "locustfiles" / "catch_response.py"


STOP_TIMEOUT = "10"
"""Seconds Locust lets a user finish its cycle at ``-t``: killed mid-cycle, a user would
leave the exact counts below uneven (a "no catch" without its three misuses)."""


def test_catch_response_and_the_reply_api(tmp_path, server):
    run = run_locust(
        f"tcp://127.0.0.1:{server.port}", "--stop-timeout", STOP_TIMEOUT,
        users=2, run_time="2s", locustfile=LOCUSTFILE,
    )  # fmt: skip
    assert run.returncode == 1, run  # "refused" and "left to the check" fail, on purpose
    assert "Traceback" not in run.stderr, run
    for name in ("plain", "bytes", "accepted", "slow block", "with context", "no catch"):
        assert run.requests(name) > 0 and run.failed(name) == 0, (name, run)
    assert run.failed("refused") == run.requests("refused") > 0, run
    assert run.errors("refused") == ["refused on purpose"], run
    assert run.failed("left to the check") == run.requests("left to the check") > 0, run
    assert run.errors("left to the check") == ["WrongReply(\"expected 'adiós', got 'HOLA'\")"], run
    # success(), failure() and a with block without catch_response: each a clear error.
    assert run.requests("misuse refused") == 3 * run.requests("no catch"), run

    shown = re.search(r"checks: (\{.*\})", run.stderr)
    assert shown, run
    checks = ast.literal_eval(shown.group(1))
    cycles = run.requests("no catch")
    assert checks["wrong attributes"] == 0, checks
    assert checks["replies as documented"] >= 2 * cycles > 0, checks
    assert checks["context"] == run.requests("with context"), checks
    assert checks["time fixed"] == run.requests("slow block"), checks
