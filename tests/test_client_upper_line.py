"""``UpperClient.upper_line`` on plain blocking sockets (no gevent): the ordinary path.

The cooperative path under gevent is tested by ``test_client_cooperative.py``.
"""

import time

import pytest

from upper.client import UpperClient
from upper.client.errors import NotConnected


@pytest.fixture
def client(server):
    with UpperClient(*server.address, timeout=10) as connected:
        assert connected._cooperative is None  # plain sockets: the ordinary path
        yield connected


@pytest.mark.parametrize(
    "line",
    [
        b"no newline",
        b"two\nlines\n",
        b"\nleading newline",
        b"",
        b"DESCONEXION\n",
        b"DESCONEXION\r\n",
    ],
)
def test_invalid_lines_are_refused_and_nothing_is_sent(client, line):
    with pytest.raises(ValueError):
        client.upper_line(line)
    # Nothing reached the server: the session is open and in step.
    assert client.upper_line(b"still here\n") == b"STILL HERE\n"
    assert client.connected


@pytest.mark.parametrize(
    ("line", "reply"),
    [
        (b"hola servidor\n", b"HOLA SERVIDOR\n"),
        ("canción straße\n".encode(), "CANCIÓN STRASSE\n".encode()),
        (b"hola\r\n", b"HOLA\r\n"),
        (b"abc\xff\n", b"ABC\xff\n"),
        (b"\n", b"\n"),
        (b"desconexion\n", b"DESCONEXION\n"),
        (b"DESCONEXIONES\n", b"DESCONEXIONES\n"),
        (b"DESCONEXION \n", b"DESCONEXION \n"),
    ],
)
def test_reply_keeps_its_newline(client, line, reply):
    assert client.upper_line(line) == reply


def test_not_connected(server):
    client = UpperClient(*server.address, timeout=10)
    with pytest.raises(NotConnected):
        client.upper_line(b"hola\n")
    client.connect()
    assert client.upper_line(b"hola\n") == b"HOLA\n"
    client.close()
    with pytest.raises(NotConnected):
        client.upper_line(b"hola\n")


def test_validation_comes_before_the_connection_check(server):
    client = UpperClient(*server.address, timeout=10)
    with pytest.raises(ValueError):
        client.upper_line(b"no newline")


def test_elapsed_is_the_round_trip(client):
    assert client.elapsed is None
    for count in range(20):
        started = time.perf_counter()
        assert client.upper_line(f"línea {count}\n".encode()) == f"LÍNEA {count}\n".encode()
        wall = time.perf_counter() - started
        assert isinstance(client.elapsed, float)
        assert 0 < client.elapsed <= wall, (client.elapsed, wall)


def test_upper_returns_text_without_terminator(client):
    started = time.perf_counter()
    assert client.upper("hola, ñandú") == "HOLA, ÑANDÚ"
    wall = time.perf_counter() - started
    assert 0 < client.elapsed <= wall
    assert client.upper("") == ""
    assert client.upper("crlf\r") == "CRLF\r"
    client.disconnect()
    assert not client.connected
