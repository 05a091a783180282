"""One client connection: the gevent I/O around an ``UpperSession``, as a state machine.

Theory of operation
===================

A connection is an accepted socket, its protocol state (``UpperSession``), one
I/O watcher, and, while it has work, a greenlet. The greenlet runs the loop
*receive, uppercase, send* until the session ends, then closes cleanly: FIN
first, then it reads and discards until the peer closes (the *linger*), so a
reset never destroys replies the client has not read yet.

Where the greenlet is parked is the connection's ``State``:

- ``STARTING``: spawned at the accept, not yet run (only a connection that opens
  with a PROXY header or a TLS handshake: any other starts ``HIBERNATING``).
- ``READING_PROXY_HEADER``: with ``--proxy-protocol``, waiting for the rest of
  the PROXY header that must open the connection (``_read_proxy_header``).
  Bounded by ``Timeouts.proxy_header`` from the accept; the bytes that follow
  the header go to the session first.
- ``HANDSHAKING``: a TLS connection waiting for its peer's side of the
  handshake (``upper.server.tls``). Nothing has been read that needs an answer,
  and the handshake timeout (``Timeouts.handshake``) alone bounds it.
- ``RUNNING``: between two waits (never seen from outside: see below).
- ``READING``: waiting for input on the read watcher. The receive loop sets it
  once and keeps it while it answers, since nobody can look while it runs.
- ``SENDING``: a reply did not fit in the socket buffer: waiting until the
  client reads. Nothing more is read meanwhile (backpressure).
- ``DRAINING``: FIN sent, discarding input until the peer closes (the linger).
  The greenlet was given back: hub callbacks (``_drain``) read and discard.
- ``HIBERNATING``: idle for a while, so the greenlet was given back (to the
  server's ``ReusableGreenlets``); only the socket, the watcher and the session
  remain. The first byte that arrives gives it a greenlet again, which carries on
  where the last one stopped. "A while" is the connection's own
  ``hibernate_after``, which doubles when a hibernation turns out short
  (``_wake``), so a client with a steady pace stops paying for it. A connection
  with no PROXY header and no handshake starts here: its first byte gives it its
  first greenlet (waiting for it is what ``READING`` would do, minus the greenlet).
- ``CLOSED``: the socket is closed and the server has forgotten it.

Seven *interrupts* come from outside (the server's shutdown and its sweeper):
``STOP``, ``IDLE_TIMEOUT``, ``HIBERNATE``, ``LINGER_END``, ``HEADER_TIMEOUT``,
``HANDSHAKE_TIMEOUT`` and ``FORCE_CLOSE``.
``TRANSITIONS`` says, for each state, what each of them does; it is the only
place that decides it. An interrupt is applied in a hub callback
(``Connection.interrupt``), where no greenlet runs, so the connection's
greenlet really is parked where ``state`` says; an ``Action`` that needs the
greenlet to act is thrown into it as ``ThrownAction`` (a connection without one,
``HIBERNATING`` or ``DRAINING``, is acted on right there, or given a greenlet).
``Connection._act`` is the one place that says what each action does.
``overdue()``, beside the table, is the sweeper's whole decision for one
connection. Every change of state goes through ``Connection._enter``, checked
against ``_SUCCESSORS`` (the states each state may be followed by), so a change
the design does not allow fails loudly instead of confusing the table.

Fairness: a client that sends as fast as it can keeps the read buffer full.
After ``Connection.reads_per_turn`` full reads in a row the greenlet parks on
its read watcher anyway; the watcher is level-triggered, so it wakes again on
the next turn of the event loop, after every other ready connection, timer and
signal handler has had its turn.

Resource handling: the socket and the watcher are closed exactly once, by
``_release()``, whatever ends the connection; a hibernating or draining
connection holds no greenlet. Error handling: a reset or broken pipe is the client's business
(logged at debug); any other error is counted in the stats and logged at
warning with the peer's address. No error leaves this module: one connection's
fault never reaches another.
"""

import enum
import logging
import socket
from dataclasses import dataclass

import gevent
from gevent import GreenletExit, getcurrent

