"""TLS for the server: the ``SSLContext`` its flags describe, and ``TLSConnection``.

``TLSConnection`` is a ``Connection`` whose bytes pass through an
``ssl.SSLObject`` over two ``MemoryBIO``\\ s: the object is sans-I/O, so the
connection keeps its own raw non-blocking socket, its one watcher, its state
machine and its backpressure, and only adds encryption on the way in and out.
The plaintext loop (``Connection._answer``) is untouched: a TLS connection runs
its own variant of it, so no plaintext message pays a branch for TLS.

The handshake runs in the connection's greenlet, in ``State.HANDSHAKING``,
never in the accept loop; the sweeper bounds it with ``Timeouts.handshake``
from the accept on (gevent's ``StreamServer(ssl_context=...)`` has no such
bound: a peer that never sends a ClientHello would hold its slot forever).

Error handling: a failed handshake (garbage, a plaintext client, a refused
client certificate, a timeout, the peer leaving) closes that connection only;
it is counted in ``ServerStats.failed_handshakes`` and logged at info with the
peer's address and the reason, never with a traceback. A bad certificate or key
given to the server is a ``TLSSetupError`` with a one-line message, at start.

Closing: on ``DESCONEXION`` (or EOF, or a shutdown) every reply is sent, then
the server's close_notify, then its FIN, then the usual drain: the client sees a
clean TLS end of stream, never a reset. A client that closes without
close_notify (a ragged EOF) gets its answers and the same close; that is its
business, logged at debug.
"""

import logging
import ssl

from upper.green import READ, WRITE, watch
from upper.i18n import Message
from upper.server.connection import (
    DEFAULT_HANDSHAKE_TIMEOUT,
    RECV_SIZE,
    Action,
    Connection,
    Interrupted,
    State,
)

log = logging.getLogger(__name__)

__all__ = ["DEFAULT_HANDSHAKE_TIMEOUT", "TLSConnection", "TLSSetupError", "server_context"]


class TLSSetupError(Exception):
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


