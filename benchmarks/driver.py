"""A load driver for UPPER servers: raw non-blocking sockets on ``select.epoll``, closed loop.

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
    that the server really holds it.

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

from upper_protocol import uppercase

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
    req = b"".join(make_line(size, i) for i in range(lines))
    return req, uppercase(req)


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
    t = os.times()
    return t.user + t.system


def _event(**kw) -> None:
    print(json.dumps(kw), file=sys.stderr, flush=True)


def _percentiles(samples_ns, qs):
    """Percentiles (µs) of an array('q') of nanosecond samples; numpy if present."""
    if not len(samples_ns):
        return [None for _ in qs]
    try:
        import numpy as np
    except ImportError:
        s = sorted(samples_ns)
        n = len(s)
        return [round(s[min(n - 1, int(q / 100 * n))] / 1000, 1) for q in qs]
    a = np.frombuffer(samples_ns, dtype=np.int64)
    return [round(float(v) / 1000, 1) for v in np.percentile(a, qs, method="lower")]


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
        self.n = connections
        self.mode = mode
        self.k = lines_per_round
        self.line_size = line_size
        self.req, self.exp = make_round(lines_per_round, line_size)
        self.rounds_per_conn = max(1, -(-messages_per_connection // lines_per_round))
        self.connect_rate = connect_rate
        self.timeout_ns = int(timeout * 1e9)
        self.connect_timeout_ns = int(connect_timeout * 1e9)
        self.quiet = quiet
        # Big enough for a whole reply and then some; small enough to stay off
        # malloc (os.read allocates bufsize bytes, then shrinks them).
        # A read that fills it is always more than expected (an error), so one
        # read per edge-triggered event always empties the socket.
        self.bufsize = len(self.exp) + 256

        self.ep = select.epoll()
        size = connections + 64
        self.socks: list = [None] * size
        self.state = bytearray(size)
        self.want: list = [None] * size  # reply bytes still expected; None: none expected
        self.first: list = [None] * size  # same, for a connection in state FIRST
        self.t0 = [0] * size  # when the outstanding request (or connect) was sent, ns
        self.left = [0] * size  # churn: rounds left before DESCONEXION
        self.wq: list = [b""] * size  # bytes not yet written (partial write)
        self.attempt = [0] * size  # connect attempts of the connection on this fd
        self.lat = array("q")  # one sample per completed round trip, ns
        self.sched: list = []  # heap of (due_ns, attempt) connections to open
        self.live = 0  # sockets open (connecting or connected)
        self.established = 0  # connections open that the server has answered
        self.ever_established = 0  # connections the server has answered since the start
        self.sessions = 0  # churn: sessions ended by the server's close
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
        self.want.extend([None] * extra)
        self.first.extend([None] * extra)
        self.t0.extend([0] * extra)
        self.left.extend([0] * extra)
        self.wq.extend([b""] * extra)
        self.attempt.extend([0] * extra)

    def _open(self, attempt: int = 0) -> None:
        """Start a non-blocking connect; on immediate failure, reschedule."""
        try:
            # Non-blocking from birth: no FIONBIO ioctl.
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM | socket.SOCK_NONBLOCK)
        except OSError as e:  # EMFILE/ENFILE/ENOBUFS: back off and retry
            self._retry(attempt, e.errno)
            return
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        rc = s.connect_ex(self.addr)
        if rc not in (0, errno.EINPROGRESS):
            s.close()
            self._retry(attempt, rc)
            return
        fd = s.fileno()
        if fd >= len(self.socks):
            self._grow(fd)
        self.socks[fd] = s
        self.state[fd] = CONNECTING
        self.attempt[fd] = attempt
        self.t0[fd] = time.perf_counter_ns()
        self.wq[fd] = b""
        self.live += 1
        # On loopback the handshake has usually completed by the time connect()
        # returns: send the first request at once, and wait for the socket to
        # become writable only if it is still connecting (EAGAIN).
        try:
            n = os.write(fd, self.req)
        except BlockingIOError:
            self.ep.register(fd, WRITABLE)
            return
        except OSError as e:  # refused already
            self._close(fd)
            self._retry(attempt, e.errno)
            return
        self.ep.register(fd, READABLE)
        self._connected(fd)
        if n != len(self.req):
            self._written(fd, self.req, n)

    def _retry(self, attempt: int, err: int | None) -> None:
        if err in RETRYABLE or err in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, None):
            self.connect_retries += 1
        else:
            self._error("connect_" + (errno.errorcode.get(err, str(err)).lower()))
        # Exponential backoff with jitter, so that connections that failed
        # together do not all come back together.
        delay = min(1.0, 0.01 * (2 ** min(attempt, 10))) * (0.5 + random.random())
        heapq.heappush(self.sched, (time.perf_counter_ns() + int(delay * 1e9), attempt + 1))

    def _close(self, fd: int) -> None:
        s = self.socks[fd]
        if self.state[fd] in (ACTIVE, CLOSING):
            self.established -= 1
        self.state[fd] = FREE
        self.socks[fd] = None
        self.want[fd] = None
        self.first[fd] = None
        self.wq[fd] = b""
        self.live -= 1
        s.close()  # also removes fd from the epoll set

    def _fail(self, fd: int, kind: str) -> None:
        """Count an error, drop the connection, reconnect shortly."""
        self._error(kind)
        self._close(fd)
        if not self.stopping:
            heapq.heappush(self.sched, (time.perf_counter_ns() + 10_000_000, 0))

    def _send(self, fd: int, data: bytes, now: int) -> None:
        """Send a request (or the keyword) and note when."""
        self.t0[fd] = now
        try:
            n = os.write(fd, data)
        except OSError as e:
            n = e
        if n != len(data):
            self._written(fd, data, n)

    def _written(self, fd: int, data: bytes, n) -> None:
        """A write that did not take all of ``data``: ``n`` bytes, or the OSError it raised."""
        if isinstance(n, BlockingIOError):
            n = 0
        elif isinstance(n, OSError):
            self._fail(fd, _kind(n))
            return
        if n != len(data):
            self.wq[fd] = data[n:]
            self.ep.modify(fd, READABLE | WRITABLE)

    def _start(self, fd: int, now: int) -> None:
        """Connected (the socket became writable): send the first request."""
        self.ep.modify(fd, READABLE)
        self._connected(fd)
        self._send(fd, self.req, now)

    def _connected(self, fd: int) -> None:
        """The first request is (being) sent on a new connection: every mode, idle too."""
        self.state[fd] = FIRST
        self.left[fd] = self.rounds_per_conn
        self.want[fd] = None  # keeps the first reply off the fast path
        self.first[fd] = self.exp

    def _round_done(self, fd: int, now: int) -> None:
        """Churn: a round trip completed; next round, or end the session."""
        self.left[fd] -= 1
        if self.left[fd] > 0:
            self.want[fd] = self.exp
            self._send(fd, self.req, now)
        else:
            self._session_done(fd, now)

    def _session_done(self, fd: int, now: int) -> None:
        """Churn: the last round trip completed; DESCONEXION, then wait for the close."""
        self.state[fd] = CLOSING
        self.want[fd] = None
        self._send(fd, KEYWORD, now)

    # ------------------------------------------------------------ events

    def _slow(self, fd: int, ev: int, data) -> None:
        """Everything the fast path in :meth:`_loop` does not handle."""
        st = self.state[fd]
        if st == FREE:  # closed earlier in this batch
            return
        now = time.perf_counter_ns()
        if st == CONNECTING:  # connect() finished
            err = self.socks[fd].getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err == 0 and not ev & (select.EPOLLERR | select.EPOLLHUP):
                self._start(fd, now)
            else:
                attempt = self.attempt[fd]
                self._close(fd)
                if not self.stopping:
                    self._retry(attempt, err or errno.ECONNREFUSED)
            return
        if ev & select.EPOLLOUT and self.wq[fd]:
            try:
                n = os.write(fd, self.wq[fd])
            except BlockingIOError:
                n = 0
            except OSError as e:
                self._fail(fd, _kind(e))
                return
            self.wq[fd] = rest = self.wq[fd][n:]
            if not rest:
                self.ep.modify(fd, READABLE)
        if not ev & (select.EPOLLIN | select.EPOLLERR | select.EPOLLHUP):
            return
        if data is None:
            try:
                data = os.read(fd, self.bufsize)
            except BlockingIOError:
                return
            except OSError as e:
                self._fail(fd, _kind(e))
                return
        elif isinstance(data, OSError):
            if isinstance(data, BlockingIOError):
                return
            self._fail(fd, _kind(data))
            return
        if not data:
            if st == CLOSING:  # the server's close after DESCONEXION: a session done
                self.sessions += 1
                self._close(fd)
                if not self.stopping:
                    self._open()
            else:
                self._fail(fd, "closed")
            return
        w = self.first[fd] if st == FIRST else self.want[fd]
        if w is None or not w.startswith(data):
            self._fail(fd, "mismatch")
            return
        if len(data) < len(w):
            if st == FIRST:
                self.first[fd] = w[len(data) :]
            else:
                self.want[fd] = w[len(data) :]
            return
        # The reply is complete.
        self.lat.append(now - self.t0[fd])
        if st == FIRST:
            self.state[fd] = ACTIVE
            self.first[fd] = None
            self.established += 1
            self.ever_established += 1
            if self.parking:
                self.want[fd] = None
                self.t0[fd] = 0
                self.parked.append(fd)
                return
        if self.stopping:
            self.want[fd] = None
            self.t0[fd] = 0
        elif self.mode == "churn":
            self._round_done(fd, now)
        elif self.mode == "idle":
            self.want[fd] = None
            self.t0[fd] = 0
        else:
            self.want[fd] = self.exp
            self._send(fd, self.req, now)

    def _loop(self, until_ns: int, housekeeping) -> None:
        """The hot loop: poll, read, compare, record, write; until ``until_ns``.

        ``housekeeping(now)`` is called at least every 10 ms and returns the
        time of its next call (it opens scheduled connections, enforces
        timeouts, moves between phases).
        """
        poll = self.ep.poll
        read = os.read
        write = os.write
        clock = time.perf_counter_ns
        want = self.want
        t0 = self.t0
        record = self.lat.append
        req = self.req
        rlen = len(req)
        exp = self.exp
        bufsize = self.bufsize
        slow = self._slow
        written = self._written
        left = self.left
        session_done = self._session_done
        churn = self.mode == "churn"
        EPOLLIN = select.EPOLLIN
        now = clock()
        next_hk = housekeeping(now)
        while now < until_ns:
            timeout = (min(next_hk, until_ns) - now) / 1e9
            for fd, ev in poll(timeout if timeout > 0 else 0, 1024):
                if ev != EPOLLIN:
                    slow(fd, ev, None)
                    continue
                try:
                    data = read(fd, bufsize)
                except OSError as e:
                    slow(fd, ev, e)
                    continue
                if data == want[fd]:
                    t = clock()
                    record(t - t0[fd])
                    if churn:
                        rounds = left[fd] - 1
                        left[fd] = rounds
                        if not rounds:
                            session_done(fd, t)
                            continue
                    want[fd] = exp
                    t0[fd] = t
                    try:
                        n = write(fd, req)
                    except OSError as e:
                        n = e
                    if n != rlen:
                        written(fd, req, n)
                else:
                    slow(fd, ev, data)
            now = clock()
            if now >= next_hk:
                next_hk = housekeeping(now)

    # ------------------------------------------------------------ phases

    def run(self, duration: float, warmup: float = 1.0, ramp_timeout: float | None = None) -> dict:
        start = time.perf_counter_ns()
        rate = self.connect_rate if self.connect_rate > 0 else float("inf")
        if ramp_timeout is None:
            ramp_timeout = 2 * self.n / rate + 10 if rate != float("inf") else 10.0
        for i in range(self.n):
            due = start + (int(i / rate * 1e9) if rate != float("inf") else 0)
            self.sched.append((due, 0))
        heapq.heapify(self.sched)

        # Every (re)connection from the schedule, retries included, keeps to
        # the connect rate: a token bucket holding at most 10 ms of tokens.
        burst = max(1.0, rate * 0.01) if rate != float("inf") else float("inf")
        state = {"next_timeout_scan": start + 1_000_000_000, "tokens": burst, "last": start}

        def housekeeping(now: int) -> int:
            sched = self.sched
            tokens = burst
            if burst != float("inf"):
                tokens = min(burst, state["tokens"] + (now - state["last"]) / 1e9 * rate)
            state["last"] = now
            while sched and sched[0][0] <= now and tokens >= 1:
                _, attempt = heapq.heappop(sched)
                if self.live < self.n:
                    self._open(attempt)
                    tokens -= 1
            state["tokens"] = tokens
            if now >= state["next_timeout_scan"]:
                self._scan_timeouts(now)
                state["next_timeout_scan"] = now + 1_000_000_000
            nxt = now + 10_000_000
            if sched:
                nxt = min(nxt, max(sched[0][0], now + 200_000))
            return nxt

        # Ramp-up: until every connection is established (or the ramp times out).
        ramp_end = start + int(ramp_timeout * 1e9)

        def ramping() -> bool:
            if self.mode == "churn":  # connections come and go: each one opened once
                return self.ever_established < self.n
            return self.established < self.n

        while ramping() and time.perf_counter_ns() < ramp_end:
            step = min(ramp_end, time.perf_counter_ns() + 20_000_000)
            self._loop(step, housekeeping)
        self.parking = False
        if self.mode != "idle":
            now = time.perf_counter_ns()
            for fd in self.parked:
                if self.state[fd] == ACTIVE and self.want[fd] is None:
                    self.want[fd] = self.exp
                    self._send(fd, self.req, now)
        self.parked = []
        ramped = time.perf_counter_ns()
        ramp_s = (ramped - start) / 1e9
        if not self.quiet:
            _event(event="ramped", connections=self.established, seconds=round(ramp_s, 3))

        # Warm-up, then the measured window.
        self._loop(ramped + int(warmup * 1e9), housekeeping)
        i0, s0, cpu0 = len(self.lat), self.sessions, _cpu()
        w0 = time.perf_counter_ns()
        err0 = sum(self.errors.values())
        if not self.quiet:
            _event(event="measuring", connections=self.established)
        self._loop(w0 + int(duration * 1e9), housekeeping)
        w1 = time.perf_counter_ns()
        cpu1 = _cpu()
        i1, s1 = len(self.lat), self.sessions
        established = self.established
        errors_in_window = sum(self.errors.values()) - err0
        if not self.quiet:
            _event(event="measured", connections=established)

        seconds = (w1 - w0) / 1e9
        if self.mode == "idle":
            v0 = time.perf_counter_ns()
            verified = self._verify_idle(max(5.0, self.timeout_ns / 1e9) + self.n / 1000)
            verify_s = (time.perf_counter_ns() - v0) / 1e9
            messages = 0
            i0, i1 = i1, len(self.lat)  # latencies: those of the verification lines
        else:
            verified = None
            messages = (i1 - i0) * self.k
            self._drain()
        p50, p99, p999, pmax = _percentiles(self.lat[i0:i1], (50, 99, 99.9, 100))
        cpu = cpu1 - cpu0
        result = {
            "mode": self.mode,
            "messages": messages,
            "seconds": round(seconds, 4),
            "messages_per_s": round(messages / seconds, 1) if seconds > 0 else 0.0,
            "round_trips": i1 - i0,
            "p50_us": p50,
            "p99_us": p99,
            "p999_us": p999,
            "max_us": pmax,
            "errors": sum(self.errors.values()),
            "errors_in_window": errors_in_window,
            "error_kinds": dict(self.errors),
            "connections": established,
            "connections_target": self.n,
            "connect_retries": self.connect_retries,
            "ramp_s": round(ramp_s, 3),
            "driver_cpu_s": round(cpu, 4),
            "driver_cpu_us_per_message": round(cpu / messages * 1e6, 2) if messages else None,
            "driver_cpu_frac": round(cpu / seconds, 3) if seconds > 0 else 0.0,
            "driver_cpu_saturated": bool(seconds > 0 and cpu / seconds > 0.9),
            "lines_per_round": self.k,
            "line_size": self.line_size,
        }
        if self.mode == "churn":
            result["sessions"] = s1 - s0
            result["sessions_per_s"] = round((s1 - s0) / seconds, 1) if seconds > 0 else 0.0
        if verified is not None:
            result["verified"] = verified
            result["verify_s"] = round(verify_s, 3)
        self.close()
        return result

    def _scan_timeouts(self, now: int) -> None:
        state, t0, socks = self.state, self.t0, self.socks
        for fd in range(len(socks)):
            st = state[fd]
            if st == FREE:
                continue
            if st == CONNECTING or st == FIRST:
                if now - t0[fd] > self.connect_timeout_ns:
                    attempt = self.attempt[fd]
                    self._close(fd)
                    self._retry(attempt, errno.ETIMEDOUT)
            elif t0[fd] and now - t0[fd] > self.timeout_ns:
                self._fail(fd, "timeout")

    def _drain(self, limit: float = 2.0) -> None:
        """Stop sending; read the replies still in flight, so closing resets nothing."""
        self.stopping = True
        self.sched.clear()
        end = time.perf_counter_ns() + int(limit * 1e9)
        for fd, st in enumerate(self.state):
            if st == CONNECTING or st == FIRST:
                self._close(fd)
        while time.perf_counter_ns() < end and any(w is not None for w in self.want):
            for fd, ev in self.ep.poll(0.05, 1024):
                self._slow(fd, ev, None)

    def _verify_idle(self, limit: float, window: int = 100) -> int:
        """Idle mode: one line on each connection, at most ``window`` at a time.

        Returns how many got the right reply within ``limit`` seconds. A few at
        a time, not all at once: this checks that the server still holds every
        connection; it is not a burst test (which a thread per connection, say,
        would take very badly).
        """
        self.stopping = True
        self.sched.clear()
        line = make_line(self.line_size)
        reply = uppercase(line)
        todo = []
        for fd, st in enumerate(self.state):
            if st == ACTIVE:
                todo.append(fd)
            elif st != FREE:  # never answered: not counted
                self._close(fd)
        todo.reverse()
        n0 = len(self.lat)
        inflight: set[int] = set()
        end = time.perf_counter_ns() + int(limit * 1e9)
        while (todo or inflight) and time.perf_counter_ns() < end:
            now = time.perf_counter_ns()
            while todo and len(inflight) < window:
                fd = todo.pop()
                if self.state[fd] == ACTIVE:
                    self.want[fd] = reply
                    self._send(fd, line, now)
                    inflight.add(fd)
            for fd, ev in self.ep.poll(0.05, 1024):
                self._slow(fd, ev, None)
            inflight = {fd for fd in inflight if self.want[fd] is not None}
        return len(self.lat) - n0

    def close(self) -> None:
        if self.ep.closed:
            return
        for fd, s in enumerate(self.socks):
            if s is not None:
                s.close()
                self.socks[fd] = None
                self.state[fd] = FREE
        self.ep.close()


def _kind(e: OSError) -> str:
    if e.errno in (errno.ECONNRESET, errno.EPIPE):
        return "reset"
    if e.errno == errno.ETIMEDOUT:
        return "timeout"
    return errno.errorcode.get(e.errno or 0, "oserror").lower()


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
) -> dict:
    """Drive the server at ``host:port`` and return the measurements.

    Keys: ``messages`` (verified replies in the measured window; a pipelined
    round counts K), ``seconds`` (length of the window), ``messages_per_s``,
    ``round_trips``, ``p50_us``/``p99_us``/``p999_us``/``max_us`` (round-trip
    latency: from the send to the last byte of the expected reply),
    ``errors`` (whole run) and ``errors_in_window``, ``error_kinds``,
    ``connections`` (established at the end of the window),
    ``connections_target``, ``connect_retries``, ``ramp_s``, ``driver_cpu_s``
    (this process's user+system CPU in the window), ``driver_cpu_frac``,
    ``driver_cpu_saturated`` (frac > 0.9: the driver, not the server, may be
    the bottleneck), ``mode``, ``lines_per_round``, ``line_size``; churn adds
    ``sessions`` and ``sessions_per_s``; idle adds ``verified`` (connections
    that answered a line after the idle period, 100 lines in flight at a
    time, within ``max(5, timeout) + connections / 1000`` seconds) and
    ``verify_s`` (how long that took); in idle mode ``messages`` is 0 and the
    latencies are those of the verification lines.
    """
    raise_nofile_limit()
    d = Driver(
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
        return d.run(duration, warmup, ramp_timeout)
    finally:
        d.close()
        gc.unfreeze()
        if gc_was_enabled:
            gc.enable()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.driver",
        description="Closed-loop load driver for UPPER servers; prints one JSON object.",
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--connections", type=int, default=50)
    p.add_argument("--duration", type=float, default=5.0, help="measured window, seconds")
    p.add_argument("--warmup", type=float, default=1.0, help="seconds after ramp-up, unmeasured")
    p.add_argument("--mode", choices=MODES, default="pingpong")
    p.add_argument("--idle", action="store_true", help="same as --mode idle")
    p.add_argument("--lines-per-round", type=int, default=1, help="pipeline: lines per send")
    p.add_argument("--line-size", type=int, default=16, help="bytes per line, LF included")
    p.add_argument("--messages-per-connection", type=int, default=100, help="churn")
    p.add_argument("--connect-rate", type=float, default=2000.0, help="connections/s at ramp-up")
    p.add_argument("--timeout", type=float, default=10.0, help="reply timeout, seconds")
    p.add_argument("--connect-timeout", type=float, default=10.0)
    p.add_argument("--ramp-timeout", type=float, default=None, help="default 2*N/rate + 10 s")
    p.add_argument("--cpus", default=None, help="pin the driver to these CPUs, e.g. 1 or 1,3")
    p.add_argument("--quiet", action="store_true", help="no phase events on stderr")
    a = p.parse_args(argv)
    if a.cpus:
        os.sched_setaffinity(0, {int(c) for c in a.cpus.split(",")})
    result = run(
        a.host,
        a.port,
        a.connections,
        a.duration,
        a.warmup,
        "idle" if a.idle else a.mode,
        a.lines_per_round,
        a.line_size,
        a.messages_per_connection,
        a.connect_rate,
        a.timeout,
        a.connect_timeout,
        a.ramp_timeout,
        quiet=a.quiet,
    )
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