from upper.green import READ, WRITE, watch
from upper.protocol import SessionState, UpperSession, fast_reply
from upper.protocol.address import format_address
from upper.protocol.proxy import ProxyHeaderError, ProxyHeaderParser
from upper.server.defaults import (
    HANDSHAKE_TIMEOUT,
    HIBERNATE_AFTER_MAX,
    PROXY_HEADER_TIMEOUT,
    READS_PER_TURN,
    RECV_SIZE,
)

log = logging.getLogger(__name__)

_LINE_START, _KEYWORD_ENDED = SessionState.LINE_START, SessionState.KEYWORD_ENDED


class State(enum.Enum):
    STARTING = "starting"
    READING_PROXY_HEADER = "reading the PROXY header"
    HANDSHAKING = "handshaking"
    RUNNING = "running"
    READING = "reading"
    SENDING = "sending"
    DRAINING = "draining"
    HIBERNATING = "hibernating"
    CLOSED = "closed"


class Interrupt(enum.Enum):
    STOP = "stop"  # the server shuts down gracefully
    IDLE_TIMEOUT = "idle timeout"  # no byte moved either way for --idle-timeout
    HIBERNATE = "hibernate"  # waited for input for a while: give the greenlet back
    LINGER_END = "linger end"  # the peer did not close within the linger after our FIN
    HEADER_TIMEOUT = "header timeout"  # no whole PROXY header within --proxy-header-timeout
    HANDSHAKE_TIMEOUT = "handshake timeout"  # no TLS session within --tls-handshake-timeout
    FORCE_CLOSE = "forced close"  # the shutdown timeout has passed


class Action(enum.Enum):
    IGNORE = "ignore"
    FINISH = "finish"  # answer what was read, then close cleanly
    FINISH_AFTER_REPLY = "finish after reply"  # the same, once the reply under way is sent
    CLOSE_IDLE = "close idle"  # FINISH, logged and counted as an idle timeout
    DROP = "drop"  # a reply nobody reads: close at once, counted as an idle timeout
    HIBERNATE = "hibernate"  # give the greenlet back, keep the connection
    END_LINGER = "end linger"  # stop waiting for the peer's close; close now
    REJECT = "reject"  # close now without a reply: the PROXY header or TLS handshake too slow
    ABORT = "abort"  # close now, whatever the state


A, S = Action, State
_COLUMNS = (
    Interrupt.STOP,
    Interrupt.IDLE_TIMEOUT,
    Interrupt.HIBERNATE,
    Interrupt.LINGER_END,
    Interrupt.HEADER_TIMEOUT,
    Interrupt.HANDSHAKE_TIMEOUT,
    Interrupt.FORCE_CLOSE,
)
_ROWS = {  # fmt: skip
    # state                  STOP                  IDLE_TIMEOUT  HIBERNATE    LINGER_END    HEADER_TIMEOUT HANDSHAKE_TIMEOUT FORCE_CLOSE
    S.STARTING:             (A.FINISH_AFTER_REPLY, A.IGNORE,     A.IGNORE,    A.IGNORE,     A.IGNORE,      A.IGNORE,         A.ABORT),
    # Nothing of the session is read yet: STOP closes at once; the header timeout,
    # not the idle one, bounds this state.
    S.READING_PROXY_HEADER: (A.FINISH,             A.IGNORE,     A.IGNORE,    A.IGNORE,     A.REJECT,      A.IGNORE,         A.ABORT),
    # The same for a TLS handshake, bounded by its own timeout.
    S.HANDSHAKING:          (A.FINISH,             A.IGNORE,     A.IGNORE,    A.IGNORE,     A.IGNORE,      A.REJECT,         A.ABORT),
    S.RUNNING:              (A.FINISH_AFTER_REPLY, A.IGNORE,     A.IGNORE,    A.IGNORE,     A.IGNORE,      A.IGNORE,         A.ABORT),
    S.READING:              (A.FINISH,             A.CLOSE_IDLE, A.HIBERNATE, A.IGNORE,     A.IGNORE,      A.IGNORE,         A.ABORT),
    # Never cut a reply short on STOP; a client that stops reading is dropped.
    S.SENDING:              (A.FINISH_AFTER_REPLY, A.DROP,       A.IGNORE,    A.IGNORE,     A.IGNORE,      A.IGNORE,         A.ABORT),
    # Every reply is out: the linger alone bounds this state, during a shutdown too.
    S.DRAINING:             (A.IGNORE,             A.IGNORE,     A.IGNORE,    A.END_LINGER, A.IGNORE,      A.IGNORE,         A.ABORT),
    S.HIBERNATING:          (A.FINISH,             A.CLOSE_IDLE, A.IGNORE,    A.IGNORE,     A.IGNORE,      A.IGNORE,         A.ABORT),
    S.CLOSED:               (A.IGNORE,             A.IGNORE,     A.IGNORE,    A.IGNORE,     A.IGNORE,      A.IGNORE,         A.IGNORE),
}
TRANSITIONS: dict[State, dict[Interrupt, Action]] = {
    state: dict(zip(_COLUMNS, row, strict=True)) for state, row in _ROWS.items()
}
"""What each interrupt does in each state: the one place that decides it."""
del A, S


