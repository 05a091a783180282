"""Scenarios for ``UpperClient.upper_line`` on gevent's monkey-patched sockets.

Run one scenario per process (monkey-patching must come first, and must never
touch the pytest process)::

    python tests/cooperative_scenarios.py NAME [PORT]

``PORT`` is a running ``python -m upper_server`` on 127.0.0.1 (started by
``test_client_cooperative.py``); scenarios that need a misbehaving server write
their own here, as greenlets on monkey-patched sockets on 127.0.0.1 port 0.
Prints ``ok`` when the scenario holds; fails with an exception otherwise. Every
wait has a timeout, and the whole scenario runs under one as well.

Not a test module (no ``test_`` prefix): pytest never imports it.
"""
# ruff: noqa: E402

if __name__ != "__main__":
    # Importing this would monkey-patch the importing process (pytest's, say).
    raise ImportError("cooperative_scenarios.py is a script: run it, do not import it")

from gevent import monkey

monkey.patch_all()

import socket
import struct
import sys
from time import perf_counter

import gevent
import gevent.event
from gevent.exceptions import BlockingSwitchOutError
from greenlet import GreenletExit

from upper.client import UpperClient
from upper.client.cooperative import Cooperative, Outbox, SendIncomplete
from upper.client.errors import ConnectionLost, ReplyTimeout

HOST = "127.0.0.1"
SCENARIO_TIMEOUT = 45.0
SERVER_SOCKET_TIMEOUT = 20.0
REAL_SERVER_PORT = 0  # set from argv by main()


def upper(line: bytes) -> bytes:
    return line.decode("utf-8", "surrogateescape").upper().encode("utf-8", "surrogateescape")


# -- in-script servers -------------------------------------------------------------


class Server:
    """Accepts on 127.0.0.1:0 and runs ``handle(conn, record)`` in a greenlet per connection.

    ``records[i]`` is a bytearray the handler of the i-th connection fills with
    what it read, so scenarios can check what reached the server.
    """

    def __init__(self, handle):
        self.handle = handle
        self.listener = socket.socket()
        self.listener.bind((HOST, 0))
        self.listener.listen(64)
        self.port = self.listener.getsockname()[1]
        self.records: list[bytearray] = []
        self.connections: list[socket.socket] = []
        self.handlers: list[gevent.Greenlet] = []
        self.acceptor = gevent.spawn(self._accept_forever)

    def _accept_forever(self):
        while True:
            conn, _ = self.listener.accept()
            conn.settimeout(SERVER_SOCKET_TIMEOUT)
            record = bytearray()
            self.records.append(record)
            self.connections.append(conn)
            self.handlers.append(gevent.spawn(self.handle, conn, record))

    def client(self, timeout: float | None = 10.0) -> UpperClient:
        client = UpperClient(HOST, self.port, timeout=timeout)
        client.connect()
        assert client._cooperative is not None, "the cooperative path is not in use"
        return client

    def wait_for_connections(self, count: int, timeout: float = 5.0) -> None:
        with gevent.Timeout(timeout, AssertionError(f"fewer than {count} connections")):
            while len(self.connections) < count:
                gevent.sleep(0.005)

    def stop(self):
        gevent.killall([self.acceptor, *self.handlers], timeout=5)
        self.listener.close()
        for conn in self.connections:
            conn.close()


def read_lines(conn, record):
    """Yield each line the peer sends (recording every byte read) until EOF."""
    pending = bytearray()
    while True:
        try:
            chunk = conn.recv(1 << 20)
        except ConnectionResetError:
            return  # the client closed with a reply unread: the same as EOF here
        if not chunk:
            return
        record += chunk
        pending += chunk
        while (end := pending.find(b"\n")) != -1:
            line = bytes(pending[: end + 1])
            del pending[: end + 1]
            yield line


def answering(conn, record):
    """A well-behaved server: every line gets its uppercase."""
    for line in read_lines(conn, record):
        conn.sendall(upper(line))


def answering_unless_silence(conn, record):
    """Answers every line until one contains ``silence``; then reads on, never answering."""
    for line in read_lines(conn, record):
        if b"silence" in line:
            break
        conn.sendall(upper(line))
    for _ in read_lines(conn, record):
        pass


