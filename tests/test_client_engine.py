"""The client library's one connection engine (``upper.client.duplex``), its address
syntax (``upper.client.url``, shared by the CLI, the checker and Locust), windowed
pipelining (``upper.client.window``) and the strict disconnect, on loopback."""

import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from wrong_servers import CorrectServer, ResetOnCloseServer

from upper.check.cli import parse_args as check_args
from upper.client import ConnectionLost, UpperClient
from upper.client.cli import parse_args as client_args
from upper.client.duplex import DEFAULT_TIMEOUT, connect
from upper.client.url import AddressError, Endpoint, SchemeError, parse_endpoint
from upper.client.window import ExtraReply, Window

TIMEOUT = 5.0
ROOT = Path(__file__).resolve().parent.parent


def in_locust(code: str) -> str:
    """What ``code`` prints with ``upper.loadtest.tcp_user`` imported as ``tcp_user``, in a
    process of its own: importing Locust monkey-patches the whole standard library."""
    done = subprocess.run(
        [sys.executable, "-c", f"from upper.loadtest import tcp_user\n{code}"],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
    )  # fmt: skip
    assert done.returncode == 0, done
    return done.stdout.strip()


@pytest.mark.parametrize(("text", "endpoint"), [
    ("127.0.0.1:5077", Endpoint("127.0.0.1", 5077, None)),
    ("[::1]:5077", Endpoint("::1", 5077, None)),
    ("tcp://127.0.0.1:5077", Endpoint("127.0.0.1", 5077, False)),
    ("tls://example.org:5077/", Endpoint("example.org", 5077, True)),
    ("TLS://[::1]:1", Endpoint("::1", 1, True)),
])
def test_one_address_syntax(text, endpoint):
    assert parse_endpoint(text) == endpoint
    assert in_locust(f"print(tcp_user.parse_host({text!r}))") == repr(  # Locust's --host
        (endpoint.host, endpoint.port)
    )
    for parse in (client_args, check_args):
        args = parse(["--host", text])
        assert (args.host, args.port) == (endpoint.host, endpoint.port), parse
        assert args.tls is bool(endpoint.tls), parse


@pytest.mark.parametrize(("text", "error"), [
    ("ftp://127.0.0.1:5077", SchemeError),
    ("127.0.0.1", AddressError),
    ("::1:5077", AddressError),
    ("127.0.0.1:99999", AddressError),
])
def test_malformed_addresses_say_why(text, error):
    with pytest.raises(error):
        parse_endpoint(text)


def test_a_host_alone_takes_the_port_option():
    assert parse_endpoint("::1", port_required=False) == Endpoint("::1", None, None)
    args = client_args(["--host", "::1", "--port", "5077"])
    assert (args.host, args.port) == ("::1", 5077)


@pytest.mark.parametrize("parse", [client_args, check_args])
def test_a_port_twice_is_a_usage_error(parse, capsys):
    with pytest.raises(SystemExit) as exited:
        parse(["--host", "127.0.0.1:5077", "--port", "5078"])
    assert exited.value.code == 2
    assert "it already has a port" in capsys.readouterr().err


def test_the_client_command_line_takes_host_port(server):
    for host in (f"127.0.0.1:{server.port}", f"tcp://127.0.0.1:{server.port}"):
        done = subprocess.run(
            [sys.executable, "-m", "upper_client", "--host", host, "hola"],
            capture_output=True, text=True, timeout=30, cwd=ROOT,
        )  # fmt: skip
        assert (done.returncode, done.stdout, done.stderr) == (0, "HOLA\n", ""), host


def test_every_client_side_tool_waits_the_same_by_default():
    assert UpperClient().timeout == DEFAULT_TIMEOUT
    assert client_args([]).timeout == check_args([]).timeout == DEFAULT_TIMEOUT
    assert in_locust("print(tcp_user.TcpUser.socket_timeout)") == repr(DEFAULT_TIMEOUT)


def test_duplex_sends_and_receives_at_once_then_tells_a_fin(server):
    duplex = connect("127.0.0.1", server.port, TIMEOUT)
    try:
        assert duplex.start_duplex() == b""
        out = memoryview(b"abc\n" * 200_000)  # more than the socket buffers: needs reading
        received = bytearray()
        deadline = time.monotonic() + 30
        while out and time.monotonic() < deadline:
            readable, writable, _ = duplex.wait(TIMEOUT, write=True)
            if writable:
                out = out[duplex.send_some(out):]
            if readable:
                received += duplex.receive_some() or b""
        assert not out
        duplex.shutdown_write()  # our EOF: the server answers the rest and closes
        while True:
            assert duplex.wait(TIMEOUT)[0], "no FIN"
            data = duplex.receive_some()
            if data == b"":
                break
            received += data or b""
        assert bytes(received) == b"ABC\n" * 200_000
        assert duplex.pending_error() == 0
    finally:
        duplex.close()


