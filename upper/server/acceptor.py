"""``Acceptor``: the accept loop on one listening socket, for an ``UpperServer``.

A server listens on one socket per address (``localhost`` is often two); each
has an ``Acceptor``, and all of them hand their connections to the same
server, which owns the limit, the connections and the shutdown.

The acceptor owns its watcher: one read I/O watcher from the hub's loop on the
listening socket, whose callback accepts until the socket has no connection
waiting, at most ``max_accept`` per wake-up so that the connections already
served get their turn (gevent's ``StreamServer`` does the same). Only public
gevent calls are used (``loop.io``, ``loop.timer``, a watcher's ``start``,
``stop`` and ``close``): the states below are this module's, not gevent's.

States (``Accepting``), each with the one way out of it:

- ``IDLE``: made, not started (``start()``);
- ``ACCEPTING``: the watcher is on;
- ``FULL``: the server is at its connection limit; the watcher is off until
  the server says a connection closed (``resume()``);
- ``PAUSED``: accept failed (out of descriptors, or an unexpected error); the
  watcher is off until the back-off timer fires or ``resume()``;
- ``CLOSED``: the socket is closed (``close()``); nothing leaves it.

Error handling: running out of descriptors (EMFILE, ENFILE, ...) is not an
error of the connection that was not accepted yet: the acceptor stops watching
its socket (no busy loop), logs once per burst, and retries after a back-off
that doubles from ``retry_min`` to ``retry_max``, or at once when the server
says a connection closed. A client that gave up before it was accepted is
skipped silently. A listening socket that is no longer one (EBADF, ENOTSOCK,
EINVAL) closes the acceptor with one error line; any other error backs off.
"""

import _socket
import enum
import errno
import logging
import socket

import gevent

from upper.green import READ
from upper.protocol.address import format_address
from upper.server.listener import listening_socket

log = logging.getLogger(__name__)

_OUT_OF_DESCRIPTORS = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}
_GAVE_UP = {errno.ECONNABORTED, errno.EPROTO, errno.EPERM}
_NOT_A_LISTENER = {errno.EBADF, errno.ENOTSOCK, errno.EINVAL}


class Accepting(enum.Enum):
    IDLE = "idle"
    ACCEPTING = "accepting"
    FULL = "full"
    PAUSED = "paused"
    CLOSED = "closed"


