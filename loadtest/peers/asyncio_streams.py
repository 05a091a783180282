"""UPPER served the asyncio-streams way: ``start_server``, ``readline``, ``write`` + ``drain``.

``--uvloop`` installs uvloop's event loop policy first, so this one module is
both "asyncio streams" and "uvloop streams". Framework defaults throughout
(listen backlog 100, 64 KiB ``StreamReader`` limit; asyncio sets TCP_NODELAY
on TCP transports by itself). Not streaming, no lingering close: see
``loadtest.peers``.
"""

from __future__ import annotations

import asyncio
import signal

from loadtest.peers._common import announce, parser, upper

NAME = "asyncio_streams"
QUIT = {b"DESCONEXION\n", b"DESCONEXION\r\n", b"DESCONEXION", b"DESCONEXION\r"}



async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            line = await reader.readline()
            if not line or line in QUIT:
                break
            writer.write(upper(line))
            await writer.drain()
    except (ConnectionError, ValueError):  # reset by the peer; line over the 64 KiB limit
        pass
    except asyncio.CancelledError:
        # Shutdown: asyncio.run cancels the handlers still running, and Python
        # 3.11's StreamReaderProtocol logs a cancelled handler as an error.
        pass
    finally:
        writer.close()


async def serve(host: str, port: int, backlog: int | None) -> None:
    kwargs = {} if backlog is None else {"backlog": backlog}
    server = await asyncio.start_server(handle, host, port, **kwargs)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
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
