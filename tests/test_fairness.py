"""No connection may hold up the others: a flooding client and a few probes (issue: fairness).

Before the fix, a client that sends and reads as fast as it can kept the server
reading its buffer without ever letting the event loop turn: probes waited for
seconds. The figures (throughput, percentiles) are ``benchmarks/fairness.py``'s;
this test only checks the promise with a wide margin: no probe waits half a second.
"""

from benchmarks.fairness import flood_and_probe
from upper.server.launcher import ServerProcess


def test_a_flooding_client_does_not_hold_up_the_others():
    with ServerProcess("--log-level", "warning") as server:
        result = flood_and_probe(server.address, seconds=2.5, probes=4, interval=0.02)
    assert result["flood_wrong"] == 0, result
    assert result["flood_bytes"] > 10 * len(b"x" * 65536), result  # it really flooded
    assert result["probe_replies"] >= 20, result
    assert result["probe_max_ms"] < 500, result

