"""Grading a class (``--class FILE``): every student's server in turn, one report each,
and a summary.

The class file is CSV (a spreadsheet saves it) with a header row naming three
columns, in any order; other columns are ignored, as are blank rows and rows
whose first cell starts with ``#``:

- ``name``: the student, as the summary shows them (unique);
- ``directory``: where their server is run (relative to the class file's folder;
  empty for that folder itself);
- ``command``: how to start it, with ``{port}`` where the port goes.

Servers run one at a time, each on a port the checker picks (or ``--port``
when the command has no ``{port}``). The output directory gets, per student,
``NAME.txt`` (the text report), ``NAME.json`` (the ``--json`` document) and
``NAME.log`` (everything the server printed), and ``summary.csv``.
"""

import csv
import io
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from upper.check.levels import BASIC
from upper.check.report import TextReport, json_document
from upper.check.started import Launch, Run, not_started, run_started
from upper.check.student_server import StartFailed, free_port, has_port_placeholder
from upper.check.target import Target
from upper.i18n import Message, _, ngettext, translated

COLUMNS = ("name", "directory", "command")
SUMMARY_FILE = "summary.csv"
SUMMARY_COLUMNS = (
    "student", "passed", "checks_passed", "checks_failed", "checks_not_run", "checks",
    "failed_checks", "error", "server_stop", "report",
)
"""The summary CSV's header (machine-readable: never translated)."""


class ClassFileError(Exception):
    """The class file cannot be read or lacks what a student needs; one line."""


@dataclass(frozen=True)
class Student:
    name: str
    directory: Path
    command: str

    @property
    def file_stem(self) -> str:
        """The student's name as a file name: letters, digits, ``.``, ``-``, ``_``."""
        return re.sub(r"[^\w.-]+", "_", self.name).strip("._") or "student"


def read_class(path: str | Path) -> list[Student]:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")  # a spreadsheet may write a BOM
    except (OSError, UnicodeDecodeError) as exc:
        raise ClassFileError(
            _("cannot read the class file {path}: {error}").format(path=path, error=exc)
        ) from None
    rows = [
        (number, row) for number, row in enumerate(csv.reader(io.StringIO(text)), start=1)
        if any(cell.strip() for cell in row) and not row[0].lstrip().startswith("#")
    ]
    if not rows:
        raise ClassFileError(_("{path}: no header row and no students").format(path=path))
    header = rows[0][1]
    header = [cell.strip().lower() for cell in header]
    missing = [column for column in COLUMNS if column not in header]
    if missing:
        raise ClassFileError(
            _("{path}: the header row needs the columns {columns} (missing: {missing})").format(
                path=path, columns=", ".join(COLUMNS), missing=", ".join(missing)
            )
        )
    where = {column: header.index(column) for column in COLUMNS}
    students, seen = [], set()
    for number, row in rows[1:]:
        cells = {column: (row[i].strip() if i < len(row) else "") for column, i in where.items()}
        if not cells["name"] or not cells["command"]:
            raise ClassFileError(
                _("{path}, line {line}: a student needs a name and a command").format(
                    path=path, line=number
                )
            )
        student = Student(
            cells["name"], (path.parent / cells["directory"]).resolve(), cells["command"]
        )
        if student.file_stem in seen:
            raise ClassFileError(
                _("{path}, line {line}: {name!r} is in the class twice").format(
                    path=path, line=number, name=student.name
                )
            )
        seen.add(student.file_stem)
        students.append(student)
    if not students:
        raise ClassFileError(_("{path}: no students").format(path=path))
    return students


@dataclass(frozen=True)
class Grading:
    """What every student's run shares."""

    host: str
    port: int
    timeout: float
    checks: list
    level: str
    start_timeout: float
    stop_grace: float
    ssl_context: object = None


def grade_student(student: Student, grading: Grading, out_dir: Path) -> Run:
    """Run one student's server, write their reports into ``out_dir``, return the run."""
    port = free_port(grading.host) if has_port_placeholder(student.command) else grading.port
    target = Target(grading.host, port, grading.timeout, grading.ssl_context)
    launch = Launch(student.command, str(student.directory), grading.start_timeout,
                    grading.stop_grace)
    if not student.directory.is_dir():
        failed = StartFailed(Message("no directory {path}", path=str(student.directory)), [])
        return _written(student, not_started(launch, target, grading.checks, grading.level,
                                             failed), out_dir)
    run = run_started(launch, target, grading.checks, grading.level,
                      log_path=out_dir / f"{student.file_stem}.log")
    return _written(student, run, out_dir)


