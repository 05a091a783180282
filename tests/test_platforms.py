"""The server on platforms CI does not have, simulated; and a host name with two addresses.

CI runs Linux only. Each test here starts the real ``upper.server`` command line
in a subprocess whose interpreter first loses what another platform lacks
(``resource`` on Windows, ``os.fork`` on Windows, ``os.sched_getaffinity`` and
``signal.sigtimedwait`` on macOS, ``prctl`` everywhere but Linux) or gains what
another machine has (``localhost`` naming both 127.0.0.1 and ::1, macOS's
open-file limits), then checks what a user would see.
"""

import socket
import subprocess
import sys

import psutil
import pytest
from helpers import (
    answers,
    assert_a_killed_worker_is_replaced,
    assert_workers_die_with_their_parent,
    process_alive,
    wait_for_workers,
)
from servers import ServerProcess

pytestmark = pytest.mark.timeout(90)

RUN_TIMEOUT = 30.0

NO_RESOURCE = "sys.modules['resource'] = None"  # import resource -> ImportError, as on Windows
NO_FORK = "del os.fork"
NO_AFFINITY = "del os.sched_getaffinity"
NO_SIGTIMEDWAIT = "del signal.sigtimedwait"
NO_PRCTL = (
    # No libc call can be made (there is no prctl off Linux): ctypes.CDLL fails.
    "import ctypes\n"
    "def _no_libc(*args, **kwargs):\n"
    "    raise OSError('simulated: no libc')\n"
    "ctypes.CDLL = _no_libc"
)
WINDOWS = "\n".join([NO_RESOURCE, NO_FORK, NO_AFFINITY, NO_SIGTIMEDWAIT, NO_PRCTL])
MACOS = "\n".join([NO_AFFINITY, NO_SIGTIMEDWAIT, NO_PRCTL])

DUAL_STACK_NAME = "dual-stack.upper.test"
DUAL_STACK = f"""
import socket
_real_getaddrinfo = socket.getaddrinfo
def _getaddrinfo(host, port, family=0, type=0, proto=0, flags=0):
    # A stock Debian /etc/hosts: the name is both 127.0.0.1 and ::1 (IPv6 first).
    if host == {DUAL_STACK_NAME!r}:
        return [
            info
            for address in ("::1", "127.0.0.1")
            for info in _real_getaddrinfo(address, port, family, type, proto, flags)
        ]
    return _real_getaddrinfo(host, port, family, type, proto, flags)
socket.getaddrinfo = _getaddrinfo
"""

MACOS_OPEN_FILES = """
import types
# macOS: the hard limit is unlimited, the soft one 256, and setrlimit refuses
# anything above the per-process maximum (kern.maxfilesperproc).
resource = types.ModuleType("resource")
resource.RLIMIT_NOFILE = 8
resource.RLIM_INFINITY = 2**63 - 1
_limits = {"soft": 256}
def getrlimit(which):
    return _limits["soft"], resource.RLIM_INFINITY
def setrlimit(which, limits):
    soft, hard = limits
    if soft > 10240:
        raise ValueError("current limit exceeds maximum limit")
    _limits["soft"] = soft
resource.getrlimit, resource.setrlimit = getrlimit, setrlimit
sys.modules["resource"] = resource
"""


def simulated(patch: str, code: str = "from upper.server.cli import run\nrun()") -> list[str]:
    """A Python command line that applies ``patch``, then runs ``code`` (the server's CLI)."""
    return [sys.executable, "-c", f"import os, signal, sys\n{patch}\n{code}"]


def server_command(patch: str, *args: str, host: str = "127.0.0.1") -> list[str]:
    return [*simulated(patch), "--host", host, "--port", "0", "--log-level", "warning", *args]


def run(command: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        command, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=RUN_TIMEOUT
    )


def assert_serves_then_stops_cleanly(server: ServerProcess) -> None:
    assert answers(server.address)
    code, _stdout, stderr = server.stop_and_collect()
    assert code == 0, stderr
    assert "Traceback" not in stderr, stderr


# -- Windows -----------------------------------------------------------------------------


def test_without_resource_the_server_starts_and_serves(start_server):
    assert_serves_then_stops_cleanly(start_server(command=server_command(NO_RESOURCE)))


