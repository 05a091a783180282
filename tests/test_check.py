"""``upper-check`` against the project's server (every check passes), against servers
with one mistake each (exactly the right checks fail), and as a tool: exit codes,
JSON, output, and servers that die, flood or hang."""

import io
import json
import socket
import subprocess
import sys
import threading

import pytest
from helpers import free_port
from wrong_servers import (
    AsciiUpperServer,
    CorrectServer,
    CrlfToLfServer,
    DyingServer,
    EchoServer,
    KeywordAnywhereServer,
    NeverClosingServer,
    NoDrainServer,
    NoStreamingServer,
    OneAtATimeServer,
    ReplacementCharServer,
    ResetOnCloseServer,
)

from upper.check import CHECKS, Settings, Status, Target, run_checks
from upper.check.checks import Check
from upper.check.cli import main
from upper.check.matching import Mismatch, ReplyMatcher
from upper.check.outcome import Evidence, Result
from upper.check.report import TextReport, evidence_lines, show_bytes
from upper.check.runner import run_one
from upper.client import UpperClient

ALL = {check.name for check in CHECKS}
# Small enough to keep the matrix quick; the project's server gets the full defaults.
SMALL = Settings(long_line_bytes=1 << 20, sessions=50)
# Generous for the checks that pass; only a server that never answers or never closes waits it out.
TIMEOUT = 1.0

LOOKALIKES_WITH_THE_WORD = {
    "lookalike-leading-space",
    "lookalike-longer-word",
    "lookalike-trailing-space",
    "lookalike-inside-line",
    "lookalike-cr-inside",
}
CLOSES_AFTER_KEYWORD = {
    "desconexion-closes",
    "keyword-split-across-segments",
    "nothing-after-keyword",
    "clean-close",
    "clean-close-after-unread-input",
}


def failing(server, settings: Settings = SMALL, timeout: float = TIMEOUT) -> set[str]:
    results = run_checks(Target(*server.address, timeout), settings=settings)
    return {result.name for result in results if not result.passed}


def test_every_check_is_named_once_and_explained():
    assert len(ALL) == len(CHECKS) >= 24
    assert [c.name for c in CHECKS[:2]] == ["hola-servidor", "desconexion-closes"]
    assert all(c.title and c.hint and c.section for c in CHECKS)


def test_the_project_server_passes_every_check(server):
    results = run_checks(Target(*server.address, timeout=10.0))
    assert [r.name for r in results] == [c.name for c in CHECKS]
    assert [(r.name, r.reason) for r in results if not r.passed] == []


def test_the_project_server_passes_every_check_over_tls(start_server, certificates):
    from upper.client.tls import client_context

    server = start_server("--log-level", "warning", *certificates.server_args())
    target = Target(*server.address, timeout=10.0, ssl_context=client_context(str(certificates.ca)))
    results = run_checks(target, settings=SMALL)
    assert [(r.name, r.reason) for r in results if not r.passed] == []
    assert len(results) == len(CHECKS)


def test_the_checker_cli_takes_the_client_tls_options(start_server, certificates, capsys):
    server = start_server("--log-level", "warning", *certificates.server_args())
    address = ["--host", "127.0.0.1", "--port", str(server.port)]
    assert main([*address, "--cafile", str(certificates.ca), "--only", "hola-servidor"]) == 0
    assert main([*address, "--tls", "--only", "hola-servidor"]) == 2
    assert "--cafile" in capsys.readouterr().err


def test_a_correct_fixture_passes_every_check():
    with CorrectServer() as correct:
        assert failing(correct) == set()


