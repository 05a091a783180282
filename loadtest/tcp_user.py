"""``TcpUser``: a Locust ``User`` for servers that speak the UPPER line protocol.

Locust only ships HTTP users. This module does for the UPPER protocol what
``FastHttpUser`` does for HTTP: ``self.client`` is a client whose every
operation is a Locust request (it fires the ``request`` event), so statistics,
the web UI, the CSV and HTML reports and distributed runs all work as usual.

The protocol itself is not re-implemented here: ``LocustUpperClient`` wraps the
project's :class:`upper_client.UpperClient`, and expected replies come from
:func:`upper_protocol.uppercase`.

The host (``--host`` or the class's ``host``) is ``tcp://HOST:PORT`` or
``HOST:PORT`` (IPv6 as ``[::1]:5000``); a malformed one stops Locust at start
with a clear error instead of turning every request into a failure.
"""

from __future__ import annotations

import _socket
import logging
import sys
from time import perf_counter

import gevent
from locust import User, events
from locust.exception import StopUser
from locust.runners import WorkerRunner

from upper_client.client import UpperClient
from upper_client.errors import UpperClientError
from upper_protocol import decode_text, encode_text, uppercase
from upper_protocol.address import AddressError, parse_address

log = logging.getLogger(__name__)

DEFAULT_HOST = "tcp://127.0.0.1:5000"
REQUEST_TYPE = "TCP"
"""The "Type" column of Locust's statistics for every request made by ``TcpUser``."""

_MISMATCH_SHOWN = 60
"""How much of a wrong reply (and of the expected one) a failure message quotes."""


class HostError(ValueError):
    """``--host`` is not ``tcp://HOST:PORT`` or ``HOST:PORT``."""


class WrongReply(Exception):
    """The server answered, but not with the expected uppercase."""


def parse_host(host: str | None) -> tuple[str, int]:
    """``tcp://HOST:PORT`` or ``HOST:PORT`` (``None`` or empty: the default) -> ``(HOST, PORT)``."""
    text = (host or DEFAULT_HOST).strip()
    address = text
    if "://" in address:
        scheme, address = address.split("://", 1)
        if scheme.lower() != "tcp":
            raise HostError(
                f"invalid host {text!r}: the scheme must be tcp:// "
                f"(use tcp://HOST:PORT or HOST:PORT, e.g. {DEFAULT_HOST})"
            )
    try:
        return parse_address(address.removesuffix("/"))
    except AddressError as exc:
        raise HostError(
            f"invalid host {text!r}: {exc} (use tcp://HOST:PORT or HOST:PORT, e.g. {DEFAULT_HOST})"
        ) from None


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


class LocustUpperClient:
    """An :class:`~upper_client.UpperClient` whose operations are Locust requests.

    Each call fires one ``request`` event (``request_type`` ``"TCP"``) and returns
    whether it succeeded; failures are in the statistics, never raised. The
    client's own errors (refused, timed out, reset: ``UpperClientError``) leave it
    disconnected, so ``connected`` tells whether the session can go on.

    A reply's response time runs from its line's send to the reply's arrival, as
    the client measures it (``UpperClient.elapsed``): lines wait for the next
    burst of sends, and that wait is the load generator's, not the server's.
    """

    __slots__ = ("upper_client", "_upper_line", "_fire", "_context", "_user")

    def __init__(self, host: str, port: int, timeout: float, request_event, user=None) -> None:
        self.upper_client = UpperClient(host, port, timeout)
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

    def _record(self, name: str, seconds: float, length: int = 0, exception=None) -> bool:
        """Fire one Locust request event; True when it succeeded."""
        self._fire(
            request_type=REQUEST_TYPE,
            name=name,
            response_time=seconds * 1000,
            response_length=length,
            exception=exception,
            context=self._context,
        )
        return exception is None

    def _since(self, name: str, started: float, exception: Exception | None = None) -> bool:
        """Record a request that began at ``started`` and ends now."""
        return self._record(name, perf_counter() - started, 0, exception)

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
        started = perf_counter()
        try:
            client.connect()
        except UpperClientError as exc:
            return self._since(name, started, exc)
        return self._since(name, started)

    def upper(self, text: str, expected: str | None = None, name: str = "upper") -> bool:
        """Send one line of text and check that the reply is exactly ``expected``.

        By default ``expected`` is what the protocol says the reply must be.
        """
        line = encode_text(text) + b"\n"
        if expected is None:
            expected_line = uppercase(line)
        else:
            expected_line = encode_text(expected) + b"\n"
        return self.upper_line(line, expected_line, name)

    def upper_line(self, line: bytes, expected: bytes, name: str = "upper") -> bool:
        """``upper()`` for lines encoded in advance: ``line`` and ``expected`` end in ``b"\\n"``.

        The cheap way to send many messages: nothing is encoded, decoded or
        computed per message (``loadtest/locustfile.py`` keeps a pool of them).
        """
        started = perf_counter()
        try:
            reply = self._upper_line(line)
        except UpperClientError as exc:
            return self._since(name, started, exc)
        mismatch = None
        if reply != expected:
            mismatch = WrongReply(
                describe_mismatch(decode_text(expected[:-1]), decode_text(reply[:-1]))
            )
        return self._record(name, self.upper_client.elapsed, len(reply), mismatch)

    def disconnect(self, name: str = "DESCONEXION") -> bool:
        """End the session; the response time is the time until the server closes."""
        started = perf_counter()
        try:
            self.upper_client.disconnect()
        except UpperClientError as exc:
            return self._since(name, started, exc)
        return self._since(name, started)

    def close(self) -> None:
        """Drop the connection without a request (no DESCONEXION)."""
        self.upper_client.close()


