"""Python bytecodes per message, by function: ``python -m benchmarks.bytecodes``.

``benchmarks.instructions`` counts a server's instructions by shared object and
C function, and most of them land in ``_PyEval_EvalFrameDefault``, the
interpreter, which says nothing of *which Python code* ran them. This counts
that: the server runs under a trace function that counts every bytecode each
Python function executes (``f_trace_opcodes``), the native driver loads it,
the counts are zeroed when the driver's measured window starts (SIGUSR1) and
written when it ends (SIGUSR2), and each function's count is divided by the
messages (and, for churn, the sessions) the driver verified in the window.

A count, not a time: the same code gives the same figures on any machine, and a
change that removes work shows as fewer bytecodes. What it cannot see is code
that is not Python bytecode: C and Cython (uvloop's loop and transports,
gevent's libev loop, greenlet's switch), which ``benchmarks.instructions``
counts. Tracing makes a server about 20 times slower, so the load is small
(``--connections``); the counts per message do not depend on it, except that
each wake-up of the event loop finds fewer connections ready.

POSIX only (the two signals). Servers that are not Python (``c-epoll``) have no
bytecodes to count.
"""

from __future__ import annotations

import argparse
import json
import os
import runpy
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from benchmarks.bench import LOADS, SERVERS, Load
from benchmarks.instructions import follow_window, report_each
from benchmarks.native import NativeDriverUnavailable, driver_binary
from benchmarks.peers import NATIVE_PEERS
from upper.server.launcher import ServerProcess

STARTUP_TIMEOUT = 120.0
_OUTPUT_VARIABLE = "UPPER_BYTECODES_OUT"


def serve_counting(module: str, argv: list[str]) -> None:
    """In the server's process: run ``module`` as ``__main__``, counting its bytecodes."""
    executed: Counter = Counter()
    calls: Counter = Counter()

    def per_opcode(frame, event, arg):
        if event == "opcode":
            executed[frame.f_code] += 1
        return per_opcode

    def per_call(frame, event, arg):
        frame.f_trace_opcodes = True
        frame.f_trace_lines = False
        calls[frame.f_code] += 1
        return per_opcode

    def zero(signum, frame) -> None:
        executed.clear()
        calls.clear()

    def dump(signum, frame) -> None:
        window = list(executed.items())  # one C call: this handler's own bytecodes add entries
        rows = [
            [code.co_name, f"{code.co_filename}:{code.co_firstlineno}", count, calls[code]]
            for code, count in window
        ]
        Path(os.environ[_OUTPUT_VARIABLE]).write_text(json.dumps(rows))

    signal.signal(signal.SIGUSR1, zero)
    signal.signal(signal.SIGUSR2, dump)
    sys.argv = [module, *argv]
    # Greenlets and threads started from here on inherit the thread's trace function.
    sys.settrace(per_call)
    runpy.run_module(module, run_name="__main__", alter_sys=True)


def is_python_server(name: str) -> bool:
    """Whether ``SERVERS[name]`` is ``python -m MODULE ARGS``, which a trace can count."""
    return name not in NATIVE_PEERS and SERVERS[name][:2] == [sys.executable, "-m"]


def counting_command(name: str) -> list[str]:
    """``SERVERS[name]`` (``python -m MODULE ARGS``) run under ``serve_counting``."""
    if not is_python_server(name):
        raise ValueError(f"{name} is not a Python server")
    return [sys.executable, "-m", "benchmarks.bytecodes", "--serve", *SERVERS[name][2:]]


def measure(name: str, load: Load, seconds: float, connections: int, workdir: Path):
    """Run ``name`` counting; return (driver's result, rows of [function, where, bytecodes,
    calls]) for the measured window."""
    output = workdir / f"{name}.json"
    process = ServerProcess(
        command=[*counting_command(name), "--host", "127.0.0.1", "--port", "0"],
        env={_OUTPUT_VARIABLE: str(output)},
        stderr=subprocess.DEVNULL,
    )
    arguments = list(load.driver_args)
    arguments[arguments.index("--connections") + 1] = str(connections)
    with process.start(STARTUP_TIMEOUT) as server:
        driver = subprocess.Popen(
            [str(driver_binary()), "--port", str(server.port), "--duration", str(seconds),
             "--warmup", "2", "--timeout", "60", "--connect-timeout", "60", *arguments],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        follow_window(driver, lambda: os.kill(server.pid, signal.SIGUSR1),
                      lambda: os.kill(server.pid, signal.SIGUSR2))
        result = json.loads(driver.communicate(timeout=seconds + 120)[0])
        deadline = time.monotonic() + 30
        while not output.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
    if result["errors"]:
        raise RuntimeError(f"{name}: the driver counted errors: {result['error_kinds']}")
    if not output.exists():
        raise RuntimeError(f"{name}: the server wrote no counts")
    return result, json.loads(output.read_text())


def report(name: str, result: dict, rows: list, top: int) -> str:
    messages = result["messages"]
    sessions = result.get("sessions") or 0
    per_session = sessions > 0
    total = sum(row[2] for row in rows)
    header = f"\n**{name}**: {total / messages:,.0f} bytecodes per message"
    if per_session:
        header += f", {total / sessions:,.0f} per session"
    lines = [f"{header} ({messages:,} messages)\n"]
    unit = "session" if per_session else "message"
    divisor = sessions if per_session else messages
    lines += [f"| bytecodes/{unit} | calls/{unit} | function |", "| ---: | ---: | --- |"]
    root = str(Path.cwd())
    for function, where, count, calls in sorted(rows, key=lambda row: -row[2])[:top]:
        where = where.replace(root + os.sep, "")
        lines.append(
            f"| {count / divisor:,.1f} | {calls / divisor:,.2f} | `{function}` ({where}) |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--serve"]:
        serve_counting(argv[1], argv[2:])
        return 0
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.bytecodes", description=__doc__.splitlines()[0]
    )
    python_servers = [name for name in SERVERS if is_python_server(name)]
    parser.add_argument("--servers", nargs="+", choices=python_servers,
                        default=["upper", "uvloop-protocol"])
    loads = {load.name: load for load in LOADS if not load.idle and not load.tls}
    parser.add_argument("--load", choices=list(loads), default="churn")
    parser.add_argument("--seconds", type=float, default=4.0, help="measured window")
    parser.add_argument("--connections", type=int, default=20)
    parser.add_argument("--top", type=int, default=20, help="functions listed per server")
    args = parser.parse_args(argv)
    if not hasattr(signal, "SIGUSR1"):
        print("bytecodes: needs SIGUSR1 and SIGUSR2 (POSIX)", file=sys.stderr)
        return 2
    try:
        driver_binary()
    except NativeDriverUnavailable as exc:
        print(f"bytecodes: {exc}", file=sys.stderr)
        return 2
    load = loads[args.load]
    print(f"Load: {load.title}, {args.connections} connections; Python bytecodes counted over "
          f"a {args.seconds:g} s window.\n"
          f"Command: `python -m benchmarks.bytecodes {' '.join(argv)}`")
    with tempfile.TemporaryDirectory(prefix="upper-bytecodes-") as workdir:
        report_each(args.servers, lambda name: report(
            name, *measure(name, load, args.seconds, args.connections, Path(workdir)), args.top))
    return 0


if __name__ == "__main__":
    sys.exit(main())
