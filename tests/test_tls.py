"""What TLS adds to the server: its flags, failed handshakes, mutual TLS, close_notify,
and the connection's rules (hibernation, idle timeout, backpressure, shutdown) over TLS.

The protocol's own rules over TLS are tested by test_server_sockets.py and
test_fuzz_live.py, which run in plain TCP and over TLS.
"""

import logging
import signal
import socket
import ssl
import subprocess

import pytest
from helpers import SOON, logged, read_exactly, read_until_eof, require_tool
from tls_support import Transport

from upper.client.tls import client_context
from upper.server.tls import server_context

WAIT = 10.0


@pytest.fixture
def tls(certificates):
    return Transport(certificates)


@pytest.fixture
def tls_threaded(threaded_server, certificates):
    """An in-thread TLS server (its counters are readable), with ``options``."""

    def start(client_ca=None, **options):
        context = server_context(
            str(certificates.server_cert),
            str(certificates.server_key),
            str(client_ca) if client_ca else None,
        )
        return threaded_server(ssl_context=context, **options)

    return start


def raw_connection(address) -> socket.socket:
    return socket.create_connection(address, timeout=WAIT)


def closed_by_server(sock: socket.socket) -> bool:
    """Whatever the server sent (an alert, or nothing), it then closed: EOF or a reset."""
    try:
        while sock.recv(65536):
            pass
    except ConnectionResetError:
        pass
    return True


def handshake_failures(caplog) -> list[logging.LogRecord]:
    return logged(caplog, lambda record: "TLS handshake failed" in record.getMessage())


# -- failed handshakes: that connection only, counted, one info line ----------------------------


def test_a_stalled_handshake_is_dropped_at_the_timeout(tls_threaded, tls, caplog):
    caplog.set_level(logging.INFO, logger="upper.server")
    running = tls_threaded(handshake_timeout=0.3)
    with raw_connection(running.address) as silent:  # connects, never sends a ClientHello
        assert closed_by_server(silent)
    assert running.wait_until(lambda server: server.stats.failed_handshakes == 1)
    assert running.wait_until(lambda server: server.stats.open_connections == 0)
    [record] = handshake_failures(caplog)
    assert record.levelno == logging.INFO and record.exc_info is None
    assert "127.0.0.1:" in record.getMessage() and "0.3s" in record.getMessage()


def test_a_slow_trickle_cannot_stretch_the_handshake(tls_threaded):
    # One byte of a ClientHello now and then is no progress: the timeout counts from the accept.
    running = tls_threaded(handshake_timeout=0.5)
    with raw_connection(running.address) as trickle:
        trickle.settimeout(0.1)
        hello = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 40
        closed = False
        for byte in hello:
            try:
                trickle.sendall(bytes([byte]))
                closed = trickle.recv(1) == b""
            except TimeoutError:
                continue
            except (ConnectionResetError, BrokenPipeError):
                closed = True
            if closed:
                break
        assert closed or closed_by_server(trickle)
    assert running.wait_until(lambda server: server.stats.failed_handshakes == 1)


@pytest.mark.parametrize(
    "sent",
    [b"\x00\xff garbage \x16\x03" * 50, b"hola servidor\n"],
    ids=["garbage", "plaintext-client"],
)
def test_garbage_or_a_plaintext_client_fails_that_connection_only(tls_threaded, tls, caplog, sent):
    caplog.set_level(logging.INFO, logger="upper.server")
    running = tls_threaded()
    with tls.connect(running.address) as good:
        good.sendall(b"antes\n")
        assert read_exactly(good, 6) == b"ANTES\n"
        with raw_connection(running.address) as bad:
            bad.sendall(sent)
            assert closed_by_server(bad)
        good.sendall(b"despues\n")
        assert read_exactly(good, 8) == b"DESPUES\n"
    assert running.wait_until(lambda server: server.stats.failed_handshakes == 1)
    assert running.stats.errors == 0
    [record] = handshake_failures(caplog)
    assert record.levelno == logging.INFO and record.exc_info is None
    if sent.startswith(b"hola"):
        assert "plaintext" in record.getMessage()


