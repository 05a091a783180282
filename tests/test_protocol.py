"""Unit tests of the sans-I/O protocol module against every rule and example of docs/protocol.md."""

import pytest
from reference_model import expected_reply

from upper.protocol import KEYWORD, UpperSession, ends_session, uppercase

REPLACEMENT_CHARACTER = "\ufffd".encode()


def run(*segments: bytes) -> bytes:
    """Everything a fresh session answers to ``segments`` followed by EOF."""
    session = UpperSession()
    reply = b"".join(session.feed(segment) for segment in segments)
    reply += session.end_of_input()
    assert session.ended
    return reply


def feed_all(session: UpperSession, *segments: bytes) -> list[bytes]:
    return [session.feed(segment) for segment in segments]


# --- The examples table of docs/protocol.md -------------------------------------------------

EXAMPLES = [
    pytest.param(b"hola servidor\n", b"HOLA SERVIDOR\n", False, id="hola-servidor"),
    pytest.param(b"hola\r\n", b"HOLA\r\n", False, id="crlf"),
    pytest.param(b"a\nb\nDESCONEXION\nc\n", b"A\nB\n", True, id="desconexion-c-never-answered"),
    pytest.param(b"abc\xff\n", b"ABC\xff\n", False, id="invalid-byte-unchanged"),
    pytest.param(b"hola", b"HOLA", False, id="no-newline-streamed"),
    pytest.param(b"desconexion\n", b"DESCONEXION\n", False, id="lowercase-keyword-stays-open"),
]


@pytest.mark.parametrize(("sent", "answered", "ends"), EXAMPLES)
def test_protocol_example_in_one_feed(sent, answered, ends):
    session = UpperSession()
    assert session.feed(sent) == answered
    assert session.ended is ends
    assert session.end_of_input() == b""


@pytest.mark.parametrize(("sent", "answered", "ends"), EXAMPLES)
def test_protocol_example_byte_by_byte(sent, answered, ends):
    session = UpperSession()
    replies = feed_all(session, *(sent[i : i + 1] for i in range(len(sent))))
    assert b"".join(replies) == answered
    assert session.ended is ends
    assert session.end_of_input() == b""


@pytest.mark.parametrize(("sent", "answered", "ends"), EXAMPLES)
def test_reference_model_agrees_with_protocol_examples(sent, answered, ends):
    assert expected_reply(sent) == answered


def test_keyword_constant():
    assert KEYWORD == b"DESCONEXION"


def test_fresh_session_is_open():
    assert UpperSession().ended is False


# --- Lines, terminators, order --------------------------------------------------------


@pytest.mark.parametrize(
    ("sent", "answered"),
    [
        pytest.param(b"hola\r\n", b"HOLA\r\n", id="crlf"),
        pytest.param(b"hola\n", b"HOLA\n", id="lf"),
        pytest.param(b"uno\r\ndos\nTres\r\n", b"UNO\r\nDOS\nTRES\r\n", id="mixed-terminators"),
        pytest.param(b"a\rb\n", b"A\rB\n", id="lone-cr-inside-line"),
        pytest.param(b"a\r\r\n", b"A\r\r\n", id="two-crs"),
        pytest.param(b"\r\n", b"\r\n", id="empty-crlf-line"),
        pytest.param(b"\n", b"\n", id="empty-line"),
        pytest.param(b"\n\n\n", b"\n\n\n", id="three-empty-lines"),
        pytest.param(b"a\n\nb\n", b"A\n\nB\n", id="empty-line-between"),
        pytest.param(
            b"Hello, World! 123 _-+\n", b"HELLO, WORLD! 123 _-+\n", id="ascii-punctuation"
        ),
        pytest.param(b"ALREADY UPPER\n", b"ALREADY UPPER\n", id="already-upper"),
        pytest.param(b"\x00\x01\t\x7f\n", b"\x00\x01\t\x7f\n", id="control-bytes"),
    ],
)
def test_lines_and_terminators(sent, answered):
    assert UpperSession().feed(sent) == answered
    assert run(sent) == answered