def never_answering(conn, record):
    """Reads (and records) everything, answers nothing."""
    for _ in read_lines(conn, record):
        pass


def real_server_client(timeout: float | None = 10.0) -> UpperClient:
    client = UpperClient(HOST, REAL_SERVER_PORT, timeout=timeout)
    client.connect()
    assert client._cooperative is not None, "the cooperative path is not in use"
    return client


def round_trips_for(client: UpperClient, seconds: float, tag: str, sleep=None) -> int:
    """Exact round trips for ``seconds``; ``sleep`` adds a gevent.sleep between them."""
    count = 0
    end = perf_counter() + seconds
    while perf_counter() < end:
        line = f"{tag} {count} ñandú\n".encode()
        started = perf_counter()
        reply = client.upper_line(line)
        wall = perf_counter() - started
        assert reply == upper(line), (line, reply)
        assert isinstance(client.elapsed, float) and 0 < client.elapsed <= wall, (
            client.elapsed,
            wall,
        )
        count += 1
        if sleep is not None:
            # gevent's own waits assert on any switch they did not ask for: a stray
            # switch from a leftover watcher or timer would fail here.
            gevent.sleep(sleep)
    return count


def spy(owner, name, before):
    """Replace the method ``owner.name`` with one that first calls ``before(self, *args)``.

    The scenario's process ends with the scenario, so nothing is ever restored.
    """
    original = getattr(owner, name)

    def wrapper(obj, *args, **kwargs):
        before(obj, *args, **kwargs)
        return original(obj, *args, **kwargs)

    setattr(owner, name, wrapper)


class Failed:
    """What ``attempt`` returns for a call that raised."""

    def __init__(self, exc: BaseException):
        self.exc = exc

    def __repr__(self):
        return f"Failed({self.exc!r})"


def attempt(call, *args):
    """``call(*args)``'s result, or ``Failed(exc)``: for greenlets expected to fail quietly."""
    try:
        return call(*args)
    except Exception as exc:
        return Failed(exc)


def expect(exc_type, call, *args):
    """``call(*args)`` must raise exactly ``exc_type``; return the exception."""
    try:
        result = call(*args)
    except BaseException as exc:  # noqa: B036 (every outcome is checked)
        assert type(exc) is exc_type, f"expected {exc_type.__name__}, got {exc!r}"
        return exc
    raise AssertionError(f"expected {exc_type.__name__}, got the result {result!r}")


# -- scenarios --------------------------------------------------------------------


def scenario_burst():
    """50 greenlets x 200 round trips on the real server; lines leave in shared bursts."""
    greenlets, per_greenlet = 50, 200
    flushes: list[int] = []  # how many lines each Outbox._flush sent

    spy(
        Outbox,
        "_flush",
        lambda outbox: flushes.append(sum(1 for c in outbox.queued if c._line is not None)),
    )

    def session(number):
        client = real_server_client(timeout=20)
        try:
            for count in range(per_greenlet):
                line = f"g{number:02d} línea {count:03d} straße\n".encode()
                started = perf_counter()
                reply = client.upper_line(line)
                wall = perf_counter() - started
                assert reply == upper(line), (line, reply)
                assert isinstance(client.elapsed, float), client.elapsed
                assert 0 < client.elapsed <= wall, (client.elapsed, wall)
            client.disconnect()
        finally:
            client.close()
        return number

    sessions = [gevent.spawn(session, n) for n in range(greenlets)]
    done = gevent.joinall(sessions, timeout=40, raise_error=True)
    assert len(done) == greenlets, "sessions did not finish in time"
    assert [g.value for g in sessions] == list(range(greenlets))
    # Every round trip went through the outbox (none fell back to the ordinary path)...
    assert sum(flushes) == greenlets * per_greenlet, (sum(flushes), len(flushes))
    # ...and the outbox did coalesce: some flush sent the lines of several greenlets.
    assert max(flushes) > 1, f"no flush sent more than one line ({len(flushes)} flushes)"


