"""``python -m upper_client``: one-shot messages, an interactive session, or a Unix filter."""

import argparse
import os
import sys

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
    interrupted_status,
    invoked_as,
    usage_error_status,
    warn,
)
from upper.client.client import UpperClient
from upper.client.duplex import DEFAULT_TIMEOUT, Duplex
from upper.client.errors import UpperClientError
from upper.client.server_watch import ServerGone, ServerWatch
from upper.client.tls import client_context_from
from upper.i18n import _, ngettext
from upper.protocol import encode_text, ends_session

SCRIPT = "upper-client"


def prog() -> str:
    return invoked_as(SCRIPT)


def build_parser() -> argparse.ArgumentParser:
    parser = CommandLine(
        prog=prog(),
        description=_("Talk to an UPPER server. With MESSAGE arguments: send each and print "
                      "its reply. With a terminal: an interactive session. With piped input: "
                      "a filter that uppercases stdin to stdout through the server."),
        exit_statuses=[
            (0, _("every message answered, or the session ended normally")),
            (1, _("the server could not be reached, or the connection failed")),
            usage_error_status(),
            interrupted_status(),
            (141, _("the reader of the output went away (as in | head)")),
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
        help=_("seconds to wait for the server before giving up (default: %(default)s)"),
    )
    parser.add_argument("messages", nargs="*", metavar="MESSAGE", help=_("lines to send"))
    add_client_tls_options(parser)
    return parser


def parse_args(argv=None) -> argparse.Namespace:
    choose_language(sys.argv[1:] if argv is None else list(argv), prog())
    parser = build_parser()
    args = parser.parse_args(argv)
    resolve_client_address(parser, args)
    for message in args.messages:
        if "\n" in message:
            parser.error(
                _("a MESSAGE cannot contain a newline: pass each line as its own argument")
            )
    return args


def write_line(text: str) -> None:
    # Bytes, not print(): replies may carry invalid UTF-8 that must come out unchanged.
    sys.stdout.buffer.write(encode_text(text) + b"\n")
    sys.stdout.buffer.flush()


def send_messages(client: UpperClient, messages: list[str]) -> int:
    for position, message in enumerate(messages):
        if ends_session(encode_text(message)):
            client.disconnect()
            unsent = len(messages) - position - 1
            if unsent:
                notice = ngettext(
                    "{prog}: DESCONEXION ended the session; {count} message not sent",
                    "{prog}: DESCONEXION ended the session; {count} messages not sent",
                    unsent,
                )
                print(notice.format(prog=prog(), count=unsent), file=sys.stderr)
            return 0
        write_line(client.upper(message))
    client.disconnect()
    return 0


def end_of_input_key() -> str:
    """What ends input at a terminal on this platform."""
    return _("Ctrl+Z then Enter") if sys.platform == "win32" else "Ctrl+D"


def interactive(client: UpperClient) -> int:
    try:
        import readline  # noqa: F401  (line editing and history for input())
    except ImportError:
        pass
    key = end_of_input_key()
    print(
        _("connected to {address}; type DESCONEXION or press {key} to leave").format(
            address=client.address, key=key
        )
    )
    connection = client.connection
    watch = ServerWatch(connection, lambda: server_gone_unattended(connection, watch))
    with watch:
        while True:
            try:
                line = watch.read_line("> ")
            except EOFError:
                print()
                break
            except ServerGone:
                print()
                raise connection.failure(watch.cause) from None
            if ends_session(encode_text(line)):
                break
            write_line(client.upper(line))
    client.disconnect()
    print(_("connection closed"))
    return 0


def server_gone_unattended(connection: Duplex, watch: ServerWatch) -> None:
    """The server went away and input() cannot be interrupted here: say so and end."""
    print(file=sys.stdout, flush=True)
    print(error_line(prog(), connection.failure(watch.cause)), file=sys.stderr, flush=True)
    os._exit(1)


def filter_stdin(client: UpperClient) -> int:
    """Pipe stdin through the server to stdout, pipelined, in bounded memory."""
    out = sys.stdout.buffer
    for chunk in client.stream(source_fd=sys.stdin.fileno(), half_close=True):
        out.write(chunk)
        out.flush()
    return 0


def main(argv=None) -> int:
    args = parse_args(argv)
    client = None
    try:
        ssl_context = client_context_from(args, warn=lambda message: warn(prog(), message))
        client = UpperClient(args.host, args.port, args.timeout, ssl_context=ssl_context)
        client.connect()
        if args.messages:
            return send_messages(client, args.messages)
        if sys.stdin.isatty():
            return interactive(client)
        return filter_stdin(client)
    except UpperClientError as exc:
        print(error_line(prog(), exc), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader of our stdout went away (`| head`): stop quietly, as Unix filters do.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    finally:
        if client is not None:
            client.close()


def run() -> None:
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
