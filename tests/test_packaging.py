"""The installed distribution contains every runtime package, and nothing else.

Tests run from the checkout, where every package is importable anyway: a
package missing from pyproject.toml would only fail for users.
"""

import fnmatch
import pathlib
import tomllib

ROOT = pathlib.Path(__file__).resolve().parent.parent
NOT_INSTALLED = {"tests", "benchmarks"}


def test_every_runtime_package_is_installed():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = config["tool"]["setuptools"]["packages"]["find"]["include"]
    packages = {path.parent.name for path in ROOT.glob("*/__init__.py")}
    runtime = packages - NOT_INSTALLED
    missing = [name for name in runtime if not any(fnmatch.fnmatch(name, p) for p in patterns)]
    assert not missing, f"add to [tool.setuptools.packages.find] include: {missing}"
    leaked = [name for name in NOT_INSTALLED if any(fnmatch.fnmatch(name, p) for p in patterns)]
    assert not leaked, leaked
