"""The native load driver (``benchmarks/native/driver.c``) builds, drives, catches wrong servers.

Every load runs for about half a second against real servers on 127.0.0.1:0
(uvloop's ``Protocol`` peer, the leanest greenlet peer and ``python -m
upper_server``) and must verify replies with no errors. Deliberately wrong
servers (no uppercase; a reset, extra data or no close at all after
DESCONEXION) must be reported as errors of the right kind. No timing
assertions: figures are the benchmark's business.

The driver is compiled with the system C compiler (and, for TLS, OpenSSL's
headers): without them these tests fail under CI and skip elsewhere, saying what
to install (``helpers.missing_debian_tool``); a build that fails for any other
reason always fails.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from helpers import missing_debian_tool

from benchmarks import bench
from benchmarks import driver as python_driver
from benchmarks.native import NativeDriverUnavailable, driver_binary, find_compiler, load_driver
from benchmarks.peers import PEERS
from upper.server.launcher import ServerProcess

RUN_TIMEOUT = 60.0


def build_driver(tls: bool):
    """The driver, built; a missing compiler or OpenSSL header is a missing Debian tool."""
    try:
        compiler = find_compiler()
    except NativeDriverUnavailable as exc:
        missing_debian_tool("a C compiler", "gcc", detail=str(exc))
    if tls and not has_c_header(compiler, "openssl/ssl.h"):
        missing_debian_tool("OpenSSL's headers", "libssl-dev")
    try:
        return driver_binary(tls=tls)
    except NativeDriverUnavailable as exc:
        pytest.fail(f"the native load driver cannot be built: {exc}")


def has_c_header(compiler: str, header: str) -> bool:
    """Whether ``compiler`` finds ``header`` (as .ci/run checks before installing it)."""
    run = subprocess.run([compiler, "-E", "-"], input=f"#include <{header}>\n",
                         capture_output=True, text=True, timeout=RUN_TIMEOUT)
    return run.returncode == 0


@pytest.fixture(scope="module")
def binary():
    return build_driver(tls=False)


def drive(binary, port: int, *args: str, expect_exit: int = 0) -> tuple[dict, list[dict]]:
    """Run the driver; return its JSON result and the phase events it reported."""
    done = subprocess.run(
        [str(binary), "--port", str(port), *args],
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
    )
    assert done.returncode == expect_exit, done.stderr
    events = [json.loads(line) for line in done.stderr.splitlines() if line.startswith("{")]
    return json.loads(done.stdout), events


SERVERS = {
    "uvloop-protocol": PEERS["uvloop-protocol"],
    "gevent-lean": PEERS["gevent-lean"],
    "upper": [sys.executable, "-m", "upper_server", "--log-level", "warning"],
}


@pytest.fixture(scope="module", params=list(SERVERS))
def server_port(request):
    command = [*SERVERS[request.param], "--host", "127.0.0.1", "--port", "0"]
    with ServerProcess(command=command) as server:
        yield server.port


WINDOW = ("--duration", "0.5", "--warmup", "0.2")
LOADS = {
    "pingpong": ("--mode", "pingpong", "--connections", "20"),
    "pipeline": ("--mode", "pipeline", "--connections", "10", "--lines-per-round", "8",
                 "--line-size", "64"),
    "churn": ("--mode", "churn", "--connections", "10", "--messages-per-connection", "3"),
}


def test_the_driver_builds_and_is_cached(binary):
    assert binary.is_file()
    assert driver_binary() == binary  # the second call finds the cached build


@pytest.mark.parametrize("load", list(LOADS))
def test_load_verifies_replies_without_errors(binary, server_port, load):
    result, events = drive(binary, server_port, *WINDOW, *LOADS[load])
    assert result["driver"] == "native" and result["mode"] == LOADS[load][1], result
    assert result["errors"] == 0 and result["error_kinds"] == {}, result
    assert result["messages"] > 0 and result["round_trips"] > 0, result
    assert result["messages"] == result["round_trips"] * result["lines_per_round"], result
    assert 0 < result["p50_us"] <= result["p99_us"] <= result["max_us"], result
    assert result["driver_cpu_s"] >= 0 and "driver_cpu_saturated" in result, result
    if load == "churn":
        assert result["sessions"] > 0, result
    else:
        assert result["connections"] == result["connections_target"], result
    assert [event["event"] for event in events] == ["ramped", "measuring", "measured"]


def test_idle_holds_and_verifies_every_connection(binary, server_port):
    result, events = drive(
        binary, server_port, "--mode", "idle", "--connections", "100", "--duration", "0.2",
        "--warmup", "0", "--settle", "0.3",
    )
    assert result["errors"] == 0, result
    assert result["connections"] == 100 and result["verified"] == 100, result
    assert result["messages"] == 0 and result["settle_s"] == 0.3, result
    # The window began only once the connections had been silent for --settle seconds.
    assert result["quiet_s"] >= 0.3, result
    assert [event["event"] for event in events] == ["ramped", "measuring", "measured"]


def test_result_has_every_key_the_python_driver_reports(binary):
    with ServerProcess(command=[*PEERS["uvloop-protocol"], "--host", "127.0.0.1",
                                "--port", "0"]) as server:
        native, _ = drive(binary, server.port, "--duration", "0.3", "--warmup", "0.1",
                          "--connections", "5", "--quiet")
        python = python_driver.run(port=server.port, connections=5, duration=0.3, warmup=0.1)
    assert python["driver"] == "python" and native["driver"] == "native"
    assert set(python) <= set(native), set(python) - set(native)


WRONG_SERVER = """
import socket, struct, sys, threading
from upper.protocol import uppercase

