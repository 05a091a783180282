"""upper's server with some of its features taken out, to measure what they cost:
``python -m benchmarks.ablated_server --ablate keyword,linger [server options]``.

Each variant is a ``Connection`` subclass (``benchmarks.ablation.ABLATIONS``) given to
``UpperServer`` through its ``connection_class`` parameter: a real seam, no edit of the
source. The variants are measurements, not servers to run: each breaks a promise.
Plain TCP, one process (no ``--workers``, no ``--tls-cert``).
"""

from __future__ import annotations

import argparse
import logging
import sys

from benchmarks.ablation import ABLATIONS, variant_class
from upper.server.cli import announce, make_server, parse_args
from upper.server.listener import ListenError, addresses_text, open_listeners
from upper.server.server import UpperServer
from upper.server.serving import serve_until_signalled


def main(argv: list[str] | None = None) -> int:
    chooser = argparse.ArgumentParser(prog="python -m benchmarks.ablated_server", add_help=False)
    chooser.add_argument("--ablate", required=True,
                         help=f"comma-separated, from: {', '.join(ABLATIONS)}")
    chosen, rest = chooser.parse_known_args(argv)
    names = [name for name in chosen.ablate.split(",") if name]
    unknown = [name for name in names if name not in ABLATIONS]
    if unknown:
        print(f"ablated_server: no such ablation: {', '.join(unknown)}", file=sys.stderr)
        return 2
    args = parse_args(rest)
    logging.basicConfig(level=args.log_level.upper())
    try:
        listeners = open_listeners(args.host, args.port, UpperServer.backlog)
    except ListenError as exc:
        print(f"ablated_server: {exc}", file=sys.stderr)
        return 1
    server = make_server(listeners, args, connection_class=variant_class(names))
    serve_until_signalled(server, lambda: announce(addresses_text(listeners)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
