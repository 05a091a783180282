"""Property tests: any bytes, cut into segments any way, against the reference model."""

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from reference_model import (
    expected_partial_reply,
    expected_reply,
    held_back,
    session_ended,
)

from upper.protocol import KEYWORD, UpperSession

PROPERTY_SETTINGS = settings(
    max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)

INTERESTING_PIECES = [
    b"DESCONEXION",
    b"DESCONEXION\n",
    b"DESCONEXION\r\n",
    b"DESCONEXIO",
    b"DESC",
    b"desconexion",
    b"\n",
    b"\r",
    b"\r\n",
    b" ",
    b"a",
    b"Z",
    "é".encode(),
    b"\xc3",  # lead byte of é alone
    b"\xa9",  # continuation byte alone
    "€".encode(),
    b"\xe2\x82",
    b"\xac",
    "😀".encode(),
    b"\xf0\x9f",
    b"\x98\x80",
    b"\xf0\x9f\x98",
    "ß".encode(),
    "ﬁ".encode(),
    "ǆ".encode(),
    "\u0390".encode(),  # uppercases to 3 code points
    b"\xff",
    b"\x80",
    b"\xc0\xaf",  # overlong
    b"\xed\xa0\x80",  # encoded surrogate
    b"\xed",
    b"\xf4\x90\x80\x80",  # above U+10FFFF
]

pieces = st.one_of(
    st.sampled_from(INTERESTING_PIECES),
    st.binary(max_size=8),
)
piece_lists = st.lists(pieces, max_size=40)
streams = piece_lists.map(b"".join) | st.binary(max_size=200)


@st.composite
def cut_streams(draw):
    """A stream and a way of cutting it into segments (possibly empty, possibly 1 byte each).

    Cuts fall anywhere, on every byte, or on the boundaries of the interesting pieces
    (so that, e.g., a segment starts exactly with DESCONEXION after a segment without LF).
    """
    parts = draw(piece_lists)
    data = b"".join(parts)
    how = draw(st.sampled_from(["anywhere", "anywhere", "piece-boundaries", "every-byte"]))
    if how == "every-byte":
        cuts = list(range(len(data) + 1))
    elif how == "piece-boundaries":
        boundaries = [sum(map(len, parts[:n])) for n in range(len(parts) + 1)]
        cuts = sorted(draw(st.sets(st.sampled_from(boundaries))))
    else:
        cuts = sorted(draw(st.sets(st.integers(0, len(data)), max_size=len(data) + 1)))
    bounds = [0, *cuts, len(data)]
    segments = [data[start:end] for start, end in zip(bounds, bounds[1:], strict=False)]
    assert b"".join(segments) == data
    return data, segments


def answer(segments) -> bytes:
    session = UpperSession()
    reply = b"".join(session.feed(segment) for segment in segments)
    return reply + session.end_of_input()


@PROPERTY_SETTINGS
@given(cut_streams())
@example((b"DESCONEXION", [b"DESCON", b"EXION"]))
@example((b"DESCONEXION\r", [b"DESCONEXION", b"\r"]))
@example((b"a\nDESCONEXION\r\nb", [b"a\nDESC", b"ONEXION\r", b"\nb"]))
@example((b"xDESCONEXION\nb", [b"x", b"DESCONEXION\nb"]))
@example((b"stra\xc3\x9fe\xff", [b"stra\xc3", b"\x9fe\xff"]))
def test_segmentation_does_not_change_the_reply(cut):
    data, segments = cut
    assert answer(segments) == answer([data])


@PROPERTY_SETTINGS
@given(cut_streams())
@example((b"uno\nDESC" + b"ONEXION\ndos\n", [b"uno\nDESC", b"ONEXION\ndos\n"]))
@example((b"uno\nDESCONEXION\r\n", [b"uno\n", b"DESCONEXION\r\n"]))
@example((b"stra\xc3\x9fe\n", [b"stra\xc3", b"\x9fe\n"]))
def test_until_the_session_ends_each_reply_has_the_lines_of_its_input(cut):
    """What is held back never holds an LF: the server counts lines once, on input."""
    _data, segments = cut
    session = UpperSession()
    for segment in segments:
        reply = session.feed(segment)
        if session.ended:
            break
        assert reply.count(b"\n") == segment.count(b"\n")


