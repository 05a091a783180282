"""Idle connections give their greenlet back and get a new one when they speak."""

import logging
import socket
import time

from helpers import read_exactly, read_until_eof

from upper.server import connection as connection_module
from upper.server.connection import State
from upper.server.server import UpperServer


def test_idle_connections_hibernate_and_wake_with_their_state(threaded_server):
    running = threaded_server(hibernate_after=0.2, idle_timeout=0)
    baseline = running.live_greenlets()
    clients = [socket.create_connection(running.address, timeout=10) for _ in range(20)]
    try:
        for client in clients:
            client.sendall(b"hola\nDESCON")  # a keyword prefix stays held across the sleep
            assert read_exactly(client, 5) == b"HOLA\n"
        assert running.wait_until(
            lambda server: len(server.connections) == 20
            and all(connection.state is State.HIBERNATING for connection in server.connections)
        ), "connections still hold a greenlet after waiting for input"
        assert running.live_greenlets() == baseline
        assert running.stats.open_connections == 20

        for client in clients[:10]:
            client.sendall(b"EXION\n")  # completes the keyword held before hibernating
        for client in clients[10:]:
            client.sendall(b"TADO\n")  # or turns out to be text
        for client in clients[:10]:
            assert read_until_eof(client) == b""
        for client in clients[10:]:
            assert read_exactly(client, 11) == b"DESCONTADO\n"
        assert running.wait_until(lambda server: server.stats.open_connections == 10)
    finally:
        for client in clients:
            client.close()
    assert running.wait_until(lambda server: server.stats.open_connections == 0)
    assert running.stats.snapshot()["connections_served"] == 20


def test_a_new_connection_gets_its_greenlet_from_its_first_byte(threaded_server, caplog):
    caplog.set_level(logging.INFO, logger="upper.server.connection")
    running = threaded_server(idle_timeout=0.3)
    baseline = running.live_greenlets()
    with (
        socket.create_connection(running.address, timeout=10) as speaker,
        socket.create_connection(running.address, timeout=10) as silent,
    ):
        assert running.wait_until(
            lambda server: [c.state for c in server.connections] == [State.HIBERNATING] * 2
        )
        assert running.live_greenlets() == baseline
        speaker.sendall(b"hola\n")
        assert read_exactly(speaker, 5) == b"HOLA\n"
        # The idle timeout still bounds the wait for a first byte: a polite close.
        assert read_until_eof(silent) == b""
    assert "closed after 0.3s idle" in caplog.text


def test_a_short_hibernation_doubles_the_wait_and_a_long_one_starts_over(
    threaded_server, monkeypatch
):
    # A sweep every 20 ms: the hibernation comes within 20 ms of the wait, so a wake-up
    # right after it is well inside twice the wait.
    monkeypatch.setattr(UpperServer, "sweep_interval", 0.02)
    monkeypatch.setattr(connection_module, "HIBERNATE_AFTER_MAX", 0.8)
    running = threaded_server(hibernate_after=0.2, idle_timeout=0)
    with socket.create_connection(running.address, timeout=10) as client:

        def ping():
            client.sendall(b"hola\n")
            assert read_exactly(client, 5) == b"HOLA\n"

        def hibernated():
            assert running.wait_until(
                lambda server: [c.state for c in server.connections] == [State.HIBERNATING]
            )

        ping()  # the first input is no wake-up from a hibernation
        (connection,) = running.server.connections
        assert connection.hibernate_after == 0.2
        waits = []
        for _ in range(3):
            hibernated()
            ping()
            waits.append(connection.hibernate_after)
        assert waits == [0.4, 0.8, 0.8]  # doubled each time, up to HIBERNATE_AFTER_MAX
        hibernated()
        time.sleep(1.7)  # asleep for longer than it waited (0.8 s): worth it
        ping()
        assert connection.hibernate_after == 0.2
