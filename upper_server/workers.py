"""Pre-forked workers sharing one listening socket, and the parent that supervises them.

The parent never starts a gevent hub: it forks first, and each worker builds its
own server on the inherited socket, so the kernel spreads connections over the
workers. The parent waits for signals synchronously (``sigtimedwait``), which
keeps it free of signal-handler races.
"""

import ctypes
import logging
import os
import signal
import time

log = logging.getLogger(__name__)

_SIGNALS = {signal.SIGCHLD, signal.SIGTERM, signal.SIGINT}
_PR_SET_PDEATHSIG = 1
_RESTART_BACKOFF_MAX = 5.0
_STOP_GRACE = 5.0


def _die_with_parent() -> None:
    """Ask Linux to send us SIGTERM if the parent dies, so no worker outlives it."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        log.debug("prctl(PR_SET_PDEATHSIG) unavailable; workers rely on the parent's SIGTERM")


class Supervisor:
    """Keeps ``count`` workers running until SIGTERM or SIGINT, then stops them all."""

    def __init__(self, listener, count: int, make_server, shutdown_timeout: float = 10.0):
        self.listener = listener
        self.count = count
        self.make_server = make_server
        self.shutdown_timeout = shutdown_timeout
        self.workers: dict[int, float] = {}  # pid -> when it started
        self._parent_pid = os.getpid()
        self._restart_delay = 0.0

    def run(self, on_ready=lambda: None) -> int:
        signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)
        for _ in range(self.count):
            self._spawn()
        on_ready()
        while True:
            info = signal.sigtimedwait(_SIGNALS, 1.0)
            if info is None or info.si_signo == signal.SIGCHLD:
                self._replace_dead_workers()
            else:
                log.info("shutting down %d worker(s)", len(self.workers))
                return self._stop_all()

    def _spawn(self) -> None:
        pid = os.fork()
        if pid == 0:
            os._exit(self._worker_main())
        self.workers[pid] = time.monotonic()
        log.debug("worker %d started", pid)

    def _worker_main(self) -> int:
        try:
            _die_with_parent()
            if os.getppid() != self._parent_pid:
                return 0  # the parent died before we could ask to follow it
            signal.pthread_sigmask(signal.SIG_UNBLOCK, _SIGNALS)
            from upper_server.cli import serve_until_signalled

            server = self.make_server()
            server.start()
            serve_until_signalled(server)
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
        missing = self.count - len(self.workers)
        if not missing:
            return
        # A worker that dies at once would otherwise be restarted in a tight loop.
        if self._restart_delay:
            time.sleep(self._restart_delay)
        for _ in range(missing):
            self._spawn()
        self._restart_delay = min(_RESTART_BACKOFF_MAX, max(0.1, self._restart_delay * 2))

    def _stop_all(self) -> int:
        for pid in self.workers:
            _signal(pid, signal.SIGTERM)
        deadline = time.monotonic() + self.shutdown_timeout + _STOP_GRACE
        while self.workers and time.monotonic() < deadline:
            list(self._reap())
            if self.workers:
                signal.sigtimedwait({signal.SIGCHLD}, 0.1)
        for pid in self.workers:
            log.warning("worker %d did not stop in time; killing it", pid)
            _signal(pid, signal.SIGKILL)
        while self.workers:
            list(self._reap())
            if self.workers:
                signal.sigtimedwait({signal.SIGCHLD}, 0.1)
        self.listener.close()
        return 0


def _signal(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass
