"""``Duplex``: the one connection engine of the client library.

Every tool of the project talks to a server through it: ``UpperClient`` (and so
the command line and the Locust user), the pipelined ``stream()``, the
interactive client's watch on the server, and the conformance checker. It owns
the socket, plain or TLS, and offers two ways of driving it:

- **Round trips** (``send_all``, ``recv``, ``read_line``, ``round_trip``): blocking
  calls bounded by ``timeout``. Under gevent (the standard library
  monkey-patched, as inside Locust) they are cooperative, and a one-line round
  trip on a plain socket takes the fast path of :mod:`upper.client.cooperative`.
- **Duplex** (``start_duplex``, ``wait``, ``send_some``, ``receive_some``): the
  socket non-blocking on one selector, so a caller sends and receives at once
  under its own deadline (the checker, ``stream()``), and can also watch one
  input source (a pipe) in the same wait.

Both keep what they hold bounded: a round trip holds at most what a correct
reply to its line can be (``LONGEST_UPPERCASE`` times the line) before the
reply's newline, and a duplex exchange holds one chunk each way (TCP
backpressure does the rest).

Every failure is worded in one place, ``failure()``, which also closes the
connection: refused, unknown host, timeout, reset, early close, TLS errors.
"""

from __future__ import annotations

import errno
import logging
import selectors
import socket
import ssl
from time import perf_counter

from upper.client.cooperative import LONGEST_UPPERCASE, Cooperative, SendIncomplete
from upper.client.cooperative import RECV_SIZE as LINE_RECV_SIZE
from upper.client.errors import (
    ConnectError,
    ConnectionLost,
    NotConnected,
    ReplyTimeout,
    UpperClientError,
)
from upper.client.tls import handshake_failure, session_failure, shutdown_write
from upper.i18n import Message
from upper.protocol.address import format_address

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 5.0
"""Seconds every client-side tool waits for a connection, a reply or a close by default."""
DUPLEX_RECV_SIZE = 256 * 1024
"""The most one duplex read takes (several TLS records are joined up to this size)."""
NOT_NOW = (BlockingIOError, InterruptedError, ssl.SSLWantReadError, ssl.SSLWantWriteError)
"""A non-blocking call that must wait for the selector (over TLS, a record may be half in)."""


def connect(
    host: str,
    port: int,
    timeout: float | None = DEFAULT_TIMEOUT,
    ssl_context: ssl.SSLContext | None = None,
    server_hostname: str | None = None,
) -> Duplex:
    """A new connection to ``host:port`` (TLS with a context); ``ConnectError`` says why not."""
    address = format_address(host, port)
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except socket.gaierror as exc:
        raise ConnectError(
            Message("unknown host {host}: {reason}", host=repr(host), reason=exc.strerror)
        ) from None
    except TimeoutError:
        raise ConnectError(
            Message(
                "could not connect to {address}: timed out after {seconds}s",
                address=address, seconds=timeout,
            )
        ) from None
    except OSError as exc:
        reason = exc.strerror or str(exc)
        if exc.errno == errno.ECONNREFUSED:
            reason = Message("connection refused (is the server running?)")
        raise ConnectError(_could_not_connect(address, reason)) from None
    except (OverflowError, ValueError) as exc:
        raise ConnectError(_could_not_connect(address, exc)) from None
    # Each line is a small write: without this, Nagle holds it back behind the last reply's ACK.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if ssl_context is not None:
        try:
            sock = ssl_context.wrap_socket(sock, server_hostname=server_hostname or host)
        except OSError as exc:  # ssl.SSLError and TimeoutError included
            sock.close()
            raise ConnectError(handshake_failure(exc, address, timeout)) from None
    log.debug("connected to %s", address)
    return Duplex(sock, address, timeout)


