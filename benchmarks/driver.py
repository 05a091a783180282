"""The Python fallback load driver: raw non-blocking sockets on ``select.epoll``, closed loop.

The fallback: ``benchmarks.bench`` uses the native driver (``benchmarks/native``,
C, built on first use) and runs this one only where no C compiler is found, or
when asked with ``--driver python``; its figures are then labelled as the
fallback's. It was the benchmark's only driver, and it saturated its own core
before the fast servers did, so they were measured at its ceiling: the native
driver, which checks the same bytes at a fraction of the CPU, replaced it.

The benchmark runs it in its own process, pinned to the core(s) the server is
not on, so it has to cost as little per message as it can: no asyncio, no
gevent, one edge-triggered ``epoll.poll`` per batch of events, the request and
its expected reply precomputed once, and for a complete reply only a read, a
bytes comparison, a clock read, an array append and a write. What is left is
mostly the kernel's: over loopback a ``write`` also runs the receiving side's
TCP processing, so about 85 % of the driver's CPU is TCP, about what a server
written in C-backed Python (uvloop) spends per message too. Against such a
server the driver saturates its core about when the server does; the result
says so (``driver_cpu_saturated``), and the server's CPU per message is then
the figure to compare.

Modes (``--mode``):

``pingpong``
    every connection sends one line and waits for its reply, forever.
``pipeline``
    every connection sends ``--lines-per-round`` lines in one ``send`` and
    waits for all their replies (pingpong is pipeline with K = 1).
``churn``
    ``--messages-per-connection`` messages (in rounds of K lines), then
    ``DESCONEXION``; wait for the server's close (a read returns ``b""``),
    close, reconnect at once.
``idle``
    open the connections and keep them idle until the window ends (the caller
    measures the server's memory meanwhile); then one line on each to check
    that the server really holds it. With ``--settle S`` the window starts no
    sooner than S seconds after the last reply.

Timeline: ramp-up (``--connect-rate`` connections opened per second, at most
``--ramp-timeout`` seconds), then ``--warmup`` seconds, then the measured
window of ``--duration`` seconds, then a short drain (no new requests; replies
still in flight are read so nothing is reset). Phase changes are reported on
stderr as one JSON object per line (``{"event": "ramped", ...}``,
``"measuring"``, ``"measured"``) so a caller can, say, sample the server's RSS
while the connections are known to be established.

Every reply is checked byte for byte against the expected uppercase. A
mismatch, a reset, an unexpected close or a reply slower than ``--timeout``
counts as an error and the connection is re-established. Connection attempts
that are refused, time out or find no port are retried with exponential
backoff and counted as ``connect_retries``, not errors.

The result is one JSON object on stdout (``python -m benchmarks.driver``) or
the dict returned by :func:`run`; see :func:`run` for its keys.
"""

from __future__ import annotations

import argparse
import errno
import gc
import heapq
import json
import os
import random
import resource
import select
import socket
import sys
import time
from array import array

from upper.protocol import uppercase

KEYWORD = b"DESCONEXION\n"
MODES = ("pingpong", "pipeline", "churn", "idle")

# Connection states. FIRST: connected, first request sent, no reply yet. A
# connection counts as established only once the server has answered it: a
# client-side connect also succeeds when the server's accept queue is full and
# the handshake is silently dropped, and then nothing is served for seconds.
FREE, CONNECTING, FIRST, ACTIVE, CLOSING = 0, 1, 2, 3, 4

# Edge-triggered: an event is reported once per arrival, not again on every
# epoll_wait while unread data remains, which saves the kernel re-polling every
# socket that was ready. Sound here because one read always empties a socket:
# see ``bufsize``.
READABLE = select.EPOLLIN | select.EPOLLET
WRITABLE = select.EPOLLOUT | select.EPOLLET

# connect() failures that are retried rather than counted as errors.
RETRYABLE = {
    errno.ECONNREFUSED,
    errno.ETIMEDOUT,
    errno.EAGAIN,
    errno.EADDRNOTAVAIL,
    errno.ECONNRESET,
    errno.EPIPE,
    errno.EHOSTUNREACH,
    errno.ENETUNREACH,
}


