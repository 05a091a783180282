"""The table of checks: the classroom's two steps, then one per rule and example
of ``docs/protocol.md``, each on a fresh connection.

A check sends bytes and says how the connection should end; what the server
must answer is never written here (except the classroom's literal ``HOLA
SERVIDOR``): ``Conversation`` computes it with ``UpperSession``.
"""

import selectors
import time
from collections.abc import Callable
from dataclasses import dataclass

from upper.check.conversation import Conversation
from upper.check.outcome import CheckFailed, ServerGone
from upper.check.target import Target
from upper.i18n import Message, message_of
from upper.protocol import KEYWORD

KEYWORD_LINE = KEYWORD + b"\n"


@dataclass
class Context:
    """What a running check gets: the target, its settings, its deadline, its sockets."""

    target: Target
    long_line_bytes: int
    sessions: int
    deadline: float
    opened: list

    def connect(self) -> Conversation:
        return Conversation(self.target, self.deadline, self.opened)


@dataclass(frozen=True)
class Check:
    name: str
    title: str
    """What the server must do, in one line."""
    hint: str
    """What to fix when it does not."""
    run: Callable[[Context], None]
    section: str
    """The heading it is listed under."""
    budget: float = 3.0
    """Multiples of the target's timeout this check may take in all (plus a margin)."""


CHECKS: list[Check] = []
_section = ""


def section(heading: str) -> None:
    """The checks registered from here on are listed under ``heading``."""
    global _section
    _section = heading


def check(name: str, title: str, hint: str, *, budget: float = 3.0):
    def register(run: Callable[[Context], None]) -> Callable[[Context], None]:
        CHECKS.append(Check(name, title, hint, run, _section, budget))
        return run

    return register


def exchange(ctx: Context, *pieces: bytes) -> Conversation:
    """Send ``pieces`` one at a time on a new connection, so each travels in its own segment.

    After a piece that ends a line, its replies are waited for; after one that
    ends mid-line the server gets a short pause instead (waiting for a reply to
    part of a line would test streaming, which has checks of its own).
    """
    conversation = ctx.connect()
    for index, piece in enumerate(pieces):
        conversation.send(piece)
        if index == len(pieces) - 1:
            break
        if piece.endswith(b"\n"):
            conversation.catch_up()
        else:
            conversation.pause()
    return conversation


def replies_only(ctx: Context, *pieces: bytes) -> None:
    """The replies are judged; the close after the final DESCONEXION is other checks' business."""
    conversation = exchange(ctx, *pieces)
    conversation.settle()


def lookalike(ctx: Context, line: bytes) -> None:
    """``line`` is answered and the session goes on: the next line is answered too."""
    conversation = ctx.connect()
    conversation.send(line)
    conversation.catch_up()
    conversation.send(b"123\n")
    conversation.catch_up()
    conversation.send(KEYWORD_LINE)
    conversation.settle()


# -- the classroom's two steps --------------------------------------------------------

section(Message("the classroom test"))


@check(
    "hola-servidor",
    Message("'hola servidor' is answered 'HOLA SERVIDOR'"),
    Message("read a line, send it back in uppercase with its newline (Python: line.upper())"),
)
def hola_servidor(ctx: Context) -> None:
    conversation = ctx.connect()
    conversation.send(b"hola servidor\n", reply=b"HOLA SERVIDOR\n")
    conversation.catch_up()
    conversation.send(KEYWORD_LINE)
    conversation.settle()  # and nothing more: no greeting, no prompt, no echo of the keyword


@check(
    "desconexion-closes",
    Message("'DESCONEXION' gets no reply, and the server closes"),
    Message("a line that is exactly DESCONEXION gets no reply: end the session instead"),
)
def desconexion_closes(ctx: Context) -> None:
    conversation = ctx.connect()
    conversation.send(KEYWORD_LINE)
    conversation.expect_close(clean=True)


# -- lines ----------------------------------------------------------------------------

section(Message("lines and text"))


@check(
    "lf-lines",
    Message("lines ending in LF come back uppercased, LF kept"),
    Message("split the input at b'\\n' and answer every line, keeping its terminator"),
)
def lf_lines(ctx: Context) -> None:
    replies_only(ctx, b"hola\nque tal\n" + KEYWORD_LINE)


@check(
    "crlf-lines",
    Message("lines ending in CR LF come back with the CR kept"),
    Message("a CR before the LF belongs to the line: send it back as it came (do not strip it)"),
)
def crlf_lines(ctx: Context) -> None:
    replies_only(ctx, b"hola\r\nque tal\r\n" + KEYWORD + b"\r\n")


@check(
    "unicode-case-mapping",
    Message("full case mapping: 'straße' -> 'STRASSE', 'ﬁ' -> 'FI'"),
    Message("decode the line as UTF-8 and use str.upper() (not an ASCII-only upper); "
            "a reply can be longer than its line"),
)
def unicode_case_mapping(ctx: Context) -> None:
    replies_only(ctx, "straße ﬁn canción ǆ ñandú\n".encode() + KEYWORD_LINE)


