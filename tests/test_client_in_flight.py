"""The client's primitives for callers that keep several lines in flight
(``send_lines``/``receive_lines``) and that must tell an early close from the close
that answers DESCONEXION (``closed_by_server``), against the real server."""

import socket
import threading

import pytest

from upper.client import ConnectionLost, UpperClient


def test_lines_sent_together_come_back_in_order(server):
    with UpperClient("127.0.0.1", server.port, timeout=10) as client:
        client.send_lines(b"uno\ndos\ntres\n")
        replies = []
        while len(replies) < 3:
            replies += client.receive_lines()
        assert replies == [b"UNO", b"DOS", b"TRES"]
        assert not client.closed_by_server()
        client.disconnect()


def test_a_reply_in_pieces_is_returned_once_whole(server):
    with UpperClient("127.0.0.1", server.port, timeout=10) as client:
        client.send_lines(b"canci")  # the server streams: CANCI comes back before the end
        client.send_lines(b"\xc3\xb3n\n")
        assert client.receive_lines() == [b"CANCI\xc3\x93N"]


@pytest.fixture
def closing_server():
    """Answers one line with ``OK``, then closes at once."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(10)

    def serve():
        with listener:
            conn, _ = listener.accept()
            with conn:
                conn.settimeout(10)
                conn.recv(100)
                conn.sendall(b"OK\n")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield listener.getsockname()[1]
    thread.join(10)


def test_closed_by_server_sees_an_early_close_without_reading(closing_server):
    with UpperClient("127.0.0.1", closing_server, timeout=10) as client:
        client.send_lines(b"hola\n")
        assert client.receive_lines() == [b"OK"]
        for _ in range(1000):  # the FIN follows the reply at once
            if client.closed_by_server():
                break
            threading.Event().wait(0.01)
        assert client.closed_by_server()
        with pytest.raises(ConnectionLost, match="closed the connection"):
            client.receive_lines()
