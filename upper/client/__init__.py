"""Client for the UPPER line protocol: a library (``UpperClient``) and a CLI."""

from upper.client.client import UpperClient
from upper.client.errors import (
    ConnectError,
    ConnectionLost,
    NotConnected,
    ReplyTimeout,
    UpperClientError,
)

__all__ = [
    "ConnectError",
    "ConnectionLost",
    "NotConnected",
    "ReplyTimeout",
    "UpperClient",
    "UpperClientError",
]
