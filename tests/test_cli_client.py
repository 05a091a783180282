"""``python -m upper_client`` as a user runs it: messages, a terminal session, a Unix filter,
and every way the network can fail.

Servers are the real ``upper.server`` (the ``server`` fixture) or small scripted fakes
in a thread that record what they receive. All on 127.0.0.1, port 0, with timeouts.
"""

import os
import pty
import select
import signal
import socket
import struct
import subprocess
import sys
import threading
import time

import pytest
from helpers import clean_env, free_port
from reference_model import KEYWORD, expected_reply, upper_line
from servers import ServerProcess

from upper.client.cli import parse_args

RUN_TIMEOUT = 30.0
WAIT = 10.0


def client_command(port: int, *args, host: str = "127.0.0.1") -> list:
    return [sys.executable, "-m", "upper_client", "--host", host, "--port", str(port), *args]


def patched(command: list, patch: str) -> list:
    """``command`` (the client's), run after the Python code ``patch`` when there is one."""
    if not patch:
        return command
    return [command[0], "-c", f"{patch}\nfrom upper.client.cli import run\nrun()", *command[3:]]


def run_client(
    port: int,
    *args,
    input: bytes | None = None,
    host: str = "127.0.0.1",
    stdin=None,
    patch: str = "",
):
    """Run the client to completion; stdin is ``input`` (a pipe) or ``stdin``, else /dev/null.

    ``patch``: Python code run in the client's process before the client starts."""
    if input is None and stdin is None:
        stdin = subprocess.DEVNULL
    return subprocess.run(
        patched(client_command(port, *args, host=host), patch),
        input=input,
        stdin=stdin,
        capture_output=True,
        timeout=RUN_TIMEOUT,
        env=clean_env(),
    )


def assert_one_error_line(stderr: bytes, *mentions: str) -> None:
    text = stderr.decode("utf-8", "replace")
    assert "Traceback" not in text, text
    lines = text.strip().splitlines()
    assert len(lines) == 1, text
    # `-m upper_client`, or the patched `-c` command, which names the console script
    assert lines[0].startswith(("python -m upper_client: error:", "upper-client: error:")), text
    for mention in mentions:
        assert mention in lines[0], text


# --- Scripted fake servers -------------------------------------------------------------------


class FakeServer:
    """Accepts one connection and runs ``script(fake, conn)`` on it in a thread.

    ``received`` holds every byte the client sent; ``done`` is set when the script ends.
    """

    def __init__(self, script):
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(1)
        self.listener.settimeout(WAIT)
        self.port = self.listener.getsockname()[1]
        self.script = script
        self.received = bytearray()
        self.error: BaseException | None = None
        self.done = threading.Event()
        self.closed = threading.Event()
        """Set once the fake has sent its FIN."""
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            conn, _ = self.listener.accept()
            with conn:
                conn.settimeout(WAIT)
                self.script(self, conn)
        except BaseException as exc:
            self.error = exc
        finally:
            self.listener.close()
            self.done.set()

    def recv(self, conn: socket.socket) -> bytes:
        data = conn.recv(65536)
        self.received += data
        return data

    def wait_received(self, data: bytes) -> None:
        deadline = time.monotonic() + WAIT
        while data not in self.received:
            assert time.monotonic() < deadline, f"fake server got only {bytes(self.received)!r}"
            time.sleep(0.01)

    def finish(self) -> bytes:
        self._thread.join(WAIT)
        assert not self._thread.is_alive(), "fake server still running"
        if self.error:
            raise self.error
        return bytes(self.received)


def uppercase_until_keyword(fake: FakeServer, conn: socket.socket) -> None:
    """A minimal UPPER server: answers whole lines, ends with FIN at DESCONEXION or EOF."""
    buffer = b""
    while data := fake.recv(conn):
        buffer += data
        while b"\n" in buffer:
            line, buffer = buffer.split(b"\n", 1)
            if line in (KEYWORD, KEYWORD + b"\r"):
                conn.shutdown(socket.SHUT_WR)
                while fake.recv(conn):
                    pass
                return
            conn.sendall(upper_line(line) + b"\n")


