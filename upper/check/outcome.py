"""What one check found: passed, failed (with the evidence), or not run (with the reason)."""

import enum
from dataclasses import dataclass


class Status(enum.Enum):
    PASS = "pass"
    FAIL = "fail"
    NOT_RUN = "not run"


@dataclass(frozen=True)
class Evidence:
    """What was sent, what the protocol expects back and what came back.

    ``expected`` and ``got`` are excerpts around the first difference, which is at
    byte ``difference_at`` of the reply stream and at ``len(before)`` in both excerpts.
    When every expected reply came (the fault is in how the connection ended),
    ``difference_at`` is ``None`` and ``before`` holds the end of the replies.
    """

    sent: bytes
    sent_total: int
    before: bytes = b""
    expected: bytes = b""
    got: bytes = b""
    expected_more: bool = False
    got_more: bool = False
    difference_at: int | None = None


class CheckFailed(Exception):
    """A check's verdict: the server broke a rule. ``reason`` is one sentence; ``hint``,
    when the kind of fault says better than the check what to fix."""

    def __init__(self, reason: str, evidence: Evidence | None = None, hint: str | None = None):
        super().__init__(reason)
        self.reason = reason
        self.evidence = evidence
        self.hint = hint


class ServerGone(Exception):
    """No new connection could be opened: the server stopped (or never listened)."""


@dataclass(frozen=True)
class Result:
    name: str
    title: str
    status: Status
    seconds: float = 0.0
    reason: str | None = None
    hint: str | None = None
    evidence: Evidence | None = None
    section: str = ""

    @property
    def passed(self) -> bool:
        return self.status is Status.PASS
