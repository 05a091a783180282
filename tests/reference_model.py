"""Independent reference model of the UPPER protocol (see docs/protocol.md).

A deliberately simple, line-by-line oracle for what the server sends back. It
does not import ``upper.protocol``: the tests compare the real implementation
(and the real server) against it.

- ``expected_reply(data)``: everything the server answers for the whole input
  ``data`` followed by EOF.
- ``expected_partial_reply(data)``: what the server must already have answered
  once it has received exactly ``data`` and the connection is still open
  (streaming: everything except the bytes it is allowed to hold back).
- ``held_back(data)`` / ``session_ended(data)``: helpers for the above.
"""

KEYWORD = b"DESCONEXION"
KEYWORD_LINES = (KEYWORD, KEYWORD + b"\r")
"""Contents (without the LF) of a complete line that ends the session."""


def upper_line(line: bytes) -> bytes:
    """Uppercase one line (or a piece of one) as a whole; invalid UTF-8 is kept byte for byte."""
    return line.decode("utf-8", "surrogateescape").upper().encode("utf-8", "surrogateescape")


def expected_reply(data: bytes) -> bytes:
    """The complete reply to ``data`` followed by EOF."""
    lines = data.split(b"\n")
    reply = []
    for number, line in enumerate(lines):
        is_last = number == len(lines) - 1
        if is_last:
            # The last piece has no LF: it is only a keyword if it is exactly DESCONEXION.
            if line == KEYWORD:
                break
            reply.append(upper_line(line))
        else:
            if line in KEYWORD_LINES:
                break
            reply.append(upper_line(line) + b"\n")
    return b"".join(reply)


def session_ended(data: bytes) -> bool:
    """Whether ``data`` (without EOF) contains a complete keyword line."""
    return any(line in KEYWORD_LINES for line in data.split(b"\n")[:-1])


def _incomplete_utf8_length(tail: bytes) -> int:
    """Length of the suffix of ``tail`` that is a proper prefix of a valid UTF-8 character."""
    for length in (3, 2, 1):
        if len(tail) >= length and _is_incomplete_character(tail[-length:]):
            return length
    return 0


def _is_incomplete_character(piece: bytes) -> bool:
    lead = piece[0]
    if 0xC2 <= lead <= 0xDF:
        size = 2
    elif 0xE0 <= lead <= 0xEF:
        size = 3
    elif 0xF0 <= lead <= 0xF4:
        size = 4
    else:
        return False
    if len(piece) >= size:
        return False
    # Only the second byte of a character has a restricted range, so trying every
    # continuation byte for the next position (and 0x80 for the rest) is exhaustive.
    for continuation in range(0x80, 0xC0):
        candidate = piece + bytes([continuation]) + b"\x80" * (size - len(piece) - 1)
        try:
            candidate.decode("utf-8")
        except UnicodeDecodeError:
            continue
        return True
    return False


def held_back(data: bytes) -> int:
    """How many trailing bytes of ``data`` the server may still hold (connection open).

    Either the whole last (unterminated, non-empty) line if it could still become
    ``DESCONEXION\\r\\n`` (at most 12 bytes), or else the bytes of a trailing
    incomplete UTF-8 character (at most 3).
    """
    last_line = data.split(b"\n")[-1]
    if last_line and (KEYWORD + b"\r").startswith(last_line):
        return len(last_line)
    return _incomplete_utf8_length(last_line)


def expected_partial_reply(data: bytes) -> bytes:
    """What the server has answered after receiving exactly ``data``, before any EOF."""
    lines = data[: len(data) - held_back(data)].split(b"\n")
    reply = []
    for line in lines[:-1]:
        if line in KEYWORD_LINES:
            return b"".join(reply)
        reply.append(upper_line(line) + b"\n")
    # The last piece is not terminated and, with the connection open, never a keyword yet.
    reply.append(upper_line(lines[-1]))
    return b"".join(reply)
