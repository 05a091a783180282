"""Counters of what a server has done since it started."""

from dataclasses import asdict, dataclass


@dataclass(slots=True)
class ServerStats:
    open_connections: int = 0
    connections_served: int = 0
    lines_in: int = 0
    lines_out: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    errors: int = 0
    idle_timeouts: int = 0
    accept_errors: int = 0
    proxy_rejected_source: int = 0  # not in --proxy-allow-from
    proxy_rejected_invalid: int = 0  # missing or malformed PROXY header
    proxy_rejected_timeout: int = 0  # no whole header within --proxy-header-timeout
    failed_handshakes: int = 0

    def snapshot(self) -> dict[str, int]:
        return asdict(self)

    def summary(self) -> str:
        return (
            f"open={self.open_connections} served={self.connections_served} "
            f"lines_in={self.lines_in} lines_out={self.lines_out} "
            f"bytes_in={self.bytes_in} bytes_out={self.bytes_out} errors={self.errors} "
            f"failed_handshakes={self.failed_handshakes}"
        )
