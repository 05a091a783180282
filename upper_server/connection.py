"""One client connection: the gevent I/O around an ``UpperSession``.

This is the hot path, so it avoids gevent's general-purpose socket layer: the
greenlet parks on a libev watcher whose callback is its own ``switch``, then
calls the raw non-blocking socket. No Waiter objects, timers or EAGAIN
exceptions per message; timeouts are enforced by the server's sweeper.

A connection has its own greenlet while it is active. One that has waited for
input for a while *hibernates*: its greenlet ends and only the socket, the
watcher and the session remain (under 1 KB, against 6-7 KB for a parked
greenlet); the first byte that arrives spawns a new greenlet that carries on.
"""

import logging
import socket
from types import MethodType

import gevent
from gevent import GreenletExit, getcurrent
from greenlet import greenlet

from upper_protocol import UpperSession

log = logging.getLogger(__name__)

_READ = 1
_WRITE = 2
RECV_SIZE = 64 * 1024
_DRAIN_SIZE = 256 * 1024

# Where a connection's greenlet is parked, if anywhere (None: running, or not started).
WAITING_INPUT = "input"
WAITING_OUTPUT = "output"
DRAINING = "drain"


class StopServing(Exception):
    """The server is shutting down: answer what was read, then close."""


class IdleTimeout(Exception):
    """No progress in either direction for the idle timeout."""


class Hibernate(Exception):
    """Idle for a while: give the greenlet's memory back until input arrives."""


class ClientNotReading(Exception):
    """Idle timeout while a reply waits to be sent: nobody is reading, drop it now."""


class LingerExpired(Exception):
    """The peer did not close within the linger timeout after our FIN."""


