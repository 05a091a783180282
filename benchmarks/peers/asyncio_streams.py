"""UPPER served the asyncio-streams way: ``start_server``, ``readline``, ``write`` + ``drain``.

``--uvloop`` installs uvloop's event loop policy first, so this one module is
both "asyncio streams" and "uvloop streams". Framework defaults throughout
(listen backlog 100, 64 KiB ``StreamReader`` limit; asyncio sets TCP_NODELAY
on TCP transports by itself). Not streaming, no lingering close: see
``benchmarks.peers``.
"""

from __future__ import annotations

import asyncio
import functools

from benchmarks.peers._common import run_asyncio_peer, upper

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


def main(argv: list[str] | None = None) -> None:
    start_server = functools.partial(asyncio.start_server, handle)
    run_asyncio_peer(NAME, __doc__.splitlines()[0], start_server, argv)


if __name__ == "__main__":
    main()
