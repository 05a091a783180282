"""``python -m upper_server``: the command line."""

import argparse
import logging
import os
import resource
import signal
import sys

from upper_cli.options import add_address_options, number, resolve_port
from upper_protocol.address import format_address
from upper_server.listener import ListenError, open_listener
from upper_server.server import (
    DEFAULT_IDLE_TIMEOUT,
    DEFAULT_SHUTDOWN_TIMEOUT,
    UpperServer,
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
        help="pre-forked worker processes sharing the port; 0 means one per CPU (default: 1)",
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
        args.workers = len(os.sched_getaffinity(0))
    return args


def raise_open_file_limit() -> None:
    """Use every descriptor the hard limit allows: each connection needs one."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):
            pass


def fail(message: str, code: int = 1) -> int:
    print(f"{PROG}: error: {message}", file=sys.stderr)
    return code


def make_server(listener, args) -> UpperServer:
    return UpperServer(
        listener,
        idle_timeout=args.idle_timeout,
        max_connections=args.max_connections or None,
        shutdown_timeout=args.shutdown_timeout,
        stats_interval=args.stats_interval,
    )


def serve_until_signalled(server: UpperServer, on_ready=lambda: None) -> None:
    """Run until SIGTERM or SIGINT, then shut down gracefully.

    ``on_ready`` runs once the handlers are in place: a signal sent as soon as
    the ready line appears must already be a graceful stop.
    """
    import gevent
    from gevent.event import Event

    stop_requested = Event()
    handlers = [
        gevent.signal_handler(signal.SIGTERM, stop_requested.set),
        gevent.signal_handler(signal.SIGINT, stop_requested.set),
    ]
    try:
        on_ready()
        stop_requested.wait()
        logging.getLogger(PROG).info("shutting down")
        server.stop()
    finally:
        for handler in handlers:
            handler.cancel()


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s",
    )
    raise_open_file_limit()
    try:
        listener = open_listener(args.host, args.port, UpperServer.backlog)
    except ListenError as exc:
        return fail(str(exc))
    address = format_address(*listener.getsockname()[:2])
    if args.workers > 1:
        from upper_server.workers import Supervisor

        supervisor = Supervisor(
            listener, args.workers, lambda: make_server(listener, args), args.shutdown_timeout
        )
        return supervisor.run(on_ready=lambda: announce(address))
    server = make_server(listener, args)
    server.start()
    serve_until_signalled(server, on_ready=lambda: announce(address))
    return 0


def announce(address: str) -> None:
    print(f"{PROG} listening on {address}", flush=True)


def run() -> None:
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
