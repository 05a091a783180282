"""TLS for the server: the ``SSLContext`` its flags describe, and ``TLSConnection``.

``TLSConnection`` is a ``Connection`` whose bytes pass through an
``ssl.SSLObject`` over two ``MemoryBIO``\\ s: the object is sans-I/O, so the
connection keeps its own raw non-blocking socket, its one watcher, its state
machine and its backpressure, and only adds encryption on the way in and out.
It runs the one receive loop (``Connection._answer``) through two hooks:
``_decrypt`` (what was read, to the plaintext of its whole records) and
``_encrypt`` (a reply, to records); a plaintext message pays one test of each
hook, no call.

The handshake runs in the connection's greenlet, in ``State.HANDSHAKING``,
never in the accept loop; the sweeper bounds it with ``Timeouts.handshake``
from the accept on (gevent's ``StreamServer(ssl_context=...)`` has no such
bound: a peer that never sends a ClientHello would hold its slot forever).

Error handling: a failed handshake (garbage, a plaintext client, a refused
client certificate, a timeout, the peer leaving) closes that connection only;
it is counted in ``ServerStats.failed_handshakes`` and logged at info with the
peer's address and the reason, never with a traceback. A bad certificate or key
given to the server is a ``CertificateFilesError`` with a one-line message, at start.
A client's attempt to renegotiate (TLS 1.2) is refused by OpenSSL: that is a
refused handshake, not an error of ours, so it is logged at info, counted in
``ServerStats.refused_renegotiations``, and the connection is closed.

Closing: on ``DESCONEXION`` (or EOF, or a shutdown) every reply is sent, then
the server's close_notify, then its FIN, then the usual drain: the client sees a
clean TLS end of stream, never a reset. A client that closes without
close_notify (a ragged EOF) gets its answers and the same close; that is its
business, logged at debug.
"""

import logging
import ssl

from upper.green import READ, watch
from upper.i18n import Message
from upper.server import defaults
from upper.server.connection import Connection, State, _Rejected
from upper.server.defaults import RECV_SIZE

log = logging.getLogger(__name__)

__all__ = ["CertificateFilesError", "TLSConnection", "server_context"]


class CertificateFilesError(Exception):
    """The server's certificate, key or client CA cannot be used (a one-line message)."""


_MISMATCH = {"KEY_VALUES_MISMATCH", "NO_CERTIFICATE_ASSIGNED"}
"""OpenSSL's reasons for a key that is not the certificate's (another type: not assigned)."""
_NOT_TLS = {"WRONG_VERSION_NUMBER", "HTTP_REQUEST", "UNEXPECTED_RECORD", "UNEXPECTED_MESSAGE"}


def _reason(exc: Exception) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError) and exc.verify_message:
        return f"client certificate refused: {exc.verify_message}"
    if isinstance(exc, ssl.SSLError):
        reason = exc.reason or exc.strerror or str(exc)
        if reason in _NOT_TLS:
            return f"not TLS, a plaintext client? ({reason})"
        return reason.lower().replace("_", " ")
    if isinstance(exc, OSError):
        return exc.strerror or str(exc)
    return str(exc)


