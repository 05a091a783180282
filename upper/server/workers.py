"""Worker processes sharing the listening sockets, and the parent that supervises them.

Every worker is a fresh interpreter (``python -m upper_server`` with the same
arguments) that inherits the listening sockets, so the kernel spreads
connections over the workers, and a reload runs the code as it is on disk
*now*: a worker forked from the parent would run the parent's old code. The
worker learns what it inherited from one environment variable,
``UPPER_WORKER`` (``listen=3,4;lifeline=5;ready=6``), as a socket-activated
server learns it from ``LISTEN_FDS``; it is not a command-line flag, so users
never see it. The design uses only what every POSIX system has (``fork`` and
``exec`` through ``subprocess``, ``pipe``, ``signal.set_wakeup_fd``,
``select``), so the same code runs on Linux and macOS.

The parent's wait: its signal handlers do nothing; ``set_wakeup_fd`` makes the
interpreter write each arriving signal's number to a pipe, and the parent
``select``s on that pipe and on the workers' *ready pipes*. A signal that
arrives at any moment leaves a byte in the pipe, so none is ever missed, and
signals are handled in the normal flow of the program.

Readiness: each worker gets the write end of its own ready pipe and writes one
byte once it serves (its handlers are in place and its server accepts). End of
file without that byte means it died before serving.

The *lifeline*: a pipe whose only write end the parent holds, one per
*generation* of workers. Each worker watches the read end; end of file means
"you are being replaced, or the parent is gone": the worker closes its
listening sockets and lets its sessions end on their own, for at most
``--shutdown-timeout``, then stops as on SIGTERM. The parent retires a whole
generation by closing that generation's write end; when the parent dies,
however it dies (SIGKILL included), the kernel closes them all.

Reload (SIGHUP): a new generation starts on the same sockets; only once every
new worker has said it serves is the old generation's lifeline closed. Until
then both accept from the same sockets, so no connection is refused and none
is reset. If a new worker exits or is not serving within ``READY_TIMEOUT``,
the new generation is retired instead, the old one keeps serving, and the
reason is logged.
"""

from __future__ import annotations

import errno
import logging
import os
import select
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass

from upper.server import systemd
from upper.server.serving import RELOAD_SIGNAL, STOP_SIGNALS, serve_until_signalled

log = logging.getLogger(__name__)

WORKER_VARIABLE = "UPPER_WORKER"
RESTART_BACKOFF_MAX = 5.0
STOP_GRACE = 5.0
READY_TIMEOUT = 30.0
"""Seconds a new worker gets to import the code and serve before it counts as failed."""
_CHECK_INTERVAL = 1.0
_HANDLED_SIGNALS = (*STOP_SIGNALS, RELOAD_SIGNAL) if RELOAD_SIGNAL else STOP_SIGNALS


def can_fork() -> bool:
    """Whether worker processes can run here (not on Windows)."""
    return hasattr(os, "fork")


def usable_cpus() -> int:
    """CPUs this process may run on (``sched_getaffinity`` is Linux-only)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


class Lifeline:
    """One generation's pipe: closing the write end retires every worker holding the read end."""

    def __init__(self) -> None:
        self.read, self.write = os.pipe()

    def close(self) -> None:
        for fd in (self.read, self.write):
            if fd >= 0:
                os.close(fd)
        self.read = self.write = -1


@dataclass(eq=False)
class Worker:
    process: subprocess.Popen
    ready_pipe: int  # the parent's read end; -1 once it has said something or ended
    lifeline: Lifeline
    ready: bool = False
    failed: bool = False  # ended before it served
    retire_by: float | None = None  # when it is killed if still running

    @property
    def pid(self) -> int:
        return self.process.pid

    def exit_description(self) -> str:
        code = self.process.returncode
        if code is None:
            return "still running"
        if code < 0:
            return f"killed by {signal.Signals(-code).name}"
        return f"exit code {code}"


