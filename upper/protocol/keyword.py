"""The framing rule: the line that is exactly DESCONEXION ends the session."""

KEYWORD = b"DESCONEXION"
"""A line made of exactly this word (optionally followed by CR) ends the session."""

KEYWORD_LENGTH = len(KEYWORD)
LF = 0x0A


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
        return data[index - 1] == LF

    def _find_keyword_line(self, data: bytes):
        """Index of a complete keyword line in ``data``, if there is one."""
        index = data.find(KEYWORD)
        while index != -1:
            if self._is_line_start(data, index):
                after = data[index + KEYWORD_LENGTH : index + KEYWORD_LENGTH + 2]
                if after[:1] == b"\n" or after == b"\r\n":
                    return index
            index = data.find(KEYWORD, index + 1)
        return None

    def _start_of_possible_keyword(self, data: bytes):
        """Where the last line begins, if all of it so far could still be the keyword."""
        if data[-1] == LF:
            return None
        newline = data.rfind(b"\n")
        if newline == -1:
            if not self._at_line_start:
                return None
            start = 0
        else:
            start = newline + 1
        tail = data[start:]
        if len(tail) <= KEYWORD_LENGTH:
            if KEYWORD.startswith(tail):
                return start
        elif len(tail) == KEYWORD_LENGTH + 1 and tail == KEYWORD + b"\r":
            return start
        return None