def test_replies_keep_line_order():
    lines = [f"line {n} número\n".encode() for n in range(200)]
    expected = b"".join(line.decode().upper().encode() for line in lines)
    session = UpperSession()
    assert b"".join(feed_all(session, *lines)) == expected
    assert run(b"".join(lines)) == expected


# --- Unicode full case mapping --------------------------------------------------------

UNICODE_CASES = [
    pytest.param("canción", "CANCIÓN", id="cancion"),
    pytest.param("straße", "STRASSE", id="sharp-s"),
    pytest.param("ﬁ", "FI", id="fi-ligature"),
    pytest.param("ǆ", "Ǆ", id="dz-digraph"),
    pytest.param("ǅ", "Ǆ", id="dz-titlecase"),
    pytest.param("ﬃ", "FFI", id="ffi-ligature"),
    pytest.param("\u0390", "\u0399\u0308\u0301", id="greek-iota-dialytika-tonos"),
    pytest.param("ŉ", "ʼN", id="n-apostrophe"),
    pytest.param("ı", "I", id="dotless-i-shrinks"),
    pytest.param("ñandú über", "ÑANDÚ ÜBER", id="latin1"),
    pytest.param("привет", "ПРИВЕТ", id="cyrillic"),
    pytest.param("日本語 ok", "日本語 OK", id="cjk-unchanged"),
    pytest.param("emoji 😀 x", "EMOJI 😀 X", id="emoji-4-byte"),
]


@pytest.mark.parametrize(("text", "upper"), UNICODE_CASES)
def test_unicode_full_case_mapping(text, upper):
    sent = text.encode() + b"\n"
    answered = upper.encode() + b"\n"
    assert uppercase(text.encode()) == upper.encode()
    assert UpperSession().feed(sent) == answered
    assert run(sent) == answered


@pytest.mark.parametrize(
    ("text", "upper"),
    [
        pytest.param("straße", "STRASSE", id="sharp-s-more-characters"),
        pytest.param("\u0390", "\u0399\u0308\u0301", id="iota-more-bytes"),
        pytest.param("ŉ", "ʼN", id="n-apostrophe-more-bytes"),
    ],
)
def test_reply_can_be_longer_than_the_line(text, upper):
    reply = UpperSession().feed(text.encode() + b"\n")
    assert reply == upper.encode() + b"\n"
    assert len(reply.decode()) > len(text) + 1 or len(reply) > len(text.encode()) + 1


# --- Invalid UTF-8 --------------------------------------------------------------------

INVALID_UTF8 = [
    pytest.param(b"\xff", id="lone-ff"),
    pytest.param(b"\xfe\xff", id="fe-ff"),
    pytest.param(b"\x80", id="lone-continuation"),
    pytest.param(b"\x80\xbf\x80", id="continuation-run"),
    pytest.param(b"\xc3", id="truncated-2-byte"),
    pytest.param(b"\xe2\x82", id="truncated-3-byte"),
    pytest.param(b"\xf0\x9f\x98", id="truncated-4-byte"),
    pytest.param(b"\xc3\xe2\x82\xac", id="truncated-then-euro"),
    pytest.param(b"\xc0\xaf", id="overlong-slash-2-byte"),
    pytest.param(b"\xc1\xbf", id="overlong-c1"),
    pytest.param(b"\xe0\x80\xaf", id="overlong-3-byte"),
    pytest.param(b"\xf0\x80\x80\xaf", id="overlong-4-byte"),
    pytest.param(b"\xed\xa0\x80", id="encoded-high-surrogate"),
    pytest.param(b"\xed\xbf\xbf", id="encoded-low-surrogate"),
    pytest.param(b"\xed\xa0\xbd\xed\xb8\x80", id="cesu-surrogate-pair"),
    pytest.param(b"\xf4\x90\x80\x80", id="above-u10ffff"),
    pytest.param(b"\xf5\x80\x80\x80", id="f5-lead"),
    pytest.param(b"\xf8\x88\x80\x80\x80", id="5-byte-form"),
    pytest.param(b"\xef\xbf\xbd", id="literal-replacement-char-is-valid"),
]


