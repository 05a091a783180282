"""Fairness: one client floods the server while a few others ping it; how long do they wait?

    python -m benchmarks.fairness [--seconds 5] [--probes 16] [--server-cwd CHECKOUT]

The flooding client (its own process) writes 64 KiB batches of lines and reads
the replies as fast as it can; each probe (threads of another process) sends
one short line every ``--interval`` and times its reply. Prints the flood's
throughput and the probes' round trips (p50, p99, max), and the longest gap
with no reply to any probe. ``--server-cwd`` starts ``python -m upper_server``
from another checkout, to compare two versions on the same machine.

``tests/test_fairness.py`` uses ``flood_and_probe`` to check the promise (no
probe waits anywhere near half a second); the figures are this script's job.
"""

import argparse
import multiprocessing
import socket
import statistics
import sys
import threading
import time

from upper.server.launcher import ServerProcess

LINE = b"a" * 1023 + b"\n"
BATCH = LINE * 64
REPLY_LINE = LINE.upper()


def _connect(address, timeout: float) -> socket.socket:
    sock = socket.create_connection(address, timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def flood(address, seconds: float, results) -> None:
    """Write and read as fast as possible for ``seconds``; put (bytes echoed, wrong) in results."""
    sock = _connect(address, timeout=10)
    stop = time.monotonic() + seconds
    done = threading.Event()

    def write() -> None:
        try:
            while not done.is_set():
                sock.sendall(BATCH)
        except OSError:
            pass

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    received = 0
    wrong = 0
    try:
        while time.monotonic() < stop:
            chunk = sock.recv(1 << 20)
            if not chunk:
                wrong += 1
                break
            received += len(chunk)
            wrong += b"a" in chunk  # every reply byte is uppercase or a newline
    finally:
        done.set()
        sock.close()
        writer.join(5)
    results.put((received, wrong))


def probe(address, seconds: float, interval: float, waits: list) -> None:
    sock = _connect(address, timeout=10)
    stop = time.monotonic() + seconds
    try:
        while time.monotonic() < stop:
            began = time.perf_counter()
            sock.sendall(b"ping\n")
            reply = b""
            while not reply.endswith(b"\n"):
                chunk = sock.recv(64)
                if not chunk:
                    raise ConnectionError("server closed a probe")
                reply += chunk
            if reply != b"PING\n":
                raise AssertionError(f"probe got {reply!r}")
            waits.append((began, time.perf_counter() - began))
            time.sleep(interval)
    finally:
        sock.close()


def flood_and_probe(address, seconds: float = 3.0, probes: int = 4, interval: float = 0.02):
    """Run the flood (in a child process) and the probes (threads here) together."""
    results = multiprocessing.Queue()
    flooder = multiprocessing.Process(target=flood, args=(address, seconds, results), daemon=True)
    flooder.start()
    time.sleep(0.2)  # the flood is under way before the first probe
    waits: list = []
    threads = [
        threading.Thread(target=probe, args=(address, seconds - 0.2, interval, waits))
        for _ in range(probes)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(seconds + 30)
    flooded, wrong = results.get(timeout=seconds + 30)
    flooder.join(10)
    times = sorted(wait for _began, wait in waits)
    events = sorted((began + wait) for began, wait in waits)
    gaps = [later - earlier for earlier, later in zip(events, events[1:], strict=False)]
    return {
        "flood_bytes": flooded,
        "flood_mb_per_s": flooded / seconds / 1e6,
        "flood_wrong": wrong,
        "probe_replies": len(times),
        "probe_p50_ms": 1000 * statistics.median(times) if times else None,
        "probe_p99_ms": 1000 * times[int(0.99 * (len(times) - 1))] if times else None,
        "probe_max_ms": 1000 * times[-1] if times else None,
        "longest_gap_ms": 1000 * max(gaps, default=0.0),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--probes", type=int, default=16)
    parser.add_argument("--interval", type=float, default=0.02)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--server-cwd", help="start the server from this checkout instead")
    args = parser.parse_args(argv)
    with ServerProcess("--log-level", "warning", cwd=args.server_cwd) as server:
        for run in range(1, args.runs + 1):
            result = flood_and_probe(server.address, args.seconds, args.probes, args.interval)
            print(
                f"run {run}: flood {result['flood_mb_per_s']:.0f} MB/s "
                f"(wrong replies: {result['flood_wrong']}); {result['probe_replies']} probe "
                f"replies, p50 {result['probe_p50_ms']:.2f} ms, p99 {result['probe_p99_ms']:.2f} "
                f"ms, max {result['probe_max_ms']:.1f} ms; longest gap with no probe reply "
                f"{result['longest_gap_ms']:.1f} ms",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
