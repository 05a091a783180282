"""SIGHUP: new workers with the code on disk, under load, with no failed session."""

import shutil
import signal
import socket
import threading
import time

import psutil
import pytest
from helpers import eventually, process_alive, read_until_eof
from servers import ServerProcess

import upper_server
from upper.server.launcher import read_line_with_timeout

LOAD_CLIENTS = 4
SOCKET_TIMEOUT = 10.0


class Load:
    """Clients in threads, each running short sessions back to back, with a pause mid-session
    so that sessions are under way whenever a reload happens; every failure is kept."""

    def __init__(self, address) -> None:
        self.address = address
        self.sessions = 0
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._client, args=(n,), daemon=True)
            for n in range(LOAD_CLIENTS)
        ]

    def __enter__(self):
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(SOCKET_TIMEOUT + 5)

    def wait_for_sessions(self, count: int) -> None:
        target = self.sessions + count
        assert eventually(lambda: self.sessions >= target or self.failures, timeout=20)

    def _client(self, number: int) -> None:
        while not self._stop.is_set():
            try:
                self._session(number)
                self.sessions += 1
            except OSError as exc:
                self.failures.append(f"client {number}: {exc!r}")

    def _session(self, number: int) -> None:
        with socket.create_connection(self.address, timeout=SOCKET_TIMEOUT) as sock:
            first = f"hola {number}\n".encode()
            sock.sendall(first)
            reply = sock.recv(64)
            if reply != first.upper():
                raise OSError(f"first reply {reply!r}")
            time.sleep(0.02)
            sock.sendall(b"adios\nDESCONEXION\n")
            rest = read_until_eof(sock)
            if rest != b"ADIOS\n":  # DESCONEXION gets no reply: the server closes
                raise OSError(f"last replies {rest!r}")


def wait_for_log(server: ServerProcess, text: str) -> str:
    """The server's stderr up to the first line holding ``text`` (bounded in time)."""
    lines = []
    while not lines or text not in lines[-1]:
        lines.append(read_line_with_timeout(server.process.stderr, SOCKET_TIMEOUT * 2))
        assert lines[-1], f"stderr ended without {text!r}: {''.join(lines)}"
    return "".join(lines)


def children(process: psutil.Process) -> set[int]:
    """The live workers of ``process`` (one that ends while we look is left out)."""
    live = set()
    for child in process.children():
        try:
            if child.status() != psutil.STATUS_ZOMBIE:
                live.add(child.pid)
        except psutil.NoSuchProcess:
            pass
    return live


def remember(seen_workers: dict, pids) -> None:
    for pid in pids:
        try:
            seen_workers[pid] = psutil.Process(pid).create_time()
        except psutil.NoSuchProcess:
            pass


def reload_and_wait(server: ServerProcess, count: int) -> set[int]:
    """SIGHUP, then wait until ``count`` workers run and none of the previous ones."""
    parent = psutil.Process(server.pid)
    before = children(parent)
    server.send_signal(signal.SIGHUP)

    def replaced() -> bool:
        now = children(parent)
        return len(now) == count and not now & before

    assert eventually(replaced, timeout=20), f"workers not replaced: {children(parent)}"
    return children(parent)


@pytest.mark.parametrize("workers", ["1", "2"], ids=["single-process", "two-workers"])
def test_reloads_under_load_fail_no_session(start_server, seen_workers, workers):
    server = start_server("--workers", workers, "--log-level", "warning")
    parent = psutil.Process(server.pid)
    seen = [children(parent)]
    with Load(server.address) as load:
        load.wait_for_sessions(20)
        for _ in range(3):
            seen.append(reload_and_wait(server, int(workers)))
            remember(seen_workers, seen[-1])
            load.wait_for_sessions(20)
    assert load.failures == []
    assert load.sessions >= 80
    # Each reload brought workers never seen before; the parent kept its pid throughout.
    for earlier, later in zip(seen, seen[1:], strict=False):
        assert later and not earlier & later
    assert server.process.poll() is None
    code, _stdout, stderr = server.stop_and_collect()
    assert code == 0, stderr
    assert "Traceback" not in stderr


def test_single_process_becomes_a_supervisor_only_at_the_first_reload(start_server):
    server = start_server("--log-level", "warning")
    parent = psutil.Process(server.pid)
    assert children(parent) == set()
    (worker,) = reload_and_wait(server, 1)
    created = psutil.Process(worker).create_time()
    code, _stdout, stderr = server.stop_and_collect()
    assert code == 0, stderr
    assert not process_alive(worker, created), "the worker outlived its parent"


@pytest.fixture
def deployed(tmp_path):
    """A copy of the ``upper_server`` entry point that the test can change, as a deploy would."""
    shutil.copytree(
        upper_server.__path__[0], tmp_path / "upper_server", ignore=shutil.ignore_patterns("*.pyc")
    )
    return tmp_path


@pytest.mark.parametrize("workers", ["1", "2"], ids=["single-process", "two-workers"])
def test_a_broken_deploy_keeps_the_old_workers_and_a_fixed_one_loads(
    start_server, seen_workers, deployed, workers
):
    main = deployed / "upper_server" / "__main__.py"
    good = main.read_text()
    server = start_server("--workers", workers, "--log-level", "info", cwd=str(deployed))
    parent = psutil.Process(server.pid)
    with Load(server.address) as load:
        load.wait_for_sessions(10)
        before = children(parent)
        main.write_text('raise SystemExit("broken deploy")\n')
        server.send_signal(signal.SIGHUP)
        log = wait_for_log(server, "reload failed:")
        load.wait_for_sessions(10)
        # The failed workers are gone; the old ones still serve.
        assert eventually(lambda: children(parent) == before, timeout=20), children(parent)
        main.write_text('import sys\nprint("deploy 2", file=sys.stderr, flush=True)\n' + good)
        remember(seen_workers, before)
        reload_and_wait(server, int(workers))
        load.wait_for_sessions(10)
    assert load.failures == []
    code, _stdout, stderr = server.stop_and_collect()
    stderr = log + stderr
    assert code == 0, stderr
    assert "broken deploy" in stderr
    assert "reload failed:" in stderr and "exit code 1" in stderr
    assert "old workers keep serving" in stderr or "this process keeps serving" in stderr
    assert "deploy 2" in stderr
