"""``python -m upper_server``: the command the project has always documented.

The code lives in ``upper.server``; this name only starts it, and re-exports its library.
"""

from upper.server import ServerStats, UpperServer

__all__ = ["ServerStats", "UpperServer"]