@PROPERTY_SETTINGS
@given(cut_streams())
@example((b"hola\nservidor\n", [b"hola\n", b"servidor\n"]))
@example((b"ab\nDESCONEXION\n", [b"ab\n", b"DESCONEXION\n"]))
@example((b"DESC\nx\n", [b"DESC", b"\nx\n"]))
def test_plain_chunks_are_answered_by_their_ascii_uppercase(cut):
    """The rule ``upper.protocol.fast_reply`` states, which the server's receive loop calls
    itself before (instead of) ``feed``."""
    _data, segments = cut
    session = UpperSession()
    for segment in segments:
        applies = (
            session.clean_line_start
            and segment.endswith(b"\n")
            and segment.isascii()
            and KEYWORD not in segment
        )
        reply = session.feed(segment)
        if applies:
            assert reply == segment.upper()
            assert session.clean_line_start and not session.ended
        if session.ended:
            break


@PROPERTY_SETTINGS
@given(cut_streams())
@example((b"DESCONEXION", [b"DESCONEXION"]))
@example((b"x\nDESCONEXION\r", [b"x\n", b"DESCONEXION\r"]))
@example((b"\xf0\x9f\x98", [b"\xf0", b"\x9f", b"\x98"]))
def test_reply_equals_reference_model(cut):
    data, segments = cut
    assert answer(segments) == expected_reply(data)


@PROPERTY_SETTINGS
@given(cut_streams())
@example((b"DESCONEXION\r\n", [b"DESCONEXION\r", b"\n"]))
@example((b"DESCONEXIOn", [b"DESCONEXIO", b"n"]))
@example((b"ab\xf0\x9f\x98\x80", [b"ab\xf0", b"\x9f\x98", b"\x80"]))
@example((b"a\xed\xa0\x80", [b"a\xed", b"\xa0", b"\x80"]))
def test_streaming_holds_back_only_what_may_still_change(cut):
    """After every feed, everything received has been answered except the allowed holdback.

    Exactly: the reply so far is the reply to the received prefix with its holdback removed
    (the whole last line if it is a non-empty prefix of DESCONEXION\\r, at most 12 bytes;
    else a trailing incomplete UTF-8 character, at most 3 bytes), and it is a prefix of
    the final reply to the whole stream.
    """
    data, segments = cut
    final = expected_reply(data)
    session = UpperSession()
    received = b""
    answered = b""
    for segment in segments:
        answered += session.feed(segment)
        received += segment
        assert session.ended is session_ended(received)
        if not session.ended:
            hold = held_back(received)  # the oracle itself respects docs/protocol.md's bounds
            assert hold <= 12
            if hold > 3:
                assert received[-hold:] == received.rsplit(b"\n", 1)[-1]
        assert answered == expected_partial_reply(received), received
        assert final.startswith(answered)
    answered += session.end_of_input()
    assert answered == final


@PROPERTY_SETTINGS
@given(cut_streams(), st.lists(pieces, min_size=1, max_size=10))
def test_once_ended_feed_returns_nothing_forever(cut, afterwards):
    data, segments = cut
    session = UpperSession()
    for segment in segments:
        was_ended = session.ended
        reply = session.feed(segment)
        if was_ended:
            assert reply == b""
    if not session.ended:
        session.end_of_input()
    assert session.ended
    for extra in afterwards:
        assert session.feed(extra) == b""
        assert session.ended
    assert session.end_of_input() == b""


@PROPERTY_SETTINGS
@given(streams, st.sampled_from([b"DESCONEXION\n", b"DESCONEXION\r\n"]), streams)
def test_keyword_line_cuts_the_stream(before, keyword_line, after):
    """Whatever follows a keyword line is never answered; what precedes it is answered in full."""
    data = before + b"\n" + keyword_line + after
    prefix = before + b"\n"
    session = UpperSession()
    reply = session.feed(data)
    assert session.ended
    assert reply == expected_reply(prefix)
    assert session.feed(after) == b""


@pytest.mark.parametrize("keyword_line", [b"DESCONEXION\n", b"DESCONEXION\r\n"])
@pytest.mark.parametrize("before", [b"", b"hola\n"], ids=["first", "after-a-line"])
def test_the_keyword_alone_in_a_read_ends_the_session(before, keyword_line):
    session = UpperSession()
    assert session.feed(before) == before.upper()
    assert session.feed(keyword_line) == b""
    assert session.ended and session.found and not session.clean_line_start
    assert session.feed(b"tarde\n") == b""
    assert session.end_of_input() == b""
