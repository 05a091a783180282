"""systemd: socket activation (with the real systemd-socket-activate) and notifications."""

import ctypes
import os
import signal
import socket
import ssl
import subprocess
import sys
import urllib.request
from pathlib import Path

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


# -- the shipped units -------------------------------------------------------------------

DEPLOY = Path(__file__).resolve().parent.parent / "docs" / "deploy"
MOST_EXPOSED = 25
"""``systemd-analyze security --threshold`` counts tenths: 2.5, the top of its "OK"."""


@pytest.fixture
def units(tmp_path):
    """Copies of both units whose ExecStart runs this test's Python (verify checks it exists)."""
    service = (DEPLOY / "upper.service").read_text()
    assert "ExecStart=/opt/upper/bin/python " in service
    (tmp_path / "upper.service").write_text(
        service.replace("ExecStart=/opt/upper/bin/python ", f"ExecStart={sys.executable} ")
    )
    (tmp_path / "upper.socket").write_text((DEPLOY / "upper.socket").read_text())
    return tmp_path


def test_systemd_analyze_verify_passes_the_units(units):
    analyze = require_tool("systemd-analyze", package="systemd")
    result = subprocess.run(
        [analyze, "verify", "upper.service", "upper.socket"],
        cwd=units,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (result.returncode, result.stdout, result.stderr) == (0, "", ""), result


def test_systemd_analyze_security_rates_the_service_ok(units):
    analyze = require_tool("systemd-analyze", package="systemd")
    command = [analyze, "security", "--offline=yes", f"--threshold={MOST_EXPOSED}"]
    result = subprocess.run(
        [*command, "upper.service"], cwd=units, capture_output=True, text=True, timeout=60
    )
    rating = [line for line in result.stdout.splitlines() if "Overall exposure" in line]
    assert result.returncode == 0, rating or result.stdout + result.stderr
    assert rating and "OK" in rating[0].split(), rating


def test_the_socket_listens_where_the_server_would():
    from upper.protocol.address import DEFAULT_HOST, DEFAULT_PORT

    lines = (DEPLOY / "upper.socket").read_text().splitlines()
    assert [line for line in lines if line.startswith("ListenStream=")] == [
        f"ListenStream={DEFAULT_HOST}:{DEFAULT_PORT}"
    ]


PR_SET_NO_NEW_PRIVS = 38
PR_SET_MDWE = 65
PR_MDWE_REFUSE_EXEC_GAIN = 1


def _deny_write_execute() -> None:
    """In the child: what MemoryDenyWriteExecute= and NoNewPrivileges= ask of the kernel
    (systemd 252 does the first with seccomp; Linux 6.3 has it as PR_SET_MDWE, kept across
    exec)."""
    libc = ctypes.CDLL(None, use_errno=True)
    for option, value in ((PR_SET_NO_NEW_PRIVS, 1), (PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN)):
        if libc.prctl(option, value, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), f"prctl({option})")


def _kernel_denies_write_execute() -> bool:
    probe = "import mmap; mmap.mmap(-1, 4096, prot=mmap.PROT_WRITE | mmap.PROT_EXEC)"
    try:
        result = subprocess.run(
            [sys.executable, "-c", probe],
            preexec_fn=_deny_write_execute,
            capture_output=True,
            text=True,
            timeout=30,
        )
    except subprocess.SubprocessError as exc:  # prctl refused: a kernel before 6.3
        pytest.skip(f"this kernel has no PR_SET_MDWE: {exc}")
    return result.returncode != 0 and "PermissionError" in result.stderr


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="a Linux kernel setting")
def test_the_server_serves_without_writable_executable_memory(certificates, tmp_path):
    # systemd is not PID 1 here (systemd-run cannot start the unit), so the unit's
    # MemoryDenyWriteExecute= is reproduced by the kernel call it stands for.
    assert _kernel_denies_write_execute(), "PR_SET_MDWE did not take effect"
    port = free_port()
    command = [sys.executable, "-m", "upper_server", "--host", "127.0.0.1", "--port", "0"]
    command += ["--workers", "2", "--metrics-port", str(port), "--log-level", "warning"]
    command += certificates.server_args()
    process = subprocess.Popen(
        command,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        preexec_fn=_deny_write_execute,
    )
    try:
        address = parse_ready_line(read_line_with_timeout(process.stdout, TIMEOUT))[0]
        context = ssl.create_default_context(cafile=str(certificates.ca))
        with socket.create_connection(address, timeout=TIMEOUT) as raw:
            with context.wrap_socket(raw, server_hostname="127.0.0.1") as sock:
                sock.sendall(b"sin memoria ejecutable\nDESCONEXION\n")
                assert sock.recv(100) == b"SIN MEMORIA EJECUTABLE\n"
        url = f"http://127.0.0.1:{port}/metrics"
        with urllib.request.urlopen(url, timeout=TIMEOUT) as reply:
            assert b"upper_worker_process_open_fds" in reply.read()
    finally:
        process.send_signal(signal.SIGTERM)
        _stdout, stderr = process.communicate(timeout=30)
    assert process.returncode == 0, stderr
    assert b"Traceback" not in stderr
