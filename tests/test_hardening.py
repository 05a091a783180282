"""Production hardening over real sockets: timeouts, limits, shutdown, workers, EMFILE, leaks.

Every test drives ``python -m upper_server`` (or an in-thread ``UpperServer`` when it
reads counters) through 127.0.0.1 and checks behaviour only, never internals.
Each would fail without the feature it covers. Timeouts everywhere; the only time
assertions are the ones a feature promises ("closed after the timeout, within a
generous margin").
"""

import os
import selectors
import signal
import socket
import sys
import threading
import time

import psutil
import pytest
from helpers import (
    answers,
    assert_a_killed_worker_is_replaced,
    assert_workers_die_with_their_parent,
    eventually,
    process_alive,
    read_exactly,
    read_until_eof,
    wait_for_workers,
)
from reference_model import expected_reply
from servers import ServerProcess

from upper.server.connection import State

pytestmark = pytest.mark.timeout(90)

CLOSE_WAIT = 15.0
"""How long a test waits for something the server must do "soon" (noisy shared CI)."""

_LINGER_RESET = b"\x01\x00\x00\x00\x00\x00\x00\x00"  # SO_LINGER on, 0 s: close() sends RST


# -- helpers -----------------------------------------------------------------------------


def read_until_closed(sock: socket.socket, timeout: float = CLOSE_WAIT) -> bytes:
    """Everything sent until the server closes (EOF or reset); socket.timeout if it never does."""
    sock.settimeout(timeout)
    chunks = []
    try:
        while chunk := sock.recv(1 << 20):
            chunks.append(chunk)
    except ConnectionResetError:
        pass
    return b"".join(chunks)


def pump(socks, first: bytes, segment: bytes, blocked_for: float = 1.0, limit: int = 64 << 20):
    """Send ``first`` then ``segment`` over and over on every socket, never reading.

    Stops when each socket has been blocked for ``blocked_for`` (or was reset by the
    server), or has taken ``limit`` bytes, or after 30 s: a server that never pushes back
    fails the caller's bound instead of hanging the test. Returns {socket: bytes accepted}
    and the set of sockets that ended blocked.
    """
    pending = {sock: memoryview(first) for sock in socks}
    accepted = dict.fromkeys(socks, 0)
    blocked_since = {}
    blocked, done = set(), set()
    for sock in socks:
        sock.setblocking(False)
    give_up = time.monotonic() + 30
    while len(done) < len(socks) and time.monotonic() < give_up:
        for sock in socks:
            if sock in done:
                continue
            try:
                sent = sock.send(pending[sock])
            except BlockingIOError:
                now = time.monotonic()
                blocked_since.setdefault(sock, now)
                if now - blocked_since[sock] >= blocked_for:
                    blocked.add(sock)
                    done.add(sock)
                continue
            except (ConnectionResetError, BrokenPipeError):
                done.add(sock)  # the server dropped it while we were still pushing
                continue
            blocked_since.pop(sock, None)
            accepted[sock] += sent
            pending[sock] = pending[sock][sent:] or memoryview(segment)
            if accepted[sock] >= limit:
                done.add(sock)
        time.sleep(0.01)
    for sock in socks:
        sock.settimeout(CLOSE_WAIT)
    return accepted, blocked


ASCII_LINES = (b"x" * 1023 + b"\n") * 64  # 64 KiB


class StderrTail:
    """Reads a running server's stderr as it comes, without ever blocking."""

    def __init__(self, server: ServerProcess):
        self.fd = server.process.stderr.fileno()
        self.data = b""

    def read(self) -> str:
        with selectors.DefaultSelector() as selector:
            selector.register(self.fd, selectors.EVENT_READ)
            while selector.select(0):
                chunk = os.read(self.fd, 65536)
                if not chunk:
                    break
                self.data += chunk
        return self.data.decode(errors="replace")

    def wait_for(self, predicate, timeout: float = CLOSE_WAIT) -> str:
        eventually(lambda: predicate(self.read()), timeout)
        return self.read()


def wait_for_exit(server: ServerProcess, timeout: float = 30.0):
    """Wait for a server that was already signalled: (exit code, stdout, stderr)."""
    try:
        stdout, stderr = server.process.communicate(timeout=timeout)
    except Exception:
        server.kill()
        raise
    return server.process.returncode, stdout.decode(), stderr.decode()