def answer_one_line_then_close(fake: FakeServer, conn: socket.socket) -> None:
    buffer = b""
    while b"\n" not in buffer:
        data = fake.recv(conn)
        if not data:
            return
        buffer += data
    conn.sendall(upper_line(buffer.split(b"\n", 1)[0]) + b"\n")
    # Gone as a server that exits does it, but without an RST that could eat the reply.
    conn.shutdown(socket.SHUT_WR)
    fake.closed.set()
    while fake.recv(conn):
        pass


def read_but_never_answer(fake: FakeServer, conn: socket.socket) -> None:
    while fake.recv(conn):
        pass


@pytest.fixture
def fake_server():
    started = []

    def start(script) -> FakeServer:
        fake = FakeServer(script)
        started.append(fake)
        return fake

    yield start
    for fake in started:
        fake.listener.close()


@pytest.fixture
def silent_listener():
    """A listening socket that never accepts: connections complete, nothing ever answers."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        yield sock.getsockname()[1]


# --- MESSAGE arguments -------------------------------------------------------------------------


def test_messages_print_one_reply_per_line(server):
    result = run_client(server.port, "hola servidor", "canción", "straße ﬁ", "", "ya")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "HOLA SERVIDOR\nCANCIÓN\nSTRASSE FI\n\nYA\n".encode()
    assert result.stderr == b""


def test_messages_end_the_session_with_desconexion(fake_server):
    fake = fake_server(uppercase_until_keyword)
    result = run_client(fake.port, "hola", "mundo")
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"HOLA\nMUNDO\n"
    assert fake.finish() == b"hola\nmundo\nDESCONEXION\n"


def test_desconexion_message_ends_the_session_early(fake_server):
    fake = fake_server(uppercase_until_keyword)
    result = run_client(fake.port, "uno", "DESCONEXION", "dos")
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"UNO\n"
    assert "Traceback" not in result.stderr.decode()
    assert fake.finish() == b"uno\nDESCONEXION\n"


@pytest.mark.parametrize(
    "message",
    [
        "canción ǆ".encode(),
        b"abc\xff\xfe xyz",
        b"\xc3",  # a truncated UTF-8 character
        b"mixed \xe2\x82 caf\xc3\xa9 \x80",
        b"tab\there\r",
    ],
    ids=["non-ascii", "invalid-utf8", "truncated-char", "mixed", "tab-and-cr"],
)
def test_message_bytes_round_trip_exactly(server, message):
    result = run_client(server.port, message)  # argv bytes, as os.fsencode gives them
    assert result.returncode == 0, result.stderr
    assert result.stdout == expected_reply(message + b"\n")


@pytest.mark.parametrize("message", ["two\nlines", "\n", "trailing\n"])
def test_message_with_newline_is_a_usage_error(fake_server, message):
    fake = fake_server(read_but_never_answer)
    result = run_client(fake.port, "ok", message)
    assert result.returncode == 2
    assert result.stdout == b""
    stderr = result.stderr.decode()
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("python -m upper_client: error:"), stderr
    assert lines[0].endswith(" (see python -m upper_client --help)"), stderr
    assert "newline" in lines[0]
    assert "Traceback" not in stderr
    assert not fake.received, "nothing is sent when the arguments are wrong"


def test_environment_gives_host_and_port(server):
    result = subprocess.run(
        [sys.executable, "-m", "upper_client", "hola"],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=RUN_TIMEOUT,
        env=clean_env(UPPER_HOST="127.0.0.1", UPPER_PORT=str(server.port)),
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"HOLA\n"


@pytest.mark.parametrize(
    "args",
    [
        ["--port", "0"],
        ["--port", "99999"],
        ["--port", "abc"],
        ["--port=-1"],
        ["--timeout", "0"],
        ["--timeout=-1"],
        ["--timeout", "abc"],
        ["--timeout", "nan"],
    ],
)
def test_bad_options_are_usage_errors(args, capsys):
    with pytest.raises(SystemExit) as exited:
        parse_args([*args, "hola"])
    assert exited.value.code == 2
    (line,) = capsys.readouterr().err.splitlines()  # one line, not the usage block
    assert line.startswith("upper-client: error:")  # in-process: no -m, the script's name
    assert line.endswith(" (see upper-client --help)")


def test_bad_port_environment_is_a_usage_error():
    result = subprocess.run(
        [sys.executable, "-m", "upper_client", "hola"],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=RUN_TIMEOUT,
        env=clean_env(UPPER_PORT="abc"),
    )
    assert result.returncode == 2
    assert b"UPPER_PORT" in result.stderr
    assert b"Traceback" not in result.stderr


# --- Interactive, on a terminal ------------------------------------------------------------------


class Terminal:
    """The client with a pseudo-terminal as stdin/stdout (stderr is a separate pipe)."""

    def __init__(self, port: int, *args: str, patch: str = ""):
        """``patch``: Python code run in the client's process before the client starts."""
        command = patched(client_command(port, *args), patch)
        self.master, slave = pty.openpty()
        try:
            self.process = subprocess.Popen(
                command,
                stdin=slave,
                stdout=slave,
                stderr=subprocess.PIPE,
                env=clean_env(TERM="dumb", INPUTRC=os.devnull),
            )
        finally:
            os.close(slave)
        self.output = bytearray()
        self._seen = 0

    def _read(self, timeout: float) -> bool:
        """Read what is there; False once the terminal is closed (the client exited)."""
        ready, _, _ = select.select([self.master], [], [], timeout)
        if not ready:
            return True
        try:
            chunk = os.read(self.master, 4096)
        except OSError:  # EIO: no process has the terminal open any more
            return False
        self.output += chunk
        return bool(chunk)

    def expect(self, text: bytes, timeout: float = WAIT) -> None:
        deadline = time.monotonic() + timeout
        while (index := self.output.find(text, self._seen)) == -1:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"{text!r} not shown; terminal: {bytes(self.output)!r}")
            if not self._read(remaining):
                raise AssertionError(f"closed before {text!r}; terminal: {bytes(self.output)!r}")
        self._seen = index + len(text)

    def type(self, data: bytes) -> None:
        os.write(self.master, data)

    def finish(self, timeout: float = WAIT) -> tuple[int, bytes, str]:
        """Wait for the exit: (exit code, everything shown on the terminal, stderr)."""
        try:
            _, stderr = self.process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"client still running; terminal: {bytes(self.output)!r}"
            ) from None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self._read(0.2):
            if not select.select([self.master], [], [], 0)[0]:
                break
        return self.process.returncode, bytes(self.output), stderr.decode("utf-8", "replace")

    def interrupt(self) -> None:
        """Ctrl+C. Resent if it had no effect: CPython's readline (and a socket call about
        to block) can miss a signal that lands just before its select()/recv() starts,
        until the next one. A person never presses Ctrl+C within those microseconds."""
        for _ in range(5):
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=1)
                return
            except subprocess.TimeoutExpired:
                continue

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.communicate(timeout=WAIT)
        os.close(self.master)