def test_without_resource_the_connection_limit_has_a_default():
    result = run(
        simulated(
            NO_RESOURCE,
            "from upper.server.limits import default_max_connections, raise_open_file_limit\n"
            "print(raise_open_file_limit(), default_max_connections())",
        )
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["None", "10000"]


@pytest.mark.parametrize("workers", ["2", "0"])
def test_workers_without_fork_is_one_line_and_exit_2(workers):
    patch = WINDOWS + "\nos.cpu_count = lambda: 4"  # --workers 0 would mean 4 workers
    result = run(server_command(patch, "--workers", workers))
    assert result.returncode == 2, result
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("upper-server: error: argument --workers:"), result.stderr  # -c
    assert "fork" in last and "--workers 1" in last
    assert result.stdout == ""


def test_windows_single_process_serves(start_server):
    assert_serves_then_stops_cleanly(start_server(command=server_command(WINDOWS)))


# -- macOS -------------------------------------------------------------------------------


def test_workers_zero_without_sched_getaffinity_uses_the_cpu_count(start_server, seen_workers):
    patch = NO_AFFINITY + "\nos.cpu_count = lambda: 2"
    server = start_server(command=server_command(patch, "--workers", "0"))
    seen_workers.update(wait_for_workers(psutil.Process(server.pid), 2))
    assert_serves_then_stops_cleanly(server)


def test_workers_without_sigtimedwait_or_prctl_are_supervised(start_server, seen_workers):
    server = start_server(command=server_command(MACOS, "--workers", "2"))
    assert_a_killed_worker_is_replaced(server, seen_workers)
    code, _stdout, stderr = server.stop_and_collect()
    assert code == 0, stderr
    assert "Traceback" not in stderr, stderr
    assert not [pid for pid, created in seen_workers.items() if process_alive(pid, created)]


def test_workers_without_prctl_die_with_their_parent(start_server, seen_workers):
    server = start_server(command=server_command(MACOS, "--workers", "2"))
    assert_workers_die_with_their_parent(server, seen_workers)


def test_open_file_limit_is_raised_to_what_macos_allows():
    result = run(
        simulated(
            MACOS_OPEN_FILES,
            "from upper.server.limits import default_max_connections, raise_open_file_limit\n"
            "print(raise_open_file_limit(), default_max_connections())",
        )
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["10240", "10140"]


@pytest.mark.parametrize(
    "patch, limit", [(MACOS_OPEN_FILES, 10140), (NO_RESOURCE, 10000)], ids=["macos", "windows"]
)
def test_the_server_serves_as_many_connections_as_the_platform_allows(start_server, patch, limit):
    server = start_server(command=[*server_command(patch), "--log-level", "debug"])
    assert answers(server.address)
    code, _stdout, stderr = server.stop_and_collect()
    assert code == 0, stderr
    assert f"at most {limit} connections" in stderr, stderr


# -- a host name that resolves to both families ------------------------------------------


def test_a_host_name_listens_on_every_address_it_resolves_to(start_server):
    server = start_server(command=server_command(DUAL_STACK, host=DUAL_STACK_NAME))
    port = server.port
    assert server.banner == f"upper_server listening on [::1]:{port} 127.0.0.1:{port}"
    assert sorted(server.addresses) == [("127.0.0.1", port), ("::1", port)]
    for address in server.addresses:
        assert answers(address)
    assert_serves_then_stops_cleanly(server)


def test_every_address_is_shared_by_the_workers(start_server, seen_workers):
    server = start_server(
        command=server_command(DUAL_STACK, "--workers", "2", host=DUAL_STACK_NAME)
    )
    seen_workers.update(wait_for_workers(psutil.Process(server.pid), 2))
    assert len(server.addresses) == 2
    for address in server.addresses:
        for number in range(4):
            assert answers(address, f"cliente {number}")
    code, _stdout, stderr = server.stop_and_collect()
    assert code == 0, stderr


def test_one_address_in_use_fails_the_whole_start_with_one_line():
    with socket.socket(socket.AF_INET6) as taken:
        taken.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        taken.bind(("::1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        command = [*simulated(DUAL_STACK), "--host", DUAL_STACK_NAME, "--port", port]
        result = run(command)
    assert result.returncode == 1, result
    assert result.stderr.strip().splitlines() == [
        f"upper-server: error: address {DUAL_STACK_NAME}:{port} is already in use"
    ]
