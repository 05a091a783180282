"""The real receive loop (``Connection._answer``, plain and TLS) against ``UpperSession`` and
the reference model, through scripted sockets under seeded random segmentation.

No event loop, no network: a ``ScriptedSocket`` hands the loop the script's bytes in
pieces a seeded ``random.Random`` cuts (reads that would block, partial sends, sends
that would block, a read larger than the buffer), and the loop's waits return at once.
Every case is a seed, so a failure names the one case to replay. The plain loop's reply
to each read is compared with ``UpperSession.feed`` of that read; the whole reply, the
session's end and the counters with ``tests/reference_model.py``. Over TLS a real
client ``SSLObject`` speaks to the server's, and the records are cut at random too.

The last test changes the rule in the loop only (its documented seam,
``Connection.fast_reply``) and checks that these cases catch it.
"""

import random
import ssl

import pytest
from reference_model import expected_reply, session_ended

from benchmarks.ablation import variant_class
from upper.protocol import UpperSession
from upper.server.connection import Connection, State, Timeouts
from upper.server.defaults import RECV_SIZE
from upper.server.stats import ServerStats
from upper.server.tls import TLSConnection, server_context

PLAIN_CASES = 1000
TLS_CASES = 200
MAX_STEPS = 100_000
"""A loop that neither ends nor reads: the test fails instead of hanging."""

PIECES = (
    b"hola servidor\n", b"abc\n", b"\n", b"x", b"ok\r\n", b"desconexion\n", b"DESCONEXIONX\n",
    b"DESC", b"ONEXION", b"\r", b"DESCONEXION", b"stra\xc3\x9fe\n", b"\xc3", b"\x9f",
    b"\xf0\x9f\x98\x80", b"\xed\xa0\x80", b"\xff\xfe", b"a b c d e f g h i j\n",
)
ENDINGS = (b"DESCONEXION\n", b"DESCONEXION\r\n", b"\nDESCONEXION\n")


def make_stream(rng: random.Random) -> bytes:
    pieces = [rng.choice(PIECES) for _ in range(rng.randint(1, 40))]
    if rng.random() < 0.1:
        pieces.append(b"y" * rng.randint(RECV_SIZE - 5, 3 * RECV_SIZE) + b"\n")  # full reads
    if rng.random() < 0.5:
        pieces.insert(rng.randint(0, len(pieces)), rng.choice(ENDINGS))
    return b"".join(pieces)


def cut(rng: random.Random, data: bytes) -> list[bytes]:
    segments, start = [], 0
    while start < len(data):
        size = rng.choice((1, 2, 3, rng.randint(1, 40), rng.randint(1, 400), 70_000))
        segments.append(data[start : start + size])
        start += size
    return segments


class FakeLoop:
    def now(self) -> float:
        return 0.0

    def io(self, fd, events):
        return FakeWatcher()

    def run_callback(self, callback, *args):
        callback(*args)


class FakeWatcher:
    events = 0

    def start(self, callback) -> None:
        self.callback = callback

    def stop(self) -> None:
        pass

    def close(self) -> None:
        pass


class FakeServer:
    """What a connection asks of its server; its waits return at once (the script is ready)."""

    stopping = False
    proxy_protocol = None
    idle_timeout = linger_timeout = 5.0
    timeouts = Timeouts(idle=5.0, linger=5.0, hibernate_after=1.0)

    def __init__(self, ssl_context=None) -> None:
        self.loop = FakeLoop()
        self.stats = ServerStats(counting=True)
        self.receive_buffer = bytearray(RECV_SIZE)
        self.receive_view = memoryview(self.receive_buffer)
        self.ssl_context = ssl_context
        self.waits = 0
        self.closed = []

    def switch_to_hub(self) -> None:
        self.waits += 1
        assert self.waits < MAX_STEPS, "the loop waits forever"

    def connection_closed(self, connection) -> None:
        self.closed.append(connection)


class ScriptedSocket:
    """A non-blocking socket whose peer is ``peer`` (``next_bytes``, ``take``), cut by ``rng``."""

    def __init__(self, rng: random.Random, peer) -> None:
        self.rng, self.peer = rng, peer
        self.sent = bytearray()
        self.reads: list[tuple[bytes, int]] = []
        """Each read: its bytes (b"": EOF) and how much had been sent before it."""
        self.pending = b""
        self.shut = self.closed = False

    def fileno(self) -> int:
        return -1

    def recv_into(self, buffer) -> int:
        assert len(self.reads) < MAX_STEPS, "the loop reads forever"
        if self.rng.random() < 0.15:
            raise BlockingIOError
        if not self.pending:
            self.pending = self.peer.next_bytes(self.rng)
        chunk, self.pending = self.pending[: len(buffer)], self.pending[len(buffer) :]
        buffer[: len(chunk)] = chunk
        self.reads.append((chunk, len(self.sent)))
        return len(chunk)

    def recv(self, size: int) -> bytes:
        return b""  # the drain after our FIN: the peer closes

    def send(self, data) -> int:
        draw = self.rng.random()
        if draw < 0.1:
            raise BlockingIOError
        size = len(data) if draw > 0.3 else self.rng.randint(1, len(data))
        taken = bytes(data[:size])
        self.sent += taken
        self.peer.take(taken)
        return size

    def shutdown(self, how) -> None:
        self.shut = True

    def close(self) -> None:
        self.closed = True


class PlainPeer:
    def __init__(self, segments: list[bytes]) -> None:
        self.segments = list(segments)

    def next_bytes(self, rng) -> bytes:
        return self.segments.pop(0) if self.segments else b""

    def take(self, data: bytes) -> None:
        pass


