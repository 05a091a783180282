"""Pre-forked workers sharing the listening sockets, and the parent that supervises them.

The parent never starts a gevent hub: it forks first, and each worker builds its
own server on the inherited sockets, so the kernel spreads connections over the
workers. The design uses only what every POSIX system has (``fork``,
``pipe``, ``signal.set_wakeup_fd``, ``select``), so the same code runs on Linux
and macOS; Linux-only calls such as ``sigtimedwait`` and ``prctl`` are not used.

The parent's wait: its signal handlers do nothing; ``set_wakeup_fd`` makes the
interpreter write each arriving signal's number to a pipe, and the parent
``select``s on that pipe. A signal that arrives at any moment, even just before
the ``select``, leaves a byte in the pipe, so no signal is ever missed, and the
signal numbers are read in the normal flow of the program.

The workers' tie to the parent: a pipe (the "lifeline") whose only write end
the parent holds. Each worker watches the read end; when the parent dies,
however it dies (SIGKILL included), the kernel closes the write end and every
worker reads end of file. ``prctl(PR_SET_PDEATHSIG)`` would do this on Linux
only, and has a race at fork that the pipe does not have: a parent that died
before the worker looked has already closed its end.
"""

import errno
import logging
import os
import select
import signal
import time

import gevent
from gevent.event import Event
from gevent.socket import wait_read

from upper_server.serving import STOP_SIGNALS, serve_until_signalled

log = logging.getLogger(__name__)

RESTART_BACKOFF_MAX = 5.0
STOP_GRACE = 5.0
_CHECK_INTERVAL = 1.0


def can_fork() -> bool:
    """Whether pre-forked workers can run here (not on Windows)."""
    return hasattr(os, "fork")


