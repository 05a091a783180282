"""Noticing, while the interactive client waits at its prompt, that the server has gone.

``input()`` blocks the main thread, so the socket is watched by a second thread:
as soon as the server closes or resets the connection while the user is at the
prompt, the user is told, as telnet does, instead of losing the next line typed.

Only the prompt is watched: during a round trip the socket belongs to the main
thread, and the watcher, which takes a lock the main thread also takes on
leaving the prompt, never looks at it then. The watcher only peeks
(``MSG_PEEK``); it never consumes a byte. Over TLS nothing can be peeked (a
server's close begins with close_notify, which only a read decodes), so there
it reads, at the prompt and under the same lock, and the connection keeps any
bytes it read for the client: TLS session tickets read that way are nothing for
the user, close_notify is the server gone. Both are
``Duplex.server_closed_now()``, the client's own way of asking.
"""

import select
import signal
import socket
import threading

from upper.client.duplex import Duplex

INTERRUPT = getattr(signal, "SIGUSR1", None)
RESEND_INTERVAL = 0.1


class ServerGone(Exception):
    """The server closed or reset the connection while the user was at the prompt."""


def can_interrupt_input() -> bool:
    return INTERRUPT is not None and hasattr(signal, "pthread_kill")


class ServerWatch:
    """Watches ``connection`` while ``read_line()`` waits for the user. Create it in the
    main thread.

    Resource handling:

      ``close()`` (or leaving the ``with`` block) wakes the watcher through a
      socket pair and joins it, and puts back the previous SIGUSR1 handler;
      call it before closing the connection, so the watcher never selects on a
      closed descriptor.

    Error handling:

      On POSIX the watcher interrupts ``input()`` with SIGUSR1 aimed at the
      main thread (``pthread_kill``), whose handler raises ``ServerGone``. The
      signal is resent until the main thread has noticed: one that lands just
      before ``input()`` blocks would otherwise wait for the next key. Where
      threads cannot be signalled (Windows) nothing interrupts a console read,
      so the watcher calls ``on_gone_unattended`` instead (the command line
      prints its one line there and ends the process). A reset is kept in
      ``cause``, so the message can say so.
    """

    def __init__(self, connection: Duplex, on_gone_unattended=None):
        self.connection = connection
        self.sock = connection.socket
        self.on_gone_unattended = on_gone_unattended
        self.gone = False
        self.cause: OSError | None = None
        """The reset that ended the connection, or None if the server closed it."""
        self._main = threading.get_ident()
        self._lock = threading.Lock()
        self._at_prompt = False
        self._in_input = False
        self._prompting = threading.Event()
        self._noticed = threading.Event()
        self._closing = False
        self._wake_read, self._wake_write = socket.socketpair()
        self._previous_handler = None
        if can_interrupt_input():
            self._previous_handler = signal.signal(INTERRUPT, self._interrupted)
        self._thread = threading.Thread(target=self._watch, name="server-watch", daemon=True)
        self._thread.start()

    def read_line(self, prompt: str) -> str:
        """``input(prompt)``, but ``ServerGone`` as soon as the server goes away meanwhile."""
        with self._lock:
            self._at_prompt = True
        self._prompting.set()
        line = None
        try:
            self._in_input = True
            line = input(prompt)
            self._in_input = False
        except ServerGone:
            pass
        finally:
            self._in_input = False
            self._prompting.clear()
            with self._lock:
                self._at_prompt = False
        if self.gone:
            self._noticed.set()
            raise ServerGone
        return line

    def close(self) -> None:
        self._closing = True
        self._noticed.set()
        self._prompting.set()
        try:
            self._wake_write.send(b"x")
        except OSError:
            pass
        self._thread.join(5)
        if self._previous_handler is not None:
            signal.signal(INTERRUPT, self._previous_handler)
        self._wake_read.close()
        self._wake_write.close()

    def __enter__(self) -> "ServerWatch":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    # -- the watcher thread ---------------------------------------------------

    def _interrupted(self, signum, frame) -> None:
        if self._in_input and self.gone:  # not a SIGUSR1 from someone else
            raise ServerGone

    def _watch(self) -> None:
        while True:
            self._prompting.wait()
            if self._closing:
                return
            try:
                readable, _, _ = select.select([self.sock, self._wake_read], [], [])
            except (OSError, ValueError):
                return
            if self._closing:
                return
            with self._lock:
                if not self._at_prompt:
                    continue  # a reply the main thread reads: not ours to look at
                if not self._readable():
                    continue  # that reply, already read by the main thread
                closed = self._closed_by_server()
                if closed is None:
                    continue  # TLS records with nothing in them for the user: keep watching
                if not closed:
                    # Bytes nobody asked for: not a close; look again at the next prompt.
                    self._prompting.clear()
                    continue
                self.gone = True
            self._tell_main_thread()
            return

    def _readable(self) -> bool:
        """Whether a peek would return at once (the socket has a timeout: it could block)."""
        try:
            return bool(select.select([self.sock], [], [], 0)[0])
        except (OSError, ValueError):
            return True  # let the peek report it

    def _closed_by_server(self) -> bool | None:
        """True at a close or a reset, None if only TLS housekeeping came, False if data
        came (kept by the connection for the client)."""
        try:
            closed = self.connection.server_closed_now()
        except OSError as exc:
            closed, self.connection.reset_cause = True, exc
        self.cause = self.connection.reset_cause
        return closed

    def _tell_main_thread(self) -> None:
        if not can_interrupt_input():
            if self.on_gone_unattended is not None:
                self.on_gone_unattended()
            return
        while not self._noticed.is_set():
            signal.pthread_kill(self._main, INTERRUPT)
            self._noticed.wait(RESEND_INTERVAL)
