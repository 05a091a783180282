"""A gevent TCP server that answers every line in uppercase."""

from upper_server.server import UpperServer
from upper_server.stats import ServerStats

__all__ = ["ServerStats", "UpperServer"]