@pytest.fixture
def terminal():
    # A test run started in the background (`pytest &`) inherits SIGINT ignored, and so
    # would the client: Ctrl+C is only testable with the default disposition.
    previous = signal.getsignal(signal.SIGINT)
    if previous == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    opened = []

    def open_terminal(port: int, *args: str, patch: str = "") -> Terminal:
        term = Terminal(port, *args, patch=patch)
        opened.append(term)
        return term

    yield open_terminal
    for term in opened:
        term.close()
    if previous == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.SIG_IGN)


def test_interactive_prompt_and_replies(server, terminal):
    term = terminal(server.port)
    term.expect(b"connected to")
    term.expect(b"> ")
    term.type(b"hola\r")
    term.expect(b"HOLA")
    term.expect(b"> ")
    term.type(b"desconexion please\r")
    term.expect(b"DESCONEXION PLEASE")  # not the keyword: the session goes on
    term.expect(b"> ")
    term.type(b"DESCONEXION\r")
    term.expect(b"closed")
    code, shown, stderr = term.finish()
    assert code == 0, (shown, stderr)
    assert b"Traceback" not in shown
    assert "Traceback" not in stderr


@pytest.mark.parametrize("leave", [b"DESCONEXION\r", b"\x04"], ids=["desconexion", "ctrl-d"])
def test_interactive_leaving_sends_desconexion_and_says_closed(fake_server, terminal, leave):
    fake = fake_server(uppercase_until_keyword)
    term = terminal(fake.port)
    term.expect(b"> ")
    term.type(b"hola\r")
    term.expect(b"HOLA")
    term.expect(b"> ")
    term.type(leave)
    term.expect(b"connection closed")
    code, shown, stderr = term.finish()
    assert code == 0, (shown, stderr)
    assert "Traceback" not in stderr
    assert fake.finish() == b"hola\nDESCONEXION\n"


