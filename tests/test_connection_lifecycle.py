"""A connection's life around its session: the accept's log line, and the lingering close
without a greenlet (FIN first, then hub callbacks discard input until the peer's EOF,
bounded by the linger timeout and by a forced shutdown; none when that EOF came first)."""

import logging
import socket

import pytest
from helpers import read_until_eof
from tls_support import Transport

from upper.server.connection import Connection, State
from upper.server.tls import server_context


def _desconexion(running) -> socket.socket:
    client = socket.create_connection(running.address, timeout=10)
    client.sendall(b"hola\nDESCONEXION\n")
    assert read_until_eof(client) == b"HOLA\n"  # every reply, then our FIN
    return client


def test_a_draining_connection_holds_no_greenlet_and_waits_for_the_peers_eof(threaded_server):
    running = threaded_server(linger_timeout=30)
    baseline = running.live_greenlets()
    with _desconexion(running) as client:
        assert running.wait_until(
            lambda server: [c.state for c in server.connections] == [State.DRAINING]
        )
        assert running.live_greenlets() == baseline
        # Still reading and discarding: input after the FIN never turns into a reset.
        client.sendall(b"nadie escucha\n" * 100_000)
        assert running.stats.open_connections == 1
        client.shutdown(socket.SHUT_WR)
        assert running.wait_until(lambda server: server.stats.open_connections == 0)
    assert running.stats.errors == 0


def test_the_linger_ends_a_drain_whose_peer_never_closes(threaded_server, caplog):
    caplog.set_level(logging.DEBUG, logger="upper.server.connection")
    running = threaded_server(linger_timeout=0.2)
    with _desconexion(running):
        assert running.wait_until(lambda server: server.stats.open_connections == 0)
    assert "peer did not close within 0.2s" in caplog.text


def test_a_forced_shutdown_ends_a_drain_within_the_shutdown_timeout(threaded_server, caplog):
    caplog.set_level(logging.INFO, logger="upper.server.connection")
    running = threaded_server(linger_timeout=60, shutdown_timeout=0.2)
    with _desconexion(running):
        assert running.wait_until(
            lambda server: [c.state for c in server.connections] == [State.DRAINING]
        )
        running.stop()
        assert running.stats.open_connections == 0
    assert "closed at the shutdown timeout" in caplog.text


def test_connected_and_closed_name_the_client(threaded_server, caplog):
    caplog.set_level(logging.DEBUG, logger="upper.server")
    running = threaded_server()
    with _desconexion(running) as client:
        port = client.getsockname()[1]
    assert running.wait_until(lambda server: server.stats.open_connections == 0)
    assert f"127.0.0.1:{port}: connected" in caplog.text
    assert f"127.0.0.1:{port}: closed" in caplog.text


@pytest.mark.parametrize("secure", [False, True], ids=["plain", "tls"])
def test_a_peer_that_already_closed_is_not_drained(threaded_server, certificates, monkeypatch,
                                                   secure):
    """A half-closing client (a filter, ``nc -N``): its EOF is read before the last reply goes
    out, so nothing can follow it, and the server closes at once instead of lingering."""
    drains = []
    drain = Connection._drain
    monkeypatch.setattr(Connection, "_drain", lambda self: drains.append(self) or drain(self))
    transport = Transport(certificates if secure else None)
    context = None
    if secure:
        context = server_context(str(certificates.server_cert), str(certificates.server_key))
    running = threaded_server(linger_timeout=30, ssl_context=context)
    with transport.connect(running.address) as client:
        client.sendall(b"hola\nadios")
        transport.half_close(client)
        assert read_until_eof(client) == b"HOLA\nADIOS"  # every reply, then a clean EOF
    assert running.wait_until(lambda server: server.stats.open_connections == 0)
    assert drains == []
    assert running.stats.errors == 0


def test_a_client_that_keeps_its_side_open_is_still_drained(threaded_server, monkeypatch):
    drains = []
    drain = Connection._drain
    monkeypatch.setattr(Connection, "_drain", lambda self: drains.append(self) or drain(self))
    running = threaded_server(linger_timeout=30)
    with _desconexion(running):
        assert running.wait_until(lambda server: server.stats.open_connections == 1)
    assert running.wait_until(lambda server: server.stats.open_connections == 0)
    assert drains
