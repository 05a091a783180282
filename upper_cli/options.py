"""Option types and address options shared by every command line of the project.

A bad value is a usage error (exit 2) with one line that names the option and
what it accepts, never a traceback.
"""

import argparse
import math
import os

from upper_protocol.address import DEFAULT_HOST, DEFAULT_PORT

HOST_VARIABLE = "UPPER_HOST"
PORT_VARIABLE = "UPPER_PORT"


def number(kind=float, *, minimum=0, above=False, maximum=None, what="value"):
    """An argparse type: a finite ``kind`` that is >= ``minimum`` (> with ``above``),
    and <= ``maximum`` when given."""
    relation = ">" if above else ">="
    if maximum is not None:
        wanted = f"a number from {minimum} to {maximum}"
    else:
        wanted = f"a number {relation} {minimum}"

    def parse(text: str):
        try:
            value = kind(text)
        except (TypeError, ValueError):
            value = None
        if (
            value is None
            or not math.isfinite(value)
            or value < minimum
            or (above and value == minimum)
            or (maximum is not None and value > maximum)
        ):
            raise argparse.ArgumentTypeError(f"invalid {what} {text!r}: use {wanted}")
        return value

    parse.__name__ = what  # argparse names the type in some messages
    return parse


def port(lowest: int):
    """A port from ``lowest`` to 65535 (0: the server picks one)."""
    return number(int, minimum=lowest, maximum=65535, what="port")


def add_address_options(parser: argparse.ArgumentParser, *, host_help: str, port_help: str):
    """``--host`` and ``--port``, defaulting to ``$UPPER_HOST`` and ``$UPPER_PORT``."""
    parser.add_argument(
        "--host",
        default=os.environ.get(HOST_VARIABLE, DEFAULT_HOST),
        help=f"{host_help} (default: ${HOST_VARIABLE} or {DEFAULT_HOST})",
    )
    parser.add_argument(
        "--port",
        default=None,
        help=f"{port_help} (default: ${PORT_VARIABLE} or {DEFAULT_PORT})",
    )


def resolve_port(parser: argparse.ArgumentParser, args: argparse.Namespace, lowest: int) -> None:
    """Check ``--port``, or ``$UPPER_PORT`` when it is absent; a bad one is a usage error."""
    if args.port is not None:
        source, text = "argument --port", args.port
    else:
        source, text = PORT_VARIABLE, os.environ.get(PORT_VARIABLE, str(DEFAULT_PORT))
    try:
        args.port = port(lowest)(str(text))
    except argparse.ArgumentTypeError as exc:
        parser.error(f"{source}: {exc}")
