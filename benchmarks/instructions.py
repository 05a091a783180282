"""Instructions per message, counted by callgrind: ``python -m benchmarks.instructions``.

Timings on a shared or virtual machine are noisy; instruction counts are not.
This runs each server under valgrind's callgrind (about 50 times slower, which
does not matter here), drives it with the native load driver, zeroes the
counters when the driver's measured window starts and dumps them when it ends,
then divides by the messages the driver verified in that window. It prints the
user-space instructions per message (the kernel's TCP work is not counted: it
is about the same for every server), split by shared object, and the
functions with the highest self cost: what to optimise, and a figure that
moves only when the code does.

Needs ``valgrind`` (Debian: ``apt-get install valgrind``) and the native
driver's C compiler. Loopback only; each server runs for about
``--seconds`` + 20 s.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.bench import LOADS, SERVERS, TLS_SERVERS, Load, tls_files
from benchmarks.native import NativeDriverUnavailable, driver_binary
from upper.server.launcher import ServerFailedToStart, ServerProcess

STARTUP_TIMEOUT = 180.0
"""Python and gevent start slowly under valgrind."""
_NAMED = re.compile(r"\((\d+)\)(?: (.*))?")


@dataclass
class Profile:
    """Self cost (instructions) per function, and the shared object of each function."""

    cost: Counter = field(default_factory=Counter)
    objects: dict[str, str] = field(default_factory=dict)


def parse_callgrind(path: Path) -> Profile:
    """Self cost per function from a callgrind output file (``--dump-instr=no``).

    Names may be compressed (``(12) name`` defines id 12, ``(12)`` reuses it).
    The line after ``calls=`` is the inclusive cost of that call: not self cost.
    """
    profile = Profile()
    names: dict[str, dict[str, str]] = {"fn": {}, "ob": {}}
    function = shared_object = None
    skip_next = False

    def resolve(kind: str, value: str) -> str:
        match = _NAMED.match(value)
        if not match:
            return value
        if match[2]:
            names[kind][match[1]] = match[2]
        return names[kind].get(match[1], value)

    with path.open(errors="replace") as lines:
        for line in lines:
            if skip_next:
                skip_next = False
                continue
            key, _, value = line.rstrip("\n").partition("=")
            if key == "ob":
                shared_object = resolve("ob", value)
            elif key == "fn":
                function = resolve("fn", value)
                profile.objects.setdefault(function, shared_object or "?")
            elif key in ("cfn", "cob"):
                resolve(key[1:], value)
            elif key == "calls":
                skip_next = True
            elif function and line[:1] in "0123456789+-*":
                fields = line.split()
                if len(fields) >= 2 and fields[1].isdigit():
                    profile.cost[function] += int(fields[1])
    return profile


def measure(name: str, load: Load, seconds: float, workdir: Path, cwd: Path | None = None,
            command: list[str] | None = None):
    """Run ``name`` under callgrind; return (messages verified in the window, Profile).

    ``cwd``: start the server in that folder (``python -m`` imports from there first).
    ``command``: run this instead of ``SERVERS[name]`` (``benchmarks.ablation``'s variants).

    A TLS load gives the server a test certificate and drives it with the driver's
    OpenSSL build, which verifies it (OpenSSL's instructions in the server count too).
    """
    output = workdir / f"{name}.callgrind"
    server_args: tuple[str, ...] = ()
    driver = [str(driver_binary(tls=load.tls))]
    if load.tls:
        if name not in TLS_SERVERS:
            raise RuntimeError(f"{name} has no TLS option")
        cert, key, ca = tls_files()
        server_args = ("--tls-cert", str(cert), "--tls-key", str(key))
        driver += ["--tls-cafile", str(ca)]
    command = [
        "valgrind", "--tool=callgrind", f"--callgrind-out-file={output}.%p", "--dump-instr=no",
        *(command or SERVERS[name]), "--host", "127.0.0.1", "--port", "0", *server_args,
    ]
    process = ServerProcess(command=command, stderr=subprocess.DEVNULL, cwd=cwd and str(cwd))
    with process.start(STARTUP_TIMEOUT) as server:
        driver = subprocess.Popen(
            [*driver, "--port", str(server.port), "--duration", str(seconds),
             "--warmup", "3", "--timeout", "60", "--connect-timeout", "60", *load.driver_args],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        control = ["callgrind_control"]
        follow_window(
            driver,
            lambda: subprocess.run([*control, "--zero", str(server.pid)], capture_output=True,
                                   timeout=60, check=True),
            lambda: subprocess.run([*control, "--dump", str(server.pid)], capture_output=True,
                                   timeout=60, check=True),
        )
        result = json.loads(driver.communicate(timeout=seconds + 120)[0])
    if result["errors"]:
        raise RuntimeError(f"{name}: the driver counted errors: {result['error_kinds']}")
    dumps = sorted(workdir.glob(f"{output.name}.*.1"))
    if not dumps:
        raise RuntimeError(f"{name}: callgrind wrote no dump for the window")
    return result["messages"], parse_callgrind(dumps[-1])


def follow_window(driver: subprocess.Popen, on_measuring, on_measured) -> None:
    """Call ``on_measuring()`` and ``on_measured()`` as the native driver announces its
    measured window on stderr (one JSON event a line), until it closes stderr."""
    for line in driver.stderr:
        event = json.loads(line).get("event") if line.startswith("{") else None
        if event == "measuring":
            on_measuring()
        elif event == "measured":
            on_measured()


def report_each(servers: list[str], measure_and_report) -> None:
    """Print ``measure_and_report(name)`` for each server in turn; one that fails is one
    line, and the next is measured."""
    for name in servers:
        try:
            text = measure_and_report(name)
        except (ServerFailedToStart, RuntimeError, subprocess.SubprocessError) as exc:
            print(f"\n**{name}**: failed: {exc}")
            continue
        print(text, flush=True)


def report(name: str, messages: int, profile: Profile, top: int) -> str:
    total = sum(profile.cost.values())
    lines = [f"\n**{name}**: {total / messages:,.0f} instructions per message "
             f"(user space; {messages:,} messages)\n",
             "| instructions/msg | share | where |", "| ---: | ---: | --- |"]
    by_object = Counter()
    for function, cost in profile.cost.items():
        by_object[Path(profile.objects.get(function, "?")).name] += cost
    for shared_object, cost in by_object.most_common(5):
        lines.append(f"| {cost / messages:,.0f} | {cost / total:.0%} | {shared_object} |")
    lines += ["", "| instructions/msg | share | function (self cost) |", "| ---: | ---: | --- |"]
    for function, cost in profile.cost.most_common(top):
        lines.append(f"| {cost / messages:,.0f} | {cost / total:.0%} | `{function}` |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.instructions", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--servers", nargs="+", choices=list(SERVERS),
                        default=["upper", "gevent-lean", "uvloop-protocol"])
    loads = {load.name: load for load in LOADS if not load.idle}
    parser.add_argument("--load", choices=list(loads), default="pingpong")
    parser.add_argument("--seconds", type=float, default=10.0, help="measured window")
    parser.add_argument("--top", type=int, default=15, help="functions listed per server")
    args = parser.parse_args(argv)
    for tool in ("valgrind", "callgrind_control"):
        if not shutil.which(tool):
            print(f"instructions: {tool} not found (Debian: apt-get install valgrind)",
                  file=sys.stderr)
            return 2
    load = loads[args.load]
    try:
        driver_binary(tls=load.tls)
    except NativeDriverUnavailable as exc:
        print(f"instructions: {exc}", file=sys.stderr)
        return 2
    print(f"Load: {load.title}; user-space instructions counted by callgrind over a "
          f"{args.seconds:g} s window.\nCommand: `python -m benchmarks.instructions "
          f"{' '.join(sys.argv[1:] if argv is None else argv)}`")
    with tempfile.TemporaryDirectory(prefix="upper-instructions-") as workdir:
        report_each(args.servers, lambda name: report(
            name, *measure(name, load, args.seconds, Path(workdir)), args.top))
    return 0


if __name__ == "__main__":
    sys.exit(main())