def test_interactive_ctrl_c_at_prompt_exits_130(server, terminal):
    term = terminal(server.port)
    term.expect(b"> ")
    term.interrupt()
    code, shown, stderr = term.finish()
    assert code == 130, (shown, stderr)
    assert b"Traceback" not in shown
    assert "Traceback" not in stderr
    assert "KeyboardInterrupt" not in stderr


def test_interactive_ctrl_c_while_waiting_for_reply_exits_130(fake_server, terminal):
    fake = fake_server(read_but_never_answer)
    term = terminal(fake.port)
    term.expect(b"> ")
    term.type(b"hola\r")
    fake.wait_received(b"hola\n")
    term.interrupt()
    code, shown, stderr = term.finish()
    assert code == 130, (shown, stderr)
    assert b"Traceback" not in shown
    assert "Traceback" not in stderr


def test_interactive_reports_server_gone(fake_server, terminal):
    fake = fake_server(answer_one_line_then_close)
    term = terminal(fake.port)
    term.expect(b"> ")
    term.type(b"uno\r")
    term.expect(b"UNO")
    term.expect(b"> ")
    assert fake.closed.wait(WAIT)
    term.type(b"dos\r")
    code, shown, stderr = term.finish()
    assert code != 0, (shown, stderr)
    assert b"Traceback" not in shown
    assert_one_error_line(stderr.encode(), f"127.0.0.1:{fake.port}")


@pytest.mark.parametrize("tls", [False, True], ids=["tcp", "tls"])
def test_interactive_notices_at_once_that_the_server_has_gone(
    start_server, certificates, terminal, tls
):
    """Like telnet: no need to type another line to learn the server is gone. Over TLS the
    server's close begins with close_notify, which cannot be peeked at: the watcher reads it."""
    server_args = certificates.server_args() if tls else ()
    client_args = ("--cafile", str(certificates.ca)) if tls else ()
    server = start_server("--log-level", "warning", *server_args)
    term = terminal(server.port, *client_args)
    term.expect(b"> ")
    term.type(b"uno\r")
    term.expect(b"UNO")
    term.expect(b"> ")
    assert server.stop() == 0
    code, shown, stderr = term.finish()
    assert code == 1, (shown, stderr)
    assert b"Traceback" not in shown
    assert_one_error_line(stderr.encode(), f"127.0.0.1:{server.port}", "closed the connection")


def test_interactive_notices_the_server_gone_without_pthread_kill(fake_server, terminal):
    """Windows, simulated: the main thread cannot be signalled, the watcher ends the client."""
    fake = fake_server(answer_one_line_then_close)
    term = terminal(fake.port, patch="import signal\ndel signal.pthread_kill")
    term.expect(b"> ")
    term.type(b"uno\r")
    term.expect(b"UNO")
    code, shown, stderr = term.finish()
    assert code == 1, (shown, stderr)
    assert b"Traceback" not in shown
    assert_one_error_line(stderr.encode(), f"127.0.0.1:{fake.port}", "closed the connection")
    assert fake.finish() == b"uno\n"


def test_interactive_notices_a_reset_at_the_prompt(fake_server, terminal):
    at_prompt = threading.Event()

    def answer_then_reset(fake: FakeServer, conn: socket.socket) -> None:
        buffer = b""
        while b"\n" not in buffer:
            data = fake.recv(conn)
            assert data, "the client closed before its line"
            buffer += data
        conn.sendall(upper_line(buffer.split(b"\n", 1)[0]) + b"\n")
        # Reset only once the reply is shown: a reset can destroy unread data.
        assert at_prompt.wait(WAIT)
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))

    fake = fake_server(answer_then_reset)
    term = terminal(fake.port)
    term.expect(b"> ")
    term.type(b"uno\r")
    term.expect(b"UNO")
    term.expect(b"> ")
    at_prompt.set()
    code, shown, stderr = term.finish()
    assert code == 1, (shown, stderr)
    assert_one_error_line(stderr.encode(), f"127.0.0.1:{fake.port}", "reset")
    fake.finish()