def serve(connection_class, server, sock) -> Connection:
    connection = connection_class(sock, ("127.0.0.1", 1), server)
    connection._run(None, False)
    assert server.stats.errors == 0
    assert connection.state in (State.DRAINING, State.CLOSED)
    return connection


def check_plain(seed: int, connection_class=Connection) -> None:
    rng = random.Random(seed)
    data = make_stream(rng)
    segments = cut(rng, data)
    server = FakeServer()
    sock = ScriptedSocket(rng, PlainPeer(segments))
    connection = serve(connection_class, server, sock)

    # Each read's reply is what UpperSession.feed answers for it (end_of_input at EOF).
    model = UpperSession()
    marks = [mark for _chunk, mark in sock.reads] + [len(sock.sent)]
    for number, (chunk, _mark) in enumerate(sock.reads):
        expected = model.feed(chunk) if chunk else model.end_of_input()
        assert bytes(sock.sent[marks[number] : marks[number + 1]]) == expected, (seed, number)
    read = b"".join(chunk for chunk, _mark in sock.reads)
    assert connection.session.ended and model.ended
    assert connection.session.found is model.found is session_ended(read)
    if not model.found:
        assert read == data  # without the keyword the loop reads everything, then EOF
    assert bytes(sock.sent) == expected_reply(read)
    stats = server.stats
    assert (stats.bytes_in, stats.lines_in) == (len(read), read.count(b"\n"))
    assert (stats.bytes_out, stats.lines_out) == (len(sock.sent), sock.sent.count(b"\n"))


@pytest.mark.parametrize("first", range(0, PLAIN_CASES, 100))
def test_the_plain_loop_answers_as_the_session_and_the_model(first):
    for seed in range(first, first + 100):
        check_plain(seed)


@pytest.fixture(scope="module")
def tls_contexts(certificates):
    server = server_context(str(certificates.server_cert), str(certificates.server_key))
    client = ssl.create_default_context(cafile=str(certificates.ca))
    return server, client


class TLSPeer:
    """A TLS client over memory BIOs: its handshake, then the plaintext segments as records,
    then close_notify (or a bare TCP EOF)."""

    def __init__(self, context, segments: list[bytes], close_notify: bool) -> None:
        self.incoming, self.outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.tls = context.wrap_bio(self.incoming, self.outgoing, server_hostname="localhost")
        self.segments = list(segments)
        self.close_notify = close_notify
        self.handshaken = self.closed = False
        self.queue = b""
        self.received = bytearray()

    def take(self, data: bytes) -> None:
        self.incoming.write(data)
        if self.handshaken:
            self.read_replies()

    def next_bytes(self, rng) -> bytes:
        while not self.queue:
            if not self.advance():
                return b""
        size = rng.choice((1, 5, rng.randint(1, 60), rng.randint(1, 3000), len(self.queue)))
        chunk, self.queue = self.queue[:size], self.queue[size:]
        return chunk

    def advance(self) -> bool:
        """Produce the next bytes the client sends; False at the end of its stream."""
        if not self.handshaken:
            try:
                self.tls.do_handshake()
                self.handshaken = True
            except ssl.SSLWantReadError:
                pass
        elif self.segments:
            self.tls.write(self.segments.pop(0))
        elif self.close_notify and not self.closed:
            self.closed = True
            self.read_replies()  # shutting down with replies unread is an error in OpenSSL
            try:
                self.tls.unwrap()
            except ssl.SSLWantReadError:
                pass
        else:
            return False
        self.queue += self.outgoing.read()
        return True

    def read_replies(self) -> None:
        while True:
            try:
                data = self.tls.read(RECV_SIZE)
            except (ssl.SSLWantReadError, ssl.SSLZeroReturnError):
                return
            if not data:
                return
            self.received += data

    def plaintext_received(self) -> bytes:
        self.read_replies()
        return bytes(self.received)


def check_tls(seed: int, contexts) -> None:
    server_side, client_side = contexts
    rng = random.Random(seed)
    data = make_stream(rng)
    peer = TLSPeer(client_side, cut(rng, data), close_notify=rng.random() < 0.5)
    server = FakeServer(server_side)
    sock = ScriptedSocket(rng, peer)
    connection = serve(TLSConnection, server, sock)

    reply = peer.plaintext_received()
    assert connection.session.ended
    assert connection.session.found is session_ended(data), seed
    assert reply == expected_reply(data), seed
    model = UpperSession()
    assert model.feed(data) + model.end_of_input() == reply
    stats = server.stats
    assert (stats.bytes_out, stats.lines_out) == (len(reply), reply.count(b"\n"))
    if not connection.session.found:
        assert (stats.bytes_in, stats.lines_in) == (len(data), data.count(b"\n"))
    assert stats.failed_handshakes == 0


@pytest.mark.parametrize("first", range(0, TLS_CASES, 50))
def test_the_tls_loop_answers_as_the_session_and_the_model(first, tls_contexts):
    for seed in range(first, first + 50):
        check_tls(seed, tls_contexts)


def test_a_rule_changed_in_the_loop_alone_is_caught():
    """The keyword looked for only at the end of a read (gevent-lean's shortcut, the ablation
    ``keyword``), in the loop's rule only: the plain cases must find the difference."""
    ChangedRule = variant_class(["keyword"])
    failures = 0
    for seed in range(PLAIN_CASES):
        try:
            check_plain(seed, ChangedRule)
        except AssertionError:
            failures += 1
    assert failures > 0
