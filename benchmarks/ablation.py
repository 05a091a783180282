"""What each of upper's promises costs, in instructions: ``python -m benchmarks.ablation``.

gevent-lean (``benchmarks.peers.gevent_lean``) is the green-thread model with
every feature taken out. This takes upper's features out one at a time
instead: it copies the project's packages to a temporary folder, makes one
small named edit there (``ABLATIONS``), and counts that variant's user-space
instructions per message under callgrind, exactly as ``benchmarks.instructions``
does, next to upper as it runs by default, ``upper-counting`` (the counters
are a run-time choice, not an edit) and gevent-lean. Upper minus a variant is
what that feature costs; the variant with all of them out against gevent-lean
is what the rest of upper (its state machine, ``StreamServer``, timeouts,
hibernation) costs.

The variants are measurements, not servers to run: each breaks a promise
(``keyword`` answers a keyword line that is not the last of a read, for
example). An edit that no longer matches the source fails loudly: update
``ABLATIONS`` with the code it measures. Needs what ``benchmarks.instructions``
needs (valgrind, the native driver); about 40 s per variant and load.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from benchmarks.bench import LOADS
from benchmarks.instructions import measure
from benchmarks.native import NativeDriverUnavailable, driver_binary
from upper.server.launcher import ServerFailedToStart

PROJECT = Path(__file__).resolve().parent.parent
PACKAGES = ("upper", "upper_server", "upper_client")
CONNECTION = "upper/server/connection.py"


@dataclass(frozen=True)
class Edit:
    """Replace ``old``, which must occur exactly once in ``path``, with ``new``."""

    path: str
    old: str
    new: str


@dataclass(frozen=True)
class Ablation:
    takes_out: str
    edits: tuple[Edit, ...]


ABLATIONS: dict[str, Ablation] = {
    "keyword": Ablation(
        "the keyword search over the whole read: only its end is checked, as gevent-lean does",
        (Edit(CONNECTION, "and not data.partition(keyword)[1]:",
              "and not data.endswith(_KEYWORD_ENDINGS):"),
         Edit(CONNECTION, "RECV_SIZE = 64 * 1024\n",
              "RECV_SIZE = 64 * 1024\n"
              '_KEYWORD_ENDINGS = (KEYWORD + b"\\n", KEYWORD + b"\\r\\n")\n')),
    ),
    "linger": Ablation(
        "the lingering close: the socket is closed right after the last reply",
        (Edit(CONNECTION,
              "        try:\n"
              "            self.sock.shutdown(socket.SHUT_WR)\n"
              "        except OSError:\n"
              "            return\n",
              "        return\n"),),
    ),
}
ALL = "all"
"""Every ablation at once."""


def variant_label(name: str) -> str:
    return "upper without any of them" if name == ALL else f"upper without {name}"


def make_variant(names: list[str], folder: Path) -> Path:
    """A copy of the project's packages in ``folder`` with the ablations ``names`` applied."""
    for package in PACKAGES:
        shutil.copytree(PROJECT / package, folder / package,
                        ignore=shutil.ignore_patterns("__pycache__"))
    for name in names:
        for edit in ABLATIONS[name].edits:
            path = folder / edit.path
            text = path.read_text()
            if text.count(edit.old) != 1:
                raise SystemExit(f"ablation: the {name!r} edit no longer matches {edit.path} "
                                 "exactly once: update ABLATIONS in benchmarks/ablation.py")
            path.write_text(text.replace(edit.old, edit.new))
    return folder


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
        # Each row: the server to run (benchmarks.bench.SERVERS), and the folder to run it in.
        runs: dict[str, tuple[str, Path | None]] = {
            "upper": ("upper", None), "upper-counting": ("upper-counting", None)
        }
        for name in args.ablations:
            chosen = list(ABLATIONS) if name == ALL else [name]
            folder = make_variant(chosen, Path(workdir) / f"variant-{name}")
            runs[variant_label(name)] = ("upper", folder)
        runs["gevent-lean"] = ("gevent-lean", None)
        results: dict[str, dict[str, float]] = {row: {} for row in runs}
        for load_name in args.loads:
            for row, (server, folder) in runs.items():
                output = Path(workdir) / f"{load_name}-{row.replace(' ', '-')}"
                output.mkdir()
                try:
                    messages, profile = measure(server, loads[load_name], args.seconds, output,
                                                cwd=folder)
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