def spawn_worker(command: list[str], listeners, lifeline: Lifeline) -> Worker:
    """Start ``command`` as a worker on ``listeners``, tied to ``lifeline``.

    The stop signals stay blocked across the start (a blocked mask survives
    ``exec``) until the worker's own handlers are in place, so a SIGTERM sent
    to a worker just born is a graceful stop, not a sudden death.
    """
    ready_read, ready_write = os.pipe()
    fds = [listener.fileno() for listener in listeners]
    env = dict(os.environ)
    env.pop("NOTIFY_SOCKET", None)  # only the main process talks to systemd
    env[WORKER_VARIABLE] = (
        f"listen={','.join(map(str, fds))};lifeline={lifeline.read};ready={ready_write}"
    )
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, env=env, pass_fds=(*fds, lifeline.read, ready_write)
        )
    except BaseException:
        os.close(ready_read)
        raise
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        os.close(ready_write)
    os.set_blocking(ready_read, False)
    log.debug("worker %d started", process.pid)
    return Worker(process, ready_read, lifeline)


class Supervisor:
    """Keeps ``count`` workers (``command``) running until SIGTERM or SIGINT; reloads on SIGHUP.

    Resource handling:

      On SIGTERM or SIGINT the parent closes its listening sockets first, then
      passes SIGTERM to every worker, each of which closes its own copies at
      once: from the moment the signal arrives no process holds a listening
      socket that nobody will accept from, so new connections are refused.
      Workers get ``shutdown_timeout`` + ``STOP_GRACE`` seconds, then are
      killed; retired workers get twice the shutdown timeout (their sessions
      first end on their own, then as on SIGTERM). Every worker is reaped
      before ``run()`` returns.

    Error handling:

      A worker that dies is logged and replaced, after a pause that doubles
      (up to ``RESTART_BACKOFF_MAX``) while workers keep dying, so a worker that
      fails at start cannot make the parent spawn in a tight loop; signals are
      still heard during the pause. Workers that fail to start at first make
      ``run()`` return 1; a reload whose workers fail keeps the old ones.
    """

    def __init__(
        self,
        listeners,
        count: int,
        command: list[str],
        shutdown_timeout: float = 10.0,
        on_worker_exit=lambda pid: None,
    ):
        self.listeners = listeners
        self.count = count
        self.command = command
        self.shutdown_timeout = shutdown_timeout
        self.on_worker_exit = on_worker_exit
        self.workers: dict[int, Worker] = {}
        self.lifeline: Lifeline | None = None
        self._restart_delay = 0.0
        self._restart_at: float | None = None
        self._wakeup_read = self._wakeup_write = -1
        self._previous_handlers = {}

    def run(self, on_ready=lambda: None, adopt: Worker | None = None, pending=frozenset()) -> int:
        """Supervise until told to stop; the exit code.

        ``adopt`` is a worker already serving (a single process that handed its
        sockets over), with its lifeline; ``pending`` the signals that arrived
        during the handover, handled first.
        """
        self._wakeup_read, self._wakeup_write = os.pipe()
        for fd in (self._wakeup_read, self._wakeup_write):
            os.set_blocking(fd, False)
        self._install_handlers()
        try:
            if adopt is not None:
                self.lifeline = adopt.lifeline
                self.workers[adopt.pid] = adopt
            else:
                self.lifeline = Lifeline()
                started, why, arrived = self._start_generation()
                if not started:
                    if not arrived & set(STOP_SIGNALS):
                        log.error("workers failed to start: %s", why)
                    self._stop_all()
                    return 0 if arrived & set(STOP_SIGNALS) else 1
            on_ready()
            arrived = set(pending)
            while True:
                arrived |= self._wait(self._next_wait())
                if arrived & set(STOP_SIGNALS):
                    systemd.notify("STOPPING=1")
                    log.info("shutting down %d worker(s)", len(self.workers))
                    return self._stop_all()
                if RELOAD_SIGNAL in arrived:
                    arrived = self._reload()
                else:
                    arrived = set()
                self._replace_dead_workers()
                self._kill_overdue()
        finally:
            self._restore_handlers()
            for fd in (self._wakeup_read, self._wakeup_write):
                os.close(fd)
            for worker in self.workers.values():
                worker.lifeline.close()
            if self.lifeline is not None:
                self.lifeline.close()

    # -- signals and the wait -------------------------------------------------

    def _install_handlers(self) -> None:
        signal.set_wakeup_fd(self._wakeup_write)
        for signum in (*_HANDLED_SIGNALS, signal.SIGCHLD):
            # Only the byte set_wakeup_fd writes matters; the handler itself does nothing.
            self._previous_handlers[signum] = signal.signal(signum, _note_signal)
        # A handover from single-process mode blocked these until now (serving.py).
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _HANDLED_SIGNALS)

    def _restore_handlers(self) -> None:
        for signum, handler in self._previous_handlers.items():
            signal.signal(signum, handler)
        self._previous_handlers.clear()
        signal.set_wakeup_fd(-1)

    def _wait(self, timeout: float) -> set[int]:
        """Wait up to ``timeout`` s for a signal or a worker's readiness; the signals."""
        pipes = {w.ready_pipe: w for w in self.workers.values() if w.ready_pipe >= 0}
        readable, _, _ = select.select([self._wakeup_read, *pipes], [], [], timeout)
        arrived = set()
        for fd in readable:
            if fd == self._wakeup_read:
                arrived |= _drain_signals(fd)
            else:
                self._heard_from(pipes[fd])
        return arrived

    def _heard_from(self, worker: Worker) -> None:
        try:
            said = os.read(worker.ready_pipe, 1)
        except BlockingIOError:
            return
        os.close(worker.ready_pipe)
        worker.ready_pipe = -1
        if said:
            worker.ready = True
            log.debug("worker %d serving", worker.pid)
        else:
            worker.failed = True
            try:
                worker.process.wait(timeout=STOP_GRACE)
            except subprocess.TimeoutExpired:
                pass

    def _next_wait(self) -> float:
        if self._restart_at is None:
            return _CHECK_INTERVAL
        return max(0.0, min(_CHECK_INTERVAL, self._restart_at - time.monotonic()))

    # -- workers --------------------------------------------------------------

    def _spawn(self) -> Worker:
        worker = spawn_worker(self.command, self.listeners, self.lifeline)
        self.workers[worker.pid] = worker
        return worker

    def _start_generation(self) -> tuple[bool, str, set[int]]:
        """Start ``count`` workers on ``self.lifeline`` and wait until all serve.

        Returns whether they all serve, why not, and the signals that arrived meanwhile
        (a stop signal ends the wait).
        """
        new = [self._spawn() for _ in range(self.count)]
        deadline = time.monotonic() + READY_TIMEOUT
        arrived: set[int] = set()
        while True:
            failed = [worker for worker in new if worker.failed]
            if failed:
                worker = failed[0]
                return False, f"worker {worker.pid} {worker.exit_description()}", arrived
            if all(worker.ready for worker in new):
                return True, "", arrived
            if arrived & set(STOP_SIGNALS):
                return False, "stopped", arrived
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False, f"not serving after {READY_TIMEOUT}s", arrived
            arrived |= self._wait(min(remaining, _CHECK_INTERVAL))

    def _reload(self) -> set[int]:
        """Replace every worker with one running the code on disk now; signals heard meanwhile."""
        systemd.notify_reloading()
        old_lifeline = self.lifeline
        old = [w for w in self.workers.values() if w.lifeline is old_lifeline]
        log.info("reloading: starting %d new worker(s)", self.count)
        self.lifeline = Lifeline()
        started, why, arrived = self._start_generation()
        if started:
            retiring, kept = old_lifeline, self.lifeline
        else:
            retiring, kept = self.lifeline, old_lifeline
        self.lifeline = kept
        retire_by = time.monotonic() + 2 * self.shutdown_timeout + STOP_GRACE
        for worker in self.workers.values():
            if worker.lifeline is retiring:
                worker.retire_by = retire_by
        retiring.close()  # every worker of that generation stops accepting and drains
        if started:
            new = sorted(w.pid for w in self.workers.values() if w.lifeline is kept)
            log.info("reloaded: workers %s replace %s", _pids(new), _pids(w.pid for w in old))
        elif "stopped" != why:
            log.error("reload failed: %s; the old workers keep serving", why)
        systemd.notify("READY=1")
        return arrived

    def _reap(self):
        """Yield every worker that has exited (and forget it)."""
        for worker in list(self.workers.values()):
            if worker.process.poll() is not None:
                del self.workers[worker.pid]
                if worker.ready_pipe >= 0:
                    os.close(worker.ready_pipe)
                    worker.ready_pipe = -1
                self.on_worker_exit(worker.pid)
                yield worker

    def _replace_dead_workers(self) -> None:
        for worker in self._reap():
            if worker.retire_by is None:
                log.warning(
                    "worker %d died (%s); starting a new one",
                    worker.pid,
                    worker.exit_description(),
                )
            else:
                log.debug("retired worker %d ended (%s)", worker.pid, worker.exit_description())
        current = [w for w in self.workers.values() if w.lifeline is self.lifeline]
        if len(current) >= self.count:
            return
        now = time.monotonic()
        if self._restart_at is None:
            self._restart_at = now + self._restart_delay
        if now < self._restart_at:
            return  # the main loop wakes up in time, and still hears signals meanwhile
        for _ in range(self.count - len(current)):
            self._spawn()
        self._restart_at = None
        self._restart_delay = min(RESTART_BACKOFF_MAX, max(0.1, self._restart_delay * 2))

    def _kill_overdue(self) -> None:
        now = time.monotonic()
        for worker in self.workers.values():
            if worker.retire_by is not None and now >= worker.retire_by:
                log.warning("retired worker %d did not stop in time; killing it", worker.pid)
                _signal(worker.pid, signal.SIGKILL)
                worker.retire_by = float("inf")

    def _stop_all(self) -> int:
        # First of all: nobody will accept from the parent's copies, so close them now.
        for listener in self.listeners:
            listener.close()
        for worker in self.workers.values():
            _signal(worker.pid, signal.SIGTERM)
        self._wait_for_workers(time.monotonic() + self.shutdown_timeout + STOP_GRACE)
        for worker in self.workers.values():
            log.warning("worker %d did not stop in time; killing it", worker.pid)
            _signal(worker.pid, signal.SIGKILL)
        self._wait_for_workers(float("inf"))
        return 0

    def _wait_for_workers(self, deadline: float) -> None:
        while True:
            list(self._reap())
            remaining = deadline - time.monotonic()
            if not self.workers or remaining <= 0:
                return
            self._wait(min(remaining, 0.1))


