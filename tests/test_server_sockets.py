"""Every rule of docs/protocol.md, tried over real sockets against ``python -m upper_server``,
in plain TCP and over TLS (the ``transport`` fixture runs the module twice)."""

import socket
import threading

import psutil
import pytest
from helpers import read_exactly, read_until_eof, send_while_reading
from reference_model import expected_reply

from upper.client.tls import shutdown_write


@pytest.fixture(scope="module")
def server(any_server):
    return any_server


@pytest.fixture
def connect(transport):
    """Open client sockets over the module's transport; all closed after the test."""
    sockets = []

    def open_socket(address, timeout: float = 10.0) -> socket.socket:
        sock = transport.connect(address, timeout)
        sockets.append(sock)
        return sock

    yield open_socket
    for sock in sockets:
        sock.close()


def exchange(connect, server, payload: bytes) -> bytes:
    """Send ``payload``, half-close, and return everything the server sent back."""
    sock = connect(server.address)
    sock.sendall(payload)
    shutdown_write(sock)
    return read_until_eof(sock)


# -- the classroom tester and the TDD checklist ---------------------------------------


def test_classroom_hola_servidor_then_desconexion_closes(server, connect):
    sock = connect(server.address)
    sock.sendall(b"hola servidor\n")
    assert read_exactly(sock, 14) == b"HOLA SERVIDOR\n"
    sock.sendall(b"DESCONEXION\n")
    assert sock.recv(100) == b"", "the server must close the connection after DESCONEXION"


def test_server_socket_is_created_and_listening(server):
    listening = [
        c for c in psutil.Process(server.pid).net_connections("tcp") if c.status == "LISTEN"
    ]
    assert [c.laddr.port for c in listening] == [server.port]
    assert listening[0].laddr.ip == "127.0.0.1"


def test_data_flows_both_ways_and_is_received_on_each_side(server, connect):
    sock = connect(server.address)
    for message in (b"uno\n", b"dos tres\n", b"x" * 5000 + b"\n"):
        sock.sendall(message)
        assert read_exactly(sock, len(message)) == message.upper()


def test_many_clients_at_once(server, transport):
    """500 connections open at the same time, each served, none disturbing another."""
    sockets = [transport.connect(server.address, 20) for _ in range(500)]
    try:
        for index, sock in enumerate(sockets):
            sock.sendall(f"cliente {index}\n".encode())
        for index, sock in enumerate(sockets):
            expected = f"CLIENTE {index}\n".encode()
            assert read_exactly(sock, len(expected)) == expected
        for sock in sockets:
            sock.sendall(b"DESCONEXION\n")
        assert all(sock.recv(10) == b"" for sock in sockets)
    finally:
        for sock in sockets:
            sock.close()


