"""``python -m upper_client``: the command the project has always documented.

The code lives in ``upper.client``; this name only starts it, and re-exports its library.
"""

from upper import client as _client
from upper.client import *  # noqa: F403 - the library, under its old name

__all__ = _client.__all__
