"""``Acceptor``: gevent's accept loop on one listening socket, for an ``UpperServer``.

A server listens on one socket per address (``localhost`` is often two); each
has an ``Acceptor``, and all of them hand their connections to the same
server, which owns the limit, the connections and the shutdown.

Error handling: running out of descriptors (EMFILE, ENFILE, ...) is not an
error of the connection that was not accepted yet: the acceptor stops watching
its socket (no busy loop), logs once per burst, and retries after a back-off
that doubles from ``retry_min`` to ``retry_max``, or at once when the server
says a connection closed (``resume()``). A client that gave up before it was
accepted is skipped silently.
"""

import _socket
import errno
import logging
import socket

from gevent.server import StreamServer

from upper.protocol.address import format_address

log = logging.getLogger(__name__)

_OUT_OF_DESCRIPTORS = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}
_GAVE_UP = {errno.ECONNABORTED, errno.EPROTO, errno.EPERM}


class Acceptor(StreamServer):
    """Accepts on ``listener`` (a listening socket or an address) for ``owner``.

    ``owner`` provides ``full()``, ``register(sock, address)``, ``accepting_stopped()``
    (called when this acceptor stops accepting for want of descriptors; ``full()``
    returning True stops it too) and ``stats``.
    """

    backlog = 4096
    """Used when ``listener`` is an address; the CLI's sockets use the same."""
    reuse_addr = 1
    retry_min = 0.01
    retry_max = 1.0

    def __init__(self, listener, owner) -> None:
        self.owner = owner
        # gevent requires a handler. do_handle() below registers the connection in the
        # accept loop itself, instead of spawning a greenlet that would only do that.
        super().__init__(listener, handle=owner.register, spawn=None)
        # Asked before every accept: the owner's own method, as gevent does with a pool's.
        self.full = owner.full
        self._retry_delay = 0.0
        self._paused = False

    @property
    def address_text(self) -> str:
        return format_address(*self.address[:2])

    def do_read(self):
        try:
            fd, address = self.socket._accept()
        except BlockingIOError:
            return None
        except OSError as exc:
            if exc.errno in _OUT_OF_DESCRIPTORS:
                self._pause(exc)
                return None
            if exc.errno in _GAVE_UP:
                return None
            raise
        # The C-level socket type: the stdlib's Python wrapper only adds per-connection cost.
        # ``family`` is gevent's copy of the listener's: a stdlib listener's own ``family``
        # is a Python property that builds an enum member on every call.
        sock = _socket.socket(self.family, socket.SOCK_STREAM, 0, fd)
        sock.setblocking(False)
        # Replies go out as soon as they are ready; Nagle would hold a pipelined
        # client's replies back behind delayed ACKs (40 ms per round trip).
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self._paused:
            self._paused = False
            self._retry_delay = 0.0
            log.warning("accepting connections again on %s", self.address_text)
        return sock, address

    def do_handle(self, sock, address) -> None:
        # Registered right here, in the accept loop, so ``full()`` counts it at once.
        try:
            self.owner.register(sock, address)
        except BaseException:
            sock.close()
            raise

    def resume(self) -> None:
        """A slot or a descriptor just came free: accept again without waiting."""
        if self._watcher is None and (self._paused or self._timer is None):
            self.stop_accepting()
            self._start_accepting_if_started()

    def _pause(self, exc: OSError) -> None:
        """Out of descriptors: stop watching the listener for a while instead of spinning."""
        self.owner.stats.accept_errors += 1
        self.owner.accepting_stopped()
        if not self._paused:
            self._paused = True
            log.warning(
                "cannot accept on %s: %s; serving open connections, retrying",
                self.address_text,
                exc.strerror,
            )
        self._retry_delay = min(self.retry_max, max(self.retry_min, self._retry_delay * 2))
        self.stop_accepting()
        # gevent's own back-off timer slot: stop_accepting() and close() clear it.
        self._timer = self.loop.timer(self._retry_delay)
        self._timer.start(self._start_accepting_if_started)