@pytest.mark.parametrize(
    ("server_class", "expected"),
    [
        pytest.param(
            EchoServer,
            {
                "hola-servidor", "lf-lines", "crlf-lines", "unicode-case-mapping",
                "invalid-utf8", "utf8-split-across-segments", "empty-lines",
                "replies-in-order", "streaming-partial-line", "streaming-long-line",
                "lookalike-lowercase", "concurrent-sessions",
            },
            id="echo",
        ),
        pytest.param(
            AsciiUpperServer, {"unicode-case-mapping", "utf8-split-across-segments"}, id="ascii"
        ),
        pytest.param(
            ReplacementCharServer, {"invalid-utf8", "utf8-split-across-segments"}, id="u+fffd"
        ),
        pytest.param(CrlfToLfServer, {"crlf-lines"}, id="crlf-to-lf"),
        pytest.param(
            NoStreamingServer, {"streaming-partial-line", "streaming-long-line"}, id="no-streaming"
        ),
        pytest.param(KeywordAnywhereServer, LOOKALIKES_WITH_THE_WORD, id="keyword-anywhere"),
        pytest.param(
            ResetOnCloseServer,
            {"desconexion-closes", "clean-close", "clean-close-after-unread-input"},
            id="reset",
        ),
        pytest.param(NeverClosingServer, CLOSES_AFTER_KEYWORD, id="never-closes"),
        pytest.param(NoDrainServer, {"clean-close-after-unread-input"}, id="no-drain"),
        pytest.param(OneAtATimeServer, {"concurrent-sessions"}, id="one-at-a-time"),
    ],
)
def test_a_server_with_one_mistake_fails_exactly_its_checks(server_class, expected):
    with server_class() as wrong:
        assert failing(wrong) == expected


def test_a_failure_shows_sent_expected_got_and_the_fix():
    with CrlfToLfServer() as wrong:
        [result] = run_checks(Target(*wrong.address, TIMEOUT), [_check("crlf-lines")])
    assert result.status is Status.FAIL
    assert result.reason == "the reply differs from what the protocol says"
    assert evidence_lines(result.evidence) == [
        "sent:      'hola\\r\\nque tal\\r\\nDESCONEXION\\r\\n'",
        "expected:  'HOLA\\r\\nQUE TAL\\r\\n'",
        "got:       'HOLA\\nQUE TAL\\n'",
        "               ^ first difference, at byte 4",
    ]
    assert "CR before the LF" in result.hint


def test_the_classroom_steps_explain_themselves_to_a_student():
    out = io.StringIO()
    report = TextReport(out)
    with EchoServer() as wrong:
        classroom = [_check("hola-servidor"), _check("desconexion-closes")]
        results = run_checks(Target(*wrong.address, TIMEOUT), classroom, on_result=report.result)
    report.finish(results, 0.0)
    text = out.getvalue()
    assert text.splitlines()[:10] == [
        "",
        "the classroom test",
        "FAIL    hola-servidor                   'hola servidor' is answered 'HOLA SERVIDOR'",
        "        the reply differs from what the protocol says",
        "          sent:      'hola servidor\\n'",
        "          expected:  'HOLA SERVIDOR\\n'",
        "          got:       'hola servidor\\n'",
        "                     ^ first difference, at byte 0",
        "        fix: read a line, send it back in uppercase with its newline "
        "(Python: line.upper())",
        "PASS    desconexion-closes              "
        "'DESCONEXION' gets no reply, and the server closes",
    ]
    assert text.endswith("1 passed, 1 failed, 0 not run (2 checks, 0.0s): not conformant\n")
    assert "\x1b[" not in text  # not a terminal: no colour


def test_colour_only_on_a_terminal(monkeypatch):
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    monkeypatch.delenv("NO_COLOR", raising=False)
    result = Result("x", "title", Status.PASS)
    for stream, coloured in ((Terminal(), True), (io.StringIO(), False)):
        TextReport(stream).result(result)
        assert ("\x1b[32mPASS" in stream.getvalue()) is coloured
    monkeypatch.setenv("NO_COLOR", "1")
    stream = Terminal()
    TextReport(stream).result(result)
    assert "\x1b[" not in stream.getvalue()


