"""``python -m upper.check`` (``upper-check``): check a running server against the protocol.

Exit status: 0 every check passed, 1 some check failed or was not run,
2 usage error or nothing listening at the address.
"""

import argparse
import sys
import time

from upper.check.checks import CHECKS
from upper.check.exits import EXIT_FAILED, EXIT_PASSED, EXIT_UNUSABLE
from upper.check.outcome import ServerGone
from upper.check.report import TextReport, json_document
from upper.check.runner import preflight, run_checks, select_checks
from upper.check.target import Target
from upper.cli.options import (
    add_address_options,
    add_client_tls_options,
    number,
    resolve_client_address,
)
from upper.cli.parser import (
    CommandLine,
    choose_language,
    error_line,
    fill,
    interrupted_status,
    invoked_as,
    usage_error_status,
    warn,
)
from upper.client.duplex import DEFAULT_TIMEOUT
from upper.client.tls import TLSSetupError, client_context_from
from upper.i18n import _

SCRIPT = "upper-check"


def prog() -> str:
    return invoked_as(SCRIPT)


def build_parser() -> argparse.ArgumentParser:
    checks = _("checks: {names}").format(names=", ".join(c.name for c in CHECKS))
    parser = CommandLine(
        prog=prog(),
        description=_(
            "Check that the server at an address speaks the UPPER protocol (docs/protocol.md): "
            "the classroom's 'hola servidor' and 'DESCONEXION' first, then one check per rule, "
            "each on a new connection."
        ),
        epilog=fill(checks),
        exit_statuses=[
            (EXIT_PASSED, _("every check passed")),
            (EXIT_FAILED, _("some check failed or was not run")),
            usage_error_status(_("usage error, or nothing listening at the address")),
            interrupted_status(),
        ],
    )
    add_address_options(
        parser,
        host_help=_("server address; HOST:PORT, [::1]:PORT, tcp:// and tls:// also work"),
        port_help=_("server port"),
    )
    parser.add_argument(
        "--timeout",
        type=number(float, minimum=0, above=True, what=_("timeout")),
        default=DEFAULT_TIMEOUT,
        help=_("seconds to wait for each reply or close before calling the server late "
               "(default: %(default)s)"),
    )
    parser.add_argument(
        "--only",
        nargs="+",
        metavar="NAME",
        help=_("run only these checks (names as listed below)"),
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help=_("print the results as one JSON document (in English whatever the language)"),
    )
    add_client_tls_options(parser)
    from upper.check.classroom_cli import add_classroom_options  # it imports this module

    add_classroom_options(parser)
    return parser


def parse_args(argv=None) -> argparse.Namespace:
    choose_language(sys.argv[1:] if argv is None else list(argv), prog())
    parser = build_parser()
    args = parser.parse_args(argv)
    resolve_client_address(parser, args)
    try:
        args.checks = select_checks(args.only)
    except KeyError as unknown:
        parser.error(
            _("argument --only: no check named {name}").format(name=repr(unknown.args[0]))
        )
    from upper.check.classroom_cli import check_classroom_options

    check_classroom_options(parser, args)
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        ssl_context = client_context_from(args, warn=lambda message: warn(prog(), message))
    except TLSSetupError as exc:
        print(error_line(prog(), exc), file=sys.stderr)
        return EXIT_UNUSABLE
    from upper.check import classroom_cli

    if args.class_file is not None:
        return classroom_cli.grade(args, ssl_context, prog())
    if args.start is not None:
        return classroom_cli.check_started_server(args, ssl_context, prog())
    target = Target(args.host, args.port, args.timeout, ssl_context)
    try:
        preflight(target)
    except ServerGone as gone:
        print(error_line(prog(), gone), file=sys.stderr)
        return EXIT_UNUSABLE
    started = time.monotonic()
    if args.json:
        results = run_checks(target, args.checks)
        document = json_document(target.address, target.timeout, results,
                                 time.monotonic() - started, level=args.level)
        print(document)
    else:
        report = TextReport()
        report.start(target.address, len(args.checks), target.timeout)
        print(classroom_cli.level_line(args.level), flush=True)
        results = run_checks(target, args.checks, on_result=report.result)
        report.finish(results, time.monotonic() - started)
    classroom_cli.write_plain_junit(args, target, results, time.monotonic() - started, prog())
    return EXIT_PASSED if all(result.passed for result in results) else EXIT_FAILED


def run() -> None:
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
    except BrokenPipeError:
        sys.exit(141)
