"""The checker's classroom options: ``--level``, ``--start``/``--cwd``, ``--class``/``--out``
and ``--junit``, and the runs that start servers themselves.

``upper.check.cli`` adds these options to its parser and hands a run here when
it starts a server (``--start``) or grades a class (``--class``).
"""

import argparse
import os
import sys
from pathlib import Path

from upper.check.exits import EXIT_FAILED, EXIT_PASSED, EXIT_UNUSABLE
from upper.check.grading import (
    SUMMARY_FILE,
    ClassFileError,
    Grading,
    grade_class,
    json_run,
    level_line,
    read_class,
    summary_table,
)
from upper.check.junit import SUITE_PREFIX, write_junit
from upper.check.levels import BASIC, DEFAULT_LEVEL, LEVELS, checks_of
from upper.check.report import TextReport
from upper.check.started import Launch, Run, run_started
from upper.check.student_server import free_port, has_port_placeholder, with_port
from upper.check.target import Target
from upper.cli.options import number
from upper.cli.parser import error_line
from upper.i18n import _, ngettext

DEFAULT_OUT = "upper-check-reports"


def add_classroom_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--level", choices=LEVELS, default=DEFAULT_LEVEL,
        help=_("basic: the classroom test only ('hola servidor', then DESCONEXION); "
               "full: every check (default: %(default)s)"),
    )
    parser.add_argument(
        "--junit", metavar="FILE",
        help=_("also write the results as JUnit XML (GitHub Classroom, GitLab CI, Jenkins)"),
    )
    group = parser.add_argument_group(_("starting the server"))
    group.add_argument(
        "--start", metavar="COMMAND",
        help=_("start the server with this command, check it, stop it; {port} in the "
               "command becomes a free port"),
    )
    group.add_argument(
        "--cwd", metavar="DIR", help=_("run the --start command in this directory")
    )
    group.add_argument(
        "--start-timeout", type=number(float, above=True, what="timeout"), default=10.0,
        metavar="SECONDS",
        help=_("seconds the server has to accept a connection (default: %(default)s)"),
    )
    group.add_argument(
        "--stop-grace", type=number(float, what="grace period"), default=3.0,
        metavar="SECONDS",
        help=_("seconds between SIGTERM and SIGKILL when stopping it (default: %(default)s)"),
    )
    group = parser.add_argument_group(_("grading a class"))
    group.add_argument(
        "--class", dest="class_file", metavar="FILE",
        help=_("CSV with the columns name, directory, command: check every student's "
               "server in turn (docs/classroom.md)"),
    )
    group.add_argument(
        "--out", metavar="DIR",
        help=_("where --class writes its reports (default: {default})").format(
            default=DEFAULT_OUT),
    )


def check_classroom_options(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Usage errors between these options; sets ``args.checks`` for ``--level``."""
    if args.start is not None and args.class_file is not None:
        parser.error(_("argument --class: not with --start (the class file has the commands)"))
    if args.cwd is not None:
        if args.start is None:
            parser.error(_("argument --cwd: needs --start"))
        if not os.path.isdir(args.cwd):
            parser.error(_("argument --cwd: no directory {path!r}").format(path=args.cwd))
    if args.out is not None and args.class_file is None:
        parser.error(_("argument --out: needs --class"))
    if args.class_file is not None and args.json:
        parser.error(_("argument --json: not with --class (each student gets a JSON report)"))
    if args.junit is not None and not Path(args.junit).resolve().parent.is_dir():
        parser.error(_("argument --junit: no directory for {path!r}").format(path=args.junit))
    if args.level == BASIC and args.only:
        parser.error(_("argument --only: not with --level basic"))
    if not args.only:
        args.checks = checks_of(args.level)


def check_started_server(args: argparse.Namespace, ssl_context, prog: str) -> int:
    """``--start``: start the server, check it, stop it; report all three."""
    port = free_port(args.host) if has_port_placeholder(args.start) else args.port
    target = Target(args.host, port, args.timeout, ssl_context)
    launch = Launch(args.start, args.cwd, args.start_timeout, args.stop_grace)
    if args.json:
        run = run_started(launch, target, args.checks, args.level)
        print(json_run(run))
    else:
        run = _run_in_text(launch, target, args, prog)
    if not _junit(args, [(SUITE_PREFIX, run)], prog):
        return EXIT_UNUSABLE
    if run.start_error is not None:
        return EXIT_UNUSABLE
    return EXIT_PASSED if run.passed else EXIT_FAILED


def _run_in_text(launch: Launch, target: Target, args: argparse.Namespace, prog: str) -> Run:
    report = TextReport()
    command = with_port(launch.command, target.port)
    print(_("{prog}: starting {command!r}").format(prog=prog, command=command), flush=True)

    def started(server) -> None:
        report.start(target.address, len(args.checks), target.timeout)
        print(level_line(args.level), flush=True)

    run = run_started(
        launch, target, args.checks, args.level, on_started=started, on_result=report.result
    )
    if run.start_error is not None:
        print(error_line(prog, run.error), file=sys.stderr)
        for line in run.server_lines()[1:]:
            print(line, file=sys.stderr)
        return run
    report.finish(run.results, run.seconds)
    for line in run.server_lines():
        print(line)
    return run


def grade(args: argparse.Namespace, ssl_context, prog: str) -> int:
    """``--class``: every student in turn, their reports, a summary table and CSV."""
    try:
        students = read_class(args.class_file)
    except ClassFileError as exc:
        print(error_line(prog, exc), file=sys.stderr)
        return EXIT_UNUSABLE
    out_dir = Path(args.out or DEFAULT_OUT)
    grading = Grading(
        args.host, args.port, args.timeout, args.checks, args.level, args.start_timeout,
        args.stop_grace, ssl_context,
    )
    grading_line = ngettext(
        "{prog}: grading {count} student at level {level}; reports in {out}",
        "{prog}: grading {count} students at level {level}; reports in {out}",
        len(students),
    )
    print(grading_line.format(prog=prog, count=len(students), level=args.level, out=out_dir),
          flush=True)

    def graded(index: int, student, run: Run) -> None:
        verdict = _("PASSED") if run.passed else _("FAILED")
        passed = sum(result.passed for result in run.results)
        print(f"[{index}/{len(students)}] {student.name}: {verdict} "
              f"({passed}/{len(run.results)})", flush=True)

    try:
        results = grade_class(students, grading, out_dir, on_graded=graded)
    except OSError as exc:
        print(error_line(prog, exc), file=sys.stderr)
        return EXIT_UNUSABLE
    print()
    print(summary_table(results, args.level))
    print(_("summary: {path}").format(path=out_dir / SUMMARY_FILE))
    if not _junit(args, [(student.name, run) for student, run in results], prog):
        return EXIT_UNUSABLE
    return EXIT_PASSED if all(run.passed for _student, run in results) else EXIT_FAILED


def write_plain_junit(
    args: argparse.Namespace, target: Target, results, seconds: float, prog: str
) -> None:
    """``--junit`` for a run against a server someone else started (a failure to write
    it is one line; the exit status stays the checks')."""
    _junit(args, [(SUITE_PREFIX, Run(args.level, target, results, seconds))], prog)


def _junit(args: argparse.Namespace, suites, prog: str) -> bool:
    """Write ``--junit`` if asked; ``False`` (and one line on stderr) if it cannot be."""
    if not args.junit:
        return True
    try:
        write_junit(args.junit, suites)
    except OSError as exc:
        print(error_line(prog, f"{args.junit}: {exc.strerror or exc}"), file=sys.stderr)
        return False
    return True
