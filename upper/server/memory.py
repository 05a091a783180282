"""Giving freed memory back to the operating system, where the C library allows it.

When idle connections hibernate, they give their greenlets back: up to 256 are
parked for reuse (``ReusableGreenlets``), the rest end and the copies of their
stacks are freed, as are the buffers the connections no longer hold. glibc keeps
most of those pages, so the process's resident size would not show it.
``malloc_trim(0)`` returns every free page of the heap.
Elsewhere (macOS, Windows, musl) there is no such call and this does nothing.
"""

import ctypes
import ctypes.util
import logging
import sys

log = logging.getLogger(__name__)


def _find_malloc_trim():
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or None).malloc_trim
    except (OSError, AttributeError):  # not glibc
        return None


_malloc_trim = _find_malloc_trim()


def release_freed_memory() -> bool:
    """Return free heap pages to the OS; False where the platform cannot."""
    if _malloc_trim is None:
        return False
    _malloc_trim(0)
    return True
