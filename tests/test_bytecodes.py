"""``benchmarks.bytecodes`` counts the bytecodes of the window between its two signals, exactly."""

import json
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from benchmarks.bytecodes import counting_command, report

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGUSR1"), reason="POSIX signals")
ROOT = Path(__file__).resolve().parents[1]


def test_only_the_window_between_the_signals_is_counted(tmp_path):
    (tmp_path / "counted_module.py").write_text(textwrap.dedent("""
        import os, signal

        def before(): return sum(range(3))
        def inside(n):
            total = 0
            for i in range(n):
                total += i
            return total

        before()
        os.kill(os.getpid(), signal.SIGUSR1)
        inside(10)
        inside(10)
        os.kill(os.getpid(), signal.SIGUSR2)
        before()
    """))
    output = tmp_path / "counts.json"
    subprocess.run(
        [sys.executable, "-m", "benchmarks.bytecodes", "--serve", "counted_module"],
        env={"PYTHONPATH": f"{tmp_path}:{ROOT}", "UPPER_BYTECODES_OUT": str(output)},
        check=True, timeout=60, cwd=ROOT,
    )
    rows = {name: (count, calls) for name, _where, count, calls in json.loads(output.read_text())}
    assert "before" not in rows
    count, calls = rows["inside"]
    assert calls == 2
    # The same function run twice with the same argument: an even count, the same each time.
    assert count % 2 == 0 and count > 2 * 10 * 3


def test_report_divides_by_sessions_for_churn():
    rows = [["f", "/x/a.py:1", 600, 6], ["g", "/x/b.py:2", 400, 2]]
    text = report("server", {"messages": 100, "sessions": 20}, rows, top=5)
    assert "10 bytecodes per message, 50 per session" in text
    assert "| 30.0 | 0.30 | `f` (/x/a.py:1) |" in text


def test_a_server_that_is_not_python_has_no_bytecodes():
    with pytest.raises(ValueError, match="not a Python server"):
        counting_command("c-epoll")
    command = counting_command("upper")
    assert command[:4] == [sys.executable, "-m", "benchmarks.bytecodes", "--serve"]
