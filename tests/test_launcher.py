"""The launcher says why a child did not start: its stderr, from a pipe or a file."""

import sys
import tempfile

import pytest

from upper.server.launcher import ServerFailedToStart, ServerProcess

# A child that fails the way a server does when it cannot bind: one line, exit 1. The
# message is made at run time so that matching it cannot match the command line instead.
_FAILS = [sys.executable, "-c", "import sys; sys.exit('CANNOT BIND: NO PORT LEFT'.lower())"]


def test_a_child_that_exits_before_its_ready_line_reports_its_stderr():
    with pytest.raises(ServerFailedToStart, match="no port left"):
        ServerProcess(command=_FAILS).start(timeout=10)


def test_stderr_sent_to_a_file_is_still_reported():
    with tempfile.TemporaryFile() as stderr:
        with pytest.raises(ServerFailedToStart, match="no port left"):
            ServerProcess(command=_FAILS, stderr=stderr).start(timeout=10)


def test_a_child_that_prints_something_else_is_named_and_stopped():
    talker = [sys.executable, "-c", "import time; print('hello', flush=True); time.sleep(60)"]
    server = ServerProcess(command=talker)
    with pytest.raises(ServerFailedToStart, match="not a ready line: 'hello"):
        server.start(timeout=10)
    assert server.process.poll() is not None