# -- --idle-timeout ----------------------------------------------------------------------

IDLE = 0.5


@pytest.fixture(scope="module")
def idle_server():
    with ServerProcess("--idle-timeout", str(IDLE), "--log-level", "warning") as running:
        yield running


@pytest.mark.parametrize(
    ("sent", "streamed", "flushed"),
    [
        (b"", b"", b""),
        (b"hola", b"HOLA", b""),  # a slowloris that stalls mid-line
        (b"DESC", b"", b"DESC"),  # held back as a possible keyword: flushed at the close
        (b"uno\nDESCONEXION\r", b"UNO\n", b"DESCONEXION\r"),
        (b"caf\xc3", b"CAF", b"\xc3"),  # incomplete UTF-8: comes back unchanged at the close
    ],
    ids=["idle", "stalled-mid-line", "held-keyword-prefix", "held-keyword-cr", "held-utf8"],
)
def test_idle_client_is_closed_after_the_idle_timeout(
    idle_server, connect, sent, streamed, flushed
):
    assert streamed + flushed == expected_reply(sent)
    sock = connect(idle_server.address)
    started = time.monotonic()
    if sent:
        sock.sendall(sent)
    assert read_exactly(sock, len(streamed)) == streamed
    # Everything read gets its reply before the close; then EOF.
    assert read_until_closed(sock) == flushed
    assert time.monotonic() - started >= IDLE * 0.8, "closed before the idle timeout"


def test_drip_faster_than_the_idle_timeout_keeps_the_connection(start_server, connect):
    timeout = 1.0
    server = start_server("--idle-timeout", str(timeout), "--log-level", "warning")
    sock = connect(server.address)
    started = time.monotonic()
    letters = iter(b"abcdefghijklmnopqrstuvwxyz" * 4)
    while time.monotonic() - started < 3.5 * timeout:  # several idle timeouts
        letter = bytes([next(letters)])
        sock.sendall(letter)
        assert read_exactly(sock, 1) == letter.upper()  # answered as it drips
        time.sleep(timeout / 4)
    sock.sendall(b" fin\n")
    assert read_exactly(sock, 5) == b" FIN\n"


def test_idle_timeout_zero_never_closes(start_server, connect):
    server = start_server("--idle-timeout", "0", "--log-level", "warning")
    sock = connect(server.address)
    sock.sendall(b"hola\n")
    assert read_exactly(sock, 5) == b"HOLA\n"
    sock.sendall(b"DESC")  # held back: an idle close would flush it, and we'd see it
    sock.settimeout(1.5)
    with pytest.raises(socket.timeout):
        sock.recv(100)
    sock.settimeout(CLOSE_WAIT)
    sock.sendall(b"ONEXIONES\nsigo\n")
    assert read_exactly(sock, 19) == b"DESCONEXIONES\nSIGO\n"


# -- --max-connections -------------------------------------------------------------------


def test_connections_past_the_maximum_wait_in_the_backlog(start_server, connect):
    server = start_server("--max-connections", "3", "--log-level", "warning")
    served = [connect(server.address) for _ in range(3)]
    for number, sock in enumerate(served):
        sock.sendall(b"cliente %d\n" % number)
        assert read_exactly(sock, 10) == b"CLIENTE %d\n" % number
    waiting = connect(server.address)  # the handshake completes in the backlog: not refused
    waiting.sendall(b"cuarto\n")
    waiting.settimeout(1.0)
    with pytest.raises(socket.timeout):  # neither answered nor reset while 3 are open
        waiting.recv(100)
    served[0].sendall(b"sigo\n")
    assert read_exactly(served[0], 5) == b"SIGO\n"
    served[1].sendall(b"DESCONEXION\n")
    assert read_until_eof(served[1]) == b""
    served[1].close()
    waiting.settimeout(CLOSE_WAIT)
    assert read_exactly(waiting, 7) == b"CUARTO\n"


