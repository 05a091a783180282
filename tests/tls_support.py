"""TLS for the tests: certificates made at test time with ``trustme`` (no key is ever
committed), and ``Transport``, which opens a test's sockets and clients in plain TCP
or over TLS, so one socket-level test covers both."""

import datetime
import socket
from dataclasses import dataclass
from pathlib import Path

import trustme

from upper.client import UpperClient
from upper.client.tls import client_context, shutdown_write


@dataclass(frozen=True)
class Certificates:
    """PEM files: a test CA, a server certificate for 127.0.0.1 and localhost signed by it,
    client certificates (good, expired, and one from another CA)."""

    ca: Path
    server_cert: Path
    server_key: Path
    server_combined: Path  # certificate and key in one file
    client: Path  # certificate and key in one file, signed by ``ca``
    client_expired: Path
    client_other_ca: Path
    other_ca: Path
    other_server: Path  # a server certificate from ``other_ca``, with its key

    def server_args(self, *extra: str) -> tuple[str, ...]:
        return ("--tls-cert", str(self.server_cert), "--tls-key", str(self.server_key), *extra)


def make_certificates(folder: Path) -> Certificates:
    ca, other = trustme.CA(), trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost", "::1")
    client = ca.issue_cert("client@upper.test")
    past = datetime.datetime(2020, 1, 1, tzinfo=datetime.UTC)
    expired = ca.issue_cert("expired@upper.test", not_before=past, not_after=past.replace(month=2))
    stranger = other.issue_cert("stranger@upper.test")
    other_server = other.issue_cert("127.0.0.1", "localhost")

    def write(name: str, blob) -> Path:
        path = folder / name
        blob.write_to_path(str(path))
        return path

    return Certificates(
        ca=write("ca.pem", ca.cert_pem),
        server_cert=write("server.pem", server.cert_chain_pems[0]),
        server_key=write("server.key", server.private_key_pem),
        server_combined=write("server-combined.pem", server.private_key_and_cert_chain_pem),
        client=write("client.pem", client.private_key_and_cert_chain_pem),
        client_expired=write("client-expired.pem", expired.private_key_and_cert_chain_pem),
        client_other_ca=write("client-other.pem", stranger.private_key_and_cert_chain_pem),
        other_ca=write("other-ca.pem", other.cert_pem),
        other_server=write("other-server.pem", other_server.private_key_and_cert_chain_pem),
    )


class Transport:
    """Plain TCP (``certificates`` None) or TLS verified against the test CA.

    TLS sockets refuse a ragged end of stream (``suppress_ragged_eofs=False``): every
    test that reads to EOF over TLS also checks that the server sent close_notify.
    """

    def __init__(self, certificates: Certificates | None) -> None:
        self.certificates = certificates
        self.name = "tls" if certificates else "plain"
        self.context = client_context(str(certificates.ca)) if certificates else None

    def __repr__(self) -> str:
        return self.name

    def server_args(self, *extra: str) -> tuple[str, ...]:
        return self.certificates.server_args(*extra) if self.certificates else extra

    def wrap(self, sock: socket.socket) -> socket.socket:
        if self.context is None:
            return sock
        return self.context.wrap_socket(
            sock, server_hostname="127.0.0.1", suppress_ragged_eofs=False
        )

    def connect(self, address, timeout: float = 10.0) -> socket.socket:
        sock = socket.create_connection(address, timeout=timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            return self.wrap(sock)
        except BaseException:
            sock.close()
            raise

    def client(self, address, **options) -> UpperClient:
        return UpperClient(*address[:2], ssl_context=self.context, **options)

    @staticmethod
    def half_close(sock: socket.socket) -> None:
        """FIN, keeping the TLS session so the replies can still be read."""
        shutdown_write(sock)
