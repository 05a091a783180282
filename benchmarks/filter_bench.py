"""Throughput of ``python -m upper_client`` as a Unix filter.

    python -m benchmarks.filter_bench [--megabytes 100] [--runs 3] [--tls]

Writes a text file (mixed ASCII and Spanish/German text, so both of the
server's uppercase paths run), starts ``python -m upper_server`` on a free port,
times ``python -m upper_client < file > out`` end to end (process start-up
included), checks the output byte for byte against ``str.upper()``, and prints
MB/s per run and the median. With ``--tls`` the server gets a test certificate
made for the run (trustme) and the client verifies it (``--cafile``).
"""

import argparse
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time

from upper.server.launcher import ServerProcess

WORDS = ["hola", "servidor", "canción", "ñandú", "straße", "the", "quick", "brown", "fox", "día"]


def write_corpus(path: str, megabytes: float) -> int:
    rng = random.Random(42)
    target = int(megabytes * 1_000_000)
    written = 0
    with open(path, "wb") as out:
        while written < target:
            block = "".join(
                " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 14))) + "\n"
                for _ in range(10_000)
            ).encode()
            out.write(block)
            written += len(block)
    return written


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--megabytes", type=float, default=100.0)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--tls", action="store_true", help="server and client speak TLS")
    args = parser.parse_args()
    server_args: tuple[str, ...] = ()
    client_args: tuple[str, ...] = ()
    if args.tls:
        from benchmarks.bench import tls_files

        cert, key, ca = tls_files()
        server_args = ("--tls-cert", str(cert), "--tls-key", str(key))
        client_args = ("--cafile", str(ca))
    with tempfile.TemporaryDirectory() as workdir:
        source = os.path.join(workdir, "libro.txt")
        result = os.path.join(workdir, "LIBRO.txt")
        size = write_corpus(source, args.megabytes)
        with open(source, "rb") as handle:
            expected = handle.read().decode().upper().encode()
        with ServerProcess("--log-level", "warning", *server_args) as server:
            port = server.port
            rates = []
            for run in range(1, args.runs + 1):
                with open(source, "rb") as stdin, open(result, "wb") as stdout:
                    began = time.perf_counter()
                    subprocess.run(
                        [sys.executable, "-m", "upper_client", "--port", str(port), *client_args],
                        stdin=stdin,
                        stdout=stdout,
                        check=True,
                        timeout=600,
                    )
                    elapsed = time.perf_counter() - began
                with open(result, "rb") as handle:
                    if handle.read() != expected:
                        print(f"run {run}: OUTPUT MISMATCH", file=sys.stderr)
                        return 1
                rates.append(size / elapsed / 1e6)
                print(f"run {run}: {size / 1e6:.1f} MB in {elapsed:.2f} s = {rates[-1]:.1f} MB/s")
            over = " over TLS" if args.tls else ""
            print(f"median{over}: {statistics.median(rates):.1f} MB/s (output verified)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
