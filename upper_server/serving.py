"""Running one server until it is told to stop: the life of a server process.

Single-process mode and each pre-forked worker run exactly this; only what
counts as "told to stop" differs (a worker also stops when its parent dies).
"""

import logging
import signal

import gevent
from gevent.event import Event

log = logging.getLogger("upper_server")

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def serve_until_signalled(server, on_ready=lambda: None, stop_requested: Event | None = None):
    """Start ``server``, run until SIGTERM or SIGINT (or ``stop_requested``), stop gracefully.

    Args:

      server: an ``UpperServer``, not yet started.

      on_ready: runs once the handlers are in place (it prints the ready line):
          a signal sent as soon as the ready line appears is already a
          graceful stop.

      stop_requested: an ``Event`` that others may set too (a worker's parent
          watch does); one is made if not given.

    Resource handling:

      The signal handlers installed here are removed when the function
      returns, and the server's ``stop()`` runs on every path out of the wait:
      its listening sockets are closed at once (new connections are refused)
      and its connections get ``shutdown_timeout`` to finish.

    Error handling:

      SIGTERM and SIGINT are not errors but the normal end: they set an event,
      and the graceful stop runs in the normal flow of the main greenlet, never
      inside a signal handler. An exception from ``server.start()`` or
      ``on_ready`` propagates, after the same cleanup.
    """
    if stop_requested is None:
        stop_requested = Event()
    handlers = [gevent.signal_handler(signum, stop_requested.set) for signum in STOP_SIGNALS]
    try:
        server.start()
        on_ready()
        stop_requested.wait()
        log.info("shutting down")
    finally:
        for handler in handlers:
            handler.cancel()
        server.stop()
