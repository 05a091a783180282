"""The wrong servers the Locust harness's matrix needs beyond ``wrong_servers``: each
a ``wrong_servers.CorrectServer`` with one mistake about *when* or *whether* a
reply or the close comes (the mistakes about *what* a reply says are there).

They listen on 127.0.0.1 port 0; ``host(server)`` is the ``--host`` for Locust.
"""

import threading
import time

from wrong_servers import CorrectServer, EchoServer, NeverClosingServer, ResetOnCloseServer

__all__ = [
    "ClosingEarlyServer",
    "DroppedReplyServer",
    "EchoServer",
    "NeverAnsweringServer",
    "NeverClosingServer",
    "ResetOnCloseServer",
    "SlowServer",
    "SwappedRepliesServer",
    "host",
]


def host(server: CorrectServer) -> str:
    return f"tcp://127.0.0.1:{server.address[1]}"


class NeverAnsweringServer(CorrectServer):
    """Accepts and reads, never answers; ``lines_read`` is set once a reply was due."""

    mistake = "never answers"

    def __init__(self) -> None:
        super().__init__()
        self.lines_read = threading.Event()

    def send_reply(self, conn, reply):
        self.lines_read.set()


class SlowServer(CorrectServer):
    """Right, but each reply waits ``delay`` seconds (slow, not wrong)."""

    mistake = "none, only slow"

    def __init__(self, delay: float) -> None:
        super().__init__()
        self.delay = delay

    def send_reply(self, conn, reply):
        time.sleep(self.delay)
        conn.sendall(reply)


class _ReplyLines(CorrectServer):
    """Replies go out whole lines at a time, each through ``reply_line(index, line)``,
    ``index`` counting the connection's replies from 0 (each connection has its thread)."""

    def __init__(self) -> None:
        super().__init__()
        self._connection = threading.local()

    def new_session(self):
        self._connection.partial = b""
        self._connection.index = 0
        return super().new_session()

    def send_reply(self, conn, reply):
        state = self._connection
        pending = state.partial + reply
        cut = pending.rfind(b"\n") + 1
        state.partial = pending[cut:]
        out = []
        for line in pending[:cut].split(b"\n")[:-1]:
            out.append(self.reply_line(state.index, line + b"\n"))
            state.index += 1
        if data := b"".join(out):
            conn.sendall(data)
        self.after_replies(conn, state.index)

    def reply_line(self, index: int, line: bytes) -> bytes:
        return line

    def after_replies(self, conn, replies: int) -> None:
        pass


class DroppedReplyServer(_ReplyLines):
    """Never sends the reply to the ``dropped``-th line of a connection; answers the rest."""

    mistake = "drops a reply"

    def __init__(self, dropped: int) -> None:
        super().__init__()
        self.dropped = dropped

    def reply_line(self, index, line):
        return b"" if index == self.dropped else line


class ClosingEarlyServer(_ReplyLines):
    """Closes each connection right after its ``replies``-th reply, before DESCONEXION."""

    mistake = "closes before DESCONEXION"

    def __init__(self, replies: int) -> None:
        super().__init__()
        self.replies = replies

    def after_replies(self, conn, replies):
        if replies >= self.replies:
            conn.close()  # a FIN now; the serving thread's next read fails and ends it


class SwappedRepliesServer(_ReplyLines):
    """Answers each pair of lines in the wrong order: the second line's reply first."""

    mistake = "swaps replies"

    def reply_line(self, index, line):
        if index % 2 == 0:
            self._connection.held = line
            return b""
        held, self._connection.held = self._connection.held, b""
        return line + held

    def end_session(self, conn):
        if held := getattr(self._connection, "held", b""):  # an odd number of lines
            conn.sendall(held)
        super().end_session(conn)