@pytest.mark.parametrize("bad", INVALID_UTF8)
def test_invalid_utf8_comes_back_unchanged(bad):
    sent = b"ab" + bad + b"cd\xc3\xa9\n"
    answered = b"AB" + bad + b"CD\xc3\x89\n"
    assert uppercase(b"ab" + bad + b"cd") == b"AB" + bad + b"CD"
    assert UpperSession().feed(sent) == answered
    assert run(sent) == answered
    # Byte by byte, as the slowest client would send it.
    assert run(*(sent[i : i + 1] for i in range(len(sent)))) == answered


@pytest.mark.parametrize("bad", INVALID_UTF8)
def test_invalid_utf8_never_becomes_replacement_character(bad):
    reply = run(b"x" + bad + b"\n")
    assert reply.count(REPLACEMENT_CHARACTER) == bad.count(REPLACEMENT_CHARACTER)
    assert len(reply) == len(bad) + 2


def test_every_single_byte_round_trips():
    for value in range(256):
        byte = bytes([value])
        expected = byte.upper() if value < 0x80 else byte
        assert run(byte + b"\n") == expected + b"\n", byte


# --- Streaming and the exact holdback -------------------------------------------------


def test_line_without_newline_is_answered_at_once():
    session = UpperSession()
    assert session.feed(b"hola") == b"HOLA"
    assert session.feed(b" mundo") == b" MUNDO"
    assert session.feed(b"\n") == b"\n"
    assert not session.ended


def test_each_character_is_answered_as_it_arrives():
    session = UpperSession()
    for char in b"hola servidor":
        assert session.feed(bytes([char])) == bytes([char]).upper()


KEYWORD_PREFIXES = [KEYWORD[:n] for n in range(1, len(KEYWORD) + 1)] + [KEYWORD + b"\r"]


@pytest.mark.parametrize("prefix", KEYWORD_PREFIXES, ids=lambda p: p.decode().replace("\r", "CR"))
@pytest.mark.parametrize(
    "before", [b"", b"x\n", b"x\r\n"], ids=["session-start", "after-lf", "after-crlf"]
)
def test_possible_keyword_at_line_start_is_held_back_exactly(prefix, before):
    session = UpperSession()
    assert session.feed(before + prefix) == before.upper()
    assert session.feed(b"!") == prefix + b"!"
    assert not session.ended


@pytest.mark.parametrize("prefix", KEYWORD_PREFIXES, ids=lambda p: p.decode().replace("\r", "CR"))
def test_held_keyword_prefix_is_released_by_newline(prefix):
    session = UpperSession()
    assert session.feed(prefix) == b""
    reply = session.feed(b"\n")
    if prefix in (KEYWORD, KEYWORD + b"\r"):
        assert reply == b""
        assert session.ended
    else:
        assert reply == prefix + b"\n"
        assert not session.ended


def test_desconexio_then_n_bang():
    session = UpperSession()
    assert session.feed(b"DESCONEXIO") == b""
    assert session.feed(b"N!") == b"DESCONEXION!"


def test_holdback_never_exceeds_twelve_bytes():
    session = UpperSession()
    assert session.feed(b"DESCONEXION\r") == b""  # 12 bytes held: the maximum
    assert session.feed(b"X") == b"DESCONEXION\rX"  # the 13th byte releases all of them


@pytest.mark.parametrize(
    "sent",
    [
        pytest.param(b"DESCONEXION\rX", id="cr-then-text"),
        pytest.param(b"DESCONEXION\r\r", id="two-crs"),
        pytest.param(b"DESCONEXIONX", id="longer-word"),
        pytest.param(b"DESCONEXIOn", id="last-letter-lowercase"),
        pytest.param(b"DESCX", id="diverges-early"),
        pytest.param(b"desc", id="lowercase"),
        pytest.param(b" DESC", id="leading-space"),
        pytest.param(b"E", id="not-first-letter"),
        pytest.param(b"xDESCONEXIO", id="keyword-prefix-not-at-line-start"),
        pytest.param(b"a\nxDESCONEXIO", id="second-line-not-a-prefix"),
    ],
)
def test_no_holdback_when_line_cannot_be_the_keyword(sent):
    session = UpperSession()
    assert session.feed(sent) == sent.upper()