def test_bytes_are_shown_with_every_invisible_byte_visible():
    assert show_bytes("hola\r\n\t\\ ñ".encode() + b"\xff\xe2\x82\x00") == (
        "hola\\r\\n\\t\\\\ ñ\\xff\\xe2\\x82\\x00"
    )


def test_the_matcher_finds_the_first_difference_across_chunks_in_bounded_memory():
    matcher = ReplyMatcher()
    matcher.expect(b"A" * 100_000 + b"BCD")
    matcher.receive(b"A" * 60_000)
    matcher.receive(b"A" * 40_000 + b"B")
    with pytest.raises(Mismatch) as raised:
        matcher.receive(b"Cx")
    assert (raised.value.at, raised.value.expected, raised.value.got) == (100_002, b"D", b"x")
    assert raised.value.before.endswith(b"AABC") and len(raised.value.before) == 32


# -- the command line ------------------------------------------------------------------


def run_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "upper.check", *args],
        capture_output=True, text=True, timeout=timeout,
    )


def test_exit_0_and_a_summary_against_the_project_server(server):
    done = run_cli("--port", str(server.port), "--only", "hola-servidor", "lf-lines")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1].startswith("2 passed, 0 failed, 0 not run (2 checks, ")
    assert done.stdout.rstrip().endswith("the server speaks the protocol")


def test_nothing_listening_is_exit_2_with_one_line():
    port = free_port()  # nothing listens there
    done = run_cli("--port", str(port), "--timeout", "2")
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr == (
        f"python -m upper.check: error: could not connect to 127.0.0.1:{port}: "
        "connection refused (is the server running?)\n"
    )


@pytest.mark.parametrize(
    ("args", "complaint"),
    [
        (["--only", "no-such-check"], "no check named 'no-such-check'"),
        (["--port", "99999"], "argument --port"),
        (["--timeout", "0"], "argument --timeout"),
        (["--host", "127.0.0.1:5000", "--port", "5001"], "leave out --port"),
        (["--host", "[::1:5000"], "argument --host"),
    ],
)
def test_usage_errors_are_exit_2(args, complaint, capsys):
    with pytest.raises(SystemExit) as exited:
        main(args)
    assert exited.value.code == 2
    (line,) = capsys.readouterr().err.splitlines()  # one line, not the usage block
    assert complaint in line
    assert line.startswith("upper-check: error: ") and line.endswith(" (see upper-check --help)")


def test_host_may_carry_the_port(capsys):
    with CorrectServer() as correct:
        host, port = correct.address
        code = main(["--host", f"{host}:{port}", "--only", "hola-servidor"])
    assert code == 0
    assert f"against {host}:{port}" in capsys.readouterr().out


def test_json_gives_the_same_results_for_graders(capsys):
    with CrlfToLfServer() as wrong:
        code = main(["--port", str(wrong.address[1]), "--json", "--timeout", str(TIMEOUT),
                     "--only", "hola-servidor", "crlf-lines", "desconexion-closes"])
    document = json.loads(capsys.readouterr().out)
    assert code == 1
    assert document["schema"] == 1
    assert document["address"] == f"127.0.0.1:{wrong.address[1]}"
    assert document["passed"] is False
    assert document["summary"] == {"total": 3, "passed": 2, "failed": 1, "not_run": 0}
    checks = {entry["name"]: entry for entry in document["checks"]}
    assert list(checks) == ["hola-servidor", "desconexion-closes", "crlf-lines"]
    assert {entry["status"] for entry in checks.values()} == {"pass", "fail"}
    failure = checks["crlf-lines"]
    assert failure["status"] == "fail"
    assert failure["difference_at"] == 4
    assert failure["sent"] == "hola\\r\\nque tal\\r\\nDESCONEXION\\r\\n"
    assert failure["expected"] == "HOLA\\r\\nQUE TAL\\r\\n"
    assert failure["got"] == "HOLA\\nQUE TAL\\n"
    assert failure["hint"] and failure["reason"]
    for entry in checks.values():
        assert set(entry) >= {"name", "title", "section", "status", "seconds", "reason", "hint"}
        assert isinstance(entry["seconds"], float)