def scenario_timeout():
    """No reply: ReplyTimeout after the socket timeout, never before, and the client closes."""
    server = Server(never_answering)
    client = server.client(timeout=0.5)
    started = perf_counter()
    with gevent.Timeout(10, AssertionError("upper_line hung past its timeout")):
        expect(ReplyTimeout, client.upper_line, b"hello?\n")
    waited = perf_counter() - started
    assert 0.45 <= waited < 10, waited
    assert not client.connected
    server.wait_for_connections(1)
    gevent.sleep(0.05)
    assert bytes(server.records[0]) == b"hello?\n", server.records[0]
    server.stop()


def scenario_timeout_after_activity():
    """The lazy timer re-arms during continuous activity and still fires for a silent wait."""
    fired = []
    spy(Cooperative, "_on_timer", lambda coop: fired.append(coop._waiter is not None))
    server = Server(answering_unless_silence)
    client = server.client(timeout=0.3)
    with gevent.Timeout(10, AssertionError("hung")):
        count = round_trips_for(client, 1.2, "busy")
    fired_while_busy = len(fired)
    assert count > 10, count
    # 1.2 s of waits with a 0.3 s timeout: the one timer fired and was re-armed.
    assert fired_while_busy >= 2, fired
    started = perf_counter()
    with gevent.Timeout(10, AssertionError("upper_line hung past its timeout")):
        expect(ReplyTimeout, client.upper_line, b"silence please\n")
    waited = perf_counter() - started
    assert 0.25 <= waited < 10, waited
    assert not client.connected
    server.stop()


def scenario_timeout_while_queued():
    """The timer fires while the line still waits for its burst: the clock starts at the send.

    gevent runs at most 50 callbacks per pass once a pass has taken longer than
    the switch interval; the rest wait for the next loop iteration, after the
    timers. So a slow callback followed by 60 empty ones, all queued before the
    client's greenlet queues its flush, make the timer fire before the flush.
    """
    fired_while_queued = []
    sent_at = []
    spy(
        Cooperative,
        "_on_timer",
        lambda coop: fired_while_queued.append(coop._line is not None and coop._since is None),
    )
    spy(Cooperative, "send_queued", lambda coop: sent_at.append(perf_counter()))
    blocking_sleep = monkey.get_original("time", "sleep")
    server = Server(never_answering)
    client = server.client(timeout=0.3)
    waiter = gevent.spawn(attempt, client.upper_line, b"queued a while\n")
    loop = gevent.get_hub().loop
    loop.run_callback(blocking_sleep, 0.45)  # longer than the timeout
    for _ in range(60):
        loop.run_callback(lambda: None)
    done = gevent.joinall([waiter], timeout=5)
    assert done == [waiter], "upper_line hung: the timer that fired while queued was lost"
    assert True in fired_while_queued, f"the timer never fired while queued: {fired_while_queued}"
    assert isinstance(waiter.value, Failed), waiter.value
    assert type(waiter.value.exc) is ReplyTimeout, waiter.value
    assert len(sent_at) == 1, sent_at
    waited_after_send = perf_counter() - sent_at[0]
    assert waited_after_send >= 0.25, f"timed out {waited_after_send:.3f}s after the send"
    assert not client.connected
    server.stop()


def scenario_idle_between_waits():
    """The timer fires while nobody waits: nothing happens, the next round trips work."""
    fired = []
    spy(Cooperative, "_on_timer", lambda coop: fired.append(coop._waiter is not None))
    server = Server(answering)
    client = server.client(timeout=0.3)
    with gevent.Timeout(10, AssertionError("hung")):
        assert client.upper_line(b"first\n") == b"FIRST\n"
        started = perf_counter()
        gevent.sleep(1.0)  # gevent's waiter asserts if anything else switches in
        slept = perf_counter() - started
        assert slept >= 0.95, f"the sleep was cut short after {slept:.3f}s"
        assert False in fired, f"the timer never fired while idle: {fired}"
        assert client.upper_line(b"second\n") == b"SECOND\n"
        round_trips_for(client, 0.8, "after idle", sleep=0.05)
        assert client.connected
    client.close()
    server.stop()


