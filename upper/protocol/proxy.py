"""The PROXY protocol, versions 1 and 2, receiver side: sans-I/O.

A balancer (HAProxy's ``send-proxy`` / ``send-proxy-v2``, nginx's
``proxy_protocol on``, cloud load balancers) opens each connection with a
header that names the client it is relaying. ``ProxyHeaderParser`` is fed the
connection's first bytes as they arrive and answers with one of three things:

- ``None``: not enough bytes yet, feed more;
- a ``ProxyHeader``: the header, and ``leftover``, the bytes that followed it in
  the same segment (the start of the session: they must not be lost);
- ``ProxyHeaderError``: not a valid header; the connection must be closed.

It never guesses: the specification says a receiver configured for the
protocol must require the header, so bytes that cannot begin one are rejected
at once, and a header longer than the version allows is rejected as soon as
it is too long, without waiting for its end. No I/O, no clock: the caller
bounds the time (``--proxy-header-timeout``).

Specification: https://www.haproxy.org/download/2.9/doc/proxy-protocol.txt
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass

V1_PREFIX = b"PROXY "
V1_MAX_LENGTH = 107
"""The longest v1 header, CRLF included (section 2.1)."""
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
V2_FIXED_LENGTH = 16
V2_MAX_LENGTH = V2_FIXED_LENGTH + 0xFFFF
"""The longest v2 header: the fixed part and the largest 16-bit length (section 2.2)."""

VERSIONS = ("v1", "v2", "any")

_V2_LOCAL, _V2_PROXY = 0x0, 0x1
_V2_UNSPEC, _V2_INET, _V2_INET6, _V2_UNIX = 0x0, 0x1, 0x2, 0x3
_V2_STREAM = 0x1
_V2_ADDRESS_SIZES = {_V2_INET: 12, _V2_INET6: 36, _V2_UNIX: 216}


class ProxyHeaderError(ValueError):
    """The bytes are not a valid PROXY header; ``str()`` is the reason, for the log."""


@dataclass(frozen=True, slots=True)
class ProxyHeader:
    """A parsed header.

    ``source`` and ``destination`` are ``(host, port)``, or ``None`` when the
    header carries no client address (v1 ``UNKNOWN``, v2 ``LOCAL``, or v2
    ``PROXY`` over an unspecified or Unix family): then the connection's real
    address is the one to use. ``leftover`` is what followed the header.
    """

    version: int
    command: str  # "PROXY", "LOCAL" (v2) or "UNKNOWN" (v1)
    source: tuple[str, int] | None
    destination: tuple[str, int] | None
    leftover: bytes = b""


class ProxyHeaderParser:
    """Feed bytes until a header (``ProxyHeader``) or a rejection (``ProxyHeaderError``).

    ``version`` is ``"v1"``, ``"v2"`` or ``"any"`` (either, told apart by their
    first bytes, which differ at the first byte).
    """

    __slots__ = ("_buffer", "_accepts")

    def __init__(self, version: str = "any") -> None:
        if version not in VERSIONS:
            raise ValueError(f"version must be one of {VERSIONS}, not {version!r}")
        self._accepts = {
            "v1": (V1_PREFIX,),
            "v2": (V2_SIGNATURE,),
            "any": (V1_PREFIX, V2_SIGNATURE),
        }[version]
        self._buffer = bytearray()

    def feed(self, data: bytes) -> ProxyHeader | None:
        """Take the next bytes; the header once complete, ``None`` while incomplete.

        Raises ``ProxyHeaderError`` as soon as the bytes cannot be a valid header.
        """
        self._buffer += data
        buffer = bytes(self._buffer)
        for prefix in self._accepts:
            start = buffer[: len(prefix)]
            if prefix.startswith(start):
                if len(start) < len(prefix):
                    return None
                if prefix is V1_PREFIX:
                    return _parse_v1(buffer)
                return _parse_v2(buffer)
        raise ProxyHeaderError(f"no PROXY header: the connection began with {buffer[:16]!r}")


def _parse_v1(buffer: bytes) -> ProxyHeader | None:
    end = buffer.find(b"\r\n", 0, V1_MAX_LENGTH)
    if end < 0:
        if len(buffer) >= V1_MAX_LENGTH:
            raise ProxyHeaderError(f"v1 header longer than {V1_MAX_LENGTH} bytes")
        if b"\n" in buffer:
            raise ProxyHeaderError("v1 header not ended by CRLF")
        return None
    line, leftover = buffer[:end], buffer[end + 2 :]
    fields = line.split(b" ")
    if fields[1:2] == [b"UNKNOWN"]:
        # The rest of an UNKNOWN line is to be ignored (section 2.1).
        return ProxyHeader(1, "UNKNOWN", None, None, leftover)
    if len(fields) != 6:
        raise ProxyHeaderError(f"v1 header with {len(fields)} fields instead of 6: {line!r}")
    _, protocol, source, destination, source_port, destination_port = fields
    family = {b"TCP4": ipaddress.IPv4Address, b"TCP6": ipaddress.IPv6Address}.get(protocol)
    if family is None:
        raise ProxyHeaderError(f"v1 header with unknown protocol {protocol!r}")
    return ProxyHeader(
        1,
        "PROXY",
        (_v1_address(source, family), _v1_port(source_port)),
        (_v1_address(destination, family), _v1_port(destination_port)),
        leftover,
    )


def _v1_address(text: bytes, family) -> str:
    try:
        address = family(text.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        raise ProxyHeaderError(f"v1 header with a bad address {text!r}") from None
    return str(address)


def _v1_port(text: bytes) -> int:
    # Decimal, 0..65535, no sign, no leading zero (section 2.1).
    if not text.isdigit() or (len(text) > 1 and text.startswith(b"0")) or int(text) > 0xFFFF:
        raise ProxyHeaderError(f"v1 header with a bad port {text!r}")
    return int(text)


def _parse_v2(buffer: bytes) -> ProxyHeader | None:
    if len(buffer) < V2_FIXED_LENGTH:
        return None
    version_command, family_protocol, length = struct.unpack_from("!BBH", buffer, 12)
    version, command = version_command >> 4, version_command & 0x0F
    if version != 2:
        raise ProxyHeaderError(f"v2 header with version {version}")
    if command not in (_V2_LOCAL, _V2_PROXY):
        raise ProxyHeaderError(f"v2 header with unknown command {command:#x}")
    end = V2_FIXED_LENGTH + length
    if len(buffer) < end:
        return None
    block, leftover = buffer[V2_FIXED_LENGTH:end], buffer[end:]
    if command == _V2_LOCAL:
        # The proxy's own connection (a health check): the addresses are ignored.
        return ProxyHeader(2, "LOCAL", None, None, leftover)
    family, protocol = family_protocol >> 4, family_protocol & 0x0F
    if family == _V2_UNSPEC and protocol == 0:
        return ProxyHeader(2, "PROXY", None, None, leftover)
    if family not in _V2_ADDRESS_SIZES or protocol != _V2_STREAM:
        raise ProxyHeaderError(f"v2 header with unsupported family/protocol {family_protocol:#04x}")
    if len(block) < _V2_ADDRESS_SIZES[family]:
        raise ProxyHeaderError(f"v2 address block of {len(block)} bytes is too short")
    # Whatever follows the addresses is TLVs, which this server does not use.
    if family == _V2_UNIX:
        return ProxyHeader(2, "PROXY", None, None, leftover)
    size = 4 if family == _V2_INET else 16
    source = ipaddress.ip_address(block[:size])
    destination = ipaddress.ip_address(block[size : 2 * size])
    source_port, destination_port = struct.unpack_from("!HH", block, 2 * size)
    return ProxyHeader(
        2, "PROXY", (str(source), source_port), (str(destination), destination_port), leftover
    )
