"""One connection of a check: bytes sent, the reply compared as it arrives, and how it ended.

Everything the server is expected to send comes from ``UpperSession`` fed exactly
the bytes sent (the server's own definition of the protocol). The connection is
the client library's ``Duplex`` in duplex mode: every wait goes through its one
selector, so the checker reads while it writes (a server answering a long line
never blocks on us), and every wait is bounded twice: by the target's timeout
for the server's next move, and by the check's deadline.
"""

import time

from upper.check.matching import CONTEXT, Mismatch, ReplyMatcher
from upper.check.outcome import CheckFailed, Evidence, ServerGone
from upper.check.target import ConnectError, Target
from upper.i18n import Message, message_of
from upper.protocol import UpperSession

SENT_SHOWN = 80
"""Bytes of what was sent that a failure shows."""

FIN = "fin"
RESET = "reset"
_HINT_CLOSE = Message(
    "once a line is exactly DESCONEXION, end the session: shutdown(SHUT_WR) (the client "
    "sees the end at once), read and discard until the client closes, then close()"
)
_HINT_CLOSE_AT_EOF = Message(
    "when recv() returns b'' the client has finished sending: answer what is left, then close"
)
_HINT_RESET = Message(
    "shutdown(SHUT_WR) first, read and discard until the client closes, then close(): "
    "closing with unread input (or with SO_LINGER 0) sends a reset, which can destroy replies"
)