SLOW_WATCHER = """
import select, threading, time
_select = select.select
def _late_select(readers, writers, errors, timeout=None):
    ready = _select(readers, writers, errors, timeout)
    if threading.current_thread().name == "server-watch" and timeout is None:
        time.sleep(0.3)  # descheduled right after waking: the main thread runs ahead
    return ready
select.select = _late_select
"""


def test_interactive_slow_watcher_still_notices_the_server_gone(start_server, terminal):
    """The watcher wakes for a reply the main thread has already read by the time it looks."""
    server = start_server("--log-level", "warning")
    term = terminal(server.port, "--timeout", "1", patch=SLOW_WATCHER)
    term.expect(b"> ")
    term.type(b"uno\r")
    term.expect(b"UNO")
    term.expect(b"> ")
    time.sleep(1.5)  # past --timeout: a watcher that peeked at an empty socket has given up
    assert server.stop() == 0
    code, shown, stderr = term.finish()
    assert code == 1, (shown, stderr)
    assert_one_error_line(stderr.encode(), f"127.0.0.1:{server.port}", "closed the connection")


def test_interactive_watch_leaves_replies_and_the_session_alone(server, terminal):
    """Many round trips at the prompt, then a clean DESCONEXION: the watcher takes nothing."""
    term = terminal(server.port)
    for number in range(30):
        term.expect(b"> ")
        term.type(b"linea %d\r" % number)
        term.expect(b"LINEA %d\r\n" % number)
    term.expect(b"> ")
    term.type(b"DESCONEXION\r")
    term.expect(b"connection closed")
    code, shown, stderr = term.finish()
    assert code == 0, (shown, stderr)
    assert stderr == ""


@pytest.mark.parametrize(
    "platform, key", [("linux", "Ctrl+D"), ("darwin", "Ctrl+D"), ("win32", "Ctrl+Z then Enter")]
)
def test_the_prompt_names_the_end_of_input_key_of_the_platform(monkeypatch, platform, key):
    from upper.client.cli import end_of_input_key

    monkeypatch.setattr(sys, "platform", platform)
    assert end_of_input_key() == key


def test_interactive_connection_refused(terminal):
    port = free_port()
    term = terminal(port)
    code, shown, stderr = term.finish()
    assert code != 0
    assert b"Traceback" not in shown
    assert_one_error_line(stderr.encode(), f"127.0.0.1:{port}", "refused")


# --- Piped stdin: a Unix filter ------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        b"hola\nmundo\n",
        b"crlf line\r\nand another\r\n",
        "canción straße ﬁ ǆ\n".encode(),
        b"invalid \xff\xfe utf8 \xc3\n\xed\xa0\x80 surrogate\n",
        b"\n\n\nempty lines\n",
        b"first\nlast line without newline",
        b"desconexion\nDESCONEXIONES\n DESCONEXION\nDESCONEXION \nxDESCONEXION\n",
        b"",
    ],
    ids=[
        "lf",
        "crlf",
        "non-ascii",
        "invalid-utf8",
        "empty-lines",
        "no-final-newline",
        "not-the-keyword",
        "empty-input",
    ],
)
def test_filter_output_is_exactly_the_reply(server, data):
    result = run_client(server.port, input=data)
    assert result.returncode == 0, result.stderr
    assert result.stdout == expected_reply(data)
    assert result.stderr == b""


def test_filter_multi_megabyte_input(server):
    block = (
        b"".join(b"line %d canci\xc3\xb3n stra\xc3\x9fe \xff end\r\n" % i for i in range(1000))
        + b"x" * 5000
        + b"\n"
    )
    repeats = 20 * 1024 * 1024 // len(block) + 1
    data = block * repeats
    assert len(data) >= 20 * 1024 * 1024
    result = run_client(server.port, input=data)
    assert result.returncode == 0, result.stderr[-500:]
    expected = expected_reply(block) * repeats
    assert len(result.stdout) == len(expected)
    assert result.stdout == expected


def test_filter_regular_file_as_stdin(server, tmp_path):
    data = b"from a file\nsecond line\r\n\xff\n" * 1000
    path = tmp_path / "input.txt"
    path.write_bytes(data)
    with path.open("rb") as stdin:
        result = run_client(server.port, stdin=stdin)
    assert result.returncode == 0, result.stderr
    assert result.stdout == expected_reply(data)


