"""``python -m benchmarks.peers.c_epoll``: the machine's floor as a peer (``c_epoll.c``).

Builds the C server on first use (``benchmarks.native.build_binary``: the system
compiler, cached by content) and then becomes it (``execv``), so the benchmark
starts, signals and measures the C process itself, like any other peer.
Linux only (epoll); elsewhere, or without a C compiler, one line and exit 1.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from benchmarks.native import NativeDriverUnavailable, build_binary

SOURCE = Path(__file__).resolve().with_name("c_epoll.c")


def main() -> int:
    try:
        binary = build_binary(SOURCE, "upper-c-epoll")
    except NativeDriverUnavailable as exc:
        print(f"c_epoll: {exc}", file=sys.stderr)
        return 1
    os.execv(binary, [str(binary), *sys.argv[1:]])


if __name__ == "__main__":
    sys.exit(main())