class Conversation:
    """A fresh connection to the target, opened at once; ``ServerGone`` if it cannot be."""

    def __init__(self, target: Target, deadline: float, opened: list):
        self.target = target
        self.deadline = deadline
        try:
            self.connection = target.open()
        except ConnectError as exc:
            raise ServerGone(message_of(exc)) from None
        opened.append(self)  # the runner closes it when the check ends, or overruns
        self.connection.start_duplex()
        self.session = UpperSession()
        self.matcher = ReplyMatcher()
        self.ended_by_server: str | None = None
        """``FIN`` or ``RESET`` once the server closed its side."""
        self._sent_head = bytearray()
        self._sent_total = 0

    @property
    def sock(self):
        """The connection's socket, for a selector that waits on many conversations."""
        return self.connection.socket

    # -- sending ----------------------------------------------------------------

    def send(self, data: bytes, *, reply: bytes | None = None) -> None:
        """Send ``data`` whole, reading replies meanwhile.

        The expected reply is what ``UpperSession`` answers to ``data``, unless
        ``reply`` gives it literally (only the classroom steps do, where the
        literal is the point).
        """
        answer = self.session.feed(data)
        self.matcher.expect(answer if reply is None else reply)
        self._log_sent(data)
        if self.ended_by_server != RESET:
            self._pump(memoryview(data), lambda: True, _SENDING)

    def end_input(self) -> None:
        """Shut down our sending side (EOF): the server answers what it holds and closes."""
        self.matcher.expect(self.session.end_of_input())
        try:
            self.connection.shutdown_write()
        except OSError:
            self._note_reset()

    def pause(self, seconds: float = 0.05) -> None:
        """Let what was just sent travel alone (its own segment), reading meanwhile."""
        end = min(time.monotonic() + seconds, self.deadline)
        while self.ended_by_server is None and (left := end - time.monotonic()) > 0:
            if self.connection.wait(left)[0]:
                self._read()

    # -- waiting ----------------------------------------------------------------

    def catch_up(self, owed_at_most: int = 0) -> None:
        """Wait until at most ``owed_at_most`` expected bytes are still to come."""
        self._pump(None, lambda: self.matcher.owed <= owed_at_most, _WAITING_FOR_REPLY)

    def expect_close(self, *, clean: bool) -> None:
        """Every reply, then the server closes; with ``clean`` only a FIN will do."""
        self.catch_up()
        if self.ended_by_server is None:
            try:
                self._pump(None, lambda: self.ended_by_server is not None, _WAITING_FOR_CLOSE)
            except _Timeout:
                raise self._failure(
                    Message(
                        "the server did not close the connection within {seconds}s "
                        "after the session ended",
                        seconds=self.target.timeout,
                    ),
                    hint=_HINT_CLOSE if self.session.found else _HINT_CLOSE_AT_EOF,
                ) from None
        if clean and self.ended_by_server == RESET:
            raise self._reset_failure()

    def settle(self) -> None:
        """End a check that judges replies, not the close: every reply, and nothing more.

        The input ended the session already (DESCONEXION); our EOF as well lets any
        server close at once. Bytes that come before the close are extra; a missing
        or unclean close is left to the checks about closing.
        """
        self.catch_up()
        if self.ended_by_server is None:
            self.end_input()
            try:
                self._pump(None, lambda: self.ended_by_server is not None, _WAITING_FOR_CLOSE)
            except _Timeout:
                pass

    def confirm_no_reset(self, seconds: float) -> None:
        """Fail if a reset arrives within ``seconds`` of our EOF, the FIN already received.

        After a FIN, ``recv()`` returns ``b""`` whatever comes next; only the
        socket's pending error shows a later reset.
        """
        time.sleep(max(0.0, min(seconds, self.deadline - time.monotonic())))
        if self.connection.pending_error():
            self.ended_by_server = RESET
            raise self._reset_failure()

    def close(self) -> None:
        self.connection.close()

    def abort(self) -> None:
        """Close from another thread: ``shutdown`` first, as it wakes a blocked call."""
        self.connection.abort()

    # -- plumbing ---------------------------------------------------------------

    def _log_sent(self, data: bytes) -> None:
        room = SENT_SHOWN + 1 - len(self._sent_head)
        if room > 0:
            self._sent_head += data[:room]
        self._sent_total += len(data)

    def _pump(self, out, done, doing: Message) -> None:
        """Move bytes both ways until ``out`` is sent and ``done()``, or fail.

        The timeout counts from the last byte that moved either way, so a slow but
        steady server is not late; the check's deadline bounds the whole.
        """
        last_progress = time.monotonic()
        while True:
            if out is not None and not out:
                out = None
            if out is None:
                if done():
                    return
                if self.ended_by_server is not None:
                    raise self._ended_early(doing)  # what done() waits for can never come
            now = time.monotonic()
            if now >= self.deadline:
                raise self._failure(Message("the check ran out of time while {doing}", doing=doing))
            wait = min(self.target.timeout - (now - last_progress), self.deadline - now)
            if wait <= 0:
                raise _Timeout(self._late(doing), self.evidence(self.matcher.shortfall()))
            readable, writable, _ = self.connection.wait(
                wait, read=self.ended_by_server is None, write=out is not None
            )
            if readable or writable:
                if readable and self.ended_by_server is None:
                    self._read()
                    last_progress = time.monotonic()
                if writable and out is not None:
                    sent = self._write(out)
                    if sent is None:
                        out = None  # reset: the rest can never be delivered
                    elif sent:
                        out = out[sent:]
                        last_progress = time.monotonic()

    def _read(self) -> None:
        try:
            data = self.connection.receive_some()
        except OSError:
            self._note_reset()
            return
        if data is None:
            return
        if not data:
            self.ended_by_server = FIN
            return
        self._compare(data)
        if self.connection.closed_after:
            self.ended_by_server = FIN

    def _compare(self, data: bytes) -> None:
        try:
            self.matcher.receive(data)
        except Mismatch as mismatch:
            raise self._failure(self._differs_reason(mismatch), mismatch) from None

    def _write(self, out) -> int | None:
        """Bytes sent, or ``None`` when the connection can take no more."""
        try:
            return self.connection.send_some(out)
        except OSError:
            self._note_reset()
            self._read_what_is_left()
            return None

    def _note_reset(self) -> None:
        self.ended_by_server = RESET

    def _read_what_is_left(self) -> None:
        """Replies that arrived before a reset can still be read: compare them too."""
        if data := self.connection.receive_rest():
            self._compare(data)

    # -- failures ---------------------------------------------------------------

    def _differs_reason(self, mismatch: Mismatch) -> str:
        if not mismatch.expected:
            return Message("the server sent more than the protocol allows")
        if not mismatch.got:
            return Message("the reply is incomplete")
        return Message("the reply differs from what the protocol says")

    def _late(self, doing: Message) -> Message:
        if doing is _WAITING_FOR_REPLY and self.matcher.owed:
            if self.matcher.matched:
                return Message(
                    "the reply stopped: {count} more byte(s) expected, none came within {seconds}s",
                    count=self.matcher.owed, seconds=self.target.timeout,
                )
            return Message("no reply within {seconds}s", seconds=self.target.timeout)
        return Message(
            "the server made no progress for {seconds}s while {doing}",
            seconds=self.target.timeout, doing=doing,
        )

    def _ended_early(self, doing: Message) -> CheckFailed:
        reset = self.ended_by_server == RESET
        if self.matcher.owed:
            if reset:
                return self._failure(
                    Message("the server reset the connection before sending the whole reply")
                )
            return self._failure(
                Message("the server closed the connection before sending the whole reply")
            )
        if reset:
            return self._failure(
                Message("the server reset the connection while {doing}", doing=doing)
            )
        return self._failure(Message("the server closed the connection while {doing}", doing=doing))

    def _reset_failure(self) -> CheckFailed:
        return self._failure(
            Message("the server reset the connection (RST) instead of closing it cleanly (FIN)"),
            hint=_HINT_RESET,
        )

    def _failure(
        self, reason: str, mismatch: Mismatch | None = None, hint: str | None = None
    ) -> CheckFailed:
        if mismatch is None:
            mismatch = self.matcher.shortfall()
        return CheckFailed(reason, self.evidence(mismatch), hint)

    def evidence(self, mismatch: Mismatch) -> Evidence:
        if not (mismatch.expected or mismatch.got):
            return Evidence(
                sent=bytes(self._sent_head[:SENT_SHOWN]),
                sent_total=self._sent_total,
                before=mismatch.before,
                got_more=mismatch.at > len(mismatch.before),
            )
        return Evidence(
            sent=bytes(self._sent_head[:SENT_SHOWN]),
            sent_total=self._sent_total,
            before=mismatch.before,
            expected=mismatch.expected[:CONTEXT],
            got=mismatch.got[:CONTEXT],
            expected_more=len(mismatch.expected) > CONTEXT,
            got_more=len(mismatch.got) > CONTEXT,
            difference_at=mismatch.at,
        )


_SENDING = Message("sending")
_WAITING_FOR_REPLY = Message("waiting for the reply")
_WAITING_FOR_CLOSE = Message("waiting for the close")
"""What a conversation can be doing when the server stops moving (said in its failures)."""


class _Timeout(CheckFailed):
    """The server's next move did not come within the target's timeout."""