def read_with_timeout(stream, size: int, timeout: float = WAIT) -> bytes:
    """Exactly ``size`` bytes from a pipe, or AssertionError after ``timeout``."""
    deadline = time.monotonic() + timeout
    data = b""
    while len(data) < size:
        remaining = deadline - time.monotonic()
        ready = select.select([stream], [], [], max(remaining, 0))[0] if remaining > 0 else []
        assert ready, f"only {data!r} within {timeout}s"
        chunk = os.read(stream.fileno(), size - len(data))
        assert chunk, f"EOF after {data!r}"
        data += chunk
    return data


@pytest.fixture
def piped_client():
    started = []

    def start(port: int, patch: str = "") -> subprocess.Popen:
        process = subprocess.Popen(
            patched(client_command(port), patch),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=clean_env(),
        )
        started.append(process)
        return process

    yield start
    for process in started:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=WAIT)
        for stream in (process.stdin, process.stdout, process.stderr):
            try:
                stream.close()
            except BrokenPipeError:
                pass


def test_filter_with_quiet_producer_answers_before_more_input(server, piped_client):
    process = piped_client(server.port)
    process.stdin.write(b"primera linea\nsegunda\n")
    process.stdin.flush()
    # The producer stays quiet (stdin open): the replies must come anyway.
    assert read_with_timeout(process.stdout, 22) == b"PRIMERA LINEA\nSEGUNDA\n"
    time.sleep(0.5)
    assert process.poll() is None, "a quiet producer is not a timeout"
    process.stdin.write(b"tercera\n")
    process.stdin.flush()
    assert read_with_timeout(process.stdout, 8) == b"TERCERA\n"
    stdout, stderr = process.communicate(b"final sin salto", timeout=WAIT)
    assert process.returncode == 0, stderr
    assert stdout == b"FINAL SIN SALTO"


@pytest.mark.parametrize("keyword_line", [b"DESCONEXION\n", b"DESCONEXION\r\n"], ids=["lf", "crlf"])
def test_filter_desconexion_line_ends_the_session(server, keyword_line):
    data = b"antes\n" + keyword_line + b"despues\nmas\n"
    result = run_client(server.port, input=data)
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"ANTES\n"
    assert result.stderr == b""


# Windows, simulated: select() takes sockets only (WSAENOTSOCK for anything else).
WINDOWS_SELECT = """
import os, select, selectors, stat, sys
def _sockets_only(readers, writers, errors, timeout=None):
    for item in (*readers, *writers, *errors):
        fd = item if isinstance(item, int) else item.fileno()
        if not stat.S_ISSOCK(os.fstat(fd).st_mode):
            raise OSError(10038, "An operation was attempted on something that is not a socket")
    return select.select(readers, writers, errors, timeout)
selectors.SelectSelector._select = lambda self, r, w, x, timeout=None: _sockets_only(
    r, w, x, timeout
)
selectors.DefaultSelector = selectors.SelectSelector
import upper.client.cli
sys.platform = "win32"
"""

WINDOWS_FILTER_INPUT = (
    b"hola\nmundo\ncrlf line\r\n"
    + "canción straße ﬁ ǆ\n".encode()
    + b"invalid \xff\xfe utf8 \xc3\n\n\nDESCONEXIONES\n DESCONEXION\n"
    + b"x" * 300_000
    + b"\nlast line without newline"
)


@pytest.mark.parametrize("patch", ["", WINDOWS_SELECT], ids=["posix", "windows"])
def test_filter_desconexion_ends_the_session_while_stdin_is_still_open(
    server, piped_client, patch
):
    process = piped_client(server.port, patch=patch)
    process.stdin.write(b"uno\nDESCONEXION\n")
    process.stdin.flush()
    try:
        process.wait(timeout=WAIT)
    except subprocess.TimeoutExpired:
        pytest.fail("the client did not end the session at DESCONEXION")
    stdout, stderr = process.communicate(timeout=WAIT)
    assert process.returncode == 0, stderr
    assert stdout == b"UNO\n"


def test_windows_filter_output_is_exactly_the_reply(server):
    result = run_client(server.port, input=WINDOWS_FILTER_INPUT * 8, patch=WINDOWS_SELECT)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout == expected_reply(WINDOWS_FILTER_INPUT * 8)
    assert result.stderr == b""