@check(
    "invalid-utf8",
    Message("bytes that are not UTF-8 come back unchanged"),
    Message("decode and encode with errors='surrogateescape': never drop or replace a byte "
            "with U+FFFD"),
)
def invalid_utf8(ctx: Context) -> None:
    replies_only(
        ctx, b"abc\xff\n" + b"caf\xe9 latin-1\n" + b"\xed\xa0\x80 \xc0\xaf trunc\xe2\x82\n"
        + KEYWORD_LINE
    )


@check(
    "utf8-split-across-segments",
    Message("UTF-8 split across segments, valid or not, is kept whole"),
    Message("decode incrementally (codecs.getincrementaldecoder('utf-8')('surrogateescape')): "
    "a recv() can end in the middle of a character"),
)
def utf8_split(ctx: Context) -> None:
    replies_only(ctx, b"ma\xc3", b"\xb1ana y \xe2\x82", b"x\n" + KEYWORD_LINE)


@check(
    "empty-lines",
    Message("an empty line gets an empty line back"),
    Message("answer every line, even an empty one (b'\\n' -> b'\\n'); do not skip blank lines"),
)
def empty_lines(ctx: Context) -> None:
    replies_only(ctx, b"\nuno\n\n\ndos\n\n" + KEYWORD_LINE)


@check(
    "replies-in-order",
    Message("100 lines sent at once are answered in order"),
    Message("answer the lines of one connection one after the other, in the order they came"),
)
def replies_in_order(ctx: Context) -> None:
    lines = b"".join(f"linea {n}\n".encode() for n in range(100))
    replies_only(ctx, lines + KEYWORD_LINE)


# -- streaming --------------------------------------------------------------------------

section(Message("streaming"))


@check(
    "streaming-partial-line",
    Message("'hola' with no newline is answered 'HOLA' at once"),
    Message("answer bytes as they arrive, not when the line is complete: uppercase and send what "
    "recv() returned (hold back only a possible DESCONEXION and half a character)"),
)
def streaming_partial_line(ctx: Context) -> None:
    conversation = ctx.connect()
    conversation.send(b"hola")
    conversation.catch_up()
    conversation.send(b" mundo\n" + KEYWORD_LINE)
    conversation.settle()


_LONG_LINE_BLOCK = b"".join(
    f"{n:06d} el veloz murcielago hindu comia feliz cardillo y kiwi ".encode()
    for n in range(1024)
)
_LONG_LINE_WINDOW = 4 * 1024 * 1024
"""Expected reply bytes allowed in flight: bounds the checker's memory for any line length."""


@check(
    "streaming-long-line",
    Message("a line of tens of MB without LF streams back as it is sent"),
    Message("never wait for the newline: a line may be longer than memory; answer each recv() "
    "and keep only a few bytes per connection"),
    budget=12.0,
)
def streaming_long_line(ctx: Context) -> None:
    conversation = ctx.connect()
    remaining = ctx.long_line_bytes
    while remaining > 0:
        piece = _LONG_LINE_BLOCK[: min(remaining, len(_LONG_LINE_BLOCK))]
        conversation.catch_up(_LONG_LINE_WINDOW)
        conversation.send(piece)
        remaining -= len(piece)
    conversation.catch_up()
    conversation.send(b"\n" + KEYWORD_LINE)
    conversation.settle()


# -- DESCONEXION ----------------------------------------------------------------------

section("DESCONEXION")  # the protocol's word: the same in every language


@check(
    "keyword-split-across-segments",
    Message("'DESCON' + 'EXION\\n' in two segments ends the session"),
    Message("look for the keyword in whole lines, not in what one recv() returned: "
    "a line can arrive in pieces"),
)
def keyword_split(ctx: Context) -> None:
    conversation = exchange(ctx, b"1\n", b"DESCON", b"EXION\n", b"2\n")
    conversation.expect_close(clean=False)


def _lookalike_check(name: str, line: bytes, what: str) -> None:
    @check(
        f"lookalike-{name}",
        Message("{what} is text: answered, and the session goes on", what=what),
        Message("only a line that is exactly DESCONEXION (optionally with CR before the LF) ends "
        "the session: compare the whole line, case-sensitively, without strip()"),
    )
    def run(ctx: Context) -> None:
        lookalike(ctx, line)


_lookalike_check("lowercase", b"desconexion\n", "'desconexion'")
_lookalike_check("leading-space", b" DESCONEXION\n", "' DESCONEXION'")
_lookalike_check("longer-word", b"DESCONEXIONES\n", "'DESCONEXIONES'")
_lookalike_check("trailing-space", b"DESCONEXION \n", "'DESCONEXION '")
_lookalike_check("inside-line", b"123 DESCONEXION 456\n", Message("the word in a line"))
_lookalike_check("cr-inside", b"DESCONEXION\rX\n", "'DESCONEXION\\rX'")


