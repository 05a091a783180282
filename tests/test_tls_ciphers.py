"""TLS cipher suites: AEAD only by default (no CBC: LUCKY13), widened by --tls-ciphers.

What a real scanner sees is checked with ``sslscan`` (Debian package ``sslscan``)
against the real server on loopback; the context and the flag's mistakes in-process.
"""

import re
import ssl
import subprocess
import sys

import pytest
from helpers import require_tool
from servers import ServerProcess

from upper.server.defaults import TLS_CIPHERS
from upper.server.tls import CertificateFilesError, server_context

TIMEOUT = 10.0
AEAD = re.compile(r"GCM|CHACHA20|CCM")
CBC_SUITE = "ECDHE-ECDSA-AES128-SHA256"
"""A TLS 1.2 CBC suite the standard library's defaults offer (the test key is ECDSA)."""


def offered_suites(address) -> dict[str, set[str]]:
    """{protocol: suites} that ``sslscan`` finds the server at ``address`` accepts."""
    sslscan = require_tool("sslscan", package="sslscan")
    result = subprocess.run(
        [sslscan, "--no-colour", "--xml=-", "--no-heartbleed", f"{address[0]}:{address[1]}"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    offered: dict[str, set[str]] = {}
    for version, cipher in re.findall(
        r'<cipher status="(?:preferred|accepted)" sslversion="([^"]+)"[^>]* cipher="([^"]+)"',
        result.stdout,
    ):
        offered.setdefault(version, set()).add(cipher)
    return offered


def test_sslscan_finds_only_aead_suites_by_default(certificates):
    with ServerProcess(*certificates.server_args(), "--log-level", "warning") as server:
        offered = offered_suites(server.address)
    assert set(offered) == {"TLSv1.2", "TLSv1.3"}, offered
    assert offered["TLSv1.2"] <= set(TLS_CIPHERS.split(":")), offered
    assert all(AEAD.search(suite) for suites in offered.values() for suite in suites), offered


def test_sslscan_finds_cbc_suites_once_widened(certificates):
    args = certificates.server_args("--tls-ciphers", "DEFAULT", "--log-level", "warning")
    with ServerProcess(*args) as server:
        offered = offered_suites(server.address)
    assert CBC_SUITE in offered["TLSv1.2"], offered


def tls12_handshake(context: ssl.SSLContext, ciphers: str, certificates) -> str:
    """The suite a TLS 1.2 client offering only ``ciphers`` agrees on with ``context``,
    the two ends joined by memory BIOs (an ``ssl.SSLError`` when they agree on none)."""
    client = ssl.create_default_context(cafile=str(certificates.ca))
    client.maximum_version = ssl.TLSVersion.TLSv1_2
    client.set_ciphers(ciphers)
    to_server, to_client = ssl.MemoryBIO(), ssl.MemoryBIO()
    client_end = client.wrap_bio(to_client, to_server, server_hostname="127.0.0.1")
    server_end = context.wrap_bio(to_server, to_client, server_side=True)
    pending = [client_end, server_end]
    for _ in range(20):
        for end in list(pending):
            try:
                end.do_handshake()
                pending.remove(end)
            except ssl.SSLWantReadError:
                pass
        if not pending:
            return client_end.cipher()[0]
    raise AssertionError("the handshake did not finish")


def test_a_cbc_only_client_is_refused_by_default(certificates):
    context = server_context(str(certificates.server_cert), str(certificates.server_key))
    with pytest.raises(ssl.SSLError):
        tls12_handshake(context, CBC_SUITE, certificates)
    assert AEAD.search(tls12_handshake(context, "ALL", certificates))


def test_the_widened_context_agrees_on_cbc(certificates):
    context = server_context(
        str(certificates.server_cert), str(certificates.server_key), ciphers="DEFAULT"
    )
    assert tls12_handshake(context, CBC_SUITE, certificates) == CBC_SUITE


def test_a_cipher_list_that_selects_nothing_is_a_setup_error(certificates):
    with pytest.raises(CertificateFilesError, match="--tls-ciphers 'NO-SUCH-SUITE'"):
        server_context(str(certificates.server_cert), ciphers="NO-SUCH-SUITE")


def run_server(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "upper_server", "--port", "0", *args],
        capture_output=True,
        text=True,
        timeout=30,
        stdin=subprocess.DEVNULL,
    )


def test_a_bad_cipher_list_is_one_line_and_exit_1(certificates):
    result = run_server(*certificates.server_args("--tls-ciphers", "NO-SUCH-SUITE"))
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "python -m upper_server: error: --tls-ciphers 'NO-SUCH-SUITE': OpenSSL selects no cipher "
        "suite from it"
    ]


def test_tls_ciphers_needs_a_certificate():
    result = run_server("--tls-ciphers", "DEFAULT")
    assert result.returncode == 2
    assert "argument --tls-ciphers: needs --tls-cert" in result.stderr
    assert "Traceback" not in result.stderr
