"""``python -m benchmarks.native [--build | DRIVER ARGS]``: build the native driver, run it
(the TLS build when ``ARGS`` ask for ``--tls``)."""

import os
import sys

from benchmarks.native import NativeDriverUnavailable, driver_binary


def main(argv: list[str]) -> int:
    try:
        binary = driver_binary(tls="--tls" in argv or "--tls-cafile" in argv)
    except NativeDriverUnavailable as exc:
        print(f"benchmarks.native: {exc}", file=sys.stderr)
        return 2
    if argv == ["--build"]:
        print(binary)
        return 0
    os.execv(binary, [str(binary), *argv])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
