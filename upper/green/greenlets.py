"""``ReusableGreenlets``: greenlets that run one call after another, started from the hub.

A greenlet per connection is the model; a *new* greenlet per connection is only
the simplest way to get one, and on CPython 3.11 a costly one: a new
greenlet's first Python call maps a fresh 16 KiB frame stack (``mmap``),
which its death unmaps again, so every short connection paid two system calls
and their page faults on top of creating, starting and freeing the greenlet.
A greenlet whose call has returned parks here instead, and the next call runs
in it. Measured with ``python -m benchmarks.bench --loads churn`` (200
clients, 5 messages each, reconnecting): see docs/performance.md.

Only the hub calls ``run`` (in an event loop callback): it switches into the
greenlet at once, and the greenlet switches back to the hub whenever it waits,
and when its call returns. A call must leave no reference to the greenlet
behind (the server's connections drop theirs when they hibernate, drain or
close), since the greenlet goes on to run other calls.
"""

from types import MethodType

from greenlet import getcurrent, greenlet


class ReusableGreenlets:
    """Run calls in parked greenlets of ``hub``, making one only when none is idle.

    At most ``keep`` greenlets stay parked; one finishing a call beyond that ends,
    so a burst (every idle connection hibernating at once) leaves at most ``keep``
    behind, about 7 KiB each (measured). Connections end and start in bursts: with
    200 clients reconnecting, a limit of 64 still let a few greenlets end in each
    burst and new ones be made after it; 256 lets none (server CPU per message
    17.7 and 16.2 µs, medians of 5 alternating churn runs of the two).
    """

    def __init__(self, hub, keep: int = 256) -> None:
        self._hub = hub
        self._park = MethodType(greenlet.switch, hub)  # see upper.green.switch_to_hub
        self._idle: list[greenlet] = []
        self.keep = keep

    @property
    def idle(self) -> int:
        """Greenlets parked now, waiting for a call."""
        return len(self._idle)

    def run(self, function, *args) -> None:
        """From the hub: ``function(*args)`` in a greenlet, at once, until it first waits."""
        if self._idle:
            self._idle.pop().switch(function, args)
        else:
            # greenlet holds the arguments a greenlet starts with until it ends: the first
            # call goes in a list that _serve empties.
            greenlet(self._serve, self._hub).switch([function, args])

    def clear(self) -> None:
        """End the parked greenlets (a server that stops).

        Dropped, not thrown into: greenlet ends an unfinished greenlet it frees by raising
        ``GreenletExit`` in it and then returns to the caller, where a ``throw()`` would
        continue in the hub, the greenlet's parent.
        """
        self._idle.clear()

    def _serve(self, first_call: list) -> None:
        function, args = first_call
        first_call.clear()
        idle, park = self._idle, self._park
        while True:
            function(*args)
            # Parked, this greenlet must not keep the last call's objects alive (nor
            # itself, from a local: the pool's list is its only reference).
            function = args = None
            if len(idle) >= self.keep:
                return
            idle.append(getcurrent())
            function, args = park()