def test_keyword_prefix_in_the_middle_of_a_line_is_not_held():
    session = UpperSession()
    assert session.feed(b"x") == b"X"
    assert session.feed(b"DESCONEXIO") == b"DESCONEXIO"
    assert session.feed(b"N\n") == b"N\n"
    assert not session.ended


@pytest.mark.parametrize(
    "char",
    ["é", "ß", "€", "ﬁ", "ǆ", "ΐ", "😀", "𝔞"],
)
def test_utf8_character_split_byte_by_byte(char):
    encoded = char.encode()
    session = UpperSession()
    for i in range(len(encoded) - 1):
        assert session.feed(encoded[i : i + 1]) == b"", "an incomplete character is held"
    assert session.feed(encoded[-1:]) == char.upper().encode()


@pytest.mark.parametrize(
    ("first", "second"),
    [
        pytest.param(b"ab\xc3", b"\xa9cd", id="2-byte-split-1-1"),
        pytest.param(b"ab\xe2", b"\x82\xac", id="3-byte-split-1-2"),
        pytest.param(b"ab\xe2\x82", b"\xac", id="3-byte-split-2-1"),
        pytest.param(b"ab\xf0", b"\x9f\x98\x80", id="4-byte-split-1-3"),
        pytest.param(b"ab\xf0\x9f", b"\x98\x80", id="4-byte-split-2-2"),
        pytest.param(b"ab\xf0\x9f\x98", b"\x80", id="4-byte-split-3-1"),
    ],
)
def test_only_the_incomplete_character_is_held(first, second):
    session = UpperSession()
    lead = first.rstrip(bytes(range(0x80, 0x100)))
    assert session.feed(first) == lead.upper()
    held = len(first) - len(lead)
    assert 1 <= held <= 3
    whole = (first + second).decode()
    assert lead.upper() + session.feed(second) == whole.upper().encode()


@pytest.mark.parametrize(
    ("first", "second"),
    [
        pytest.param(b"a\xc3", b"b", id="2-byte-lead-then-ascii"),
        pytest.param(b"a\xe2\x82", b"b", id="3-byte-prefix-then-ascii"),
        pytest.param(b"a\xf0\x9f\x98", b"\n", id="4-byte-prefix-then-lf"),
        pytest.param(b"a\xc3", b"\xc3\xa9", id="lead-then-new-character"),
    ],
)
def test_held_incomplete_character_that_never_completes_comes_back(first, second):
    session = UpperSession()
    reply = session.feed(first) + session.feed(second)
    assert reply == first.upper() + second.decode("utf-8", "surrogateescape").upper().encode(
        "utf-8", "surrogateescape"
    )


def test_invalid_bytes_are_not_held():
    session = UpperSession()
    assert session.feed(b"a\xff") == b"A\xff"
    assert session.feed(b"b\xc0\xaf") == b"B\xc0\xaf"
    assert session.feed(b"c\xe0\x80") == b"C\xe0\x80"


@pytest.mark.parametrize("second", [0xA0, 0xB5, 0xBF], ids=lambda b: f"ed-{b:x}")
def test_encoded_surrogate_prefix_is_not_held(second):
    # ED A0..BF can only start an encoded surrogate, never a character: invalid at once
    # (CPython's incremental decoder alone would wait for a third byte).
    prefix = bytes([0xED, second])
    session = UpperSession()
    assert session.feed(b"a" + prefix) == b"A" + prefix
    assert session.feed(b"b\n") == b"B\n"


def test_ed_with_a_valid_second_byte_is_held():
    session = UpperSession()
    assert session.feed(b"a\xed") == b"A"
    assert session.feed(b"\x9f") == b""  # ED 9F is the start of U+D7C0..U+D7FF
    assert session.feed(b"\xbf") == "\ud7ff".encode()


def test_encoded_surrogate_prefix_still_comes_back():
    session = UpperSession()
    reply = session.feed(b"a\xed\xa0")
    reply += session.feed(b"b")
    assert reply == b"A\xed\xa0B"