def test_a_server_dying_mid_run_leaves_the_rest_not_run_with_a_reason(capsys):
    # Connection 1 is the check that something listens, 2 to 4 the first three checks.
    with DyingServer(connections=4) as dying:
        code = main(["--port", str(dying.address[1]), "--json", "--timeout", str(TIMEOUT)])
    document = json.loads(capsys.readouterr().out)
    statuses = [entry["status"] for entry in document["checks"]]
    assert code == 1
    assert statuses[:3] == ["pass"] * 3
    assert statuses[3] == "fail"  # accepted, then dropped without a reply
    assert statuses[4:] == ["not run"] * (len(CHECKS) - 4)
    assert document["checks"][4]["reason"].startswith("could not connect to 127.0.0.1:")
    for entry in document["checks"][5:]:
        assert entry["reason"] == (
            f"the server stopped accepting connections during {document['checks'][4]['name']}"
        )


# -- servers that misbehave in ways no rule names -----------------------------------------


class _RawServer(CorrectServer):
    """Does ``behave(conn)`` with every connection instead of serving it."""

    def __init__(self, behave):
        super().__init__()
        self.behave = behave

    def _serve(self, conn):
        try:
            self.behave(conn, self._stopping)
        except OSError:
            pass
        finally:
            conn.close()


def _flood(conn, stopping):
    while not stopping.is_set():
        conn.sendall(b"X" * 65536)


def _silent(conn, stopping):
    stopping.wait(30)


@pytest.mark.parametrize(("behave", "reason"), [
    (_flood, "the reply differs from what the protocol says"),
    (_silent, f"no reply within {TIMEOUT}s"),
])
def test_a_flooding_or_silent_server_is_reported_not_waited_on(behave, reason):
    with _RawServer(behave) as odd:
        results = run_checks(
            Target(*odd.address, TIMEOUT), [_check("hola-servidor"), _check("lf-lines")]
        )
    assert [(r.status, r.reason) for r in results] == [(Status.FAIL, reason)] * 2


def test_a_check_that_overruns_or_crashes_is_a_failure_not_a_hang():
    blocked = threading.Event()

    def hangs(ctx):
        conversation = ctx.connect()
        conversation.sock.setblocking(True)
        blocked.set()
        conversation.sock.recv(1)  # a checker bug: no timeout

    def crashes(ctx):
        raise ValueError("bug")

    with _RawServer(_silent) as odd:
        target = Target(*odd.address, 0.1)
        hung = run_one(Check("hangs", "t", "h", hangs, "s", 1.0), target, SMALL, margin=0.0)
        crashed = run_one(Check("crashes", "t", "h", crashes, "s"), target, SMALL)
    assert blocked.is_set()
    assert (hung.status, hung.reason) == (Status.FAIL, "the check did not finish within 0.1s")
    assert (crashed.status, crashed.reason) == (
        Status.FAIL, "the checker itself failed: ValueError('bug')"
    )


def _check(name: str) -> Check:
    return next(check for check in CHECKS if check.name == name)


def test_the_client_hands_over_its_socket_for_raw_checks():
    with CorrectServer() as correct:
        client = UpperClient(*correct.address, timeout=TIMEOUT)
        client.connect()
        sock = client.detach()
        with sock:
            assert not client.connected
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
            sock.sendall(b"hola\n")
            assert sock.recv(100) == b"HOLA\n"


def test_evidence_of_a_bad_close_shows_the_replies_were_right():
    evidence = Evidence(sent=b"1\n2\nDESCONEXION\n", sent_total=16, before=b"1\n2\n")
    assert evidence_lines(evidence) == [
        "sent:      '1\\n2\\nDESCONEXION\\n'",
        "got:       '1\\n2\\n'  (every reply, as expected)",
    ]