def scenario_kill_while_waiting():
    """A greenlet killed while waiting leaves no watcher or timer that switches into anyone,
    and its client closed: the reply it was owed would otherwise answer the next line."""
    late_reply = gevent.event.Event()

    def silent_then_late(conn, record):
        late_reply.wait(10)
        # Data arrives for the killed waiter: a leftover read watcher would now fire.
        conn.sendall(b"LATE REPLY\n")
        never_answering(conn, record)

    server = Server(silent_then_late)
    victim = server.client(timeout=0.3)
    victim_watcher = victim._cooperative._watcher
    waiter = gevent.spawn(victim.upper_line, b"never answered\n")
    gevent.sleep(0.1)
    assert not waiter.dead, waiter
    waiter.kill(timeout=5)
    assert waiter.dead, "the killed greenlet did not end"
    assert isinstance(waiter.value, GreenletExit), (waiter.value, waiter.exception)
    assert victim_watcher.callback is None, "read watcher left started"
    assert not victim.connected, "an interrupted round trip left its connection open"

    late_reply.set()
    fresh = real_server_client(timeout=2)
    other = real_server_client(timeout=2)
    with gevent.Timeout(15, AssertionError("hung")):
        # Longer than several timeouts of the victim's connection, with gevent waits
        # (which reject stray switches) between the round trips, in two greenlets.
        helper = gevent.spawn(round_trips_for, other, 1.2, "helper", 0.01)
        count = round_trips_for(fresh, 1.2, "main", sleep=0.01)
        helper.join(timeout=10)
    assert helper.successful(), helper.exception
    assert count > 10 and helper.value > 10, (count, helper.value)
    victim.close()
    assert not victim.connected
    for client in (fresh, other):
        client.disconnect()
    server.stop()


def scenario_kill_before_flush():
    """A greenlet killed after queueing its line but before the flush: the line is never sent."""
    answer_now = gevent.event.Event()

    def answering_once_told(conn, record):
        """Records everything; answers lines only once ``answer_now`` is set."""
        for line in read_lines(conn, record):
            if answer_now.is_set():
                conn.sendall(upper(line))

    server = Server(answering_once_told)
    client = server.client(timeout=5)
    server.wait_for_connections(1)
    flushes = []  # per flush: (this client's line still queued?, victim already dead?)
    coop = client._cooperative

    def on_flush(outbox):
        for queued in outbox.queued:
            if queued is coop:
                flushes.append((queued._line, victim.dead))

    spy(Outbox, "_flush", on_flush)
    victim = gevent.spawn(client.upper_line, b"killed before the flush\n")
    # Callbacks run in order: the victim's start, this throw, then the flush the
    # victim queues when it runs. So the throw lands while the line is queued.
    gevent.get_hub().loop.run_callback(victim.throw)
    done = gevent.joinall([victim], timeout=5)
    assert done == [victim], "the victim did not end"
    assert isinstance(victim.value, GreenletExit), (victim.value, victim.exception)
    gevent.sleep(0.2)  # let the flush (and any send it might wrongly do) happen
    assert flushes == [(None, True)], f"the flush did not find a cancelled line: {flushes}"
    assert bytes(server.records[0]) == b"", f"the server got {bytes(server.records[0])!r}"
    # Interrupted, the round trip closed its connection: the server sees only the close.
    assert not client.connected, "an interrupted round trip left its connection open"
    with gevent.Timeout(10, AssertionError("the server did not see the close")):
        server.handlers[0].join()
    assert bytes(server.records[0]) == b"", bytes(server.records[0])
    # The same client connects again and works.
    answer_now.set()
    client.connect()
    with gevent.Timeout(10, AssertionError("hung")):
        assert client.upper_line(b"after\n") == b"AFTER\n"
    client.close()
    with gevent.Timeout(10, AssertionError("the server did not see the close")):
        server.handlers[1].join()
    assert bytes(server.records[1]) == b"after\n", bytes(server.records[1])
    server.stop()


