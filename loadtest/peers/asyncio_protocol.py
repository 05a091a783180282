"""UPPER served the asyncio-protocol way: ``data_received`` splits lines, one ``write`` per batch.

``--uvloop`` installs uvloop's event loop policy first, so this one module is
both "asyncio protocol" and "uvloop protocol". Framework defaults throughout
(listen backlog 100; TCP_NODELAY is set by asyncio/uvloop on TCP transports).
Not streaming, no lingering close: see ``loadtest.peers``.
"""

from __future__ import annotations

import asyncio
import signal

from loadtest.peers._common import QUIT, announce, parser, upper

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


async def serve(host: str, port: int, backlog: int | None) -> None:
    loop = asyncio.get_running_loop()
    kwargs = {} if backlog is None else {"backlog": backlog}
    server = await loop.create_server(UpperProtocol, host, port, **kwargs)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    announce(NAME, server.sockets[0].getsockname())
    async with server:
        await stop.wait()


def main(argv: list[str] | None = None) -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--uvloop", action="store_true", help="use uvloop's event loop")
    args = p.parse_args(argv)
    if args.uvloop:
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    asyncio.run(serve(args.host, args.port, args.backlog))


if __name__ == "__main__":
    main()
