"""The checker's output: one line per check as it finishes, the evidence of each
failure, a summary; or the same results as one JSON document.

Bytes are shown as text with escapes (``\\r``, ``\\n``, ``\\xff`` for a byte
that is not UTF-8), so a difference of one invisible byte is visible.
"""

import json
import os
import sys
import textwrap
import unicodedata

from upper.check.levels import FULL
from upper.check.outcome import Evidence, Result, Status
from upper.protocol import decode_text

JSON_SCHEMA_VERSION = 1
_LABELS = {Status.PASS: "PASS", Status.FAIL: "FAIL", Status.NOT_RUN: "NOT RUN"}
_COLOURS = {Status.PASS: "32", Status.FAIL: "1;31", Status.NOT_RUN: "33"}
_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t", "\\": "\\\\"}
_NAME_WIDTH = 31
WIDTH = 100
"""Columns the fix hints are wrapped to."""


def show_bytes(data: bytes) -> str:
    """``b'hola\\r\\n\\xff'`` -> ``hola\\r\\n\\xff``: text as text, everything else escaped."""
    out = []
    for char in decode_text(data):
        code = ord(char)
        if char in _ESCAPES:
            out.append(_ESCAPES[char])
        elif 0xDC80 <= code <= 0xDCFF:  # a byte that is not UTF-8, kept by surrogateescape
            out.append(f"\\x{code - 0xDC00:02x}")
        elif unicodedata.category(char) in ("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"):
            out.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")
        else:
            out.append(char)
    return "".join(out)


class TextReport:
    """Human output: colour only when ``stream`` is a terminal (and ``NO_COLOR`` is unset)."""

    def __init__(self, stream=None, colour: bool | None = None):
        self.stream = stream or sys.stdout
        if colour is None:
            colour = self.stream.isatty() and not os.environ.get("NO_COLOR")
        self.colour = colour
        self._section = None

    def start(self, address: str, count: int, timeout: float) -> None:
        self._write(
            f"upper-check: {_plural(count, 'check')} against {address} (timeout {timeout:g}s)\n"
        )

    def result(self, result: Result) -> None:
        if result.section != self._section:
            self._section = result.section
            self._write(f"\n{self._paint(result.section, '1')}\n")
        label = _LABELS[result.status]
        self._write(
            f"{self._paint(f'{label:<7}', _COLOURS[result.status])} "
            f"{result.name:<{_NAME_WIDTH}} {result.title}\n"
        )
        if result.status is Status.PASS:
            return
        indent = " " * 8
        self._write(f"{indent}{result.reason}\n")
        if result.evidence is not None:
            for line in evidence_lines(result.evidence):
                self._write(f"{indent}  {line}\n")
        if result.hint:
            lines = textwrap.wrap(f"fix: {result.hint}", WIDTH - len(indent),
                                  subsequent_indent="     ", break_on_hyphens=False)
            lines[0] = self._paint("fix:", "1") + lines[0][len("fix:"):]
            self._write("".join(f"{indent}{line}\n" for line in lines))

    def finish(self, results: list[Result], seconds: float) -> None:
        counts = summary(results)
        status = Status.PASS if counts["failed"] + counts["not_run"] == 0 else Status.FAIL
        verdict = "the server speaks the protocol" if status is Status.PASS else "not conformant"
        self._write(
            f"\n{counts['passed']} passed, {counts['failed']} failed, {counts['not_run']} not run "
            f"({_plural(counts['total'], 'check')}, {seconds:.1f}s): "
            f"{self._paint(verdict, _COLOURS[status])}\n"
        )

    def _paint(self, text: str, code: str) -> str:
        return f"\x1b[{code}m{text}\x1b[0m" if self.colour else text

    def _write(self, text: str) -> None:
        self.stream.write(text)
        self.stream.flush()


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def evidence_lines(evidence: Evidence) -> list[str]:
    """``sent``, ``expected`` and ``got`` quoted around the first difference, and a caret."""
    sent = show_bytes(evidence.sent)
    if evidence.sent_total > len(evidence.sent):
        sent += f"... ({evidence.sent_total:,} bytes in all)"
    lines = [f"sent:      '{sent}'"]
    if evidence.difference_at is None:
        if evidence.before:
            replies = ("..." if evidence.got_more else "") + show_bytes(evidence.before)
            lines.append(f"got:       '{replies}'  (every reply, as expected)")
        else:
            lines.append("got:       nothing, as expected")
        return lines
    if evidence.difference_at == 0 and not evidence.got:
        lines.append(f"expected:  '{_excerpt(evidence.expected, evidence.expected_more)}'")
        lines.append("got:       nothing")
        return lines
    elided = evidence.difference_at > len(evidence.before)
    before = ("..." if elided else "") + show_bytes(evidence.before)
    for label, tail, more in (
        ("expected:", evidence.expected, evidence.expected_more),
        ("got:", evidence.got, evidence.got_more),
    ):
        ending = "" if tail or more else "  (nothing more)"
        lines.append(f"{label:<10} '{before}{_excerpt(tail, more)}'{ending}")
    caret = " " * (11 + len(before)) + f"^ first difference, at byte {evidence.difference_at:,}"
    lines.append(caret)
    return lines


def _excerpt(data: bytes, more: bool) -> str:
    return show_bytes(data) + ("..." if more else "")


def summary(results: list[Result]) -> dict:
    return {
        "total": len(results),
        "passed": sum(r.status is Status.PASS for r in results),
        "failed": sum(r.status is Status.FAIL for r in results),
        "not_run": sum(r.status is Status.NOT_RUN for r in results),
    }


def json_document(
    address: str, timeout: float, results: list[Result], seconds: float, level: str = FULL
) -> str:
    counts = summary(results)
    document = {
        "schema": JSON_SCHEMA_VERSION,
        "address": address,
        "timeout": timeout,
        "level": level,
        "passed": counts["passed"] == counts["total"],
        "summary": counts,
        "seconds": round(seconds, 3),
        "checks": [_json_result(result) for result in results],
    }
    return json.dumps(document, indent=2, ensure_ascii=False)


def _json_result(result: Result) -> dict:
    entry = {
        "name": result.name,
        "title": result.title,
        "section": result.section,
        "status": result.status.value,
        "seconds": result.seconds,
        "reason": result.reason,
        "hint": result.hint,
    }
    evidence = result.evidence
    if evidence is not None:
        entry["sent"] = show_bytes(evidence.sent)
        entry["sent_bytes"] = evidence.sent_total
        if evidence.difference_at is None:
            entry["got"] = show_bytes(evidence.before)
        else:
            entry["difference_at"] = evidence.difference_at
            entry["expected"] = show_bytes(evidence.before + evidence.expected)
            entry["got"] = show_bytes(evidence.before + evidence.got)
    return entry
