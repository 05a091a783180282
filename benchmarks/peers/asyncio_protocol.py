"""UPPER served the asyncio-protocol way: ``data_received`` splits lines, one ``write`` per batch.

``--uvloop`` installs uvloop's event loop policy first, so this one module is
both "asyncio protocol" and "uvloop protocol". Framework defaults throughout
(listen backlog 100; TCP_NODELAY is set by asyncio/uvloop on TCP transports).
Not streaming, no lingering close: see ``benchmarks.peers``.
"""

from __future__ import annotations

import asyncio

from benchmarks.peers._common import QUIT, run_asyncio_peer, upper

NAME = "asyncio_protocol"



class UpperProtocol(asyncio.Protocol):
    def connection_made(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        self.buffer = b""
        self.closed = False

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        *lines, self.buffer = (self.buffer + data).split(b"\n")
        out = []
        for line in lines:
            if line in QUIT:
                self.closed = True
                break
            out.append(upper(line) + b"\n")
        if out:
            self.transport.write(b"".join(out))
        if self.closed:
            self.transport.close()

    def eof_received(self) -> bool:
        if self.buffer and not self.closed and self.buffer not in QUIT:
            self.transport.write(upper(self.buffer))
        return False  # close the transport once the write buffer is flushed


def create_server(host: str, port: int, **kwargs):
    return asyncio.get_running_loop().create_server(UpperProtocol, host, port, **kwargs)


def main(argv: list[str] | None = None) -> None:
    run_asyncio_peer(NAME, __doc__.splitlines()[0], create_server, argv)


if __name__ == "__main__":
    main()
