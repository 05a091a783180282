"""``python -m upper_server``: the command line (arguments, messages, exit codes).

This module only decides what to run: ``serving.py`` runs one server until a
signal, ``workers.py`` supervises pre-forked workers, ``listener.py`` opens the
listening sockets and ``limits.py`` raises the open-file limit.

Error handling:

  A user's mistake is one line on stderr and an exit code, never a traceback.
  A bad flag value, or a feature this platform lacks (``--workers`` above 1
  without ``os.fork``), is a usage error: exit 2. An address that cannot be
  listened on: exit 1. A graceful stop on SIGTERM or SIGINT: exit 0.
"""

import argparse
import logging
import sys

from upper_cli.options import add_address_options, number, resolve_port
from upper_server import systemd
from upper_server.handover import Handover
from upper_server.limits import raise_open_file_limit
from upper_server.listener import ListenError, addresses_text, open_listeners
from upper_server.server import (
    DEFAULT_IDLE_TIMEOUT,
    DEFAULT_SHUTDOWN_TIMEOUT,
    UpperServer,
)
from upper_server.serving import Outcome, serve_until_signalled
from upper_server.workers import (
    Supervisor,
    can_fork,
    inherited,
    run_worker,
    usable_cpus,
    worker_command,
)

PROG = "upper_server"
LOG_LEVELS = ("debug", "info", "warning", "error")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="A gevent TCP server that answers every line in uppercase "
        "(a line that is exactly DESCONEXION ends the session).",
    )
    add_address_options(
        parser, host_help="address to listen on", port_help="TCP port, 0 picks a free one"
    )
    parser.add_argument("--log-level", choices=LOG_LEVELS, default="info")
    parser.add_argument(
        "--idle-timeout",
        type=number(float),
        default=DEFAULT_IDLE_TIMEOUT,
        metavar="SECONDS",
        help="close a connection with no progress in either direction for this long; "
        "0 turns it off (default: %(default)s)",
    )
    parser.add_argument(
        "--max-connections",
        type=number(int),
        default=0,
        metavar="N",
        help="connections served at once; more wait in the listen backlog "
        "(default: the open-file limit less a reserve)",
    )
    parser.add_argument(
        "--shutdown-timeout",
        type=number(float),
        default=DEFAULT_SHUTDOWN_TIMEOUT,
        metavar="SECONDS",
        help="on SIGTERM/SIGINT, how long connections get to finish (default: %(default)s)",
    )
    parser.add_argument(
        "--workers",
        type=number(int),
        default=1,
        metavar="N",
        help="worker processes sharing the port; 0 means one per CPU (default: 1)",
    )
    parser.add_argument(
        "--stats-interval",
        type=number(float),
        default=0,
        metavar="SECONDS",
        help="log the server's counters this often; 0 turns it off (default: 0)",
    )
    return parser


def parse_args(argv=None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    resolve_port(parser, args, lowest=0)
    if args.workers == 0:
        args.workers = usable_cpus()
    if args.workers > 1 and not can_fork():
        parser.error(
            f"argument --workers: worker processes need fork(), which {sys.platform} "
            "does not have; use --workers 1 (for more cores, run one server per port "
            "behind a balancer)"
        )
    return args


def fail(message: str, code: int = 1) -> int:
    print(f"{PROG}: error: {message}", file=sys.stderr)
    return code


def make_server(listeners, args) -> UpperServer:
    return UpperServer(
        listeners,
        idle_timeout=args.idle_timeout,
        max_connections=args.max_connections or None,
        shutdown_timeout=args.shutdown_timeout,
        stats_interval=args.stats_interval,
    )


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s",
    )
    raise_open_file_limit()
    inheritance = inherited()
    if inheritance is not None:
        return run_worker(make_server(inheritance.listeners, args), inheritance)
    listeners = systemd.activated_listeners()
    if not listeners:
        try:
            listeners = open_listeners(args.host, args.port, UpperServer.backlog)
        except ListenError as exc:
            return fail(str(exc))
    addresses = addresses_text(listeners)

    def ready() -> None:
        announce(addresses)
        systemd.notify("READY=1")

    command = worker_command(argv)
    if args.workers > 1:
        supervisor = Supervisor(listeners, args.workers, command, args.shutdown_timeout)
        return supervisor.run(on_ready=ready)
    handover = Handover(listeners, command) if can_fork() else None
    outcome = serve_until_signalled(make_server(listeners, args), ready, on_reload=handover)
    if outcome is Outcome.HANDED_OVER:
        supervisor = Supervisor(handover.listeners, 1, command, args.shutdown_timeout)
        return supervisor.run(adopt=handover.worker, pending=handover.pending)
    if handover is not None:
        handover.wait_for_abandoned()
    return 0


def announce(addresses: str) -> None:
    """The ready line: one line naming every address listened on."""
    print(f"{PROG} listening on {addresses}", flush=True)


def run() -> None:
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
