"""``UpperServer``: answers every line in uppercase, on one or more listening sockets.

Each listening socket has an ``Acceptor`` (its accept loop); every
connection they accept gets a ``Connection`` with its own greenlet while it is
active. The server owns what is shared: the connection limit, the counters,
one receive buffer, the sweeper, and the graceful shutdown.

Resource handling: ``stop()`` closes the listening sockets first (new clients
are refused at once), interrupts every connection with ``STOP``, and waits
until all have closed, for at most ``shutdown_timeout``; then it interrupts
the rest with ``FORCE_CLOSE``. The sweeper keeps running until the end, so
idle timeouts and the linger still apply while the server shuts down.

Error handling: a fault in one connection is handled in that connection
(``upper.server.connection``); accept errors in its ``Acceptor``.
"""

import ipaddress
import logging
from logging import DEBUG

import gevent
from gevent.event import Event

from upper.green import switch_to_hub
from upper.green.greenlets import ReusableGreenlets
from upper.protocol.address import format_address
from upper.server import defaults
from upper.server.acceptor import Acceptor
from upper.server.connection import Connection, Interrupt, Timeouts, overdue
from upper.server.limits import default_max_connections
from upper.server.memory import release_freed_memory
from upper.server.metrics import EXPORT_INTERVAL
from upper.server.stats import ServerStats
from upper.server.tls import TLSConnection

log = logging.getLogger(__name__)


