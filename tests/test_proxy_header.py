"""The PROXY protocol parser, byte by byte: every field, every split, garbage, oversize."""

import ipaddress
import struct
from dataclasses import replace

import pytest

from upper.protocol.proxy import (
    V1_MAX_LENGTH,
    V2_SIGNATURE,
    ProxyHeader,
    ProxyHeaderError,
    ProxyHeaderParser,
)

V1_TCP4 = b"PROXY TCP4 192.0.2.7 198.51.100.1 56324 5000\r\n"
V1_TCP6 = b"PROXY TCP6 2001:db8::7 2001:db8::1 56324 5000\r\n"


def v2(command=0x1, family_protocol=0x11, addresses=b"", tlvs=b"", version=2) -> bytes:
    block = addresses + tlvs
    fixed = struct.pack("!BBH", version << 4 | command, family_protocol, len(block))
    return V2_SIGNATURE + fixed + block


def inet(source="192.0.2.7", destination="198.51.100.1", ports=(56324, 5000)) -> bytes:
    packed = ipaddress.ip_address(source).packed + ipaddress.ip_address(destination).packed
    return packed + struct.pack("!HH", *ports)


V2_TCP4 = v2(addresses=inet())
V2_TCP6 = v2(family_protocol=0x21, addresses=inet("2001:db8::7", "2001:db8::1"))


def parse(data: bytes, version: str = "any") -> ProxyHeader | None:
    return ProxyHeaderParser(version).feed(data)


def rejection(data: bytes, version: str = "any") -> str:
    with pytest.raises(ProxyHeaderError) as raised:
        parse(data, version)
    return str(raised.value)


# -- v1 -------------------------------------------------------------------------------


def test_v1_tcp4_every_field():
    header = parse(V1_TCP4 + b"hello\n")
    assert header == ProxyHeader(
        1, "PROXY", ("192.0.2.7", 56324), ("198.51.100.1", 5000), b"hello\n"
    )


def test_v1_tcp6_every_field():
    header = parse(V1_TCP6)
    assert (header.source, header.destination) == (("2001:db8::7", 56324), ("2001:db8::1", 5000))
    assert header.leftover == b""


def test_v1_unknown_uses_no_address_and_ignores_the_rest_of_its_line():
    header = parse(b"PROXY UNKNOWN ffff::1 ffff::2 1 2\r\nabc")
    assert (header.command, header.source, header.leftover) == ("UNKNOWN", None, b"abc")
    assert parse(b"PROXY UNKNOWN\r\n").command == "UNKNOWN"


def test_v1_at_the_longest_length_is_accepted_and_one_byte_more_is_not():
    longest = b"PROXY UNKNOWN " + b"x" * (V1_MAX_LENGTH - 16) + b"\r\n"
    assert len(longest) == V1_MAX_LENGTH
    assert parse(longest).command == "UNKNOWN"
    assert "longer than 107" in rejection(longest[:-2] + b"x\r\n")


def test_v1_oversize_is_rejected_before_its_end_arrives():
    parser = ProxyHeaderParser("v1")
    assert parser.feed(b"PROXY TCP4 " + b"1" * 90) is None
    with pytest.raises(ProxyHeaderError, match="longer"):
        parser.feed(b"1" * 10)


@pytest.mark.parametrize(
    "line",
    [
        b"PROXY TCP4 192.0.2.7 198.51.100.1 56324\r\n",  # a field missing
        b"PROXY TCP4 192.0.2.7  198.51.100.1 56324 5000\r\n",  # two spaces
        b"PROXY TCP5 192.0.2.7 198.51.100.1 56324 5000\r\n",  # no such protocol
        b"PROXY TCP4 2001:db8::7 198.51.100.1 56324 5000\r\n",  # IPv6 under TCP4
        b"PROXY TCP6 192.0.2.7 2001:db8::1 56324 5000\r\n",  # IPv4 under TCP6
        b"PROXY TCP4 192.0.2.300 198.51.100.1 56324 5000\r\n",  # not an address
        b"PROXY TCP4 192.0.2.7 198.51.100.1 65536 5000\r\n",  # port too large
        b"PROXY TCP4 192.0.2.7 198.51.100.1 056324 5000\r\n",  # leading zero
        b"PROXY TCP4 192.0.2.7 198.51.100.1 -1 5000\r\n",  # sign
        b"PROXY TCP4 192.0.2.7 198.51.100.1 56324 5000\n",  # LF without CR
    ],
)
def test_v1_malformed(line):
    assert rejection(line)


