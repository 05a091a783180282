"""The client's exceptions: every network failure is one of these, with a message
that names the address and what happened."""


class UpperClientError(Exception):
    """Base class of everything the client raises for network trouble."""


class ConnectError(UpperClientError):
    """The connection could not be opened (refused, unknown host, unreachable, timeout)."""


class ReplyTimeout(UpperClientError):
    """The server did not answer, or did not close, within the timeout."""


class ConnectionLost(UpperClientError):
    """The server closed or reset the connection before the expected reply."""


class NotConnected(UpperClientError):
    """An operation needs an open connection and there is none."""
