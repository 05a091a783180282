"""``python -m upper_server``: the command line (arguments, messages, exit codes).

This module only decides what to run: ``serving.py`` runs one server until a
signal, ``workers.py`` supervises pre-forked workers, ``listener.py`` opens the
listening sockets and ``limits.py`` raises the open-file limit.

Error handling:

  A user's mistake is one line on stderr and an exit code, never a traceback.
  A bad flag value, or a feature this platform lacks (``--workers`` above 1
  without ``os.fork``), is a usage error: exit 2. An address that cannot be
  listened on, or a TLS certificate or key that is missing, unreadable or
  mismatched: exit 1. A graceful stop on SIGTERM or SIGINT: exit 0.
"""

import argparse
import ipaddress
import logging
import sys

from upper.cli.options import (
    add_address_options,
    add_server_tls_options,
    check_server_tls_options,
    number,
    port,
    resolve_port,
)
from upper.protocol.address import format_address
from upper.protocol.proxy import VERSIONS
from upper.server import defaults, metrics, systemd
from upper.server.handover import Handover
from upper.server.limits import raise_open_file_limit
from upper.server.listener import ListenError, addresses_text, open_listeners
from upper.server.server import UpperServer
from upper.server.serving import Outcome, serve_until_signalled
from upper.server.tls import CertificateFilesError, server_context
from upper.server.workers import (
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
        default=defaults.IDLE_TIMEOUT,
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
        default=defaults.SHUTDOWN_TIMEOUT,
        metavar="SECONDS",
        help="on SIGTERM/SIGINT, how long connections get to finish; on SIGHUP, how long "
        "the replaced workers' sessions get to end on their own first (default: %(default)s)",
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
        help="log the server's counters this often, lines and bytes counted too; "
        "0 turns it off (default: 0)",
    )
    parser.add_argument(
        "--metrics-port",
        type=port(1),
        default=None,
        metavar="PORT",
        help="serve Prometheus metrics at http://METRICS_HOST:PORT/metrics, lines and bytes "
        "counted too (default: off)",
    )
    parser.add_argument(
        "--metrics-host",
        default="127.0.0.1",
        help="address the metrics are served on (default: %(default)s)",
    )
    parser.add_argument(
        "--proxy-protocol",
        choices=VERSIONS,
        default=None,
        help="every connection must begin with a PROXY protocol header of this version "
        "(from a balancer such as HAProxy); the client address it names is the one logged "
        "(default: off)",
    )
    parser.add_argument(
        "--proxy-allow-from",
        type=networks,
        default=defaults.PROXY_ALLOW_FROM,
        metavar="CIDR[,CIDR...]",
        help="with --proxy-protocol, the balancers' addresses; connections from elsewhere "
        "are closed without a reply (default: %(default)s)",
    )
    parser.add_argument(
        "--proxy-header-timeout",
        type=number(float, above=True),
        default=defaults.PROXY_HEADER_TIMEOUT,
        metavar="SECONDS",
        help="with --proxy-protocol, close a connection whose header is not all there "
        "this long after accept (default: %(default)s)",
    )
    add_server_tls_options(parser, defaults.HANDSHAKE_TIMEOUT)
    return parser


def networks(text: str) -> list:
    """``10.0.0.0/8,::1/128`` -> networks; a bad one is a usage error."""
    try:
        return [ipaddress.ip_network(part.strip()) for part in text.split(",") if part.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def parse_args(argv=None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    resolve_port(parser, args, lowest=0)
    check_server_tls_options(parser, args)
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


def tls_context(args):
    """The ``SSLContext`` the ``--tls-*`` flags describe, read from their files now (each
    worker, and each reload, reads them again), or None; ``CertificateFilesError`` says why not."""
    if not args.tls_cert:
        return None
    return server_context(args.tls_cert, args.tls_key, args.tls_client_ca, args.tls_ciphers)


def make_server(listeners, args, ssl_context=None, connection_class=None) -> UpperServer:
    """The server the options describe; ``connection_class``: ``UpperServer``'s parameter."""
    return UpperServer(
        listeners,
        idle_timeout=args.idle_timeout,
        max_connections=args.max_connections or None,
        shutdown_timeout=args.shutdown_timeout,
        stats_interval=args.stats_interval,
        metrics=metrics.Exporter() if args.metrics_port else None,
        proxy_protocol=args.proxy_protocol,
        proxy_allow_from=args.proxy_allow_from,
        proxy_header_timeout=args.proxy_header_timeout,
        ssl_context=ssl_context,
        handshake_timeout=args.tls_handshake_timeout,
        # Counting lines costs a pass over every byte read: only when something reports them.
        count_traffic=bool(args.stats_interval or args.metrics_port),
        connection_class=connection_class,
    )


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s",
    )
    try:
        ssl_context = tls_context(args)
    except CertificateFilesError as exc:
        return fail(str(exc))
    raise_open_file_limit()
    inheritance = inherited()
    if inheritance is not None:
        return run_worker(make_server(inheritance.listeners, args, ssl_context), inheritance)
    listeners = systemd.activated_listeners()
    if not listeners:
        try:
            listeners = open_listeners(args.host, args.port, UpperServer.backlog)
        except ListenError as exc:
            return fail(str(exc))
    if not args.metrics_port:
        return serve(listeners, args, argv, ssl_context)
    directory = metrics.prepare()
    try:
        try:
            metrics_server = metrics.serve(args.metrics_host, args.metrics_port)
        except OSError as exc:
            shown = format_address(args.metrics_host, args.metrics_port)
            return fail(f"cannot serve metrics on {shown}: {exc.strerror or exc}")
        try:
            return serve(listeners, args, argv, ssl_context)
        finally:
            metrics_server.shutdown()
    finally:
        metrics.remove(directory)


def serve(listeners, args, argv: list[str], ssl_context=None) -> int:
    """Serve ``listeners`` in this process or in workers until stopped; the exit code."""
    addresses = addresses_text(listeners)

    def ready() -> None:
        announce(addresses)
        systemd.notify("READY=1")

    command = worker_command(argv)
    on_worker_exit = metrics.worker_exited if args.metrics_port else lambda pid: None

    def supervise(listeners, count: int, **run_options) -> int:
        supervisor = Supervisor(listeners, count, command, args.shutdown_timeout, on_worker_exit)
        if args.metrics_port:
            metrics.report_workers(lambda: tuple(supervisor.workers))
        return supervisor.run(**run_options)

    if args.workers > 1:
        return supervise(listeners, args.workers, on_ready=ready)
    handover = Handover(listeners, command) if can_fork() else None
    server = make_server(listeners, args, ssl_context)
    outcome = serve_until_signalled(server, ready, on_reload=handover)
    if outcome is Outcome.HANDED_OVER:
        return supervise(handover.listeners, 1, adopt=handover.worker, pending=handover.pending)
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
