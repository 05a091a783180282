"""The gevent internals that upper's hot paths rely on, in one place, with why.

The server's connections and the client's cooperative round trips skip gevent's
general-purpose socket layer: that layer tries every call first to catch
EAGAIN, and builds a ``Waiter`` (and a ``Timeout``) for every wait. Instead a
greenlet parks on a libev/libuv I/O watcher whose callback is the greenlet's
own ``switch``, and calls the raw non-blocking socket when woken. These are the
two helpers that do that, and the list of gevent names, some private, that
the project uses. ``tests/test_gevent_internals.py`` checks every one of them,
so a gevent upgrade that renames or drops one fails loudly there instead of
subtly in production.
"""

from types import MethodType

from greenlet import greenlet

READ = 1
"""The I/O watcher's event mask for "readable" (libev's EV_READ, libuv's too)."""
WRITE = 2

USED_GEVENT_NAMES = {
    # The server's accept loop (gevent.baseserver.BaseServer and StreamServer).
    "gevent.server.StreamServer": (
        "do_read",  # overridden: our own accept, with out-of-descriptor back-off
        "do_handle",  # overridden: registers the connection in the accept loop
        "full",  # overridden: the connection limit
        "stop_accepting",
        "start_accepting",
        "_start_accepting_if_started",  # private: resumes accepting after a pause
        "_watcher",  # private: None while not accepting
        "_timer",  # private: our retry timer after EMFILE, as gevent's own back-off uses
        "loop",
        "socket",
        "family",  # the listener's address family, kept by gevent
        "address",
        "started",
        "close",
    ),
    # The C-level socket: ``_accept`` returns (fd, address) without building a
    # Python socket object that we would only unwrap again.
    "_socket.socket": ("_accept", "recv_into", "send", "shutdown"),
    # The client's fast path reaches under a monkey-patched socket.
    "gevent._socket3.socket": ("_sock", "_read_event", "hub", "timeout"),
    "gevent.hub.Hub": ("loop", "switch"),
    "gevent loop": ("io", "timer", "run_callback", "now"),
    # libev/libuv I/O watchers: ``events`` can be changed only while stopped (see watch()).
    "gevent I/O watcher": ("start", "stop", "close", "events", "callback"),
    "gevent.exceptions": ("ConcurrentObjectUseError", "BlockingSwitchOutError"),
}
"""Class or module -> the attributes upper relies on (checked by the tests)."""


def switch_to_hub(hub):
    """A callable that parks the current greenlet by switching straight to ``hub``.

    ``Hub.switch`` first looks for a ``switch_out`` hook on the current greenlet (a
    guard for code that runs in the hub): an ``AttributeError`` raised and caught
    on every call from a raw greenlet. ``greenlet.switch`` bound to the hub is the
    same switch without that lookup. The greenlet must have arranged to be woken
    (a watcher or callback that switches back to it) before calling this.
    """
    return MethodType(greenlet.switch, hub)


def watch(watcher, events: int, callback) -> None:
    """Point an I/O watcher at ``events`` and ``callback``.

    libev and libuv refuse to change the events of an active watcher, so it is
    stopped first; starting it again with the same callback costs nothing extra.
    """
    watcher.stop()
    watcher.events = events
    watcher.start(callback)