def scenario_reply_in_pieces():
    """A reply that arrives in two reads is returned whole."""

    def in_pieces(conn, record):
        for line in read_lines(conn, record):
            reply = upper(line)
            conn.sendall(reply[:5])
            gevent.sleep(0.1)
            conn.sendall(reply[5:])

    server = Server(in_pieces)
    client = server.client(timeout=5)
    with gevent.Timeout(10, AssertionError("hung")):
        for line in (b"arrives in pieces\n", "canción en trozos\n".encode()):
            started = perf_counter()
            assert client.upper_line(line) == upper(line)
            wall = perf_counter() - started
            assert 0 < client.elapsed <= wall, (client.elapsed, wall)
    client.close()
    server.stop()


def scenario_stray_switch():
    """Someone switches into a greenlet waiting for its reply: it goes back to waiting."""
    reply_now = gevent.event.Event()

    def answering_when_told(conn, record):
        for line in read_lines(conn, record):
            reply_now.wait(10)
            conn.sendall(upper(line))

    server = Server(answering_when_told)
    client = server.client(timeout=5)
    waiter = gevent.spawn(client.upper_line, b"wait for me\n")
    gevent.sleep(0.1)
    for stray in ((), ("a value",)):
        # As a wrong callback would: from the hub, which the waiter switches back to.
        gevent.get_hub().loop.run_callback(waiter.switch, *stray)
        gevent.sleep(0.05)
        assert not waiter.dead, (waiter.value, waiter.exception)
    reply_now.set()
    with gevent.Timeout(10, AssertionError("hung")):
        assert waiter.get() == b"WAIT FOR ME\n"
    with gevent.Timeout(10, AssertionError("hung")):
        assert client.upper_line(b"still in step\n") == b"STILL IN STEP\n"
    client.close()
    server.stop()


def scenario_extra_line():
    """Two lines in one read: upper_line returns the first, receive() the second."""

    def two_lines(conn, record):
        for line in read_lines(conn, record):
            if line == b"x\n":
                conn.sendall(b"A\nB\n")
            else:
                conn.sendall(upper(line))

    server = Server(two_lines)
    client = server.client(timeout=5)
    with gevent.Timeout(10, AssertionError("hung")):
        assert client.upper_line(b"x\n") == b"A\n"
        assert client.receive() == "B"
        assert client.upper_line(b"next\n") == b"NEXT\n"
        assert client.upper("and again") == "AND AGAIN"
    client.close()
    server.stop()


def scenario_server_closes():
    """The server reads the line and closes without a reply: ConnectionLost."""

    def close_after_line(conn, record):
        for _ in read_lines(conn, record):
            conn.close()
            return

    server = Server(close_after_line)
    client = server.client(timeout=5)
    with gevent.Timeout(10, AssertionError("hung")):
        expect(ConnectionLost, client.upper_line, b"anyone there?\n")
    assert not client.connected
    server.stop()


def scenario_reset_before_send():
    """The server resets the connection before the line is sent: ConnectionLost, no hang.

    A healthy connection's line leaves in the same burst, after the failing one:
    it must still be sent and answered.
    """

    def reset(conn, record):
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        conn.close()

    server = Server(reset)
    client = server.client(timeout=2)
    server.wait_for_connections(1)
    healthy = real_server_client(timeout=2)
    gevent.sleep(0.1)  # the RST has arrived
    flushes = []
    spy(Outbox, "_flush", lambda outbox: flushes.append(len(outbox.queued)))
    failing = gevent.spawn(attempt, client.upper_line, b"too late\n")
    fine = gevent.spawn(attempt, healthy.upper_line, b"in the same burst\n")
    done = gevent.joinall([failing, fine], timeout=10)
    assert len(done) == 2, "hung"
    assert flushes[:1] == [2], f"the two lines did not share a burst: {flushes}"
    assert isinstance(failing.value, Failed), failing.value
    assert type(failing.value.exc) is ConnectionLost, failing.value
    assert not client.connected
    assert fine.value == b"IN THE SAME BURST\n", fine.value
    healthy.disconnect()
    server.stop()


