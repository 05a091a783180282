"""Start a server as a child process and learn its address from its ready line.

The tests, the benchmarks and anyone testing against a real ``python -m
upper_server`` share this one helper. It also starts any other server that
prints the same kind of ready line (``NAME listening on ADDRESS [ADDRESS...]``),
as the benchmark's peers do.

Resource handling: the child is always ended (``stop()``, ``kill()`` or the
context manager), and on Linux it is asked to die with the process that
started it, so a killed test run leaves no server behind. Every wait is bounded.
"""

from __future__ import annotations

import ctypes
import os
import re
import selectors
import signal
import subprocess
import sys
import time

STARTUP_TIMEOUT = 15.0
READY = re.compile(r"^(?P<name>\S+) listening on (?P<addresses>.+)$")
_ADDRESS = re.compile(r"^(?:\[(?P<v6>[^\]]+)\]|(?P<host>[^\s:\[\]]+)):(?P<port>\d+)$")
_PR_SET_PDEATHSIG = 1


class ServerFailedToStart(RuntimeError):
    """The child exited, or printed something else, instead of its ready line."""


def parse_ready_line(line: str) -> list[tuple[str, int]]:
    """``upper_server listening on 127.0.0.1:5000 [::1]:5000`` -> every (host, port) it names."""
    match = READY.match(line.strip())
    if not match:
        raise ValueError(f"not a ready line: {line!r}")
    addresses = []
    for word in match["addresses"].replace(",", " ").split():
        address = _ADDRESS.match(word)
        if not address:
            raise ValueError(f"not an address in the ready line: {word!r}")
        addresses.append((address["v6"] or address["host"], int(address["port"])))
    return addresses


def read_line_with_timeout(stream, timeout: float) -> str:
    """One line from a child's pipe, or ``TimeoutError``; never blocks forever."""
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
    return data.decode(errors="replace")


def _child_setup(cpu: int | None):
    def setup() -> None:
        if sys.platform.startswith("linux"):
            # The kernel sends SIGTERM if our parent dies: no orphaned server.
            ctypes.CDLL(None).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
        if cpu is not None:
            os.sched_setaffinity(0, {cpu})

    return setup


class ServerProcess:
    """``python -m upper_server --host 127.0.0.1 --port 0 ARGS`` until stopped.

    ``command`` replaces the whole command line (then nothing is added to it);
    ``cpu`` pins the child to one CPU (Linux); ``cwd`` runs it in another folder
    (another checkout's ``upper.server``, to compare two versions). After ``start()``, ``address``,
    ``addresses`` (every one of the ready line) and ``banner`` are known.
    """

    def __init__(
        self,
        *args: str,
        module: str = "upper_server",
        command: list[str] | None = None,
        env: dict | None = None,
        cpu: int | None = None,
        stderr=subprocess.PIPE,
        cwd: str | None = None,
    ) -> None:
        if command is None:
            command = [sys.executable, "-m", module, "--host", "127.0.0.1", "--port", "0", *args]
        self.command = command
        self.env = {**os.environ, **(env or {})}
        self.cpu = cpu
        self.stderr = stderr
        self.cwd = cwd
        self.process: subprocess.Popen | None = None
        self.addresses: list[tuple[str, int]] = []
        self.banner = ""

    @property
    def address(self) -> tuple[str, int]:
        return self.addresses[0]

    @property
    def host(self) -> str:
        return self.address[0]

    @property
    def port(self) -> int:
        return self.address[1]

    @property
    def pid(self) -> int:
        return self.process.pid

    def start(self, timeout: float = STARTUP_TIMEOUT) -> ServerProcess:
        self.process = subprocess.Popen(
            self.command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self.stderr,
            env=self.env,
            cwd=self.cwd,
            preexec_fn=_child_setup(self.cpu) if os.name == "posix" else None,
        )
        try:
            self.banner = read_line_with_timeout(self.process.stdout, timeout).strip()
            self.addresses = parse_ready_line(self.banner)
        except (TimeoutError, ValueError) as exc:
            # A child that already exited still has its stderr to give: it says why.
            try:
                stderr = self.stop_and_collect(timeout=5)[2]
            except subprocess.TimeoutExpired:
                stderr = ""
            stderr = stderr or self._stderr_file_tail()
            raise ServerFailedToStart(f"{self.command[:4]}: {exc} {stderr.strip()!r}") from None
        return self

    def _stderr_file_tail(self, limit: int = 2000) -> str:
        """The end of stderr when it went to a file rather than a pipe (a benchmark's)."""
        if not hasattr(self.stderr, "seek"):
            return ""
        self.stderr.flush()
        self.stderr.seek(0, os.SEEK_END)
        self.stderr.seek(max(0, self.stderr.tell() - limit))
        return self.stderr.read().decode(errors="replace")

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
        return self.process.returncode, (stdout or b"").decode(), (stderr or b"").decode()

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM, then SIGKILL if it does not exit in time; the exit status."""
        if self.process is None:
            return None
        try:
            return self.stop_and_collect(timeout=timeout)[0]
        except subprocess.TimeoutExpired:
            return self.process.returncode

    def kill(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.communicate(timeout=10)

    def open_descriptors(self) -> int:
        return len(os.listdir(f"/proc/{self.pid}/fd"))

    def __enter__(self) -> ServerProcess:
        return self if self.process is not None else self.start()

    def __exit__(self, *exc_info) -> None:
        self.kill()
