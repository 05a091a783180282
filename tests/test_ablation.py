"""``benchmarks.ablation``: each named edit still matches the code it measures, and the
variant it makes still serves (the instruction counts themselves need valgrind)."""

import socket

import pytest

from benchmarks.ablation import ABLATIONS, ALL, CONNECTION, Ablation, Edit, make_variant, table
from upper.server.launcher import ServerProcess


@pytest.mark.parametrize("name", [*ABLATIONS, ALL])
def test_each_ablation_applies_to_the_current_code_and_serves(tmp_path, name):
    chosen = list(ABLATIONS) if name == ALL else [name]
    folder = make_variant(chosen, tmp_path)
    for edit in (edit for ablation in chosen for edit in ABLATIONS[ablation].edits):
        assert edit.new in (folder / edit.path).read_text()
    with ServerProcess("--log-level", "warning", cwd=str(folder)) as server:
        with socket.create_connection(server.address, timeout=10) as client:
            client.sendall(b"hola servidor\n")
            assert client.recv(100) == b"HOLA SERVIDOR\n"


def test_an_edit_that_no_longer_matches_fails_loudly(tmp_path, monkeypatch):
    stale = Edit(CONNECTION, "this line is not in the code", "")
    monkeypatch.setitem(ABLATIONS, "linger", Ablation("nothing", (stale,)))
    with pytest.raises(SystemExit, match="no longer matches"):
        make_variant(["linger"], tmp_path)


def test_the_table_compares_every_row_with_upper():
    results = {"upper": {"pingpong": 1000.0}, "upper without counters": {"pingpong": 900.0}}
    assert table(results, ["pingpong"]).splitlines()[2:] == [
        "| upper | 1,000 (+0.0%) |",
        "| upper without counters | 900 (-10.0%) |",
    ]