def server_context(
    cert: str,
    key: str | None = None,
    client_ca: str | None = None,
    ciphers: str | None = None,
):
    """The server's ``SSLContext``: the standard library's defaults for a server
    (``create_default_context(Purpose.CLIENT_AUTH)``) with TLS 1.2 at least, TLS 1.2's
    suites from ``ciphers`` (OpenSSL's cipher-list syntax; ``defaults.TLS_CIPHERS`` when
    None), the certificate chain of ``cert`` (its key in ``key`` or in ``cert`` itself),
    and, with ``client_ca``, client certificates required and verified against that CA.
    """
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.set_ciphers(defaults.TLS_CIPHERS if ciphers is None else ciphers)
    except ssl.SSLError:
        raise CertificateFilesError(
            Message(
                "--tls-ciphers {ciphers}: OpenSSL selects no cipher suite from it",
                ciphers=repr(ciphers),
            )
        ) from None
    for option, path in (("--tls-cert", cert), ("--tls-key", key), ("--tls-client-ca", client_ca)):
        if path is None:
            continue
        try:
            with open(path, "rb"):
                pass
        except OSError as exc:
            raise CertificateFilesError(
                Message(
                    "{option} {path}: cannot read it: {reason}",
                    option=option, path=path, reason=_reason(exc),
                )
            ) from None
    try:
        context.load_cert_chain(cert, key)
    except ssl.SSLError as exc:
        if exc.reason in _MISMATCH:
            what = Message(
                "the key in {key} does not match the certificate {cert}", key=key or cert, cert=cert
            )
        else:
            detail = "" if exc.reason in (None, "PEM lib") else f" ({_reason(exc)})"
            if key:
                what = Message(
                    "cannot use {cert} with {key}: it needs a PEM certificate and its private "
                    "key{detail}", cert=cert, key=key, detail=detail,
                )
            else:
                what = Message(
                    "cannot use {cert}: it needs a PEM certificate and its private key{detail}",
                    cert=cert, detail=detail,
                )
        raise CertificateFilesError(what) from None
    if client_ca is not None:
        try:
            context.load_verify_locations(cafile=client_ca)
        except ssl.SSLError as exc:
            raise CertificateFilesError(
                Message(
                    "--tls-client-ca {path}: not a PEM CA certificate ({reason})",
                    path=client_ca, reason=_reason(exc),
                )
            ) from None
        context.verify_mode = ssl.CERT_REQUIRED
    return context


class HandshakeFailed(Exception):
    """The handshake did not complete; the message is why."""


_RENEGOTIATION_REFUSED = {"NO_RENEGOTIATION", "SSLV3_ALERT_HANDSHAKE_FAILURE"}
"""OpenSSL's reasons when a client asks to renegotiate after the handshake: its own
``no renegotiation`` alert, or the handshake failure it reports for a refused one."""


