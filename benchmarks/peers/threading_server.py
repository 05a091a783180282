"""UPPER served the socketserver way: ThreadingTCPServer + StreamRequestHandler.

``rfile.readline()`` / ``wfile.write()``; ``daemon_threads`` and
``allow_reuse_address`` set, everything else default: listen backlog 5
(``request_queue_size``), no TCP_NODELAY, an unbuffered ``wfile`` (one
``sendall`` per line). Not streaming, no lingering close: see ``benchmarks.peers``.
"""

from __future__ import annotations

import signal
import socketserver
import sys

from benchmarks.peers._common import announce, parser, upper

NAME = "threading_server"
QUIT = {b"DESCONEXION\n", b"DESCONEXION\r\n", b"DESCONEXION", b"DESCONEXION\r"}



class UpperHandler(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        try:
            for line in self.rfile:
                if line in QUIT:
                    break
                self.wfile.write(upper(line))
        except ConnectionError:
            pass


class UpperServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def handle_error(self, request, client_address) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


def _stop(signum, frame) -> None:
    raise SystemExit(0)


def main(argv: list[str] | None = None) -> None:
    args = parser(__doc__.splitlines()[0]).parse_args(argv)
    if args.backlog is not None:
        UpperServer.request_queue_size = args.backlog
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    with UpperServer((args.host, args.port), UpperHandler) as server:
        announce(NAME, server.server_address)
        try:
            server.serve_forever()
        except SystemExit:
            pass


if __name__ == "__main__":
    main()