# -- --shutdown-timeout, SIGTERM and SIGINT ----------------------------------------------


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_graceful_shutdown_answers_everything_read_then_closes_cleanly(
    start_server, connect, signum
):
    server = start_server()
    # (sent, what proves the server has read it all) for clients in mid-session.
    sessions = [
        (b"hola\nmundo", b"HOLA\nMUNDO"),
        (b"uno\nDESC", b"UNO\n"),  # "DESC" is held back: it must come at the close
        ("canción\nstra\xc3".encode(), "CANCIÓN\nSTRA".encode()),
        (b"", b""),
    ]
    clients = []
    for sent, streamed in sessions:
        sock = connect(server.address)
        if sent:
            sock.sendall(sent)
        assert read_exactly(sock, len(streamed)) == streamed
        clients.append((sock, sent, streamed))
    # One more client has a large reply in flight: the server is blocked writing to it.
    bulk = b"".join(b"linea %07d\n" % i for i in range(600_000))  # ~8 MB
    busy = connect(server.address)
    sender_errors = []

    def send_bulk():
        try:
            busy.sendall(bulk)
        except OSError as exc:
            sender_errors.append(exc)

    sender = threading.Thread(target=send_bulk, daemon=True)
    sender.start()
    time.sleep(0.5)  # what has already been sent has been read

    server.send_signal(signum)
    for sock, sent, streamed in clients:
        # read_until_eof raises on a reset: the replies must all arrive, then a FIN.
        assert streamed + read_until_eof(sock) == expected_reply(sent)
    reply = read_until_eof(busy)
    assert reply, "the busy client got nothing"
    assert reply == bulk[: len(reply)].upper(), "a reply was cut or mangled"
    sender.join(CLOSE_WAIT)
    assert not sender.is_alive()

    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(server.address, timeout=5).close()
    for sock, *_ in clients:
        sock.close()
    busy.close()
    code, _stdout, stderr = wait_for_exit(server)
    assert code == 0, stderr
    assert "Traceback" not in stderr


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_client_that_never_reads_is_closed_after_the_shutdown_timeout(
    start_server, connect, signum
):
    timeout = 1.0
    server = start_server("--shutdown-timeout", str(timeout), "--log-level", "warning")
    stuck = connect(server.address)
    _accepted, blocked = pump([stuck], ASCII_LINES, ASCII_LINES)
    assert blocked, "the server never pushed back"
    polite = connect(server.address)
    polite.sendall(b"adios")
    assert read_exactly(polite, 5) == b"ADIOS"

    started = time.monotonic()
    server.send_signal(signum)
    assert read_until_eof(polite) == b""  # the polite one is closed at once, cleanly
    polite.close()
    code, _stdout, stderr = wait_for_exit(server, timeout=timeout + 20)
    elapsed = time.monotonic() - started
    assert code == 0, stderr
    assert elapsed >= timeout * 0.8, "the straggler did not get its shutdown timeout"
    assert elapsed < timeout + 10, f"exit took {elapsed:.1f}s with --shutdown-timeout {timeout}"
    # The straggler's connection is gone (EOF or reset once its unread replies are read).
    read_until_closed(stuck)


def test_shutdown_keeps_the_linger_of_a_client_that_never_closes(start_server, connect):
    """After DESCONEXION the client has every reply and our FIN but keeps its socket open:
    without a shutdown its connection ends at the linger (5 s), and a shutdown must not
    make it wait for the whole --shutdown-timeout instead."""
    server = start_server("--shutdown-timeout", "30", "--log-level", "info")
    lingering = connect(server.address)
    lingering.sendall(b"hola\nDESCONEXION\n")
    assert read_until_eof(lingering) == b"HOLA\n"  # every reply, then the FIN; never closed
    started = time.monotonic()
    server.send_signal(signal.SIGTERM)
    code, _stdout, stderr = wait_for_exit(server, timeout=40)
    elapsed = time.monotonic() - started
    assert code == 0, stderr
    assert "still open" not in stderr, stderr
    assert elapsed < 15, f"shutdown took {elapsed:.1f}s: the linger (5 s) did not apply"


# -- --workers ---------------------------------------------------------------------------


