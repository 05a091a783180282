"""The client's round trips under gevent, without gevent's per-call machinery.

When the standard library is monkey-patched (as inside Locust), the client's
socket is gevent's, whose ``send()`` and ``recv()`` are general-purpose: every
wait builds a ``Waiter`` and a ``gevent.Timeout``, and every call is first tried
so as to catch EAGAIN. A line protocol driven by many greenlets pays that on
every message, so for a socket in this state :class:`Cooperative` does less:

- **Lines leave in bursts.** A line waits in its hub's :class:`Outbox` and is sent
  by one callback together with the lines of every greenlet that ran in the same
  loop iteration. The greenlet never switches just to send, and a busy server
  is woken once per burst instead of once per line.
- **Waiting is one watcher.** The greenlet parks on its socket's read watcher,
  whose callback is the greenlet's own ``switch``.
- **The timeout costs nothing per message.** One timer per connection is
  re-armed only when it fires (at most once per timeout period while waits go
  on), never per wait; it still fires no later than each wait's deadline.

It behaves like the blocking calls it replaces: the same bytes, ``TimeoutError``
after the socket's timeout, ``OSError`` on errors, and a waiting greenlet can be
killed. Like gevent's own calls, it refuses to be used by a second greenlet while
one waits (``ConcurrentObjectUseError``) or from the hub (``BlockingSwitchOutError``),
and it refuses before sending anything, so the connection stays in step.
"""

import sys
import weakref
from time import perf_counter

from upper.green import switch_to_hub

RECV_SIZE = 64 * 1024
"""Under glibc's mmap threshold: a larger buffer costs an mmap/munmap per read."""
LONGEST_UPPERCASE = 3
"""A reply is at most 3 times as long as its line in UTF-8 (``ΰ`` -> ``Ϋ́``)."""

_SEND_INCOMPLETE = object()


class SendIncomplete(Exception):
    """The outbox could not send the whole line; ``rest`` is what is left to send."""

    def __init__(self, rest: bytes) -> None:
        super().__init__(rest)
        self.rest = rest


class Outbox:
    """A hub's connections with a line to send, sent by one callback per loop iteration.

    A connection appends itself to ``queued`` and calls ``schedule()`` when it
    finds the list empty.
    """

    __slots__ = ("queued", "_run_callback")

    def __init__(self, loop) -> None:
        self.queued: list[Cooperative] = []
        self._run_callback = loop.run_callback

    def schedule(self) -> None:
        self._run_callback(self._flush)

    def _flush(self) -> None:
        # Lines queued while this runs (a woken sender sending again) go in the
        # next burst: the list is copied and emptied, never replaced.
        queued = self.queued[:]
        self.queued.clear()
        for cooperative in queued:
            cooperative.send_queued()


