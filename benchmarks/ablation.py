"""What each of upper's promises costs, in instructions: ``python -m benchmarks.ablation``.

gevent-lean (``benchmarks.peers.gevent_lean``) is the green-thread model with
every feature taken out. This takes upper's features out one at a time
instead: each ablation (``ABLATIONS``) is a small mixin over ``Connection``,
combined into a subclass that ``benchmarks.ablated_server`` gives to
``UpperServer(connection_class=...)``, and counts that variant's user-space
instructions per message under callgrind, exactly as ``benchmarks.instructions``
does, next to upper as it runs by default, ``upper-counting`` (the counters
are a run-time choice) and gevent-lean. Upper minus a variant is what that
feature costs; the variant with all of them out against gevent-lean is what the
rest of upper (its state machine, ``StreamServer``, timeouts, hibernation) costs.

The variants are measurements, not servers to run: each breaks a promise
(``keyword`` answers a keyword line that is not the last of a read, for
example). Needs what ``benchmarks.instructions`` needs (valgrind, the native
driver); about 40 s per variant and load.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from benchmarks.bench import LOADS, UPPER
from benchmarks.instructions import measure
from benchmarks.native import NativeDriverUnavailable, driver_binary
from upper.protocol import KEYWORD
from upper.server.connection import Connection
from upper.server.launcher import ServerFailedToStart

_KEYWORD_ENDINGS = (KEYWORD + b"\n", KEYWORD + b"\r\n")


def _keyword_at_the_end_only(data: bytes) -> bytes | None:
    """gevent-lean's rule: complete ASCII lines, the keyword looked for at the end only."""
    if data[-1:] == b"\n" and data.isascii() and not data.endswith(_KEYWORD_ENDINGS):
        return data.upper()
    return None


class KeywordAtTheEndOnly:
    __slots__ = ()
    fast_reply = staticmethod(_keyword_at_the_end_only)


class NoLinger:
    __slots__ = ()

    def _close_cleanly(self) -> None:
        return  # _release closes the socket right after the last reply


@dataclass(frozen=True)
class Ablation:
    takes_out: str
    mixin: type


ABLATIONS: dict[str, Ablation] = {
    "keyword": Ablation(
        "the keyword search over the whole read: only its end is checked, as gevent-lean does",
        KeywordAtTheEndOnly,
    ),
    "linger": Ablation(
        "the lingering close: the socket is closed right after the last reply", NoLinger
    ),
}
ALL = "all"
"""Every ablation at once."""


def variant_class(names: list[str]) -> type[Connection]:
    """``Connection`` with the ablations ``names`` taken out (``UpperServer``'s
    ``connection_class``)."""
    mixins = tuple(ABLATIONS[name].mixin for name in names)
    return type("Without_" + "_".join(names), (*mixins, Connection), {"__slots__": ()})


def variant_command(names: list[str]) -> list[str]:
    """The command that runs the variant (``benchmarks.ablated_server``), with upper's options."""
    options = UPPER[UPPER.index("upper_server") + 1 :]
    return [sys.executable, "-m", "benchmarks.ablated_server", "--ablate", ",".join(names),
            *options]


def variant_label(name: str) -> str:
    return "upper without any of them" if name == ALL else f"upper without {name}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.ablation", description=__doc__.splitlines()[0]
    )
    loads = {load.name: load for load in LOADS if not load.idle and not load.tls}
    parser.add_argument("--loads", nargs="+", choices=list(loads),
                        default=["pingpong", "pipelined", "churn"])
    parser.add_argument("--ablations", nargs="+", choices=[*ABLATIONS, ALL],
                        default=[*ABLATIONS, ALL])
    parser.add_argument("--seconds", type=float, default=4.0, help="measured window")
    args = parser.parse_args(argv)
    for tool in ("valgrind", "callgrind_control"):
        if not shutil.which(tool):
            print(f"ablation: {tool} not found (Debian: apt-get install valgrind)", file=sys.stderr)
            return 2
    try:
        driver_binary(tls=False)
    except NativeDriverUnavailable as exc:
        print(f"ablation: {exc}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="upper-ablation-") as workdir:
        # Each row: the server's name (benchmarks.bench.SERVERS), and a variant's command.
        runs: dict[str, tuple[str, list[str] | None]] = {
            "upper": ("upper", None), "upper-counting": ("upper-counting", None)
        }
        for name in args.ablations:
            chosen = list(ABLATIONS) if name == ALL else [name]
            runs[variant_label(name)] = ("upper", variant_command(chosen))
        runs["gevent-lean"] = ("gevent-lean", None)
        results: dict[str, dict[str, float]] = {row: {} for row in runs}
        for load_name in args.loads:
            for row, (server, command) in runs.items():
                output = Path(workdir) / f"{load_name}-{row.replace(' ', '-')}"
                output.mkdir()
                try:
                    messages, profile = measure(server, loads[load_name], args.seconds, output,
                                                command=command)
                except (ServerFailedToStart, RuntimeError, subprocess.SubprocessError) as exc:
                    print(f"ablation: {row}, {load_name}: failed: {exc}", file=sys.stderr)
                    return 1
                results[row][load_name] = sum(profile.cost.values()) / messages
                print(f"{load_name}: {row}: {results[row][load_name]:,.0f} instructions/msg",
                      file=sys.stderr, flush=True)
    print(table(results, args.loads))
    print("\nWhat each variant takes out:")
    for name in args.ablations:
        takes_out = "every ablation above" if name == ALL else ABLATIONS[name].takes_out
        print(f"- `{name}`: {takes_out}")
    return 0


def table(results: dict[str, dict[str, float]], loads: list[str]) -> str:
    """Instructions per message, and each row against upper as it is."""
    lines = ["| server | " + " | ".join(f"{load} (vs upper)" for load in loads) + " |",
             "| --- |" + " ---: |" * len(loads)]
    base = results["upper"]
    for row, figures in results.items():
        cells = [f"{figures[load]:,.0f} ({figures[load] / base[load] - 1:+.1%})" for load in loads]
        lines.append(f"| {row} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
