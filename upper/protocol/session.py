"""Streaming uppercase conversion of one connection's byte stream, as explicit states."""

import codecs
import enum

from upper.protocol.keyword import KEYWORD, LF, find_keyword_line, start_of_possible_keyword
from upper.protocol.text import ENCODING, ERRORS

_make_utf8_decoder = codecs.getincrementaldecoder(ENCODING)
_KEYWORD_LINE, _KEYWORD_CRLF_LINE = KEYWORD + b"\n", KEYWORD + b"\r\n"


def fast_reply(data: bytes, _lf=LF, _keyword=KEYWORD) -> bytes | None:
    """The fast path: the reply to ``data`` fed at a clean line start, when ``data`` is
    complete ASCII lines without the keyword (its ASCII uppercase, one C-level call);
    None when the general path must decide.

    The one statement of the rule: ``UpperSession.feed`` and the server's receive loop
    (which binds it once and calls it only at a clean line start) both apply it.
    """
    if (
        data
        and data[-1] == _lf
        and data.isascii()
        # partition(), not ``in`` or find(): ``in`` first tries its argument as an
        # integer and builds a TypeError it then discards, and find() parses its
        # arguments as a tuple; partition() takes one argument and, when the
        # keyword is absent, returns ``data`` itself and two shared empty bytes.
        and not data.partition(_keyword)[1]
    ):
        return data.upper()
    return None


class SessionState(enum.Enum):
    """Where a session is in its stream, and so what it holds back."""

    LINE_START = "at a line start"
    """Nothing held back, at the start of a line: ``fast_reply`` applies."""
    IN_LINE = "inside a line"
    """Nothing held back, in the middle of a line."""
    HOLDING_KEYWORD = "holding a possible keyword"
    """The line so far (in ``_held``, at most 12 bytes) may still become the keyword."""
    IN_CHARACTER = "inside a character"
    """An incomplete UTF-8 character (at most 3 bytes) waits in the decoder."""
    KEYWORD_ENDED = "ended by the keyword"
    INPUT_ENDED = "ended by the end of input"


# The members as module names for feed(): on CPython 3.11 reading ``SessionState.IN_LINE``
# goes through ``EnumType.__getattr__``'s slot, about 950 instructions under callgrind,
# where a module global costs about 60.
_LINE_START = SessionState.LINE_START
_IN_LINE = SessionState.IN_LINE
_HOLDING_KEYWORD = SessionState.HOLDING_KEYWORD
_IN_CHARACTER = SessionState.IN_CHARACTER
_KEYWORD_ENDED = SessionState.KEYWORD_ENDED
_INPUT_ENDED = SessionState.INPUT_ENDED
_ENDED = (_KEYWORD_ENDED, _INPUT_ENDED)
"""A tuple: its ``in`` compares identities first, where a set would call Enum's Python hash."""


class UpperSession:
    """What the server answers on one connection, fed the bytes as they arrive.

    ``feed(data)`` returns the reply bytes to send right away; ``end_of_input()``
    returns the last ones when the peer sends EOF. Once ``ended`` is true (the
    keyword line arrived, or input ended) every further byte is discarded.

    Output is streamed: the only bytes held back are a line start that may still
    become the keyword (``HOLDING_KEYWORD``, at most 12 bytes) or an incomplete UTF-8
    character (``IN_CHARACTER``, at most 3), so memory stays constant however long a
    line is. ``state`` (a ``SessionState``) is the whole of where the session is; the
    held line start and the decoder are the data those two states carry.
    """

    __slots__ = ("state", "_held", "_decoder")

    def __init__(self) -> None:
        self.state = _LINE_START
        self._held = b""
        self._decoder = None

    @property
    def ended(self) -> bool:
        return self.state in _ENDED

    @property
    def found(self) -> bool:
        """The keyword line ended the session (not the end of input)."""
        return self.state is _KEYWORD_ENDED

    @property
    def clean_line_start(self) -> bool:
        """At a line start with nothing held back: the next feed tries ``fast_reply``."""
        return self.state is _LINE_START

    def feed(self, data: bytes) -> bytes:
        """The reply to ``data``, to send now.

        Until the session ends, every LF fed comes back in the reply of the same
        feed (what is held back never contains one), so a caller counting lines
        needs to count only the input.
        """
        if self.state is _LINE_START:
            reply = fast_reply(data)
            if reply is not None:
                return reply
        return self.feed_general(data)

    def feed_general(self, data: bytes) -> bytes:
        """``feed`` without trying ``fast_reply`` first: for a caller that just did."""
        state = self.state
        if state is _LINE_START and (data == _KEYWORD_LINE or data == _KEYWORD_CRLF_LINE):
            # A client ending its session, the keyword alone in its own write: nothing
            # held, nothing before it, so nothing to answer (the scan would say the same).
            self.state = _KEYWORD_ENDED
            return b""
        if state in _ENDED or not data:
            return b""
        at_line_start = state is _LINE_START
        if state is _HOLDING_KEYWORD:
            data = self._held + data
            self._held = b""
            at_line_start = True
        in_character = state is _IN_CHARACTER
        keyword_at = find_keyword_line(data, at_line_start)
        if keyword_at is not None:
            self.state = _KEYWORD_ENDED
            return self._upper(data[:keyword_at], in_character)[0]
        hold_from = start_of_possible_keyword(data, at_line_start)
        if hold_from is not None:
            self._held = data[hold_from:]
            data = data[:hold_from]
        reply, in_character = self._upper(data, in_character)
        if hold_from is not None:
            # What precedes a line start ends with an LF: no character is left incomplete.
            self.state = _HOLDING_KEYWORD
        elif in_character:
            self.state = _IN_CHARACTER
        elif data[-1] == LF:
            self.state = _LINE_START
        else:
            self.state = _IN_LINE
        return reply

    def end_of_input(self) -> bytes:
        """The peer closed its sending side: flush what was held back, end the session."""
        state = self.state
        if state in _ENDED:
            return b""
        self.state = _INPUT_ENDED
        if state is _HOLDING_KEYWORD:
            held, self._held = self._held, b""
            return b"" if held == KEYWORD else self._upper(held, False)[0]
        if state is _IN_CHARACTER:
            # An incomplete character at EOF is invalid UTF-8: it comes back unchanged.
            return self._decoder.decode(b"", final=True).encode(ENCODING, ERRORS)
        return b""

    def _upper(self, data: bytes, in_character: bool) -> tuple[bytes, bool]:
        """``data`` uppercased, and whether it ends inside a character (kept in the decoder)."""
        if not in_character and data.isascii():
            return data.upper(), False
        if self._decoder is None:
            self._decoder = _make_utf8_decoder(ERRORS)
        text = self._decoder.decode(data)
        pending = self._decoder.getstate()[0]
        if pending[:1] == b"\xed" and pending[1:2] >= b"\xa0":
            # CPython waits for a third byte here, but ED A0..BF can only start an
            # encoded surrogate, never a character: it is invalid already.
            text += self._decoder.decode(b"", final=True)
            pending = b""
        return text.upper().encode(ENCODING, ERRORS), bool(pending)
