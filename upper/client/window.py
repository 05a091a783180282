"""Windowed pipelining: up to ``depth`` lines in flight on one ``UpperClient``.

A window sends ``depth`` lines, then, each time replies arrive, as many more
lines as replies came, so the server always holds up to ``depth`` lines. Each
reply is matched, in order, to the line it answers, with the time that line was
sent: the caller (the Locust user) judges and records it. What is in flight is
public (``in_flight``), so a caller that meets a failure can account for every
line still owed.
"""

from collections import deque
from collections.abc import Iterable, Iterator
from itertools import islice
from time import perf_counter
from typing import Generic, TypeVar

from upper.client.errors import ConnectionLost

Tag = TypeVar("Tag")


class ExtraReply(ConnectionLost):
    """A reply came when no line was in flight; the connection is closed (out of step)."""

    def __init__(self, reply: bytes, message: str) -> None:
        super().__init__(message)
        self.reply = reply


class Window(Generic[Tag]):
    """``(line, tag)`` pairs sent on ``client`` with up to ``depth`` in flight.

    ``replies()`` yields ``(reply, tag, sent_at, arrived)`` for each reply, the
    reply without its newline and ``tag`` the one given with its line (the
    Locust user's is the expected reply). ``in_flight`` holds ``(tag, sent_at)``
    for the lines still unanswered, oldest first.
    """

    def __init__(self, client, lines: Iterable[tuple[bytes, Tag]], depth: int) -> None:
        if depth < 1:
            raise ValueError(f"a window holds at least one line, not {depth}")
        self.client = client
        self.depth = depth
        self.in_flight: deque[tuple[Tag, float]] = deque()
        self._source = iter(lines)

    def replies(self) -> Iterator[tuple[bytes, Tag, float, float]]:
        client = self.client
        in_flight = self.in_flight
        batch = list(islice(self._source, self.depth))
        try:
            # The connection's own methods, bound once: the Locust user's pipelined load
            # comes through here once per batch, and UpperClient's send_lines() and
            # receive_lines() would add two calls and a connection check to each (80 ns
            # a line of the pipeline's 1,430 on a scripted socket, 3 replies a read).
            connection = client.connection
            send_lines = connection.send_all
            receive_lines = connection.read_lines
            while True:
                if batch:
                    sent_at = perf_counter()
                    for _, tag in batch:
                        in_flight.append((tag, sent_at))
                    send_lines(b"".join([line for line, _ in batch]))
                if not in_flight:
                    return
                replies = receive_lines()
                arrived = perf_counter()
                for reply in replies:
                    if not in_flight:
                        client.close()
                        raise ExtraReply(reply, f"server {client.address} sent a reply to no line")
                    tag, sent_at = in_flight.popleft()
                    yield reply, tag, sent_at, arrived
                batch = list(islice(self._source, len(replies)))
        except GeneratorExit:
            raise
        except BaseException:
            client.close()  # out of step: replies to the lines in flight may still come
            raise