class UpperServer:
    """Serves every connection of ``listeners`` with its own greenlet and ``UpperSession``.

    ``listeners`` is a listening socket, an address tuple, or a list of listening
    sockets (all served together: one limit, one set of counters, one shutdown).
    ``stop()`` is graceful: connections answer what they have read and close
    cleanly within ``shutdown_timeout``. With ``ssl_context`` (see
    ``upper.server.tls.server_context``) every connection speaks TLS, and a
    handshake not done within ``handshake_timeout`` seconds of the accept fails.
    """

    backlog = Acceptor.backlog
    """The listen backlog, for callers that open the listening sockets themselves."""
    sweep_interval = defaults.SWEEP_INTERVAL
    trim_interval = defaults.TRIM_INTERVAL

    def __init__(
        self,
        listeners,
        *,
        idle_timeout: float = defaults.IDLE_TIMEOUT,
        max_connections: int | None = None,
        shutdown_timeout: float = defaults.SHUTDOWN_TIMEOUT,
        linger_timeout: float = defaults.LINGER_TIMEOUT,
        stats_interval: float = 0,
        hibernate_after: float = defaults.HIBERNATE_AFTER,
        metrics=None,
        proxy_protocol: str | None = None,
        proxy_allow_from=None,
        proxy_header_timeout: float = defaults.PROXY_HEADER_TIMEOUT,
        ssl_context=None,
        handshake_timeout: float = defaults.HANDSHAKE_TIMEOUT,
        count_traffic: bool = True,
        connection_class: type[Connection] | None = None,
    ) -> None:
        if not isinstance(listeners, list):
            listeners = [listeners]
        self.max_connections = max_connections or default_max_connections()
        self.idle_timeout = idle_timeout
        self.shutdown_timeout = shutdown_timeout
        self.linger_timeout = linger_timeout
        self.stats_interval = stats_interval
        self.proxy_protocol = proxy_protocol
        """``v1``, ``v2`` or ``any``: every connection begins with a PROXY header; or None."""
        if proxy_allow_from is None:
            proxy_allow_from = defaults.PROXY_ALLOW_FROM.split(",")
        self.proxy_allow_from = [ipaddress.ip_network(net) for net in proxy_allow_from]
        self.timeouts = Timeouts(
            idle=idle_timeout,
            linger=linger_timeout,
            hibernate_after=hibernate_after,
            proxy_header=proxy_header_timeout,
            handshake=handshake_timeout,
        )
        self.ssl_context = ssl_context
        """With an ``SSLContext``, every connection speaks TLS (``upper.server.tls``)."""
        if connection_class is None:
            connection_class = Connection if ssl_context is None else TLSConnection
        self._connection_type = connection_class
        self.hub = gevent.get_hub()
        self.loop = self.hub.loop
        self.receive_buffer = bytearray(defaults.RECV_SIZE)
        self.receive_view = memoryview(self.receive_buffer)
        self.switch_to_hub = switch_to_hub(self.hub)
        """Parks the calling greenlet (``upper.green.switch_to_hub``): one for every connection."""
        self.greenlets = ReusableGreenlets(self.hub)
        """Where plain connections run (``Connection._run_now``): greenlets are reused."""
        self.stats = ServerStats(counting=count_traffic)
        """With ``count_traffic`` false, lines and bytes are not counted and read 0 (the
        command line's choice when nothing reports them: ``cli.make_server``)."""
        self.metrics = metrics
        """A ``metrics.Exporter``, or None (no ``--metrics-port``)."""
        self.connections: set[Connection] = set()
        self.stopping = False
        self._acceptors_stopped = False
        """An acceptor stopped accepting (the limit, or out of descriptors): a close resumes it."""
        self.acceptors = [Acceptor(listener, self) for listener in listeners]
        self._all_closed = Event()
        self._all_closed.set()
        self._helpers: list[gevent.Greenlet] = []

    @property
    def address(self):
        """The first listening address (``(host, port)``; IPv6 has two more fields)."""
        return self.acceptors[0].address

    @property
    def addresses(self) -> list:
        return [acceptor.address for acceptor in self.acceptors]

    @property
    def address_text(self) -> str:
        """Every listening address, as the ready line shows them: ``127.0.0.1:5000 [::1]:5000``."""
        return " ".join(format_address(*address[:2]) for address in self.addresses)

    # -- lifecycle ------------------------------------------------------------

    def start(self) -> None:
        try:
            for acceptor in self.acceptors:
                acceptor.start()
        except BaseException:
            self.close()
            raise
        self._helpers.append(gevent.spawn(self._sweep))
        if self.stats_interval:
            self._helpers.append(gevent.spawn(self._log_stats))
        if self.metrics is not None:
            self._helpers.append(gevent.spawn(self._export_metrics))
        log.debug("serving on %s, at most %d connections", self.address_text, self.max_connections)

    def close(self) -> None:
        """Stop accepting and close the listening sockets; connections carry on."""
        for acceptor in self.acceptors:
            acceptor.close()

    def drain(self, interrupted: Event | None = None) -> None:
        """Stop accepting, let the sessions end on their own, then ``stop()``.

        The sessions get ``shutdown_timeout`` (or until ``interrupted`` is set)
        to end as their clients end them; those still open then get what
        ``stop()`` gives them. This is how a replaced worker leaves: a reload
        ends no session that finishes within the shutdown timeout.
        """
        self.close()
        waits = [self._all_closed] if interrupted is None else [self._all_closed, interrupted]
        gevent.wait(waits, count=1, timeout=self.shutdown_timeout)
        self.stop()

    def stop(self, timeout: float | None = None) -> None:
        """Stop accepting, let every connection finish cleanly, force-close stragglers."""
        if timeout is None:
            timeout = self.shutdown_timeout
        self.stopping = True
        self.close()
        for connection in list(self.connections):
            connection.interrupt(Interrupt.STOP)
        if not self._all_closed.wait(timeout):
            log.warning(
                "closing %d connection(s) still open after %ss", len(self.connections), timeout
            )
            for connection in list(self.connections):
                connection.interrupt(Interrupt.FORCE_CLOSE)
            self._all_closed.wait(1.0)
        for helper in self._helpers:
            helper.kill(block=False)
        self.greenlets.clear()
        if self.metrics is not None:
            self.metrics.export(self.stats)

    # -- connections ----------------------------------------------------------

    def full(self) -> bool:
        if len(self.connections) < self.max_connections:
            return False
        self._acceptors_stopped = True  # the acceptor stops accepting: see connection_closed
        return True

    def accepting_stopped(self) -> None:
        """An acceptor stopped accepting (out of descriptors): resume it at the next close."""
        self._acceptors_stopped = True

    def register(self, sock, address) -> None:
        """Take an accepted socket: count it and start its connection."""
        if self.proxy_protocol is not None and not self._may_send_proxy_headers(address[0]):
            # Only a trusted balancer may name the client: anyone else could claim any address.
            self.stats.proxy_rejected_source += 1
            log.info("%s: closed: not in --proxy-allow-from", format_address(*address[:2]))
            sock.close()
            return
        connection = self._connection_type(sock, address, self)
        self.connections.add(connection)
        self._all_closed.clear()
        self.stats.open_connections += 1
        self.stats.connections_served += 1
        if log.isEnabledFor(DEBUG):  # the peer's text is built only for a line that is logged
            log.debug("%s: connected", connection.peer)
        connection.start()

    def _may_send_proxy_headers(self, host: str) -> bool:
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return False
        return any(address in network for network in self.proxy_allow_from)

    def connection_closed(self, connection: Connection) -> None:
        self.connections.discard(connection)
        self.stats.open_connections -= 1
        if log.isEnabledFor(DEBUG):
            log.debug("%s: closed", connection.peer)
        if self.metrics is not None:
            self.metrics.session_ended(self.loop.now() - connection.opened_at)
        if not self.connections:
            self._all_closed.set()
        if self._acceptors_stopped and not self.stopping:
            self._acceptors_stopped = False
            for acceptor in self.acceptors:
                acceptor.resume()

    # -- housekeeping ---------------------------------------------------------

    def _sweep(self) -> None:
        """Give each connection the interrupt it is due (``connection.overdue``)."""
        interval = self.sweep_interval
        if self.idle_timeout:
            interval = min(interval, max(0.05, self.idle_timeout / 4))
        if self.proxy_protocol is not None:
            interval = min(interval, max(0.05, self.timeouts.proxy_header / 4))
        if self.ssl_context is not None:
            interval = min(interval, max(0.05, self.timeouts.handshake / 4))
        trimmed_at = float("-inf")
        while True:
            gevent.sleep(interval)
            now = self.loop.now()
            hibernating = self._sweep_once(now)
            if hibernating and now - trimmed_at >= self.trim_interval:
                # Let the interrupts give those greenlets back (parked in ReusableGreenlets,
                # at most 256 of them; the rest end), then hand the memory the connections
                # freed back: 2.8 -> 2.0 KiB per idle connection (10,000, measured with RSS
                # when hibernated greenlets still ended; not measured again since).
                gevent.sleep(0)
                release_freed_memory()
                trimmed_at = now

    def _sweep_once(self, now: float) -> int:
        """One round of the sweeper: each connection gets the interrupt it is due
        (``overdue``); the hibernations asked for."""
        timeouts = self.timeouts
        soonest = timeouts.soonest
        hibernating = 0
        # At C10K this runs for every connection twice a second: the common cases cost a
        # flag or a subtraction, not a call. Over connections quiet for 0 to 1.9 s (Tsung's
        # C10K), 1,423 instructions per connection instead of 2,527 with a call for each
        # (python -m benchmarks.loop_cost --loads sweep).
        for connection in list(self.connections):
            if connection.progressed:
                # Answered input since the last round, so due nothing yet.
                connection.progressed = False
                connection.active_at = now
                continue
            quiet_for = now - connection.active_at
            if quiet_for < soonest:
                continue
            interrupt = overdue(connection.state, quiet_for, timeouts, connection.hibernate_after)
            if interrupt is not None:
                connection.interrupt(interrupt)
                hibernating += interrupt is Interrupt.HIBERNATE
        return hibernating

    def _export_metrics(self) -> None:
        while True:
            gevent.sleep(EXPORT_INTERVAL)
            self.metrics.export(self.stats)

    def _log_stats(self) -> None:
        while True:
            gevent.sleep(self.stats_interval)
            log.info("stats: %s", self.stats.summary())