class TLSConnection(Connection):
    """A ``Connection`` that speaks TLS (see the module's docstring)."""

    __slots__ = ("tls", "_incoming", "_outgoing", "_secure")
    opens_with_a_handshake = True

    def __init__(self, sock, address: tuple, server) -> None:
        super().__init__(sock, address, server)
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self.tls = server.ssl_context.wrap_bio(self._incoming, self._outgoing, server_side=True)
        self._secure = False
        """The handshake completed: replies and close_notify can be sent."""

    # -- the handshake --------------------------------------------------------

    def _answer(self, input_ready: bool) -> None:
        if not self._secure:
            if self.finish_pending:
                return  # stopping before the handshake: nothing to answer
            try:
                self._handshake()
            except HandshakeFailed as why:
                self._handshake_failed(str(why))
                return
            input_ready = True  # the client's first records may have come with its Finished
            if self._incoming.pending:
                data = self._decrypt(b"")
                if data and self._answer_input(data):
                    return
        super()._answer(input_ready)

    def _handshake(self) -> None:
        tls = self.tls
        received = self.server.receive_view  # shared: copied into the BIO before any switch
        watch(self._watcher, READ, self.greenlet.switch)
        self._enter(State.HANDSHAKING)
        try:
            while True:
                try:
                    tls.do_handshake()
                    break
                except ssl.SSLWantReadError:
                    pass
                except ssl.SSLError as exc:
                    self._flush_handshake()  # the alert tells the peer why
                    raise HandshakeFailed(_reason(exc)) from None
                self._flush_handshake()
                size = self._receive()
                if not size:
                    raise HandshakeFailed("the peer closed the connection")
                self._incoming.write(received[:size])
            self._flush_handshake()
        except (ConnectionResetError, BrokenPipeError) as exc:
            raise HandshakeFailed(f"connection lost: {exc.strerror}") from None
        # An interrupt (ThrownAction) leaves in HANDSHAKING: Connection._act decides in it.
        self._enter(State.RUNNING)
        self._secure = True
        self.active_at = self.server.loop.now()
        if log.isEnabledFor(logging.DEBUG):
            log.debug("%s: TLS %s, %s", self.peer, tls.version(), tls.cipher()[0])

    def _flush_handshake(self) -> None:
        """Send what the handshake wrote, waiting (still ``HANDSHAKING``) if the socket is full."""
        data = self._outgoing.read()
        if data:
            self._send_rest(data, 0, State.HANDSHAKING)

    def _handshake_failed(self, why: str) -> None:
        self.server.stats.failed_handshakes += 1
        log.info("%s: TLS handshake failed: %s", self.peer, why)

    def _reject(self) -> None:
        """``Action.REJECT`` while ``HANDSHAKING`` is the handshake timeout."""
        if self.state is not State.HANDSHAKING:
            super()._reject()
            return
        self._handshake_failed(f"not done within {self.server.timeouts.handshake}s")

    def _take_leftover(self, leftover: bytes) -> bool:
        """What came after a PROXY header is the start of the TLS handshake."""
        self._incoming.write(leftover)
        return True

    # -- the receive loop's hooks -----------------------------------------------

    def _decrypt(self, ciphertext) -> bytes:
        """The plaintext of every whole record received so far (``b""``: none yet).

        A close_notify (the client's clean end of input) sets ``finish_pending``: what came
        before it is answered, then the session finishes. What OpenSSL writes while reading
        (the answer to a KeyUpdate) is sent before any reply. At most one read's records
        and one partial record are decrypted at a time: the reply is sent before the next
        read (backpressure).
        """
        incoming, tls = self._incoming, self.tls
        incoming.write(ciphertext)
        parts = []
        try:
            while True:
                data = tls.read(RECV_SIZE)
                if not data:
                    self.finish_pending = True  # close_notify: the SSLObject returns b""
                    break
                parts.append(data)
                # Nothing left to decrypt: stop here rather than pay for the SSLWantReadError
                # another read would raise (OpenSSL takes one record at a time from the BIO).
                if not incoming.pending and not tls.pending():
                    break
        except ssl.SSLWantReadError:
            pass  # a record not whole yet
        except ssl.SSLError as exc:
            if exc.reason not in _RENEGOTIATION_REFUSED:
                raise
            self._renegotiation_refused()
        if self._outgoing.pending:
            self._send_rest(self._outgoing.read(), 0)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def _renegotiation_refused(self) -> None:
        """The client asked to renegotiate: OpenSSL refused it and its alert says so. Not our
        error, a refused handshake: counted apart, logged at info, closed without a reply."""
        self.server.stats.refused_renegotiations += 1
        log.info("%s: closed: TLS renegotiation refused", self.peer)
        if self._outgoing.pending:
            try:
                self.sock.send(self._outgoing.read())  # the alert, if the socket takes it
            except OSError:
                pass
        raise _Rejected

    def _encrypt(self, data: bytes) -> bytes:
        """A reply as TLS records (the loop's and ``_send_all``'s hook)."""
        self.tls.write(data)
        return self._outgoing.read()

    def _close_cleanly(self) -> None:
        """Every reply is out: close_notify, then FIN and the drain (``Connection``'s)."""
        if not self._secure:
            return  # no session to close; ``_release`` closes the socket
        if self.input_ended:
            log.debug("%s: TCP end of stream without close_notify", self.peer)
        try:
            self.tls.unwrap()
        except ssl.SSLWantReadError:
            pass  # our close_notify is written; the peer's may never come, and need not
        except ssl.SSLError as exc:
            log.debug("%s: no close_notify: %s", self.peer, _reason(exc))
        if self._outgoing.pending:
            self._send_rest(self._outgoing.read(), 0)
        super()._close_cleanly()
