"""``TcpUser``: a Locust ``User`` for servers that speak the UPPER line protocol.

Locust only ships HTTP users. This module does for the UPPER protocol what
``FastHttpUser`` does for HTTP: ``self.client`` is a client whose every
operation is a Locust request (it fires the ``request`` event), so statistics,
the web UI, the CSV and HTML reports and distributed runs all work as usual.

The protocol itself is not re-implemented here: ``LocustUpperClient`` wraps the
project's :class:`upper_client.UpperClient`, and expected replies come from
:func:`upper.protocol.uppercase`.

The host (``--host`` or the class's ``host``) is ``tcp://HOST:PORT`` or
``HOST:PORT`` (IPv6 as ``[::1]:5000``), or ``tls://HOST:PORT`` for TLS, verified
against the system's trust store or ``--tls-cafile`` (``--tls-insecure``,
``--tls-client-cert``/``--tls-client-key`` as for the client), or with the context of the
user class's ``ssl_context_factory``. A malformed host or an unusable TLS file
stops Locust at start with a clear error instead of turning every request into
a failure; a failed handshake is a ``connect`` failure with its reason.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Callable, Iterable
from time import perf_counter
from types import SimpleNamespace

from gevent import GreenletExit
from locust import User
from locust.exception import CatchResponseError, LocustError, StopUser
from locust.runners import STATE_RUNNING, STATE_SPAWNING

from upper.cli.options import add_client_tls_options
from upper.client.client import UpperClient
from upper.client.duplex import DEFAULT_TIMEOUT
from upper.client.errors import UpperClientError
from upper.client.tls import TLSSetupError, client_context_from
from upper.client.url import AddressError, SchemeError, parse_endpoint
from upper.client.window import ExtraReply, Window
from upper.loadtest import locust_hooks
from upper.protocol import decode_text, encode_text, uppercase

log = logging.getLogger(__name__)

DEFAULT_HOST = "tcp://127.0.0.1:5000"
TLS_OPTIONS = {"prefix": "tls-", "cert_prefix": "client-"}
"""Locust's TLS options: ``--tls-cafile``, ``--tls-insecure``, ``--tls-client-cert`` and
``--tls-client-key`` (Locust's own ``--tls-cert`` and ``--tls-key`` serve its web UI)."""
REQUEST_TYPE = "TCP"
"""The "Type" column of Locust's statistics for every request made by ``TcpUser``."""

_MISMATCH_SHOWN = 60
"""How much of a wrong reply (and of the expected one) a failure message quotes."""


class HostError(ValueError):
    """``--host`` is not ``tcp://HOST:PORT`` or ``HOST:PORT``."""


class WrongReply(Exception):
    """The server answered, but not with the expected uppercase."""


def parse_host(host: str | None) -> tuple[str, int]:
    """``tcp://HOST:PORT``, ``tls://HOST:PORT`` or ``HOST:PORT`` (``None`` or empty: the
    default) -> ``(HOST, PORT)``; ``uses_tls`` tells the scheme."""
    text = (host or DEFAULT_HOST).strip()
    try:
        endpoint = parse_endpoint(text)
    except SchemeError:
        raise HostError(
            f"invalid host {text!r}: the scheme must be tcp:// or tls:// "
            f"(use tcp://HOST:PORT, tls://HOST:PORT or HOST:PORT, e.g. {DEFAULT_HOST})"
        ) from None
    except AddressError as exc:
        raise HostError(
            f"invalid host {text!r}: {exc} (use tcp://HOST:PORT or HOST:PORT, e.g. {DEFAULT_HOST})"
        ) from None
    return endpoint.host, endpoint.port


def uses_tls(host: str | None) -> bool:
    """Whether ``host`` is ``tls://HOST:PORT``."""
    return (host or "").strip().lower().startswith("tls://")


def describe_mismatch(expected: str, reply: str) -> str:
    """``expected 'HOLA', got 'hola'``, quoting long replies around their first difference."""
    if len(expected) > _MISMATCH_SHOWN or len(reply) > _MISMATCH_SHOWN:
        at = next(
            (i for i, (a, b) in enumerate(zip(expected, reply, strict=False)) if a != b),
            min(len(expected), len(reply)),
        )
        start = max(0, at - 10)

        def quote(text: str) -> str:
            part = text[start : start + _MISMATCH_SHOWN]
            more = len(text) > start + len(part)
            return ("…" if start else "") + repr(part) + ("…" if more else "")

        return (
            f"expected {quote(expected)} ({len(expected)} chars), "
            f"got {quote(reply)} ({len(reply)} chars), first difference at char {at}"
        )
    return f"expected {expected!r}, got {reply!r}"


class Stalled(Exception):
    """A request still waiting, longer than the stall threshold, when its user was stopped."""


class UpperReply:
    """What :meth:`LocustUpperClient.request` returns: one line's reply and its outcome.

    ``content`` is the reply as it came, with its ``b"\\n"`` (``b""`` when none came),
    ``text`` the same decoded without it, ``expected`` the reply the line called
    for, ``elapsed`` the seconds from the line's send to the reply (or to the
    failure), and ``error`` why the request failed (``None``: it succeeded).
    """

    __slots__ = ("content", "_expected", "elapsed", "error")

    def __init__(self, content: bytes, expected: bytes, elapsed: float, error) -> None:
        self.content = content
        self._expected = expected
        self.elapsed = elapsed
        self.error: Exception | None = error

    @property
    def text(self) -> str:
        return decode_text(self.content.removesuffix(b"\n"))

    @property
    def expected(self) -> str:
        return decode_text(self._expected.removesuffix(b"\n"))

    def __repr__(self) -> str:
        outcome = "ok" if self.error is None else repr(self.error)
        return f"<{type(self).__name__} {self.text!r} {outcome}>"

    def __enter__(self):
        raise LocustError(_NEEDS_CATCH_RESPONSE.format(call="a with block"))

    def __exit__(self, *exc_info) -> None:  # pragma: no cover - __enter__ always raises
        pass

    def success(self) -> None:
        raise LocustError(_NEEDS_CATCH_RESPONSE.format(call="success()"))

    def failure(self, reason) -> None:
        raise LocustError(_NEEDS_CATCH_RESPONSE.format(call="failure()"))


_NEEDS_CATCH_RESPONSE = (
    "{call} needs request(..., catch_response=True), used as a context manager: "
    "with self.client.request(line, catch_response=True) as reply: reply.failure('why')"
)
_UNDECIDED = object()


class CaughtReply(UpperReply):
    """A reply whose outcome the caller decides, in a ``with`` block (``catch_response=True``).

    The request is recorded when the block ends, with the response time measured
    before it ran: as failed with the reason given to ``failure(reason)``, as
    succeeded after ``success()``, and otherwise by whether the reply was the
    expected one. An exception raised in the block still goes on, after the
    request is recorded.
    """

    __slots__ = ("_record", "_name", "_context", "_outcome", "_entered")

    def __init__(self, reply: UpperReply, record, name: str, context: dict) -> None:
        super().__init__(reply.content, reply._expected, reply.elapsed, reply.error)
        self._record = record
        self._name = name
        self._context = context
        self._outcome = _UNDECIDED
        self._entered = False

    def __enter__(self) -> CaughtReply:
        if self._entered:
            raise LocustError("a reply's with block runs once: its request is already recorded")
        self._entered = True
        return self

    def __exit__(self, *exc_info) -> bool:
        outcome = self.error if self._outcome is _UNDECIDED else self._outcome
        self._record(self._name, self.elapsed, len(self.content), outcome, self._context)
        return False

    def success(self) -> None:
        self._require_block("success()")
        self._outcome = None

    def failure(self, reason: Exception | str) -> None:
        self._require_block("failure()")
        self._outcome = reason if isinstance(reason, Exception) else CatchResponseError(reason)

    def _require_block(self, call: str) -> None:
        if not self._entered:
            raise LocustError(
                f"{call} decides the outcome inside the with block: "
                "with self.client.request(line, catch_response=True) as reply: ..."
            )


def _encoded_line(text: str | bytes, what: str) -> bytes:
    line = encode_text(text) if isinstance(text, str) else bytes(text)
    if b"\n" in line:
        raise ValueError(f"{what} is one line, without its newline: {text!r}")
    return line + b"\n"


class LocustUpperClient:
    """An :class:`~upper_client.UpperClient` whose operations are Locust requests.

    Each request fires one ``request`` event (``request_type`` ``"TCP"``);
    failures are in the statistics, never raised. The client's own errors
    (refused, timed out, reset: ``UpperClientError``) leave it disconnected, so
    ``connected`` tells whether the session can go on.

    A reply's response time runs from its line's send to the reply's arrival, as
    the client measures it (``UpperClient.elapsed``): lines wait for the next
    burst of sends, and that wait is the load generator's, not the server's.

    A request still waiting when its user is stopped (the test stops) is recorded
    as a failure (:class:`Stalled`) if it has waited longer than
    ``stall_threshold`` seconds, and not at all otherwise: a server that
    never answers fails the run even when it stops before ``timeout``.
    """

    __slots__ = (
        "upper_client",
        "stall_threshold",
        "unusable",
        "_upper_line",
        "_fire",
        "_context",
        "_user",
    )

    def __init__(
        self,
        host: str,
        port: int,
        timeout: float,
        request_event,
        user=None,
        stall_threshold: float = 1.0,
        ssl_context=None,
    ) -> None:
        self.upper_client = UpperClient(host, port, timeout, ssl_context=ssl_context)
        self.stall_threshold = stall_threshold
        self.unusable: Exception | None = None
        """Why no connection can be made (a TLS file typed into the web UI that cannot be
        used): every ``connect`` is then a failure with this reason."""
        self._upper_line = self.upper_client.upper_line
        self._fire = request_event.fire
        self._user = user
        self._context: dict = {}

    @property
    def timeout(self) -> float:
        return self.upper_client.timeout

    @timeout.setter
    def timeout(self, seconds: float) -> None:
        self.upper_client.timeout = seconds

    @property
    def connected(self) -> bool:
        return self.upper_client.connected

    def _record(self, name: str, seconds: float, length=0, exception=None, context=None) -> bool:
        """Fire one Locust request event; True when it succeeded."""
        self._fire(
            request_type=REQUEST_TYPE,
            name=name,
            response_time=seconds * 1000,
            response_length=length,
            exception=exception,
            context=self._context if context is None else context,
        )
        return exception is None

    def _since(self, name: str, started: float, exception: Exception | None = None) -> bool:
        """Record a request that began at ``started`` and ends now."""
        return self._record(name, perf_counter() - started, 0, exception)

    def _stalled(self, name: str, started: float, waiting_for: str) -> None:
        """The user is being killed while this request waits: a failure if it waited too long."""
        waited = perf_counter() - started
        if waited > self.stall_threshold:
            self._record(
                name,
                waited,
                0,
                Stalled(f"{waiting_for} after {waited:.1f} s {self._when_stopped()}"),
            )

    def _when_stopped(self) -> str:
        runner = self._user.environment.runner if self._user is not None else None
        if runner is not None and runner.state in (STATE_RUNNING, STATE_SPAWNING):
            return "when its user was stopped"
        return "when the test stopped"

    # -- the session ----------------------------------------------------------------

    def connect(self, name: str = "connect") -> bool:
        """Open the connection (closing any previous one first)."""
        client = self.upper_client
        if not client.host:
            # The user's host is malformed: reported once at start (see _check_hosts_at_start),
            # the user just stops rather than record a failure per attempt.
            raise StopUser()
        if client.connected:
            client.close()
        if self._user is not None:
            self._context = self._user.context()
        if self.unusable is not None:
            return self._record(name, 0.0, 0, self.unusable)
        started = perf_counter()
        try:
            client.connect()
        except UpperClientError as exc:
            return self._since(name, started, exc)
        except GreenletExit:
            self._stalled(name, started, "no connection")
            raise
        return self._since(name, started)

    def disconnect(self, name: str = "DESCONEXION") -> bool:
        """End the session; the response time is the time until the server closes.

        It fails when the server had already closed the connection before
        DESCONEXION was sent, when it resets the connection instead of closing
        it, and when it does not close within the timeout.
        """
        client = self.upper_client
        started = perf_counter()
        try:
            client.disconnect(strict=True)
        except UpperClientError as exc:
            return self._since(name, started, exc)
        except GreenletExit:
            self._stalled(name, started, "no close")
            raise
        return self._since(name, started)

    def close(self) -> None:
        """Drop the connection without a request (no DESCONEXION)."""
        self.upper_client.close()

    # -- one line ---------------------------------------------------------------------

    def request(
        self,
        line: str | bytes,
        *,
        name: str = "upper",
        expected: str | bytes | None = None,
        catch_response: bool = False,
        context: dict | None = None,
    ) -> UpperReply:
        """Send one line and check its reply: one Locust request, returned as a reply.

        ``line`` is text or bytes without its newline. The reply succeeds when it is
        exactly ``expected`` (by default what the protocol says: the line in
        uppercase). ``context`` is merged into the request event's context.

        With ``catch_response=True`` the reply is a context manager
        (:class:`CaughtReply`) whose block decides the outcome with ``success()``
        or ``failure(reason)``, as with Locust's HTTP clients::

            with self.client.request("hola", catch_response=True) as reply:
                if reply.elapsed > 0.5:
                    reply.failure("too slow")
        """
        encoded = _encoded_line(line, "line")
        if expected is None:
            expected_line = uppercase(encoded)
        else:
            expected_line = _encoded_line(expected, "expected")
        reply = UpperReply(*self._round_trip(encoded, expected_line, name))
        merged = self._context if not context else {**self._context, **context}
        if catch_response:
            return CaughtReply(reply, self._record, name, merged)
        self._record(name, reply.elapsed, len(reply.content), reply.error, merged)
        return reply

    def upper(self, text: str, expected: str | None = None, name: str = "upper") -> bool:
        """``request(text)``, returning whether it succeeded."""
        return self.request(text, name=name, expected=expected).error is None

    def upper_line(self, line: bytes, expected: bytes, name: str = "upper") -> bool:
        """``request()`` for lines encoded in advance: ``line`` and ``expected`` end in ``b"\\n"``.

        The cheap way to send many messages: nothing is encoded, decoded or
        computed per message, and no reply object is made (``loadtest/locustfile.py``
        keeps a pool of lines). Returns whether the request succeeded.
        """
        content, _, elapsed, error = self._round_trip(line, expected, name)
        self._fire(
            request_type=REQUEST_TYPE,
            name=name,
            response_time=elapsed * 1000,
            response_length=len(content),
            exception=error,
            context=self._context,
        )
        return error is None

    def _round_trip(self, line: bytes, expected: bytes, name: str) -> tuple:
        """Send ``line``, wait for its reply and check it: ``UpperReply``'s fields, not recorded."""
        started = perf_counter()
        try:
            content = self._upper_line(line)
        except UpperClientError as exc:
            return b"", expected, perf_counter() - started, exc
        except GreenletExit:
            self._stalled(name, started, "no reply")
            raise
        if content == expected:
            return content, expected, self.upper_client.elapsed, None
        error = WrongReply(describe_mismatch(decode_text(expected[:-1]), decode_text(content[:-1])))
        return content, expected, self.upper_client.elapsed, error

    # -- many lines in flight -------------------------------------------------------

    def pipeline(
        self, lines: Iterable[tuple[bytes, bytes]], depth: int, name: str = "upper"
    ) -> bool:
        """``upper_line()`` for each ``(line, expected)``, keeping up to ``depth`` lines in flight.

        Each reply is one request, timed from its own line's send and checked
        against that line's expected reply, in order: a reply that belongs to
        another line in flight is a failure that says so. Returns whether the
        connection is still open; when it is lost, every line in flight fails.
        """
        fire = self._fire
        context = self._context
        tagged = ((line, expected[:-1]) for line, expected in lines)
        window = Window(self.upper_client, tagged, depth)
        in_flight = window.in_flight  # (expected, without b"\n"; sent at)
        previous = None
        try:
            for reply, expected, sent_at, arrived in window.replies():
                error = None
                if reply != expected:
                    error = WrongReply(_misplaced(reply, expected, previous, in_flight))
                fire(
                    request_type=REQUEST_TYPE,
                    name=name,
                    response_time=(arrived - sent_at) * 1000,
                    response_length=len(reply) + 1,
                    exception=error,
                    context=context,
                )
                previous = expected
            return True
        except ExtraReply as extra:
            quoted = decode_text(extra.reply)[:_MISMATCH_SHOWN]
            self._record(
                name, 0.0, len(extra.reply) + 1, WrongReply(f"a reply to no line: {quoted!r}")
            )
            return False
        except UpperClientError as exc:
            now = perf_counter()
            for _, sent_at in in_flight:
                self._record(name, now - sent_at, 0, exc)
            return False
        except GreenletExit:
            for _, sent_at in in_flight:
                self._stalled(name, sent_at, "no reply")
            raise
        except BaseException:
            self.upper_client.close()  # out of step: replies to the lines in flight may still come
            raise


def _misplaced(reply: bytes, expected: bytes, previous: bytes | None, in_flight) -> str:
    """Why ``reply`` is wrong: out of order when it is the reply to a neighbouring line."""
    got, wanted = decode_text(reply), decode_text(expected)
    quoted = f"got {got[:_MISMATCH_SHOWN]!r}, expected {wanted[:_MISMATCH_SHOWN]!r}"
    for later, (other, _) in enumerate(in_flight, 1):
        if reply == other:
            return f"out of order, the reply to the line sent {later} later: {quoted}"
    if reply == previous:
        return f"out of order, the reply to the line sent before: {quoted}"
    return describe_mismatch(wanted, got)


class TcpUser(User):
    """Abstract base of Locust users that talk to an UPPER server over TCP.

    ``self.client`` is a :class:`LocustUpperClient` for the user's host; subclass
    it and write tasks with ``self.client.connect()``, ``.upper(text)`` (or
    ``.upper_line(line, expected)``) and ``.disconnect()``. The connection is
    closed when the user stops.
    """

    abstract = True
    host = DEFAULT_HOST
    socket_timeout: float = DEFAULT_TIMEOUT
    """Seconds to wait for a connection, a reply or the server's close."""
    stall_threshold: float = 1.0
    """A request still waiting after this many seconds when the user is stopped is a failure."""
    ssl_context_factory: Callable[[], ssl.SSLContext] | None = None
    """For a ``tls://`` host: a function that returns the ``SSLContext`` to use instead of
    the one the ``--tls-*`` options describe (called once per user class), as for
    ``FastHttpUser``."""

    def __init__(self, environment) -> None:
        super().__init__(environment)
        locust_hooks.prepare_user_process()
        try:
            address = parse_host(self.host)
        except HostError:
            address = None  # reported once, at start; client.connect() stops this user
        self.address = address
        host, port = address or ("", 0)
        context = unusable = None
        if uses_tls(self.host):
            try:
                context = tls_context(type(self), environment)
            except TLSSetupError as exc:  # typed into the web UI: the command line checks it
                unusable = exc
        self.client = LocustUpperClient(
            host,
            port,
            self.socket_timeout,
            environment.events.request,
            user=self,
            stall_threshold=self.stall_threshold,
            ssl_context=context,
        )
        self.client.unusable = unusable

    def on_stop(self) -> None:
        self.client.close()


# -- TLS: one context per user class, from its factory or the --tls-* options ----

_TLS_CONTEXTS: dict = {}


def _tls_options(options, tls: bool = False) -> SimpleNamespace:
    """The ``--tls-*`` options of a run (none when Locust runs as a library)."""
    names = ("tls_cafile", "tls_insecure", "tls_client_cert", "tls_client_key")
    values = {name: getattr(options, name, None) for name in names}
    return SimpleNamespace(tls=tls, **values)


def tls_context(user_class, environment) -> ssl.SSLContext:
    """The context for ``user_class``'s ``tls://`` connections, made once per class and set
    of options (a run started from the web UI may change them); ``TLSSetupError`` if a
    file cannot be used."""
    options = _tls_options(environment.parsed_options, tls=True)
    key = (user_class, tuple(sorted(vars(options).items())))
    context = _TLS_CONTEXTS.get(key)
    if context is None:
        factory = user_class.ssl_context_factory  # a plain function: not bound to the user
        if factory is not None:
            context = factory()
        else:
            context = client_context_from(options, **TLS_OPTIONS, warn=log.warning)
        _TLS_CONTEXTS[key] = context
    return context


# -- a malformed host is one clear error at start, not a stream of failures ----


def host_errors(environment) -> list[str]:
    """Why the host each ``TcpUser`` class of this run would use is malformed, if it is."""
    problems = []
    for user_class in environment.user_classes:
        if issubclass(user_class, TcpUser):
            try:
                parse_host(environment.host or user_class.host)
            except HostError as exc:
                problems.append(str(exc))
    return sorted(set(problems))


def _add_options(parser) -> None:
    add_client_tls_options(parser, **TLS_OPTIONS, sentences=True, include_in_web_ui=True)


def _check_options(options) -> str | None:
    """``--host`` and the ``--tls-*`` files, refused with the other invalid options."""
    host = getattr(options, "host", None)
    if host:
        try:
            parse_host(host)
        except HostError as exc:
            return f"argument -H/--host: {exc}"
    try:
        client_context_from(_tls_options(options), **TLS_OPTIONS)
    except TLSSetupError as exc:
        return f"TLS: {exc}"
    return None


locust_hooks.install(_check_options, host_errors, _add_options)
