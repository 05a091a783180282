"""Running one server until it is told to stop: the life of a server process.

Single-process mode and each worker run exactly this; only what ends it
differs. SIGTERM or SIGINT stop it (the graceful shutdown). A worker's
lifeline ending (it was replaced, or its parent died) *retires* it: it stops
accepting and lets its sessions end on their own before stopping. In
single-process mode SIGHUP calls ``on_reload``, which may hand the listening
sockets over to a new worker; then this server retires the same way.
"""

import enum
import gc
import logging
import signal

import gevent
from gevent.event import Event
from gevent.socket import wait_read

from upper.server import systemd

log = logging.getLogger("upper.server")

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
RELOAD_SIGNAL = getattr(signal, "SIGHUP", None)
"""None on Windows, which has no SIGHUP."""
GC_THRESHOLDS = (7000, 10, 10)
"""The cyclic collector's thresholds in a server process (Python's default: 700, 10, 10).

A connection allocates a few dozen container objects (its ``Connection``, session,
greenlet, watcher, bound methods) and frees them by reference counting: the server
makes no cycles. With 700, a young collection runs every few connections, and every
tenth one also walks the middle generation, where the objects of the connections
still open end up. Ten times fewer collections took churn from 35,654 to 33,870
instructions per message (callgrind, median of 3) and hold back only cyclic
garbage, which a plain connection does not make."""


class Outcome(enum.Enum):
    STOPPED = "stopped"  # SIGTERM or SIGINT
    RETIRED = "retired"  # the lifeline ended
    HANDED_OVER = "handed over"  # on_reload handed the sockets to a new process


def serve_until_signalled(
    server, on_ready=lambda: None, lifeline: int | None = None, on_reload=None
):
    """Start ``server``, run until a stop signal (or retirement), stop gracefully; the ``Outcome``.

    Args:

      server: an ``UpperServer``, not yet started.

      on_ready: runs once the handlers are in place (it prints the ready line):
          a signal sent as soon as the ready line appears is already a
          graceful stop.

      lifeline: a pipe's read end; its end of file retires the server.

      on_reload: called on SIGHUP with the stop and reload events (either
          may be set again while it works); returns whether it handed the
          sockets over (then the server retires). Without it SIGHUP keeps its
          default action.

    Resource handling:

      The signal handlers installed here are removed when the function
      returns, and the server's ``stop()`` runs on every path out of the wait:
      its listening sockets are closed at once (new connections are refused)
      and its connections get ``shutdown_timeout`` to finish. A retiring
      server first waits, as long again at most, for its sessions to end on
      their own. After a handover the stop and reload signals stay blocked
      when this returns: the supervisor that takes over unblocks them once
      its own handlers are in place, so none is lost in between.

    Error handling:

      SIGTERM and SIGINT are not errors but the normal end: they set an event,
      and the graceful stop runs in the normal flow of the main greenlet, never
      inside a signal handler. An exception from ``server.start()`` or
      ``on_ready`` propagates, after the same cleanup.
    """
    stop_requested, retire_requested, reload_requested = Event(), Event(), Event()
    handlers = [gevent.signal_handler(signum, stop_requested.set) for signum in STOP_SIGNALS]
    if on_reload is not None and RELOAD_SIGNAL is not None:
        handlers.append(gevent.signal_handler(RELOAD_SIGNAL, reload_requested.set))
    helpers = []
    if lifeline is not None:
        helpers.append(gevent.spawn(_watch_lifeline, lifeline, retire_requested))
    outcome = Outcome.STOPPED
    try:
        server.start()
        gc.set_threshold(*GC_THRESHOLDS)
        on_ready()
        while True:
            gevent.wait([stop_requested, retire_requested, reload_requested], count=1)
            if stop_requested.is_set():
                log.info("shutting down")
                systemd.notify("STOPPING=1")
                break
            if retire_requested.is_set():
                outcome = Outcome.RETIRED
                break
            reload_requested.clear()
            if on_reload(stop_requested, reload_requested):
                outcome = Outcome.HANDED_OVER
                break
        if outcome is not Outcome.STOPPED:
            server.drain(stop_requested)
    finally:
        for helper in helpers:
            helper.kill(block=False)
        if outcome is Outcome.HANDED_OVER:
            signal.pthread_sigmask(signal.SIG_BLOCK, (*STOP_SIGNALS, RELOAD_SIGNAL))
            # A signal that arrived just before the block may be caught by the loop but
            # not yet dispatched: one turn of the loop sets its event before the
            # handlers go (the supervisor reads the events).
            gevent.sleep(0.01)
        for handler in handlers:
            handler.cancel()
        server.stop()
    return outcome


def _watch_lifeline(fd: int, retire_requested: Event) -> None:
    wait_read(fd)  # only end of file ever arrives: nobody writes
    log.info("replaced by a reload, or the parent is gone: draining")
    retire_requested.set()
