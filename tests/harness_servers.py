"""Deliberately wrong UPPER servers, one mistake each, for the harness's tests.

Each is a small threaded line server on 127.0.0.1 port 0 that follows the
protocol (``upper_protocol``'s ``uppercase`` and ``ends_session``) except for
the one thing its class overrides. Use as a context manager, or ``start()`` and
``stop()``; ``stop()`` closes the listener and every connection, so no thread
outlives a test. Every socket has a timeout.
"""

import socket
import struct
import threading
import time

from upper_protocol import ends_session, uppercase

SOCKET_TIMEOUT = 30.0
DRAIN_LIMIT = 10.0
"""Seconds a server reads (and discards) after DESCONEXION before closing anyway."""


class WrongServer:
    """Answers each line with ``reply(index, line)``; see the subclasses for the mistakes."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.2)
        self.port = self.listener.getsockname()[1]
        self.host = f"tcp://127.0.0.1:{self.port}"
        self._stopping = threading.Event()
        self._connections: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._accept, daemon=True)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def start(self):
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(SOCKET_TIMEOUT)
        self.listener.close()
        with self._lock:
            for conn in list(self._connections):
                self._abort(conn)

    # -- the mistakes: overridden by subclasses --------------------------------------

    def reply(self, index: int, line: bytes) -> bytes:
        """What to send for the ``index``-th line of a connection (``line`` without ``b"\\n"``)."""
        return uppercase(line) + b"\n"

    def close_after(self, index: int) -> bool:
        """Whether to close the connection right after answering the ``index``-th line."""
        return False

    def end_session(self, conn: socket.socket) -> None:
        """DESCONEXION: what the protocol says, shut down sending, drain, close."""
        conn.shutdown(socket.SHUT_WR)
        self._drain(conn)

    # -- plumbing -------------------------------------------------------------------

    def _accept(self) -> None:
        while not self._stopping.is_set():
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                self._connections.add(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        conn.settimeout(SOCKET_TIMEOUT)
        pending = b""
        index = 0
        try:
            while data := conn.recv(65536):
                *lines, pending = (pending + data).split(b"\n")
                for line in lines:
                    if ends_session(line + b"\n"):
                        self.end_session(conn)
                        return
                    out = self.reply(index, line)
                    if out:
                        conn.sendall(out)
                    if self.close_after(index):
                        return
                    index += 1
        except OSError:
            pass
        finally:
            with self._lock:
                self._connections.discard(conn)
            conn.close()

    def _drain(self, conn: socket.socket) -> None:
        conn.settimeout(DRAIN_LIMIT)
        try:
            while conn.recv(65536):
                pass
        except OSError:
            pass

    @staticmethod
    def _abort(conn: socket.socket) -> None:
        try:
            conn.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


class Echo(WrongServer):
    """Sends every line back as it came, without uppercasing it."""

    def reply(self, index, line):
        return line + b"\n"


class NeverAnswers(WrongServer):
    """Accepts, reads, and never answers anything; ``lines_read`` is set once a line came."""

    def __init__(self) -> None:
        super().__init__()
        self.lines_read = threading.Event()

    def reply(self, index, line):
        self.lines_read.set()
        return b""


class DropsAReply(WrongServer):
    """Never answers the ``dropped``-th line of each connection, and waits for more input."""

    def __init__(self, dropped: int = 2) -> None:
        super().__init__()
        self.dropped = dropped

    def reply(self, index, line):
        return b"" if index == self.dropped else super().reply(index, line)


class ClosesEarly(WrongServer):
    """Closes each connection right after its ``replies``-th reply, before any DESCONEXION."""

    def __init__(self, replies: int) -> None:
        super().__init__()
        self.replies = replies

    def close_after(self, index):
        return index + 1 >= self.replies


class SwapsReplies(WrongServer):
    """Answers each pair of lines in the wrong order: the second line's reply first."""

    def __init__(self) -> None:
        super().__init__()
        self._held = threading.local()  # per connection thread: the first line's reply

    def reply(self, index, line):
        if index % 2 == 0:
            self._held.reply = super().reply(index, line)
            return b""
        held, self._held.reply = self._held.reply, None
        return super().reply(index, line) + held

    def end_session(self, conn):
        held = getattr(self._held, "reply", None)
        if held:  # an odd number of lines: the last one is still answered
            conn.sendall(held)
        super().end_session(conn)


class ResetsOnDesconexion(WrongServer):
    """Answers DESCONEXION with a reset (RST) instead of a close (FIN)."""

    def end_session(self, conn):
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        conn.close()


class NeverCloses(WrongServer):
    """Answers lines but ignores DESCONEXION: the connection stays open until the client closes."""

    def end_session(self, conn):
        self._drain(conn)


class SlowReplies(WrongServer):
    """Right, but slow: each reply waits ``delay`` seconds (a slow server, not a wrong one)."""

    def __init__(self, delay: float) -> None:
        super().__init__()
        self.delay = delay

    def reply(self, index, line):
        time.sleep(self.delay)
        return super().reply(index, line)
