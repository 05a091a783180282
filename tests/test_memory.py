"""``release_freed_memory``: glibc's malloc_trim where there is one, nothing elsewhere."""

import subprocess
import sys

import pytest

from upper.server.memory import release_freed_memory


def test_releases_on_linux_glibc():
    assert release_freed_memory() is (sys.platform.startswith("linux"))


def test_does_nothing_where_the_platform_has_no_malloc_trim():
    probe = (
        "import sys; sys.platform = 'darwin'\n"
        "from upper.server.memory import release_freed_memory\n"
        "print(release_freed_memory())\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"


FRAGMENTED_HEAP = """
import psutil
from upper.server.memory import release_freed_memory

process = psutil.Process()
# 1 KiB blocks come from malloc's heap (pymalloc takes only up to 512 bytes); the block
# kept at the end pins the heap's top, so free() alone cannot hand the pages back.
blocks = [bytes(1024) for _ in range(150_000)]
keeper = bytes(1024)
del blocks
before = process.memory_info().rss
released = release_freed_memory()
after = process.memory_info().rss
print(released, before - after)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="malloc_trim is glibc's")
def test_freed_heap_pages_leave_the_resident_size():
    """What the server relies on after a hibernation burst: free() keeps the pages, the
    trim gives them back (150,000 freed 1 KiB blocks, about 150 MiB)."""
    done = subprocess.run(
        [sys.executable, "-c", FRAGMENTED_HEAP], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    released, shrunk_by = done.stdout.split()
    assert released == "True"
    assert int(shrunk_by) > 100 * 1024 * 1024, f"RSS shrank by only {int(shrunk_by)} bytes"