def test_workers_are_supervised_and_stop_with_the_parent(start_server, seen_workers):
    server = start_server("--workers", "2", "--log-level", "warning")
    all_workers = assert_a_killed_worker_is_replaced(server, seen_workers)
    for number in range(20):  # whichever worker takes them, they are served
        assert answers(server.address, f"cliente {number}")

    # Mid-session clients, spread over the workers by the kernel, get a clean close.
    clients = [socket.create_connection(server.address, timeout=CLOSE_WAIT) for _ in range(10)]
    try:
        for sock in clients:
            sock.sendall(b"a medias")
            assert read_exactly(sock, 8) == b"A MEDIAS"
        server.send_signal(signal.SIGTERM)
        for sock in clients:
            assert read_until_eof(sock) == b""
    finally:
        for sock in clients:
            sock.close()
    code, _stdout, stderr = wait_for_exit(server)
    assert code == 0, stderr
    survivors = [pid for pid, created in all_workers.items() if process_alive(pid, created)]
    assert not survivors, f"workers outlived the parent: {survivors}"


def test_workers_exit_when_the_parent_is_killed(start_server, seen_workers):
    server = start_server("--workers", "2", "--log-level", "warning")
    assert_workers_die_with_their_parent(server, seen_workers)


def test_workers_refuse_new_connections_as_soon_as_sigterm_arrives(start_server, seen_workers):
    """No process may hold a listening socket that nobody will accept from."""
    server = start_server("--workers", "2", "--shutdown-timeout", "60", "--log-level", "warning")
    seen_workers.update(wait_for_workers(psutil.Process(server.pid), 2))
    stuck = socket.create_connection(server.address, timeout=CLOSE_WAIT)
    try:
        # A client that never reads keeps its worker, and so the parent, in the shutdown.
        _accepted, blocked = pump([stuck], ASCII_LINES, ASCII_LINES)
        assert blocked, "the server never pushed back"
        server.send_signal(signal.SIGTERM)

        def refused() -> bool:
            try:
                socket.create_connection(server.address, timeout=CLOSE_WAIT).close()
            except ConnectionRefusedError:
                return True
            return False

        assert eventually(refused), "new connections were still accepted during the shutdown"
        assert server.process.poll() is None, "the shutdown was already over: nothing tested"
    finally:
        stuck.close()
    code, _stdout, stderr = wait_for_exit(server)
    assert code == 0, stderr


def test_workers_zero_means_one_per_cpu(start_server, seen_workers):
    cpus = len(os.sched_getaffinity(0))
    if cpus > 16:
        pytest.skip(f"{cpus} CPUs: too many workers for a quick test")
    server = start_server("--workers", "0", "--log-level", "warning")
    seen_workers.update(wait_for_workers(psutil.Process(server.pid), cpus if cpus > 1 else 0))
    assert answers(server.address)
    code, _stdout, stderr = server.stop_and_collect()
    assert code == 0, stderr


# -- out of file descriptors -------------------------------------------------------------

FD_LIMIT = 40
_WITH_FD_LIMIT = (
    "import os, resource, sys; "
    f"resource.setrlimit(resource.RLIMIT_NOFILE, ({FD_LIMIT}, {FD_LIMIT})); "
    "os.execv(sys.executable, [sys.executable, *sys.argv[1:]])"
)


def test_out_of_descriptors_keeps_serving_without_spinning():
    # The limit is set in the child and the server exec'd in place: same pid, same pipes.
    server = ServerProcess("--max-connections", "1000", "--log-level", "warning")
    server.command[1:1] = ["-c", _WITH_FD_LIMIT]
    server.start()
    try:
        _check_out_of_descriptors(server)
    finally:
        server.kill()


