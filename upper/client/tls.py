"""TLS for the client side: its ``SSLContext`` and the wording of TLS failures.

The client CLI, the conformance checker and the Locust user build their
context with ``client_context`` and report a failed handshake in the words of
``handshake_failure``, so all of them say the same thing for the same fault.
"""

import socket
import ssl

from upper.client.errors import ConnectError
from upper.i18n import Message

_NOT_TLS = {
    "WRONG_VERSION_NUMBER",
    "RECORD_LAYER_FAILURE",
    "PACKET_LENGTH_TOO_LONG",
    "UNEXPECTED_MESSAGE",
    "UNEXPECTED_RECORD",
}


_MISMATCH = {"KEY_VALUES_MISMATCH", "NO_CERTIFICATE_ASSIGNED"}
"""OpenSSL's reasons for a key that is not the certificate's (another type: not assigned)."""


class TLSSetupError(ConnectError):
    """A CA, certificate or key file given to the client cannot be used."""


def client_context(
    cafile: str | None = None,
    *,
    insecure: bool = False,
    cert: str | None = None,
    key: str | None = None,
) -> ssl.SSLContext:
    """The standard library's client defaults (TLS 1.2 at least, the server's certificate
    and host name verified against the system's trust store, or ``cafile``'s CAs).

    ``insecure`` verifies nothing; ``cert`` (with ``key`` unless the key is in it)
    is presented to a server that asks for a client certificate.
    """
    try:
        context = ssl.create_default_context(cafile=cafile)
    except ssl.SSLError as exc:
        raise TLSSetupError(
            Message(
                "CA file {path}: not a PEM CA certificate ({reason})",
                path=cafile, reason=_reason(exc),
            )
        ) from None
    except OSError as exc:
        raise TLSSetupError(
            Message("CA file {path}: {reason}", path=cafile, reason=exc.strerror or exc)
        ) from None
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if key and not cert:
        raise TLSSetupError(Message("a client key needs its certificate (--cert)"))
    if cert:
        try:
            context.load_cert_chain(cert, key)
        except FileNotFoundError as exc:
            raise TLSSetupError(
                Message(
                    "client certificate {path}: {reason}",
                    path=exc.filename or cert, reason=exc.strerror,
                )
            ) from None
        except (OSError, ssl.SSLError) as exc:
            if getattr(exc, "reason", None) in _MISMATCH:
                why = Message("the key does not match the certificate")
            elif isinstance(exc, ssl.SSLError):
                why = Message("it needs a PEM certificate and its private key (--key if not in it)")
            else:
                why = _reason(exc)
            if key:
                message = Message(
                    "cannot use the client certificate {cert} with the key {key}: {reason}",
                    cert=cert, key=key, reason=why,
                )
            else:
                message = Message(
                    "cannot use the client certificate {cert}: {reason}", cert=cert, reason=why
                )
            raise TLSSetupError(message) from None
    return context


def client_context_from(
    args, *, prefix: str = "", cert_prefix: str = "", warn=None
) -> ssl.SSLContext | None:
    """The context the options of ``upper.cli.options.add_client_tls_options`` ask for (the
    same ``prefix`` and ``cert_prefix``), or ``None`` for plaintext. Any of them turns TLS
    on; ``--insecure`` calls ``warn`` with a warning for the user."""
    option = prefix.replace("-", "_")
    cert_option = option + cert_prefix.replace("-", "_")
    cafile = getattr(args, f"{option}cafile")
    insecure = getattr(args, f"{option}insecure")
    cert = getattr(args, f"{cert_option}cert")
    key = getattr(args, f"{cert_option}key")
    if not (getattr(args, "tls", False) or cafile or insecure or cert or key):
        return None
    if insecure and warn is not None:
        warn(
            Message(
                "--insecure: the server's certificate is not verified; anyone in between can "
                "read and change the traffic"
            )
        )
    return client_context(cafile, insecure=insecure, cert=cert, key=key)


def _reason(exc: OSError) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError):
        return exc.verify_message or exc.reason or str(exc)
    if isinstance(exc, ssl.SSLError):
        return (exc.reason or str(exc)).lower().replace("_", " ")
    return exc.strerror or str(exc)


def handshake_failure(exc: OSError, address: str, timeout: float | None) -> str:
    """One line that says why the TLS handshake with ``address`` failed, and what to do."""
    if isinstance(exc, TimeoutError):
        return Message(
            "TLS handshake with {address} timed out after {seconds}s",
            address=address, seconds=timeout,
        )
    if isinstance(exc, ssl.SSLCertVerificationError):
        return Message(
            "TLS: the certificate of {address} could not be verified: {reason} "
            "(if it comes from your own CA, trust it with --cafile FILE)",
            address=address, reason=_reason(exc),
        )
    if isinstance(exc, ssl.SSLEOFError) or isinstance(exc, ConnectionResetError):
        return Message(
            "TLS handshake with {address} failed: the server closed the connection",
            address=address,
        )
    if isinstance(exc, ssl.SSLError) and exc.reason in _NOT_TLS:
        return Message(
            "TLS handshake with {address} failed: the server does not speak TLS "
            "(a plaintext server?) ({reason})",
            address=address, reason=_reason(exc),
        )
    reason = _reason(exc) if isinstance(exc, ssl.SSLError) else exc.strerror or exc
    return Message("TLS handshake with {address} failed: {reason}", address=address, reason=reason)


def session_failure(exc: OSError) -> str | None:
    """What a TLS error met after the handshake means, or ``None`` if it is not a TLS error.

    In TLS 1.3 a server that refuses the client's certificate says so after the
    client has finished its handshake: the first read gets the alert.
    """
    if not isinstance(exc, ssl.SSLError):
        return None
    reason = _reason(exc)
    if "certificate required" in reason:
        return Message(
            "the server requires a client certificate (--cert, --key): {reason}", reason=reason
        )
    if "alert" in reason and ("certificate" in reason or "unknown ca" in reason):
        return Message("the server refused the client certificate: {reason}", reason=reason)
    return Message("TLS error: {reason}", reason=reason)


def shutdown_write(sock: socket.socket) -> None:
    """Send FIN and keep reading: ``SSLSocket.shutdown()`` would drop the TLS session, so
    a duplicate of the descriptor is shut down (the FIN is the socket's, not the fd's)."""
    if not isinstance(sock, ssl.SSLSocket) and not hasattr(sock, "_sslobj"):
        sock.shutdown(socket.SHUT_WR)
        return
    with socket.fromfd(sock.fileno(), sock.family, sock.type) as duplicate:
        duplicate.shutdown(socket.SHUT_WR)
