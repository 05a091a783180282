"""Where an UPPER server is: the default address, and ``HOST:PORT`` text both ways.

``docs/protocol.md`` sets the default, ``127.0.0.1:5000``. An IPv6 address is
written in brackets (``[::1]:5000``) everywhere the project shows or reads an
address, so the last colon always starts the port.
"""

from upper.i18n import Message

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 5000
_NOT_IN_A_HOST = set("/[]@ ?#")


class AddressError(ValueError):
    """Text that is not ``HOST:PORT``; the message says why."""


def format_address(host: str, port: int) -> str:
    """``127.0.0.1:5000``, ``[::1]:5000``."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def parse_address(text: str) -> tuple[str, int]:
    """``HOST:PORT`` or ``[IPV6]:PORT`` -> ``(HOST, PORT)``, port 1-65535; else ``AddressError``."""
    if text.startswith("["):
        host, bracket, after = text[1:].partition("]")
        colon, port_text = after[:1], after[1:]
        if not bracket or not host or colon != ":":
            raise AddressError(
                Message("an IPv6 address goes in brackets before the port, as in [::1]:5000")
            )
    else:
        host, colon, port_text = text.rpartition(":")
        if not colon:
            raise AddressError(Message("it has no port"))
        if ":" in host:
            raise AddressError(Message("an IPv6 address goes in brackets, as in [::1]:5000"))
    if not host or _NOT_IN_A_HOST.intersection(host):
        raise AddressError(Message("{host} is not a host name or address", host=repr(host)))
    if not (port_text.isascii() and port_text.isdigit()) or not 1 <= int(port_text) <= 65535:
        raise AddressError(
            Message("{port} is not a port number (1-65535)", port=repr(port_text))
        )
    return host, int(port_text)
