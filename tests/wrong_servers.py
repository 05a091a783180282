"""Small UPPER servers that each get exactly one thing wrong, for testing tools that
judge servers (the conformance checker; the Locust harness could use them too).

Each is a correct server (``UpperSession`` behind plain threads and sockets)
with one mistake a student might make. Start one with ``with EchoServer() as
server:``; it listens on 127.0.0.1 port 0 (``server.address``), serves each
connection in its own thread, and ``stop()`` ends every thread within seconds.
"""

import socket
import struct
import threading

from upper.protocol import KEYWORD, KeywordScanner, SessionState, UpperSession

_RECV_SIZE = 65536
_WAKE_EVERY = 0.2  # how often blocked threads look at the stop flag
_DRAIN_LIMIT = 10.0


class CorrectServer:
    """The protocol done right; subclasses override one hook each to get one thing wrong."""

    mistake = "none"

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0), backlog=512)
        self._listener.settimeout(_WAKE_EVERY)
        self.address = self._listener.getsockname()[:2]
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._connections: set[socket.socket] = set()
        self._lock = threading.Lock()
        self.accepted = 0

    # -- the hooks --------------------------------------------------------------------

    def new_session(self):
        """Turns input into replies: ``feed(bytes) -> bytes``, ``end_of_input()``, ``ended``."""
        return UpperSession()

    def send_reply(self, conn: socket.socket, reply: bytes) -> None:
        conn.sendall(reply)

    def end_session(self, conn: socket.socket) -> None:
        """After DESCONEXION: FIN, then read until the client closes, then close."""
        conn.shutdown(socket.SHUT_WR)
        self._drain(conn)
        conn.close()

    # -- the machinery ----------------------------------------------------------------

    def start(self) -> "CorrectServer":
        self._spawn(self._accept_loop)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self._stopping.set()
        with self._lock:
            for conn in self._connections:
                try:
                    conn.shutdown(socket.SHUT_RDWR)  # wakes a thread blocked in recv
                except OSError:
                    pass
        for thread in list(self._threads):
            thread.join(timeout)
        self._listener.close()
        with self._lock:
            for conn in self._connections:
                conn.close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def _spawn(self, target, *args) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        self._threads.append(thread)
        thread.start()

    def _accept_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                conn, _peer = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.accepted += 1
            if not self.admit(conn):
                continue
            conn.settimeout(None)
            with self._lock:
                self._connections.add(conn)
            self._spawn(self._serve, conn)

    def admit(self, conn: socket.socket) -> bool:
        """Whether to serve a new connection (a dying server stops here)."""
        return True

    def _serve(self, conn: socket.socket) -> None:
        session = self.new_session()
        try:
            while not self._stopping.is_set():
                data = conn.recv(_RECV_SIZE)
                if not data:
                    self.send_reply(conn, session.end_of_input())
                    break
                reply = session.feed(data)
                if reply:
                    self.send_reply(conn, reply)
                if session.ended:
                    self.end_session(conn)
                    return
        except OSError:
            pass
        finally:
            with self._lock:
                self._connections.discard(conn)
            conn.close()

    def _drain(self, conn: socket.socket) -> None:
        conn.settimeout(_DRAIN_LIMIT)
        try:
            while not self._stopping.is_set() and conn.recv(_RECV_SIZE):
                pass
        except OSError:
            pass


class _EchoSession(KeywordScanner):
    """Settled input back as it came, ``transform``-ed; the keyword handled right."""

    def __init__(self, transform=bytes):
        super().__init__()
        self.transform = transform
        self.ended = False

    def feed(self, data: bytes) -> bytes:
        text = self.scan(data)
        self.ended = self.found
        return self.transform(text)

    def end_of_input(self) -> bytes:
        self.ended = True
        held, self._held = self._held, b""
        return b"" if held == KEYWORD else self.transform(held)


class EchoServer(CorrectServer):
    mistake = "echo without uppercase"

    def new_session(self):
        return _EchoSession()


