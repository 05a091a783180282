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

from upper.check.outcome import Evidence, Result, Status
from upper.i18n import _, ngettext, translated
from upper.protocol import decode_text

JSON_SCHEMA_VERSION = 1
"""The JSON document is for programs: its keys and values are the same in every language
(the human sentences in it, titles, reasons, hints, are English)."""
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


def _labels() -> dict[Status, str]:
    return {Status.PASS: _("PASS"), Status.FAIL: _("FAIL"), Status.NOT_RUN: _("NOT RUN")}


class TextReport:
    """Human output, in the language in use: colour only when ``stream`` is a terminal
    (and ``NO_COLOR`` is unset)."""

    def __init__(self, stream=None, colour: bool | None = None):
        self.stream = stream or sys.stdout
        if colour is None:
            colour = self.stream.isatty() and not os.environ.get("NO_COLOR")
        self.colour = colour
        self._section = None
        self._labels = _labels()
        self._label_width = max(len(label) for label in self._labels.values())

    def start(self, address: str, count: int, timeout: float) -> None:
        line = ngettext(
            "upper-check: {count} check against {address} (timeout {seconds:g}s)",
            "upper-check: {count} checks against {address} (timeout {seconds:g}s)",
            count,
        )
        self._write(line.format(count=count, address=address, seconds=timeout) + "\n")

    def result(self, result: Result) -> None:
        if result.section != self._section:
            self._section = result.section
            self._write(f"\n{self._paint(translated(result.section), '1')}\n")
        label = self._labels[result.status]
        self._write(
            f"{self._paint(f'{label:<{self._label_width}}', _COLOURS[result.status])} "
            f"{result.name:<{_NAME_WIDTH}} {translated(result.title)}\n"
        )
        if result.status is Status.PASS:
            return
        indent = " " * (self._label_width + 1)
        self._write(f"{indent}{translated(result.reason)}\n")
        if result.evidence is not None:
            for line in evidence_lines(result.evidence):
                self._write(f"{indent}  {line}\n")
        if result.hint:
            fix = _("fix:")
            lines = textwrap.wrap(f"{fix} {translated(result.hint)}", WIDTH - len(indent),
                                  subsequent_indent=" " * (len(fix) + 1), break_on_hyphens=False)
            lines[0] = self._paint(fix, "1") + lines[0][len(fix):]
            self._write("".join(f"{indent}{line}\n" for line in lines))

    def finish(self, results: list[Result], seconds: float) -> None:
        counts = summary(results)
        status = Status.PASS if counts["failed"] + counts["not_run"] == 0 else Status.FAIL
        if status is Status.PASS:
            verdict = _("the server speaks the protocol")
        else:
            verdict = _("not conformant")
        total = ngettext("{count} check", "{count} checks", counts["total"])
        line = _("{passed} passed, {failed} failed, {not_run} not run ({total}, {seconds}s)")
        shown = line.format(
            passed=counts["passed"], failed=counts["failed"], not_run=counts["not_run"],
            total=total.format(count=counts["total"]), seconds=f"{seconds:.1f}",
        )
        self._write(f"\n{shown}: {self._paint(verdict, _COLOURS[status])}\n")

    def _paint(self, text: str, code: str) -> str:
        return f"\x1b[{code}m{text}\x1b[0m" if self.colour else text

    def _write(self, text: str) -> None:
        self.stream.write(text)
        self.stream.flush()


def evidence_lines(evidence: Evidence) -> list[str]:
    """``sent``, ``expected`` and ``got`` quoted around the first difference, and a caret."""
    sent_label, expected_label, got_label = _("sent:"), _("expected:"), _("got:")
    width = max(len(sent_label), len(expected_label), len(got_label)) + 1
    sent = show_bytes(evidence.sent)
    if evidence.sent_total > len(evidence.sent):
        sent += _("... ({count} bytes in all)").format(count=f"{evidence.sent_total:,}")
    lines = [f"{sent_label:<{width}} '{sent}'"]
    if evidence.difference_at is None:
        if evidence.before:
            replies = ("..." if evidence.got_more else "") + show_bytes(evidence.before)
            lines.append(f"{got_label:<{width}} '{replies}'  " + _("(every reply, as expected)"))
        else:
            lines.append(f"{got_label:<{width}} " + _("nothing, as expected"))
        return lines
    if evidence.difference_at == 0 and not evidence.got:
        excerpt = _excerpt(evidence.expected, evidence.expected_more)
        lines.append(f"{expected_label:<{width}} '{excerpt}'")
        lines.append(f"{got_label:<{width}} " + _("nothing"))
        return lines
    elided = evidence.difference_at > len(evidence.before)
    before = ("..." if elided else "") + show_bytes(evidence.before)
    for label, tail, more in (
        (expected_label, evidence.expected, evidence.expected_more),
        (got_label, evidence.got, evidence.got_more),
    ):
        ending = "" if tail or more else "  " + _("(nothing more)")
        lines.append(f"{label:<{width}} '{before}{_excerpt(tail, more)}'{ending}")
    difference = _("^ first difference, at byte {offset}").format(
        offset=f"{evidence.difference_at:,}"
    )
    lines.append(" " * (width + 1 + len(before)) + difference)
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


def json_document(address: str, timeout: float, results: list[Result], seconds: float) -> str:
    counts = summary(results)
    document = {
        "schema": JSON_SCHEMA_VERSION,
        "address": address,
        "timeout": timeout,
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
