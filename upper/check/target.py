"""Where the server under test is, and the one place the checker opens connections.

Connections are opened by ``UpperClient`` (its error messages, its socket
options) and then detached: checks need the raw socket to see a reset or a
half-close. TLS, when the client has it, goes here and nowhere else.
"""

import socket
import ssl
from dataclasses import dataclass

from upper.client.client import UpperClient
from upper.client.errors import ConnectError
from upper.protocol.address import format_address

__all__ = ["ConnectError", "Target"]


@dataclass(frozen=True)
class Target:
    host: str
    port: int
    timeout: float = 5.0
    """Seconds to wait for the server's next move (a reply, a close) before calling it late."""
    ssl_context: ssl.SSLContext | None = None
    """With a context, every connection speaks TLS (the client's ``--tls`` options)."""

    @property
    def address(self) -> str:
        return format_address(self.host, self.port)

    def open_socket(self) -> socket.socket:
        """A new connection with ``TCP_NODELAY`` (and TLS, with a context); ``ConnectError``
        if nothing answers or the handshake fails."""
        client = UpperClient(
            self.host, self.port, timeout=self.timeout, ssl_context=self.ssl_context
        )
        client.connect()
        return client.detach()
