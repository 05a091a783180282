"""Servers for tests: the real CLI as a subprocess, or an ``UpperServer`` in a thread.

Both listen on 127.0.0.1 port 0 and are always stopped, with timeouts everywhere.
"""

import ctypes
import os
import re
import selectors
import signal
import subprocess
import sys
import threading
import time

STARTUP_TIMEOUT = 15.0
_PR_SET_PDEATHSIG = 1


def die_with_test_process() -> None:
    """preexec_fn: the kernel sends SIGTERM if pytest dies, so no server is ever orphaned."""
    ctypes.CDLL(None).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
_LISTENING = re.compile(r"listening on (?P<host>\S+):(?P<port>\d+)$")


def read_line_with_timeout(stream, timeout: float) -> str:
    """One line from a subprocess pipe, or TimeoutError; never blocks forever."""
    deadline = time.monotonic() + timeout
    data = b""
    with selectors.DefaultSelector() as selector:
        selector.register(stream, selectors.EVENT_READ)
        while not data.endswith(b"\n"):
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not selector.select(remaining):
                raise TimeoutError(f"no line within {timeout}s (got {data!r})")
            byte = os.read(stream.fileno(), 1)
            if not byte:
                break
            data += byte
    return data.decode()


class ServerProcess:
    """``python -m MODULE --port 0 ARGS`` run until stopped; knows its port and pid."""

    def __init__(self, *args: str, module: str = "upper_server", env: dict | None = None):
        self.command = [sys.executable, "-m", module, "--host", "127.0.0.1", "--port", "0", *args]
        self.env = {**os.environ, **(env or {})}
        self.process: subprocess.Popen | None = None
        self.host = "127.0.0.1"
        self.port = 0
        self.banner = ""

    @property
    def address(self) -> tuple[str, int]:
        return (self.host, self.port)

    @property
    def pid(self) -> int:
        return self.process.pid

    def start(self) -> "ServerProcess":
        self.process = subprocess.Popen(
            self.command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=self.env,
            preexec_fn=die_with_test_process,
        )
        try:
            self.banner = read_line_with_timeout(self.process.stdout, STARTUP_TIMEOUT).strip()
        except TimeoutError:
            self.kill()
            raise
        match = _LISTENING.search(self.banner)
        if not match:
            stderr = self.stop_and_collect()[2]
            raise RuntimeError(f"server did not start: {self.banner!r} {stderr!r}")
        self.host, self.port = match["host"], int(match["port"])
        return self

    def send_signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    def stop_and_collect(self, signum: int = signal.SIGTERM, timeout: float = 20.0):
        """Signal the server, wait for it, and return (exit code, stdout, stderr)."""
        if self.process.poll() is None:
            self.process.send_signal(signum)
        try:
            stdout, stderr = self.process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise
        return self.process.returncode, stdout.decode(), stderr.decode()

    def kill(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.communicate(timeout=10)

    def open_descriptors(self) -> int:
        return len(os.listdir(f"/proc/{self.pid}/fd"))

    def __enter__(self) -> "ServerProcess":
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.kill()


class ThreadedServer:
    """An ``UpperServer`` on its own gevent hub in a thread, for tests that read its counters."""

    def __init__(self, **options):
        self.options = options
        self.server = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="upper-server", daemon=True)
        self._stop_requested = None
        self._hub = None
        self._error = None

    @property
    def address(self) -> tuple[str, int]:
        return self.server.address[:2]

    @property
    def stats(self):
        return self.server.stats

    def live_greenlets(self) -> int:
        """Greenlets of the server's thread not yet finished (raw ones too: spawn_raw)."""
        import gc

        import greenlet

        return sum(
            1
            for obj in gc.get_objects()
            if isinstance(obj, greenlet.greenlet) and obj.parent is self._hub and not obj.dead
        )

    def _run(self) -> None:
        import gevent
        from gevent.event import Event

        from upper_server import UpperServer

        try:
            self._hub = gevent.get_hub()
            self._stop_requested = Event()
            self.server = UpperServer(("127.0.0.1", 0), **self.options)
            self.server.start()
        except BaseException as exc:  # reported to the test thread by start()
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        self._stop_requested.wait()
        self.server.stop()

    def start(self) -> "ThreadedServer":
        self._thread.start()
        if not self._ready.wait(STARTUP_TIMEOUT):
            raise TimeoutError("in-thread server did not start")
        if self._error:
            raise self._error
        return self

    def stop(self, timeout: float = 20.0) -> None:
        if self._hub is not None and self._thread.is_alive():
            self._hub.loop.run_callback_threadsafe(self._stop_requested.set)
            self._thread.join(timeout)
            if self._thread.is_alive():
                raise TimeoutError("in-thread server did not stop")

    def wait_until(self, predicate, timeout: float = 10.0) -> bool:
        """Poll ``predicate(server)`` until true or ``timeout``; for eventually-true counters."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate(self.server):
                return True
            time.sleep(0.01)
        return predicate(self.server)

    def __enter__(self) -> "ThreadedServer":
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()
