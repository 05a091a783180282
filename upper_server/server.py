"""``UpperServer``: a gevent ``StreamServer`` that answers every line in uppercase."""

import errno
import logging
import resource
import socket

import gevent
from gevent.pool import Pool
from gevent.server import StreamServer

from upper_server.connection import Connection
from upper_server.stats import ServerStats

log = logging.getLogger(__name__)

DEFAULT_IDLE_TIMEOUT = 300.0
DEFAULT_SHUTDOWN_TIMEOUT = 10.0
DEFAULT_LINGER_TIMEOUT = 5.0
FD_RESERVE = 100
"""Descriptors kept back from ``--max-connections`` for the listener, logs and the like."""

_OUT_OF_DESCRIPTORS = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}
_ACCEPT_RETRY_MAX = 1.0


def default_max_connections() -> int:
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return 1_000_000
    return max(1, soft - FD_RESERVE)


def format_address(address) -> str:
    host, port = address[:2]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class UpperServer(StreamServer):
    """One greenlet per connection, each serving an ``UpperSession``.

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
    ) -> None:
        self.max_connections = max_connections or default_max_connections()
        super().__init__(listener, spawn=Pool(self.max_connections))
        self.idle_timeout = idle_timeout
        self.shutdown_timeout = shutdown_timeout
        self.linger_timeout = linger_timeout
        self.stats_interval = stats_interval
        self.hub = gevent.get_hub()
        self.stats = ServerStats()
        self.connections: set[Connection] = set()
        self._accept_retry_delay = 0.0
        self._accept_paused = False
        self._helpers: list[gevent.Greenlet] = []

    @property
    def address_text(self) -> str:
        return format_address(self.address)

    # -- lifecycle ------------------------------------------------------------

    def start(self) -> None:
        super().start()
        if self.idle_timeout:
            self._helpers.append(gevent.spawn(self._close_idle_connections))
        if self.stats_interval:
            self._helpers.append(gevent.spawn(self._log_stats))
        log.debug("serving on %s, at most %d connections", self.address_text, self.max_connections)

    def stop(self, timeout: float | None = None) -> None:
        """Stop accepting, let every connection finish cleanly, force-close stragglers."""
        if timeout is None:
            timeout = self.shutdown_timeout
        self.close()
        for helper in self._helpers:
            helper.kill(block=False)
        for connection in list(self.connections):
            connection.request_stop()
        self.pool.join(timeout=timeout)
        if self.connections:
            log.warning("closing %d connection(s) still open after %ss", len(self.connections), timeout)
            self.pool.kill(block=True, timeout=1)

    # -- accepting ------------------------------------------------------------

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
        sock = socket.socket(self.socket.family, socket.SOCK_STREAM, fileno=fd)
        sock.setblocking(False)
        # Replies go out as soon as they are ready; Nagle would hold a pipelined
        # client's replies back behind delayed ACKs (40 ms per round trip).
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self._accept_paused:
            self._accept_paused = False
            self._accept_retry_delay = 0.0
            log.warning("accepting connections again")
        return sock, address

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

    def _connection_closed(self) -> None:
        if self._accept_paused and self._timer is not None:
            # A descriptor just came free: no need to wait for the retry timer.
            self.stop_accepting()
            self._start_accepting_if_started()

    # -- serving --------------------------------------------------------------

    def handle(self, sock: socket.socket, address) -> None:
        peer = format_address(address)
        connection = Connection(sock, peer, self)
        self.connections.add(connection)
        self.stats.open_connections += 1
        self.stats.connections_served += 1
        log.debug("%s: connected", peer)
        try:
            connection.serve()
        finally:
            self.connections.discard(connection)
            self.stats.open_connections -= 1
            log.debug("%s: closed", peer)
            self._connection_closed()

    def _close_idle_connections(self) -> None:
        interval = min(1.0, max(0.05, self.idle_timeout / 4))
        while True:
            gevent.sleep(interval)
            deadline = self.loop.now() - self.idle_timeout
            for connection in list(self.connections):
                if connection.active_at < deadline and not (
                    connection.draining or connection.timed_out
                ):
                    self.stats.idle_timeouts += 1
                    connection.request_idle_close()

    def _log_stats(self) -> None:
        while True:
            gevent.sleep(self.stats_interval)
            log.info("stats: %s", self.stats.summary())
