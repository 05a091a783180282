"""Where the server under test is, and the one place the checker opens connections.

Connections are the client library's (``upper.client.duplex``: its error
messages, its socket options), driven in duplex mode: checks send raw pieces,
half-close, and tell a reset from a FIN through its small public surface. TLS,
when the client has it, goes here and nowhere else.
"""

import ssl
from dataclasses import dataclass

from upper.client.duplex import DEFAULT_TIMEOUT, Duplex, connect
from upper.client.errors import ConnectError
from upper.protocol.address import format_address

__all__ = ["ConnectError", "Target"]


@dataclass(frozen=True)
class Target:
    host: str
    port: int
    timeout: float = DEFAULT_TIMEOUT
    """Seconds to wait for the server's next move (a reply, a close) before calling it late."""
    ssl_context: ssl.SSLContext | None = None
    """With a context, every connection speaks TLS (the client's ``--tls`` options)."""

    @property
    def address(self) -> str:
        return format_address(self.host, self.port)

    def open(self) -> Duplex:
        """A new connection with ``TCP_NODELAY`` (and TLS, with a context); ``ConnectError``
        if nothing answers or the handshake fails."""
        return connect(self.host, self.port, self.timeout, self.ssl_context)
