"""The benchmark's peer servers and its Python fallback driver speak the protocol and work together.

Each peer is started as a subprocess on port 0, exactly the way the benchmark
starts it (``benchmarks.peers.PEERS``, the leanest greenlet peer included). No
timing assertions: the driver runs for about a second and must have verified
replies and no errors. The native driver has its own tests
(``test_native_driver.py``).
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from helpers import ECHO_SERVER

from benchmarks import driver
from benchmarks.peers import NATIVE_PEERS, PEERS
from upper.protocol import uppercase
from upper.server.launcher import ServerProcess

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 5.0


def start(argv: list[str]) -> ServerProcess:
    """Start a peer on 127.0.0.1:0 the way the benchmark does; its ready line names it."""
    server = ServerProcess(command=[*argv, "--host", "127.0.0.1", "--port", "0"]).start()
    name = argv[argv.index("-m") + 1].rsplit(".", 1)[1]
    assert server.banner.startswith(f"{name} listening on "), server.banner
    return server


@pytest.fixture(params=list(PEERS), scope="module")
def peer(request):
    with start(PEERS[request.param]) as server:
        yield server.port


def connect(port: int) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
    s.settimeout(TIMEOUT)
    return s


def recv_exactly(s: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            break
        buf += chunk
    return buf


def recv_all(s: socket.socket) -> bytes:
    """Everything until the server closes."""
    buf = b""
    while chunk := s.recv(65536):
        buf += chunk
    return buf


def test_one_line(peer):
    with connect(peer) as s:
        s.sendall(b"hola servidor\n")
        assert recv_exactly(s, 14) == b"HOLA SERVIDOR\n"
        s.sendall(b"hola\r\n")
        assert recv_exactly(s, 6) == b"HOLA\r\n"


def test_pipelined_batch(peer):
    lines = [b"canci\xc3\xb3n\n", b"stra\xc3\x9fe\r\n", b"abc\xff\n", b"\n", b"desconexion\n"]
    lines *= 50
    expected = b"".join(uppercase(line) for line in lines)
    assert b"STRASSE\r\n" in expected and b"ABC\xff\n" in expected
    with connect(peer) as s:
        s.sendall(b"".join(lines))
        assert recv_exactly(s, len(expected)) == expected


def test_desconexion_closes(peer):
    with connect(peer) as s:
        s.sendall(b"a\nb\nDESCONEXION\n")
        assert recv_all(s) == b"A\nB\n"


def test_eof_answers_and_closes(peer):
    with connect(peer) as s:
        s.sendall(b"x\ny")
        s.shutdown(socket.SHUT_WR)
        assert recv_all(s) == b"X\nY"


@pytest.mark.parametrize("name", list(PEERS))
def test_sigterm_with_open_connection_exits_zero(name):
    with start(PEERS[name]) as server:
        with connect(server.port) as s:
            s.sendall(b"x\n")
            assert recv_exactly(s, 2) == b"X\n"
            assert server.stop_and_collect(signal.SIGTERM, timeout=5)[::2] == (0, "")


@pytest.fixture(scope="module")
def uvloop_peer():
    with start(PEERS["uvloop-protocol"]) as server:
        yield server.port


@pytest.mark.parametrize(
    "kwargs",
    [
        {"mode": "pingpong", "connections": 20},
        {"mode": "pipeline", "connections": 10, "lines_per_round": 8},
        {"mode": "churn", "connections": 10, "messages_per_connection": 3},
    ],
    ids=lambda kw: kw["mode"],
)
def test_driver(uvloop_peer, kwargs):
    r = driver.run(port=uvloop_peer, duration=0.8, warmup=0.2, **kwargs)
    assert r["errors"] == 0, r
    assert r["messages"] > 0 and r["messages_per_s"] > 0, r
    assert r["p50_us"] is not None and r["p50_us"] <= r["p99_us"], r
    assert r["driver_cpu_s"] >= 0
    if kwargs["mode"] == "churn":
        assert r["sessions"] > 0, r
    else:
        assert r["connections"] == kwargs["connections"], r


def test_driver_idle(uvloop_peer):
    r = driver.run(port=uvloop_peer, connections=100, duration=0.3, warmup=0, mode="idle",
                   settle=0.2)
    assert r["errors"] == 0, r
    assert r["connections"] == 100 and r["verified"] == 100, r
    assert r["driver"] == "python" and r["settle_s"] == 0.2, r


def test_driver_cli_against_threading_peer():
    """The CLI prints one JSON object; also churn against a thread-per-client server."""
    with start(PEERS["threading"]) as server:
        port = server.port
        out = subprocess.run(
            [sys.executable, "-m", "benchmarks.driver", "--port", str(port), "--quiet"]
            + ["--mode", "churn", "--connections", "5", "--duration", "0.8", "--warmup", "0.2"]
            + ["--messages-per-connection", "2"],
            cwd=ROOT,
            capture_output=True,
            timeout=30,
            check=True,
        )
        r = json.loads(out.stdout)
        assert r["mode"] == "churn" and r["errors"] == 0 and r["messages"] > 0, r
        assert r["sessions"] > 0, r




def test_driver_counts_errors_against_a_wrong_server():
    """An echo server (no uppercase) is caught: errors, nothing verified."""
    with ServerProcess(command=[sys.executable, "-c", ECHO_SERVER]) as server:
        r = driver.run(
            port=server.port, connections=2, duration=0.5, warmup=0, ramp_timeout=1,
            connect_timeout=1,
        )
        assert r["messages"] == 0 and r["connections"] == 0, r
        assert r["errors"] > 0 and "mismatch" in r["error_kinds"], r


# -- the machine's floor: c_epoll.c (ASCII only, by design) ------------------------------


@pytest.fixture(scope="module")
def c_epoll():
    with start(NATIVE_PEERS["c-epoll"]) as server:
        yield server


def test_c_epoll_answers_ascii_lines_and_passes_other_bytes(c_epoll):
    with connect(c_epoll.port) as s:
        s.sendall(b"hola servidor\nhola\r\nabc\xff\n\n")
        assert recv_exactly(s, 26) == b"HOLA SERVIDOR\nHOLA\r\nABC\xff\n\n"


def test_c_epoll_streams_and_holds_only_a_possible_keyword(c_epoll):
    with connect(c_epoll.port) as s:
        s.sendall(b"hola")
        assert recv_exactly(s, 4) == b"HOLA"
        s.sendall(b" mundo\nDESCON")  # the line start could still become the keyword
        assert recv_exactly(s, 7) == b" MUNDO\n"
        s.sendall(b"EXIONES\n")
        assert recv_exactly(s, 14) == b"DESCONEXIONES\n"


@pytest.mark.parametrize(
    "pieces, answered",
    [
        ([b"a\nb\nDESCONEXION\nc\n"], b"A\nB\n"),
        ([b"a\nDESC", b"ONEX", b"ION\r", b"\nc\n"], b"A\n"),
        ([b"desconexion\nDESCONEXION\n"], b"DESCONEXION\n"),
    ],
    ids=["one-write", "split", "lowercase-first"],
)
def test_c_epoll_ends_the_session_on_the_keyword_line(c_epoll, pieces, answered):
    with connect(c_epoll.port) as s:
        for piece in pieces:
            s.sendall(piece)
        assert recv_all(s) == answered


def test_c_epoll_answers_the_last_line_at_eof(c_epoll):
    with connect(c_epoll.port) as s:
        s.sendall(b"x\ny")
        s.shutdown(socket.SHUT_WR)
        assert recv_all(s) == b"X\nY"


def test_c_epoll_holds_replies_for_a_client_that_does_not_read(c_epoll):
    """Backpressure: 8 MiB sent before reading anything all come back, in order."""
    block = b"abcdefghijklmnopqrstuvwxyz012345678\n" * 1024
    with connect(c_epoll.port) as s:
        sender = threading.Thread(target=lambda: s.sendall(block * 228), daemon=True)
        sender.start()
        got = recv_exactly(s, len(block) * 228)
        sender.join(TIMEOUT)
    assert got == block.upper() * 228


def test_c_epoll_under_the_driver(c_epoll):
    for kwargs in ({"mode": "pingpong", "connections": 20},
                   {"mode": "churn", "connections": 10, "messages_per_connection": 3}):
        r = driver.run(port=c_epoll.port, duration=0.5, warmup=0.1, **kwargs)
        assert r["errors"] == 0 and r["messages"] > 0, r


def test_c_epoll_exits_zero_on_sigterm():
    with start(NATIVE_PEERS["c-epoll"]) as server:
        with connect(server.port) as s:
            s.sendall(b"x\n")
            assert recv_exactly(s, 2) == b"X\n"
            assert server.stop_and_collect(signal.SIGTERM, timeout=5)[::2] == (0, "")
