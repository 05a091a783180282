"""Where an UPPER server is: the default address and the command-line options for it.

PROTOCOL.md sets the default, ``127.0.0.1:5000``; ``UPPER_HOST`` and
``UPPER_PORT`` in the environment override it for both command lines.
"""

import argparse
import os

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 5000


def port_type(lowest: int):
    """An argparse type for a port from ``lowest`` to 65535 (0: the server picks one)."""

    def parse(text: str) -> int:
        try:
            port = int(text)
        except ValueError:
            port = -1
        if not lowest <= port <= 65535:
            raise argparse.ArgumentTypeError(
                f"invalid port {text!r}: use a number from {lowest} to 65535"
            )
        return port

    return parse


def add_address_options(parser: argparse.ArgumentParser, *, host_help: str, port_help: str):
    parser.add_argument(
        "--host",
        default=os.environ.get("UPPER_HOST", DEFAULT_HOST),
        help=f"{host_help} (default: $UPPER_HOST or {DEFAULT_HOST})",
    )
    parser.add_argument(
        "--port", default=None, help=f"{port_help} (default: $UPPER_PORT or {DEFAULT_PORT})"
    )


def resolve_port(parser: argparse.ArgumentParser, args: argparse.Namespace, lowest: int) -> None:
    """Check ``--port``, or ``$UPPER_PORT`` when it is absent; a bad one is a usage error."""
    parse = port_type(lowest)
    if args.port is not None:
        source, text = "argument --port", args.port
    else:
        source, text = "UPPER_PORT", os.environ.get("UPPER_PORT", str(DEFAULT_PORT))
    try:
        args.port = parse(str(text))
    except argparse.ArgumentTypeError as exc:
        parser.error(f"{source}: {exc}")
