"""One client connection: the gevent I/O around an ``UpperSession``.

This is the hot path, so it avoids gevent's general-purpose socket layer: the
greenlet parks on a libev watcher whose callback is its own ``switch``, then calls
the raw non-blocking socket. No Waiter objects, timers or EAGAIN exceptions per
message; the idle timeout is enforced by the server's sweeper instead.
"""

import logging
import socket

from gevent import Timeout, getcurrent

from upper_protocol import UpperSession

log = logging.getLogger(__name__)

_READ = 1
_WRITE = 2
RECV_SIZE = 64 * 1024
_DRAIN_SIZE = 256 * 1024


class StopServing(Exception):
    """Thrown into a connection waiting for input when the server shuts down."""


class IdleTimeout(Exception):
    """Thrown into a connection that made no progress for the idle timeout."""


class Connection:
    """Serves one accepted socket until the session ends, then closes it cleanly."""

    __slots__ = (
        "sock",
        "peer",
        "server",
        "greenlet",
        "active_at",
        "waiting_for_input",
        "stopping",
        "draining",
        "timed_out",
        "_watcher",
    )

    def __init__(self, sock: socket.socket, peer: str, server) -> None:
        self.sock = sock
        self.peer = peer
        self.server = server
        self.greenlet = getcurrent()
        self.active_at = server.loop.now()
        self.waiting_for_input = False
        self.stopping = False
        self.draining = False
        self.timed_out = False
        self._watcher = None

    def request_stop(self) -> None:
        """Finish what was read, then close. Never interrupts a reply half sent."""
        self.stopping = True
        if self.waiting_for_input:
            self.greenlet.kill(StopServing, block=False)

    def request_idle_close(self) -> None:
        """No progress for the idle timeout: close, even mid-reply (the client stopped reading)."""
        if not self.timed_out:
            self.timed_out = True
            self.greenlet.kill(IdleTimeout, block=False)

    def serve(self) -> None:
        session = UpperSession()
        try:
            self._watcher = self.server.loop.io(self.sock.fileno(), _READ)
            try:
                self._answer(session)
            except (StopServing, IdleTimeout) as reason:
                # Whatever the session still holds back was read: it gets its reply.
                self._send_all(session.end_of_input())
                if isinstance(reason, IdleTimeout):
                    log.info("%s: closed after %ss idle", self.peer, self.server.idle_timeout)
            self._close_cleanly()
        except IdleTimeout:
            log.info("%s: dropped, replies unread for %ss", self.peer, self.server.idle_timeout)
        except (ConnectionResetError, BrokenPipeError) as exc:
            log.debug("%s: connection lost: %s", self.peer, exc)
        except OSError as exc:
            self.server.stats.errors += 1
            log.warning("%s: socket error: %s", self.peer, exc)
        except Exception:
            self.server.stats.errors += 1
            log.warning("%s: connection failed", self.peer, exc_info=True)
        finally:
            if self._watcher is not None:
                self._watcher.stop()
                self._watcher.close()
                self._watcher = None
            self.sock.close()

    def _answer(self, session: UpperSession) -> None:
        """The receive, uppercase, send loop until the session ends."""
        watcher = self._watcher
        stats = self.server.stats
        now = self.server.loop.now
        wait = self.server.hub.switch
        recv = self.sock.recv
        send = self.sock.send
        feed = session.feed
        watcher.start(self.greenlet.switch)
        more_waiting = False
        while not self.stopping:
            if not more_waiting:
                self.waiting_for_input = True
                wait()
                self.waiting_for_input = False
            try:
                data = recv(RECV_SIZE)
            except BlockingIOError:
                more_waiting = False
                continue
            if not data:
                self._send_all(session.end_of_input())
                return
            self.active_at = now()
            stats.bytes_in += len(data)
            stats.lines_in += data.count(b"\n")
            reply = feed(data)
            if reply:
                try:
                    sent = send(reply)
                except BlockingIOError:
                    sent = 0
                if sent != len(reply):
                    self._send_rest(reply, sent)
                stats.bytes_out += len(reply)
                stats.lines_out += reply.count(b"\n")
            if session.ended:
                return
            # A full buffer means the client is probably ahead of us: read again at once.
            more_waiting = len(data) == RECV_SIZE
        self._send_all(session.end_of_input())

    def _send_all(self, data: bytes) -> None:
        if data:
            self._send_rest(data, 0)
            self.server.stats.bytes_out += len(data)
            self.server.stats.lines_out += data.count(b"\n")

    def _send_rest(self, data: bytes, sent: int) -> None:
        """Block this greenlet (only) until all of ``data`` is sent: backpressure."""
        watcher = self._watcher
        view = memoryview(data)[sent:]
        stop_requested = False
        watcher.stop()
        watcher.events = _WRITE
        watcher.start(self.greenlet.switch)
        try:
            while view:
                try:
                    sent = self.sock.send(view)
                except BlockingIOError:
                    sent = 0
                if sent:
                    view = view[sent:]
                    self.active_at = self.server.loop.now()
                    continue
                try:
                    self.server.hub.switch()
                except StopServing:
                    stop_requested = True
        finally:
            watcher.stop()
            watcher.events = _READ
            watcher.start(self.greenlet.switch)
        if stop_requested:
            self.stopping = True

    def _close_cleanly(self) -> None:
        """FIN first, then read and discard until the peer closes: never an RST over replies.

        Closing a socket with unread input makes Linux send an RST, which can destroy
        replies the client has not read yet. The drain is bounded in time.
        """
        self.draining = True
        try:
            self.sock.shutdown(socket.SHUT_WR)
        except OSError:
            return
        with Timeout(self.server.linger_timeout, False):
            while True:
                try:
                    if not self.sock.recv(_DRAIN_SIZE):
                        return
                except BlockingIOError:
                    self.server.hub.switch()