behaviour = sys.argv[1]
listener = socket.create_server(("127.0.0.1", 0))
print("wrong listening on 127.0.0.1:%d" % listener.getsockname()[1], flush=True)

def serve(conn):
    with conn:
        pending = b""
        while data := conn.recv(65536):
            pending += data
            *lines, pending = pending.split(b"\\n")
            for line in lines:
                if line == b"DESCONEXION":
                    if behaviour == "reset":  # SO_LINGER 0: close() sends RST, no FIN
                        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                        struct.pack("ii", 1, 0))
                        return
                    if behaviour == "chatty":
                        conn.sendall(b"BYE\\n")
                        return
                    if behaviour == "never-close":
                        threading.Event().wait()
                    return
                reply = line if behaviour == "echo" else uppercase(line)
                conn.sendall(reply + b"\\n")

while True:
    conn, _ = listener.accept()
    threading.Thread(target=serve, args=(conn,), daemon=True).start()
"""


def wrong_server(behaviour: str) -> ServerProcess:
    return ServerProcess(command=[sys.executable, "-c", WRONG_SERVER, behaviour])


def test_an_echo_server_is_caught_as_mismatch(binary):
    with wrong_server("echo") as server:
        result, _ = drive(binary, server.port, "--connections", "2", "--duration", "0.5",
                          "--warmup", "0", "--ramp-timeout", "1", "--connect-timeout", "1")
    assert result["messages"] == 0 and result["connections"] == 0, result
    assert result["error_kinds"].get("mismatch", 0) > 0, result


@pytest.mark.parametrize(
    "behaviour, kind",
    [("reset", "reset"), ("chatty", "data_after_keyword"), ("never-close", "timeout")],
)
def test_churn_catches_an_unclean_end_of_session(binary, behaviour, kind):
    with wrong_server(behaviour) as server:
        result, _ = drive(
            binary, server.port, "--mode", "churn", "--connections", "2",
            "--messages-per-connection", "2", "--duration", "1", "--warmup", "0",
            "--timeout", "0.3", "--ramp-timeout", "2",
        )
    assert result["error_kinds"].get(kind, 0) > 0, result
    assert result["sessions"] == 0, result


def test_the_same_server_done_right_gives_clean_sessions(binary):
    """The control for the test above: the wrong server's healthy behaviour passes."""
    with wrong_server("close") as server:
        result, _ = drive(
            binary, server.port, "--mode", "churn", "--connections", "2",
            "--messages-per-connection", "2", "--duration", "0.5", "--warmup", "0",
        )
    assert result["errors"] == 0 and result["sessions"] > 0, result


@pytest.mark.parametrize("host", ["10.1.2.3", "192.0.2.1"])
def test_refuses_a_target_that_is_not_loopback(binary, host):
    done = subprocess.run([str(binary), "--host", host, "--port", "9"], capture_output=True,
                          text=True, timeout=RUN_TIMEOUT)
    assert done.returncode == 2 and done.stdout == ""
    assert "not loopback" in done.stderr and "Traceback" not in done.stderr


def test_a_bad_option_is_one_clear_line(binary):
    done = subprocess.run([str(binary), "--port", "1", "--connections", "many"],
                          capture_output=True, text=True, timeout=RUN_TIMEOUT)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "--connections many" in done.stderr


def test_without_a_compiler_the_python_driver_is_the_labelled_fallback(monkeypatch, tmp_path):
    monkeypatch.setenv("CC", str(tmp_path / "no-such-compiler"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))  # nothing cached there
    with pytest.raises(NativeDriverUnavailable, match="no C compiler"):
        driver_binary()
    chosen = load_driver("native")
    assert chosen.fallback and "fallback" in chosen.label
    assert "no C compiler" in chosen.why_fallback
    assert chosen.command[1:] == ("-m", "benchmarks.driver")