def _check_out_of_descriptors(server: ServerProcess) -> None:
    assert server.command[0] == sys.executable
    stderr = StderrTail(server)
    free = FD_LIMIT - server.open_descriptors()
    clients = [
        socket.create_connection(server.address, timeout=CLOSE_WAIT) for _ in range(free + 8)
    ]
    try:
        for number, sock in enumerate(clients):
            sock.sendall(b"cliente %03d\n" % number)
        log = stderr.wait_for(lambda text: "cannot accept" in text)
        assert "cannot accept" in log, f"no warning about running out of descriptors: {log!r}"

        # Sort the clients into served and still waiting in the backlog.
        replies = {sock: b"" for sock in clients}
        with selectors.DefaultSelector() as selector:
            for sock in clients:
                selector.register(sock, selectors.EVENT_READ)
            deadline = time.monotonic() + 2.0
            while time.monotonic() < deadline:
                for key, _ in selector.select(0.1):
                    chunk = key.fileobj.recv(100)
                    assert chunk, "a client was closed instead of served or kept waiting"
                    replies[key.fileobj] += chunk
        expected = {sock: b"CLIENTE %03d\n" % n for n, sock in enumerate(clients)}
        served = [sock for sock in clients if replies[sock] == expected[sock]]
        waiting = [sock for sock in clients if not replies[sock]]
        assert len(served) + len(waiting) == len(clients), "a reply came back cut"
        assert len(served) >= free - 8, "existing connections were not served"
        assert len(waiting) >= 4, "every client was accepted: the limit was never hit"

        # While out of descriptors the accept loop must back off, not burn the CPU.
        process = psutil.Process(server.pid)
        before = process.cpu_times()
        time.sleep(1.0)
        after = process.cpu_times()
        busy = (after.user - before.user) + (after.system - before.system)
        assert busy < 0.3, f"the server burned {busy:.2f}s of CPU in 1s while out of descriptors"
        # Many failed retries by now, one warning for the whole burst.
        assert stderr.read().count("cannot accept") == 1, stderr.read()

        # Open connections keep being served.
        for sock in served[:3]:
            sock.sendall(b"sigo\n")
            assert read_exactly(sock, 5) == b"SIGO\n"

        # Descriptors come free: the clients in the backlog are accepted and answered.
        for sock in served[: len(waiting) + 5]:
            sock.close()
        for sock in waiting:
            sock.settimeout(CLOSE_WAIT)
            assert read_exactly(sock, len(expected[sock])) == expected[sock]
        assert answers(server.address)
    finally:
        for sock in clients:
            sock.close()
    code, _stdout, log = server.stop_and_collect()
    assert code == 0, log


# -- backpressure: a client that sends and never reads -----------------------------------


def test_client_that_never_reads_is_held_back_then_dropped(start_server, connect):
    idle = 2.0
    server = start_server("--idle-timeout", str(idle), "--log-level", "warning")
    descriptors = server.open_descriptors()
    process = psutil.Process(server.pid)
    sock = connect(server.address)
    warm_up = b"y" * 65535 + b"\n"  # so allocator start-up does not count as growth
    sock.sendall(warm_up)
    assert read_exactly(sock, len(warm_up)) == warm_up.upper()
    baseline = process.memory_info().rss

    accepted, _blocked = pump([sock], ASCII_LINES, ASCII_LINES)
    growth = process.memory_info().rss - baseline
    assert accepted[sock] < 32 << 20, (
        f"the server took {accepted[sock]} bytes from a client that never reads"
    )
    assert growth < 8 << 20, f"server RSS grew by {growth} bytes"

    # No progress in either direction: dropped after the idle timeout.
    assert eventually(lambda: server.open_descriptors() == descriptors, idle + CLOSE_WAIT), (
        "the connection of a client that never reads was never dropped"
    )
    read_until_closed(sock)
    assert answers(server.address)


def test_client_that_stops_reading_with_bytes_held_back_is_still_dropped(start_server):
    """Blocked writing to a client that never reads while the session holds bytes back.

    Every segment ends with the first 3 bytes of a 4-byte character, so whenever the
    server blocks, it holds them. The idle close must not wait forever to flush them
    to a client that does not read: "no progress for the idle timeout" still holds.
    """
    idle = 2.0
    server = start_server("--idle-timeout", str(idle), "--log-level", "warning")
    descriptors = server.open_descriptors()
    emoji = "😀".encode()
    first = b"a" + emoji * 16383 + emoji[:3]  # 64 KiB
    segment = emoji[3:] + emoji * 16383 + emoji[:3]  # 64 KiB, continues the stream
    clients = []
    try:
        for _ in range(2):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            clients.append(sock)
            # A small receive buffer keeps its window shut: the server's sends stay blocked.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.settimeout(CLOSE_WAIT)
            sock.connect(server.address)
        accepted, _blocked = pump(clients, first, segment)
        assert max(accepted.values()) < 32 << 20
        assert eventually(lambda: server.open_descriptors() == descriptors, idle + CLOSE_WAIT), (
            f"{server.open_descriptors() - descriptors} connection(s) of clients that stopped "
            f"reading were never dropped (--idle-timeout {idle})"
        )
    finally:
        for sock in clients:
            sock.close()
    assert answers(server.address)


# -- resets, half-closes, vanishing clients: nothing leaks -------------------------------


