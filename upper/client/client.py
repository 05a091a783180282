"""``UpperClient``: the protocol's client, used by the CLI, the tests and Locust.

The connection itself (sockets, TLS, waits, the wording of failures) is
:class:`upper.client.duplex.Duplex`; this module adds what the protocol says:
lines, DESCONEXION and the strict disconnect, pipelining. It works with plain
blocking sockets in ordinary threads, and cooperatively under gevent when the
standard library is monkey-patched (as it is inside Locust).
"""

import logging
import os
import socket
import ssl
from collections.abc import Iterable, Iterator
from time import perf_counter

from upper.client.duplex import DEFAULT_TIMEOUT, Duplex, connect
from upper.client.errors import ConnectError, ConnectionLost, NotConnected, ReplyTimeout
from upper.client.pipeline import PipelinedExchange
from upper.i18n import Message
from upper.protocol import KEYWORD, decode_text, encode_text, ends_session
from upper.protocol.address import DEFAULT_HOST, DEFAULT_PORT, format_address

log = logging.getLogger(__name__)

_BATCH_BYTES = 64 * 1024
_NO_REPLY = "DESCONEXION has no reply: use disconnect() to end the session"


def _encode_line(text: str) -> bytes:
    if "\n" in text:
        raise ValueError("a message cannot contain a newline: send one line at a time")
    return encode_text(text) + b"\n"


