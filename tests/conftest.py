"""The suite's fixtures. Helpers shared by test modules are in ``helpers.py`` and
``servers.py`` (pytest's ``pythonpath`` setting puts tests/ on the path)."""

import os
import signal
import socket

import pytest
from helpers import process_alive
from servers import ServerProcess, ThreadedServer
from tls_support import Transport, make_certificates

SOCKET_TIMEOUT = 10.0

# The suite reads the command lines' English: a developer's Spanish locale must not change
# it (LANGUAGE comes first where gettext looks). tests/test_languages.py sets its own.
os.environ["LANGUAGE"] = "en"


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


@pytest.fixture
def seen_workers():
    """{pid: create_time} of the workers a test saw; any still alive at the end is killed."""
    seen = {}
    yield seen
    for pid, created in seen.items():
        if process_alive(pid, created):
            os.kill(pid, signal.SIGKILL)


@pytest.fixture(scope="session")
def certificates(tmp_path_factory):
    """A test CA with server and client certificates (``tls_support.Certificates``)."""
    return make_certificates(tmp_path_factory.mktemp("certificates"))


@pytest.fixture(scope="module", params=["plain", "tls"])
def transport(request, certificates):
    """Plain TCP, then TLS: a module's socket-level tests run over both."""
    return Transport(certificates if request.param == "tls" else None)


@pytest.fixture(scope="module")
def any_server(transport):
    """The real ``python -m upper_server`` over ``transport``, shared by a module's tests."""
    with ServerProcess("--log-level", "warning", *transport.server_args()) as running:
        yield running