def test_duplex_tells_a_reset_from_a_fin():
    with ResetOnCloseServer() as wrong:
        duplex = connect(*wrong.address, TIMEOUT)
        try:
            duplex.start_duplex()
            assert duplex.send_some(b"hola\nDESCONEXION\n") == 17
            received = bytearray()
            with pytest.raises(OSError):  # the reset, not b"" (a FIN)
                while duplex.wait(TIMEOUT)[0]:
                    data = duplex.receive_some()
                    assert data != b"", "a FIN, not a reset"
                    received += data or b""
            assert received in (b"", b"HOLA\n")  # a reset may destroy the reply
        finally:
            duplex.close()


def test_a_window_keeps_replies_in_order_with_their_lines(server):
    with UpperClient("127.0.0.1", server.port, TIMEOUT) as client:
        lines = [(f"línea {n}\n".encode(), n) for n in range(500)]
        window = Window(client, lines, depth=7)
        seen = []
        for reply, tag, sent_at, arrived in window.replies():
            assert len(window.in_flight) <= 7 - 1
            assert reply == f"LÍNEA {tag}".encode() and arrived >= sent_at
            seen.append(tag)
        assert seen == list(range(500)) and not window.in_flight
        client.disconnect(strict=True)


class _TwoRepliesServer(CorrectServer):
    mistake = "answers each line twice"

    def send_reply(self, conn, reply):
        conn.sendall(reply * 2)


def test_a_reply_to_no_line_ends_the_window():
    with _TwoRepliesServer() as wrong:
        client = UpperClient(*wrong.address, TIMEOUT)
        client.connect()
        with pytest.raises(ExtraReply) as extra:
            for _ in Window(client, [(b"uno\n", 1)], depth=1).replies():
                pass
        assert extra.value.reply == b"UNO"
        assert not client.connected


class _EndlessReplyServer(CorrectServer):
    mistake = "answers a line with bytes that never end"

    def send_reply(self, conn, reply):
        try:
            while True:
                conn.sendall(b"X" * 65536)
        except OSError:
            pass  # the client gave up


def test_a_round_trip_holds_no_more_than_a_reply_can_be():
    with _EndlessReplyServer() as wrong:
        client = UpperClient(*wrong.address, TIMEOUT)
        client.connect()
        with pytest.raises(ConnectionLost, match="bytes without ending the reply"):
            client.upper("hola" * 1000)  # 4000 bytes: a reply is at most 12000
        assert not client.connected


class _FarewellServer(CorrectServer):
    mistake = "answers DESCONEXION"

    def end_session(self, conn):
        conn.sendall(b"ADIOS\n")
        super().end_session(conn)


class _EarlyCloseServer(CorrectServer):
    mistake = "closes after the first reply"

    def send_reply(self, conn, reply):
        conn.sendall(reply)
        conn.shutdown(socket.SHUT_WR)


def test_the_strict_disconnect_wants_the_close_and_nothing_else():
    with _FarewellServer() as wrong:
        for strict in (False, True):
            client = UpperClient(*wrong.address, TIMEOUT)
            client.connect()
            if not strict:
                client.disconnect()  # the lenient one discards what comes
                continue
            with pytest.raises(ConnectionLost, match="answered DESCONEXION with b'ADIOS"):
                client.disconnect(strict=True)
            assert not client.connected
    with _EarlyCloseServer() as early:
        client = UpperClient(*early.address, TIMEOUT)
        client.connect()
        assert client.upper("hola") == "HOLA"
        deadline = time.monotonic() + TIMEOUT
        while not client.closed_by_server() and time.monotonic() < deadline:
            time.sleep(0.01)
        with pytest.raises(ConnectionLost, match="closed the connection before DESCONEXION"):
            client.disconnect(strict=True)


def test_no_module_reaches_into_the_engine():
    # Another object's private state: anything but self._broken, self._buffer, ...
    reach = re.compile(r"(?<!\bself)\._(broken|buffer|require_socket)\b")
    for path in [*(ROOT / "upper").rglob("*.py"), ROOT / "loadtest" / "locustfile.py"]:
        assert not reach.search(path.read_text()), path


def test_numeric_hosts_are_answered_without_the_resolver():
    from upper.client.resolve import NumericHostsFirst

    class NoResolver:
        def getaddrinfo(self, *args):
            raise AssertionError(f"asked the resolver for {args}")

    numeric = NumericHostsFirst(NoResolver())
    assert numeric.getaddrinfo("127.0.0.1", 5000, 0, socket.SOCK_STREAM)[0][4] == (
        "127.0.0.1", 5000
    )
    with pytest.raises(AssertionError, match="asked the resolver"):
        numeric.getaddrinfo("localhost", 5000)

