"""Reference servers for the UPPER protocol, written the way their users usually write them.

They are the comparison in the benchmark: the same protocol served by the
textbook code of each framework (asyncio streams, asyncio protocols, uvloop,
socketserver threads, gevent), idiomatic rather than tuned. One more,
``gevent-lean`` (``gevent_lean``), is the opposite: the green-thread model with
every feature taken out, the floor a gevent server written like upper can
reach; it is not a conforming server (its docstring says where it falls
short), so the lines below hold for it only as far as the tests exercise them.
Each one:

- runs as ``python -m <module> --host 127.0.0.1 --port 0 [flags]``;
- prints exactly one line ``NAME listening on HOST:PORT`` (the real port) to
  stdout, flushed, once it accepts connections;
- answers every LF-terminated line with its uppercase
  (``line.decode("utf-8", "surrogateescape").upper().encode(...)``), CR kept;
- ends the session on a line that is exactly ``DESCONEXION`` (optional CR): no
  reply, the server closes; it also closes on EOF, answering a last line
  without LF;
- exits 0, quietly, on SIGTERM or SIGINT.

The asyncio ones (``TLS_PEERS``) also serve TLS with ``--tls-cert FILE
--tls-key FILE``: ``create_server(ssl=context)``, the framework's own SSL
transport, which is what the benchmark's TLS row compares upper with.

Unlike ``upper.server`` they do not stream: a line is answered once its LF has
arrived, so an endless line costs memory proportional to its length (or, for
asyncio streams, ends the session at the 64 KiB ``StreamReader`` limit). They
do not linger on close either: after ``DESCONEXION`` they simply close, which
resets the connection if the client had already sent more. Those two points
are what the protocol asks of the project's server and not of these peers.

``PEERS`` maps the display name used in benchmark reports to the argv that
starts the peer, without ``--host``/``--port``, exactly like
``[sys.executable, "-m", "upper_server", "--log-level", "warning"]`` starts
the project's own server.
"""

from __future__ import annotations

import sys

PEERS: dict[str, list[str]] = {
    "asyncio-streams": [sys.executable, "-m", "benchmarks.peers.asyncio_streams"],
    "uvloop-streams": [sys.executable, "-m", "benchmarks.peers.asyncio_streams", "--uvloop"],
    "asyncio-protocol": [sys.executable, "-m", "benchmarks.peers.asyncio_protocol"],
    "uvloop-protocol": [sys.executable, "-m", "benchmarks.peers.asyncio_protocol", "--uvloop"],
    "threading": [sys.executable, "-m", "benchmarks.peers.threading_server"],
    "gevent-textbook": [sys.executable, "-m", "benchmarks.peers.gevent_textbook"],
    "gevent-lean": [sys.executable, "-m", "benchmarks.peers.gevent_lean"],
}

NATIVE_PEERS: dict[str, list[str]] = {
    "c-epoll": [sys.executable, "-m", "benchmarks.peers.c_epoll"],
}
"""The machine's floor: ``c_epoll.c``, one thread on level-triggered epoll, built on first
use. It uppercases ASCII only (other bytes pass unchanged), so it conforms for ASCII text
alone: the benchmark's loads send ASCII, and ``tests/test_peers.py`` tests it with ASCII."""

TLS_PEERS = {"asyncio-streams", "uvloop-streams", "asyncio-protocol", "uvloop-protocol"}
"""The peers that take ``--tls-cert FILE --tls-key FILE`` (asyncio's own SSL transport)."""

__all__ = ["NATIVE_PEERS", "PEERS", "TLS_PEERS"]