def test_bench_end_to_end_with_the_native_driver(binary, tmp_path):
    output = tmp_path / "results"
    assert bench.main(["--runs", "1", "--loads", "pingpong", "--servers", "gevent-lean",
                       "--scale", "0.25", "--output", str(output)]) == 0
    table = (output / "bench.md").read_text()
    assert "Load driver: native driver" in table and "| gevent-lean |" in table
    saved = json.loads((output / "bench.json").read_text())
    row = saved["results"]["gevent-lean"]["pingpong"]
    assert row["messages_per_s"] > 0 and row["errors"] == 0 and not row["failed"], row
    assert 0 < row["driver_cpu_frac"], row
    # User space is part of the server's CPU, never more.
    assert 0 < row["server_user_us_per_message"] <= row["server_cpu_us_per_message"], row
    assert "| server CPU/msg | of it user |" in table
    assert (output / "bench.png").stat().st_size > 0


CALLGRIND_OUTPUT = """\
version: 1
creator: callgrind-3.19.0
events: Ir
ob=(1) /usr/lib/libpython3.11.so
fl=(1) ceval.c
fn=(1) _PyEval_EvalFrameDefault
10 500
+2 100
cob=(2) /usr/lib/_socket.so
cfl=(2) socketmodule.c
cfn=(2) sock_send
calls=3 40
12 9000
ob=(2)
fl=(2)
fn=(2)
40 300
* 30
fn=(1)
11 70
"""


def test_the_instructions_tool_counts_self_cost_not_call_cost(tmp_path):
    """``benchmarks.instructions`` (instruction counts per message via callgrind) reads its files.

    The 9000 after ``calls=`` is the inclusive cost of the call, already counted
    as the callee's own lines: it must not be added to the caller.
    """
    from benchmarks.instructions import parse_callgrind

    path = tmp_path / "callgrind.out"
    path.write_text(CALLGRIND_OUTPUT)
    profile = parse_callgrind(path)
    assert profile.cost == {"_PyEval_EvalFrameDefault": 670, "sock_send": 330}
    assert profile.objects["sock_send"] == "/usr/lib/_socket.so"
    assert profile.objects["_PyEval_EvalFrameDefault"] == "/usr/lib/libpython3.11.so"


# -- TLS: the OpenSSL build ------------------------------------------------------------------


@pytest.fixture(scope="module")
def tls_binary():
    return build_driver(tls=True)


TLS_SERVERS = {
    "upper": [sys.executable, "-m", "upper_server", "--log-level", "warning"],
    "uvloop-protocol": PEERS["uvloop-protocol"],
}


# Churn over TLS needs close_notify at every session's end: the peers do not linger for it.
@pytest.mark.parametrize(
    ("name", "mode"), [("upper", "pingpong"), ("upper", "churn"), ("uvloop-protocol", "pingpong")]
)
def test_tls_loads_verify_every_reply_with_no_errors(tls_binary, certificates, name, mode):
    command = [*TLS_SERVERS[name], "--host", "127.0.0.1", "--port", "0",
               *certificates.server_args()]  # fmt: skip
    with ServerProcess(command=command) as server:
        result, _ = drive(
            tls_binary, server.port, "--tls-cafile", str(certificates.ca), "--mode", mode,
            "--connections", "10", "--duration", "0.5", "--warmup", "0.1", "--quiet",
        )  # fmt: skip
    assert result["tls"] is True
    assert result["errors"] == 0, result
    assert result["messages"] > 0
    if mode == "churn":
        # Every session ended with close_notify then EOF, or it would be a "tls" error.
        assert result["sessions"] > 0


def test_tls_driver_refuses_a_server_its_ca_did_not_sign(tls_binary, certificates):
    command = [sys.executable, "-m", "upper_server", "--host", "127.0.0.1", "--port", "0",
               "--log-level", "error", "--tls-cert", str(certificates.other_server)]  # fmt: skip
    with ServerProcess(command=command) as server:
        result, _ = drive(
            tls_binary, server.port, "--tls-cafile", str(certificates.ca), "--connections", "2",
            "--duration", "0.3", "--warmup", "0", "--ramp-timeout", "1", "--quiet",
        )  # fmt: skip
    assert result["error_kinds"].get("tls_handshake", 0) > 0, result
    assert result["messages"] == 0


def test_without_a_compiler_these_tests_name_the_package(monkeypatch, tmp_path):
    monkeypatch.setenv("CC", str(tmp_path / "no-such-compiler"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))  # nothing cached there
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="needs a C compiler: apt-get install gcc"):
        build_driver(tls=False)
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="needs a C compiler: apt-get install gcc"):
        build_driver(tls=False)