class Duplex:
    """One connected socket and what has been received but not read (see the module)."""

    def __init__(self, sock: socket.socket, address: str, timeout: float | None) -> None:
        self._sock: socket.socket | None = sock
        self.address = address
        self.timeout = timeout
        self.tls = isinstance(sock, ssl.SSLSocket) or hasattr(sock, "_sslobj")
        self.received = bytearray()
        """Bytes received and not read yet (round trips read from here first)."""
        self.sent_at = 0.0
        """``perf_counter()`` when the last ``round_trip()`` line was handed to the kernel."""
        # TLS sockets take the ordinary path: the fast path reads the raw socket.
        self._cooperative = None if self.tls else Cooperative.of(sock)
        self._selector: selectors.BaseSelector | None = None
        self._watched: dict = {}
        self._deferred: OSError | None = None  # an error met after data, raised at the next read
        self.reset_cause: OSError | None = None
        """The reset that ``server_closed_now()`` found, if it found one."""
        self.closed_after = False
        """The server's end of stream came right after the last data ``receive_some()`` returned."""

    # -- the connection -------------------------------------------------------------

    @property
    def open(self) -> bool:
        return self._sock is not None

    @property
    def socket(self) -> socket.socket:
        """The socket, for a selector or an option; read and write through the methods."""
        if self._sock is None:
            raise ConnectionLost(f"connection to {self.address} is closed")
        return self._sock

    def close(self) -> None:
        sock, self._sock = self._sock, None
        self.received.clear()
        cooperative, self._cooperative = self._cooperative, None
        if cooperative is not None:
            cooperative.close()
        if self._selector is not None:
            self._selector.close()
            self._selector = None
        if sock is not None:
            sock.close()

    def abort(self) -> None:
        """Close from another thread: ``shutdown`` first, as it wakes a blocked call."""
        if self._sock is not None:
            try:
                self._sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self.close()

    def detach(self) -> socket.socket:
        """Hand the socket over to the caller, who then owns and closes it."""
        sock = self.socket
        self._sock = None
        self.close()
        return sock

    def shutdown_write(self) -> None:
        """Send FIN and keep reading (over TLS too: the session stays, to read the replies)."""
        shutdown_write(self.socket)

    def pending_error(self) -> int:
        """The socket's pending error (``SO_ERROR``): after a FIN, only this shows a reset."""
        return self.socket.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)

    def failure(
        self, cause: OSError | None = None, *, sending: bool = False, unanswered: int = 0
    ) -> UpperClientError:
        """Close, and return the exception that says why: every lost connection, timeout
        and early close is worded here.

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
            message = Message(
                "connection to {address} lost: {reason}", address=self.address, reason=reason
            )
        return ConnectionLost(message)

    def server_closed_now(self) -> bool | None:
        """Whether the server has closed or reset the connection, told at once, without
        waiting: ``None`` when only TLS housekeeping (a session ticket) came. Bytes read
        to find out (over TLS a close can only be read) are kept in ``received``; a reset
        is kept in ``reset_cause``."""
        self.reset_cause = None
        if self.received:
            return False  # replies still to read come first
        sock = self.socket
        sock.settimeout(0.0)
        try:
            if not self.tls:
                return sock.recv(1, socket.MSG_PEEK) == b""
            # TLS cannot peek, and a close begins with close_notify, which only a read decodes.
            data = sock.recv(LINE_RECV_SIZE)
            self.received += data
            return data == b""
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
            return None
        except (BlockingIOError, InterruptedError, TimeoutError):
            return False  # open, and quiet
        except OSError as exc:
            self.reset_cause = exc
            return True
        finally:
            sock.settimeout(self.timeout)

    # -- round trips ------------------------------------------------------------------

    def send_all(self, data: bytes) -> None:
        sock = self.socket
        try:
            # One send() is all a line takes; sendall() finishes what it could not send
            # (under gevent, sendall() alone costs a getsockopt() and more per call).
            sent = sock.send(data)
            if sent < len(data):
                sock.sendall(memoryview(data)[sent:])
        except OSError as exc:  # TimeoutError included
            raise self.failure(exc, sending=True) from None

    def recv(self) -> bytes:
        """The next bytes from the socket (``b""``: the server closed), waiting up to the
        timeout; ``received`` is not looked at."""
        sock = self.socket
        try:
            cooperative = self._cooperative
            if cooperative is not None:
                return cooperative.recv()
            return sock.recv(LINE_RECV_SIZE)
        except OSError as exc:  # TimeoutError included
            raise self.failure(exc) from None

    def read_line(self, limit: int | None = None) -> bytes:
        """The next line received, without its newline (waits for it); with ``limit``,
        ``ConnectionLost`` once more than ``limit`` bytes came without a newline."""
        received = self.received
        if not received:
            # The usual case, one reply per request: it arrives as one whole line.
            chunk = self.recv()
            end = chunk.find(b"\n")
            if end != -1 and end == len(chunk) - 1:
                return chunk[:end]
            if not chunk:
                raise self.failure()
            received += chunk
        end = self._read_through_newline(limit)
        line = bytes(received[:end])
        del received[: end + 1]
        return line

    def read_lines(self) -> list[bytes]:
        """Every whole line received and not yet read, without newlines; waits for one."""
        received = self.received
        if not received:
            chunk = self.recv()
            if chunk.endswith(b"\n"):  # the usual case: whole replies, nothing left over
                return chunk[:-1].split(b"\n")
            if not chunk:
                raise self.failure()
            received += chunk
        self._read_through_newline()
        end = received.rfind(b"\n")
        lines = bytes(received[:end]).split(b"\n")
        del received[: end + 1]
        return lines

    def round_trip(self, line: bytes) -> bytes:
        """Send ``line`` and return the next line received, both ending in ``b"\\n"``;
        ``sent_at`` tells when the line left. Interrupted after the line was handed over
        (killed, ``gevent.Timeout``, Ctrl+C), it closes: the reply could still come and
        answer the next line."""
        if self._sock is None:
            raise NotConnected(f"not connected to {self.address}: call connect() first")
        # What a correct server can send before the reply's newline: a server that sends
        # more is not answering this line, and is not allowed to fill our memory.
        limit = len(self.received) + LONGEST_UPPERCASE * len(line)
        unsent = line
        cooperative = self._cooperative
        if cooperative is not None and not self.received:
            try:
                chunk = cooperative.round_trip(line)
            except cooperative.refusals:
                raise  # nothing was sent: the connection is still in step
            except SendIncomplete as incomplete:
                unsent = incomplete.rest
            except OSError as exc:  # TimeoutError included
                raise self.failure(exc) from None
            except BaseException:
                self._out_of_step()
                raise
            else:
                self.sent_at = cooperative.sent_at
                if chunk and chunk.find(b"\n") == len(chunk) - 1:
                    return chunk  # the usual case: the reply arrived whole, in one read
                if not chunk:
                    raise self.failure()
                self.received += chunk
                unsent = None
        # The ordinary way: not under gevent, a reply in pieces, or a partial send.
        if unsent is line:
            self.sent_at = perf_counter()
        elif cooperative is not None:
            self.sent_at = cooperative.sent_at
        try:
            if unsent:
                self.send_all(unsent)
            return self.read_line(limit) + b"\n"
        except BaseException:
            self._out_of_step()
            raise

    def _out_of_step(self) -> None:
        if self._sock is not None:
            log.debug("round trip to %s interrupted: closing the connection", self.address)
            self.close()

    def _read_through_newline(self, limit: int | None = None) -> int:
        """Read until ``received`` holds a newline and return where the first one is
        (``ConnectionLost`` once more than ``limit`` bytes came without one)."""
        received = self.received
        scanned = 0
        while (end := received.find(b"\n", scanned)) == -1:
            scanned = len(received)
            if limit is not None and scanned > limit:
                self.close()
                raise ConnectionLost(
                    f"server {self.address} sent {scanned} bytes without ending the reply "
                    f"(a reply is at most {LONGEST_UPPERCASE} times as long as its line)"
                )
            chunk = self.recv()
            if not chunk:
                raise self.failure()
            received += chunk
        return end

    # -- duplex -----------------------------------------------------------------------

    def start_duplex(self) -> bytes:
        """Make the socket non-blocking on a selector; returns (and forgets) what was
        received but not read, which comes first."""
        sock = self.socket
        sock.setblocking(False)
        if self._selector is None:
            self._selector = selectors.DefaultSelector()
            self._selector.register(sock, selectors.EVENT_READ)
            self._watched = {sock: selectors.EVENT_READ}
        left = bytes(self.received)
        self.received.clear()
        return left

    def end_duplex(self) -> None:
        """Back to round trips: blocking calls bounded by the timeout."""
        if self._selector is not None:
            self._selector.close()
            self._selector = None
            self._watched = {}
        if self._sock is not None:
            self._sock.settimeout(self.timeout)

    def wait(
        self, timeout: float | None, *, read: bool = True, write: bool = False, source=None
    ) -> tuple[bool, bool, bool]:
        """Wait up to ``timeout`` seconds (``None``: no limit) for the socket to be readable
        (with ``read``) or writable (with ``write``), or ``source`` (a descriptor or socket,
        when given) readable: ``(readable, writable, source_ready)``, all false on timeout."""
        selector = self._selector
        sock = self.socket
        wanted = (selectors.EVENT_READ if read else 0) | (selectors.EVENT_WRITE if write else 0)
        self._watch(sock, wanted)
        if len(self._watched) > 1:  # a source watched last time, and not now
            for fileobj in [f for f in self._watched if f is not sock and f != source]:
                self._watch(fileobj, 0)
        if source is not None:
            self._watch(source, selectors.EVENT_READ)
        readable = writable = source_ready = False
        if not self._watched:
            return readable, writable, source_ready  # nothing to wait for
        for key, events in selector.select(timeout):
            if source is not None and key.fileobj == source:
                source_ready = True
            else:
                readable = bool(events & selectors.EVENT_READ)
                writable = bool(events & selectors.EVENT_WRITE)
        return readable, writable, source_ready

    def can_watch(self, source) -> bool:
        """Whether the selector can watch ``source`` (epoll refuses regular files)."""
        try:
            self._selector.register(source, selectors.EVENT_READ)
        except (OSError, ValueError):
            return False
        self._selector.unregister(source)
        return True

    def _watch(self, fileobj, events: int) -> None:
        current = self._watched.get(fileobj, 0)
        if events == current:
            return
        if not current:
            self._selector.register(fileobj, events)
            self._watched[fileobj] = events
        elif not events:
            self._selector.unregister(fileobj)
            del self._watched[fileobj]
        else:
            self._selector.modify(fileobj, events)
            self._watched[fileobj] = events

    def send_some(self, data) -> int:
        """Send what the socket takes now of ``data``: bytes sent (0: not now); ``OSError``
        when the connection can take no more."""
        try:
            return self.socket.send(data)
        except NOT_NOW:
            return 0

    def receive_some(self) -> bytes | None:
        """What has arrived (``None``: nothing yet; ``b""``: the server's FIN); ``OSError``
        when the connection was reset or TLS failed.

        An ``SSLSocket`` returns one record (16 KiB at most) per ``recv``: every record
        already received is taken, up to ``DUPLEX_RECV_SIZE``, so none is left decrypted
        but unread where the selector cannot see it. An end of stream or an error right
        after data is told at the next call (``closed_after`` says so at once)."""
        if self._deferred is not None:
            error, self._deferred = self._deferred, None
            raise error
        if self.closed_after:
            return b""
        sock = self.socket
        try:
            data = sock.recv(DUPLEX_RECV_SIZE)
        except NOT_NOW:
            return None
        if not data or not self.tls:
            return data
        chunks = [data]
        size = len(data)
        while size < DUPLEX_RECV_SIZE or sock.pending():
            try:
                more = sock.recv(DUPLEX_RECV_SIZE)
            except NOT_NOW:
                break
            except OSError as exc:
                self._deferred = exc
                break
            if not more:
                self.closed_after = True
                break
            chunks.append(more)
            size += len(more)
        return b"".join(chunks)

    def receive_rest(self) -> bytes:
        """Whatever can still be read now, after a failed send: replies that arrived
        before a reset are still in the socket."""
        chunks = []
        while True:
            try:
                data = self.receive_some()
            except OSError:
                break
            if not data:
                break
            chunks.append(data)
        return b"".join(chunks)


def _could_not_connect(address: str, reason) -> Message:
    return Message("could not connect to {address}: {reason}", address=address, reason=reason)
