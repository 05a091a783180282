"""``UpperServer``: a gevent ``StreamServer`` that answers every line in uppercase."""

import _socket
import errno
import logging
import socket

import gevent
from gevent.event import Event
from gevent.server import StreamServer

from upper_protocol.address import format_address
from upper_server.connection import DRAINING, RECV_SIZE, WAITING_INPUT, Connection
from upper_server.limits import default_max_connections
from upper_server.stats import ServerStats

log = logging.getLogger(__name__)

DEFAULT_IDLE_TIMEOUT = 300.0
DEFAULT_SHUTDOWN_TIMEOUT = 10.0
DEFAULT_LINGER_TIMEOUT = 5.0
HIBERNATE_AFTER = 1.0
"""Seconds a connection waits for input before its greenlet is given back."""
FD_RESERVE = 100
"""Descriptors kept back from ``--max-connections`` for the listener, logs and the like."""

_SWEEP_INTERVAL = 0.5
_OUT_OF_DESCRIPTORS = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}
_ACCEPT_RETRY_MAX = 1.0


class UpperServer(StreamServer):
    """Serves each connection with its own greenlet and ``UpperSession``.

    ``listener`` is an address tuple or an already listening socket (as the
    pre-forked workers share one). ``stop()`` is graceful: connections answer
    what they have read and close cleanly within ``shutdown_timeout``.
    """

    backlog = 4096
    reuse_addr = 1

    def __init__(
        self,
        listener,
        *,
        idle_timeout: float = DEFAULT_IDLE_TIMEOUT,
        max_connections: int | None = None,
        shutdown_timeout: float = DEFAULT_SHUTDOWN_TIMEOUT,
        linger_timeout: float = DEFAULT_LINGER_TIMEOUT,
        stats_interval: float = 0,
        hibernate_after: float = HIBERNATE_AFTER,
    ) -> None:
        super().__init__(listener)
        self.max_connections = max_connections or default_max_connections()
        self.idle_timeout = idle_timeout
        self.shutdown_timeout = shutdown_timeout
        self.linger_timeout = linger_timeout
        self.stats_interval = stats_interval
        self.hibernate_after = hibernate_after
        self.hub = gevent.get_hub()
        self.receive_buffer = bytearray(RECV_SIZE)
        self.stats = ServerStats()
        self.connections: set[Connection] = set()
        self.stopping = False
        self._all_closed = Event()
        self._all_closed.set()
        self._accept_retry_delay = 0.0
        self._accept_paused = False
        self._helpers: list[gevent.Greenlet] = []

    @property
    def address_text(self) -> str:
        return format_address(*self.address[:2])

    # -- lifecycle ------------------------------------------------------------

    def start(self) -> None:
        super().start()
        self._helpers.append(gevent.spawn(self._sweep))
        if self.stats_interval:
            self._helpers.append(gevent.spawn(self._log_stats))
        log.debug("serving on %s, at most %d connections", self.address_text, self.max_connections)

    def stop(self, timeout: float | None = None) -> None:
        """Stop accepting, let every connection finish cleanly, force-close stragglers."""
        if timeout is None:
            timeout = self.shutdown_timeout
        self.stopping = True
        self.close()
        for helper in self._helpers:
            helper.kill(block=False)
        for connection in list(self.connections):
            connection.request_stop()
        if not self._all_closed.wait(timeout):
            log.warning(
                "closing %d connection(s) still open after %ss", len(self.connections), timeout
            )
            for connection in list(self.connections):
                connection.force_close()
            self._all_closed.wait(1.0)

    # -- accepting ------------------------------------------------------------

    def full(self) -> bool:
        return len(self.connections) >= self.max_connections

    def do_read(self):
        try:
            fd, address = self.socket._accept()
        except BlockingIOError:
            return None
        except OSError as exc:
            if exc.errno in _OUT_OF_DESCRIPTORS:
                self._pause_accepting(exc)
                return None
            if exc.errno in (errno.ECONNABORTED, errno.EPROTO, errno.EPERM):
                return None  # the client gave up before we got to it
            raise
        # The C-level socket type: the stdlib's Python wrapper only adds per-connection cost.
        sock = _socket.socket(self.socket.family, socket.SOCK_STREAM, 0, fd)
        sock.setblocking(False)
        # Replies go out as soon as they are ready; Nagle would hold a pipelined
        # client's replies back behind delayed ACKs (40 ms per round trip).
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self._accept_paused:
            self._accept_paused = False
            self._accept_retry_delay = 0.0
            log.warning("accepting connections again on %s", self.address_text)
        return sock, address

    def do_handle(self, sock: socket.socket, address) -> None:
        # Registered right here, in the accept loop, so ``full()`` counts it at once.
        try:
            self.handle(sock, address)
        except BaseException:
            sock.close()
            raise

    def handle(self, sock: socket.socket, address) -> None:
        connection = Connection(sock, format_address(*address[:2]), self)
        self.connections.add(connection)
        self._all_closed.clear()
        self.stats.open_connections += 1
        self.stats.connections_served += 1
        log.debug("%s: connected", connection.peer)
        connection.start()

    def _pause_accepting(self, exc: OSError) -> None:
        """Out of descriptors: stop watching the listener for a while instead of spinning."""
        self.stats.accept_errors += 1
        if not self._accept_paused:
            self._accept_paused = True
            log.warning(
                "cannot accept on %s: %s; serving open connections, retrying",
                self.address_text,
                exc.strerror,
            )
        self._accept_retry_delay = min(_ACCEPT_RETRY_MAX, max(0.01, self._accept_retry_delay * 2))
        self.stop_accepting()
        self._timer = self.loop.timer(self._accept_retry_delay)
        self._timer.start(self._start_accepting_if_started)

    def connection_closed(self, connection: Connection) -> None:
        self.connections.discard(connection)
        self.stats.open_connections -= 1
        log.debug("%s: closed", connection.peer)
        if not self.connections:
            self._all_closed.set()
        if self.stopping:
            return
        if self._watcher is None and (self._accept_paused or self._timer is None):
            # A slot or a descriptor just came free: accept again without waiting.
            self.stop_accepting()
            self._start_accepting_if_started()

    # -- housekeeping ---------------------------------------------------------

    def _sweep(self) -> None:
        """Close connections idle past the idle timeout; hibernate those idle a while."""
        interval = _SWEEP_INTERVAL
        if self.idle_timeout:
            interval = min(interval, max(0.05, self.idle_timeout / 4))
        while True:
            gevent.sleep(interval)
            now = self.loop.now()
            idle_since = now - self.idle_timeout if self.idle_timeout else None
            quiet_since = now - self.hibernate_after
            linger_since = now - self.linger_timeout
            for connection in list(self.connections):
                active_at = connection.active_at
                waiting = connection.waiting
                if waiting == DRAINING:
                    if active_at < linger_since:
                        connection.active_at = float("inf")  # asked once
                        connection.request_linger_end()
                elif idle_since is not None and active_at < idle_since:
                    self.stats.idle_timeouts += 1
                    connection.active_at = float("inf")
                    connection.request_idle_close()
                elif active_at < quiet_since and waiting == WAITING_INPUT:
                    connection.request_hibernate()

    def _log_stats(self) -> None:
        while True:
            gevent.sleep(self.stats_interval)
            log.info("stats: %s", self.stats.summary())