# -- v2 -------------------------------------------------------------------------------


def test_v2_tcp4_every_field():
    header = parse(V2_TCP4 + b"hello\n")
    assert header == ProxyHeader(
        2, "PROXY", ("192.0.2.7", 56324), ("198.51.100.1", 5000), b"hello\n"
    )


def test_v2_tcp6_every_field():
    header = parse(V2_TCP6)
    assert (header.source, header.destination) == (("2001:db8::7", 56324), ("2001:db8::1", 5000))


def test_v2_tlvs_are_skipped():
    tlvs = b"\x01\x00\x02h2" + b"\x04\x00\x00"  # ALPN, NOOP
    header = parse(v2(addresses=inet(), tlvs=tlvs) + b"x\n")
    assert (header.source, header.leftover) == (("192.0.2.7", 56324), b"x\n")


def test_v2_local_ignores_any_address():
    header = parse(v2(command=0x0, addresses=inet()) + b"x")
    assert (header.command, header.source, header.leftover) == ("LOCAL", None, b"x")
    assert parse(v2(command=0x0, family_protocol=0x00)).command == "LOCAL"


def test_v2_unspecified_and_unix_families_carry_no_client_address():
    assert parse(v2(family_protocol=0x00)).source is None
    assert parse(v2(family_protocol=0x31, addresses=b"\0" * 216)).source is None


@pytest.mark.parametrize(
    "header",
    [
        v2(version=1, addresses=inet()),
        v2(command=0x2, addresses=inet()),
        v2(family_protocol=0x12, addresses=inet()),  # UDP over IPv4: not a stream
        v2(family_protocol=0x41, addresses=inet()),  # no such family
        v2(addresses=inet()[:11]),  # address block too short for IPv4
        v2(family_protocol=0x21, addresses=inet()),  # IPv4-sized block under IPv6
    ],
)
def test_v2_malformed(header):
    assert rejection(header)


def test_v2_waits_for_the_whole_declared_length():
    parser = ProxyHeaderParser("v2")
    header = v2(addresses=inet(), tlvs=b"\x04\x01\x00" + b"\0" * 256)
    assert parser.feed(header[:-1]) is None
    assert parser.feed(header[-1:] + b"z").leftover == b"z"


# -- any version, split anywhere, garbage --------------------------------------------


@pytest.mark.parametrize(
    "header", [V1_TCP4, V1_TCP6, V2_TCP4, V2_TCP6], ids=["v1-4", "v1-6", "v2-4", "v2-6"]
)
def test_split_at_every_byte_gives_the_same_header(header):
    data = header + b"after\n"
    whole = parse(data)
    for cut in range(1, len(data)):
        parser = ProxyHeaderParser("any")
        result = parser.feed(data[:cut])
        if result is None:
            result = parser.feed(data[cut:])
        else:  # complete in the first segment: the rest is the caller's to deliver
            assert cut >= len(header)
            result = replace(result, leftover=result.leftover + data[cut:])
        assert result == whole, cut


def test_one_byte_at_a_time():
    parser = ProxyHeaderParser("any")
    results = [parser.feed(bytes([byte])) for byte in V2_TCP6]
    assert results[:-1] == [None] * (len(V2_TCP6) - 1)
    assert results[-1].source == ("2001:db8::7", 56324)


@pytest.mark.parametrize(
    "garbage",
    [b"HELLO\n", b"GET / HTTP/1.1\r\n", b"proxy TCP4", b"\r\n\r\n\x00\r\nQUIT!", b"\x16\x03\x01"],
)
def test_anything_but_a_header_is_rejected_at_its_first_wrong_byte(garbage):
    assert "no PROXY header" in rejection(garbage)


def test_the_first_bytes_are_never_taken_for_a_header_guess():
    # The spec forbids guessing: a plain session line is not let through as data.
    with pytest.raises(ProxyHeaderError):
        parse(b"PROXIMITY\n")


def test_each_version_alone_rejects_the_other():
    assert "no PROXY header" in rejection(V2_TCP4, "v1")
    assert "no PROXY header" in rejection(V1_TCP4, "v2")
    assert parse(V1_TCP4, "v1").version == 1
    assert parse(V2_TCP4, "v2").version == 2


def test_an_unknown_version_setting_is_refused():
    with pytest.raises(ValueError):
        ProxyHeaderParser("v3")
