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
import errno
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
from upper.cli.parser import (
    CommandLine,
    choose_language,
    error_line,
    interrupted_status,
    invoked_as,
    usage_error_status,
)
from upper.i18n import _, translated
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

SCRIPT = "upper-server"
READY_NAME = "upper_server"
"""The ready line's first word: tools and tests read that line, so it never changes
(not with the command's name, not with the language)."""
LOG_LEVELS = ("debug", "info", "warning", "error")
AIRPLAY_PORT = 5000
"""macOS's AirPlay Receiver listens on this port by default."""


def prog() -> str:
    return invoked_as(SCRIPT)


def build_parser() -> argparse.ArgumentParser:
    parser = CommandLine(
        prog=prog(),
        description=_("A gevent TCP server that answers every line in uppercase "
                      "(a line that is exactly DESCONEXION ends the session)."),
        exit_statuses=[
            (0, _("stopped by SIGTERM or SIGINT, after the connections' grace period")),
            (1, _("cannot listen on the address, serve the metrics, or use the TLS files")),
            usage_error_status(_("usage error (a bad option or value, or --workers above 1 "
                                 "without fork())")),
            interrupted_status(_("interrupted (Ctrl+C) while starting, before serving")),
        ],
    )
    add_address_options(
        parser, host_help=_("address to listen on"), port_help=_("TCP port, 0 picks a free one")
    )
    parser.add_argument(
        "--log-level",
        choices=LOG_LEVELS,
        default="info",
        help=_("the least severe log records written to stderr (default: %(default)s)"),
    )
    parser.add_argument(
        "--idle-timeout",
        type=number(float),
        default=defaults.IDLE_TIMEOUT,
        metavar="SECONDS",
        help=_("close a connection with no progress in either direction for this long; "
               "0 turns it off (default: %(default)s)"),
    )
    parser.add_argument(
        "--max-connections",
        type=number(int),
        default=0,
        metavar="N",
        help=_("connections served at once; more wait in the listen backlog "
               "(default: the open-file limit less a reserve)"),
    )
    parser.add_argument(
        "--shutdown-timeout",
        type=number(float),
        default=defaults.SHUTDOWN_TIMEOUT,
        metavar="SECONDS",
        help=_("on SIGTERM/SIGINT, how long connections get to finish; on SIGHUP, how long "
               "the replaced workers' sessions get to end on their own first "
               "(default: %(default)s)"),
    )
    parser.add_argument(
        "--workers",
        type=number(int),
        default=1,
        metavar="N",
        help=_("worker processes sharing the port; 0 means one per CPU (default: 1)"),
    )
    parser.add_argument(
        "--stats-interval",
        type=number(float),
        default=0,
        metavar="SECONDS",
        help=_("log the server's counters this often, lines and bytes counted too; "
               "0 turns it off (default: 0)"),
    )
    parser.add_argument(
        "--metrics-port",
        type=port(1),
        default=None,
        metavar="PORT",
        help=_("serve Prometheus metrics at http://METRICS_HOST:PORT/metrics, lines and bytes "
               "counted too (default: off)"),
    )
    parser.add_argument(
        "--metrics-host",
        default="127.0.0.1",
        help=_("address the metrics are served on (default: %(default)s)"),
    )
    parser.add_argument(
        "--proxy-protocol",
        choices=VERSIONS,
        default=None,
        help=_("every connection must begin with a PROXY protocol header of this version "
               "(from a balancer such as HAProxy); the client address it names is the one "
               "logged (default: off)"),
    )
    parser.add_argument(
        "--proxy-allow-from",
        type=networks,
        default=defaults.PROXY_ALLOW_FROM,
        metavar="CIDR[,CIDR...]",
        help=_("with --proxy-protocol, the balancers' addresses; connections from elsewhere "
               "are closed without a reply (default: %(default)s)"),
    )
    parser.add_argument(
        "--proxy-header-timeout",
        type=number(float, above=True),
        default=defaults.PROXY_HEADER_TIMEOUT,
        metavar="SECONDS",
        help=_("with --proxy-protocol, close a connection whose header is not all there "
               "this long after accept (default: %(default)s)"),
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
    choose_language(sys.argv[1:] if argv is None else list(argv), prog())
    parser = build_parser()
    args = parser.parse_args(argv)
    resolve_port(parser, args, lowest=0)
    check_server_tls_options(parser, args)
    if args.workers == 0:
        args.workers = usable_cpus()
    if args.workers > 1 and not can_fork():
        parser.error(
            _("argument --workers: worker processes need fork(), which {platform} "
              "does not have; use --workers 1 (for more cores, run one server per port "
              "behind a balancer)").format(platform=sys.platform)
        )
    return args


def fail(message: str, code: int = 1) -> int:
    print(error_line(prog(), message), file=sys.stderr)
    return code


def listen_failure(exc: ListenError, port: int) -> str:
    """The one line for an address that cannot be listened on; on macOS, port 5000 in use
    is most likely the AirPlay Receiver, which the user may not know runs."""
    message = translated(exc)
    if exc.errno == errno.EADDRINUSE and port == AIRPLAY_PORT and sys.platform == "darwin":
        message += _("; on macOS the AirPlay Receiver usually holds port 5000: turn it off "
                     "(System Settings, General, AirDrop & Handoff) or use another --port")
    return message


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
        return fail(translated(exc))
    raise_open_file_limit()
    inheritance = inherited()
    if inheritance is not None:
        return run_worker(make_server(inheritance.listeners, args, ssl_context), inheritance)
    listeners = systemd.activated_listeners()
    if not listeners:
        try:
            listeners = open_listeners(args.host, args.port, UpperServer.backlog)
        except ListenError as exc:
            return fail(listen_failure(exc, args.port))
    if not args.metrics_port:
        return serve(listeners, args, argv, ssl_context)
    directory = metrics.prepare()
    try:
        try:
            metrics_server = metrics.serve(args.metrics_host, args.metrics_port)
        except OSError as exc:
            shown = format_address(args.metrics_host, args.metrics_port)
            return fail(
                _("cannot serve metrics on {address}: {reason}").format(
                    address=shown, reason=exc.strerror or exc
                )
            )
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
    print(f"{READY_NAME} listening on {addresses}", flush=True)


def run() -> None:
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
