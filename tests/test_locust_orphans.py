"""A malformed host or option stops Locust at start and leaves no process behind,
in every mode: local, ``--processes``, master and worker.

Each case runs several times (the failure it guards against was a race) and then
looks for any process of the run still alive (``locust_runs.leftovers``): a
worker forked by ``--processes`` used to outlive its master, adopted by PID 1,
retrying it for minutes.
"""

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psutil
import pytest
from locust_runs import LOCUSTFILE, MARKER, ROOT, RUN_TIMEOUT, free_port, leftovers, run_locust

REPEATS = 3
GRACE = 10.0
"""Seconds a process of a finished run may take to exit (a busy machine) before it counts."""
BAD_HOST = "127.0.0.1:notaport"
CLASS_HOST_LOCUSTFILE = Path(__file__).parent / "locustfiles" / "malformed_class_host.py"


def assert_nothing_left(run) -> None:
    deadline = time.monotonic() + GRACE
    while (alive := leftovers(run.marker)) and time.monotonic() < deadline:
        time.sleep(0.1)
    for process in alive:  # never leave them to the next test either
        process.kill()
    assert not alive, (alive, run)


@pytest.mark.parametrize(
    "host, options, says",
    [
        (BAD_HOST, (), "invalid host"),
        (BAD_HOST, ("--processes", "2"), "invalid host"),
        (BAD_HOST, ("--master", "--expect-workers", "1"), "invalid host"),
        ("127.0.0.1:1", ("--processes", "2", "--message-size", "-3"), "--message-size"),
        ("127.0.0.1:1", ("--processes", "2", "--pipeline-depth", "0"), "--pipeline-depth"),
    ],
    ids=["local", "processes", "master", "processes-bad-option", "processes-bad-depth"],
)
def test_a_malformed_host_or_option_leaves_no_process(host, options, says):
    for _ in range(REPEATS):
        run = run_locust(host, *options, run_time="2s")
        assert run.returncode != 0, run
        assert says in run.stderr and "Traceback" not in run.stderr, run
        assert not run.stats, run  # stopped before any request
        assert_nothing_left(run)


def test_a_worker_with_a_malformed_host_exits_without_waiting_for_its_master():
    # Nothing listens on the master port: a worker that got past its options would
    # retry it for minutes.
    for _ in range(REPEATS):
        run = run_locust(BAD_HOST, "--worker", "--master-port", str(free_port()), run_time="2s")
        assert run.returncode != 0 and "invalid host" in run.stderr, run
        assert_nothing_left(run)


def test_processes_whose_master_fails_at_init_leave_no_worker():
    # The user class's own host is malformed: found only at init, after the fork.
    for _ in range(REPEATS):
        run = run_locust(None, "--processes", "2", run_time="2s", locustfile=CLASS_HOST_LOCUSTFILE)
        assert run.returncode != 0 and "invalid host" in run.stderr, run
        assert_nothing_left(run)


def test_workers_forked_by_processes_end_with_a_master_that_is_killed(server):
    marker = uuid.uuid4().hex
    port = str(free_port())
    command = [
        sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", "-u", "2", "-r", "2",
        "-t", "30s", "--host", f"127.0.0.1:{server.port}", "--processes", "2",
        "--master-bind-port", port, "--master-port", port,
    ]  # fmt: skip
    master = subprocess.Popen(
        command,
        cwd=ROOT,
        env={**os.environ, MARKER: marker},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + RUN_TIMEOUT
        while len(workers := psutil.Process(master.pid).children()) < 2:
            assert time.monotonic() < deadline and master.poll() is None, "no workers started"
            time.sleep(0.1)
        time.sleep(1)  # let them reach the master and start their users
        master.kill()  # SIGKILL: no atexit, no chance to stop its workers itself
        master.wait(10)
        gone, alive = psutil.wait_procs(workers, timeout=GRACE)
        assert not alive, alive
    finally:
        try:
            os.killpg(master.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass  # the whole group is gone