def test_windows_filter_with_quiet_producer_answers_before_more_input(server, piped_client):
    process = piped_client(server.port, patch=WINDOWS_SELECT)
    process.stdin.write(b"primera linea\nsegunda\n")
    process.stdin.flush()
    assert read_with_timeout(process.stdout, 22) == b"PRIMERA LINEA\nSEGUNDA\n"
    process.stdin.write(b"tercera\n")
    process.stdin.flush()
    assert read_with_timeout(process.stdout, 8) == b"TERCERA\n"
    stdout, stderr = process.communicate(b"final sin salto", timeout=WAIT)
    assert process.returncode == 0, stderr
    assert stdout == b"FINAL SIN SALTO"


def test_windows_filter_regular_file_as_stdin(server, tmp_path):
    data = b"from a file\nsecond line\r\n\xff\n" * 1000
    path = tmp_path / "input.txt"
    path.write_bytes(data)
    with path.open("rb") as stdin:
        result = run_client(server.port, stdin=stdin, patch=WINDOWS_SELECT)
    assert result.returncode == 0, result.stderr
    assert result.stdout == expected_reply(data)


# --- Network failures: one clear line, non-zero exit, no traceback -------------------------------

MODES = {
    "messages": {"args": ("hola", "mundo")},
    "filter": {"input": b"hola\nmundo\n"},
}


@pytest.mark.parametrize("mode", MODES)
def test_connection_refused(mode):
    port = free_port()
    result = run_client(port, *MODES[mode].get("args", ()), input=MODES[mode].get("input"))
    assert result.returncode != 0
    assert result.stdout == b""
    assert_one_error_line(result.stderr, f"127.0.0.1:{port}", "refused")


@pytest.mark.parametrize("mode", MODES)
def test_ipv6_addresses_are_named_in_brackets(mode):
    with socket.socket(socket.AF_INET6) as sock:
        sock.bind(("::1", 0))
        port = sock.getsockname()[1]  # bound, never listening: refused
        result = run_client(
            port, *MODES[mode].get("args", ()), input=MODES[mode].get("input"), host="::1"
        )
    assert result.returncode == 1
    assert_one_error_line(result.stderr, f"[::1]:{port}", "refused")


@pytest.mark.parametrize("mode", MODES)
def test_unknown_host(mode):
    result = run_client(
        5000, *MODES[mode].get("args", ()), input=MODES[mode].get("input"), host="nope.invalid"
    )
    assert result.returncode != 0
    assert result.stdout == b""
    assert_one_error_line(result.stderr, "nope.invalid")


@pytest.mark.parametrize("mode", MODES)
def test_server_that_never_answers_times_out(silent_listener, mode):
    result = run_client(
        silent_listener,
        "--timeout",
        "0.5",
        *MODES[mode].get("args", ()),
        input=MODES[mode].get("input"),
    )
    assert result.returncode != 0
    assert result.stdout == b""
    assert_one_error_line(result.stderr, f"127.0.0.1:{silent_listener}", "timed out")


def test_messages_report_server_gone(fake_server):
    fake = fake_server(answer_one_line_then_close)
    result = run_client(fake.port, "uno", "dos", "tres")
    assert result.returncode != 0
    assert result.stdout == b"UNO\n"
    assert_one_error_line(result.stderr, f"127.0.0.1:{fake.port}")


def test_filter_reports_server_gone_while_input_is_open(fake_server, piped_client):
    """The server closing mid-input (no DESCONEXION was sent) is an error, not a clean end."""
    fake = fake_server(answer_one_line_then_close)
    process = piped_client(fake.port)
    process.stdin.write(b"uno\n")
    process.stdin.flush()
    assert read_with_timeout(process.stdout, 4) == b"UNO\n"
    assert fake.closed.wait(WAIT)
    # (If the client has already exited, communicate() ignores the broken pipe.)
    stdout, stderr = process.communicate(b"dos\n", timeout=WAIT)
    assert process.returncode != 0, "server gone mid-session reported as success"
    assert stdout == b""
    assert_one_error_line(stderr, f"127.0.0.1:{fake.port}")