# The members as module names, for what runs per connection, per interrupt or per sweep:
# on CPython 3.11 reading ``State.READING`` goes through ``EnumType.__getattr__``'s slot,
# about 950 instructions under callgrind, where a module global costs about 60.
STARTING = State.STARTING
READING_PROXY_HEADER = State.READING_PROXY_HEADER
HANDSHAKING = State.HANDSHAKING
RUNNING = State.RUNNING
READING = State.READING
SENDING = State.SENDING
DRAINING = State.DRAINING
HIBERNATING = State.HIBERNATING
CLOSED = State.CLOSED
IGNORE = Action.IGNORE
FINISH = Action.FINISH
FINISH_AFTER_REPLY = Action.FINISH_AFTER_REPLY
CLOSE_IDLE = Action.CLOSE_IDLE
DROP = Action.DROP
HIBERNATE = Action.HIBERNATE
END_LINGER = Action.END_LINGER
REJECT = Action.REJECT
ABORT = Action.ABORT


@dataclass(frozen=True, slots=True)
class Timeouts:
    """The sweeper's limits, in seconds; ``idle`` 0 means no idle timeout."""

    idle: float
    linger: float
    hibernate_after: float
    proxy_header: float = PROXY_HEADER_TIMEOUT
    handshake: float = HANDSHAKE_TIMEOUT
    """A TLS handshake's whole allowance (``HANDSHAKING`` makes no progress that counts: a
    peer sending one byte at a time must still finish in time)."""

    @property
    def soonest(self) -> float:
        """Nothing is due to a connection quiet for less (``overdue``), in any state: the
        sweeper skips those without asking. A connection's own wait before hibernating only
        grows from ``hibernate_after`` (``Connection._wake``). A test proves it against
        ``overdue`` (tests/test_connection_states.py)."""
        limits = (self.linger, self.hibernate_after, self.proxy_header, self.handshake)
        return min(*limits, self.idle) if self.idle else min(limits)


def overdue(
    state: State, quiet_for: float, timeouts: Timeouts, hibernate_after: float | None = None
) -> Interrupt | None:
    """The interrupt a connection in ``state`` is due, ``quiet_for`` seconds after it last
    made progress (any byte in either direction; for ``DRAINING``, since our FIN;
    for ``READING_PROXY_HEADER``, since the accept; for ``HANDSHAKING``, since the accept
    or the PROXY header). ``hibernate_after`` is the connection's own wait before it
    hibernates (``Connection._wake``), ``timeouts.hibernate_after`` if not given."""
    if state is READING_PROXY_HEADER:
        return Interrupt.HEADER_TIMEOUT if quiet_for >= timeouts.proxy_header else None
    if state is HANDSHAKING:
        return Interrupt.HANDSHAKE_TIMEOUT if quiet_for >= timeouts.handshake else None
    if state is DRAINING:
        return Interrupt.LINGER_END if quiet_for >= timeouts.linger else None
    if state in (READING, SENDING, HIBERNATING):
        if timeouts.idle and quiet_for >= timeouts.idle:
            return Interrupt.IDLE_TIMEOUT
    if hibernate_after is None:
        hibernate_after = timeouts.hibernate_after
    if state is READING and quiet_for >= hibernate_after:
        return Interrupt.HIBERNATE
    return None


