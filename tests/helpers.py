"""Small helpers shared by the test modules: reading sockets to a point, a clean environment."""

import os
import socket


def clean_env(**extra: str) -> dict[str, str]:
    """The test's environment without UPPER_* settings, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("UPPER_")}
    env.update(extra)
    return env


def read_until_eof(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes (raises on reset or timeout)."""
    chunks = []
    while chunk := sock.recv(1 << 20):
        chunks.append(chunk)
    return b"".join(chunks)


def read_exactly(sock: socket.socket, size: int) -> bytes:
    data = bytearray()
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionError(f"closed after {len(data)} of {size} bytes: {bytes(data)!r}")
        data += chunk
    return bytes(data)
