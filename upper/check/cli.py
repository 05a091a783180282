"""``python -m upper.check`` (``upper-check``): check a running server against the protocol.

Exit status: 0 every check passed, 1 some check failed or was not run,
2 usage error or nothing listening at the address.
"""

import argparse
import sys
import textwrap
import time

from upper.check.checks import CHECKS
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
from upper.client.duplex import DEFAULT_TIMEOUT
from upper.client.tls import TLSSetupError, client_context_from
from upper.i18n import _

PROG = "upper-check"
EXIT_PASSED, EXIT_FAILED, EXIT_UNUSABLE = 0, 1, 2


def build_parser() -> argparse.ArgumentParser:
    description = (
        "Check that the server at an address speaks the UPPER protocol (docs/protocol.md): "
        "the classroom's 'hola servidor' and 'DESCONEXION' first, then one check per rule, "
        "each on a new connection."
    )
    checks = "checks: " + ", ".join(c.name for c in CHECKS)
    parser = argparse.ArgumentParser(
        prog=PROG,
        description=textwrap.fill(description, 79),
        epilog=textwrap.fill(checks, 79, break_on_hyphens=False),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_address_options(
        parser,
        host_help=_("server address; HOST:PORT, [::1]:PORT, tcp:// and tls:// also work"),
        port_help="server port",
    )
    parser.add_argument(
        "--timeout",
        type=number(float, minimum=0, above=True, what="timeout"),
        default=DEFAULT_TIMEOUT,
        help="seconds to wait for each reply or close before calling the server late "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--only", nargs="+", metavar="NAME", help="run only these checks (names as listed below)"
    )
    parser.add_argument(
        "--json", action="store_true", help="print the results as one JSON document"
    )
    add_client_tls_options(parser)
    return parser


def parse_args(argv=None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    resolve_client_address(parser, args)
    try:
        args.checks = select_checks(args.only)
    except KeyError as unknown:
        parser.error(f"argument --only: no check named {unknown.args[0]!r} (see --help)")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        ssl_context = client_context_from(args, warn=warn)
    except TLSSetupError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return EXIT_UNUSABLE
    target = Target(args.host, args.port, args.timeout, ssl_context)
    try:
        preflight(target)
    except ServerGone as gone:
        print(f"{PROG}: error: {gone}", file=sys.stderr)
        return EXIT_UNUSABLE
    started = time.monotonic()
    if args.json:
        results = run_checks(target, args.checks)
        print(json_document(target.address, target.timeout, results, time.monotonic() - started))
    else:
        report = TextReport()
        report.start(target.address, len(args.checks), target.timeout)
        results = run_checks(target, args.checks, on_result=report.result)
        report.finish(results, time.monotonic() - started)
    return EXIT_PASSED if all(result.passed for result in results) else EXIT_FAILED


def warn(message: str) -> None:
    print(f"{PROG}: warning: {message}", file=sys.stderr)


def run() -> None:
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
    except BrokenPipeError:
        sys.exit(141)
