"""``python -m upper_client``: the command the project has always documented.

The code lives in ``upper.client``; this name only starts it, and re-exports its library.
"""

from upper.client import (
    ConnectError,
    ConnectionLost,
    NotConnected,
    ReplyTimeout,
    UpperClient,
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
