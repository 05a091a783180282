"""Small helpers shared by the test modules: reading sockets to a point, a clean environment,
waiting for something to happen, the processes of a server with workers, free ports and
the Debian tools a test needs."""

import os
import selectors
import shutil
import signal
import socket
import ssl
import time

import psutil
import pytest

SOON = 15.0
"""How long a test waits for something that must happen "soon" (noisy shared CI)."""


def clean_env(**extra: str) -> dict[str, str]:
    """The test's environment without UPPER_* settings, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("UPPER_")}
    env.update(extra)
    return env


def read_until_eof(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes (raises on reset or timeout)."""
    chunks = []
    while chunk := sock.recv(1 << 20):
        chunks.append(chunk)
    return b"".join(chunks)


def read_exactly(sock: socket.socket, size: int) -> bytes:
    data = bytearray()
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionError(f"closed after {len(data)} of {size} bytes: {bytes(data)!r}")
        data += chunk
    return bytes(data)


def eventually(predicate, timeout: float = SOON, interval: float = 0.02) -> bool:
    """Whether ``predicate()`` becomes true within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


def logged(caplog, wanted, timeout: float = SOON) -> list:
    """The captured records ``wanted(record)`` accepts, once there is one (or at the timeout).

    An in-thread server may write its log line a moment after the counter a test waited for,
    so a test that reads the log right after a counter waits for the line too."""
    def matching() -> list:
        return [record for record in caplog.records if wanted(record)]

    eventually(matching, timeout)
    return matching()


def process_alive(pid: int, created: float) -> bool:
    """Whether that very process (not a reuse of its pid) still runs (zombies do not)."""
    try:
        process = psutil.Process(pid)
        return process.create_time() == created and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def wait_for_workers(parent: psutil.Process, count: int, exclude=()) -> dict[int, float]:
    """{pid: create_time} of the parent's live children, once there are ``count`` of them."""
    found = {}

    def ready():
        nonlocal found
        try:
            found = {
                child.pid: child.create_time()
                for child in parent.children()
                if child.status() != psutil.STATUS_ZOMBIE
            }
        except psutil.NoSuchProcess:
            return False
        return len(found) == count and not set(found) & set(exclude)

    assert eventually(ready), f"expected {count} workers, found {found}"
    return found


def send_while_reading(sock: socket.socket, payload: bytes, timeout: float) -> bytes:
    """Send all of ``payload`` while reading everything until the server's end of stream,
    in one thread (an ``SSLSocket`` cannot be written by one thread while another reads
    it); what the server sent is returned. Sending goes on after that end: a server that
    resets instead of draining fails here (``ConnectionResetError``, ``BrokenPipeError``)."""
    not_now = (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError)
    view = memoryview(payload)
    received = bytearray()
    ended = False
    sock.setblocking(False)
    deadline = time.monotonic() + timeout
    try:
        with selectors.DefaultSelector() as selector:
            selector.register(sock, selectors.EVENT_READ | selectors.EVENT_WRITE)
            while view or not ended:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"not done within {timeout}s ({len(received)} bytes)")
                selector.select(remaining)
                if view:
                    try:
                        view = view[sock.send(view[: 1 << 16]) :]
                    except not_now:
                        pass
                while not ended:
                    try:
                        chunk = sock.recv(1 << 20)
                    except not_now:
                        break
                    if not chunk:
                        ended = True
                    received += chunk
                wanted = (selectors.EVENT_READ if not ended else 0) | (
                    selectors.EVENT_WRITE if view else 0
                )
                if wanted:
                    selector.modify(sock, wanted)
            return bytes(received)
    finally:
        sock.settimeout(timeout)
def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free right now, for tools that cannot be given port 0."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def under_ci() -> bool:
    """Whether the suite runs in CI (``CI=true``, as CI services set it), where nothing may skip."""
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def missing_debian_tool(tool: str, package: str, detail: str = "") -> None:
    """Stop a test that needs ``tool`` (from the Debian ``package``), which is not here.

    Under CI the test fails: CI installs every tool (``.ci/run``), so a missing one
    is a broken CI, never a pass. Elsewhere (a developer's plain ``pytest``) it is a
    skip whose reason names the tool and the package, so the summary says what to
    install instead of showing a failure that is not the code's.
    """
    reason = f"needs {tool}: apt-get install {package} (.ci/run installs it)"
    if detail:
        reason += f"; {detail}"
    if under_ci():
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason)


def require_tool(name: str, package: str) -> str:
    """The path of the Debian tool ``name`` a test needs (see ``missing_debian_tool``)."""
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin:/sbin:/bin")
    if path is None:
        missing_debian_tool(name, package)
    return path


def answers(address, text: str = "sigo aquí", timeout: float = 10.0) -> bool:
    """Whether a server at ``address`` (IPv4 or IPv6) answers one line with its uppercase."""
    family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
    with socket.socket(family) as sock:
        sock.settimeout(timeout)
        sock.connect(address)
        sock.sendall(text.encode() + b"\n")
        expected = text.upper().encode() + b"\n"
        return read_exactly(sock, len(expected)) == expected


def assert_workers_die_with_their_parent(server, seen_workers: dict) -> None:
    """Kill a ``--workers 2`` server's parent with SIGKILL: no worker may keep serving."""
    workers = wait_for_workers(psutil.Process(server.pid), 2)
    seen_workers.update(workers)
    assert answers(server.address)
    server.process.kill()
    server.process.wait(timeout=10)
    assert eventually(
        lambda: not any(process_alive(pid, created) for pid, created in workers.items())
    ), "workers kept serving as orphans after the parent was killed"
    server.process.communicate(timeout=10)  # the workers held the pipes; now they are gone


def assert_a_killed_worker_is_replaced(server, seen_workers: dict) -> dict[int, float]:
    """SIGKILL one worker of a ``--workers 2`` server: the parent starts a new one, and the
    server goes on answering. Returns every worker seen, the replaced one included."""
    parent = psutil.Process(server.pid)
    workers = wait_for_workers(parent, 2)
    seen_workers.update(workers)
    assert answers(server.address)
    victim = next(iter(workers))
    os.kill(victim, signal.SIGKILL)
    replaced = wait_for_workers(parent, 2, exclude=[victim])
    seen_workers.update(replaced)
    assert set(replaced) - set(workers), "no new worker was started"
    assert answers(server.address)
    return {**workers, **replaced}


ECHO_SERVER = """
import socketserver, sys
class Echo(socketserver.StreamRequestHandler):
    def handle(self):
        for line in self.rfile:
            if line.rstrip() == b"DESCONEXION":
                return
            self.wfile.write(line)
            self.wfile.flush()
class Server(socketserver.ThreadingTCPServer):
    daemon_threads = allow_reuse_address = True
port = int(sys.argv[sys.argv.index("--port") + 1]) if "--port" in sys.argv else 0
with Server(("127.0.0.1", port), Echo) as server:
    print("echo listening on 127.0.0.1:%d" % server.server_address[1], flush=True)
    server.serve_forever()
"""
"""``python -c ECHO_SERVER [--port N]``: a wrong server that answers every line unchanged
(not uppercased), for the load drivers' tests; its ready line is the launcher's."""