class _Rejected(Exception):
    """Closed without a reply (a bad PROXY header, a refused TLS renegotiation): counted and
    logged where it was decided."""


class ThrownAction(Exception):
    """Thrown into a connection's greenlet (by ``Connection._apply``, for an ``Interrupt``):
    ``action`` is what it must do now (``Connection._act``)."""

    def __init__(self, action: Action) -> None:
        super().__init__(action.value)
        self.action = action


S = State
_SUCCESSORS: dict[State, tuple[State, ...]] = {
    S.STARTING: (S.RUNNING, S.HIBERNATING, S.CLOSED),
    S.READING_PROXY_HEADER: (S.RUNNING, S.CLOSED),
    S.HANDSHAKING: (S.RUNNING, S.CLOSED),
    S.RUNNING: (S.READING_PROXY_HEADER, S.HANDSHAKING, S.READING, S.SENDING, S.DRAINING, S.CLOSED),
    S.READING: (S.RUNNING, S.SENDING, S.HIBERNATING, S.CLOSED),
    S.SENDING: (S.RUNNING, S.READING, S.CLOSED),
    S.DRAINING: (S.CLOSED,),
    S.HIBERNATING: (S.RUNNING, S.CLOSED),
    S.CLOSED: (),
}
"""The states each state may be followed by (``Connection._enter`` checks every change)."""
for _state, _successors in _SUCCESSORS.items():
    # Also on each member: an Enum's hash is a Python call, a tuple's ``in`` compares
    # identities first, so _enter costs no hashing (several changes per connection).
    _state.successors = _successors
del S, _state, _successors

_WITHOUT_A_WAITING_GREENLET = (STARTING, HIBERNATING, DRAINING)
"""No greenlet is parked in a wait: an action is taken in the hub callback (or given a
greenlet: ``Connection._apply``)."""
_IN_THE_HUB = (FINISH_AFTER_REPLY, END_LINGER)
"""Actions that never need the greenlet."""


