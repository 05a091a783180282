"""Streaming uppercase conversion of one connection's byte stream."""

import codecs

from upper.protocol.keyword import KEYWORD, LF, KeywordScanner
from upper.protocol.text import ENCODING, ERRORS

_make_utf8_decoder = codecs.getincrementaldecoder(ENCODING)
_KEYWORD_LINE, _KEYWORD_CRLF_LINE = KEYWORD + b"\n", KEYWORD + b"\r\n"


class UpperSession(KeywordScanner):
    """What the server answers on one connection, fed the bytes as they arrive.

    ``feed(data)`` returns the reply bytes to send right away; ``end_of_input()``
    returns the last ones when the peer sends EOF. Once ``ended`` is true (the
    keyword line arrived, or input ended) every further byte is discarded.

    Output is streamed: the only bytes held back are a line start that may still
    become the keyword (at most 12 bytes) and an incomplete UTF-8 character (at
    most 3), so memory stays constant however long a line is.
    """

    __slots__ = ("ended", "plain", "_decoder", "_utf8_pending")

    def __init__(self) -> None:
        super().__init__()
        self.ended = False
        self.plain = True
        """Not ended, nothing held back, at a line start: a chunk of complete ASCII lines
        without the keyword is answered by its ASCII uppercase (``feed``'s fast path, which
        the server's receive loop inlines)."""
        self._decoder = None
        self._utf8_pending = False

    def feed(self, data: bytes) -> bytes:
        """The reply to ``data``, to send now.

        Until the session ends, every LF fed comes back in the reply of the same
        feed (what is held back never contains one), so a caller counting lines
        needs to count only the input.
        """
        if self.plain and (data == _KEYWORD_LINE or data == _KEYWORD_CRLF_LINE):
            # A client ending its session, the keyword alone in its own write: nothing
            # held, nothing before it, so nothing to answer (scan() would say the same).
            # Tested first: the server's loop calls feed() only with what its inlined fast
            # path refused, most often this line, once per session.
            self.found = self.ended = True
            self.plain = False
            return b""
        if (
            self.plain
            and data
            and data[-1] == LF
            and data.isascii()
            # partition(), not ``in`` or find(): ``in`` first tries its argument as an
            # integer and builds a TypeError it then discards, and find() parses its
            # arguments as a tuple; partition() takes one argument and, when the
            # keyword is absent, returns ``data`` itself and two shared empty bytes.
            and not data.partition(KEYWORD)[1]
        ):
            # The common case, complete ASCII lines and nothing held: one C-level upper.
            return data.upper()
        if self.ended or not data:
            return b""
        text = self.scan(data)
        if self.found:
            self.ended = True
            self.plain = False
            return self._upper(text)
        reply = self._upper(text)
        self.plain = self._at_line_start and not (self._held or self._utf8_pending)
        return reply

    def end_of_input(self) -> bytes:
        """The peer closed its sending side: flush what was held back, end the session."""
        if self.ended:
            return b""
        self.ended = True
        self.plain = False
        held, self._held = self._held, b""
        if held == KEYWORD:
            return b""
        reply = self._upper(held)
        if self._utf8_pending:
            # An incomplete character at EOF is invalid UTF-8: it comes back unchanged.
            text = self._decoder.decode(b"", final=True)
            reply += text.encode(ENCODING, ERRORS)
        return reply

    def _upper(self, data: bytes) -> bytes:
        if not self._utf8_pending and data.isascii():
            return data.upper()
        if self._decoder is None:
            self._decoder = _make_utf8_decoder(ERRORS)
        text = self._decoder.decode(data)
        pending = self._decoder.getstate()[0]
        if pending[:1] == b"\xed" and pending[1:2] >= b"\xa0":
            # CPython waits for a third byte here, but ED A0..BF can only start an
            # encoded surrogate, never a character: it is invalid already.
            text += self._decoder.decode(b"", final=True)
            pending = b""
        self._utf8_pending = bool(pending)
        return text.upper().encode(ENCODING, ERRORS)
