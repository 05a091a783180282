"""UPPER served the gevent-textbook way: StreamServer, makefile("rb"), readline, sendall.

The shape of gevent's own echo-server example, one greenlet per client, no
monkey patching. gevent defaults: listen backlog 128 (``StreamServer.backlog``),
no TCP_NODELAY. Not streaming, no lingering close: see ``benchmarks.peers``.
"""

from __future__ import annotations

import signal

import gevent
from gevent.server import StreamServer

from benchmarks.peers._common import announce, parser, upper

NAME = "gevent_textbook"
QUIT = {b"DESCONEXION\n", b"DESCONEXION\r\n", b"DESCONEXION", b"DESCONEXION\r"}



def handle(sock, address) -> None:
    rfile = sock.makefile("rb")
    try:
        while True:
            line = rfile.readline()
            if not line or line in QUIT:
                break
            sock.sendall(upper(line))
    except ConnectionError:
        pass
    finally:
        rfile.close()
        sock.close()


def main(argv: list[str] | None = None) -> None:
    args = parser(__doc__.splitlines()[0]).parse_args(argv)
    kwargs = {} if args.backlog is None else {"backlog": args.backlog}
    server = StreamServer((args.host, args.port), handle, **kwargs)
    server.start()
    for sig in (signal.SIGTERM, signal.SIGINT):
        gevent.signal_handler(sig, server.close)
    announce(NAME, server.address)
    server.serve_forever()


if __name__ == "__main__":
    main()
