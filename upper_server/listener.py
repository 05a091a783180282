"""Creating the listening socket, with the user's mistakes turned into clear messages."""

import errno
import socket

from upper_protocol.address import format_address


class ListenError(Exception):
    """The address cannot be listened on; the message says why in one line."""


def open_listener(host: str, port: int, backlog: int) -> socket.socket:
    """A non-blocking listening TCP socket on ``host:port`` (port 0 picks a free one)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ListenError(f"cannot listen on host {host!r}: {exc.strerror}") from None
    family, kind, proto, _name, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(backlog)
    except OSError as exc:
        sock.close()
        shown = format_address(host, port)
        if exc.errno == errno.EADDRINUSE:
            raise ListenError(f"address {shown} is already in use") from None
        if exc.errno == errno.EADDRNOTAVAIL:
            raise ListenError(
                f"cannot listen on {shown}: no such address on this machine"
            ) from None
        if exc.errno == errno.EACCES:
            raise ListenError(f"cannot listen on {shown}: permission denied") from None
        raise ListenError(f"cannot listen on {shown}: {exc.strerror or exc}") from None
    sock.setblocking(False)
    return sock