# -- the worker's side ---------------------------------------------------------------


@dataclass(frozen=True)
class Inheritance:
    """What a worker inherited from its parent (``UPPER_WORKER``)."""

    listeners: list[socket.socket]
    lifeline: int
    ready: int


def inherited(environ=os.environ) -> Inheritance | None:
    """The sockets and pipes this process inherited as a worker, or ``None`` if it is not one."""
    spec = environ.pop(WORKER_VARIABLE, None)
    if spec is None:
        return None
    fields = dict(part.split("=", 1) for part in spec.split(";"))
    listeners = []
    for fd in fields["listen"].split(","):
        sock = socket.socket(fileno=int(fd))
        sock.setblocking(False)
        listeners.append(sock)
    return Inheritance(listeners, int(fields["lifeline"]), int(fields["ready"]))


def run_worker(server, inheritance: Inheritance) -> int:
    """A worker's life: serve until SIGTERM or SIGINT, or drain once its lifeline ends."""
    if RELOAD_SIGNAL:
        # A SIGHUP to the whole process group (a closed terminal) is the parent's business.
        signal.signal(RELOAD_SIGNAL, signal.SIG_IGN)

    def ready() -> None:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
        try:
            os.write(inheritance.ready, b"1")
        except BrokenPipeError:
            pass  # the parent gave up on this worker; its lifeline has ended too
        os.close(inheritance.ready)

    try:
        serve_until_signalled(server, on_ready=ready, lifeline=inheritance.lifeline)
    except BaseException:
        log.exception("worker %d failed", os.getpid())
        return 1
    return 0


def _drain_signals(fd: int) -> set[int]:
    arrived = set()
    while True:
        try:
            data = os.read(fd, 512)
        except BlockingIOError:
            return arrived
        if not data:
            return arrived
        arrived.update(data)


def _pids(pids) -> str:
    return ",".join(str(pid) for pid in sorted(pids))


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


def worker_command(argv: list[str]) -> list[str]:
    """How a worker is started: this same program, afresh, with the same arguments."""
    return [sys.executable, "-m", "upper_server", *argv]
