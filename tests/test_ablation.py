"""``benchmarks.ablation``: each variant is a real ``Connection`` subclass that serves, and
takes out what it says (the instruction counts themselves need valgrind)."""

import socket
import subprocess
import sys

import pytest

from benchmarks.ablation import ABLATIONS, ALL, table, variant_class, variant_command
from upper.server.connection import Connection
from upper.server.launcher import ServerProcess


@pytest.mark.parametrize("name", [*ABLATIONS, ALL])
def test_each_ablation_serves(name):
    chosen = list(ABLATIONS) if name == ALL else [name]
    command = [*variant_command(chosen), "--host", "127.0.0.1", "--port", "0"]
    with ServerProcess(command=command) as server:
        with socket.create_connection(server.address, timeout=10) as client:
            client.sendall(b"hola servidor\n")
            assert client.recv(100) == b"HOLA SERVIDOR\n"


def test_the_keyword_variant_looks_at_the_end_of_a_read_only():
    """Its broken promise, in the server: a keyword line inside a read is answered."""
    command = [*variant_command(["keyword"]), "--host", "127.0.0.1", "--port", "0"]
    with ServerProcess(command=command) as server:
        with socket.create_connection(server.address, timeout=10) as client:
            client.sendall(b"a\nDESCONEXION\nb\n")
            received = b""
            while len(received) < 16:
                received += client.recv(100)
            assert received == b"A\nDESCONEXION\nB\n"


def test_a_variant_overrides_only_what_it_takes_out():
    everything = variant_class(list(ABLATIONS))
    assert issubclass(everything, Connection)
    assert everything.fast_reply is not Connection.fast_reply
    assert everything._close_cleanly is not Connection._close_cleanly
    linger = variant_class(["linger"])
    assert linger.fast_reply is Connection.fast_reply
    assert linger._answer is Connection._answer


def test_an_unknown_ablation_is_one_line_and_exit_2():
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.ablated_server", "--ablate", "nothing"],
        capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 2
    assert done.stderr.strip() == "ablated_server: no such ablation: nothing"


def test_the_table_compares_every_row_with_upper():
    results = {"upper": {"pingpong": 1000.0}, "upper without counters": {"pingpong": 900.0}}
    assert table(results, ["pingpong"]).splitlines()[2:] == [
        "| upper | 1,000 (+0.0%) |",
        "| upper without counters | 900 (-10.0%) |",
    ]