def test_empty_feed_changes_nothing():
    session = UpperSession()
    assert session.feed(b"") == b""
    assert session.feed(b"DESC") == b""
    assert session.feed(b"") == b""
    assert session.feed(b"ONEXION\n") == b""
    assert session.ended


# --- DESCONEXION ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sent", "answered"),
    [
        pytest.param(b"DESCONEXION\n", b"", id="alone"),
        pytest.param(b"DESCONEXION\r\n", b"", id="crlf"),
        pytest.param(b"a\nb\nDESCONEXION\nc\n", b"A\nB\n", id="after-two-lines"),
        pytest.param(b"a\r\nDESCONEXION\r\nc\r\n", b"A\r\n", id="crlf-client"),
        pytest.param(b"\nDESCONEXION\n", b"\n", id="after-empty-line"),
        pytest.param(b"DESCONEXION\nDESCONEXION\n", b"", id="twice"),
        pytest.param(b"x\nDESCONEXION\nhola\nDESCONEXION\n", b"X\n", id="first-one-wins"),
        pytest.param(b"desconexion\nDESCONEXION\nz", b"DESCONEXION\n", id="after-look-alike"),
    ],
)
def test_desconexion_ends_the_session(sent, answered):
    session = UpperSession()
    assert session.feed(sent) == answered
    assert session.ended
    assert session.feed(b"more\n") == b""
    assert session.end_of_input() == b""
    assert run(sent) == answered
    assert expected_reply(sent) == answered


def test_nothing_after_desconexion_is_answered_later():
    session = UpperSession()
    assert session.feed(b"a\nb\n") == b"A\nB\n"
    assert session.feed(b"DESCONEXION\nc") == b""
    assert session.ended
    for extra in (b"\n", b"c\n", b"DESCONEXION\n", b"\xc3", b"\xa9"):
        assert session.feed(extra) == b""
    assert session.end_of_input() == b""


def test_pending_line_is_answered_before_desconexion():
    session = UpperSession()
    assert session.feed(b"abc") == b"ABC"
    assert session.feed(b"def\nDESCONEXION\n") == b"DEF\n"
    assert session.ended


LOOK_ALIKES = [
    pytest.param(b"desconexion\n", id="lowercase"),
    pytest.param(b"Desconexion\n", id="capitalised"),
    pytest.param(b" DESCONEXION\n", id="leading-space"),
    pytest.param(b"\tDESCONEXION\n", id="leading-tab"),
    pytest.param(b"DESCONEXIONES\n", id="longer-word"),
    pytest.param(b"DESCONEXION \n", id="trailing-space"),
    pytest.param(b"DESCONEXION \r\n", id="trailing-space-crlf"),
    pytest.param(b"una DESCONEXION aqui\n", id="inside-longer-line"),
    pytest.param(b"xDESCONEXION\n", id="x-prefix"),
    pytest.param(b"DESCONEXION\rX\n", id="cr-then-text"),
    pytest.param(b"DESCONEXION\r\r\n", id="two-crs"),
    pytest.param(b"\rDESCONEXION\n", id="leading-cr"),
    pytest.param(b"DESCONEXIO\n", id="too-short"),
    pytest.param("DESCONEXIÓN\n".encode(), id="accented"),
    pytest.param(b"DESCONEXION\x00\n", id="trailing-nul"),
]


@pytest.mark.parametrize("line", LOOK_ALIKES)
def test_look_alikes_are_answered_and_session_stays_open(line):
    session = UpperSession()
    answered = line.decode().upper().encode()
    assert session.feed(line) == answered
    assert not session.ended
    assert session.feed(b"still open\n") == b"STILL OPEN\n"
    assert run(line) == answered
    assert expected_reply(line) == answered


@pytest.mark.parametrize("line", LOOK_ALIKES)
def test_look_alikes_split_at_every_point(line):
    answered = line.decode().upper().encode()
    for cut in range(1, len(line)):
        session = UpperSession()
        reply = session.feed(line[:cut]) + session.feed(line[cut:])
        assert reply == answered, cut
        assert not session.ended, cut