@check(
    "nothing-after-keyword",
    Message("lines before DESCONEXION are answered, none after it"),
    Message("answer every line before the keyword, then stop answering: what follows it in the "
    "same recv() is thrown away"),
)
def nothing_after_keyword(ctx: Context) -> None:
    conversation = ctx.connect()
    conversation.send(b"1\n2\n" + KEYWORD_LINE + b"3\n")
    conversation.expect_close(clean=False)


@check(
    "clean-close",
    Message("after DESCONEXION: every reply, then FIN, never a reset"),
    Message("send every reply before closing, and close with a FIN"),
)
def clean_close(ctx: Context) -> None:
    conversation = ctx.connect()
    conversation.send(b"1\n2\n" + KEYWORD_LINE)
    conversation.expect_close(clean=True)


_UNREAD_BLOCK = b"0123456789 never answered\n" * 2520  # 64 KiB
_UNREAD_BLOCKS = 64  # 4 MiB in all: more than a loopback socket buffers


@check(
    "clean-close-after-unread-input",
    Message("FIN, not a reset, though MBs were sent past DESCONEXION"),
    Message("keep reading (and discarding) after DESCONEXION until the client closes"),
    budget=6.0,
)
def clean_close_after_unread_input(ctx: Context) -> None:
    conversation = ctx.connect()
    conversation.send(b"1\n" + KEYWORD_LINE)
    for _ in range(_UNREAD_BLOCKS):
        conversation.send(_UNREAD_BLOCK)
    conversation.expect_close(clean=True)
    conversation.end_input()
    conversation.confirm_no_reset(0.1)


# -- end of input ---------------------------------------------------------------------

section(Message("end of input"))


@check(
    "end-of-input",
    Message("at EOF the last line (no LF) is answered, then a close"),
    Message("when recv() returns b'' the client is done sending: answer what is left, then close"),
)
def end_of_input(ctx: Context) -> None:
    conversation = ctx.connect()
    conversation.send(b"1\n2")
    conversation.end_input()
    conversation.expect_close(clean=False)


@check(
    "end-of-input-bare-keyword",
    Message("a last 'DESCONEXION' with no LF, then EOF: no reply"),
    Message("at EOF, a last line that is exactly DESCONEXION (no LF) is the keyword: no reply"),
)
def end_of_input_bare_keyword(ctx: Context) -> None:
    conversation = exchange(ctx, b"1\n", KEYWORD)
    conversation.end_input()
    conversation.expect_close(clean=False)


# -- many sessions --------------------------------------------------------------------

section(Message("many sessions"))


@check(
    "concurrent-sessions",
    Message("many sessions open at once are all answered"),
    Message("serve each connection on its own (thread, greenlet, task or event loop): "
    "one client must never wait for another"),
    budget=6.0,
)
def concurrent_sessions(ctx: Context) -> None:
    conversations = [ctx.connect()]
    try:
        while len(conversations) < ctx.sessions:
            conversations.append(ctx.connect())
    except ServerGone as gone:
        raise CheckFailed(
            Message(
                "only {opened} of {wanted} connections could be open at once ({reason})",
                opened=len(conversations), wanted=ctx.sessions, reason=message_of(gone),
            )
        ) from None
    for number, conversation in enumerate(conversations):
        conversation.send(f"sesion {number}: hola\n".encode())
    _wait_for_all(ctx, conversations)
    for conversation in conversations:
        conversation.send(KEYWORD_LINE)
    for conversation in conversations:
        conversation.close()


def _wait_for_all(ctx: Context, conversations: list[Conversation]) -> None:
    """Every session's reply, read as it comes from any of them, within the timeout."""
    waiting = {c.sock: c for c in conversations if c.matcher.owed}
    with selectors.DefaultSelector() as selector:
        for sock in waiting:
            selector.register(sock, selectors.EVENT_READ)
        last_progress = time.monotonic()
        while waiting:
            wait = min(ctx.target.timeout - (time.monotonic() - last_progress),
                       ctx.deadline - time.monotonic())
            if wait <= 0:
                late = next(iter(waiting.values()))
                raise CheckFailed(
                    Message(
                        "{late} of {sessions} sessions got no complete reply within "
                        "{seconds}s; the first of them:",
                        late=len(waiting), sessions=len(conversations),
                        seconds=ctx.target.timeout,
                    ),
                    _evidence_so_far(late),
                )
            for key, _mask in selector.select(wait):
                conversation = waiting[key.fileobj]
                conversation.catch_up(owed_at_most=conversation.matcher.owed - 1)
                last_progress = time.monotonic()
                if not conversation.matcher.owed:
                    selector.unregister(key.fileobj)
                    del waiting[key.fileobj]


def _evidence_so_far(conversation: Conversation):
    return conversation.evidence(conversation.matcher.shortfall())
