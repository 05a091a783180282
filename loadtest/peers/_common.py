"""What the peer servers share: the line rule, the command line, the ready line."""

from __future__ import annotations

import argparse

QUIT = {b"DESCONEXION", b"DESCONEXION\r"}
"""A line (without its LF) that ends the session."""


def upper(line: bytes) -> bytes:
    """The uppercase of a line as the protocol defines it (the textbook one-liner)."""
    return line.decode("utf-8", "surrogateescape").upper().encode("utf-8", "surrogateescape")


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on")
    p.add_argument("--port", type=int, default=5000, help="TCP port; 0 picks a free one")
    p.add_argument(
        "--backlog",
        type=int,
        default=None,
        help="listen backlog; by default the framework's own default",
    )
    return p


def announce(name: str, sockname: tuple) -> None:
    """Print the one ready line the benchmark waits for."""
    print(f"{name} listening on {sockname[0]}:{sockname[1]}", flush=True)
