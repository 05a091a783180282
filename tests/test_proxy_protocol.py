"""--proxy-protocol over real sockets, and end to end through a real HAProxy."""

import logging
import signal
import socket
import subprocess
import time

import pytest
from helpers import eventually, free_port, logged, read_until_eof, require_tool
from test_proxy_header import V1_TCP4, V2_TCP6, inet, v2
from test_reload import Load, reload_and_wait, remember

TIMEOUT = 10.0


def closed_without_reply(sock: socket.socket) -> bool:
    try:
        return sock.recv(100) == b""
    except ConnectionResetError:
        return True


@pytest.fixture
def proxied(threaded_server, connect, caplog):
    """An in-thread server requiring a PROXY header; returns (server, open_socket)."""
    caplog.set_level(logging.DEBUG, logger="upper.server")

    def start(**options):
        server = threaded_server(proxy_protocol="any", **options)
        return server, lambda: connect(server.address, timeout=TIMEOUT)

    return start


def test_v1_header_then_session_in_the_same_segment(proxied, caplog):
    server, open_socket = proxied()
    sock = open_socket()
    sock.sendall(V1_TCP4 + b"hola\nDESCONEXION\n")
    assert read_until_eof(sock) == b"HOLA\n"
    assert "192.0.2.7:56324: PROXY v1 PROXY" in caplog.text
    assert server.wait_until(lambda server: server.stats.lines_in == 2)


def test_v2_header_split_from_the_session_and_the_real_address_is_logged(proxied, caplog):
    server, open_socket = proxied()
    sock = open_socket()
    for part in (V2_TCP6[:5], V2_TCP6[5:20], V2_TCP6[20:] + b"ho", b"la\n"):
        sock.sendall(part)
        time.sleep(0.02)
    assert sock.recv(100) == b"HOLA\n"
    sock.sendall(b"DESCONEXION\n")
    assert read_until_eof(sock) == b""
    sock.close()  # the server lingers until the client closes too
    assert eventually(lambda: "[2001:db8::7]:56324: closed" in caplog.text)


def test_local_and_unknown_keep_the_socket_address(proxied, caplog):
    _server, open_socket = proxied()
    for header in (v2(command=0x0, addresses=inet()), b"PROXY UNKNOWN\r\n"):
        sock = open_socket()
        sock.sendall(header + b"hola\nDESCONEXION\n")
        assert read_until_eof(sock) == b"HOLA\n"
        port = sock.getsockname()[1]
        sock.close()
        assert eventually(lambda port=port: f"127.0.0.1:{port}: closed" in caplog.text)


@pytest.mark.parametrize(
    "data", [b"hola\n", b"PROXY TCP4 nonsense\r\n", b"PROXY " + b"x" * 200], ids=str
)
def test_missing_or_bad_headers_close_without_a_reply(proxied, caplog, data):
    server, open_socket = proxied()
    sock = open_socket()
    sock.sendall(data)
    assert closed_without_reply(sock)
    assert server.wait_until(lambda server: server.stats.proxy_rejected_invalid == 1)
    assert server.stats.lines_out == 0
    rejected = logged(caplog, lambda r: "closed:" in r.getMessage() and r.levelname == "INFO")
    assert len(rejected) == 1


def test_a_slow_header_is_closed_at_the_header_timeout(proxied):
    server, open_socket = proxied(proxy_header_timeout=0.3)
    sock = open_socket()
    sock.sendall(V1_TCP4[:10])
    assert closed_without_reply(sock)
    assert server.wait_until(lambda server: server.stats.proxy_rejected_timeout == 1)


def test_sources_outside_the_allow_list_are_closed_without_a_reply(proxied):
    server, open_socket = proxied(proxy_allow_from=["10.0.0.0/8"])
    sock = open_socket()
    sock.sendall(V1_TCP4 + b"hola\n")
    assert closed_without_reply(sock)
    assert server.wait_until(lambda server: server.stats.proxy_rejected_source == 1)
    assert server.stats.connections_served == 0


