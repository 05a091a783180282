"""The green-thread model's floor: a greenlet per connection on a raw watcher; recv, upper, send.

This peer is not a conforming UPPER server and is not meant to be one. It is
the least a gevent server can do per message, written the way the project's
server is written (a greenlet per connection parked on a libev read watcher
whose callback is the greenlet's own ``switch``; raw non-blocking ``_socket``
calls; one shared receive buffer), with every feature taken out. Against it
the benchmark shows two separate costs: what upper's features cost (streaming
with the keyword scanner, lingering close, idle and linger timeouts,
hibernation, counters) is upper against this peer; what the green-thread
model itself costs is this peer against uvloop's ``Protocol``.

What it does, and nothing more:

- accept in a hub callback (no ``StreamServer``), ``TCP_NODELAY`` on, one
  raw greenlet per connection;
- wait for readability, ``recv_into`` the shared buffer, answer the whole chunk
  with ``upper.protocol.uppercase`` (one C-level ``bytes.upper()`` for ASCII)
  and ``send`` it (parking on a write watcher only if the kernel took less);
- close on EOF, and on a chunk that *ends* with the ``DESCONEXION`` line (as
  the load driver sends it, alone in its own write; the peer tests send it
  last): the text before it is answered, then a plain close.

What it does not do, so unlike upper it is not the protocol: the keyword is
not found when it is followed by more input or split across reads; a chunk
that splits a UTF-8 character is uppercased in two halves; no lingering
close (unread input after the keyword turns the close into a reset); no
timeouts, no hibernation (every idle connection keeps its parked greenlet),
no backpressure beyond the one pending reply, no limit on connections.

The listen backlog defaults to 4096 (upper's), not the framework default of
the other peers: the comparison with upper is per message, not per backlog.
"""

from __future__ import annotations

import _socket
import signal
import socket
from types import MethodType

import gevent
from gevent import get_hub, getcurrent
from gevent.event import Event
from greenlet import greenlet

from benchmarks.peers._common import announce, parser
from upper.protocol import KEYWORD, ends_session, uppercase

NAME = "gevent_lean"
BACKLOG = 4096
RECV_SIZE = 64 * 1024
_READ = 1
_WRITE = 2
_KEYWORD_ENDINGS = (KEYWORD + b"\n", KEYWORD + b"\r\n")


def serve_connection(sock: _socket.socket, hub, buffer: bytearray) -> None:
    """recv, uppercase, send until EOF or a chunk ending with the keyword line."""
    wait = MethodType(greenlet.switch, hub)  # the raw switch, as upper's connection does
    watcher = hub.loop.io(sock.fileno(), _READ)
    watcher.start(getcurrent().switch)
    received = memoryview(buffer)
    recv_into = sock.recv_into
    send = sock.send
    try:
        while True:
            wait()
            try:
                size = recv_into(buffer)
            except BlockingIOError:
                continue
            if not size:
                return
            data = received[:size].tobytes()  # copied out before anything can switch
            ending = data.endswith(_KEYWORD_ENDINGS)
            if ending:
                line_start = data.rfind(b"\n", 0, len(data) - 1) + 1
                ending = ends_session(data[line_start:])
                if ending:
                    data = data[:line_start]
            if data:
                reply = uppercase(data)
                try:
                    sent = send(reply)
                except BlockingIOError:
                    sent = 0
                if sent != len(reply):
                    send_rest(sock, watcher, memoryview(reply)[sent:], wait)
            if ending:
                return
    except OSError:
        pass  # reset by the client: just close
    finally:
        watcher.stop()
        watcher.close()
        sock.close()


def send_rest(sock, watcher, rest: memoryview, wait) -> None:
    """Park on a write watcher until the kernel has taken the whole reply."""
    watcher.stop()
    watcher.events = _WRITE
    watcher.start(getcurrent().switch)
    try:
        while rest:
            wait()
            try:
                rest = rest[sock.send(rest):]
            except BlockingIOError:
                pass
    finally:
        watcher.stop()
        watcher.events = _READ
        watcher.start(getcurrent().switch)


def accept_all(listener: socket.socket, hub, buffer: bytearray) -> None:
    """The listener's watcher callback (in the hub): accept every pending client."""
    while True:
        try:
            fd, _address = listener._accept()
        except BlockingIOError:
            return
        except OSError:
            return  # a client gave up, or out of descriptors: try again on the next event
        sock = _socket.socket(listener.family, socket.SOCK_STREAM, 0, fd)
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        gevent.spawn_raw(serve_connection, sock, hub, buffer)


def main(argv: list[str] | None = None) -> None:
    args = parser(__doc__.splitlines()[0]).parse_args(argv)
    backlog = BACKLOG if args.backlog is None else args.backlog
    listener = socket.create_server((args.host, args.port), backlog=backlog)
    listener.setblocking(False)
    hub = get_hub()
    # One receive buffer for the process: the hub runs one greenlet at a time and
    # each copies its bytes out before it can be switched away from.
    buffer = bytearray(RECV_SIZE)
    accepting = hub.loop.io(listener.fileno(), _READ)
    accepting.start(accept_all, listener, hub, buffer)
    stopped = Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        gevent.signal_handler(sig, stopped.set)
    announce(NAME, listener.getsockname())
    stopped.wait()
    accepting.stop()
    listener.close()


if __name__ == "__main__":
    main()
