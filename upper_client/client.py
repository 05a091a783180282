"""``UpperClient``: the one client implementation, used by the CLI, the tests and Locust.

It works with plain blocking sockets in ordinary threads, and cooperatively under
gevent when the standard library is monkey-patched (as it is inside Locust):
``socket`` and ``selectors`` are then gevent's, and one-line round trips take the
faster path of :mod:`upper_client.cooperative`.
"""

import errno
import logging
import os
import selectors
import socket
from collections.abc import Iterable, Iterator
from time import perf_counter

from upper_client.cooperative import RECV_SIZE as _LINE_RECV_SIZE
from upper_client.cooperative import Cooperative, SendIncomplete
from upper_client.errors import ConnectError, ConnectionLost, NotConnected, ReplyTimeout
from upper_protocol import KEYWORD, KeywordScanner, decode_text, encode_text, ends_session
from upper_protocol.address import DEFAULT_HOST, DEFAULT_PORT, format_address

log = logging.getLogger(__name__)

_RECV_SIZE = 256 * 1024
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
        self, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, timeout: float | None = 5.0
    ):
        self.host = host
        self.port = port
        self.timeout = timeout
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
            raise ConnectError(f"already connected to {self.address}")
        try:
            sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
        except socket.gaierror as exc:
            raise ConnectError(f"unknown host {self.host!r}: {exc.strerror}") from None
        except TimeoutError:
            raise ConnectError(
                f"could not connect to {self.address}: timed out after {self.timeout}s"
            ) from None
        except OSError as exc:
            reason = exc.strerror or str(exc)
            if exc.errno == errno.ECONNREFUSED:
                reason = "connection refused (is the server running?)"
            raise ConnectError(f"could not connect to {self.address}: {reason}") from None
        except (OverflowError, ValueError) as exc:
            raise ConnectError(f"could not connect to {self.address}: {exc}") from None
        # Each line is a small write: without this, Nagle holds it back behind the last reply's ACK.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._sock = sock
        self._buffer.clear()
        self._cooperative = Cooperative.of(sock)
        log.debug("connected to %s", self.address)

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
        self._sendall(KEYWORD + b"\n")
        try:
            while self._recv():
                pass
        except ReplyTimeout:
            raise ReplyTimeout(
                f"server {self.address} did not close the connection within "
                f"{self.timeout}s after DESCONEXION"
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
                raise self._lost(exc) from None
            except BaseException:
                self._out_of_step()
                raise
            else:
                if chunk and chunk.find(b"\n") == len(chunk) - 1:
                    # The usual case: the reply arrived whole, in one read.
                    self.elapsed = perf_counter() - cooperative.sent_at
                    return chunk
                if not chunk:
                    self.close()
                    raise ConnectionLost(f"server {self.address} closed the connection")
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
        exchange = _Exchange(self, sock, chunks, source_fd, half_close)
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
        except TimeoutError:
            self.close()
            raise ReplyTimeout(
                f"timed out after {self.timeout}s sending to {self.address}"
            ) from None
        except OSError as exc:
            self.close()
            raise ConnectionLost(
                f"connection to {self.address} lost while sending: {exc.strerror or exc}"
            ) from None

    def _recv(self) -> bytes:
        sock = self._require_socket()
        try:
            cooperative = self._cooperative
            if cooperative is not None:
                return cooperative.recv()
            return sock.recv(_LINE_RECV_SIZE)
        except OSError as exc:  # TimeoutError included
            raise self._lost(exc) from None

    def _lost(self, exc: OSError) -> Exception:
        """Close, and the client's exception for ``exc`` raised while waiting for input."""
        self.close()
        if isinstance(exc, TimeoutError):
            return ReplyTimeout(f"timed out after {self.timeout}s waiting for {self.address}")
        return ConnectionLost(f"connection to {self.address} lost: {exc.strerror or exc}")

    def _read_line(self) -> bytes:
        buffer = self._buffer
        if not buffer:
            # The usual case, one reply per request: it arrives as one whole line.
            chunk = self._recv()
            end = chunk.find(b"\n")
            if end != -1 and end == len(chunk) - 1:
                return chunk[:end]
            if not chunk:
                self.close()
                raise ConnectionLost(f"server {self.address} closed the connection")
            buffer += chunk
        scanned = 0
        while (end := buffer.find(b"\n", scanned)) == -1:
            scanned = len(buffer)
            chunk = self._recv()
            if not chunk:
                self.close()
                raise ConnectionLost(f"server {self.address} closed the connection")
            buffer += chunk
        line = bytes(buffer[:end])
        del buffer[: end + 1]
        return line


class _Exchange:
    """One pipelined ``stream()``: writes input while reading replies, on one selector."""

    def __init__(self, client, sock, chunks, source_fd, half_close):
        self.client = client
        self.sock = sock
        self.half_close = half_close
        self.pending = memoryview(b"")
        self.sent_lines = 0
        self.received_lines = 0
        self.source_done = False
        self.chunks = iter(chunks)
        self.source_fd = source_fd
        # Whether the input itself ended the session with a DESCONEXION line.
        self.keyword = KeywordScanner()

    def run(self) -> Iterator[bytes]:
        selector = selectors.DefaultSelector()
        try:
            yield from self._loop(selector)
        finally:
            selector.close()

    def _loop(self, selector) -> Iterator[bytes]:
        sock = self.sock
        sock_events = selectors.EVENT_READ
        selector.register(sock, sock_events)
        watch_source = self._watchable_source(selector)
        source_watched = watch_source
        if not watch_source:
            self._pull_chunk()
        while not self._finished():
            wanted = selectors.EVENT_READ | (selectors.EVENT_WRITE if self.pending else 0)
            if wanted != sock_events:
                selector.modify(sock, wanted)
                sock_events = wanted
            # Read the source only when its last chunk is sent: TCP backpressure then
            # bounds what this process holds, however large the input.
            wanted_source = watch_source and not self.source_done and not self.pending
            if wanted_source != source_watched:
                if wanted_source:
                    selector.register(self.source_fd, selectors.EVENT_READ)
                else:
                    selector.unregister(self.source_fd)
                source_watched = wanted_source
            ready = selector.select(self._wait_limit())
            if not ready:
                self.client.close()
                raise ReplyTimeout(
                    f"timed out after {self.client.timeout}s waiting for {self.client.address}"
                )
            for key, events in ready:
                if key.fileobj is not sock:
                    self._read_source()
                    continue
                if events & selectors.EVENT_WRITE:
                    self._send_some(watch_source)
                if events & selectors.EVENT_READ:
                    data = self._recv_some()
                    if data is None:
                        continue
                    if not data:
                        self._server_closed()
                        return
                    self.received_lines += data.count(b"\n")
                    yield data

    def _watchable_source(self, selector) -> bool:
        """Register a pipe or terminal to be watched; regular files are just read."""
        if self.source_fd is None:
            return False
        try:
            selector.register(self.source_fd, selectors.EVENT_READ)
        except (OSError, ValueError):
            # epoll refuses regular files and /dev/null: they never block anyway.
            self.chunks = _read_chunks(self.source_fd)
            return False
        return True

    def _wait_limit(self) -> float | None:
        """Time out only while the server owes us something; a quiet producer is no fault."""
        owed = self.pending or self.received_lines < self.sent_lines or self.source_done
        return self.client.timeout if owed else None

    def _finished(self) -> bool:
        if not self.source_done or self.pending:
            return False
        return not self.half_close and self.received_lines >= self.sent_lines

    def _pull_chunk(self) -> None:
        while not self.pending and not self.source_done:
            try:
                chunk = next(self.chunks)
            except StopIteration:
                self._end_of_source()
            else:
                self._queue(chunk)

    def _read_source(self) -> None:
        chunk = os.read(self.source_fd, _RECV_SIZE)
        if chunk:
            self._queue(chunk)
        else:
            self._end_of_source()

    def _queue(self, chunk: bytes) -> None:
        self.pending = memoryview(chunk)
        if not self.keyword.found:
            self.sent_lines += self.keyword.scan(chunk).count(b"\n")

    def _end_of_source(self) -> None:
        self.source_done = True
        if self.half_close:
            try:
                self.sock.shutdown(socket.SHUT_WR)
            except OSError as exc:
                self.client.close()
                raise ConnectionLost(
                    f"connection to {self.client.address} lost: {exc.strerror or exc}"
                ) from None

    def _send_some(self, watch_source: bool) -> None:
        try:
            sent = self.sock.send(self.pending)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            if self.keyword.found:
                # The session is over: what was not sent would never be answered anyway.
                self.pending = memoryview(b"")
                self.source_done = True
                return
            self.client.close()
            raise ConnectionLost(
                f"connection to {self.client.address} lost while sending: {exc.strerror or exc}"
            ) from None
        self.pending = self.pending[sent:]
        if not watch_source:
            self._pull_chunk()

    def _recv_some(self):
        try:
            return self.sock.recv(_RECV_SIZE)
        except (BlockingIOError, InterruptedError):
            return None
        except OSError as exc:
            self.client.close()
            raise ConnectionLost(
                f"connection to {self.client.address} lost: {exc.strerror or exc}"
            ) from None

    def _server_closed(self) -> None:
        """EOF from the server: the expected end, or the server going away."""
        if self.keyword.found:
            return  # a DESCONEXION line in the input ended the session
        if self.half_close and self.source_done and self.received_lines >= self.sent_lines:
            return  # our EOF, answered in full
        self.client.close()
        missing = self.sent_lines - self.received_lines
        detail = f" with {missing} line(s) unanswered" if missing > 0 else ""
        raise ConnectionLost(f"server {self.client.address} closed the connection{detail}")


def _read_chunks(fd: int) -> Iterator[bytes]:
    while chunk := os.read(fd, _RECV_SIZE):
        yield chunk