class UpperClient:
    """A connection to an UPPER server.

    ``upper(text)`` sends one line and returns its reply (``upper_line(line)``
    does the same with bytes); ``upper_many(lines)`` pipelines many;
    ``stream(chunks)`` pipes raw bytes through the server; ``disconnect()`` ends
    the session with DESCONEXION. Use it as a context manager to connect and
    close automatically.
    """

    def __init__(
        self,
        host: str = DEFAULT_HOST,
        port: int = DEFAULT_PORT,
        timeout: float | None = DEFAULT_TIMEOUT,
        ssl_context: ssl.SSLContext | None = None,
        server_hostname: str | None = None,
    ):
        self.host = host
        self.port = port
        self._timeout = timeout
        self.ssl_context = ssl_context
        """With a context, the connection speaks TLS (``upper.client.tls.client_context``)."""
        self.server_hostname = server_hostname or host
        """The name the server's certificate must carry (and SNI sends): ``host`` by default."""
        self._duplex: Duplex | None = None
        self.elapsed: float | None = None
        """Seconds the last ``upper()`` or ``upper_line()`` took, from the line's send
        to its reply."""

    @property
    def timeout(self) -> float | None:
        return self._timeout

    @timeout.setter
    def timeout(self, seconds: float | None) -> None:
        self._timeout = seconds
        if self._duplex is not None:
            self._duplex.timeout = seconds  # words the failures; the socket keeps its own

    @property
    def address(self) -> str:
        return format_address(self.host, self.port)

    @property
    def connected(self) -> bool:
        return self._duplex is not None and self._duplex.open

    @property
    def connection(self) -> Duplex:
        """The open connection (``NotConnected`` if there is none), for tools that drive
        it directly: the interactive client's watch, the checker."""
        duplex = self._duplex
        if duplex is None or not duplex.open:
            raise NotConnected(f"not connected to {self.address}: call connect() first")
        return duplex

    @property
    def _cooperative(self):
        """The connection's gevent fast path, if it takes it (the tests look)."""
        return self._duplex._cooperative if self.connected else None

    def __enter__(self) -> "UpperClient":
        if not self.connected:
            self.connect()
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "connected" if self.connected else "not connected"
        return f"<UpperClient {self.address} {state}>"

    # -- connection -----------------------------------------------------------

    def connect(self) -> None:
        if self.connected:
            raise ConnectError(Message("already connected to {address}", address=self.address))
        self._duplex = connect(
            self.host, self.port, self.timeout, self.ssl_context, self.server_hostname
        )

    def close(self) -> None:
        """Close the socket without ending the session politely."""
        duplex, self._duplex = self._duplex, None
        if duplex is not None:
            duplex.close()

    def detach(self) -> socket.socket:
        """Hand the connected socket over to the caller, who then owns and closes it.

        For tools that need the raw socket but open connections the client's way,
        with its error messages. The client is left unconnected.
        """
        sock = self.connection.detach()
        self._duplex = None
        return sock

    def disconnect(self, *, strict: bool = False) -> None:
        """Send DESCONEXION and wait for the server to close (raises if it does not in time).

        Replies to lines sent earlier and never received are discarded. With
        ``strict`` (the Locust user's), the server must still be there to receive
        DESCONEXION (not closed before it) and must answer it with nothing but its
        close.
        """
        duplex = self.connection
        if strict and self.closed_by_server():
            self.close()
            raise ConnectionLost(f"server {self.address} closed the connection before DESCONEXION")
        duplex.received.clear()
        duplex.send_all(KEYWORD + b"\n")
        try:
            while data := duplex.recv():
                if strict:
                    raise ConnectionLost(
                        f"server {self.address} answered DESCONEXION with "
                        f"{data[:40]!r} instead of closing the connection"
                    )
            # A server that had closed before DESCONEXION arrived answers it with a reset,
            # which can come just after the close that looked like the answer.
            if error := duplex.pending_error():
                raise ConnectionLost(
                    Message(
                        "server {address} closed the connection before DESCONEXION "
                        "(then reset it: {reason})",
                        address=self.address, reason=os.strerror(error),
                    )
                )
        except ReplyTimeout:
            raise ReplyTimeout(
                Message(
                    "server {address} did not close the connection within "
                    "{seconds}s after DESCONEXION",
                    address=self.address, seconds=self.timeout,
                )
            ) from None
        finally:
            self.close()

    # -- one line at a time ---------------------------------------------------

    def send(self, text: str) -> None:
        """Send one line (a newline is added). Its reply is read by ``receive()``."""
        self.connection.send_all(_encode_line(text))

    def receive(self) -> str:
        """The next reply line, without its terminator."""
        return decode_text(self.connection.read_line())

    def upper(self, text: str) -> str:
        """Send one line and return its reply, without the terminator."""
        return decode_text(self.upper_line(_encode_line(text))[:-1])

    def upper_line(self, line: bytes) -> bytes:
        """Send one encoded line and return its reply, both ending in ``b"\\n"``.

        ``upper()`` for bytes, for callers that encode their lines once (the Locust
        user does): ``line`` holds exactly one ``b"\\n"``, at its end.
        """
        if line.find(b"\n") != len(line) - 1 or not line:
            raise ValueError(f"a line must end with its only newline, not {line[-20:]!r}")
        if line.startswith(KEYWORD) and ends_session(line):
            raise ValueError(_NO_REPLY)
        duplex = self._duplex
        if duplex is None:
            duplex = self.connection  # raises NotConnected
        reply = duplex.round_trip(line)  # raises NotConnected once closed
        self.elapsed = perf_counter() - duplex.sent_at
        return reply

    def send_lines(self, lines: bytes) -> None:
        """Send encoded lines (each ending in ``b"\\n"``) without waiting for their replies.

        With ``receive_lines()``, for callers that keep several lines in flight
        and match each reply to its line themselves (``upper.client.window``).
        """
        self.connection.send_all(lines)

    def receive_lines(self) -> list[bytes]:
        """Every whole reply line received and not yet read, without terminators;
        waits (up to the timeout) when there is none yet."""
        return self.connection.read_lines()

    def closed_by_server(self) -> bool:
        """Whether the server has already closed (or reset) the connection, told at once,
        without waiting and without reading anything: e.g. to tell a server that
        closed early from one that closes in answer to DESCONEXION."""
        return bool(self.connection.server_closed_now())

    # -- pipelined ------------------------------------------------------------

    def upper_many(self, lines: Iterable[str]) -> Iterator[str]:
        """Replies to many lines, pipelined: lines are written while replies are read.

        A generator: it consumes ``lines`` lazily, so inputs of any size use bounded memory.
        """
        pending = bytearray()
        for chunk in self.stream(self._batched(lines), half_close=False):
            pending += chunk
            start = 0
            while (end := pending.find(b"\n", start)) != -1:
                yield decode_text(pending[start:end])
                start = end + 1
            del pending[:start]

    @staticmethod
    def _batched(lines: Iterable[str]) -> Iterator[bytes]:
        batch = bytearray()
        for text in lines:
            line = _encode_line(text)
            if ends_session(line):
                raise ValueError(_NO_REPLY)
            batch += line
            if len(batch) >= _BATCH_BYTES:
                yield bytes(batch)
                batch.clear()
        if batch:
            yield bytes(batch)

    def stream(
        self,
        chunks: Iterable[bytes] = (),
        *,
        source_fd: int | None = None,
        half_close: bool = True,
    ) -> Iterator[bytes]:
        """Pipe raw bytes through the server, yielding reply bytes as they arrive.

        The input is ``chunks`` or, when ``source_fd`` is given, whatever can be read
        from that descriptor (a pipe or terminal is watched, so replies keep flowing
        while the producer is quiet). With ``half_close`` the client sends EOF after
        the input and reads until the server closes: the session ends as the input
        does. Without it, the stream ends once every line sent has its reply.
        """
        duplex = self.connection
        exchange = PipelinedExchange(duplex, chunks, source_fd, half_close)
        if buffered := duplex.start_duplex():
            yield buffered
        try:
            yield from exchange.run()
        finally:
            duplex.end_duplex()
        if half_close:
            self.close()
