"""Streaming uppercase conversion of one connection's byte stream."""

import codecs

KEYWORD = b"DESCONEXION"
"""A line made of exactly this word (optionally followed by CR) ends the session."""

_KEYWORD_LENGTH = len(KEYWORD)
_LF = 0x0A
_make_utf8_decoder = codecs.getincrementaldecoder("utf-8")


def uppercase(data: bytes) -> bytes:
    """Uppercase complete text the way the server does.

    Unicode full case mapping of the UTF-8 text (``straße`` -> ``STRASSE``); bytes
    that are not valid UTF-8 pass through unchanged thanks to ``surrogateescape``.
    """
    if data.isascii():
        return data.upper()
    return data.decode("utf-8", "surrogateescape").upper().encode("utf-8", "surrogateescape")


def ends_session(line: bytes) -> bool:
    """Whether a line (with or without its terminator) is the DESCONEXION keyword."""
    return line.rstrip(b"\n") in (KEYWORD, KEYWORD + b"\r") and line.count(b"\n") <= 1


class KeywordScanner:
    """Finds the DESCONEXION line in a byte stream that arrives in pieces.

    ``scan(data)`` returns the bytes that are settled as ordinary text: all of
    them, except a line start that could still become the keyword (held until
    the next piece decides it). Once the keyword line is complete, ``found`` is
    true and ``scan`` returns only the text before it. The server's session and
    the client (to know whether its input ended the session) share this.
    """

    __slots__ = ("found", "_at_line_start", "_held")

    def __init__(self) -> None:
        self.found = False
        self._at_line_start = True
        self._held = b""

    def scan(self, data: bytes) -> bytes:
        if self.found or not data:
            return b""
        if self._held:
            data = self._held + data
            self._held = b""
        keyword_at = self._find_keyword_line(data)
        if keyword_at is not None:
            self.found = True
            return data[:keyword_at]
        hold_from = self._start_of_possible_keyword(data)
        if hold_from is not None:
            self._held = data[hold_from:]
            data = data[:hold_from]
        self._at_line_start = bool(self._held) or data[-1:] == b"\n" or (
            not data and self._at_line_start
        )
        return data

    def _is_line_start(self, data: bytes, index: int) -> bool:
        if index == 0:
            return self._at_line_start
        return data[index - 1] == _LF

    def _find_keyword_line(self, data: bytes):
        """Index of a complete keyword line in ``data``, if there is one."""
        index = data.find(KEYWORD)
        while index != -1:
            if self._is_line_start(data, index):
                after = data[index + _KEYWORD_LENGTH : index + _KEYWORD_LENGTH + 2]
                if after[:1] == b"\n" or after == b"\r\n":
                    return index
            index = data.find(KEYWORD, index + 1)
        return None

    def _start_of_possible_keyword(self, data: bytes):
        """Where the last line begins, if all of it so far could still be the keyword."""
        if data[-1] == _LF:
            return None
        newline = data.rfind(b"\n")
        if newline == -1:
            if not self._at_line_start:
                return None
            start = 0
        else:
            start = newline + 1
        tail = data[start:]
        if len(tail) <= _KEYWORD_LENGTH:
            if KEYWORD.startswith(tail):
                return start
        elif len(tail) == _KEYWORD_LENGTH + 1 and tail == KEYWORD + b"\r":
            return start
        return None


class UpperSession(KeywordScanner):
    """What the server answers on one connection, fed the bytes as they arrive.

    ``feed(data)`` returns the reply bytes to send right away; ``end_of_input()``
    returns the last ones when the peer sends EOF. Once ``ended`` is true (the
    keyword line arrived, or input ended) every further byte is discarded.

    Output is streamed: the only bytes held back are a line start that may still
    become the keyword (at most 12 bytes) and an incomplete UTF-8 character (at
    most 3), so memory stays constant however long a line is.
    """

    __slots__ = ("ended", "_plain", "_decoder", "_utf8_pending")

    def __init__(self) -> None:
        super().__init__()
        self.ended = False
        self._plain = True  # not ended, nothing held back: the fast path applies
        self._decoder = None
        self._utf8_pending = False

    def feed(self, data: bytes) -> bytes:
        if (
            self._plain
            and data
            and data[-1] == _LF
            and data.isascii()
            and KEYWORD not in data
        ):
            # The common case, complete ASCII lines and nothing held: one C-level upper.
            self._at_line_start = True
            return data.upper()
        if self.ended or not data:
            return b""
        text = self.scan(data)
        if self.found:
            self.ended = True
            self._plain = False
            return self._upper(text)
        reply = self._upper(text)
        self._plain = not (self._held or self._utf8_pending)
        return reply

    def end_of_input(self) -> bytes:
        """The peer closed its sending side: flush what was held back, end the session."""
        if self.ended:
            return b""
        self.ended = True
        self._plain = False
        held, self._held = self._held, b""
        if held == KEYWORD:
            return b""
        reply = self._upper(held)
        if self._utf8_pending:
            # An incomplete character at EOF is invalid UTF-8: it comes back unchanged.
            text = self._decoder.decode(b"", final=True)
            reply += text.encode("utf-8", "surrogateescape")
        return reply

    def _upper(self, data: bytes) -> bytes:
        if not self._utf8_pending and data.isascii():
            return data.upper()
        if self._decoder is None:
            self._decoder = _make_utf8_decoder("surrogateescape")
        text = self._decoder.decode(data)
        pending = self._decoder.getstate()[0]
        if pending[:1] == b"\xed" and pending[1:2] >= b"\xa0":
            # CPython waits for a third byte here, but ED A0..BF can only start an
            # encoded surrogate, never a character: it is invalid already.
            text += self._decoder.decode(b"", final=True)
            pending = b""
        self._utf8_pending = bool(pending)
        return text.upper().encode("utf-8", "surrogateescape")
