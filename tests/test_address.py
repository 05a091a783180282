"""``HOST:PORT`` both ways (``upper.protocol.address``) and the command lines' option types
(``upper.cli.options``), with no sockets."""

import argparse

import pytest

from upper.cli.options import number, port
from upper.protocol.address import AddressError, format_address, parse_address


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:5000", ("127.0.0.1", 5000)),
        ("localhost:1", ("localhost", 1)),
        ("upper.example:65535", ("upper.example", 65535)),
        ("[::1]:5000", ("::1", 5000)),
        ("[fe80::1%eth0]:80", ("fe80::1%eth0", 80)),
    ],
)
def test_parse_address(text, expected):
    assert parse_address(text) == expected


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("127.0.0.1", "no port"),
        ("::1:5000", "brackets"),
        ("[::1]5000", "brackets"),
        ("[::1", "brackets"),
        ("[]:5000", "brackets"),
        (":5000", "not a host"),
        ("a b:5000", "not a host"),
        ("user@host:5000", "not a host"),
        ("host:0", "not a port"),
        ("host:65536", "not a port"),
        ("host:http", "not a port"),
        ("host:５０００", "not a port"),  # fullwidth digits are digits to str.isdigit()
        ("host:", "not a port"),
    ],
)
def test_parse_address_says_why_it_refuses(text, reason):
    with pytest.raises(AddressError, match=reason):
        parse_address(text)


@pytest.mark.parametrize(
    ("host", "port_number", "text"),
    [("127.0.0.1", 5000, "127.0.0.1:5000"), ("::1", 5000, "[::1]:5000"), ("h", 1, "h:1")],
)
def test_format_address_round_trips(host, port_number, text):
    assert format_address(host, port_number) == text
    assert parse_address(text) == (host, port_number)


def test_number_accepts_finite_values_in_range():
    assert number(float)("0") == 0.0
    assert number(int)("7") == 7
    assert number(float, minimum=0, above=True)("0.5") == 0.5
    assert port(0)("0") == 0 and port(1)("65535") == 65535


@pytest.mark.parametrize(
    ("option", "text", "wanted"),
    [
        (number(float), "-1", "a number >= 0"),
        (number(float), "nan", "a number >= 0"),
        (number(float), "inf", "a number >= 0"),
        (number(int), "1.5", "a number >= 0"),
        (number(float, minimum=0, above=True, what="timeout"), "0", "invalid timeout '0'"),
        (port(1), "0", "a number from 1 to 65535"),
        (port(0), "99999", "invalid port '99999'"),
        (port(0), "abc", "a number from 0 to 65535"),
    ],
)
def test_number_refuses_with_one_clear_reason(option, text, wanted):
    with pytest.raises(argparse.ArgumentTypeError, match=wanted):
        option(text)
