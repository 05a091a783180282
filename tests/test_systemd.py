"""systemd: socket activation (with the real systemd-socket-activate) and notifications."""

import os
import signal
import socket
import subprocess
import sys

import psutil
import pytest
from helpers import eventually, free_port, read_until_eof, require_tool
from servers import ServerProcess

from upper.server import systemd
from upper.server.launcher import parse_ready_line, read_line_with_timeout

TIMEOUT = 10.0


@pytest.fixture
def notify_socket(tmp_path):
    """A datagram socket standing for systemd's; yields (path, receive())."""
    path = str(tmp_path / "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(path)
        sock.settimeout(TIMEOUT)

        def receive() -> set[str]:
            return set(sock.recv(4096).decode().split("\n"))

        yield path, receive


# -- the two protocols, in-process -------------------------------------------------------


def test_notify_sends_one_datagram(notify_socket):
    path, receive = notify_socket
    assert systemd.notify("READY=1", "STATUS=serving", environ={"NOTIFY_SOCKET": path})
    assert receive() == {"READY=1", "STATUS=serving"}


def test_notify_reaches_an_abstract_socket():
    name = f"upper-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(TIMEOUT)
        assert systemd.notify("READY=1", environ={"NOTIFY_SOCKET": "@" + name})
        assert sock.recv(100) == b"READY=1"


def test_notify_without_a_service_manager_does_nothing(tmp_path):
    assert not systemd.notify("READY=1", environ={})
    # A socket that is gone is logged, never raised: the server keeps serving.
    assert not systemd.notify("READY=1", environ={"NOTIFY_SOCKET": str(tmp_path / "gone")})


def test_listen_fds_are_for_the_pid_they_name_only():
    environ = {"LISTEN_PID": str(os.getpid()), "LISTEN_FDS": "2", "LISTEN_FDNAMES": "a:b"}
    assert systemd.listen_fds(environ) == [3, 4]
    assert environ == {}, "the variables must not reach worker processes"
    assert systemd.listen_fds({"LISTEN_PID": str(os.getpid() + 1), "LISTEN_FDS": "1"}) == []
    assert systemd.listen_fds({"LISTEN_FDS": "1"}) == []
    assert systemd.listen_fds({"LISTEN_PID": str(os.getpid()), "LISTEN_FDS": "x"}) == []


# -- the real server ---------------------------------------------------------------------


@pytest.mark.parametrize("workers", ["1", "2"])
def test_the_server_tells_systemd_ready_reloading_and_stopping(
    start_server, seen_workers, notify_socket, workers
):
    path, receive = notify_socket
    server = start_server(
        "--workers", workers, "--log-level", "warning", env={"NOTIFY_SOCKET": path}
    )
    assert receive() == {"READY=1"}
    server.send_signal(signal.SIGHUP)
    reloading = receive()
    assert "RELOADING=1" in reloading
    assert any(item.startswith("MONOTONIC_USEC=") for item in reloading)
    assert receive() == {"READY=1"}  # the new workers serve
    code, _stdout, stderr = server.stop_and_collect()
    assert code == 0, stderr
    assert receive() == {"STOPPING=1"}


@pytest.mark.parametrize("workers", ["1", "2"])
def test_systemd_socket_activate_serves_the_socket_it_was_given(workers):
    tool = require_tool("systemd-socket-activate", package="systemd")
    port = free_port()
    command = [tool, "-l", f"127.0.0.1:{port}", sys.executable, "-m", "upper_server"]
    process = subprocess.Popen(
        [*command, "--workers", workers, "--port", "1", "--log-level", "warning"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
    )
    try:
        listening = read_line_with_timeout(process.stderr, TIMEOUT)
        assert f"Listening on 127.0.0.1:{port}" in listening, listening
        # systemd-socket-activate starts the server at the first connection, as systemd does.
        with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock:
            sock.sendall(b"hola systemd\nDESCONEXION\n")
            ready = read_line_with_timeout(process.stdout, TIMEOUT)
            # --port 1 would fail if the server tried to bind: it serves the socket it got.
            assert parse_ready_line(ready) == [("127.0.0.1", port)]
            assert read_until_eof(sock) == b"HOLA SYSTEMD\n"
        # A reload hands the socket systemd gave on to new workers.
        parent = psutil.Process(process.pid)
        before = {child.pid for child in parent.children()}
        process.send_signal(signal.SIGHUP)
        assert eventually(lambda: _replaced(parent, before, int(workers)))
        with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock:
            sock.sendall(b"otra\nDESCONEXION\n")
            assert read_until_eof(sock) == b"OTRA\n"
    finally:
        process.send_signal(signal.SIGTERM)
        _stdout, stderr = process.communicate(timeout=30)
    assert process.returncode == 0, stderr
    assert b"Traceback" not in stderr


def _replaced(parent: psutil.Process, before: set[int], count: int) -> bool:
    now = set()
    for child in parent.children():
        try:
            if child.status() != psutil.STATUS_ZOMBIE:
                now.add(child.pid)
        except psutil.NoSuchProcess:
            pass
    return len(now) == count and not now & before


def test_the_ready_line_still_comes_from_a_server_that_binds(start_server):
    # Without LISTEN_FDS nothing changes: the server binds its own socket.
    server: ServerProcess = start_server("--log-level", "warning")
    assert server.port > 0
