import pathlib
import socket
import sys

import pytest

# Test helper modules (reference_model, servers, ...) are imported by plain name.
sys.path.insert(0, str(pathlib.Path(__file__).parent))

from servers import ServerProcess, ThreadedServer  # noqa: E402

SOCKET_TIMEOUT = 10.0


@pytest.fixture(scope="module")
def server():
    """The real ``python -m upper_server``, shared by a module's tests."""
    with ServerProcess("--log-level", "warning") as running:
        yield running


@pytest.fixture
def start_server():
    """Start ``python -m upper_server`` with extra flags; stopped after the test."""
    started = []

    def start(*args, **kwargs):
        process = ServerProcess(*args, **kwargs).start()
        started.append(process)
        return process

    yield start
    for process in started:
        process.kill()


@pytest.fixture
def threaded_server():
    """Start an in-thread ``UpperServer`` with options; its ``.stats`` are readable."""
    started = []

    def start(**options):
        running = ThreadedServer(**options).start()
        started.append(running)
        return running

    yield start
    for running in started:
        running.stop()


@pytest.fixture
def connect():
    """Open raw client sockets (timeouts set); all closed after the test."""
    sockets = []

    def open_socket(address, timeout: float = SOCKET_TIMEOUT) -> socket.socket:
        sock = socket.create_connection(address, timeout=timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sockets.append(sock)
        return sock

    yield open_socket
    for sock in sockets:
        sock.close()


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