def test_a_client_that_leaves_mid_handshake_is_counted_not_an_error(tls_threaded):
    running = tls_threaded()
    with raw_connection(running.address) as leaving:
        leaving.sendall(b"\x16\x03\x01")
    assert running.wait_until(lambda server: server.stats.failed_handshakes == 1)
    assert running.stats.errors == 0


# -- mutual TLS ------------------------------------------------------------------------------


def mutual_client(certificates, client_cert) -> ssl.SSLContext:
    return client_context(str(certificates.ca), cert=str(client_cert) if client_cert else None)


def test_mutual_tls_accepts_a_client_certificate_signed_by_the_ca(tls_threaded, certificates):
    running = tls_threaded(client_ca=certificates.ca)
    context = mutual_client(certificates, certificates.client)
    with raw_connection(running.address) as raw:
        with context.wrap_socket(raw, server_hostname="127.0.0.1") as sock:
            sock.sendall(b"con certificado\n")
            assert read_exactly(sock, 16) == b"CON CERTIFICADO\n"
    assert running.stats.failed_handshakes == 0


@pytest.mark.parametrize("which", ["none", "other-ca", "expired"])
def test_mutual_tls_refuses_a_missing_unknown_or_expired_certificate(
    tls_threaded, certificates, caplog, which
):
    caplog.set_level(logging.INFO, logger="upper.server")
    client_cert = {
        "none": None,
        "other-ca": certificates.client_other_ca,
        "expired": certificates.client_expired,
    }[which]
    running = tls_threaded(client_ca=certificates.ca)
    context = mutual_client(certificates, client_cert)
    with raw_connection(running.address) as raw:
        # TLS 1.3: the client's handshake is over before the server checks its certificate;
        # the refusal is the alert its first read gets.
        with pytest.raises((ssl.SSLError, ConnectionResetError, BrokenPipeError)):
            with context.wrap_socket(
                raw, server_hostname="127.0.0.1", suppress_ragged_eofs=False
            ) as sock:
                sock.sendall(b"sin permiso\n")
                sock.recv(100)
    assert running.wait_until(lambda server: server.stats.failed_handshakes == 1)
    assert running.stats.lines_in == 0
    [record] = handshake_failures(caplog)
    assert "certificate" in record.getMessage() and record.exc_info is None


# -- the end of a session: close_notify, then FIN, never a reset -------------------------------


def test_desconexion_sends_every_reply_then_close_notify_then_fin(tls_threaded, certificates):
    running = tls_threaded()
    context = client_context(str(certificates.ca))
    with raw_connection(running.address) as raw:
        sock = context.wrap_socket(raw, server_hostname="127.0.0.1", suppress_ragged_eofs=False)
        sock.sendall(b"uno\ndos\nDESCONEXION\nnunca\n")
        # recv() returns b"" only at close_notify; a ragged end raises SSLEOFError.
        assert read_until_eof(sock) == b"UNO\nDOS\n"
        plain = sock.unwrap()  # our close_notify; the server is still draining
        assert plain.recv(100) == b"", "FIN after close_notify, and nothing else"


def test_a_client_close_notify_is_its_end_of_input(tls_threaded, certificates):
    running = tls_threaded()
    context = client_context(str(certificates.ca))
    with raw_connection(running.address) as raw:
        sock = context.wrap_socket(raw, server_hostname="127.0.0.1")
        sock.sendall(b"ultima sin salto")
        assert read_exactly(sock, 16) == b"ULTIMA SIN SALTO"
        plain = sock.unwrap()  # close_notify, and the server's close_notify back
        assert plain.recv(100) == b""
    assert running.wait_until(lambda server: server.stats.open_connections == 0)
    assert running.stats.errors == 0


def test_a_ragged_end_from_the_client_still_gets_every_reply(tls_threaded, tls):
    running = tls_threaded()
    with tls.connect(running.address) as sock:
        sock.sendall(b"a\nb")
        tls.half_close(sock)  # FIN without close_notify
        assert read_until_eof(sock) == b"A\nB"
    assert running.wait_until(lambda server: server.stats.open_connections == 0)
    assert running.stats.errors == 0


