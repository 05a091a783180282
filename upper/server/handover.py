"""Reload in single-process mode: hand the listening sockets to a fresh worker.

A single process cannot load new code into itself while it serves. On SIGHUP
it starts a worker (a fresh interpreter, as ``--workers`` does) on copies of
its listening sockets and waits, still serving, until the worker says it
serves. Then the process stops accepting, lets its own sessions end, and
becomes the worker's supervisor (``workers.Supervisor`` with one worker): it
keeps its pid, so systemd's ``$MAINPID`` and any pid file stay right, and
every later SIGHUP is an ordinary reload of that one worker. Until the first
SIGHUP nothing changes: one process, no supervisor.
"""

import logging
import os
import subprocess

import gevent
from gevent.event import Event
from gevent.socket import wait_read

from upper.server import systemd
from upper.server.serving import RELOAD_SIGNAL, STOP_SIGNALS
from upper.server.workers import READY_TIMEOUT, STOP_GRACE, Lifeline, Worker, spawn_worker

log = logging.getLogger(__name__)


class Handover:
    """``serving.serve_until_signalled``'s ``on_reload`` for single-process mode.

    After a successful call, ``worker`` serves on ``listeners`` (copies of the
    server's sockets, which the server closes as it drains) and
    ``pending`` names the signals that arrived meanwhile, for the supervisor.
    """

    def __init__(self, listeners, command: list[str]) -> None:
        self.server_listeners = listeners
        self.command = command
        self.listeners: list = []
        self.worker: Worker | None = None
        self._stop_requested = self._reload_requested = Event()
        self.abandoned: list[Worker] = []

    def __call__(self, stop_requested: Event, reload_requested: Event) -> bool:
        self._stop_requested, self._reload_requested = stop_requested, reload_requested
        systemd.notify_reloading()
        log.info("reloading: handing the listening sockets over to a new worker")
        kept = [listener.dup() for listener in self.server_listeners]
        lifeline = Lifeline()
        try:
            worker = spawn_worker(self.command, kept, lifeline)
            why = self._wait_until_serving(worker, stop_requested)
        except OSError as exc:
            why = f"cannot start a worker: {exc}"
            worker = None
        if why is None:
            self.listeners, self.worker = kept, worker
            log.info("reloaded: worker %d serves; this process drains, then supervises", worker.pid)
        else:
            lifeline.close()  # a worker that came up after all retires at once
            if worker is not None:
                worker.process.terminate()
                self.abandoned.append(worker)
                if worker.ready_pipe >= 0:
                    os.close(worker.ready_pipe)
            for listener in kept:
                listener.close()
            if not stop_requested.is_set():
                log.error("reload failed: %s; this process keeps serving", why)
        systemd.notify("READY=1")
        return why is None

    def wait_for_abandoned(self) -> None:
        """Reap the workers of failed reloads, so none outlives this process."""
        for worker in self.abandoned:
            try:
                worker.process.wait(timeout=READY_TIMEOUT + STOP_GRACE)
            except subprocess.TimeoutExpired:
                worker.process.kill()
                worker.process.wait()
        self.abandoned.clear()

    @property
    def pending(self) -> set[int]:
        """The stop or reload signals heard since the handover began."""
        pending = set()
        if self._stop_requested.is_set():
            pending.add(STOP_SIGNALS[0])
        if self._reload_requested.is_set():
            pending.add(RELOAD_SIGNAL)
        return pending

    @staticmethod
    def _wait_until_serving(worker: Worker, stop_requested: Event) -> str | None:
        """None once ``worker`` serves, else why not (it died, it is slow, we are stopping)."""
        said = Event()
        waiter = gevent.spawn(lambda: (wait_read(worker.ready_pipe), said.set()))
        try:
            gevent.wait([said, stop_requested], count=1, timeout=READY_TIMEOUT)
        finally:
            waiter.kill()
        if stop_requested.is_set():
            return "stopped"
        if not said.is_set():
            return f"worker {worker.pid} not serving after {READY_TIMEOUT}s"
        if _read_ready_pipe(worker):
            worker.ready = True
            return None
        try:
            worker.process.wait(timeout=STOP_GRACE)
        except subprocess.TimeoutExpired:
            pass
        return f"worker {worker.pid} {worker.exit_description()}"


def _read_ready_pipe(worker: Worker) -> bytes:
    try:
        return os.read(worker.ready_pipe, 1)
    finally:
        os.close(worker.ready_pipe)
        worker.ready_pipe = -1