def _written(student: Student, run: Run, out_dir: Path) -> Run:
    stem = student.file_stem
    with open(out_dir / f"{stem}.txt", "w", encoding="utf-8") as text:
        write_text_report(text, run, student.name)
    (out_dir / f"{stem}.json").write_text(
        json_run(run, student=student.name) + "\n", encoding="utf-8"
    )
    return run


def write_text_report(stream, run: Run, student: str | None = None) -> None:
    """The text report of a finished run (what the terminal shows as it goes)."""
    if student is not None:
        stream.write(_("student: {name}").format(name=student) + "\n")
    report = TextReport(stream, colour=False)
    if run.start_error is None:
        report.start(run.target.address, len(run.results), run.target.timeout)
        stream.write(level_line(run.level) + "\n")
        for result in run.results:
            report.result(result)
        report.finish(run.results, run.seconds)
    for line in run.server_lines():
        stream.write(line + "\n")


def json_run(run: Run, **extra) -> str:
    document = json.loads(
        json_document(run.target.address, run.target.timeout, run.results, run.seconds)
    )
    document["passed"] = run.passed
    document.update(run.json_fields())
    document.update(extra)
    return json.dumps(document, indent=2, ensure_ascii=False)


def level_line(level: str) -> str:
    if level == BASIC:
        return _("level basic: the classroom test only (hola servidor, DESCONEXION)")
    return _("level full: every check")


def grade_class(
    students: list[Student], grading: Grading, out_dir: Path,
    on_graded: Callable[[int, Student, Run], None] = lambda index, student, run: None,
) -> list[tuple[Student, Run]]:
    out_dir.mkdir(parents=True, exist_ok=True)
    graded = []
    for index, student in enumerate(students, start=1):
        run = grade_student(student, grading, out_dir)
        graded.append((student, run))
        on_graded(index, student, run)
    write_summary_csv(out_dir / SUMMARY_FILE, graded)
    return graded


def summary_row(student: Student, run: Run) -> dict:
    failed = [r.name for r in run.results if r.status.value == "fail"]
    return {
        "student": student.name,
        "passed": "yes" if run.passed else "no",
        "checks_passed": sum(r.passed for r in run.results),
        "checks_failed": len(failed),
        "checks_not_run": sum(r.status.value == "not run" for r in run.results),
        "checks": len(run.results),
        "failed_checks": " ".join(failed),
        "error": run.error or "",
        "server_stop": run.stop.how if run.stop else "",
        "report": f"{student.file_stem}.txt",
    }


def write_summary_csv(path: Path, graded: list[tuple[Student, Run]]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as out:
        writer = csv.DictWriter(out, SUMMARY_COLUMNS)
        writer.writeheader()
        for student, run in graded:
            writer.writerow(summary_row(student, run))


TABLE_NAMES = 3
"""Failed checks the terminal's table names per student (the CSV and the report have all)."""


def _shown_names(failed: list[str], student: Student) -> str:
    if len(failed) <= TABLE_NAMES:
        return " ".join(failed)
    more = len(failed) - TABLE_NAMES
    return " ".join(failed[:TABLE_NAMES]) + " " + ngettext(
        "and {count} more (see {report})", "and {count} more (see {report})", more
    ).format(count=more, report=f"{student.file_stem}.txt")


def summary_table(graded: list[tuple[Student, Run]], level: str) -> str:
    """The terminal's summary: a line per student, then the class's totals."""
    headings = (_("student"), _("result"), _("checks"), _("failed checks / errors"))
    rows = []
    for student, run in graded:
        row = summary_row(student, run)
        verdict = _("PASSED") if run.passed else _("FAILED")
        failed = row["failed_checks"].split()
        problems = [_shown_names(failed, student)] if failed else []
        if run.error:
            problems.append(translated(run.error))
        if run.stop is not None and run.stop.how == "killed":
            problems.append(translated(run.stop.describe()))
        rows.append((student.name, verdict, f"{row['checks_passed']}/{row['checks']}",
                     "; ".join(problems) or "-"))
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headings[:3])]
    lines = [
        "  ".join(h.ljust(w) for h, w in zip(headings[:3], widths, strict=True))
        + "  " + headings[3]
    ]
    for row in rows:
        lines.append("  ".join(c.ljust(w) for c, w in zip(row[:3], widths, strict=True))
                     + "  " + row[3])
    passed = sum(run.passed for _student, run in graded)
    lines.append("")
    lines.append(
        _("students passed: {passed} of {total} (level {level})").format(
            passed=passed, total=len(graded), level=level
        )
    )
    return "\n".join(lines)