class Cooperative:
    """Round trips on one gevent socket (see the module's docstring)."""

    __slots__ = (
        "sock",
        "sent_at",
        "_raw",
        "_watcher",
        "_hub",
        "_loop",
        "_getcurrent",
        "_to_hub",
        "_queued",
        "_schedule_flush",
        "_timeout",
        "_timer",
        "_spent_timer",
        "_line",
        "_since",
        "_waiter",
        "refusals",
        "_concurrent_use",
        "_blocking_switch_out",
    )

    _outboxes: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()  # hub -> its Outbox

    def __init__(self, sock, raw, watcher, hub, greenlet_module, exceptions) -> None:
        self.sock = sock
        self.sent_at = 0.0
        """``perf_counter()`` when the last queued line was handed to the kernel."""
        self._raw = raw
        self._watcher = watcher
        self._hub = hub
        self._loop = hub.loop
        self._getcurrent = greenlet_module.getcurrent
        self._to_hub = switch_to_hub(hub)
        outbox = self._outboxes.get(hub)
        if outbox is None:
            outbox = self._outboxes[hub] = Outbox(hub.loop)
        self._queued = outbox.queued
        self._schedule_flush = outbox.schedule
        self._timeout = sock.timeout
        self._timer = None
        # The timer that last fired, kept alive until the next one fires: it is
        # replaced from its own callback, which gevent still uses after returning.
        self._spent_timer = None
        self._line = None  # queued in the outbox, not sent yet
        self._since = None  # perf_counter() when the current wait began; None: not waiting
        self._waiter = None  # the greenlet parked on the watcher
        self._concurrent_use = exceptions.ConcurrentObjectUseError
        self._blocking_switch_out = exceptions.BlockingSwitchOutError
        self.refusals = (self._concurrent_use, self._blocking_switch_out)
        """What ``round_trip()`` and ``recv()`` raise, having sent nothing, when they can't wait."""

    @classmethod
    def of(cls, sock) -> "Cooperative | None":
        """The fast path for ``sock`` if it is a blocking gevent socket, else ``None``."""
        gevent_socket = sys.modules.get("gevent.socket")
        if gevent_socket is None or not isinstance(sock, gevent_socket.socket):
            return None
        timeout = sock.timeout
        if timeout is not None and timeout <= 0:
            return None  # non-blocking: there is nothing to wait for
        try:
            raw, watcher, hub = sock._sock, sock._read_event, sock.hub
            greenlet_module = sys.modules["greenlet"]
            exceptions = sys.modules["gevent.exceptions"]
            hub.loop.run_callback, hub.loop.timer, watcher.callback  # noqa: B018 (relied on)
            exceptions.ConcurrentObjectUseError, exceptions.BlockingSwitchOutError  # noqa: B018
        except (AttributeError, KeyError):  # a gevent whose internals differ
            return None
        return cls(sock, raw, watcher, hub, greenlet_module, exceptions)

    # -- the two operations ---------------------------------------------------------

    def round_trip(self, line: bytes) -> bytes:
        """Send ``line`` with the next burst and return the first bytes of the reply.

        Raises :class:`SendIncomplete` when the line could not be sent whole
        (the caller sends the rest the ordinary way), ``OSError`` when the
        connection fails, ``TimeoutError`` when no reply comes in time, and one
        of ``refusals`` (nothing sent) when it cannot wait from here.
        """
        current = self._getcurrent()
        if current is self._hub or self._watcher.callback is not None:
            self._refuse(current)
        self._line = line
        queued = self._queued
        if not queued:
            self._schedule_flush()
        queued.append(self)
        # Asking for no more than the reply can be spares allocating (then
        # shrinking) a 64 KiB buffer for every 30-byte reply.
        return self._wait_and_recv(current, None, LONGEST_UPPERCASE * len(line))

    def recv(self) -> bytes:
        """Wait for input and return it (``b""`` when the server has closed)."""
        current = self._getcurrent()
        if current is self._hub or self._watcher.callback is not None:
            self._refuse(current)
        return self._wait_and_recv(current, perf_counter(), RECV_SIZE)

    def send_queued(self) -> None:
        """Called by the outbox: send the queued line, or wake its sender if it can't."""
        line = self._line
        if line is None:
            return  # cancelled: the connection was closed, or its greenlet killed
        self._line = None
        self.sent_at = self._since = perf_counter()
        try:
            sent = self._raw.send(line)
        except OSError:
            sent = 0
        if sent < len(line):
            # Rare (the server is not reading, or the connection failed): hand the
            # rest back to the greenlet, which sends it with a blocking send and so
            # reports errors as any send does.
            self._line = line[sent:]
            self._watcher.stop()
            self._waiter.switch(_SEND_INCOMPLETE)

    def close(self) -> None:
        """Stop the timer and forget any queued line (the socket is closed by its owner)."""
        self._line = None
        self._since = None
        if self._timer is not None:
            self._timer.close()
            self._timer = None
        self._spent_timer = None

    # -- waiting ------------------------------------------------------------------

    def _refuse(self, current) -> None:
        if current is self._hub:
            raise self._blocking_switch_out(
                "UpperClient cannot wait for a reply from the hub (an event loop callback)"
            )
        raise self._concurrent_use(
            f"this connection is already used by another greenlet: {self._watcher.callback!r}"
        )

    def _wait_and_recv(self, current, since, size: int) -> bytes:
        self._since = since
        self._waiter = current
        if self._timer is None and self._timeout is not None:
            self._arm(self._timeout)
        watcher = self._watcher
        # The watcher switches with no value; anything else but _SEND_INCOMPLETE is
        # a stray switch, which a read that fails with EAGAIN sends back to waiting.
        watcher.start(current.switch)
        try:
            while True:
                woken = self._to_hub()
                if woken is _SEND_INCOMPLETE and self._line is not None:
                    rest, self._line = self._line, None
                    raise SendIncomplete(rest)
                try:
                    return self._raw.recv(size)
                except (BlockingIOError, InterruptedError):
                    pass
        except BaseException:
            self._line = None  # killed or timed out before the burst: never send it now
            raise
        finally:
            watcher.stop()
            self._since = None
            self._waiter = None

    def _arm(self, delay: float) -> None:
        timer = self._loop.timer(delay)
        timer.start(self._on_timer)
        self._timer = timer

    def _on_timer(self) -> None:
        self._spent_timer, self._timer = self._timer, None
        since = self._since
        waiter = self._waiter
        if waiter is None:
            return  # not waiting: the next wait arms a new timer
        if since is None:  # the line is still queued: the clock has not started
            self._arm(self._timeout)
            return
        left = since + self._timeout - perf_counter()
        if left > 0:
            self._arm(left)
            return
        self._watcher.stop()
        waiter.throw(TimeoutError(f"timed out after {self._timeout}s"))