def usable_cpus() -> int:
    """CPUs this process may run on (``sched_getaffinity`` is Linux-only)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


class Supervisor:
    """Keeps ``count`` workers running until SIGTERM or SIGINT, then stops them all.

    ``make_server()`` runs in each worker and returns the ``UpperServer`` (not yet
    started) that the worker serves on the inherited listening sockets.

    Resource handling:

      On SIGTERM or SIGINT the parent closes its listening sockets first, then
      passes SIGTERM to every worker, each of which closes its own copies at
      once: from the moment the signal arrives no process holds a listening
      socket that nobody will accept from, so new connections are refused.
      Workers get ``shutdown_timeout`` + ``STOP_GRACE`` seconds, then are
      killed; every one is reaped before ``run()`` returns. Signals stay
      blocked across each ``fork`` until the worker has its own handlers, so a
      SIGTERM sent to a worker just born is a graceful stop, not lost. A worker
      keeps nothing of the parent's supervision: no handlers, no wakeup pipe,
      no write end of the lifeline.

    Error handling:

      A worker that dies is logged and replaced, after a pause that doubles
      (up to ``RESTART_BACKOFF_MAX``) while workers keep dying, so a worker that
      fails at start cannot make the parent fork in a tight loop; signals are
      still heard during the pause. A worker's unexpected exception is logged
      with its traceback and ends that worker only (exit code 1).
    """

    def __init__(self, listeners, count: int, make_server, shutdown_timeout: float = 10.0):
        self.listeners = listeners
        self.count = count
        self.make_server = make_server
        self.shutdown_timeout = shutdown_timeout
        self.workers: dict[int, float] = {}  # pid -> when it started
        self._restart_delay = 0.0
        self._restart_at: float | None = None
        self._wakeup_read = self._wakeup_write = -1
        self._lifeline_read = self._lifeline_write = -1
        self._previous_handlers = {}

    def run(self, on_ready=lambda: None) -> int:
        self._lifeline_read, self._lifeline_write = os.pipe()
        self._wakeup_read, self._wakeup_write = os.pipe()
        for fd in (self._wakeup_read, self._wakeup_write):
            os.set_blocking(fd, False)
        self._install_handlers()
        try:
            for _ in range(self.count):
                self._spawn()
            on_ready()
            while True:
                if self._wait_for_signals(self._next_wait()) & set(STOP_SIGNALS):
                    log.info("shutting down %d worker(s)", len(self.workers))
                    return self._stop_all()
                self._replace_dead_workers()
        finally:
            self._restore_handlers()
            self._close_pipes(self._lifeline_read, self._lifeline_write)

    # -- signals --------------------------------------------------------------

    def _install_handlers(self) -> None:
        signal.set_wakeup_fd(self._wakeup_write)
        for signum in (*STOP_SIGNALS, signal.SIGCHLD):
            # Only the byte set_wakeup_fd writes matters; the handler itself does nothing.
            self._previous_handlers[signum] = signal.signal(signum, _note_signal)

    def _restore_handlers(self) -> None:
        for signum, handler in self._previous_handlers.items():
            signal.signal(signum, handler)
        self._previous_handlers.clear()
        signal.set_wakeup_fd(-1)

    def _close_pipes(self, *others: int) -> None:
        for fd in (self._wakeup_read, self._wakeup_write, *others):
            os.close(fd)

    def _wait_for_signals(self, timeout: float) -> set[int]:
        """The signals that arrive within ``timeout`` seconds (empty if none)."""
        ready, _, _ = select.select([self._wakeup_read], [], [], timeout)
        arrived = set()
        while ready:
            try:
                data = os.read(self._wakeup_read, 512)
            except BlockingIOError:
                break
            if not data:
                break
            arrived.update(data)
        return arrived

    def _next_wait(self) -> float:
        if self._restart_at is None:
            return _CHECK_INTERVAL
        return max(0.0, min(_CHECK_INTERVAL, self._restart_at - time.monotonic()))

    # -- workers --------------------------------------------------------------

    def _spawn(self) -> None:
        # Blocked until the worker's own handlers are in place (see Resource handling).
        parent_mask = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
        try:
            pid = os.fork()
            if pid == 0:
                os._exit(self._worker_main(parent_mask))
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, parent_mask)
        self.workers[pid] = time.monotonic()
        log.debug("worker %d started", pid)

    def _worker_main(self, parent_mask) -> int:
        try:
            # Nothing of the parent's supervision survives in the worker, and the worker
            # holds no write end of the lifeline: only the parent's keeps it open.
            self._restore_handlers()
            self._close_pipes(self._lifeline_write)
            server = self.make_server()
            serve_worker(
                server,
                self._lifeline_read,
                on_ready=lambda: signal.pthread_sigmask(signal.SIG_SETMASK, parent_mask),
            )
            return 0
        except BaseException:
            log.exception("worker %d failed", os.getpid())
            return 1

    def _reap(self):
        """Yield (pid, exit description) for every worker that has exited."""
        while self.workers:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if self.workers.pop(pid, None) is not None:
                if os.WIFSIGNALED(status):
                    yield pid, f"killed by {signal.Signals(os.WTERMSIG(status)).name}"
                else:
                    yield pid, f"exit code {os.waitstatus_to_exitcode(status)}"

    def _replace_dead_workers(self) -> None:
        for pid, how in self._reap():
            log.warning("worker %d died (%s); starting a new one", pid, how)
        if len(self.workers) == self.count:
            return
        now = time.monotonic()
        if self._restart_at is None:
            self._restart_at = now + self._restart_delay
        if now < self._restart_at:
            return  # the main loop wakes up in time, and still hears signals meanwhile
        while len(self.workers) < self.count:
            self._spawn()
        self._restart_at = None
        self._restart_delay = min(RESTART_BACKOFF_MAX, max(0.1, self._restart_delay * 2))

    def _stop_all(self) -> int:
        # First of all: nobody will accept from the parent's copies, so close them now.
        for listener in self.listeners:
            listener.close()
        for pid in self.workers:
            _signal(pid, signal.SIGTERM)
        deadline = time.monotonic() + self.shutdown_timeout + STOP_GRACE
        self._wait_for_workers(deadline)
        for pid in self.workers:
            log.warning("worker %d did not stop in time; killing it", pid)
            _signal(pid, signal.SIGKILL)
        self._wait_for_workers(float("inf"))
        return 0

    def _wait_for_workers(self, deadline: float) -> None:
        while True:
            list(self._reap())
            remaining = deadline - time.monotonic()
            if not self.workers or remaining <= 0:
                return
            self._wait_for_signals(min(remaining, 0.1))


def serve_worker(server, lifeline_fd: int, on_ready) -> None:
    """A worker's life: serve until SIGTERM, SIGINT, or the parent's death."""
    stop_requested = Event()

    def watch_parent() -> None:
        wait_read(lifeline_fd)  # only end of file ever arrives: nobody writes
        log.warning("worker %d: the parent is gone; stopping", os.getpid())
        stop_requested.set()

    watcher = gevent.spawn(watch_parent)
    try:
        serve_until_signalled(server, on_ready=on_ready, stop_requested=stop_requested)
    finally:
        watcher.kill(block=False)


def _note_signal(signum, frame) -> None:
    """The parent's handler: the signal's number is already in the wakeup pipe."""


def _signal(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass
    except OSError as exc:
        if exc.errno != errno.ESRCH:
            raise