def make_line(size: int, index: int = 0) -> bytes:
    """A lowercase ASCII line of ``size`` bytes including its LF; ``index`` rotates the letters."""
    if size < 1:
        raise ValueError("a line has at least its LF")
    letters = b"abcdefghijklmnopqrstuvwxyz"
    body = bytes(letters[(index + i) % 26] for i in range(size - 1))
    return body + b"\n"


def make_round(lines: int, size: int) -> tuple[bytes, bytes]:
    """The request for one round trip (``lines`` distinct lines) and its expected reply."""
    request = b"".join(make_line(size, i) for i in range(lines))
    return request, uppercase(request)


def raise_nofile_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit; return the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = max(soft, 1 << 20) if hard == resource.RLIM_INFINITY else hard
    if soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    return soft


def _cpu() -> float:
    times = os.times()
    return times.user + times.system


def _event(**fields) -> None:
    print(json.dumps(fields), file=sys.stderr, flush=True)


def _percentiles(samples_ns, percentiles):
    """Percentiles (µs) of an array('q') of nanosecond samples; numpy if present."""
    if not len(samples_ns):
        return [None for _ in percentiles]
    try:
        import numpy as np
    except ImportError:
        ordered = sorted(samples_ns)
        count = len(ordered)
        return [
            round(ordered[min(count - 1, int(q / 100 * count))] / 1000, 1) for q in percentiles
        ]
    samples = np.frombuffer(samples_ns, dtype=np.int64)
    values = np.percentile(samples, percentiles, method="lower")
    return [round(float(value) / 1000, 1) for value in values]


