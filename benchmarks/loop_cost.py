"""The receive loop's own instructions per message, in process: ``python -m benchmarks.loop_cost``.

``benchmarks.instructions`` counts the whole server under load, event loop and
kernel wake-ups included, and on a shared machine its figures move with how
many connections each wake-up finds ready. This counts only the connection's
code: a ``Connection`` (the real class) is run by ``_run`` on a scripted socket
that always has the next message ready and takes every reply at once, with no
event loop, under callgrind, for two message counts; the difference divided by
the extra messages is the loop's cost per message, startup excluded, the same
on every run (``PYTHONHASHSEED=0``). ``--cwd`` measures another checkout (its
``upper`` package is imported first), to compare two versions.

Loads: ``pingpong`` (one 16 B line per read), ``pingpong-counting`` (the same with
the counters on), ``churn`` (connections of 5 lines and DESCONEXION: the cost per
message includes each connection's start, states and close), and ``sweep``: the
sweeper's rounds (``UpperServer._sweep``) over 100 connections waiting for input,
quiet for 0 to 1.9 s, as at Tsung's C10K; a "message" is one connection looked at
in one round.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

LOADS = ("pingpong", "pingpong-counting", "churn", "sweep")
SWEPT = 100
"""Connections in the ``sweep`` load."""
_COLLECTED = re.compile(r"Collected : (\d+)")


def run_load(load: str, messages: int) -> int:
    """Serve ``messages`` messages of ``load`` (what callgrind counts); the lines answered."""
    from upper.server.connection import Connection, Timeouts
    from upper.server.stats import ServerStats

    class Watcher:
        events = 0

        def start(self, callback): pass
        def stop(self): pass
        def close(self): pass

    class Loop:
        def now(self): return 0.0
        def io(self, fd, events): return Watcher()

    class Server:
        stopping = False
        proxy_protocol = None
        idle_timeout = linger_timeout = 5.0
        timeouts = Timeouts(idle=5.0, linger=5.0, hibernate_after=1.0)

        def __init__(self, counting: bool) -> None:
            self.loop = Loop()
            self.stats = ServerStats(counting=counting)
            self.receive_buffer = bytearray(64 * 1024)
            self.receive_view = memoryview(self.receive_buffer)
            self.greenlets = None

        def switch_to_hub(self): pass
        def connection_closed(self, connection): pass

    class Socket:
        def __init__(self, lines: list[bytes]) -> None:
            self.lines = lines

        def fileno(self): return -1

        def recv_into(self, buffer):
            if not self.lines:
                return 0
            line = self.lines.pop()
            buffer[: len(line)] = line
            return len(line)

        def send(self, data):
            answered.append(data.count(b"\n"))
            return len(data)
        def recv(self, size): return b""
        def shutdown(self, how): pass
        def close(self): pass

    answered: list[int] = []
    line = b"hola servidor 1\n"
    if load == "sweep":
        return sweep_rounds(Server(counting=False), Socket, Connection, messages // SWEPT)
    if load == "churn":
        server = Server(counting=False)
        for _ in range(messages // 5):
            Connection(Socket([b"DESCONEXION\n"] + [line] * 5), ("127.0.0.1", 1), server)._run(
                None, False
            )
    else:
        server = Server(counting=load == "pingpong-counting")
        Connection(Socket([line] * messages), ("127.0.0.1", 1), server)._run(None, False)
    return sum(answered)


def sweep_rounds(server, socket_type, connection_type, rounds: int) -> int:
    """Run ``rounds`` rounds of the real sweeper over ``SWEPT`` quiet connections of
    ``server``; the connections looked at."""
    import gevent

    from upper.server.connection import READING, RUNNING
    from upper.server.server import UpperServer

    class Swept(Exception):
        pass

    sweeper = object.__new__(UpperServer)  # only what _sweep reads; no sockets, no loop
    sweeper.loop, sweeper.timeouts = server.loop, server.timeouts
    sweeper.idle_timeout, sweeper.proxy_protocol, sweeper.ssl_context = 5.0, None, None
    sweeper.connections = set()
    for number in range(SWEPT):
        connection = connection_type(socket_type([]), ("127.0.0.1", 1), server)
        connection._enter(RUNNING)
        connection._enter(READING)
        connection.hibernate_after = 8.0  # grown, as a client that speaks every 2 s makes it
        connection.active_at = -(number % 20) / 10  # the loop's clock says 0.0
        sweeper.connections.add(connection)
    left = rounds + 1  # _sweep sleeps before each round

    def sleep(seconds=0):
        nonlocal left
        left -= 1
        if not left:
            raise Swept

    gevent.sleep, real_sleep = sleep, gevent.sleep
    try:
        UpperServer._sweep(sweeper)
    except Swept:
        pass
    finally:
        gevent.sleep = real_sleep
    if any(connection.state is not READING for connection in sweeper.connections):
        raise RuntimeError("loop_cost: a quiet connection was interrupted")
    return rounds * SWEPT


def count(load: str, messages: int, cwd: Path) -> int:
    with tempfile.TemporaryDirectory(prefix="upper-loop-cost-") as folder:
        done = subprocess.run(
            ["valgrind", "--tool=callgrind", f"--callgrind-out-file={folder}/out",
             sys.executable, "-c",
             "import sys; sys.path.insert(0, sys.argv[1]); "
             "from benchmarks.loop_cost import run_load; run_load(sys.argv[2], int(sys.argv[3]))",
             str(cwd), load, str(messages)],
            capture_output=True, text=True, timeout=600, cwd=cwd,
            env={**os.environ, "PYTHONHASHSEED": "0"},
        )
    found = _COLLECTED.search(done.stderr)
    if done.returncode or not found:
        raise RuntimeError(f"loop_cost: {load} failed: {done.stderr[-500:]}")
    return int(found[1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.loop_cost",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--loads", nargs="+", choices=LOADS, default=list(LOADS))
    parser.add_argument("--messages", type=int, default=20_000, help="the extra messages")
    parser.add_argument("--cwd", type=Path, default=Path.cwd(), help="the checkout to measure")
    args = parser.parse_args(argv)
    if not shutil.which("valgrind"):
        print("loop_cost: valgrind not found (Debian: apt-get install valgrind)", file=sys.stderr)
        return 2
    print(f"Receive loop, in process, {args.cwd}: instructions per message "
          f"(callgrind, {args.messages:,} extra messages)")
    for load in args.loads:
        base = count(load, 5_000, args.cwd)
        more = count(load, 5_000 + args.messages, args.cwd)
        print(f"| {load} | {(more - base) / args.messages:,.0f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