def test_many_clients_in_threads_with_the_library(server, transport):
    results, errors = {}, []

    def session(number: int) -> None:
        try:
            with transport.client(server.address, timeout=20) as client:
                results[number] = [client.upper(f"hilo {number} línea {i}") for i in range(20)]
                client.disconnect()
        except Exception as exc:  # collected: a failing thread must fail the test
            errors.append(exc)

    threads = [threading.Thread(target=session, args=(n,)) for n in range(50)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not errors
    assert results == {n: [f"HILO {n} LÍNEA {i}" for i in range(20)] for n in range(50)}


def test_no_descriptors_leak_after_clients_leave(start_server, transport):
    server = start_server("--log-level", "warning", *transport.server_args())
    before = server.open_descriptors()
    sockets = [transport.connect(server.address, 10) for _ in range(200)]
    for sock in sockets[:100]:
        sock.sendall(b"hola\nDESCONEXION\n")
    for sock in sockets[100:150]:
        sock.sendall(b"a medias")  # vanishes mid-line
    for sock in sockets[150:]:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    for sock in sockets:
        sock.close()  # the last 50 reset the connection
    with transport.client(server.address) as probe:  # the server still serves
        assert probe.upper("sigo aquí") == "SIGO AQUÍ"
    deadline_checks = 200
    while server.open_descriptors() != before and deadline_checks:
        threading.Event().wait(0.05)
        deadline_checks -= 1
    assert server.open_descriptors() == before


# -- docs/protocol.md, rule by rule ---------------------------------------------------------


@pytest.mark.parametrize(
    ("sent", "expected"),
    [
        (b"hola servidor\n", b"HOLA SERVIDOR\n"),
        (b"hola\r\n", b"HOLA\r\n"),
        (b"a\nb\nDESCONEXION\nc\n", b"A\nB\n"),
        (b"abc\xff\n", b"ABC\xff\n"),
        (b"hola", b"HOLA"),
        (b"desconexion\n", b"DESCONEXION\n"),
        ("canción straße ﬁ ǆ\n".encode(), "CANCIÓN STRASSE FI Ǆ\n".encode()),
        (b"\n\n", b"\n\n"),
        (b"\xc3\x28 \xed\xa0\x80 \xf0\x9f\n", b"\xc3\x28 \xed\xa0\x80 \xf0\x9f\n"),
        (b"DESCONEXION\r\nnunca\n", b""),
        (b" DESCONEXION\nDESCONEXIONES\nDESCONEXION \nla DESCONEXION\n",
         b" DESCONEXION\nDESCONEXIONES\nDESCONEXION \nLA DESCONEXION\n"),
        (b"ultima", b"ULTIMA"),
        (b"fin\nDESCONEXION", b"FIN\n"),
    ],
    ids=[
        "example-hola-servidor",
        "example-crlf-kept",
        "example-desconexion-ends",
        "example-invalid-utf8-unchanged",
        "example-no-newline-streamed",
        "example-lowercase-keyword-is-text",
        "unicode-full-case-mapping",
        "empty-lines",
        "invalid-sequences-unchanged",
        "crlf-keyword-ends",
        "keyword-look-alikes-are-text",
        "eof-last-line-without-lf",
        "eof-final-keyword-without-lf",
    ],
)
def test_protocol_examples(server, connect, sent, expected):
    assert exchange(connect, server, sent) == expected
    assert expected == expected_reply(sent)


def test_replies_come_in_order_when_pipelined(server, connect):
    lines = [f"línea número {i}\n".encode() for i in range(5000)]
    payload = b"".join(lines) + b"DESCONEXION\n"
    expected = b"".join(line.decode().upper().encode() for line in lines)
    assert exchange(connect, server, payload) == expected


def test_streaming_answers_before_the_newline(server, connect):
    sock = connect(server.address)
    sock.sendall(b"hola")
    assert read_exactly(sock, 4) == b"HOLA"
    sock.sendall(b" mundo")
    assert read_exactly(sock, 6) == b" MUNDO"
    sock.sendall(b"\n")
    assert read_exactly(sock, 1) == b"\n"


def test_byte_at_a_time_with_utf8_split_across_segments(server, connect):
    text = "ñandú canción straße ǆ €\n".encode()
    sock = connect(server.address)
    received = bytearray()
    for position in range(len(text)):
        sock.sendall(text[position : position + 1])
    shutdown_write(sock)
    received += read_until_eof(sock)
    assert bytes(received) == "ÑANDÚ CANCIÓN STRASSE Ǆ €\n".encode()


def test_incomplete_character_is_held_until_complete(server, connect):
    sock = connect(server.address)
    sock.sendall(b"a\xc3")
    assert read_exactly(sock, 1) == b"A"
    sock.sendall(b"\xb1\n")
    assert read_exactly(sock, 3) == "Ñ\n".encode()


@pytest.mark.parametrize("split_at", range(1, 12))
def test_keyword_split_across_segments_ends_session(server, connect, split_at):
    sock = connect(server.address)
    keyword_line = b"DESCONEXION\n"
    sock.sendall(b"antes\n" + keyword_line[:split_at])
    assert read_exactly(sock, 6) == b"ANTES\n"
    sock.sendall(keyword_line[split_at:] + b"despues\n")
    assert read_until_eof(sock) == b""


def test_keyword_prefix_is_released_when_the_line_turns_out_different(server, connect):
    sock = connect(server.address)
    sock.sendall(b"DESCONEX")
    sock.sendall(b"IONES\n")
    assert read_exactly(sock, 14) == b"DESCONEXIONES\n"
    sock.sendall(b"DESCONEXION\r")
    sock.sendall(b"x\n")
    assert read_exactly(sock, 14) == b"DESCONEXION\rX\n"


def test_long_line_without_newline_streams_in_bounded_memory(start_server, transport):
    """A 32 MiB line with no LF comes back as it goes, and the server's RSS stays flat."""
    server = start_server("--log-level", "warning", *transport.server_args())
    process = psutil.Process(server.pid)
    chunk = b"abcdefghijklmnopqrstuvwxyz012345" * 2048  # 64 KiB
    total = 32 * 1024 * 1024
    with transport.connect(server.address, 20) as sock:
        # Warm up, so allocator start-up doesn't count as growth.
        sock.sendall(chunk)
        read_exactly(sock, len(chunk))
        baseline = process.memory_info().rss
        received = 0
        sent = len(chunk)
        expected_chunk = chunk.upper()
        peak = baseline
        while sent < total:
            sock.sendall(chunk)
            sent += len(chunk)
            reply = read_exactly(sock, len(chunk))
            assert reply == expected_chunk
            received += len(reply)
            if sent % (4 * 1024 * 1024) == 0:
                peak = max(peak, process.memory_info().rss)
        assert received == total - len(chunk)
        sock.sendall(b"\nDESCONEXION\n")
        assert read_until_eof(sock) == b"\n"
    assert peak - baseline < 8 * 1024 * 1024, f"server RSS grew by {peak - baseline} bytes"


def test_bulk_lines_then_keyword_then_megabytes_more_never_reset(server, transport):
    """10,000 lines + DESCONEXION + megabytes more in one write: all replies, then EOF."""
    lines = b"".join(b"mensaje %d\n" % i for i in range(10_000))
    trailing = b"esto no se contesta\n" * 150_000  # ~3 MB the server must discard
    expected = lines.upper()
    with transport.connect(server.address, 20) as sock:
        # ConnectionResetError would fail the test
        received = send_while_reading(sock, lines + b"DESCONEXION\n" + trailing, timeout=20)
    assert received == expected


def test_server_keeps_reading_after_keyword_until_client_closes(server, transport):
    """The discarded input after DESCONEXION is drained, so closing never resets."""
    with transport.connect(server.address, 10) as sock:
        sock.sendall(b"uno\nDESCONEXION\n")
        assert read_until_eof(sock) == b"UNO\n"
        # The server only half-closed: it is still reading (and discarding) our data.
        sock.sendall(b"nadie escucha\n" * 1000)
        shutdown_write(sock)


def test_half_closed_client_gets_every_reply(server, connect):
    assert exchange(connect, server, b"a\nb\nc") == b"A\nB\nC"