# -- the connection's other rules, over TLS ---------------------------------------------------


def test_a_hibernated_tls_connection_wakes_with_its_session(tls_threaded, tls):
    running = tls_threaded(hibernate_after=0.05)
    with tls.connect(running.address) as sock:
        sock.sendall(b"antes\n")
        assert read_exactly(sock, 6) == b"ANTES\n"
        assert running.wait_until(lambda server: running.live_greenlets() <= 1)
        sock.sendall(b"despues\n")
        assert read_exactly(sock, 8) == b"DESPUES\n"


def test_idle_timeout_over_tls_ends_with_close_notify(tls_threaded, tls):
    running = tls_threaded(idle_timeout=0.3)
    with tls.connect(running.address) as sock:
        sock.sendall(b"y me quedo callado\n")
        assert read_until_eof(sock) == b"Y ME QUEDO CALLADO\n"  # strict: close_notify came
    assert running.wait_until(lambda server: server.stats.idle_timeouts == 1)


def test_a_tls_client_that_does_not_read_holds_back_the_server(tls_threaded, tls):
    """Backpressure: the server stops reading while a reply cannot be sent."""
    running = tls_threaded()
    chunk = b"x" * 65536
    with tls.connect(running.address) as sock:
        sock.settimeout(1.0)
        sent = 0
        try:
            while sent < 256 * 1024 * 1024:
                sock.sendall(chunk)
                sent += len(chunk)
        except TimeoutError:
            pass
        assert sent < 256 * 1024 * 1024, "the server read everything: no backpressure"
        held = running.stats.bytes_in
        assert held < sent
        # Reading the replies lets the server go on.
        sock.settimeout(WAIT)
        read_exactly(sock, 4 * 1024 * 1024)
        assert running.wait_until(lambda server: server.stats.bytes_in > held)


def test_graceful_shutdown_over_tls_loses_nothing(start_server, certificates, tls):
    server = start_server("--log-level", "info", *certificates.server_args())
    lines = b"".join(b"linea %d\n" % i for i in range(20_000))
    sockets = [tls.connect(server.address) for _ in range(5)]
    stalled = raw_connection(server.address)  # mid-handshake when the stop comes
    try:
        for sock in sockets:
            sock.sendall(lines)
            read_exactly(sock, 8)  # the server has started on this one
        server.send_signal(signal.SIGTERM)
        for sock in sockets:
            # Every line read has its reply (what was still in flight is not read: the
            # server finishes with what it has), then close_notify (strict sockets).
            received = b"LINEA 0\n" + read_until_eof(sock)
            assert lines.upper().startswith(received)
        server.process.wait(timeout=SOON)
        code, _, stderr = server.stop_and_collect(timeout=SOON)  # exited: no second signal
    finally:
        stalled.close()
        for sock in sockets:
            sock.close()
    assert code == 0
    assert "Traceback" not in stderr
    assert "still open" not in stderr  # the stalled handshake was closed at once


# -- the server's flags ------------------------------------------------------------------------


def test_the_key_may_sit_in_the_certificate_file(start_server, certificates, tls):
    server = start_server("--log-level", "warning", "--tls-cert", str(certificates.server_combined))
    with tls.client(server.address) as client:
        assert client.upper("una sola pieza") == "UNA SOLA PIEZA"


