"""The reply stream compared with the expected one as it arrives, in bounded memory.

Only the expected bytes not received yet are kept, plus a few bytes of context
before the current position, so a reply of any length (the long-line check
streams tens of MB) is compared without holding it.
"""

CONTEXT = 32
"""Bytes shown on each side of the first difference."""


class Mismatch(Exception):
    """The reply stream differs from the expected one (``at`` is its byte offset)."""

    def __init__(self, at: int, before: bytes, expected: bytes, got: bytes):
        super().__init__(f"reply differs at byte {at}")
        self.at = at
        self.before = before
        self.expected = expected
        self.got = got


class ReplyMatcher:
    def __init__(self) -> None:
        self._owed = bytearray()  # expected, not received yet
        self._recent = b""  # the last bytes that matched, for context
        self.matched = 0
        """Bytes of the reply received and equal to what was expected."""

    @property
    def owed(self) -> int:
        """Expected bytes not received yet."""
        return len(self._owed)

    def expect(self, data: bytes) -> None:
        self._owed += data

    def receive(self, data: bytes) -> None:
        """Compare ``data``, the next bytes of the reply; raise ``Mismatch`` if it differs."""
        owed = self._owed
        common = min(len(data), len(owed))
        if data[:common] != owed[:common]:
            index = next(i for i in range(common) if data[i] != owed[i])
            raise self._mismatch(index, data)
        if len(data) > common:
            raise self._mismatch(common, data)
        self._advance(data)

    def shortfall(self, got: bytes = b"") -> Mismatch:
        """The difference when the stream ended (or stalled) with bytes still owed."""
        return self._mismatch(0, got)

    def _advance(self, data: bytes) -> None:
        del self._owed[: len(data)]
        self.matched += len(data)
        self._recent = (self._recent + data[-CONTEXT:])[-CONTEXT:]

    def _mismatch(self, index: int, data: bytes) -> Mismatch:
        self._advance(data[:index])
        return Mismatch(
            self.matched,
            self._recent,
            bytes(self._owed[: CONTEXT + 1]),
            bytes(data[index : index + CONTEXT + 1]),
        )
