"""The gevent internals that upper's hot paths rely on, in one place, with why.

The server's connections and the client's cooperative round trips skip gevent's
general-purpose socket layer: that layer tries every call first to catch
EAGAIN, and builds a ``Waiter`` (and a ``Timeout``) for every wait. Instead a
greenlet parks on a libev/libuv I/O watcher whose callback is the greenlet's
own ``switch``, and calls the raw non-blocking socket when woken. These are the
two helpers that do that, and the list of gevent and greenlet names, some
private, that the project uses. ``tests/test_gevent_internals.py`` exercises what
each one is relied on for, so a gevent upgrade that renames, drops or changes one
fails loudly there instead of subtly in production.
"""

from types import MethodType

from greenlet import greenlet

READ = 1
"""The I/O watcher's event mask for "readable" (libev's EV_READ, libuv's too)."""
WRITE = 2

USED_GEVENT_NAMES = {
    # The hub and its loop: every watcher, timer and callback of the server and client.
    "gevent.hub.Hub": {
        "loop": "the libev/libuv loop every watcher and timer comes from",
        "resolver": "replaced by the Locust users' numeric-first resolver (tcp_user)",
    },
    "gevent loop": {
        "io": "one I/O watcher per connection and per listening socket",
        "timer": "the accept back-off, the cooperative client's timeout",
        "run_callback": "interrupts, the client's outbox flush: run in the hub next",
        "now": "the loop's cached clock: idle timeouts, session durations",
    },
    # libev/libuv I/O watchers: ``events`` can be changed only while stopped (see watch()).
    "gevent I/O watcher": {
        "start": "its callback is a greenlet's switch; on an active one, a new callback",
        "stop": "a stopped watcher calls nothing (the acceptor's pauses)",
        "close": "frees the watcher when a connection or acceptor closes",
        "events": "READ or WRITE, changed only while stopped",
        "callback": "None while stopped: how the client sees a greenlet already waiting",
    },
    "gevent timer": {
        "start": "calls back once, after its delay",
        "close": "a closed timer never calls back (a resume cuts the back-off short)",
    },
    # greenlet, imported directly (a declared dependency).
    "greenlet.greenlet": {
        "switch": "bound to the hub (switch_to_hub) and as watcher callbacks",
        "throw": "interrupts thrown into a parked connection greenlet",
        "parent": "reused greenlets run with the hub as parent and return to it",
        "dead": "the tests count live greenlets",
    },
    "greenlet": {"getcurrent": "the greenlet a connection or a round trip runs in"},
    "gevent": {
        "spawn_raw": "a connection's greenlet without Greenlet's bookkeeping",
        "signal_handler": "SIGTERM, SIGINT, SIGHUP handled in the hub",
        "GreenletExit": "thrown to end a connection's greenlet",
    },
    "gevent.socket": {"wait_read": "the lifeline and ready pipes of workers"},
    # The client's fast path reaches under a monkey-patched socket.
    "gevent._socket3.socket": {
        "_sock": "private: the plain socket under gevent's, called directly",
        "_read_event": "private: gevent's own read watcher on that socket, reused",
        "hub": "the hub that socket's watchers belong to",
        "timeout": "the socket's timeout, honoured by the fast path",
    },
    # The client tells a TLS socket from a plain one (also gevent's, when patched).
    "gevent.ssl.SSLSocket": {"_sslobj": "private: present on TLS sockets only"},
    "gevent.exceptions": {
        "ConcurrentObjectUseError": "raised by the client when a second greenlet waits",
        "BlockingSwitchOutError": "raised by the client when called from the hub",
    },
    # The C-level socket module, under the standard library's.
    "_socket.socket": {
        "_accept": "private: (fd, address) without building a Python socket object",
        "recv_into": "the receive loops read into one buffer",
        "send": "the send paths",
        "shutdown": "the lingering close's FIN",
    },
    "_socket": {
        "getaddrinfo": "numeric hosts answered without gevent's resolver thread",
        "AI_NUMERICHOST": "refuses names, so they go on to the resolver",
    },
}
"""Class or module -> {attribute: what upper relies on it for}. Each is exercised by a
test of that behaviour in ``tests/test_gevent_internals.py`` (not only looked up)."""


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
    stopped first when they change. When they do not, ``start`` on the watcher only
    replaces its callback: setting ``events`` anyway makes libev register the
    descriptor with the kernel again, an ``epoll_ctl`` that fails with EEXIST, twice
    per connection (strace of the churn load: 4,690 failed calls for 2,433 connections).
    """
    if watcher.events != events:
        watcher.stop()
        watcher.events = events
    watcher.start(callback)
