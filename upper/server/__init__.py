"""A gevent TCP server that answers every line in uppercase."""

from upper.server.server import UpperServer
from upper.server.stats import ServerStats

__all__ = ["ServerStats", "UpperServer"]
