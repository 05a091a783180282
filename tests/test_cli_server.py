"""``python -m upper_server`` as a user runs it: flags, environment, banner, signals, errors.

Every server listens on 127.0.0.1 with port 0; every wait has a timeout.
"""

import os
import re
import selectors
import signal
import socket
import subprocess
import sys
import time

import pytest
from helpers import clean_env, read_until_eof
from servers import ServerProcess

from upper.server.cli import parse_args

BANNER = re.compile(r"^upper_server listening on 127\.0\.0\.1:(?P<port>\d+)$")
RUN_TIMEOUT = 15.0
UNBINDABLE_ADDRESS = "192.0.2.1"
"""TEST-NET-1: never assigned to this machine. Only ever bound to, never sent traffic."""


def run_server(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run ``python -m upper_server ARGS`` that is expected to exit on its own."""
    return subprocess.run(
        [sys.executable, "-m", "upper_server", *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        env=env if env is not None else clean_env(),
    )


PROG = "python -m upper_server"
"""What the tests type, so what the messages name the command."""


def assert_usage_error(result: subprocess.CompletedProcess, mentions: str) -> None:
    """One line (not the usage block), with a pointer to --help, and exit status 2."""
    assert result.returncode == 2, result
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"{PROG}: error:"), result.stderr
    assert lines[0].endswith(f" (see {PROG} --help)"), result.stderr
    assert mentions in lines[0], result.stderr


def assert_one_line_error(result: subprocess.CompletedProcess, mentions: str) -> None:
    assert result.returncode != 0, result
    assert result.stdout == "", "no banner for a server that is not listening"
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"{PROG}: error:"), result.stderr
    assert mentions in lines[0], result.stderr


def start_with(command_args: list[str], env: dict) -> ServerProcess:
    """A ``ServerProcess`` with exactly these arguments (no forced --host/--port)."""
    process = ServerProcess(command=[sys.executable, "-m", "upper_server", *command_args])
    process.env = env
    return process.start()


def exchange(address, data: bytes, expected: bytes) -> None:
    with socket.create_connection(address, timeout=10) as sock:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        assert read_until_eof(sock) == expected


# --- Banner and addresses ----------------------------------------------------------------


def test_banner_is_one_line_with_the_real_port_and_server_answers(start_server):
    server = start_server()
    match = BANNER.match(server.banner)
    assert match, server.banner
    port = int(match["port"])
    assert 0 < port <= 65535
    exchange(("127.0.0.1", port), b"hola servidor\n", b"HOLA SERVIDOR\n")
    code, stdout, stderr = server.stop_and_collect(signal.SIGTERM)
    assert code == 0
    assert stdout == "", "the banner is the only line on stdout"
    assert "Traceback" not in stderr


def test_environment_gives_host_and_port_defaults():
    server = start_with([], clean_env(UPPER_HOST="127.0.0.1", UPPER_PORT="0"))
    try:
        match = BANNER.match(server.banner)
        assert match, server.banner
        assert int(match["port"]) != 0
        exchange(server.address, b"env\n", b"ENV\n")
        code, _stdout, stderr = server.stop_and_collect(signal.SIGTERM)
        assert code == 0
        assert "Traceback" not in stderr
    finally:
        server.kill()


def test_host_defaults_to_loopback_without_environment():
    server = start_with(["--port", "0"], clean_env())
    try:
        assert BANNER.match(server.banner), server.banner
        exchange(server.address, b"x\n", b"X\n")
    finally:
        server.kill()


def test_flags_override_environment(start_server):
    # Bad values in the environment do not matter when the flags are given.
    server = start_server(env={"UPPER_HOST": "nope.invalid", "UPPER_PORT": "abc"})
    assert BANNER.match(server.banner), server.banner
    exchange(server.address, b"flags win\n", b"FLAGS WIN\n")


def test_documented_defaults(monkeypatch):
    monkeypatch.delenv("UPPER_HOST", raising=False)
    monkeypatch.delenv("UPPER_PORT", raising=False)
    args = parse_args([])
    assert (args.host, args.port, args.log_level) == ("127.0.0.1", 5000, "info")


def test_environment_defaults_parsed(monkeypatch):
    monkeypatch.setenv("UPPER_HOST", "::1")
    monkeypatch.setenv("UPPER_PORT", "6000")
    args = parse_args([])
    assert (args.host, args.port) == ("::1", 6000)
    args = parse_args(["--host", "127.0.0.1", "--port", "7000"])
    assert (args.host, args.port) == ("127.0.0.1", 7000)


# --- Signals -------------------------------------------------------------------------------


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_on_idle_server_exits_zero_without_traceback(start_server, signum):
    server = start_server()
    exchange(server.address, b"a\n", b"A\n")
    code, stdout, stderr = server.stop_and_collect(signum)
    assert code == 0, stderr
    assert stdout == ""
    assert "Traceback" not in stderr


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_mid_session_answers_what_was_received_then_fin(start_server, connect, signum):
    server = start_server("--log-level", "warning")
    sock = connect(server.address)
    sock.sendall(b"uno\n")
    assert read_exactly_line(sock) == b"UNO\n"
    # One segment: its first line's reply proves the server has read the held-back "DESC"
    # (a line start that might still become DESCONEXION, so not answered yet).
    sock.sendall(b"dos\nDESC")
    assert read_exactly_line(sock) == b"DOS\n"
    server.send_signal(signum)
    # Everything received is answered, then a clean EOF: a reset would raise here.
    assert read_until_eof(sock) == b"DESC"
    # While this connection is still open the server no longer accepts new ones.
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(server.address, timeout=5).close()
    sock.close()
    # Signalled once only: wait for the exit without signalling again.
    stdout, stderr = server.process.communicate(timeout=20)
    assert server.process.returncode == 0, stderr
    assert stdout == b""
    assert b"Traceback" not in stderr


def read_exactly_line(sock: socket.socket) -> bytes:
    data = b""
    while not data.endswith(b"\n"):
        chunk = sock.recv(1)
        assert chunk, f"EOF after {data!r}"
        data += chunk
    return data


def test_signal_as_soon_as_the_banner_appears_still_exits_zero():
    """Ready means ready: a signal right after the banner must get the graceful shutdown.

    Many servers at once, each signalled the moment its banner arrives, to hit the gap
    (if any) between printing the banner and installing the signal handlers.
    """
    signals = [signal.SIGTERM, signal.SIGINT] * 5
    processes = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "upper_server",
                "--host",
                "127.0.0.1",
                "--port",
                "0",
                "--log-level",
                "warning",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=clean_env(),
        )
        for _ in signals
    ]
    results = []
    try:
        pending = {p.stdout.fileno(): (p, s) for p, s in zip(processes, signals, strict=True)}
        deadline = time.monotonic() + 30
        with selectors.DefaultSelector() as selector:
            for fd in pending:
                selector.register(fd, selectors.EVENT_READ)
            while pending:
                remaining = deadline - time.monotonic()
                assert remaining > 0, "servers did not all print their banner"
                for key, _ in selector.select(remaining):
                    process, signum = pending.pop(key.fd)
                    selector.unregister(key.fd)
                    banner = os.read(key.fd, 4096)
                    assert banner.startswith(b"upper_server listening on "), banner
                    process.send_signal(signum)
        for process, signum in zip(processes, signals, strict=True):
            _stdout, stderr = process.communicate(timeout=20)
            results.append((signum.name, process.returncode, b"Traceback" in stderr))
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.communicate(timeout=10)
    bad = [result for result in results if result[1:] != (0, False)]
    assert not bad, f"(signal, exit code, traceback) after an immediate signal: {bad}"


# --- Errors --------------------------------------------------------------------------------


def test_port_in_use_is_one_line_naming_the_address_exit_1():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        result = run_server("--host", "127.0.0.1", "--port", str(port))
    assert result.returncode == 1, result
    assert_one_line_error(result, f"127.0.0.1:{port}")
    assert "in use" in result.stderr


@pytest.mark.parametrize("port", ["99999", "65536", "abc", "-1", "1.5", ""])
def test_invalid_port_flag_is_a_usage_error(port):
    assert_usage_error(run_server("--host", "127.0.0.1", f"--port={port}"), "--port")


@pytest.mark.parametrize("port", ["99999", "abc", "-1"])
def test_invalid_port_environment_is_a_usage_error(port):
    result = run_server("--host", "127.0.0.1", env=clean_env(UPPER_PORT=port))
    assert_usage_error(result, "UPPER_PORT")


@pytest.mark.parametrize(
    ("host", "mentions"),
    [(UNBINDABLE_ADDRESS, UNBINDABLE_ADDRESS), ("nope.invalid", "nope.invalid")],
    ids=["address-not-on-this-machine", "unresolvable-name"],
)
def test_host_that_cannot_be_bound_is_a_clear_error(host, mentions):
    assert_one_line_error(run_server("--host", host, "--port", "0"), mentions)


def test_unbindable_host_from_environment_is_a_clear_error():
    result = run_server("--port", "0", env=clean_env(UPPER_HOST="nope.invalid"))
    assert_one_line_error(result, "nope.invalid")


@pytest.mark.parametrize(
    ("flag", "value"),
    [
        ("--idle-timeout", "-1"),
        ("--idle-timeout", "abc"),
        ("--idle-timeout", "nan"),
        ("--max-connections", "-1"),
        ("--max-connections", "abc"),
        ("--max-connections", "1.5"),
        ("--shutdown-timeout", "-0.5"),
        ("--shutdown-timeout", "soon"),
        ("--shutdown-timeout", "nan"),
        ("--workers", "-2"),
        ("--workers", "many"),
        ("--stats-interval", "-1"),
        ("--stats-interval", "x"),
        ("--stats-interval", "nan"),
        ("--log-level", "loud"),
        ("--log-level", ""),
        ("--metrics-port", "0"),
        ("--metrics-port", "65536"),
        ("--proxy-protocol", "v3"),
        ("--proxy-allow-from", "10.0.0.300/8"),
        ("--proxy-allow-from", "10.0.0.1/8"),  # host bits set: a typo, not a network
        ("--proxy-header-timeout", "0"),
        ("--proxy-header-timeout", "nan"),
    ],
)
def test_other_flags_reject_negative_and_garbage_values(flag, value, capsys):
    with pytest.raises(SystemExit) as exited:
        parse_args(["--port", "0", f"{flag}={value}"])
    assert exited.value.code == 2
    stderr = capsys.readouterr().err
    assert flag in stderr.strip().splitlines()[-1]


def test_bad_flag_value_end_to_end_exit_2():
    assert_usage_error(run_server("--port", "0", "--workers", "-1"), "--workers")