@pytest.mark.parametrize(
    ("flags", "mentions"),
    [
        (
            lambda c, tmp: ["--tls-cert", str(tmp / "missing.pem"), "--tls-key", str(c.server_key)],
            ["missing.pem", "cannot read"],
        ),
        (
            lambda c, tmp: ["--tls-cert", str(c.server_cert), "--tls-key", str(tmp / "nokey.pem")],
            ["nokey.pem", "cannot read"],
        ),
        (
            lambda c, tmp: ["--tls-cert", str(c.server_cert), "--tls-key", str(c.other_server)],
            ["does not match"],
        ),
        (lambda c, tmp: ["--tls-cert", str(c.server_cert)], ["server.pem", "private key"]),
        (
            lambda c, tmp: ["--tls-cert", str(c.ca), "--tls-key", str(c.server_key)],
            ["does not match"],
        ),
        (
            lambda c, tmp: [*c.server_args(), "--tls-client-ca", str(c.server_key)],
            ["--tls-client-ca"],
        ),
    ],
    ids=["missing-cert", "missing-key", "wrong-key", "no-key", "ca-as-cert", "bad-client-ca"],
)
def test_a_bad_certificate_or_key_is_one_line_and_exit_1(certificates, tmp_path, flags, mentions):
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-m", "upper_server", "--port", "0", *flags(certificates, tmp_path)],
        capture_output=True,
        timeout=30,
        stdin=subprocess.DEVNULL,
    )
    stderr = result.stderr.decode()
    assert result.returncode == 1, stderr
    assert result.stdout == b""
    assert "Traceback" not in stderr
    [line] = stderr.strip().splitlines()
    assert line.startswith("python -m upper_server: error:")
    for mention in mentions:
        assert mention in line, line


@pytest.mark.parametrize("flag", ["--tls-key", "--tls-client-ca"])
def test_tls_options_without_a_certificate_are_usage_errors(flag):
    from upper.server.cli import parse_args

    with pytest.raises(SystemExit) as exited:
        parse_args([flag, "some.pem"])
    assert exited.value.code == 2


# -- behind a balancer: the PROXY header in the clear, then TLS -------------------------------


def test_a_proxy_header_then_tls(tls_threaded, certificates, caplog):
    caplog.set_level(logging.INFO, logger="upper.server")
    running = tls_threaded(proxy_protocol="v1")
    context = client_context(str(certificates.ca))
    with raw_connection(running.address) as raw:
        raw.sendall(b"PROXY TCP4 203.0.113.7 127.0.0.1 40000 5000\r\n")
        with context.wrap_socket(raw, server_hostname="127.0.0.1") as sock:
            sock.sendall(b"detras del balanceador\n")
            assert read_exactly(sock, 23) == b"DETRAS DEL BALANCEADOR\n"
    # A failed handshake after the header names the client the header names.
    with raw_connection(running.address) as raw:
        raw.sendall(b"PROXY TCP4 203.0.113.8 127.0.0.1 40001 5000\r\nhola en claro\n")
        assert closed_by_server(raw)
    assert running.wait_until(lambda server: server.stats.failed_handshakes == 1)
    [record] = handshake_failures(caplog)
    assert record.getMessage().startswith("203.0.113.8:40001: ")


def test_a_refused_renegotiation_is_counted_apart_and_logged_at_info(
    tls_threaded, certificates, caplog
):
    """openssl s_client's ``R`` asks for a TLS 1.2 renegotiation; OpenSSL refuses it. That is a
    refused handshake, not a server error: its own counter, an info line, the connection closed."""
    openssl = require_tool("openssl", "openssl")
    caplog.set_level(logging.INFO, logger="upper.server")
    running = tls_threaded()
    host, port = running.address[:2]
    client = subprocess.Popen(
        [openssl, "s_client", "-tls1_2", "-connect", f"{host}:{port}", "-CAfile",
         str(certificates.ca)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    try:
        client.stdin.write(b"hola\n")
        client.stdin.flush()
        assert running.wait_until(lambda server: server.stats.lines_in == 1)
        client.stdin.write(b"R\n")  # s_client: renegotiate
        client.stdin.flush()
        assert running.wait_until(lambda server: server.stats.refused_renegotiations == 1)
        assert running.wait_until(lambda server: server.stats.open_connections == 0)
    finally:
        output = client.communicate(timeout=WAIT)[0]
    assert b"HOLA" in output and b"RENEGOTIATING" in output
    assert running.server.stats.errors == 0
    assert running.server.stats.failed_handshakes == 0
    [record] = logged(caplog, lambda record: "renegotiation" in record.getMessage())
    assert record.levelno == logging.INFO and record.exc_info is None
    assert record.getMessage().startswith("127.0.0.1:")
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
