"""Numeric addresses answered on the spot under gevent, without its resolver thread.

gevent's default resolver runs every ``getaddrinfo()``, even for ``127.0.0.1``,
in a native thread that must win the GIL back from a busy process: under load
(inside Locust), a connect then timed the resolver (seconds) instead of the TCP
handshake (milliseconds). ``answer_numeric_hosts_at_once()`` puts
:class:`NumericHostsFirst` in front of the hub's resolver; host names still go
to it. ``_socket`` is the C module, which gevent never patches, and with
``AI_NUMERICHOST`` it answers at once or refuses.

It is installed by whoever owns the hub (the Locust integration does, for every
user), not by each connection: it changes when a greenlet yields during a
connect, which a program with its own servers in the same hub may rely on.
"""

import _socket

USED_GEVENT_NAMES = ("gevent.get_hub", "Hub.resolver", "resolver.getaddrinfo")
"""What this module relies on in gevent (``upper.green`` lists the rest)."""


class NumericHostsFirst:
    """A gevent resolver that answers numeric addresses itself (see the module)."""

    def __init__(self, resolver) -> None:
        self.resolver = resolver

    def getaddrinfo(self, host, port, family=0, type=0, proto=0, flags=0):
        try:
            return _socket.getaddrinfo(
                host, port, family, type, proto, flags | _socket.AI_NUMERICHOST
            )
        except _socket.gaierror:  # a name: resolve it the usual way
            return self.resolver.getaddrinfo(host, port, family, type, proto, flags)

    def __getattr__(self, name):
        return getattr(self.resolver, name)


def answer_numeric_hosts_at_once() -> None:
    """Put :class:`NumericHostsFirst` in front of the current hub's resolver, once."""
    import gevent

    hub = gevent.get_hub()
    if not isinstance(hub.resolver, NumericHostsFirst):
        hub.resolver = NumericHostsFirst(hub.resolver)