class Driver:
    def __init__(
        self,
        host: str,
        port: int,
        connections: int,
        mode: str = "pingpong",
        lines_per_round: int = 1,
        line_size: int = 16,
        messages_per_connection: int = 100,
        connect_rate: float = 2000.0,
        timeout: float = 10.0,
        connect_timeout: float = 10.0,
        quiet: bool = True,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}")
        if mode == "pingpong":
            lines_per_round = 1
        if connections < 1 or lines_per_round < 1:
            raise ValueError("connections and lines-per-round must be >= 1")
        self.addr = (host, port)
        self.connections = connections
        self.mode = mode
        self.lines_per_round = lines_per_round
        self.line_size = line_size
        self.request, self.expected_reply = make_round(lines_per_round, line_size)
        self.rounds_per_conn = max(1, -(-messages_per_connection // lines_per_round))
        self.connect_rate = connect_rate
        self.timeout_ns = int(timeout * 1e9)
        self.connect_timeout_ns = int(connect_timeout * 1e9)
        self.quiet = quiet
        # Big enough for a whole reply and then some; small enough to stay off
        # malloc (os.read allocates bufsize bytes, then shrinks them).
        # A read that fills it is always more than expected (an error), so one
        # read per edge-triggered event always empties the socket.
        self.bufsize = len(self.expected_reply) + 256

        self.epoll = select.epoll()
        size = connections + 64
        self.socks: list = [None] * size
        self.state = bytearray(size)
        self.awaited: list = [None] * size  # reply bytes still expected; None: none expected
        self.first_awaited: list = [None] * size  # same, for a connection in state FIRST
        self.sent_at = [0] * size  # when the outstanding request (or connect) was sent, ns
        self.rounds_left = [0] * size  # churn: rounds left before DESCONEXION
        self.unsent: list = [b""] * size  # bytes not yet written (partial write)
        self.attempt = [0] * size  # connect attempts of the connection on this fd
        self.latencies = array("q")  # one sample per completed round trip, ns
        self.schedule: list = []  # heap of (due_ns, attempt) connections to open
        self.open_sockets = 0  # sockets open (connecting or connected)
        self.established = 0  # connections open that the server has answered
        self.ever_established = 0  # connections the server has answered since the start
        self.sessions = 0  # churn: sessions ended by the server's close
        self.last_reply_ns = 0  # when the last reply was complete (the slow path's)
        self.errors: dict[str, int] = {}
        self.connect_retries = 0
        self.stopping = False
        # During ramp-up a connection the server has answered once waits,
        # parked, for the others (except in churn): the ramp is not slowed by
        # the load, and the window starts with all of them at once.
        self.parking = mode != "churn"
        self.parked: list[int] = []

    # ------------------------------------------------------------ bookkeeping

    def _error(self, kind: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1

    def _grow(self, fd: int) -> None:
        extra = fd + 64 - len(self.socks)
        self.socks.extend([None] * extra)
        self.state.extend(bytes(extra))
        self.awaited.extend([None] * extra)
        self.first_awaited.extend([None] * extra)
        self.sent_at.extend([0] * extra)
        self.rounds_left.extend([0] * extra)
        self.unsent.extend([b""] * extra)
        self.attempt.extend([0] * extra)

    def _open(self, attempt: int = 0) -> None:
        """Start a non-blocking connect; on immediate failure, reschedule."""
        try:
            # Non-blocking from birth: no FIONBIO ioctl.
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM | socket.SOCK_NONBLOCK)
        except OSError as exc:  # EMFILE/ENFILE/ENOBUFS: back off and retry
            self._retry(attempt, exc.errno)
            return
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        result_code = sock.connect_ex(self.addr)
        if result_code not in (0, errno.EINPROGRESS):
            sock.close()
            self._retry(attempt, result_code)
            return
        fd = sock.fileno()
        if fd >= len(self.socks):
            self._grow(fd)
        self.socks[fd] = sock
        self.state[fd] = CONNECTING
        self.attempt[fd] = attempt
        self.sent_at[fd] = time.perf_counter_ns()
        self.unsent[fd] = b""
        self.open_sockets += 1
        # On loopback the handshake has usually completed by the time connect()
        # returns: send the first request at once, and wait for the socket to
        # become writable only if it is still connecting (EAGAIN).
        try:
            count = os.write(fd, self.request)
        except BlockingIOError:
            self.epoll.register(fd, WRITABLE)
            return
        except OSError as exc:  # refused already
            self._close(fd)
            self._retry(attempt, exc.errno)
            return
        self.epoll.register(fd, READABLE)
        self._connected(fd)
        if count != len(self.request):
            self._written(fd, self.request, count)

    def _retry(self, attempt: int, err: int | None) -> None:
        if err in RETRYABLE or err in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, None):
            self.connect_retries += 1
        else:
            self._error("connect_" + (errno.errorcode.get(err, str(err)).lower()))
        # Exponential backoff with jitter, so that connections that failed
        # together do not all come back together.
        delay = min(1.0, 0.01 * (2 ** min(attempt, 10))) * (0.5 + random.random())
        heapq.heappush(self.schedule, (time.perf_counter_ns() + int(delay * 1e9), attempt + 1))

    def _close(self, fd: int) -> None:
        sock = self.socks[fd]
        if self.state[fd] in (ACTIVE, CLOSING):
            self.established -= 1
        self.state[fd] = FREE
        self.socks[fd] = None
        self.awaited[fd] = None
        self.first_awaited[fd] = None
        self.unsent[fd] = b""
        self.open_sockets -= 1
        sock.close()  # also removes fd from the epoll set

    def _fail(self, fd: int, kind: str) -> None:
        """Count an error, drop the connection, reconnect shortly."""
        self._error(kind)
        self._close(fd)
        if not self.stopping:
            heapq.heappush(self.schedule, (time.perf_counter_ns() + 10_000_000, 0))

    def _send(self, fd: int, data: bytes, now: int) -> None:
        """Send a request (or the keyword) and note when."""
        self.sent_at[fd] = now
        try:
            count = os.write(fd, data)
        except OSError as exc:
            count = exc
        if count != len(data):
            self._written(fd, data, count)

    def _written(self, fd: int, data: bytes, count) -> None:
        """A write that did not take all of ``data``: ``count`` bytes, or the OSError it raised."""
        if isinstance(count, BlockingIOError):
            count = 0
        elif isinstance(count, OSError):
            self._fail(fd, _error_kind(count))
            return
        if count != len(data):
            self.unsent[fd] = data[count:]
            self.epoll.modify(fd, READABLE | WRITABLE)

    def _start(self, fd: int, now: int) -> None:
        """Connected (the socket became writable): send the first request."""
        self.epoll.modify(fd, READABLE)
        self._connected(fd)
        self._send(fd, self.request, now)

    def _connected(self, fd: int) -> None:
        """The first request is (being) sent on a new connection: every mode, idle too."""
        self.state[fd] = FIRST
        self.rounds_left[fd] = self.rounds_per_conn
        self.awaited[fd] = None  # keeps the first reply off the fast path
        self.first_awaited[fd] = self.expected_reply

    def _round_done(self, fd: int, now: int) -> None:
        """Churn: a round trip completed; next round, or end the session."""
        self.rounds_left[fd] -= 1
        if self.rounds_left[fd] > 0:
            self.awaited[fd] = self.expected_reply
            self._send(fd, self.request, now)
        else:
            self._session_done(fd, now)

    def _session_done(self, fd: int, now: int) -> None:
        """Churn: the last round trip completed; DESCONEXION, then wait for the close."""
        self.state[fd] = CLOSING
        self.awaited[fd] = None
        self._send(fd, KEYWORD, now)

    # ------------------------------------------------------------ events

    def _slow(self, fd: int, events: int, data) -> None:
        """Everything the fast path in :meth:`_loop` does not handle."""
        state = self.state[fd]
        if state == FREE:  # closed earlier in this batch
            return
        now = time.perf_counter_ns()
        if state == CONNECTING:  # connect() finished
            err = self.socks[fd].getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err == 0 and not events & (select.EPOLLERR | select.EPOLLHUP):
                self._start(fd, now)
            else:
                attempt = self.attempt[fd]
                self._close(fd)
                if not self.stopping:
                    self._retry(attempt, err or errno.ECONNREFUSED)
            return
        if events & select.EPOLLOUT and self.unsent[fd]:
            try:
                count = os.write(fd, self.unsent[fd])
            except BlockingIOError:
                count = 0
            except OSError as exc:
                self._fail(fd, _error_kind(exc))
                return
            self.unsent[fd] = rest = self.unsent[fd][count:]
            if not rest:
                self.epoll.modify(fd, READABLE)
        if not events & (select.EPOLLIN | select.EPOLLERR | select.EPOLLHUP):
            return
        if data is None:
            try:
                data = os.read(fd, self.bufsize)
            except BlockingIOError:
                return
            except OSError as exc:
                self._fail(fd, _error_kind(exc))
                return
        elif isinstance(data, OSError):
            if isinstance(data, BlockingIOError):
                return
            self._fail(fd, _error_kind(data))
            return
        if not data:
            if state == CLOSING:  # the server's close after DESCONEXION: a session done
                self.sessions += 1
                self._close(fd)
                if not self.stopping:
                    self._open()
            else:
                self._fail(fd, "closed")
            return
        awaited = self.first_awaited[fd] if state == FIRST else self.awaited[fd]
        if awaited is None or not awaited.startswith(data):
            self._fail(fd, "mismatch")
            return
        if len(data) < len(awaited):
            if state == FIRST:
                self.first_awaited[fd] = awaited[len(data) :]
            else:
                self.awaited[fd] = awaited[len(data) :]
            return
        # The reply is complete.
        self.latencies.append(now - self.sent_at[fd])
        self.last_reply_ns = now
        if state == FIRST:
            self.state[fd] = ACTIVE
            self.first_awaited[fd] = None
            self.established += 1
            self.ever_established += 1
            if self.parking:
                self.awaited[fd] = None
                self.sent_at[fd] = 0
                self.parked.append(fd)
                return
        if self.stopping:
            self.awaited[fd] = None
            self.sent_at[fd] = 0
        elif self.mode == "churn":
            self._round_done(fd, now)
        elif self.mode == "idle":
            self.awaited[fd] = None
            self.sent_at[fd] = 0
        else:
            self.awaited[fd] = self.expected_reply
            self._send(fd, self.request, now)

    def _loop(self, until_ns: int, housekeeping) -> None:
        """The hot loop: poll, read, compare, record, write; until ``until_ns``.

        ``housekeeping(now)`` is called at least every 10 ms and returns the
        time of its next call (it opens scheduled connections, enforces
        timeouts, moves between phases).
        """
        poll = self.epoll.poll
        read = os.read
        write = os.write
        clock = time.perf_counter_ns
        awaited = self.awaited
        sent_at = self.sent_at
        record = self.latencies.append
        request = self.request
        request_length = len(request)
        expected_reply = self.expected_reply
        bufsize = self.bufsize
        slow = self._slow
        written = self._written
        rounds_left = self.rounds_left
        session_done = self._session_done
        churn = self.mode == "churn"
        EPOLLIN = select.EPOLLIN
        now = clock()
        next_housekeeping = housekeeping(now)
        while now < until_ns:
            timeout = (min(next_housekeeping, until_ns) - now) / 1e9
            for fd, events in poll(timeout if timeout > 0 else 0, 1024):
                if events != EPOLLIN:
                    slow(fd, events, None)
                    continue
                try:
                    data = read(fd, bufsize)
                except OSError as exc:
                    slow(fd, events, exc)
                    continue
                if data == awaited[fd]:
                    replied = clock()
                    record(replied - sent_at[fd])
                    if churn:
                        remaining = rounds_left[fd] - 1
                        rounds_left[fd] = remaining
                        if not remaining:
                            session_done(fd, replied)
                            continue
                    awaited[fd] = expected_reply
                    sent_at[fd] = replied
                    try:
                        count = write(fd, request)
                    except OSError as exc:
                        count = exc
                    if count != request_length:
                        written(fd, request, count)
                else:
                    slow(fd, events, data)
            now = clock()
            if now >= next_housekeeping:
                next_housekeeping = housekeeping(now)

    # ------------------------------------------------------------ phases

    def run(
        self,
        duration: float,
        warmup: float = 1.0,
        ramp_timeout: float | None = None,
        settle: float = 0.0,
    ) -> dict:
        start = time.perf_counter_ns()
        rate = self.connect_rate if self.connect_rate > 0 else float("inf")
        if ramp_timeout is None:
            ramp_timeout = 2 * self.connections / rate + 10 if rate != float("inf") else 10.0
        for i in range(self.connections):
            due = start + (int(i / rate * 1e9) if rate != float("inf") else 0)
            self.schedule.append((due, 0))
        heapq.heapify(self.schedule)

        # Every (re)connection from the schedule, retries included, keeps to
        # the connect rate: a token bucket holding at most 10 ms of tokens.
        burst = max(1.0, rate * 0.01) if rate != float("inf") else float("inf")
        state = {"next_timeout_scan": start + 1_000_000_000, "tokens": burst, "last": start}

        def housekeeping(now: int) -> int:
            schedule = self.schedule
            tokens = burst
            if burst != float("inf"):
                tokens = min(burst, state["tokens"] + (now - state["last"]) / 1e9 * rate)
            state["last"] = now
            while schedule and schedule[0][0] <= now and tokens >= 1:
                _, attempt = heapq.heappop(schedule)
                if self.open_sockets < self.connections:
                    self._open(attempt)
                    tokens -= 1
            state["tokens"] = tokens
            if now >= state["next_timeout_scan"]:
                self._scan_timeouts(now)
                state["next_timeout_scan"] = now + 1_000_000_000
            next_call = now + 10_000_000
            if schedule:
                next_call = min(next_call, max(schedule[0][0], now + 200_000))
            return next_call

        # Ramp-up: until every connection is established (or the ramp times out).
        ramp_end = start + int(ramp_timeout * 1e9)

        def ramping() -> bool:
            if self.mode == "churn":  # connections come and go: each one opened once
                return self.ever_established < self.connections
            return self.established < self.connections

        while ramping() and time.perf_counter_ns() < ramp_end:
            step = min(ramp_end, time.perf_counter_ns() + 20_000_000)
            self._loop(step, housekeeping)
        self.parking = False
        if self.mode != "idle":
            now = time.perf_counter_ns()
            for fd in self.parked:
                if self.state[fd] == ACTIVE and self.awaited[fd] is None:
                    self.awaited[fd] = self.expected_reply
                    self._send(fd, self.request, now)
        self.parked = []
        ramped = time.perf_counter_ns()
        ramp_s = (ramped - start) / 1e9
        if not self.quiet:
            _event(event="ramped", connections=self.established, seconds=round(ramp_s, 3))

        # Warm-up (idle: also until ``settle`` seconds after the last reply), then
        # the measured window.
        self._loop(ramped + int(warmup * 1e9), housekeeping)
        if self.mode == "idle" and settle > 0:
            settle_ns = int(settle * 1e9)
            deadline = time.perf_counter_ns() + settle_ns + int(ramp_timeout * 1e9)
            while time.perf_counter_ns() < min(deadline, self.last_reply_ns + settle_ns):
                self._loop(self.last_reply_ns + settle_ns, housekeeping)
        first_sample, sessions_before, cpu_before = len(self.latencies), self.sessions, _cpu()
        window_start = time.perf_counter_ns()
        errors_before = sum(self.errors.values())
        if not self.quiet:
            _event(event="measuring", connections=self.established)
        self._loop(window_start + int(duration * 1e9), housekeeping)
        window_end = time.perf_counter_ns()
        cpu_after = _cpu()
        end_sample, sessions_after = len(self.latencies), self.sessions
        established = self.established
        errors_in_window = sum(self.errors.values()) - errors_before
        if not self.quiet:
            _event(event="measured", connections=established)

        seconds = (window_end - window_start) / 1e9
        if self.mode == "idle":
            verify_start = time.perf_counter_ns()
            verified = self._verify_idle(max(5.0, self.timeout_ns / 1e9) + self.connections / 1000)
            verify_s = (time.perf_counter_ns() - verify_start) / 1e9
            messages = 0
            # The latencies reported: those of the verification lines.
            first_sample, end_sample = end_sample, len(self.latencies)
        else:
            verified = None
            messages = (end_sample - first_sample) * self.lines_per_round
            self._drain()
        samples = self.latencies[first_sample:end_sample]
        p50, p99, p999, pmax = _percentiles(samples, (50, 99, 99.9, 100))
        cpu = cpu_after - cpu_before
        result = {
            "driver": "python",
            "mode": self.mode,
            "messages": messages,
            "seconds": round(seconds, 4),
            "messages_per_s": round(messages / seconds, 1) if seconds > 0 else 0.0,
            "round_trips": end_sample - first_sample,
            "p50_us": p50,
            "p99_us": p99,
            "p999_us": p999,
            "max_us": pmax,
            "errors": sum(self.errors.values()),
            "errors_in_window": errors_in_window,
            "error_kinds": dict(self.errors),
            "connections": established,
            "connections_target": self.connections,
            "connect_retries": self.connect_retries,
            "ramp_s": round(ramp_s, 3),
            "driver_cpu_s": round(cpu, 4),
            "driver_cpu_us_per_message": round(cpu / messages * 1e6, 2) if messages else None,
            "driver_cpu_frac": round(cpu / seconds, 3) if seconds > 0 else 0.0,
            "driver_cpu_saturated": bool(seconds > 0 and cpu / seconds >= 0.9),
            "lines_per_round": self.lines_per_round,
            "line_size": self.line_size,
        }
        if self.mode == "churn":
            sessions = sessions_after - sessions_before
            result["sessions"] = sessions
            result["sessions_per_s"] = round(sessions / seconds, 1) if seconds > 0 else 0.0
        if verified is not None:
            result["verified"] = verified
            result["verify_s"] = round(verify_s, 3)
            result["settle_s"] = settle
        self.close()
        return result

    def _scan_timeouts(self, now: int) -> None:
        states, sent_at, socks = self.state, self.sent_at, self.socks
        for fd in range(len(socks)):
            state = states[fd]
            if state == FREE:
                continue
            if state == CONNECTING or state == FIRST:
                if now - sent_at[fd] > self.connect_timeout_ns:
                    attempt = self.attempt[fd]
                    self._close(fd)
                    self._retry(attempt, errno.ETIMEDOUT)
            elif sent_at[fd] and now - sent_at[fd] > self.timeout_ns:
                self._fail(fd, "timeout")

    def _drain(self, limit: float = 2.0) -> None:
        """Stop sending; read the replies still in flight, so closing resets nothing."""
        self.stopping = True
        self.schedule.clear()
        end = time.perf_counter_ns() + int(limit * 1e9)
        for fd, state in enumerate(self.state):
            if state == CONNECTING or state == FIRST:
                self._close(fd)
        while time.perf_counter_ns() < end and any(awaited is not None for awaited in self.awaited):
            for fd, events in self.epoll.poll(0.05, 1024):
                self._slow(fd, events, None)

    def _verify_idle(self, limit: float, window: int = 100) -> int:
        """Idle mode: one line on each connection, at most ``window`` at a time.

        Returns how many got the right reply within ``limit`` seconds. A few at
        a time, not all at once: this checks that the server still holds every
        connection; it is not a burst test (which a thread per connection, say,
        would take very badly).
        """
        self.stopping = True
        self.schedule.clear()
        line = make_line(self.line_size)
        reply = uppercase(line)
        todo = []
        for fd, state in enumerate(self.state):
            if state == ACTIVE:
                todo.append(fd)
            elif state != FREE:  # never answered: not counted
                self._close(fd)
        todo.reverse()
        answered_before = len(self.latencies)
        inflight: set[int] = set()
        end = time.perf_counter_ns() + int(limit * 1e9)
        while (todo or inflight) and time.perf_counter_ns() < end:
            now = time.perf_counter_ns()
            while todo and len(inflight) < window:
                fd = todo.pop()
                if self.state[fd] == ACTIVE:
                    self.awaited[fd] = reply
                    self._send(fd, line, now)
                    inflight.add(fd)
            for fd, events in self.epoll.poll(0.05, 1024):
                self._slow(fd, events, None)
            inflight = {fd for fd in inflight if self.awaited[fd] is not None}
        return len(self.latencies) - answered_before

    def close(self) -> None:
        if self.epoll.closed:
            return
        for fd, sock in enumerate(self.socks):
            if sock is not None:
                sock.close()
                self.socks[fd] = None
                self.state[fd] = FREE
        self.epoll.close()


def _error_kind(exc: OSError) -> str:
    if exc.errno in (errno.ECONNRESET, errno.EPIPE):
        return "reset"
    if exc.errno == errno.ETIMEDOUT:
        return "timeout"
    return errno.errorcode.get(exc.errno or 0, "oserror").lower()


def run(
    host: str = "127.0.0.1",
    port: int = 5000,
    connections: int = 50,
    duration: float = 5.0,
    warmup: float = 1.0,
    mode: str = "pingpong",
    lines_per_round: int = 1,
    line_size: int = 16,
    messages_per_connection: int = 100,
    connect_rate: float = 2000.0,
    timeout: float = 10.0,
    connect_timeout: float = 10.0,
    ramp_timeout: float | None = None,
    quiet: bool = True,
    settle: float = 0.0,
) -> dict:
    """Drive the server at ``host:port`` and return the measurements.

    Keys: ``driver`` (``"python"``; the native driver says ``"native"``),
    ``messages`` (verified replies in the measured window; a pipelined
    round counts K), ``seconds`` (length of the window), ``messages_per_s``,
    ``round_trips``, ``p50_us``/``p99_us``/``p999_us``/``max_us`` (round-trip
    latency: from the send to the last byte of the expected reply),
    ``errors`` (whole run) and ``errors_in_window``, ``error_kinds``,
    ``connections`` (established at the end of the window),
    ``connections_target``, ``connect_retries``, ``ramp_s``, ``driver_cpu_s``
    (this process's user+system CPU in the window), ``driver_cpu_frac``,
    ``driver_cpu_saturated`` (frac >= 0.9: the driver, not the server, may be
    the bottleneck), ``mode``, ``lines_per_round``, ``line_size``; churn adds
    ``sessions`` and ``sessions_per_s``; idle adds ``verified`` (connections
    that answered a line after the idle period, 100 lines in flight at a
    time, within ``max(5, timeout) + connections / 1000`` seconds) and
    ``verify_s`` (how long that took) and ``settle_s``; in idle mode ``messages`` is 0 and the
    latencies are those of the verification lines.
    """
    raise_nofile_limit()
    driver = Driver(
        host,
        port,
        connections,
        mode=mode,
        lines_per_round=lines_per_round,
        line_size=line_size,
        messages_per_connection=messages_per_connection,
        connect_rate=connect_rate,
        timeout=timeout,
        connect_timeout=connect_timeout,
        quiet=quiet,
    )
    # The hot loop allocates only acyclic objects (bytes, ints, the tuples from
    # epoll.poll), yet those tuples trigger collections: none are needed.
    gc_was_enabled = gc.isenabled()
    gc.collect()
    gc.freeze()
    gc.disable()
    try:
        return driver.run(duration, warmup, ramp_timeout, settle)
    finally:
        driver.close()
        gc.unfreeze()
        if gc_was_enabled:
            gc.enable()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.driver",
        description="Closed-loop load driver for UPPER servers; prints one JSON object.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--duration", type=float, default=5.0, help="measured window, seconds")
    parser.add_argument(
        "--warmup", type=float, default=1.0, help="seconds after ramp-up, unmeasured"
    )
    parser.add_argument("--mode", choices=MODES, default="pingpong")
    parser.add_argument("--idle", action="store_true", help="same as --mode idle")
    parser.add_argument("--lines-per-round", type=int, default=1, help="pipeline: lines per send")
    parser.add_argument("--line-size", type=int, default=16, help="bytes per line, LF included")
    parser.add_argument("--messages-per-connection", type=int, default=100, help="churn")
    parser.add_argument(
        "--connect-rate", type=float, default=2000.0, help="connections/s at ramp-up"
    )
    parser.add_argument("--timeout", type=float, default=10.0, help="reply timeout, seconds")
    parser.add_argument("--connect-timeout", type=float, default=10.0)
    parser.add_argument("--ramp-timeout", type=float, default=None, help="default 2*N/rate + 10 s")
    parser.add_argument(
        "--settle", type=float, default=0.0,
        help="idle: start the window no sooner than this many seconds after the last reply",
    )
    parser.add_argument("--cpus", default=None, help="pin the driver to these CPUs, e.g. 1 or 1,3")
    parser.add_argument("--quiet", action="store_true", help="no phase events on stderr")
    args = parser.parse_args(argv)
    if args.cpus:
        os.sched_setaffinity(0, {int(cpu) for cpu in args.cpus.split(",")})
    result = run(
        args.host,
        args.port,
        args.connections,
        args.duration,
        args.warmup,
        "idle" if args.idle else args.mode,
        args.lines_per_round,
        args.line_size,
        args.messages_per_connection,
        args.connect_rate,
        args.timeout,
        args.connect_timeout,
        args.ramp_timeout,
        quiet=args.quiet,
        settle=args.settle,
    )
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
