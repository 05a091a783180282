"""Option types and address options shared by every command line of the project.

A bad value is a usage error (exit 2) with one line that names the option and
what it accepts, never a traceback.
"""

import argparse
import math
import os

from upper.i18n import _
from upper.protocol.address import DEFAULT_HOST, DEFAULT_PORT

HOST_VARIABLE = "UPPER_HOST"
PORT_VARIABLE = "UPPER_PORT"


def number(kind=float, *, minimum=0, above=False, maximum=None, what=None):
    """An argparse type: a finite ``kind`` that is >= ``minimum`` (> with ``above``),
    and <= ``maximum`` when given. ``what`` names it in errors (translated; "value")."""
    what = what or _("value")
    if maximum is not None:
        wanted = _("a number from {minimum} to {maximum}").format(minimum=minimum, maximum=maximum)
    elif above:
        wanted = _("a number > {minimum}").format(minimum=minimum)
    else:
        wanted = _("a number >= {minimum}").format(minimum=minimum)

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
            raise argparse.ArgumentTypeError(
                _("invalid {what} {value}: use {wanted}").format(
                    what=what, value=repr(text), wanted=wanted
                )
            )
        return value

    parse.__name__ = what  # argparse names the type in some messages
    return parse


def port(lowest: int):
    """A port from ``lowest`` to 65535 (0: the server picks one)."""
    return number(int, minimum=lowest, maximum=65535, what=_("port"))


def add_address_options(parser: argparse.ArgumentParser, *, host_help: str, port_help: str):
    """``--host`` and ``--port``, defaulting to ``$UPPER_HOST`` and ``$UPPER_PORT``."""
    parser.add_argument(
        "--host",
        default=os.environ.get(HOST_VARIABLE, DEFAULT_HOST),
        help=_("{help} (default: ${variable} or {default})").format(
            help=host_help, variable=HOST_VARIABLE, default=DEFAULT_HOST
        ),
    )
    parser.add_argument(
        "--port",
        default=None,
        help=_("{help} (default: ${variable} or {default})").format(
            help=port_help, variable=PORT_VARIABLE, default=DEFAULT_PORT
        ),
    )


def resolve_port(parser: argparse.ArgumentParser, args: argparse.Namespace, lowest: int) -> None:
    """Check ``--port``, or ``$UPPER_PORT`` when it is absent; a bad one is a usage error."""
    if args.port is not None:
        source, text = _("argument {option}").format(option="--port"), args.port
    else:
        source, text = PORT_VARIABLE, os.environ.get(PORT_VARIABLE, str(DEFAULT_PORT))
    try:
        args.port = port(lowest)(str(text))
    except argparse.ArgumentTypeError as exc:
        parser.error(f"{source}: {exc}")


def resolve_client_address(
    parser: argparse.ArgumentParser, args: argparse.Namespace
) -> None:
    """The client side's ``--host`` (the CLI's, the checker's): ``HOST`` with ``--port``, or
    ``HOST:PORT``, ``[::1]:5000``, ``tcp://HOST:PORT``, ``tls://HOST:PORT`` (which turns
    on ``--tls``), as Locust's ``--host`` takes them; then the port is checked."""
    from upper.client.url import AddressError, parse_endpoint  # the one address syntax

    text = args.host
    try:
        endpoint = parse_endpoint(text, port_required=False)
    except AddressError as exc:
        parser.error(_("argument --host: {text!r}: {reason}").format(text=text, reason=exc))
    args.host = endpoint.host
    if endpoint.port is not None:
        if args.port is not None:
            parser.error(_("argument --host: it already has a port; leave out --port"))
        args.port = str(endpoint.port)
    if endpoint.tls:
        args.tls = True
    resolve_port(parser, args, lowest=1)


def add_server_tls_options(parser: argparse.ArgumentParser, handshake_timeout: float) -> None:
    """The server's ``--tls-*`` options (checked by ``check_server_tls_options``);
    ``handshake_timeout`` is the default of ``--tls-handshake-timeout``."""
    group = parser.add_argument_group(_("TLS (the port then speaks TLS only)"))
    group.add_argument(
        "--tls-cert", metavar="FILE", help=_("PEM certificate chain; its key may be in it too")
    )
    group.add_argument("--tls-key", metavar="FILE", help=_("PEM private key of --tls-cert"))
    group.add_argument(
        "--tls-client-ca",
        metavar="FILE",
        help=_("require client certificates signed by this CA (mutual TLS)"),
    )
    group.add_argument(
        "--tls-ciphers",
        metavar="LIST",
        help=_(
            "TLS 1.2 cipher suites, in OpenSSL's cipher-list syntax (default: ECDHE with "
            "AES-GCM or ChaCha20-Poly1305 only; TLS 1.3's suites are always offered)"
        ),
    )
    group.add_argument(
        "--tls-handshake-timeout",
        type=number(float, above=True, what=_("timeout")),
        default=handshake_timeout,
        metavar="SECONDS",
        help=_("a TLS handshake not done this long after the accept fails "
               "(default: %(default)s)"),
    )


def check_server_tls_options(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    for option in ("tls_key", "tls_client_ca", "tls_ciphers"):
        if getattr(args, option) and not args.tls_cert:
            shown = _("argument {option}").format(option="--" + option.replace("_", "-"))
            parser.error(_("{argument}: needs --tls-cert").format(argument=shown))


def add_client_tls_options(
    parser, *, prefix: str = "", cert_prefix: str = "", sentences: bool = False, **extra
) -> None:
    """The client side's TLS options: ``--tls``, ``--cafile``, ``--insecure``, ``--cert``,
    ``--key``, named ``--{prefix}cafile``, ``--{prefix}insecure``, ``--{prefix}{cert_prefix}cert``
    and ``--{prefix}{cert_prefix}key`` (Locust's are ``--tls-cafile``, ``--tls-insecure``,
    ``--tls-client-cert``, ``--tls-client-key``: Locust's own ``--tls-cert``/``--tls-key``
    serve its web UI). ``--tls`` exists only without a prefix.

    ``extra`` goes to every ``add_argument`` (Locust's ``include_in_web_ui``);
    ``sentences`` capitalizes the help texts (labels in Locust's web UI).
    ``upper.client.tls.client_context_from`` turns the parsed values into a context.
    """

    def say(text: str) -> str:
        return text[:1].upper() + text[1:] if sentences else text

    implies = _(" (implies --tls)")

    if not prefix:
        parser.add_argument(
            "--tls",
            action="store_true",
            help=_("connect with TLS, verifying the server against the system's trust store"),
        )
    implied = "" if prefix else implies
    parser.add_argument(
        f"--{prefix}cafile",
        metavar="FILE",
        help=say(_("with TLS, trust the CA certificate(s) in this PEM file") + implied),
        **extra,
    )
    parser.add_argument(
        f"--{prefix}insecure",
        action="store_true",
        help=say(
            _("with TLS, do not verify the server's certificate (a warning says so)") + implied
        ),
        **extra,
    )
    parser.add_argument(
        f"--{prefix}{cert_prefix}cert",
        metavar="FILE",
        help=say(
            _("with TLS, present this client certificate (PEM, with its key or {option})").format(
                option=f"--{prefix}{cert_prefix}key"
            )
            + implied
        ),
        **extra,
    )
    parser.add_argument(
        f"--{prefix}{cert_prefix}key",
        metavar="FILE",
        help=say(_("the private key of the client certificate, if not in its file")),
        **extra,
    )
