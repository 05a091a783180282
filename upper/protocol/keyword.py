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
    true and ``scan`` returns only the text before it. The client uses it to know
    whether its input ended the session; the server's ``UpperSession`` applies the same
    two functions below to its own explicit states.
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
        keyword_at = find_keyword_line(data, self._at_line_start)
        if keyword_at is not None:
            self.found = True
            return data[:keyword_at]
        hold_from = start_of_possible_keyword(data, self._at_line_start)
        if hold_from is not None:
            self._held = data[hold_from:]
            data = data[:hold_from]
        self._at_line_start = bool(self._held) or data[-1:] == b"\n" or (
            not data and self._at_line_start
        )
        return data



def find_keyword_line(data: bytes, at_line_start: bool) -> int | None:
    """Index of a complete keyword line in ``data``, if there is one; ``at_line_start``: whether
    ``data`` begins a line."""
    index = data.find(KEYWORD)
    while index != -1:
        if (at_line_start if index == 0 else data[index - 1] == LF):
            after = data[index + KEYWORD_LENGTH : index + KEYWORD_LENGTH + 2]
            if after[:1] == b"\n" or after == b"\r\n":
                return index
        index = data.find(KEYWORD, index + 1)
    return None


def start_of_possible_keyword(data: bytes, at_line_start: bool) -> int | None:
    """Where the last line of ``data`` (not empty) begins, if all of it so far could still be
    the keyword."""
    if data[-1] == LF:
        return None
    newline = data.rfind(b"\n")
    if newline == -1:
        if not at_line_start:
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
