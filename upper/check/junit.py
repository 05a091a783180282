"""``--junit FILE``: the results as JUnit XML, which GitHub Classroom, GitLab CI and
Jenkins read.

One ``<testsuite>`` per server checked (a class run writes one per student),
one ``<testcase>`` per check: a failed check is a ``<failure>`` whose text holds
what was sent, expected and got; a check not run is an ``<error>``. A server
that did not start is one ``<testcase name="start">`` with an ``<error>`` and
the program's last lines. The level and what became of the server are
``<properties>``. The element and attribute names are the ones the Jenkins
JUnit schema (tests/schemas/junit-10.xsd) defines.
"""

import re
import xml.etree.ElementTree as ET
from pathlib import Path

from upper.check.outcome import Status
from upper.check.report import evidence_lines
from upper.check.started import Run

SUITE_PREFIX = "upper-check"
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
"""Characters XML 1.0 cannot hold (a server's output may have any)."""


def write_junit(path: str | Path, suites: list[tuple[str, Run]]) -> None:
    """Write ``suites`` (a name and a run each) to ``path`` as one ``<testsuites>``."""
    root = ET.Element("testsuites", name=SUITE_PREFIX)
    totals = {"tests": 0, "failures": 0, "errors": 0}
    seconds = 0.0
    for name, run in suites:
        suite = _suite(name, run)
        root.append(suite)
        for key in totals:
            totals[key] += int(suite.get(key))
        seconds += run.seconds
    for key, value in totals.items():
        root.set(key, str(value))
    root.set("time", f"{seconds:.3f}")
    ET.indent(root)
    Path(path).write_bytes(ET.tostring(root, encoding="utf-8", xml_declaration=True) + b"\n")


def _suite(name: str, run: Run) -> ET.Element:
    suite = ET.Element("testsuite", name=name)
    properties = ET.SubElement(suite, "properties")
    _property(properties, "level", run.level)
    _property(properties, "address", run.target.address)
    if run.launch is not None:
        _property(properties, "command", run.launch.command)
        if run.stop is not None:
            _property(properties, "server_stop", run.stop.how)
    counts = {"tests": 0, "failures": 0, "errors": 0}
    if run.start_error is not None:
        case = ET.SubElement(suite, "testcase", name="start", classname=name, time="0")
        error = ET.SubElement(case, "error", type="did-not-start", message=_xml(run.error))
        error.text = _xml("\n".join(run.output))
        counts["tests"], counts["errors"] = 1, 1
    for result in run.results:
        case = ET.SubElement(
            suite, "testcase", name=result.name, classname=f"{name}.{result.section}",
            time=f"{result.seconds:.3f}",
        )
        counts["tests"] += 1
        if result.status is Status.FAIL:
            counts["failures"] += 1
            failure = ET.SubElement(case, "failure", type="fail", message=_xml(result.reason or ""))
            failure.text = _failure_text(result)
        elif result.status is Status.NOT_RUN:
            counts["errors"] += 1
            ET.SubElement(case, "error", type="not-run", message=_xml(result.reason or ""))
    lines = run.server_lines()
    if lines:
        ET.SubElement(suite, "system-out").text = _xml("\n".join(lines))
    for key, value in counts.items():
        suite.set(key, str(value))
    suite.set("skipped", "0")
    suite.set("time", f"{run.seconds:.3f}")
    return suite


def _property(properties: ET.Element, name: str, value: str) -> None:
    ET.SubElement(properties, "property", name=name, value=_xml(value))


def _failure_text(result) -> str:
    lines = [result.title, result.reason or ""]
    if result.evidence is not None:
        lines.extend(evidence_lines(result.evidence))
    if result.hint:
        lines.append(f"fix: {result.hint}")
    return _xml("\n".join(lines))


def _xml(text: str) -> str:
    return _NOT_XML.sub("\ufffd", text)
