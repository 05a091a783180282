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


def run_asyncio_peer(name: str, description: str, start_server, argv=None) -> None:
    """Run an asyncio peer until SIGTERM/SIGINT; ``--uvloop`` swaps in uvloop's loop.

    ``start_server(host, port, **kwargs)`` is the framework call that listens,
    ``asyncio.start_server`` with a handler or ``loop.create_server`` with a protocol.
    """
    import asyncio
    import signal

    p = parser(description)
    p.add_argument("--uvloop", action="store_true", help="use uvloop's event loop")
    p.add_argument("--tls-cert", metavar="FILE", help="serve TLS with this PEM certificate")
    p.add_argument("--tls-key", metavar="FILE", help="the private key of --tls-cert")
    args = p.parse_args(argv)
    if args.uvloop:
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())

    async def serve() -> None:
        kwargs = {} if args.backlog is None else {"backlog": args.backlog}
        if args.tls_cert:
            # The framework's own TLS (its SSL transport), with the standard server defaults.
            import ssl

            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(args.tls_cert, args.tls_key)
            kwargs["ssl"] = context
        server = await start_server(args.host, args.port, **kwargs)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        announce(name, server.sockets[0].getsockname())
        async with server:
            await stop.wait()

    asyncio.run(serve())
