"""The client's pipelining engine: one ``stream()`` that writes input while it reads replies.

Lines go out as fast as the server takes them and replies are yielded as they
arrive, on one selector, so a filter over any input uses bounded memory and
never waits one round trip per line. TCP backpressure is the only buffer: the
next input chunk is read only when the last one is sent.

On Windows ``select`` takes sockets only, so a pipe or console cannot be
watched: there a thread copies the source into a socket pair (``SourceRelay``)
and the exchange watches the other end. The same bounded memory holds, since
the thread blocks when the socket pair's buffers are full.

Error handling: every failure is worded by the connection (``Duplex.failure``),
which also closes it. A failure to read the source is raised as it is.
"""

import os
import socket
import sys
import threading
from collections.abc import Iterator

from upper.protocol import KeywordScanner

RECV_SIZE = 256 * 1024
"""The most one read of the source takes."""


class PipelinedExchange:
    """One pipelined ``stream()`` on a :class:`~upper.client.duplex.Duplex` in duplex mode."""

    def __init__(self, duplex, chunks, source_fd, half_close):
        self.duplex = duplex
        self.half_close = half_close
        self.pending = memoryview(b"")
        self.sent_lines = 0
        self.received_lines = 0
        self.source_done = False
        self.chunks = iter(chunks)
        self.source_fd = source_fd
        self.source = source_fd
        """What the selector watches and ``_read_source`` reads: the fd, or the relay's socket."""
        self.relay: SourceRelay | None = None
        # Whether the input itself ended the session with a DESCONEXION line.
        self.keyword = KeywordScanner()

    def run(self) -> Iterator[bytes]:
        try:
            yield from self._loop()
        finally:
            if self.relay is not None:
                self.relay.close()

    def _loop(self) -> Iterator[bytes]:
        duplex = self.duplex
        watch_source = self._watchable_source()
        if not watch_source:
            self._pull_chunk()
        while not self._finished():
            # Read the source only when its last chunk is sent: TCP backpressure then
            # bounds what this process holds, however large the input.
            wanted_source = watch_source and not self.source_done and not self.pending
            readable, writable, source_ready = duplex.wait(
                self._wait_limit(),
                write=bool(self.pending),
                source=self.source if wanted_source else None,
            )
            if not (readable or writable or source_ready):
                raise duplex.failure(TimeoutError())
            if source_ready:
                self._read_source()
            if writable:
                self._send_some(watch_source)
            if readable:
                data = self._recv_some()
                if data is None:
                    continue
                if not data:
                    self._server_closed()
                    return
                self.received_lines += data.count(b"\n")
                yield data
                if duplex.closed_after:
                    self._server_closed()
                    return

    def _watchable_source(self) -> bool:
        """A pipe or terminal is watched; regular files are just read."""
        if self.source_fd is None:
            return False
        if not select_takes_pipes():
            self.relay = SourceRelay(self.source_fd)
            self.source = self.relay.socket
            return True
        if not self.duplex.can_watch(self.source_fd):
            # epoll refuses regular files and /dev/null: they never block anyway.
            self.chunks = _read_chunks(self.source_fd)
            return False
        return True

    def _wait_limit(self) -> float | None:
        """Time out only while the server owes us something; a quiet producer is no fault."""
        owed = self.pending or self.received_lines < self.sent_lines or self.source_done
        return self.duplex.timeout if owed else None

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
        if self.relay is not None:
            chunk = self.relay.read(RECV_SIZE)
        else:
            chunk = os.read(self.source_fd, RECV_SIZE)
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
                self.duplex.shutdown_write()
            except OSError as exc:
                raise self.duplex.failure(exc) from None

    def _send_some(self, watch_source: bool) -> None:
        try:
            sent = self.duplex.send_some(self.pending)
        except OSError as exc:
            if self.keyword.found:
                # The session is over: what was not sent would never be answered anyway.
                self.pending = memoryview(b"")
                self.source_done = True
                return
            raise self.duplex.failure(exc, sending=True) from None
        self.pending = self.pending[sent:]
        if not watch_source:
            self._pull_chunk()

    def _recv_some(self):
        try:
            return self.duplex.receive_some()
        except OSError as exc:
            raise self.duplex.failure(exc) from None

    def _server_closed(self) -> None:
        """EOF from the server: the expected end, or the server going away."""
        if self.keyword.found:
            return  # a DESCONEXION line in the input ended the session
        if self.half_close and self.source_done and self.received_lines >= self.sent_lines:
            return  # our EOF, answered in full
        raise self.duplex.failure(unanswered=self.sent_lines - self.received_lines)


def _read_chunks(fd: int) -> Iterator[bytes]:
    while chunk := os.read(fd, RECV_SIZE):
        yield chunk


def select_takes_pipes() -> bool:
    """Whether ``select`` can watch pipes and terminals (everywhere but Windows)."""
    return sys.platform != "win32"


class SourceRelay:
    """Copies a descriptor into a socket pair from a thread, for a selector of sockets only.

    Resource handling:

      The exchange closes its end (``close()``) when it ends, however it
      ends; the thread then stops at its next write, or with the process if
      it is still waiting for input that never comes (it is a daemon thread:
      a read from a pipe or console cannot be interrupted portably).

    Error handling:

      A read error in the thread is kept and raised by ``read()`` where the
      end of the source would otherwise be reported, so it is never mistaken
      for the end of the input.
    """

    def __init__(self, fd: int):
        self.socket, self._writer = socket.socketpair()
        self.error: OSError | None = None
        self._thread = threading.Thread(target=self._copy, args=(fd,), daemon=True)
        self._thread.start()

    def read(self, size: int) -> bytes:
        """Up to ``size`` bytes of the source; ``b""`` at its end (re-raises its read error)."""
        chunk = self.socket.recv(size)
        if not chunk and self.error is not None:
            raise self.error
        return chunk

    def close(self) -> None:
        self.socket.close()

    def _copy(self, fd: int) -> None:
        try:
            while chunk := os.read(fd, RECV_SIZE):
                self._writer.sendall(chunk)
        except OSError as exc:
            if self.socket.fileno() != -1:  # not just the exchange ending first
                self.error = exc
        finally:
            self._writer.close()
