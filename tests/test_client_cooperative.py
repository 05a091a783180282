"""``UpperClient.upper_line`` on the cooperative path (gevent monkey-patched, as in Locust).

Each scenario of ``cooperative_scenarios.py`` runs in its own process: the
monkey-patching must come first there, and must never touch the pytest process.
The real server (the ``server`` fixture) is passed to every scenario by port;
scenarios that need a misbehaving server write their own.
"""

import pathlib
import subprocess
import sys

import pytest

TESTS = pathlib.Path(__file__).parent
SCRIPT = TESTS / "cooperative_scenarios.py"

SCENARIOS = [
    "burst",
    "timeout",
    "timeout_after_activity",
    "timeout_while_queued",
    "idle_between_waits",
    "kill_while_waiting",
    "kill_before_flush",
    "close_while_waiting",
    "reply_in_pieces",
    "stray_switch",
    "extra_line",
    "mixed_apis",
    "server_closes",
    "reset_before_send",
    "send_incomplete",
    "concurrent_use",
    "concurrent_use_while_waiting",
    "from_hub",
    "from_hub_then_same_client",
]


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_cooperative_scenario(server, scenario):
    done = subprocess.run(
        [sys.executable, "-m", "tests.cooperative_scenarios", scenario, str(server.port)],
        cwd=TESTS.parent,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, f"{scenario} failed:\n{done.stderr}"
    assert done.stdout.strip() == "ok", done.stdout


def test_every_scenario_is_run():
    """A scenario added to the script but not to SCENARIOS would silently never run."""
    names = {
        line.split("(")[0].removeprefix("def scenario_")
        for line in SCRIPT.read_text().splitlines()
        if line.startswith("def scenario_")
    }
    assert names == set(SCENARIOS)
