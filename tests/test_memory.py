"""``release_freed_memory``: glibc's malloc_trim where there is one, nothing elsewhere."""

import subprocess
import sys

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