def server_context(cert: str, key: str | None = None, client_ca: str | None = None):
    """The server's ``SSLContext``: the standard library's defaults for a server
    (``create_default_context(Purpose.CLIENT_AUTH)``) with TLS 1.2 at least, the
    certificate chain of ``cert`` (its key in ``key`` or in ``cert`` itself), and,
    with ``client_ca``, client certificates required and verified against that CA.
    """
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    for option, path in (("--tls-cert", cert), ("--tls-key", key), ("--tls-client-ca", client_ca)):
        if path is None:
            continue
        try:
            with open(path, "rb"):
                pass
        except OSError as exc:
            raise TLSSetupError(
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
        raise TLSSetupError(what) from None
    if client_ca is not None:
        try:
            context.load_verify_locations(cafile=client_ca)
        except ssl.SSLError as exc:
            raise TLSSetupError(
                Message(
                    "--tls-client-ca {path}: not a PEM CA certificate ({reason})",
                    path=client_ca, reason=_reason(exc),
                )
            ) from None
        context.verify_mode = ssl.CERT_REQUIRED
    return context


class HandshakeFailed(Exception):
    """The handshake did not complete; the message is why."""


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
                self.server.stats.failed_handshakes += 1
                log.info("%s: TLS handshake failed: %s", self.peer, why)
                return
            input_ready = True  # the client's first records may have come with its Finished
        self._answer_tls(input_ready)

    def _handshake(self) -> None:
        tls = self.tls
        wait = self.server.switch_to_hub
        buffer = self.server.receive_buffer  # shared: copied into the BIO before any switch
        received = self.server.receive_view
        watch(self._watcher, READ, self.greenlet.switch)
        self.state = State.HANDSHAKING
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
                while True:
                    wait()
                    try:
                        size = self.sock.recv_into(buffer)
                    except BlockingIOError:
                        continue
                    break
                if not size:
                    raise HandshakeFailed("the peer closed the connection")
                self._incoming.write(received[:size])
            self._flush_handshake()
        except Interrupted as why:
            # FINISH (a shutdown) goes on to Connection._run: nothing to answer, and no
            # session to close, so the connection just closes.
            if why.action is Action.REJECT:
                timeout = self.server.timeouts.handshake
                raise HandshakeFailed(f"not done within {timeout}s") from None
            raise
        except (ConnectionResetError, BrokenPipeError) as exc:
            raise HandshakeFailed(f"connection lost: {exc.strerror}") from None
        finally:
            if self.state is State.HANDSHAKING:
                self.state = State.RUNNING
        self._secure = True
        self.active_at = self.server.loop.now()
        if log.isEnabledFor(logging.DEBUG):
            log.debug("%s: TLS %s, %s", self.peer, tls.version(), tls.cipher()[0])

    def _flush_handshake(self) -> None:
        """Send what the handshake wrote, waiting (still ``HANDSHAKING``) if the socket is full."""
        data = self._outgoing.read()
        if not data:
            return
        view = memoryview(data)
        wait = self.server.switch_to_hub
        watch(self._watcher, WRITE, self.greenlet.switch)
        try:
            while view:
                try:
                    view = view[self.sock.send(view) :]
                except BlockingIOError:
                    wait()
        finally:
            watch(self._watcher, READ, self.greenlet.switch)

    def _take_leftover(self, leftover: bytes) -> bool:
        """What came after a PROXY header is the start of the TLS handshake."""
        self._incoming.write(leftover)
        return True

    # -- the answer loop over TLS ---------------------------------------------

    def _answer_tls(self, input_ready: bool) -> None:
        """``Connection._answer`` over TLS: the same receive, uppercase, send loop, fairness
        and backpressure, with records decrypted after the read and replies encrypted
        before the send."""
        wait = self.server.switch_to_hub
        buffer = self.server.receive_buffer
        received = self.server.receive_view
        recv_into = self.sock.recv_into
        incoming_write = self._incoming.write
        answer_records = self._answer_records
        reads_per_turn = self.reads_per_turn
        full_reads = 0
        reading, running = State.READING, State.RUNNING
        watch(self._watcher, READ, self.greenlet.switch)
        # Records that came with the handshake's last flight are already in the BIO.
        if self._incoming.pending and answer_records():
            return
        while not self.finish_pending:
            if not input_ready:
                self.state = reading
                wait()
                self.state = running
                full_reads = 0
            try:
                size = recv_into(buffer)
            except BlockingIOError:
                input_ready = False
                continue
            if not size:
                self.input_ended = True
                log.debug("%s: TCP end of stream without close_notify", self.peer)
                self._send_all(self.session.end_of_input())
                return
            self.progressed = True
            incoming_write(received[:size])
            if answer_records():
                return
            if size == RECV_SIZE:
                full_reads += 1
                input_ready = full_reads < reads_per_turn
            else:
                input_ready = False
        self._send_all(self.session.end_of_input())

    def _answer_records(self) -> bool:
        """Decrypt and answer every whole record received; True when the session is over.

        Plaintext is taken RECV_SIZE at a time and each reply is sent before the next is
        decrypted (backpressure), and nothing is left pending in the ``SSLObject`` when
        this returns, so the greenlet never waits on the socket with input in hand.
        """
        session = self.session
        stats = self.server.stats
        tls = self.tls
        incoming = self._incoming
        while True:
            try:
                data = tls.read(RECV_SIZE)
            except ssl.SSLWantReadError:
                break  # a record not whole yet
            if not data:
                # close_notify (the SSLObject returns b"" for it): the client's clean end
                # of input.
                self._send_all(session.end_of_input())
                return True
            stats.received(data)
            reply = session.feed(data)
            if reply:
                self._send_encrypted(reply)
                stats.sent(reply)
            if session.ended:
                return True
            # Nothing left to decrypt: stop here rather than pay for the SSLWantReadError
            # another read would raise (OpenSSL takes one record at a time from the BIO).
            if not incoming.pending and not tls.pending():
                break
        if self._outgoing.pending:
            self._send_rest(self._outgoing.read(), 0)  # e.g. the answer to a KeyUpdate
        return False

    def _send_encrypted(self, data: bytes) -> None:
        self.tls.write(data)
        records = self._outgoing.read()
        try:
            sent = self.sock.send(records)
        except BlockingIOError:
            sent = 0
        if sent != len(records):
            self._send_rest(records, sent)

    def _send_all(self, data: bytes) -> None:
        if data:
            self._send_encrypted(data)
            self.server.stats.sent(data)

    def _close_cleanly(self) -> None:
        """Every reply is out: close_notify, then FIN and the drain (``Connection``'s)."""
        if not self._secure:
            return  # no session to close; ``_release`` closes the socket
        try:
            self.tls.unwrap()
        except ssl.SSLWantReadError:
            pass  # our close_notify is written; the peer's may never come, and need not
        except ssl.SSLError as exc:
            log.debug("%s: no close_notify: %s", self.peer, _reason(exc))
        if self._outgoing.pending:
            self._send_rest(self._outgoing.read(), 0)
        super()._close_cleanly()
