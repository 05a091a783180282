"""Counters of what a server has done since it started."""

from dataclasses import asdict, dataclass


@dataclass(slots=True)
class ServerStats:
    """The server's counters. ``lines_out`` and ``bytes_out`` are derived, not counted.

    A connection's receive loop counts what comes in, and most of it goes straight
    back out: a reply has the lines of its input, and the bytes too unless a line
    start is held back or a character changes length in uppercase. So the loop
    adds to two counters per read, not four, and records only the exceptions in
    ``lines_unsent`` and ``bytes_unsent``: what was received minus what was sent,
    including replies still waiting for the client to read them.
    """

    counting: bool = True
    """Whether lines and bytes are counted at all: ``UpperServer(count_traffic=...)``. The
    other counters are always kept: they change once per connection, not per message."""
    open_connections: int = 0
    connections_served: int = 0
    lines_in: int = 0
    bytes_in: int = 0
    lines_unsent: int = 0
    bytes_unsent: int = 0  # negative when uppercase made the replies longer
    errors: int = 0
    idle_timeouts: int = 0
    accept_errors: int = 0
    proxy_rejected_source: int = 0  # not in --proxy-allow-from
    proxy_rejected_invalid: int = 0  # missing or malformed PROXY header
    proxy_rejected_timeout: int = 0  # no whole header within --proxy-header-timeout
    failed_handshakes: int = 0
    refused_renegotiations: int = 0  # a TLS client asked to renegotiate: refused, closed

    @property
    def lines_out(self) -> int:
        return self.lines_in - self.lines_unsent

    @property
    def bytes_out(self) -> int:
        return self.bytes_in - self.bytes_unsent

    def received(self, data: bytes) -> None:
        """``data`` came in and none of it is answered yet."""
        if not self.counting:
            return
        lines = data.count(b"\n")
        self.bytes_in += len(data)
        self.lines_in += lines
        self.bytes_unsent += len(data)
        self.lines_unsent += lines

    def waiting(self, reply: bytes) -> None:
        """``reply`` was counted as sent with its input, but the client has not read it yet."""
        if self.counting:
            self.bytes_unsent += len(reply)
            self.lines_unsent += reply.count(b"\n")

    def sent(self, data: bytes) -> None:
        """``data`` went out, answering what ``received`` counted (or ``waiting`` held back)."""
        if self.counting:
            self.bytes_unsent -= len(data)
            self.lines_unsent -= data.count(b"\n")

    def snapshot(self) -> dict[str, int]:
        counters = asdict(self)
        del counters["counting"], counters["lines_unsent"], counters["bytes_unsent"]
        counters.update(lines_out=self.lines_out, bytes_out=self.bytes_out)
        return counters

    def summary(self) -> str:
        return (
            f"open={self.open_connections} served={self.connections_served} "
            f"lines_in={self.lines_in} lines_out={self.lines_out} "
            f"bytes_in={self.bytes_in} bytes_out={self.bytes_out} errors={self.errors} "
            f"failed_handshakes={self.failed_handshakes}"
        )