class Connection:
    """Serves one accepted socket until the session ends, then closes it cleanly."""

    reads_per_turn = READS_PER_TURN
    opens_with_a_handshake = False
    """A phase bounded by its own timeout from the accept (TLS) needs a greenlet at once."""
    fast_reply = staticmethod(fast_reply)
    """The session's fast path (``upper.protocol.fast_reply``), bound once by the receive
    loop: a subclass may measure another rule (``benchmarks/ablation.py``)."""
    _decrypt = None
    """The receive loop's decrypt hook: None for plain TCP (``TLSConnection._decrypt``)."""
    _encrypt = None
    """The send paths' encrypt hook: None for plain TCP (``TLSConnection._encrypt``)."""

    __slots__ = (
        "sock",
        "address",
        "_peer",
        "server",
        "session",
        "greenlet",
        "state",
        "active_at",
        "progressed",
        "opened_at",
        "finish_pending",
        "input_ended",
        "proxy_header",
        "hibernate_after",
        "_watcher",
    )

    def __init__(self, sock: socket.socket, address: tuple, server) -> None:
        self.sock = sock
        self.address = address
        """The client's address as accepted (``(host, port)``; IPv6 has two more fields)."""
        self._peer = None
        self.server = server
        self.session = UpperSession()
        self.greenlet = None
        self.state = STARTING
        """Where the connection is (see the module); changed only by ``_enter``."""
        self.active_at = self.opened_at = server.loop.now()
        """When a byte last moved either way (``DRAINING``: when our FIN left), as far as
        the sweeper knows: see ``progressed``."""
        self.progressed = False
        """Input was answered since the sweeper last looked. The receive loop sets this
        flag instead of reading the clock for every message; the sweeper turns it into
        ``active_at``, so a timeout can come up to one sweep interval late, never early."""
        self.finish_pending = server.stopping
        """Finish instead of waiting for more input (``Action.FINISH_AFTER_REPLY``, or a TLS
        close_notify)."""
        self.input_ended = False
        """The peer's end of stream (its FIN) has been read: ``_close_cleanly`` needs no linger."""
        self.proxy_header = (
            ProxyHeaderParser(server.proxy_protocol) if server.proxy_protocol else None
        )
        """The PROXY header's parser until the header is read, then None."""
        self.hibernate_after = server.timeouts.hibernate_after
        """Seconds in ``READING`` before this connection hibernates (``_wake`` adapts it)."""
        self._watcher = server.loop.io(sock.fileno(), READ)

    @property
    def peer(self) -> str:
        """The client, as log lines name it: ``HOST:PORT`` of the socket's address, or of the
        one a PROXY header gave. Formatted when first needed: most connections log nothing."""
        if self._peer is None:
            self._peer = format_address(*self.address[:2])
        return self._peer

    def _enter(self, state: State) -> None:
        """Change ``state``, checked against ``_SUCCESSORS`` (staying where it is is no change)."""
        if state is not self.state and state not in self.state.successors:
            raise RuntimeError(f"{self.peer}: no transition from {self.state.name} to {state.name}")
        self.state = state

    # -- control, from the server (any greenlet) -----------------------------

    def start(self) -> None:
        if self.proxy_header is None and not self.opens_with_a_handshake:
            # Nothing to do before the first byte: wait for it as a hibernating connection
            # does, with no greenlet (``_first_input`` gives it one), under the same idle
            # timeout.
            self._enter(HIBERNATING)
            self._watcher.start(self._first_input)
        else:
            self.greenlet = gevent.spawn_raw(self._run, None, False)

    def interrupt(self, interrupt: Interrupt) -> None:
        """Apply ``interrupt`` as ``TRANSITIONS`` says, in a hub callback (see the module)."""
        self.server.loop.run_callback(self._apply, interrupt)

    def _apply(self, interrupt: Interrupt) -> None:
        """Where ``TRANSITIONS``' action is taken: here in the hub, in the greenlet parked in a
        wait (thrown in as ``ThrownAction``), or in a greenlet given to a hibernating one."""
        state = self.state
        action = TRANSITIONS[state][interrupt]
        if action is IGNORE:
            return
        if action in _IN_THE_HUB or (action is ABORT and state in _WITHOUT_A_WAITING_GREENLET):
            if state is STARTING and action is ABORT:
                # GreenletExit kills a greenlet that never ran without running it.
                self.greenlet.throw(GreenletExit)
            self._act(action)
        elif state is HIBERNATING:
            self._watcher.stop()
            self._run_now(action, False)
        else:
            self.greenlet.throw(ThrownAction(action))

    def _act(self, action: Action) -> None:
        """What each ``Action`` means: the one dispatch, in the state the interrupt found.

        ``FINISH_AFTER_REPLY``, ``END_LINGER`` and an ``ABORT`` without a waiting greenlet
        run in the hub callback (``_apply``); every other action runs in the connection's
        greenlet, and may itself be interrupted (``_run`` dispatches that action in turn).
        """
        if action is FINISH_AFTER_REPLY:
            self.finish_pending = True  # read where the greenlet waited: STARTING, SENDING
        elif action is FINISH or action is CLOSE_IDLE:
            if action is CLOSE_IDLE:
                self.server.stats.idle_timeouts += 1
                log.info("%s: closed after %ss idle", self.peer, self.server.idle_timeout)
            self._enter(RUNNING)
            # Whatever the session still holds back was read: it gets its reply. The idle
            # clock restarts, so a client that does not read it is dropped in turn.
            self.active_at = self.server.loop.now()
            self._send_all(self.session.end_of_input())
            self._close_cleanly()
        elif action is DROP:
            self.server.stats.idle_timeouts += 1
            log.info("%s: dropped, replies unread for %ss", self.peer, self.server.idle_timeout)
            self._release()
        elif action is HIBERNATE:
            self._hibernate()
        elif action is REJECT:
            self._reject()
            self._release()
        elif action is END_LINGER:
            log.debug("%s: peer did not close within %ss", self.peer, self.server.linger_timeout)
            self._release()
        elif action is ABORT:
            log.info("%s: closed at the shutdown timeout", self.peer)
            self._release()

    def _reject(self) -> None:
        """``Action.REJECT``: the phase bounded from the accept took too long (counted, logged)."""
        self.server.stats.proxy_rejected_timeout += 1
        timeout = self.server.timeouts.proxy_header
        log.info("%s: closed: no whole PROXY header within %ss", self.peer, timeout)

    def _first_input(self) -> None:
        """The first input of a connection that started without a greenlet (a hub callback)."""
        self._watcher.stop()
        self._run_now(None, True)

    def _wake(self) -> None:
        """Input arrived for a hibernating connection (a hub callback).

        A hibernation and its wake-up cost a throw into the greenlet, a rebuilt receive
        loop and about ten objects that the cyclic collector walks while they live: worth
        it for a connection that then stays silent, not for a client that speaks every
        2 s. 10,000 of those (Tsung) cost 68-73 µs of server CPU per line with a fixed
        1 s wait, p99 41-49 ms (collector pauses of up to 50 ms); 35-41 µs and p99 6-10
        ms with this rule (docs/performance.md, "Hibernation that pays"). So a connection
        woken before it was quiet for twice its wait (asleep for less time than it
        waited) waits twice as long next time, up to ``HIBERNATE_AFTER_MAX``; one that
        slept longer starts over from the server's wait.
        """
        self._watcher.stop()
        base = self.server.timeouts.hibernate_after
        if self.server.loop.now() - self.active_at < 2 * self.hibernate_after:
            self.hibernate_after = min(2 * self.hibernate_after, max(base, HIBERNATE_AFTER_MAX))
        else:
            self.hibernate_after = base
        self._run_now(None, True)

    def _run_now(self, action: Action | None, input_ready: bool) -> None:
        """From a hub callback: ``_run`` in a greenlet at once, until it first waits.

        One of the server's ``ReusableGreenlets`` (a parked one, or a new one), switched
        to from here, not ``spawn_raw``: that one is run by one more hub callback, and
        records the spawning greenlet and its tree-locals (a dict, a weakref and a caught
        AttributeError per greenlet), for debugging aids this server does not use. The
        greenlet's parent is the hub, as ``spawn_raw``'s.
        """
        self.server.greenlets.run(self._run, action, input_ready)

    # -- the connection's greenlet --------------------------------------------

    def _run(self, action: Action | None, input_ready: bool) -> None:
        """The greenlet's work: serve (``action`` None) or act; every action thrown in while
        it waits is dispatched by ``_act`` in turn."""
        self.greenlet = getcurrent()
        self._enter(RUNNING)
        try:
            while True:
                try:
                    if action is None:
                        # Serve: open (a PROXY header; TLS: the handshake), answer, close.
                        if self.proxy_header is None or self._read_proxy_header():
                            self._answer(input_ready)
                        self._close_cleanly()
                    else:
                        self._act(action)
                    break
                except ThrownAction as thrown:
                    action = thrown.action
        except _Rejected:
            pass  # counted and logged where it was decided; closed without a reply
        except OSError as exc:
            self._socket_failed(exc)
        except Exception:
            self.server.stats.errors += 1
            log.warning("%s: connection failed", self.peer, exc_info=True)
        finally:
            # A hibernating or draining connection goes on without its greenlet.
            if self.greenlet is not None:
                self._release()

    def _socket_failed(self, exc: OSError) -> None:
        if isinstance(exc, (ConnectionResetError, BrokenPipeError)):
            log.debug("%s: connection lost: %s", self.peer, exc)
        else:
            self.server.stats.errors += 1
            log.warning("%s: socket error: %s", self.peer, exc)

    def _hibernate(self) -> None:
        self.greenlet = None
        self._enter(HIBERNATING)
        watch(self._watcher, READ, self._wake)

    def _release(self) -> None:
        if self.state is CLOSED:
            return
        self._enter(CLOSED)
        self._watcher.stop()
        self._watcher.close()
        self.sock.close()
        self.greenlet = None
        self.server.connection_closed(self)

    def _receive(self) -> int:
        """Park until input comes, read it into the server's buffer: its size (0 at the peer's
        EOF). For the opening phases; the receive loop (``_answer``) waits and reads inline."""
        wait = self.server.switch_to_hub
        recv_into = self.sock.recv_into
        buffer = self.server.receive_buffer
        while True:
            wait()
            try:
                return recv_into(buffer)
            except BlockingIOError:
                continue

    def _read_proxy_header(self) -> bool:
        """Read the PROXY header; the client it names becomes ``peer``. Whether the session
        goes on: the bytes after the header are answered first, and may end it.

        Raises ``_Rejected`` (counted, logged once at info) for a missing or malformed
        header; one too late is ``Action.REJECT`` (``_reject``).
        """
        parser = self.proxy_header
        watch(self._watcher, READ, self.greenlet.switch)
        self._enter(READING_PROXY_HEADER)
        header = None
        try:
            while header is None:
                size = self._receive()
                if not size:
                    raise ProxyHeaderError("the connection ended before a whole PROXY header")
                header = parser.feed(self.server.receive_view[:size].tobytes())
        except ProxyHeaderError as exc:
            self.server.stats.proxy_rejected_invalid += 1
            log.info("%s: closed: %s", self.peer, exc)
            raise _Rejected from None
        self._enter(RUNNING)
        self.proxy_header = None
        if header.source is not None:  # LOCAL and UNKNOWN: the socket's address stands
            self._peer = format_address(*header.source)
        log.debug("%s: PROXY v%d %s", self.peer, header.version, header.command)
        self.active_at = self.server.loop.now()
        return self._take_leftover(header.leftover)

    def _take_leftover(self, leftover: bytes) -> bool:
        """The bytes that came after the PROXY header are the session's first input (over
        TLS, the handshake's: ``TLSConnection``). Whether the session goes on."""
        return not (leftover and self._answer_input(leftover))

    def _answer_input(self, data: bytes) -> bool:
        """Answer input read outside the receive loop (after a PROXY header, with a TLS
        handshake) as the loop's general path does; whether the session ended."""
        self.server.stats.received(data)
        self._send_all(self.session.feed(data))
        return self.session.ended

    def _answer(self, input_ready: bool) -> None:
        """The receive, uppercase, send loop, until the session ends or must finish.

        The one loop for plain TCP and TLS: ``_decrypt`` turns what was read into the
        plaintext of its whole records, ``_encrypt`` a reply into records (both None for
        plain TCP, which pays one test for each and no call).
        """
        session = self.session
        stats = self.server.stats
        wait = self.server.switch_to_hub
        # One buffer per server, reused: recv(64 KiB) would allocate 64 KiB and
        # shrink it for every 16-byte line. The hub runs one greenlet at a time,
        # and each copies its bytes out before it can be switched away from.
        buffer = self.server.receive_buffer
        received = self.server.receive_view
        recv_into = self.sock.recv_into
        send = self.sock.send
        fast_reply = self.fast_reply
        feed = session.feed_general
        line_start, keyword_ended = _LINE_START, _KEYWORD_ENDED
        # Only feeding changes it: a local, so the session is not looked at per message.
        fast = session.state is line_start
        decrypt, encrypt = self._decrypt, self._encrypt
        reads_per_turn = self.reads_per_turn
        counting = stats.counting
        full_reads = 0
        watch(self._watcher, READ, self.greenlet.switch)
        # The loop waits only in wait() (READING) and in _send_rest (SENDING, which puts
        # READING back): the state is set once, not twice per message.
        self._enter(READING)
        # finish_pending is set only while this greenlet waits in STARTING or SENDING
        # (TRANSITIONS), or by _decrypt: it is read before the loop, after _send_rest and
        # after _decrypt, not per read.
        finishing = self.finish_pending
        while not finishing:
            if not input_ready:
                wait()
                full_reads = 0
            try:
                size = recv_into(buffer)
            except BlockingIOError:
                input_ready = False
                continue
            if not size:
                self.input_ended = True
                break
            self.progressed = True
            # A full buffer means the client is probably ahead of us: read again at once,
            # but only a few times in a row (fairness: see the module's docstring).
            if size == RECV_SIZE:
                full_reads += 1
                input_ready = full_reads < reads_per_turn
            else:
                input_ready = False
            if decrypt is None:
                data = received[:size].tobytes()
            else:
                data = decrypt(received[:size])
                finishing = self.finish_pending  # close_notify: answer this, then finish
                if not data:
                    continue
                size = len(data)
            # The fast path (upper.protocol.fast_reply) at a clean line start: one Python
            # call (a bare one is about 370 instructions under callgrind: docs/performance.md).
            if fast and (reply := fast_reply(data)) is not None:
                length = size
            else:
                reply = feed(data)
                state = session.state
                if state is keyword_ended:
                    stats.received(data)
                    self._enter(RUNNING)
                    self._send_all(reply)
                    return
                fast = state is line_start
                length = len(reply)
                if counting and length != size:
                    stats.bytes_unsent += size - length  # held back, or resized by uppercase
            if counting:
                # The counters of what goes out are derived from these (ServerStats): until
                # the session ends, a reply has exactly the lines of its input.
                stats.bytes_in += size
                stats.lines_in += data.count(b"\n")
            if length:
                if encrypt is None:
                    wire = reply
                else:
                    wire = encrypt(reply)
                    length = len(wire)
                try:
                    sent = send(wire)
                except BlockingIOError:
                    sent = 0
                if sent != length:
                    stats.waiting(reply)  # not counted as sent until the client has read it all
                    self._send_rest(wire, sent)
                    stats.sent(reply)
                    finishing = self.finish_pending
        self._enter(RUNNING)
        self._send_all(session.end_of_input())

    def _send_all(self, data: bytes) -> None:
        """Send a reply outside the loop's fast path: encrypted (TLS), counted as sent."""
        if data:
            self._send_rest(data if self._encrypt is None else self._encrypt(data), 0)
            self.server.stats.sent(data)

    def _send_rest(self, data: bytes, sent: int, waiting: State = SENDING) -> None:
        """Send ``data[sent:]`` (bytes for the wire), parking this greenlet (only), in state
        ``waiting``, while the client is not reading; the state before is put back after.

        This is the backpressure: nothing more is read meanwhile, so a client that
        does not read its replies cannot make the server buffer them. The watcher
        turns to writing only if the kernel does not take it all at once. Every send
        counts as activity for the idle timeout, except a handshake's (``HANDSHAKING`` is
        bounded from the accept: ``Timeouts.handshake``).
        """
        view = memoryview(data)[sent:]
        wait = self.server.switch_to_hub
        progress = waiting is SENDING
        before = None
        try:
            while view:
                try:
                    sent = self.sock.send(view)
                except BlockingIOError:
                    sent = 0
                if sent:
                    view = view[sent:]
                    if progress:
                        self.active_at = self.server.loop.now()
                    continue
                if before is None:
                    before = self.state
                    watch(self._watcher, WRITE, self.greenlet.switch)
                    self._enter(waiting)
                wait()
        finally:
            if before is not None:
                watch(self._watcher, READ, self.greenlet.switch)
        if before is not None:
            self._enter(before)

    def _close_cleanly(self) -> None:
        """FIN first, then read and discard until the peer closes: never an RST over replies.

        Closing a socket with unread input makes Linux send an RST, which can destroy
        replies the client has not read yet. The drain needs no greenlet: this one is given
        back, and ``_drain`` reads in hub callbacks until the peer's EOF. The sweeper
        bounds the drain with the linger timeout (``overdue``), during a shutdown too.

        A peer whose EOF was read already (a filter, ``nc -N``) can send nothing more:
        there is nothing to drain, and ``_release`` closes at once, with a FIN.
        """
        if self.input_ended:
            return
        try:
            self.sock.shutdown(socket.SHUT_WR)
        except OSError:
            return
        self.active_at = self.server.loop.now()
        self.progressed = False  # the linger counts from the FIN, not from the last reply
        # The peer needs a moment to read our FIN and answer it: wait first.
        watch(self._watcher, READ, self._drain)
        self.greenlet = None
        self._enter(DRAINING)

    def _drain(self) -> None:
        """Input while ``DRAINING`` (a hub callback): discard it; close at the peer's EOF.

        One read per wake-up, so a peer that floods us here gets no more than its turn. It
        reads into the server's receive buffer: ``recv(n)`` would allocate ``n`` bytes (and
        shrink them) only to throw them away.
        """
        try:
            if self.sock.recv_into(self.server.receive_buffer):
                return
        except BlockingIOError:
            return
        except OSError as exc:
            self._socket_failed(exc)
        self._release()