def misbehave(address) -> None:
    """A batch of clients that go away in every rude way there is."""

    def opened():
        return socket.create_connection(address, timeout=CLOSE_WAIT)

    def reset(sock):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
        sock.close()

    for _ in range(10):
        opened().close()  # close right after connect
        reset(opened())  # reset right after connect
        with opened() as sock:  # vanish mid-line
            sock.sendall(b"a medias")
        with opened() as sock:  # vanish mid-character
            sock.sendall(b"caf\xe2\x82")
        with opened() as sock:  # vanish with a possible keyword held back
            sock.sendall(b"DESCONEX")
        with opened() as sock:  # half-close, then vanish without reading
            sock.sendall(b"hola\nadios")
            sock.shutdown(socket.SHUT_WR)
        sock = opened()  # reset after DESCONEXION, replies unread
        sock.sendall(b"uno\nDESCONEXION\nmas\n")
        reset(sock)
        sock = opened()  # reset half-way through a big reply
        sock.sendall(b"z" * 200_000 + b"\n")
        read_exactly(sock, 1000)
        reset(sock)
        sock = opened()  # reset while the half-closed server drains
        sock.sendall(b"DESCONEXION\n")
        assert read_until_eof(sock) == b""
        sock.sendall(b"sobra\n" * 1000)
        reset(sock)


def test_rude_clients_leak_no_descriptors(start_server):
    server = start_server("--log-level", "warning")
    before = server.open_descriptors()
    misbehave(server.address)
    assert answers(server.address)
    assert eventually(lambda: server.open_descriptors() == before), (
        f"{server.open_descriptors() - before} descriptor(s) leaked"
    )
    code, _stdout, stderr = server.stop_and_collect()
    assert code == 0
    assert "Traceback" not in stderr, stderr


def test_rude_clients_leak_no_connections_or_greenlets(threaded_server):
    running = threaded_server()
    baseline = running.live_greenlets()
    misbehave(running.address)
    assert answers(running.address)
    assert running.wait_until(lambda server: server.stats.open_connections == 0, CLOSE_WAIT)
    assert eventually(lambda: running.live_greenlets() == baseline), (
        f"{running.live_greenlets() - baseline} greenlet(s) still alive"
    )


# -- --stats-interval and the counters ---------------------------------------------------


def parse_counters(line: str) -> dict[str, int]:
    return {
        key: int(value)
        for key, value in (field.split("=", 1) for field in line.split() if "=" in field)
        if value.isdigit()
    }


def test_stats_interval_logs_the_counters(start_server, connect):
    quiet = start_server()  # --stats-interval defaults to 0: off
    server = start_server("--stats-interval", "0.2")
    stderr = StderrTail(server)
    for running in (server, quiet):
        sock = connect(running.address)
        sock.sendall(b"uno\ndos\ntres\n")
        sock.shutdown(socket.SHUT_WR)
        assert read_until_eof(sock) == b"UNO\nDOS\nTRES\n"
        sock.close()

    def final_counters(text):
        lines = [line for line in text.splitlines() if "lines_in=" in line]
        if not lines:
            return False
        counters = parse_counters(lines[-1])
        return counters.get("served") == 1 and counters.get("open") == 0

    log = stderr.wait_for(final_counters)
    stats_lines = [line for line in log.splitlines() if "lines_in=" in line]
    assert stats_lines, f"no stats line in {log!r}"
    counters = parse_counters(stats_lines[-1])
    assert counters == {
        "open": 0,
        "served": 1,
        "lines_in": 3,
        "lines_out": 3,
        "bytes_in": 13,
        "bytes_out": 13,
        "errors": 0,
        "failed_handshakes": 0,
    }
    code, _stdout, quiet_log = quiet.stop_and_collect()
    assert code == 0
    assert "lines_in=" not in quiet_log and "stats" not in quiet_log.lower()


def test_counters_are_readable_from_python(threaded_server, connect):
    running = threaded_server()
    sent = b"hola\n" + "straße ΐ\n".encode()  # ΐ uppercases to three code points
    reply = expected_reply(sent)
    assert len(reply) > len(sent)
    sock = connect(running.address)
    sock.sendall(sent)
    sock.shutdown(socket.SHUT_WR)
    assert read_until_eof(sock) == reply
    sock.close()
    assert running.wait_until(lambda server: server.stats.open_connections == 0)
    stats = running.stats
    assert stats.connections_served == 1
    assert (stats.lines_in, stats.lines_out) == (2, 2)
    assert (stats.bytes_in, stats.bytes_out) == (len(sent), len(reply))
    assert stats.errors == 0