@pytest.mark.parametrize(
    ("sent", "answered"),
    [
        pytest.param(b"DESCONEXION\n", b"", id="lf"),
        pytest.param(b"DESCONEXION\r\n", b"", id="crlf"),
        pytest.param(b"ab\nDESCONEXION\ncd\n", b"AB\n", id="between-lines"),
        pytest.param("é\r\nDESCONEXION\r\nñ".encode(), "É\r\n".encode(), id="utf8-around"),
    ],
)
def test_keyword_split_at_every_point(sent, answered):
    keyword_end = sent.index(b"DESCONEXION") + len(b"DESCONEXION")
    keyword_end = sent.index(b"\n", keyword_end) + 1
    for cut in range(1, len(sent)):
        session = UpperSession()
        first = session.feed(sent[:cut])
        assert session.ended is (cut >= keyword_end), cut
        second = session.feed(sent[cut:])
        assert first + second == answered, cut
        assert session.ended, cut
        assert session.end_of_input() == b""


@pytest.mark.parametrize(
    "sent",
    [
        pytest.param(b"DESCONEXION\n", id="lf"),
        pytest.param(b"DESCONEXION\r\n", id="crlf"),
        pytest.param(b"hola\nDESCONEXION\r\nadios\n", id="between-lines"),
    ],
)
def test_keyword_split_into_three_pieces_everywhere(sent):
    answered = expected_reply(sent)
    for first_cut in range(len(sent) + 1):
        for second_cut in range(first_cut, len(sent) + 1):
            session = UpperSession()
            reply = b"".join(
                feed_all(session, sent[:first_cut], sent[first_cut:second_cut], sent[second_cut:])
            )
            assert reply == answered, (first_cut, second_cut)
            assert session.ended


def test_keyword_byte_by_byte():
    session = UpperSession()
    sent = b"a\nDESCONEXION\r\nb\n"
    replies = feed_all(session, *(sent[i : i + 1] for i in range(len(sent))))
    assert b"".join(replies) == b"A\n"
    assert session.ended


# --- End of input ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("segments", "streamed", "at_eof"),
    [
        pytest.param([b"hola"], b"HOLA", b"", id="last-line-without-lf-already-streamed"),
        pytest.param([b"a\nhola"], b"A\nHOLA", b"", id="second-line-without-lf"),
        pytest.param([b"DESCONEXION"], b"", b"", id="final-keyword-without-lf-ends-silently"),
        pytest.param([b"a\nDESCONEXION"], b"A\n", b"", id="final-keyword-after-line"),
        pytest.param([b"a\r\nDESC", b"ONEXION"], b"A\r\n", b"", id="final-keyword-split"),
        pytest.param([b"DESCONEXION\r"], b"", b"DESCONEXION\r", id="final-keyword-cr-is-text"),
        pytest.param([b"DESCONEX"], b"", b"DESCONEX", id="keyword-prefix-flushed"),
        pytest.param([b"D"], b"", b"D", id="one-letter-prefix-flushed"),
        pytest.param([b"a\xc3"], b"A", b"\xc3", id="incomplete-2-byte"),
        pytest.param([b"a\xe2\x82"], b"A", b"\xe2\x82", id="incomplete-3-byte"),
        pytest.param([b"a\xf0\x9f\x98"], b"A", b"\xf0\x9f\x98", id="incomplete-4-byte"),
        pytest.param(
            [b"\xf0", b"\x9f", b"\x98"], b"", b"\xf0\x9f\x98", id="incomplete-fed-bytewise"
        ),
        pytest.param([b"a\n\xc3"], b"A\n", b"\xc3", id="incomplete-at-line-start"),
        pytest.param([b"a\n"], b"A\n", b"", id="nothing-pending"),
        pytest.param([], b"", b"", id="no-input-at-all"),
    ],
)
def test_end_of_input(segments, streamed, at_eof):
    session = UpperSession()
    assert b"".join(feed_all(session, *segments)) == streamed
    assert not session.ended
    assert session.end_of_input() == at_eof
    assert session.ended
    assert session.feed(b"late\n") == b""
    assert session.end_of_input() == b""
    assert expected_reply(b"".join(segments)) == streamed + at_eof


