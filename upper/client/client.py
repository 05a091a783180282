"""``UpperClient``: the one client implementation, used by the CLI, the tests and Locust.

It works with plain blocking sockets in ordinary threads, and cooperatively under
gevent when the standard library is monkey-patched (as it is inside Locust):
``socket`` and ``selectors`` are then gevent's, and one-line round trips take the
faster path of :mod:`upper.client.cooperative`.
"""

import errno
import logging
import os
import socket
import ssl
from collections.abc import Iterable, Iterator
from time import perf_counter

from upper.client.cooperative import RECV_SIZE as _LINE_RECV_SIZE
from upper.client.cooperative import Cooperative, SendIncomplete
from upper.client.errors import (
    ConnectError,
    ConnectionLost,
    NotConnected,
    ReplyTimeout,
    UpperClientError,
)
from upper.client.pipeline import PipelinedExchange
from upper.client.tls import handshake_failure, session_failure
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
        timeout: float | None = 5.0,
        ssl_context: ssl.SSLContext | None = None,
        server_hostname: str | None = None,
    ):
        self.host = host
        self.port = port
        self.timeout = timeout
        self.ssl_context = ssl_context
        """With a context, the connection speaks TLS (``upper.client.tls.client_context``)."""
        self.server_hostname = server_hostname or host
        """The name the server's certificate must carry (and SNI sends): ``host`` by default."""
        self._sock: socket.socket | None = None
        self._buffer = bytearray()
        self._cooperative: Cooperative | None = None
        self.elapsed: float | None = None
        """Seconds the last ``upper()`` or ``upper_line()`` took, from the line's send
        to its reply."""

    @property
    def address(self) -> str:
        return format_address(self.host, self.port)

    @property
    def connected(self) -> bool:
        return self._sock is not None

    def __enter__(self) -> "UpperClient":
        if self._sock is None:
            self.connect()
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "connected" if self.connected else "not connected"
        return f"<UpperClient {self.address} {state}>"

    # -- connection -----------------------------------------------------------

    def connect(self) -> None:
        if self._sock is not None:
            raise ConnectError(Message("already connected to {address}", address=self.address))
        try:
            sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
        except socket.gaierror as exc:
            raise ConnectError(
                Message("unknown host {host}: {reason}", host=repr(self.host), reason=exc.strerror)
            ) from None
        except TimeoutError:
            raise ConnectError(
                Message(
                    "could not connect to {address}: timed out after {seconds}s",
                    address=self.address, seconds=self.timeout,
                )
            ) from None
        except OSError as exc:
            reason = exc.strerror or str(exc)
            if exc.errno == errno.ECONNREFUSED:
                reason = Message("connection refused (is the server running?)")
            raise ConnectError(_could_not_connect(self.address, reason)) from None
        except (OverflowError, ValueError) as exc:
            raise ConnectError(_could_not_connect(self.address, exc)) from None
        # Each line is a small write: without this, Nagle holds it back behind the last reply's ACK.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.ssl_context is not None:
            sock = self._handshake(sock)
        self._sock = sock
        self._buffer.clear()
        # TLS sockets take the ordinary path: the fast path reads the raw socket.
        self._cooperative = Cooperative.of(sock) if self.ssl_context is None else None
        log.debug("connected to %s", self.address)

    def _handshake(self, sock: socket.socket) -> socket.socket:
        """The TLS handshake, bounded by the client's timeout like any other wait."""
        try:
            return self.ssl_context.wrap_socket(sock, server_hostname=self.server_hostname)
        except OSError as exc:  # ssl.SSLError and TimeoutError included
            sock.close()
            raise ConnectError(handshake_failure(exc, self.address, self.timeout)) from None

    def close(self) -> None:
        """Close the socket without ending the session politely."""
        sock, self._sock = self._sock, None
        self._buffer.clear()
        cooperative, self._cooperative = self._cooperative, None
        if cooperative is not None:
            cooperative.close()
        if sock is not None:
            sock.close()

    def detach(self) -> socket.socket:
        """Hand the connected socket over to the caller, who then owns and closes it.

        For tools that need the raw socket (the conformance checker watches for
        resets and half-closes) but open connections the client's way, with its
        error messages. The client is left unconnected.
        """
        sock = self._require_socket()
        self._sock = None
        self._buffer.clear()
        cooperative, self._cooperative = self._cooperative, None
        if cooperative is not None:
            cooperative.close()
        return sock

    def disconnect(self) -> None:
        """Send DESCONEXION and wait for the server to close (raises if it does not in time).

        Replies to lines sent earlier and never received are discarded.
        """
        sock = self._require_socket()
        self._sendall(KEYWORD + b"\n")
        try:
            while self._recv():
                pass
            # A server that had closed before DESCONEXION arrived answers it with a reset,
            # which can come just after the close that looked like the answer.
            if error := sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
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
        self._sendall(_encode_line(text))

    def receive(self) -> str:
        """The next reply line, without its terminator."""
        return decode_text(self._read_line())

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
        if self._sock is None:
            self._require_socket()  # raises NotConnected
        unsent = line
        cooperative = self._cooperative
        if cooperative is not None and not self._buffer:
            try:
                chunk = cooperative.round_trip(line)
            except cooperative.refusals:
                raise  # nothing was sent: the connection is still in step
            except SendIncomplete as incomplete:
                unsent = incomplete.rest
            except OSError as exc:  # TimeoutError included
                raise self._broken(exc) from None
            except BaseException:
                self._out_of_step()
                raise
            else:
                if chunk and chunk.find(b"\n") == len(chunk) - 1:
                    # The usual case: the reply arrived whole, in one read.
                    self.elapsed = perf_counter() - cooperative.sent_at
                    return chunk
                if not chunk:
                    raise self._broken()
                self._buffer += chunk
                unsent = None
        # The ordinary way: not under gevent, a reply in pieces, or a partial send.
        started = perf_counter() if unsent is line else cooperative.sent_at
        try:
            if unsent:
                self._sendall(unsent)
            reply = self._read_line() + b"\n"
        except BaseException:
            self._out_of_step()
            raise
        self.elapsed = perf_counter() - started
        return reply

    def send_lines(self, lines: bytes) -> None:
        """Send encoded lines (each ending in ``b"\\n"``) without waiting for their replies.

        With ``receive_lines()``, for callers that keep several lines in flight
        and match each reply to its line themselves (the Locust harness does).
        """
        self._sendall(lines)

    def receive_lines(self) -> list[bytes]:
        """Every whole reply line received and not yet read, without terminators;
        waits (up to the timeout) when there is none yet."""
        buffer = self._buffer
        if not buffer:
            chunk = self._recv()
            if chunk.endswith(b"\n"):  # the usual case: whole replies, nothing left over
                return chunk[:-1].split(b"\n")
            if not chunk:
                raise self._broken()
            buffer += chunk
        self._read_through_newline()
        end = buffer.rfind(b"\n")
        lines = bytes(buffer[:end]).split(b"\n")
        del buffer[: end + 1]
        return lines

    def closed_by_server(self) -> bool:
        """Whether the server has already closed (or reset) the connection, told at once,
        without waiting and without reading anything: e.g. to tell a server that
        closed early from one that closes in answer to DESCONEXION."""
        if self._buffer:
            return False  # replies still to read come first
        sock = self._require_socket()
        sock.settimeout(0.0)
        try:
            if self.ssl_context is None:
                return sock.recv(1, socket.MSG_PEEK) == b""
            # TLS cannot peek, and a close begins with close_notify, which only a read
            # decodes; bytes that came instead are kept for the next read.
            data = sock.recv(_LINE_RECV_SIZE)
            self._buffer += data
            return data == b""
        except (BlockingIOError, InterruptedError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
            return False  # open, and quiet
        except OSError:
            return True  # reset
        finally:
            sock.settimeout(self.timeout)

    def _out_of_step(self) -> None:
        """A round trip failed or was interrupted (killed, ``gevent.Timeout``, Ctrl+C) after
        its line was handed over: its reply could still arrive and answer the next line."""
        if self._sock is not None:
            log.debug("round trip to %s interrupted: closing the connection", self.address)
            self.close()

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
        sock = self._require_socket()
        exchange = PipelinedExchange(self, sock, chunks, source_fd, half_close)
        if self._buffer:
            buffered = bytes(self._buffer)
            self._buffer.clear()
            yield buffered
        sock.setblocking(False)
        try:
            yield from exchange.run()
        finally:
            if self._sock is sock:
                sock.settimeout(self.timeout)
        if half_close:
            self.close()

    # -- plumbing -------------------------------------------------------------

    def _require_socket(self) -> socket.socket:
        if self._sock is None:
            raise NotConnected(f"not connected to {self.address}: call connect() first")
        return self._sock

    def _sendall(self, data: bytes) -> None:
        sock = self._require_socket()
        try:
            # One send() is all a line takes; sendall() finishes what it could not send
            # (under gevent, sendall() alone costs a getsockopt() and more per call).
            sent = sock.send(data)
            if sent < len(data):
                sock.sendall(memoryview(data)[sent:])
        except OSError as exc:  # TimeoutError included
            raise self._broken(exc, sending=True) from None

    def _recv(self) -> bytes:
        sock = self._require_socket()
        try:
            cooperative = self._cooperative
            if cooperative is not None:
                return cooperative.recv()
            return sock.recv(_LINE_RECV_SIZE)
        except OSError as exc:  # TimeoutError included
            raise self._broken(exc) from None

    def _broken(
        self, cause: OSError | None = None, *, sending: bool = False, unanswered: int = 0
    ) -> UpperClientError:
        """Close, and return the exception that says why: every lost connection, timeout
        and early close of the client (and of its pipelined exchange) is worded here.

        ``cause`` is the socket error (``TimeoutError`` for a timeout); ``None`` means
        the server closed the connection, with ``unanswered`` lines still owed.
        """
        self.close()
        if isinstance(cause, TimeoutError):
            if sending:
                message = Message(
                    "timed out after {seconds}s sending to {address}",
                    seconds=self.timeout, address=self.address,
                )
            else:
                message = Message(
                    "timed out after {seconds}s waiting for {address}",
                    seconds=self.timeout, address=self.address,
                )
            return ReplyTimeout(message)
        if cause is None:
            if unanswered > 0:
                return ConnectionLost(
                    Message(
                        "server {address} closed the connection with {count} line(s) unanswered",
                        address=self.address, count=unanswered,
                    )
                )
            return ConnectionLost(
                Message("server {address} closed the connection", address=self.address)
            )
        reason = session_failure(cause) or cause.strerror or cause
        if sending:
            message = Message(
                "connection to {address} lost while sending: {reason}",
                address=self.address, reason=reason,
            )
        else:
            message = Message("connection to {address} lost: {reason}", address=self.address,
                              reason=reason)
        return ConnectionLost(message)

    def _read_line(self) -> bytes:
        buffer = self._buffer
        if not buffer:
            # The usual case, one reply per request: it arrives as one whole line.
            chunk = self._recv()
            end = chunk.find(b"\n")
            if end != -1 and end == len(chunk) - 1:
                return chunk[:end]
            if not chunk:
                raise self._broken()
            buffer += chunk
        end = self._read_through_newline()
        line = bytes(buffer[:end])
        del buffer[: end + 1]
        return line

    def _read_through_newline(self) -> int:
        """Read until the buffer holds a newline and return where the first one is."""
        buffer = self._buffer
        scanned = 0
        while (end := buffer.find(b"\n", scanned)) == -1:
            scanned = len(buffer)
            chunk = self._recv()
            if not chunk:
                raise self._broken()
            buffer += chunk
        return end


def _could_not_connect(address: str, reason) -> Message:
    return Message("could not connect to {address}: {reason}", address=address, reason=reason)