class AsciiUpperServer(CorrectServer):
    mistake = "ASCII-only uppercase (bytes.upper)"

    def new_session(self):
        return _EchoSession(bytes.upper)


class ReplacementCharServer(CorrectServer):
    mistake = "invalid UTF-8 replaced by U+FFFD"

    def send_reply(self, conn, reply):
        # UpperSession never splits a character between replies, so this is exact.
        conn.sendall(reply.decode("utf-8", "replace").encode())


class CrlfToLfServer(CorrectServer):
    mistake = "CRLF turned into LF"

    def send_reply(self, conn, reply):
        conn.sendall(reply.replace(b"\r\n", b"\n"))


class _LineBufferedSession(UpperSession):
    """Replies held until a newline: no streaming."""

    def __init__(self):
        super().__init__()
        self._unsent = b""

    def feed(self, data: bytes) -> bytes:
        pending = self._unsent + super().feed(data)
        cut = len(pending) if self.ended else pending.rfind(b"\n") + 1
        self._unsent = pending[cut:]
        return pending[:cut]

    def end_of_input(self) -> bytes:
        pending, self._unsent = self._unsent + super().end_of_input(), b""
        return pending


class NoStreamingServer(CorrectServer):
    mistake = "answers only at the newline"

    def new_session(self):
        return _LineBufferedSession()


class _KeywordAnywhereSession(UpperSession):
    """DESCONEXION anywhere in a line ends the session (``if "DESCONEXION" in line``)."""

    def __init__(self):
        super().__init__()
        self._tail = b""

    def feed(self, data: bytes) -> bytes:
        if self.ended:
            return b""
        seen = self._tail + data
        found = seen.find(KEYWORD)
        if found == -1:
            self._tail = seen[-len(KEYWORD):]
            return super().feed(data)
        line_start = seen.rfind(b"\n", 0, found) + 1 - len(self._tail)
        reply = super().feed(data[: max(line_start, 0)])
        self.state = SessionState.KEYWORD_ENDED
        return reply


class KeywordAnywhereServer(CorrectServer):
    mistake = "the keyword matched anywhere in a line"

    def new_session(self):
        return _KeywordAnywhereSession()


class ResetOnCloseServer(CorrectServer):
    mistake = "a reset instead of a clean close"

    def end_session(self, conn):
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        conn.close()


class NeverClosingServer(CorrectServer):
    mistake = "never closes on DESCONEXION"

    def end_session(self, conn):
        self._drain(conn)  # no FIN: waits for the client to give up first
        conn.close()


class NoDrainServer(CorrectServer):
    mistake = "closes without draining (a reset when the client sent more)"

    def end_session(self, conn):
        conn.close()


class OneAtATimeServer(CorrectServer):
    mistake = "serves one connection at a time (the others wait in the backlog)"

    def _accept_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                conn, _peer = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn.settimeout(None)
            with self._lock:
                self._connections.add(conn)
            self._serve(conn)


class DyingServer(CorrectServer):
    """Correct, but dies after ``connections`` connections: stops listening, drops all."""

    mistake = "dies in the middle of a run"

    def __init__(self, connections: int):
        super().__init__()
        self.connections = connections

    def admit(self, conn):
        if self.accepted <= self.connections:
            return True
        # The listener first: once this connection's close reaches the client, its next
        # connection must be refused, not land in the backlog and be reset (seen under a
        # CPU hog, when this thread was descheduled between the two closes).
        self._listener.close()
        conn.close()
        with self._lock:
            for served in self._connections:
                try:
                    served.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
        return False


WRONG_SERVERS = [
    EchoServer,
    AsciiUpperServer,
    ReplacementCharServer,
    CrlfToLfServer,
    NoStreamingServer,
    KeywordAnywhereServer,
    ResetOnCloseServer,
    NeverClosingServer,
    NoDrainServer,
    OneAtATimeServer,
]
