"""The one address syntax of the client side: the CLI, the checker and the Locust user.

``HOST:PORT``, ``[IPV6]:PORT``, and either with ``tcp://`` or ``tls://`` before it
(``tls://`` asks for TLS). Where a separate port may be given (``--port``), a
bare ``HOST`` or a bare IPv6 address (``::1``) is a host alone.
"""

from dataclasses import dataclass

from upper.protocol.address import AddressError, parse_address

SCHEMES = ("tcp", "tls")


class SchemeError(AddressError):
    """A scheme other than ``tcp://`` or ``tls://``."""


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int | None
    """``None``: the text had no port (only when ``port_required`` is false)."""
    tls: bool | None
    """True for ``tls://``, False for ``tcp://``, None without a scheme."""


def parse_endpoint(text: str, *, port_required: bool = True) -> Endpoint:
    """``[tcp://|tls://]HOST:PORT`` -> ``Endpoint``; ``AddressError`` says why not."""
    scheme, separator, rest = text.strip().partition("://")
    if not separator:
        scheme, rest = None, scheme
    elif scheme.lower() not in SCHEMES:
        raise SchemeError("the scheme must be tcp:// or tls://")
    tls = None if scheme is None else scheme.lower() == "tls"
    rest = rest.removesuffix("/")
    if not port_required and not (rest.startswith("[") or rest.count(":") == 1):
        if not rest:
            raise AddressError("it has no host")
        return Endpoint(rest, None, tls)  # a name, or a bare IPv6 address
    host, port = parse_address(rest)
    return Endpoint(host, port, tls)
