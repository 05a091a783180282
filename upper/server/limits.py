"""The open-file limit: raising it at start, and the connection limit it implies.

Each connection holds one descriptor, so the open-file limit is the connection
limit. ``resource`` exists only on POSIX systems; it is imported here and
nowhere else in the server, so the server starts on Windows too.
"""

import logging

try:
    import resource
except ImportError:  # Windows
    resource = None

log = logging.getLogger(__name__)

FD_RESERVE = 100
"""Descriptors kept back from ``--max-connections`` for the listener, logs and the like."""
NO_RLIMIT_MAX_CONNECTIONS = 10_000
"""Connections served at once where the platform has no open-file limit to follow."""
UNLIMITED_CAP = 1 << 20
"""What an unlimited hard limit is taken to mean when looking for the highest soft limit."""


def open_file_limit() -> int | None:
    """The soft open-file limit in force, or ``None`` where the platform has none."""
    if resource is None:
        return None
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return None if soft == resource.RLIM_INFINITY else soft


def raise_open_file_limit() -> int | None:
    """Raise the soft open-file limit as far as the platform allows; the limit now in force.

    Resource handling:

      The platform's ceiling is not always the hard limit: macOS reports an
      unlimited hard limit and refuses a soft limit above its per-process
      maximum (``kern.maxfilesperproc``, often 10240 or 24576). The highest
      value ``setrlimit`` accepts is found by bisection, so no platform
      constant or ``sysctl`` is needed.

    Error handling:

      A refused ``setrlimit`` is never an error: the server runs with what it
      has, and ``default_max_connections()`` follows the limit in force. Where
      there is no such limit (Windows, no ``resource``) this returns ``None``
      and the connection limit is ``NO_RLIMIT_MAX_CONNECTIONS``.
    """
    if resource is None:
        return None
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return None
    ceiling = UNLIMITED_CAP if hard == resource.RLIM_INFINITY else hard
    if soft >= ceiling:
        return soft
    if _accepts(ceiling, hard):
        return ceiling
    # Refused (macOS with an unlimited hard limit): the highest accepted value lies
    # between the current soft limit, which is accepted, and the ceiling, which is not.
    # A refused probe changes nothing, so the last accepted one is the limit in force.
    low, high = soft, ceiling
    while high - low > 1:
        middle = (low + high) // 2
        if _accepts(middle, hard):
            low = middle
        else:
            high = middle
    log.debug("open-file limit raised to %d (hard limit %s refused)", low, hard)
    return low


def _accepts(soft: int, hard: int) -> bool:
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    except (ValueError, OSError):
        return False
    return True


def default_max_connections() -> int:
    """Connections served at once unless ``--max-connections`` says otherwise."""
    limit = open_file_limit()
    if limit is None:
        return NO_RLIMIT_MAX_CONNECTIONS
    return max(1, limit - FD_RESERVE)