def test_a_graceful_stop_closes_a_connection_still_waiting_for_its_header(proxied):
    server, open_socket = proxied(linger_timeout=0.2)
    sock = open_socket()
    sock.sendall(V1_TCP4[:10])
    assert server.wait_until(lambda server: server.stats.open_connections == 1)
    server.stop()
    assert closed_without_reply(sock)


# -- HAProxy, for real ---------------------------------------------------------------------

HAPROXY_CONFIG = """
global
    maxconn 200
defaults
    mode tcp
    timeout connect 5s
    timeout client 30s
    timeout server 30s
frontend v1
    bind 127.0.0.1:{v1}
    default_backend upper_v1
frontend v2
    bind 127.0.0.1:{v2}
    default_backend upper_v2
backend upper_v1
    server upper 127.0.0.1:{upper} send-proxy
backend upper_v2
    server upper 127.0.0.1:{upper} send-proxy-v2
"""


@pytest.fixture
def haproxy(tmp_path):
    """Start HAProxy in front of a server port; yields start(upper_port) -> (v1, v2) ports."""
    tool = require_tool("haproxy", package="haproxy")
    processes = []

    def start(upper_port: int) -> tuple[int, int]:
        ports = {"v1": free_port(), "v2": free_port(), "upper": upper_port}
        config = tmp_path / "haproxy.cfg"
        config.write_text(HAPROXY_CONFIG.format(**ports))
        process = subprocess.Popen(
            [tool, "-db", "-f", str(config)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        processes.append(process)

        def listening() -> bool:
            assert process.poll() is None, process.communicate()[0]
            return all(_listening(ports[name]) for name in ("v1", "v2"))

        assert eventually(listening), "haproxy did not start listening"
        return ports["v1"], ports["v2"]

    yield start
    for process in processes:
        process.send_signal(signal.SIGTERM)
        try:
            process.communicate(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()


def _listening(port: int) -> bool:
    with open("/proc/net/tcp") as table:
        return any(
            line.split()[1].endswith(f":{port:04X}") and line.split()[3] == "0A"
            for line in table.readlines()[1:]
        )


def test_through_haproxy_send_proxy_v1_and_v2(start_server, haproxy):
    server = start_server("--proxy-protocol", "any", "--log-level", "debug")
    clients = []
    for port in haproxy(server.port):
        with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock:
            clients.append(sock.getsockname()[1])
            sock.sendall(b"hola haproxy\n")
            assert sock.recv(100) == b"HOLA HAPROXY\n"
            sock.sendall(b"adios\nDESCONEXION\n")
            # The clean close (FIN after every reply, never a reset) survives the proxy.
            assert read_until_eof(sock) == b"ADIOS\n"
    code, _stdout, stderr = server.stop_and_collect()
    assert code == 0, stderr
    # The server logs the client's own address (its port tells it from HAProxy's).
    v1_client, v2_client = clients
    assert f"127.0.0.1:{v1_client}: PROXY v1 PROXY" in stderr, stderr
    assert f"127.0.0.1:{v2_client}: PROXY v2 PROXY" in stderr, stderr


def test_reloads_behind_haproxy_fail_no_session(start_server, seen_workers, haproxy):
    # What an operator does: HAProxy in front (v2), workers, a deploy by SIGHUP, under load.
    server = start_server("--workers", "2", "--proxy-protocol", "v2", "--log-level", "info")
    _v1_port, v2_port = haproxy(server.port)
    with Load(("127.0.0.1", v2_port)) as load:
        load.wait_for_sessions(20)
        for _ in range(2):
            remember(seen_workers, reload_and_wait(server, 2))
            load.wait_for_sessions(20)
    assert load.failures == []
    code, _stdout, stderr = server.stop_and_collect()
    assert code == 0, stderr
    assert "reloaded: workers" in stderr
    assert ": closed: " not in stderr  # no header was refused (logged at info)
