"""``open_listeners``: every address of a host, one port for all, nothing left open on failure.

In-process, with ``socket.getaddrinfo`` answering for a made-up name as a
machine whose ``/etc/hosts`` names both ``127.0.0.1`` and ``::1`` would.
"""

import errno
import socket

import pytest

from upper.server import listener
from upper.server.listener import ListenError, addresses_text, open_listeners

NAME = "dual-stack.upper.test"
_real_getaddrinfo = socket.getaddrinfo


def dual_stack(host, port, family=0, type=0, proto=0, flags=0):
    if host == NAME:
        return [
            info
            for address in ("127.0.0.1", "::1", "127.0.0.1")  # duplicates happen
            for info in _real_getaddrinfo(address, port, family, type, proto, flags)
        ]
    return _real_getaddrinfo(host, port, family, type, proto, flags)


@pytest.fixture
def opened(monkeypatch):
    """Every socket ``listening_socket`` creates, to check none is left open."""
    monkeypatch.setattr(socket, "getaddrinfo", dual_stack)
    created = []
    real_listen = listener.listening_socket

    def recording_listen(*args):
        sock = real_listen(*args)
        created.append(sock)
        return sock

    monkeypatch.setattr(listener, "listening_socket", recording_listen)
    yield created
    for sock in created:
        sock.close()


def test_every_distinct_address_gets_a_socket_on_one_port(opened):
    socks = open_listeners(NAME, 0, 16)
    assert [sock.family for sock in socks] == [socket.AF_INET, socket.AF_INET6]
    port = socks[0].getsockname()[1]
    assert addresses_text(socks) == f"127.0.0.1:{port} [::1]:{port}"
    assert socks[1].getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY) == 1
    for sock in socks:
        assert not sock.getblocking()


def test_a_picked_port_taken_on_the_other_address_is_picked_again(opened, monkeypatch):
    real_listen = listener.listening_socket
    refusals = []

    def taken_once_on_ipv6(family, kind, proto, address, backlog):
        if family == socket.AF_INET6 and not refusals:
            refusals.append(address[1])
            raise OSError(errno.EADDRINUSE, "Address already in use")
        return real_listen(family, kind, proto, address, backlog)

    monkeypatch.setattr(listener, "listening_socket", taken_once_on_ipv6)
    socks = open_listeners(NAME, 0, 16)
    assert len(refusals) == 1
    assert len({sock.getsockname()[1] for sock in socks}) == 1
    first_try = [sock for sock in opened if sock not in socks]
    assert first_try and all(sock.fileno() == -1 for sock in first_try), "first try left open"


def test_a_failure_closes_what_was_opened_and_is_one_line(opened):
    with socket.socket(socket.AF_INET6) as taken:
        taken.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        taken.bind(("::1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ListenError) as raised:
            open_listeners(NAME, port, 16)
    assert str(raised.value) == f"address {NAME}:{port} is already in use"
    assert opened and all(sock.fileno() == -1 for sock in opened)


def test_an_unknown_host_is_one_line():
    with pytest.raises(ListenError, match="cannot listen on host 'nope.invalid'"):
        open_listeners("nope.invalid", 0, 16)