def test_counters_leave_out_what_is_held_back_or_never_answered(threaded_server, connect):
    running = threaded_server()
    sock = connect(running.address)
    sock.sendall(b"uno\nDESC")  # the line start may become the keyword: held back
    assert read_exactly(sock, 4) == b"UNO\n"
    stats = running.stats
    assert running.wait_until(lambda server: server.stats.bytes_in == 8)
    assert (stats.lines_in, stats.lines_out, stats.bytes_out) == (1, 1, 4)
    sock.sendall(b"ONEXION\n")  # it did: the keyword line is read, never answered
    assert read_until_eof(sock) == b""
    assert running.wait_until(lambda server: server.stats.open_connections == 0)
    assert (stats.lines_in, stats.lines_out) == (2, 1)
    assert (stats.bytes_in, stats.bytes_out) == (16, 4)
    assert stats.snapshot()["bytes_out"] == 4 and "bytes_unsent" not in stats.snapshot()


def test_without_count_traffic_lines_and_bytes_stay_zero(threaded_server, connect):
    """Every path that counts (fast, held back, resized, the keyword) is off, with no drift."""
    running = threaded_server(count_traffic=False)
    sock = connect(running.address)
    sent = b"hola\n" + "straße ΐ\n".encode()
    sock.sendall(sent + b"DESC")
    assert read_exactly(sock, len(expected_reply(sent))) == expected_reply(sent)
    sock.sendall(b"ONEXION\n")
    assert read_until_eof(sock) == b""
    assert running.wait_until(lambda server: server.stats.open_connections == 0)
    counters = running.stats.snapshot()
    assert {key: counters[key] for key in ("lines_in", "lines_out", "bytes_in", "bytes_out")} == {
        "lines_in": 0, "lines_out": 0, "bytes_in": 0, "bytes_out": 0
    }
    assert (running.stats.lines_unsent, running.stats.bytes_unsent) == (0, 0)
    assert counters["connections_served"] == 1 and counters["errors"] == 0


@pytest.mark.parametrize(
    ("argv", "counting"),
    [([], False), (["--stats-interval", "60"], True), (["--metrics-port", "9150"], True)],
)
def test_the_command_line_counts_lines_only_when_something_reports_them(argv, counting):
    from upper.server.cli import make_server, parse_args

    server = make_server(("127.0.0.1", 0), parse_args(argv))
    assert server.stats.counting is counting


def test_a_reply_the_client_has_not_read_is_not_counted_as_sent(threaded_server):
    running = threaded_server()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # fills up at once
    sock.settimeout(CLOSE_WAIT)
    sock.connect(running.address)
    line = b"x" * 1023 + b"\n"
    chunk = line * 64  # 64 KiB: the server sends each reply while reading the next
    times = 256  # 16 MiB: more than the socket buffers on both sides can take
    sender = threading.Thread(target=lambda: sock.sendall(chunk * times), daemon=True)
    try:
        sender.start()
        # The server is parked with a reply the client is not reading.
        assert running.wait_until(
            lambda server: any(c.state is State.SENDING for c in server.connections)
        )
        stats = running.stats
        snapshot = stats.snapshot()  # one consistent view: the server thread may run on
        assert snapshot["bytes_out"] < snapshot["bytes_in"]
        assert snapshot["lines_out"] < snapshot["lines_in"]
        assert snapshot["bytes_in"] - snapshot["bytes_out"] >= len(line)
        sock.settimeout(CLOSE_WAIT)
        assert read_exactly(sock, len(chunk) * times) == (chunk * times).upper()
        sender.join(CLOSE_WAIT)
        sock.shutdown(socket.SHUT_WR)
        assert read_until_eof(sock) == b""
    finally:
        sock.close()
    assert running.wait_until(lambda server: server.stats.open_connections == 0)
    assert (stats.bytes_in, stats.lines_in) == (len(chunk) * times, 64 * times)
    assert (stats.bytes_out, stats.lines_out) == (stats.bytes_in, stats.lines_in)