def scenario_send_incomplete():
    """A line too big for one send: the rest goes the blocking way, and the reply is right."""
    rests = []
    original_init = SendIncomplete.__init__

    def recording_init(self, rest):
        rests.append(len(rest))
        original_init(self, rest)

    SendIncomplete.__init__ = recording_init

    def slow_reader(conn, record):
        gevent.sleep(0.5)  # not reading: the client's send cannot complete at once
        for line in read_lines(conn, record):
            conn.sendall(upper(line))

    pattern = b"abcdefghijklmnopqrstuvwxyz0123456789 ,.-"
    size = 8 * 1024 * 1024
    line = (pattern * (size // len(pattern) + 1))[:size] + b"\n"
    server = Server(slow_reader)
    client = server.client(timeout=10)
    with gevent.Timeout(30, AssertionError("hung")):
        started = perf_counter()
        reply = client.upper_line(line)
        wall = perf_counter() - started
    assert len(reply) == len(line) and reply == line.upper(), "wrong reply"
    assert len(rests) == 1 and 0 < rests[0] < len(line), (rests, len(line))
    assert 0 < client.elapsed <= wall, (client.elapsed, wall)
    assert bytes(server.records[0]) == line, "the server did not get exactly the line"
    # The connection is still in step.
    with gevent.Timeout(10, AssertionError("hung")):
        assert client.upper_line(b"small\n") == b"SMALL\n"
    client.close()
    server.stop()


def scenario_close_while_waiting():
    """Another greenlet closes the client: a waiter wakes with ConnectionLost, never hangs.

    No client timeout, so only the close can end the wait. Closed while the line
    is still queued, the line is never sent.
    """
    server = Server(never_answering)
    for queued in (True, False):
        client = server.client(timeout=None)
        waiter = gevent.spawn(attempt, client.upper_line, b"closed under me\n")
        if queued:
            gevent.get_hub().loop.run_callback(client.close)  # runs before the flush
        else:
            gevent.sleep(0.1)  # sent; the reply is awaited
            client.close()
        done = gevent.joinall([waiter], timeout=5)
        assert done == [waiter], f"the waiter hung after close (queued={queued})"
        assert isinstance(waiter.value, Failed), waiter.value
        assert type(waiter.value.exc) is ConnectionLost, (queued, waiter.value)
        assert not client.connected
    server.wait_for_connections(2)
    with gevent.Timeout(5, AssertionError("the server did not see the closes")):
        gevent.joinall(server.handlers, raise_error=True)
    assert [bytes(r) for r in server.records] == [b"", b"closed under me\n"], server.records
    server.stop()


def scenario_mixed_apis():
    """upper_line between the other APIs on one connection (pipelined, send/receive, upper)."""
    client = real_server_client(timeout=5)
    with gevent.Timeout(20, AssertionError("hung")):
        lines = [f"línea {n}" for n in range(2000)]
        assert list(client.upper_many(lines)) == [line.upper() for line in lines]
        assert client.upper_line(b"after many\n") == b"AFTER MANY\n"
        client.send("sent")
        client.send("twice")
        assert client.receive() == "SENT"
        assert client.receive() == "TWICE"
        assert client.upper_line(b"then one more\n") == b"THEN ONE MORE\n"
        client.disconnect()
    assert not client.connected


def _concurrent(delay_first_reply: float, start_second_after: float):
    release = gevent.event.Event()

    def delayed(conn, record):
        for line in read_lines(conn, record):
            if line == b"first\n":
                release.wait(delay_first_reply)
            conn.sendall(upper(line))

    server = Server(delayed)
    client = server.client(timeout=5)
    first = gevent.spawn(attempt, client.upper_line, b"first\n")
    if start_second_after:
        gevent.sleep(start_second_after)  # the first line is sent and its reply awaited
    second = gevent.spawn(attempt, client.upper_line, b"second\n")
    done = gevent.joinall([first, second], timeout=10)
    release.set()
    assert len(done) == 2, f"hung: first={first!r} second={second!r}"
    assert isinstance(second.value, Failed), f"the second got a reply: {second.value!r}"
    assert not isinstance(second.value.exc, ReplyTimeout), second.value
    assert first.value == b"FIRST\n", (
        f"the first greenlet got {first.value!r}; the second got {second.value!r}; "
        f"the server read {bytes(server.records[0])!r}"
    )
    client.close()
    server.stop()


def scenario_concurrent_use():
    """Two greenlets start a round trip on one client in the same loop iteration."""
    _concurrent(delay_first_reply=0, start_second_after=0)


def scenario_concurrent_use_while_waiting():
    """A second greenlet uses the client while the first waits for its (late) reply."""
    _concurrent(delay_first_reply=0.3, start_second_after=0.1)


def _call_from_hub(client, line):
    outcome = []

    def from_hub():
        try:
            outcome.append(client.upper_line(line))
        except BaseException as exc:  # noqa: B036 (reported to the scenario)
            outcome.append(exc)

    gevent.get_hub().loop.run_callback(from_hub)
    with gevent.Timeout(5, AssertionError("the hub callback never ran")):
        while not outcome:
            gevent.sleep(0.01)
    return outcome[0]


def scenario_from_hub():
    """upper_line from a hub callback raises BlockingSwitchOutError; nothing else breaks."""
    server = Server(answering)
    client = server.client(timeout=2)
    other = server.client(timeout=2)
    error = _call_from_hub(client, b"from the hub\n")
    assert isinstance(error, BlockingSwitchOutError), repr(error)
    coop = client._cooperative
    assert coop is not None and coop._watcher.callback is None, "read watcher left started"
    assert coop._waiter is None and coop._line is None
    outbox = Cooperative._outboxes[gevent.get_hub()]
    assert all(queued._line is None for queued in outbox.queued), "a line was left queued"
    with gevent.Timeout(10, AssertionError("hung")):
        # The loop, the outbox and other connections carry on.
        helper = gevent.spawn(round_trips_for, other, 0.5, "other", 0.01)
        fresh = server.client(timeout=2)
        count = round_trips_for(fresh, 0.5, "fresh", sleep=0.01)
        helper.join(timeout=5)
    assert helper.successful(), helper.exception
    assert count > 5 and helper.value > 5
    for each in (client, other, fresh):
        each.close()
    server.stop()


def scenario_from_hub_then_same_client():
    """After the hub call failed, the same client never hands out another line's reply."""
    server = Server(answering)
    client = server.client(timeout=2)
    error = _call_from_hub(client, b"from the hub\n")
    assert isinstance(error, BlockingSwitchOutError), repr(error)
    gevent.sleep(0.1)
    with gevent.Timeout(10, AssertionError("hung")):
        try:
            reply = client.upper_line(b"next\n")
        except (ConnectionLost, ReplyTimeout):
            pass  # refusing to go on is fine
        else:
            assert reply == b"NEXT\n", (
                f"the reply to b'next\\n' was {reply!r}; the server read "
                f"{bytes(server.records[0])!r}"
            )
    client.close()
    server.stop()


def record_hub_errors() -> list[str]:
    """Every error the hub reports (a failed callback, timer or greenlet), as text."""
    hub = gevent.get_hub()
    errors = []
    report = hub.handle_error

    def recording(context, exc_type, value, tb):
        if exc_type is not None and not issubclass(exc_type, hub.NOT_ERROR):
            errors.append(f"{context!r}: {exc_type.__name__}: {value}")
        return report(context, exc_type, value, tb)

    hub.handle_error = recording
    return errors


SCENARIOS = {
    name.removeprefix("scenario_"): function
    for name, function in globals().items()
    if name.startswith("scenario_")
}


def main(argv: list[str]) -> int:
    global REAL_SERVER_PORT
    if not argv or argv[0] not in SCENARIOS:
        print(f"usage: cooperative_scenarios.py {{{','.join(SCENARIOS)}}} [PORT]", file=sys.stderr)
        return 2
    if len(argv) > 1:
        REAL_SERVER_PORT = int(argv[1])
    errors = record_hub_errors()
    with gevent.Timeout(SCENARIO_TIMEOUT, AssertionError(f"{argv[0]} did not finish in time")):
        SCENARIOS[argv[0]]()
    # An error in a loop callback (a flush, a timer) or a greenlet is only printed by
    # the hub, and the scenario could pass without noticing it: it fails here.
    assert not errors, f"errors reported to the hub: {errors}"
    print("ok")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