def test_filter_reports_replies_missing_after_eof(fake_server):
    """All input sent, the server closes having answered only part of it: an error."""
    fake = fake_server(answer_one_line_then_close)
    result = run_client(fake.port, input=b"uno\ndos\ntres\n")
    assert result.returncode != 0, "lost replies reported as success"
    assert result.stdout == b"UNO\n"
    assert_one_error_line(result.stderr, f"127.0.0.1:{fake.port}")


# --- TLS ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tls_server(certificates):
    with ServerProcess("--log-level", "warning", *certificates.server_args()) as running:
        yield running


@pytest.fixture(scope="module")
def mutual_tls_server(certificates):
    args = certificates.server_args("--tls-client-ca", str(certificates.ca))
    with ServerProcess("--log-level", "warning", *args) as running:
        yield running


def test_tls_messages_with_the_test_ca(tls_server, certificates):
    result = run_client(tls_server.port, "--cafile", str(certificates.ca), "hola", "straße")
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"HOLA\nSTRASSE\n"
    assert result.stderr == b""


def test_tls_filter_multi_megabyte_input(tls_server, certificates):
    block = b"".join(b"line %d canci\xc3\xb3n \xff end\r\n" % i for i in range(1000)) + b"x" * 70000
    data = block * 100  # ~9 MiB, with lines longer than a TLS record
    result = run_client(tls_server.port, "--cafile", str(certificates.ca), input=data)
    assert result.returncode == 0, result.stderr[-500:]
    assert result.stdout == expected_reply(block) * 100


def test_tls_filter_ending_with_desconexion(tls_server, certificates):
    data = b"uno\ndos\nDESCONEXION\nnunca\n"
    result = run_client(tls_server.port, "--cafile", str(certificates.ca), input=data)
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"UNO\nDOS\n"


def test_tls_interactive_session(tls_server, certificates, terminal):
    term = terminal(tls_server.port, "--cafile", str(certificates.ca))
    term.expect(b"> ")
    term.type(b"hola tls\r")
    term.expect(b"HOLA TLS")
    term.expect(b"> ")
    term.type(b"DESCONEXION\r")
    term.expect(b"closed")
    code, shown, stderr = term.finish()
    assert code == 0, (shown, stderr)
    assert "Traceback" not in stderr


def test_tls_verification_failure_says_why_and_suggests_cafile(tls_server):
    result = run_client(tls_server.port, "--tls", "hola")
    assert result.returncode == 1
    assert result.stdout == b""
    assert_one_error_line(result.stderr, f"127.0.0.1:{tls_server.port}", "verif", "--cafile")


def test_tls_insecure_connects_with_a_warning(tls_server):
    result = run_client(tls_server.port, "--insecure", "hola")
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"HOLA\n"
    [warning] = result.stderr.decode().strip().splitlines()
    assert warning.startswith("python -m upper_client: warning:") and "not verified" in warning


@pytest.mark.parametrize("mode", MODES)
def test_tls_client_against_a_plaintext_server(server, mode):
    result = run_client(
        server.port, "--tls", *MODES[mode].get("args", ()), input=MODES[mode].get("input")
    )
    assert result.returncode == 1
    assert result.stdout == b""
    assert_one_error_line(result.stderr, "does not speak TLS", "plaintext")


def test_tls_handshake_timeout(silent_listener):
    result = run_client(silent_listener, "--tls", "--timeout", "0.5", "hola")
    assert result.returncode == 1
    assert_one_error_line(result.stderr, "TLS handshake", "timed out after 0.5s")


def test_tls_client_certificate_for_mutual_tls(mutual_tls_server, certificates):
    ca = str(certificates.ca)
    result = run_client(
        mutual_tls_server.port, "--cafile", ca, "--cert", str(certificates.client), "hola"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"HOLA\n"
    refused = run_client(mutual_tls_server.port, "--cafile", ca, "hola")
    assert refused.returncode == 1
    assert refused.stdout == b""
    assert_one_error_line(refused.stderr, "client certificate")


@pytest.mark.parametrize("option", ["--cafile", "--cert"])
def test_tls_unreadable_file_is_one_line(tmp_path, option):
    missing = str(tmp_path / "missing.pem")
    result = run_client(free_port(), option, missing, "hola")
    assert result.returncode == 1
    assert_one_error_line(result.stderr, "missing.pem")
