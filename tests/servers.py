"""Servers for tests: the real CLI as a subprocess (``upper.server.launcher``), or an
``UpperServer`` in a thread.

Both listen on 127.0.0.1 port 0 and are always stopped, with timeouts everywhere.
"""

import threading

from helpers import eventually

from upper.server.launcher import STARTUP_TIMEOUT, ServerProcess

__all__ = ["ServerProcess", "ThreadedServer"]


class ThreadedServer:
    """An ``UpperServer`` on its own gevent hub in a thread, for tests that read its counters."""

    def __init__(self, **options):
        self.options = options
        self.server = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="upper-server", daemon=True)
        self._stop_requested = None
        self._hub = None
        self._error = None

    @property
    def address(self) -> tuple[str, int]:
        return self.server.address[:2]

    @property
    def stats(self):
        return self.server.stats

    def live_greenlets(self) -> int:
        """Greenlets of the server's thread not yet finished (raw ones too: spawn_raw), but
        not those parked idle in its ``ReusableGreenlets``: no connection holds them."""
        import gc

        import greenlet

        live = sum(
            1
            for obj in gc.get_objects()
            if isinstance(obj, greenlet.greenlet) and obj.parent is self._hub and not obj.dead
        )
        return live - self.server.greenlets.idle

    def _run(self) -> None:
        import gevent
        from gevent.event import Event

        from upper.server import UpperServer

        try:
            self._hub = gevent.get_hub()
            self._stop_requested = Event()
            self.server = UpperServer(("127.0.0.1", 0), **self.options)
            self.server.start()
        except BaseException as exc:  # reported to the test thread by start()
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        self._stop_requested.wait()
        self.server.stop()

    def start(self) -> "ThreadedServer":
        self._thread.start()
        if not self._ready.wait(STARTUP_TIMEOUT):
            raise TimeoutError("in-thread server did not start")
        if self._error:
            raise self._error
        return self

    def stop(self, timeout: float = 20.0) -> None:
        if self._hub is not None and self._thread.is_alive():
            self._hub.loop.run_callback_threadsafe(self._stop_requested.set)
            self._thread.join(timeout)
            if self._thread.is_alive():
                raise TimeoutError("in-thread server did not stop")

    def wait_until(self, predicate, timeout: float = 10.0) -> bool:
        """Poll ``predicate(server)`` until true or ``timeout``; for eventually-true counters."""
        return eventually(lambda: predicate(self.server), timeout, interval=0.01)

    def __enter__(self) -> "ThreadedServer":
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()
