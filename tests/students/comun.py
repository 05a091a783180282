"""What the student servers share: the port from the command line, an accept loop
with a thread per connection, and a correct session (upper.protocol's own)."""

import socket
import sys
import threading

from upper.protocol import UpperSession


def listen() -> socket.socket:
    """The listening socket on 127.0.0.1 and the port given as the first argument."""
    return socket.create_server(("127.0.0.1", int(sys.argv[1])), backlog=256)


def serve_forever(listener: socket.socket, handle) -> None:
    while True:
        conn, _peer = listener.accept()
        threading.Thread(target=handle, args=(conn,), daemon=True).start()


def answer_correctly(conn: socket.socket) -> None:
    session = UpperSession()
    with conn:
        while True:
            data = conn.recv(65536)
            if not data:
                conn.sendall(session.end_of_input())
                return
            reply = session.feed(data)
            if reply:
                conn.sendall(reply)
            if session.ended:
                conn.shutdown(socket.SHUT_WR)
                conn.settimeout(10)
                try:
                    while conn.recv(65536):  # read the rest, so the close is a FIN
                        pass
                except OSError:
                    pass
                return
