"""Every gevent name upper relies on still exists: a gevent upgrade that changes one fails here.

The list is ``upper_gevent.USED_GEVENT_NAMES``; its docstring says why each is used.
"""

import _socket

import gevent
import gevent.exceptions
import gevent.socket
import pytest
from gevent.server import StreamServer

from upper.green import READ, USED_GEVENT_NAMES


@pytest.fixture(scope="module")
def samples():
    """One live object for each entry of ``USED_GEVENT_NAMES``."""
    server = StreamServer(("127.0.0.1", 0), handle=lambda *_: None)
    server.start()
    hub = gevent.get_hub()
    raw = _socket.socket()
    green = gevent.socket.socket()
    watcher = hub.loop.io(raw.fileno(), READ)
    yield {
        "gevent.server.StreamServer": server,
        "_socket.socket": raw,
        "gevent._socket3.socket": green,
        "gevent.hub.Hub": hub,
        "gevent loop": hub.loop,
        "gevent I/O watcher": watcher,
        "gevent.exceptions": gevent.exceptions,
    }
    watcher.close()
    green.close()
    raw.close()
    server.close()


def test_every_entry_has_a_sample(samples):
    assert set(samples) == set(USED_GEVENT_NAMES)


@pytest.mark.parametrize("owner", sorted(USED_GEVENT_NAMES))
def test_gevent_still_has_every_name_upper_uses(samples, owner):
    missing = [name for name in USED_GEVENT_NAMES[owner] if not hasattr(samples[owner], name)]
    assert not missing, (
        f"gevent {gevent.__version__} no longer has {owner}.{', '.join(missing)}: "
        "upper_gevent and the code that uses it need updating"
    )


def test_the_green_socket_class_is_the_one_named(samples):
    assert type(samples["gevent._socket3.socket"]) is gevent.socket.socket
    assert f"{gevent.socket.socket.__module__}.socket" == "gevent._socket3.socket"


def test_a_watchers_events_change_only_while_stopped(samples):
    watcher = samples["gevent I/O watcher"]
    watcher.start(lambda: None)
    try:
        with pytest.raises((ValueError, AttributeError, TypeError)):
            watcher.events = 2
    finally:
        watcher.stop()
    watcher.events = 2  # stopped: allowed
    watcher.events = READ
