"""Creating the listening sockets, with the user's mistakes turned into clear messages.

A host name listens on every address it resolves to, as asyncio's
``create_server`` does: ``localhost`` on a machine whose ``/etc/hosts`` names
both ``127.0.0.1`` and ``::1`` gets one socket on each, so clients that pick
either family are served.
"""

import errno
import socket
import sys

from upper.i18n import Message
from upper.protocol.address import format_address

PORT_RETRIES = 5
"""Attempts at finding one free port for every address when port 0 is asked."""


class ListenError(Exception):
    """The address cannot be listened on; the message says why in one line, and
    ``errno`` is the system's reason (``None`` for a host that does not resolve)."""

    def __init__(self, message: str, errno: int | None = None):
        super().__init__(message)
        self.errno = errno


def resolve(host: str, port: int) -> list[tuple]:
    """Every distinct (family, type, proto, sockaddr) ``host`` offers to listen on, in order."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ListenError(
            Message("cannot listen on host {host}: {reason}", host=repr(host), reason=exc.strerror)
        ) from None
    distinct = []
    for family, kind, proto, _name, address in infos:
        entry = (family, kind, proto, address)
        if entry not in distinct:
            distinct.append(entry)
    return distinct


def open_listeners(host: str, port: int, backlog: int) -> list[socket.socket]:
    """Non-blocking listening TCP sockets on every address ``host`` resolves to.

    With port 0 the first socket's port, picked by the system, is used for the
    others too, so the ready line names one port. If that port is taken on
    another address, everything is closed and tried again with a new port
    (``PORT_RETRIES`` times in all).

    Resource handling:

      Every socket or none: on any failure the sockets already opened are
      closed before the error is raised.

    Error handling:

      Every failure is a ``ListenError`` whose message is one line naming the
      address and the reason (unknown host, in use, no such address,
      permission denied).
    """
    entries = resolve(host, port)
    for attempt in range(PORT_RETRIES):
        opened: list[socket.socket] = []
        chosen = port
        try:
            for family, kind, proto, address in entries:
                address = (address[0], chosen, *address[2:])
                opened.append(listening_socket(family, kind, proto, address, backlog))
                chosen = opened[-1].getsockname()[1]
        except OSError as exc:
            for sock in opened:
                sock.close()
            port_was_picked = port == 0 and opened
            if port_was_picked and exc.errno == errno.EADDRINUSE and attempt + 1 < PORT_RETRIES:
                continue
            raise _listen_error(exc, host, chosen) from None
        return opened
    raise AssertionError("unreachable")  # the last attempt returns or raises


def listening_socket(family, kind, proto, address, backlog: int) -> socket.socket:
    """One non-blocking socket listening on ``address`` (an ``OSError`` if it cannot)."""
    sock = socket.socket(family, kind, proto)
    try:
        if sys.platform != "win32":
            # On Windows SO_REUSEADDR would let another process steal the port.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6 and hasattr(socket, "IPV6_V6ONLY"):
            # The IPv4 address of the same name gets its own socket, as in asyncio;
            # without this, Linux's dual-stack [::] would take the IPv4 port too.
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(address)
        sock.listen(backlog)
    except OSError:
        sock.close()
        raise
    sock.setblocking(False)
    return sock


def _listen_error(exc: OSError, host: str, port: int) -> ListenError:
    shown = format_address(host, port)
    if exc.errno == errno.EADDRINUSE:
        message = Message("address {address} is already in use", address=shown)
    elif exc.errno == errno.EADDRNOTAVAIL:
        message = Message(
            "cannot listen on {address}: no such address on this machine", address=shown
        )
    elif exc.errno == errno.EACCES:
        message = Message("cannot listen on {address}: permission denied", address=shown)
    else:
        message = Message(
            "cannot listen on {address}: {reason}", address=shown, reason=exc.strerror or exc
        )
    return ListenError(message, exc.errno)


def addresses_text(listeners: list[socket.socket]) -> str:
    """``127.0.0.1:5000 [::1]:5000``: every address, as the ready line shows them."""
    return " ".join(format_address(*sock.getsockname()[:2]) for sock in listeners)
