"""Fuzzing the live server: random byte streams, cut into random TCP segments.

Each example opens a connection to the real ``python -m upper_server``, sends every
segment as its own write (TCP_NODELAY, so segment boundaries mostly survive to the
server's reads), half-closes, reads to EOF and compares with the independent
reference model. Whatever the server's hot path does with chunks, held-back bytes
and keyword fragments, the bytes that come back must be exactly these. The module
runs in plain TCP and over TLS (``transport``): over TLS each write is its own
record, so the same cuts reach the server's decrypted reads.
"""

import pytest
from helpers import read_until_eof
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from reference_model import expected_reply

from upper.client.tls import shutdown_write

pytestmark = pytest.mark.timeout(120)

SOCKET_TIMEOUT = 10.0

PIECES = [
    b"DESCONEXION",
    b"DESCONEXION\n",
    b"DESCONEXION\r\n",
    b"DESCONEXION\r",
    b"DESCONEXIO",
    b"DESC",
    b"D",
    b"desconexion",
    b"\n",
    b"\r",
    b"\r\n",
    b" ",
    b"hola",
    "é".encode(),
    b"\xc3",  # a lead byte alone
    b"\xa9",  # a continuation byte alone
    "€".encode(),
    b"\xe2\x82",
    b"\xac",
    "😀".encode(),
    b"\xf0\x9f",
    b"\xf0\x9f\x98",
    b"\x98\x80",
    "ß".encode(),
    "ﬁ".encode(),
    "ΐ".encode(),  # uppercases to three code points
    b"\xff",
    b"\x80",
    b"\xc0\xaf",  # overlong
    b"\xed\xa0\x80",  # an encoded surrogate
    b"\xed",
    b"\xf4\x90\x80\x80",  # above U+10FFFF
]

pieces = st.one_of(
    st.sampled_from(PIECES),
    st.binary(max_size=12),
    st.text(max_size=6).map(str.encode),
)


@st.composite
def segmented_streams(draw):
    """(stream, segments): a stream of biased pieces or plain bytes, cut anywhere."""
    if draw(st.integers(0, 4)):
        data = b"".join(draw(st.lists(pieces, max_size=40)))
    else:
        data = draw(st.binary(max_size=300))
    if data and draw(st.integers(0, 5)) == 0:
        cuts = range(1, len(data))  # byte by byte
    else:
        cuts = sorted(draw(st.sets(st.integers(1, max(1, len(data) - 1)), max_size=12)))
    bounds = [0, *(cut for cut in cuts if 0 < cut < len(data)), len(data)]
    segments = [data[start:end] for start, end in zip(bounds, bounds[1:], strict=False)]
    assert b"".join(segments) == data
    return data, segments


def exchange(transport, address, segments) -> bytes:
    with transport.connect(address, SOCKET_TIMEOUT) as sock:
        for segment in segments:
            if segment:
                sock.sendall(segment)
        shutdown_write(sock)
        return read_until_eof(sock)


_BIG_UTF8 = "é".encode() * 40_000 + b"\n"
_KEYWORD_AT_CHUNK_EDGE = b"x" * 65_535 + b"\nDESCONEXION\nnunca\n"


@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(segmented_streams())
@example((b"DESCONEXION", [b"DESCON", b"EXION"]))
@example((b"a\nDESCONEXION\r\nb", [b"a\nDESC", b"ONEXION\r", b"\nb"]))
@example((b"hola\nDESC", [b"hola\n", b"DESC"]))
@example((b"stra\xc3\x9fe\xff", [b"stra\xc3", b"\x9fe\xff"]))
@example((b"\xf0\x9f\x98", [b"\xf0", b"\x9f", b"\x98"]))
# Across the server's read size: a character split at odd offsets, a keyword at the edge.
@example((_BIG_UTF8, [_BIG_UTF8[:65_537], _BIG_UTF8[65_537:]]))
@example((_KEYWORD_AT_CHUNK_EDGE, [_KEYWORD_AT_CHUNK_EDGE]))
def test_live_server_matches_the_reference_model(any_server, transport, case):
    data, segments = case
    assert exchange(transport, any_server.address, segments) == expected_reply(data)