class Acceptor:
    """Accepts on ``listener`` (a listening socket, or an address to listen on at
    ``start()``) for ``owner``.

    ``owner`` provides ``full()``, ``register(sock, address)``, ``accepting_stopped()``
    (called when this acceptor stops accepting for want of descriptors; ``full()``
    returning True stops it too) and ``stats``.
    """

    backlog = 4096
    """Used when ``listener`` is an address; the CLI's sockets use the same."""
    max_accept = 100
    """Accepts per wake-up, at most: then the loop runs everything else that is ready."""
    retry_min = 0.01
    retry_max = 1.0

    def __init__(self, listener, owner) -> None:
        self.owner = owner
        self.loop = gevent.get_hub().loop
        if isinstance(listener, tuple):
            self.socket = None
            self.address = listener
            self.family = socket.AF_INET6 if ":" in listener[0] else socket.AF_INET
        else:
            if not isinstance(listener, _socket.socket):
                # A cooperative (gevent) socket: accept on the plain socket under it.
                listener = socket.socket(
                    listener.family, listener.type, listener.proto, listener.detach()
                )
            self.socket = listener
            self.address = listener.getsockname()
            # Kept as a plain int: the stdlib socket's ``family`` builds an enum on every call.
            self.family = int(listener.family)
        self.state = Accepting.IDLE
        self._watcher = None
        self._timer = None
        self._spent_timer = None
        """The timer that last fired: gevent still uses it after its callback returns."""
        self._retry_delay = 0.0
        self._failing = False
        """Accepting failed since the last success: "accepting again" is logged when it clears."""

    @property
    def address_text(self) -> str:
        return format_address(*self.address[:2])

    # -- lifecycle ------------------------------------------------------------

    def start(self) -> None:
        """Listen (for an address) and start accepting."""
        if self.state is not Accepting.IDLE:
            raise RuntimeError(f"cannot start an acceptor that is {self.state.value}")
        if self.socket is None:
            self.socket = listening_socket(
                self.family, socket.SOCK_STREAM, 0, self.address, self.backlog
            )
            self.address = self.socket.getsockname()
        self.socket.setblocking(False)
        self._watcher = self.loop.io(self.socket.fileno(), READ)
        self._enter(Accepting.ACCEPTING)

    def close(self) -> None:
        """Stop accepting and close the listening socket (connections carry on)."""
        if self.state is Accepting.CLOSED:
            return
        self._enter(Accepting.CLOSED)
        if self._watcher is not None:
            self._watcher.close()
            self._watcher = None
        if self.socket is not None:
            self.socket.close()

    def resume(self) -> None:
        """A slot or a descriptor just came free: accept again without waiting."""
        if self.state in (Accepting.FULL, Accepting.PAUSED):
            self._enter(Accepting.ACCEPTING)

    # -- states ---------------------------------------------------------------

    _SUCCESSORS = {
        Accepting.IDLE: {Accepting.ACCEPTING, Accepting.CLOSED},
        Accepting.ACCEPTING: {Accepting.FULL, Accepting.PAUSED, Accepting.CLOSED},
        Accepting.FULL: {Accepting.ACCEPTING, Accepting.CLOSED},
        Accepting.PAUSED: {Accepting.ACCEPTING, Accepting.CLOSED},
        Accepting.CLOSED: set(),
    }

    def _enter(self, state: Accepting) -> None:
        """The one place the watcher and the timer are turned on and off."""
        assert state in self._SUCCESSORS[self.state], f"{self.state} -> {state}"
        self.state = state
        if self._timer is not None:
            self._timer.close()
            self._timer = None
        if state is Accepting.ACCEPTING:
            self._watcher.start(self._accept_ready)
            return
        if self._watcher is not None:
            self._watcher.stop()
        if self._spent_timer is not None:
            self._spent_timer.close()
            self._spent_timer = None
        if state is Accepting.PAUSED:
            self._timer = self.loop.timer(self._retry_delay)
            self._timer.start(self._retry)

    def _retry(self) -> None:
        """The back-off timer fired: accept again."""
        self._spent_timer, self._timer = self._timer, None
        self.resume()

    # -- accepting ------------------------------------------------------------

    def _accept_ready(self) -> None:
        """The watcher's callback, in the hub: accept what is waiting, up to ``max_accept``."""
        for _ in range(self.max_accept):
            if self.owner.full():
                self._enter(Accepting.FULL)
                return
            try:
                fd, address = self.socket._accept()
            except BlockingIOError:
                return
            except OSError as exc:
                if exc.errno in _GAVE_UP:
                    continue
                self._accept_failed(exc)
                return
            self._take(fd, address)
            if self.state is not Accepting.ACCEPTING:
                return  # registering failed, or stopped the server

    def _take(self, fd: int, address) -> None:
        """Hand the accepted ``fd`` to the owner (a failure there is a bug: logged, backed off)."""
        # The C-level socket type: the stdlib's Python wrapper only adds per-connection cost.
        sock = _socket.socket(self.family, socket.SOCK_STREAM, 0, fd)
        sock.setblocking(False)
        if self._failing:
            self._failing = False
            self._retry_delay = 0.0
            log.warning("accepting connections again on %s", self.address_text)
        try:
            # Replies go out as soon as they are ready; Nagle would hold a pipelined
            # client's replies back behind delayed ACKs (40 ms per round trip).
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            # Registered right here, in the accept loop, so ``full()`` counts it at once.
            self.owner.register(sock, address)
        except Exception:
            sock.close()
            log.exception("%s: cannot serve a new connection", self.address_text)
            self._back_off()

    def _accept_failed(self, exc: OSError) -> None:
        if exc.errno in _OUT_OF_DESCRIPTORS:
            self.owner.stats.accept_errors += 1
            self.owner.accepting_stopped()
            if not self._failing:  # once per burst
                log.warning(
                    "cannot accept on %s: %s; serving open connections, retrying",
                    self.address_text,
                    exc.strerror,
                )
            self._back_off()
        elif exc.errno in _NOT_A_LISTENER:
            log.error("cannot accept on %s: %s; no longer accepting", self.address_text, exc)
            self.close()
        else:
            self.owner.stats.accept_errors += 1
            log.warning("cannot accept on %s: %s; retrying", self.address_text, exc)
            self._back_off()

    def _back_off(self) -> None:
        """Stop watching the listener for a while (doubling) instead of spinning."""
        self._failing = True
        self._retry_delay = min(self.retry_max, max(self.retry_min, self._retry_delay * 2))
        self._enter(Accepting.PAUSED)