class Connection:
    """Serves one accepted socket until the session ends, then closes it cleanly."""

    __slots__ = (
        "sock",
        "peer",
        "server",
        "session",
        "greenlet",
        "waiting",
        "active_at",
        "stopping",
        "_watcher",
    )

    def __init__(self, sock: socket.socket, peer: str, server) -> None:
        self.sock = sock
        self.peer = peer
        self.server = server
        self.session = UpperSession()
        self.greenlet = None
        self.waiting = None
        self.active_at = server.loop.now()
        self.stopping = server.stopping
        self._watcher = server.loop.io(sock.fileno(), _READ)

    @property
    def hibernating(self) -> bool:
        return self.greenlet is None

    # -- control, from the server (any greenlet) -----------------------------

    def start(self) -> None:
        self.greenlet = gevent.spawn_raw(self._run, None, False)

    def request_stop(self) -> None:
        """Finish what was read, then close. Never interrupts a reply half sent."""
        self.stopping = True
        self._interrupt(StopServing)

    def request_idle_close(self) -> None:
        """Close, even mid-reply: a client that stopped reading makes no progress either."""
        self._interrupt(IdleTimeout)

    def request_hibernate(self) -> None:
        self._interrupt(Hibernate)

    def request_linger_end(self) -> None:
        self._interrupt(LingerExpired)

    def force_close(self) -> None:
        """The shutdown timeout has passed: close now, whatever state the connection is in."""
        self._interrupt(GreenletExit)

    def _interrupt(self, reason) -> None:
        # Decided in a hub callback: nothing else runs there, so the greenlet is
        # really parked where ``waiting`` says when the exception is thrown.
        self.server.loop.run_callback(self._deliver, reason)

    def _deliver(self, reason) -> None:
        if self.sock.fileno() == -1:
            return  # already closed
        if self.greenlet is None:
            if reason is not Hibernate:
                self._watcher.stop()
                self.greenlet = gevent.spawn_raw(self._run, reason, False)
        elif not self.greenlet:
            # Spawned but not started yet: it will see ``stopping``, or be closed here.
            if reason is GreenletExit:
                self.greenlet.throw(GreenletExit)
                self._release()
        elif reason is GreenletExit:
            self.greenlet.throw(reason)
        elif reason is IdleTimeout and self.waiting == WAITING_OUTPUT:
            self.greenlet.throw(ClientNotReading)
        elif self.waiting == WAITING_INPUT or (
            reason is LingerExpired and self.waiting == DRAINING
        ):
            self.greenlet.throw(reason)

    def _wake(self) -> None:
        """Input arrived for a hibernating connection (a hub callback)."""
        self._watcher.stop()
        self.greenlet = gevent.spawn_raw(self._run, None, True)

    # -- the connection's greenlet --------------------------------------------

    def _run(self, reason, input_ready: bool) -> None:
        self.greenlet = getcurrent()
        hibernated = False
        try:
            try:
                if reason is not None:
                    raise reason
                self._answer(input_ready)
            except Hibernate:
                hibernated = True
                self._hibernate()
                return
            except (StopServing, IdleTimeout) as why:
                self.waiting = None
                if isinstance(why, IdleTimeout):
                    log.info("%s: closed after %ss idle", self.peer, self.server.idle_timeout)
                # Whatever the session still holds back was read: it gets its reply. The
                # idle clock restarts, so a client that does not read it is dropped in turn.
                self.active_at = self.server.loop.now()
                self._send_all(self.session.end_of_input())
            self._close_cleanly()
        except ClientNotReading:
            log.info("%s: dropped, replies unread for %ss", self.peer, self.server.idle_timeout)
        except GreenletExit:
            log.info("%s: closed at the shutdown timeout", self.peer)
        except (ConnectionResetError, BrokenPipeError) as exc:
            log.debug("%s: connection lost: %s", self.peer, exc)
        except OSError as exc:
            self.server.stats.errors += 1
            log.warning("%s: socket error: %s", self.peer, exc)
        except Exception:
            self.server.stats.errors += 1
            log.warning("%s: connection failed", self.peer, exc_info=True)
        finally:
            if not hibernated:
                self._release()

    def _hibernate(self) -> None:
        watcher = self._watcher
        watcher.stop()
        self.waiting = None
        self.greenlet = None
        watcher.start(self._wake)

    def _release(self) -> None:
        if self.sock.fileno() == -1:
            return
        self._watcher.stop()
        self._watcher.close()
        self.sock.close()
        self.greenlet = None
        self.waiting = None
        self.server.connection_closed(self)

    def _answer(self, input_ready: bool) -> None:
        """The receive, uppercase, send loop until the session ends."""
        session = self.session
        stats = self.server.stats
        now = self.server.loop.now
        # The raw switch: gevent's Hub.switch first looks for a ``switch_out`` hook
        # (a guard for code running *in* the hub), an AttributeError on every call
        # from a raw greenlet like this one.
        wait = MethodType(greenlet.switch, self.server.hub)
        # One buffer per server, reused: recv(64 KiB) would allocate 64 KiB and
        # shrink it for every 16-byte line. The hub runs one greenlet at a time,
        # and each copies its bytes out before it can be switched away from.
        buffer = self.server.receive_buffer
        received = memoryview(buffer)
        recv_into = self.sock.recv_into
        send = self.sock.send
        feed = session.feed
        self._watcher.start(self.greenlet.switch)
        more_waiting = input_ready
        while not self.stopping:
            if not more_waiting:
                self.waiting = WAITING_INPUT
                wait()
                self.waiting = None
            try:
                size = recv_into(buffer)
            except BlockingIOError:
                more_waiting = False
                continue
            if not size:
                self._send_all(session.end_of_input())
                return
            data = received[:size].tobytes()
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
            more_waiting = size == RECV_SIZE
        self._send_all(session.end_of_input())

    def _send_all(self, data: bytes) -> None:
        if data:
            self._send_rest(data, 0)
            self.server.stats.bytes_out += len(data)
            self.server.stats.lines_out += data.count(b"\n")

    def _send_rest(self, data: bytes, sent: int) -> None:
        """Park this greenlet (only) until all of ``data`` is sent: backpressure.

        Nothing more is read meanwhile, so a client that does not read its replies
        cannot make the server buffer them.
        """
        watcher = self._watcher
        view = memoryview(data)[sent:]
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
                self.waiting = WAITING_OUTPUT
                self.server.hub.switch()
                self.waiting = None
        finally:
            watcher.stop()
            watcher.events = _READ
            watcher.start(self.greenlet.switch)

    def _close_cleanly(self) -> None:
        """FIN first, then read and discard until the peer closes: never an RST over replies.

        Closing a socket with unread input makes Linux send an RST, which can destroy
        replies the client has not read yet. The server's sweeper bounds the drain
        with the linger timeout (no timer per connection).
        """
        try:
            self.sock.shutdown(socket.SHUT_WR)
        except OSError:
            return
        watcher = self._watcher
        watcher.stop()
        watcher.events = _READ
        watcher.start(self.greenlet.switch)
        self.active_at = self.server.loop.now()
        try:
            while True:
                # The peer needs a moment to read our FIN and answer it: wait first.
                self.waiting = DRAINING
                self.server.hub.switch()
                self.waiting = None
                try:
                    while self.sock.recv(_DRAIN_SIZE):
                        pass
                    return
                except BlockingIOError:
                    continue
        except LingerExpired:
            log.debug("%s: peer did not close within %ss", self.peer, self.server.linger_timeout)