def test_incomplete_utf8_at_eof_has_no_replacement_character():
    reply = run(b"x\xe2\x82")
    assert reply == b"X\xe2\x82"
    assert REPLACEMENT_CHARACTER not in reply


# --- Bounded memory -------------------------------------------------------------------

CHUNK = 64 * 1024
LONG_LINE = 32 * 1024 * 1024


def _ascii_chunks(total: int, first: bytes = b""):
    pattern = (b"abcdefghijklmnopqrstuvwxyz0123456789 DESCONEXION " * (CHUNK // 32 + 1))[:CHUNK]
    yield first + pattern[len(first) :]
    for _ in range(total // CHUNK - 1):
        yield pattern


@pytest.mark.parametrize("first", [b"", b"DESCONEXIO"], ids=["plain", "starts-like-keyword"])
def test_endless_ascii_line_is_streamed_without_accumulating(first):
    session = UpperSession()
    received = 0
    for number, chunk in enumerate(_ascii_chunks(LONG_LINE, first)):
        reply = session.feed(chunk)
        assert len(reply) == len(chunk), number
        if number < 2:
            assert reply == chunk.upper()
        received += len(chunk)
    assert received == LONG_LINE
    assert session.feed(b"\n") == b"\n"
    assert not session.ended
    assert session.end_of_input() == b""


def test_endless_multibyte_line_holds_at_most_one_incomplete_character():
    session = UpperSession()
    odd_chunk = CHUNK + 1  # so that every other chunk ends in the middle of an "é"
    stream = "é".encode() * (64 * odd_chunk // 2)
    sent = answered = 0
    for offset in range(0, len(stream), odd_chunk):
        chunk = stream[offset : offset + odd_chunk]
        reply = session.feed(chunk)
        sent += len(chunk)
        answered += len(reply)
        assert answered == sent - sent % 2  # "É" has as many bytes as "é"; at most 1 byte held
        assert set(reply[::2]) <= {0xC3} and set(reply[1::2]) <= {0x89}
    assert sent == len(stream)
    assert session.end_of_input() == b""


# --- Helpers: uppercase() and ends_session() -----------------------------------------


@pytest.mark.parametrize(
    ("line", "ends"),
    [
        pytest.param(b"DESCONEXION", True, id="bare"),
        pytest.param(b"DESCONEXION\n", True, id="lf"),
        pytest.param(b"DESCONEXION\r\n", True, id="crlf"),
        pytest.param(b"DESCONEXION\r", True, id="cr-without-lf"),
        pytest.param(b"desconexion\n", False, id="lowercase"),
        pytest.param(b" DESCONEXION\n", False, id="leading-space"),
        pytest.param(b"DESCONEXION \n", False, id="trailing-space"),
        pytest.param(b"DESCONEXIONES\n", False, id="longer"),
        pytest.param(b"DESCONEXION\r\r\n", False, id="two-crs"),
        pytest.param(b"DESCONEXION\n\n", False, id="two-lfs"),
        pytest.param(b"\nDESCONEXION\n", False, id="leading-lf"),
        pytest.param(b"DESCONEXION\nDESCONEXION\n", False, id="two-lines"),
        pytest.param(b"", False, id="empty"),
        pytest.param(b"\n", False, id="empty-line"),
    ],
)
def test_ends_session(line, ends):
    assert ends_session(line) is ends


@pytest.mark.parametrize(
    ("data", "upper"),
    [
        pytest.param(b"", b"", id="empty"),
        pytest.param(b"abc xyz\r\n", b"ABC XYZ\r\n", id="ascii"),
        pytest.param("straße".encode(), b"STRASSE", id="sharp-s"),
        pytest.param(b"\xff\xfe", b"\xff\xfe", id="invalid"),
        pytest.param(b"\xc3\xa9\xc3", b"\xc3\x89\xc3", id="valid-then-truncated"),
    ],
)
def test_uppercase(data, upper):
    assert uppercase(data) == upper