class _NumericHostsFirst:
    """gevent's resolver, except that numeric addresses are answered on the spot.

    gevent's default resolver runs every ``getaddrinfo()``, even for ``127.0.0.1``,
    in a native thread that must win the GIL back from a busy Locust process:
    under load, ``connect`` then timed the resolver (seconds) instead of the
    TCP handshake (milliseconds). Host names still go to gevent's resolver.
    """

    def __init__(self, resolver) -> None:
        self.resolver = resolver

    def getaddrinfo(self, host, port, family=0, type=0, proto=0, flags=0):
        try:
            return _socket.getaddrinfo(
                host, port, family, type, proto, flags | _socket.AI_NUMERICHOST
            )
        except _socket.gaierror:  # a name: resolve it the usual way
            return self.resolver.getaddrinfo(host, port, family, type, proto, flags)

    def __getattr__(self, name):
        return getattr(self.resolver, name)


def _answer_numeric_hosts_at_once() -> None:
    hub = gevent.get_hub()
    if not isinstance(hub.resolver, _NumericHostsFirst):
        hub.resolver = _NumericHostsFirst(hub.resolver)


class TcpUser(User):
    """Abstract base of Locust users that talk to an UPPER server over TCP.

    ``self.client`` is a :class:`LocustUpperClient` for the user's host; subclass
    it and write tasks with ``self.client.connect()``, ``.upper(text)`` (or
    ``.upper_line(line, expected)``) and ``.disconnect()``. The connection is
    closed when the user stops.
    """

    abstract = True
    host = DEFAULT_HOST
    socket_timeout: float = 5.0
    """Seconds to wait for a connection, a reply or the server's close."""

    def __init__(self, environment) -> None:
        super().__init__(environment)
        _answer_numeric_hosts_at_once()
        try:
            address = parse_host(self.host)
        except HostError:
            address = None  # reported once, at start; client.connect() stops this user
        self.address = address
        host, port = address or ("", 0)
        self.client = LocustUpperClient(
            host,
            port,
            self.socket_timeout,
            environment.events.request,
            user=self,
        )

    def on_stop(self) -> None:
        self.client.close()


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


@events.init.add_listener
def _check_hosts_at_init(environment, **_kwargs) -> None:
    """``--host`` on the command line: refuse to start.

    Workers check theirs too (a worker uses the master's host, but a malformed
    one of its own is still a mistake), so ``--processes`` children exit with
    the master instead of waiting for it.
    """
    problems = host_errors(environment)
    if problems:
        for problem in problems:
            log.error("%s", problem)
        sys.exit(1)


@events.test_start.add_listener
def _check_hosts_at_start(environment, **_kwargs) -> None:
    """A host typed into the web UI: report it and stop the run that just started."""
    runner = environment.runner
    if runner is None or isinstance(runner, WorkerRunner):
        return
    problems = host_errors(environment)
    if problems:
        for problem in problems:
            log.error("%s; stopping the test", problem)
        gevent.spawn_later(0.1, runner.stop)
