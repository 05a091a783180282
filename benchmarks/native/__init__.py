"""The native load driver (``driver.c``): built on first use with the system compiler, cached.

``driver_binary()`` returns the path of the compiled driver, building it if
this version of the source has not been built yet. The binary lives in
``$XDG_CACHE_HOME/upper-bench/`` (``~/.cache/upper-bench/`` by default), named
after a hash of the source, the compiler and its flags, so an edited source is
rebuilt and an unchanged one never is. The build writes a temporary file and
renames it into place, so concurrent first uses (parallel tests) are safe.

``load_driver(prefer)`` is what the benchmark calls: the native driver's
command, or, only where it cannot be built (no C compiler, not Linux), the
Python driver's (``benchmarks.driver``), labelled as the fallback.

``python -m benchmarks.native ARGS`` builds the driver if needed and runs it
with ``ARGS`` (``--help`` lists them); ``python -m benchmarks.native --build``
only builds it and prints its path.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

SOURCE = Path(__file__).resolve().with_name("driver.c")
CFLAGS = ("-std=c11", "-O2", "-Wall", "-Wextra")
LIBS = ("-lm",)
TLS_CFLAGS = ("-DUPPER_TLS",)
TLS_LIBS = ("-lssl", "-lcrypto")
"""The TLS build (``--tls``) links OpenSSL; the plain build needs nothing but libc."""
OPENSSL_MISSING = (
    "the TLS load driver needs OpenSSL's headers and libraries: install them "
    "(Debian/Ubuntu: apt-get install libssl-dev; Fedora: dnf install openssl-devel; "
    "macOS: brew install openssl)"
)
BUILD_TIMEOUT = 120.0
COMPILERS = ("cc", "gcc", "clang")


class NativeDriverUnavailable(RuntimeError):
    """The native driver cannot be built here; the message says why in one line."""


@dataclass(frozen=True)
class LoadDriver:
    """How to run a load driver: its argv prefix and the label its figures carry."""

    command: tuple[str, ...]
    label: str
    fallback: bool
    why_fallback: str = ""


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "upper-bench"


def find_compiler() -> str:
    """The C compiler to use: ``$CC`` if set, else the first of cc, gcc, clang found."""
    wanted = os.environ.get("CC")
    for name in (wanted,) if wanted else COMPILERS:
        path = shutil.which(name)
        if path:
            return path
    names = wanted or ", ".join(COMPILERS)
    raise NativeDriverUnavailable(
        f"no C compiler found ({names}); install one (Debian: apt-get install gcc) "
        "to build the native load driver"
    )


def driver_binary(tls: bool = False) -> Path:
    """The compiled native driver, built now if this source has not been built yet.

    With ``tls``, the build that speaks TLS (``--tls``), linked with OpenSSL;
    ``NativeDriverUnavailable`` says how to install OpenSSL's headers if they are missing.
    """
    name = "upper-driver-tls" if tls else "upper-driver"
    try:
        return build_binary(
            SOURCE, name, CFLAGS + (TLS_CFLAGS if tls else ()), LIBS + (TLS_LIBS if tls else ())
        )
    except NativeDriverUnavailable as exc:
        if tls and "openssl" in str(exc).lower():
            raise NativeDriverUnavailable(OPENSSL_MISSING) from None
        raise


def build_binary(source: Path, name: str, cflags=CFLAGS, libs=LIBS) -> Path:
    """``source`` compiled (Linux only: the programs here use epoll), cached by content.

    The binary is ``cache_dir()/NAME-HASH``, the hash of the source, the compiler and
    its flags; it is written to a temporary file and renamed into place, so concurrent
    first uses are safe. ``NativeDriverUnavailable`` says in one line why it cannot be.
    """
    if not sys.platform.startswith("linux"):
        raise NativeDriverUnavailable(
            f"{source.name} uses epoll: Linux only, not {sys.platform}"
        )
    compiler = find_compiler()
    text = source.read_bytes()
    key = hashlib.sha256(b"\0".join([text, compiler.encode(), *map(str.encode, cflags + libs)]))
    binary = cache_dir() / f"{name}-{key.hexdigest()[:16]}"
    if binary.exists():
        return binary
    binary.parent.mkdir(parents=True, exist_ok=True)
    handle, partial = tempfile.mkstemp(prefix=binary.name + ".", dir=binary.parent)
    os.close(handle)
    command = [compiler, *cflags, "-o", partial, str(source), *libs]
    log.info("building %s: %s", source.name, " ".join(command))
    try:
        built = subprocess.run(command, capture_output=True, text=True, timeout=BUILD_TIMEOUT)
        if built.returncode != 0:
            raise NativeDriverUnavailable(
                f"{compiler} could not build {source.name}: {built.stderr.strip()[-2000:]}"
            )
        os.chmod(partial, 0o755)
        os.replace(partial, binary)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise NativeDriverUnavailable(f"building {source.name} failed: {exc}") from None
    finally:
        if os.path.exists(partial):
            os.unlink(partial)
    return binary


PYTHON_DRIVER = (sys.executable, "-m", "benchmarks.driver")
PYTHON_LABEL = "python driver (fallback: it saturates its core before fast servers do)"


def load_driver(prefer: str = "native") -> LoadDriver:
    """The native driver, or the Python one if asked for or if the native one cannot be built.

    ``why_fallback`` then says why, for the caller to show.
    """
    if prefer == "python":
        return LoadDriver(PYTHON_DRIVER, PYTHON_LABEL, fallback=True, why_fallback="asked for")
    try:
        return LoadDriver((str(driver_binary()),), "native driver (C, epoll)", fallback=False)
    except NativeDriverUnavailable as exc:
        return LoadDriver(PYTHON_DRIVER, PYTHON_LABEL, fallback=True, why_fallback=str(exc))


__all__ = [
    "LoadDriver",
    "NativeDriverUnavailable",
    "build_binary",
    "driver_binary",
    "load_driver",
]
