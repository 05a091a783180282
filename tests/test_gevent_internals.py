"""What upper relies on gevent and greenlet for still holds: each name of
``upper.green.USED_GEVENT_NAMES`` is exercised here by the behaviour upper needs of it,
so a gevent upgrade that renames, drops or changes one fails here, not in production.

Each test says which names it covers (``relies_on``); the last test checks that every
listed name is covered by at least one.
"""

import _socket
import os
import signal
import socket
import ssl
import subprocess
import sys

import gevent
import gevent.exceptions
import gevent.socket
import gevent.ssl
import greenlet
import pytest

from upper.green import READ, USED_GEVENT_NAMES, WRITE, switch_to_hub, watch

TIMEOUT = 10.0
COVERED: set[tuple[str, str]] = set()


def relies_on(owner: str, *names: str):
    def mark(test):
        COVERED.update((owner, name) for name in names)
        return test

    return mark


@pytest.fixture
def pair():
    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)
    yield a, b
    a.close()
    b.close()


@pytest.fixture
def hub():
    return gevent.get_hub()


def parked_until_woken(hub, arm) -> list[str]:
    """Run a greenlet that arms a wake-up (``arm(switch)``) and parks on the hub; what it saw."""
    seen = []

    def waiter():
        arm(greenlet.getcurrent().switch)
        seen.append("parked")
        switch_to_hub(hub)()
        seen.append("woken")

    runner = gevent.spawn_raw(waiter)
    with gevent.Timeout(TIMEOUT, False):
        while not runner.dead:
            gevent.sleep(0.001)
    return seen


@relies_on("gevent.hub.Hub", "loop")
@relies_on("gevent loop", "io")
@relies_on("gevent I/O watcher", "start", "stop", "callback")
@relies_on("greenlet.greenlet", "switch", "dead")
@relies_on("greenlet", "getcurrent")
@relies_on("gevent", "spawn_raw")
def test_a_watcher_whose_callback_is_a_greenlets_switch_wakes_it(hub, pair):
    a, b = pair
    watcher = hub.loop.io(a.fileno(), READ)
    assert watcher.callback is None  # not waiting yet
    try:
        gevent.spawn_raw(lambda: b.send(b"x"))
        seen = parked_until_woken(hub, lambda switch: watcher.start(switch))
        assert seen == ["parked", "woken"]
        assert a.recv(1) == b"x"
        assert watcher.callback is not None  # started: the client refuses a second waiter
        watcher.stop()
        assert watcher.callback is None
    finally:
        watcher.close()


@relies_on("gevent I/O watcher", "events", "close")
def test_a_watchers_events_change_only_while_stopped(hub, pair):
    a, _b = pair
    watcher = hub.loop.io(a.fileno(), READ)
    watcher.start(lambda: None)
    try:
        with pytest.raises((ValueError, AttributeError, TypeError)):
            watcher.events = WRITE
    finally:
        watcher.stop()
    watcher.events = WRITE  # stopped: allowed
    # watch() turns it to writes: an empty socket buffer is writable at once.
    seen = parked_until_woken(hub, lambda switch: watch(watcher, WRITE, switch))
    assert seen == ["parked", "woken"]
    assert watcher.events & WRITE
    watcher.close()


# What watch() relies on, on each of gevent's loops (libuv is Windows' default).
_RESTART_SCRIPT = """
import socket, gevent
from upper.green import READ, watch
a, b = socket.socketpair()
a.setblocking(False)
watcher = gevent.get_hub().loop.io(a.fileno(), READ)
calls = []
watch(watcher, READ, lambda: calls.append("first"))
gevent.sleep(0.01)
assert watcher.events == READ, watcher.events  # as set: watch() compares it
# Active, same events: start() alone must replace the callback.
watch(watcher, READ, lambda: (calls.append("second"), watcher.stop()))
b.send(b"x")
gevent.sleep(0.1)
assert calls == ["second"], calls
print(gevent.get_hub().loop.__class__.__module__)
"""


@pytest.mark.parametrize("loop", ["libev-cext", "libev-cffi", "libuv-cffi"])
@relies_on("gevent I/O watcher", "start", "events")
def test_starting_an_active_watcher_replaces_its_callback_on_every_loop(loop):
    done = subprocess.run(
        [sys.executable, "-c", _RESTART_SCRIPT],
        env={**os.environ, "GEVENT_LOOP": loop},
        capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert loop.split("-")[0] in done.stdout  # that loop, not a fallback


@relies_on("gevent I/O watcher", "stop")
def test_a_stopped_watcher_calls_nothing(hub, pair):
    a, b = pair
    calls = []
    watcher = hub.loop.io(a.fileno(), READ)
    watcher.start(lambda: calls.append(1))
    watcher.stop()
    b.send(b"x")
    gevent.sleep(0.05)
    assert calls == []
    watcher.start(lambda: (calls.append(1), watcher.stop()))
    gevent.sleep(0.05)
    assert calls == [1]
    watcher.close()


@relies_on("gevent loop", "timer")
@relies_on("gevent timer", "start", "close")
def test_a_timer_calls_back_once_and_a_closed_one_never(hub):
    fired = []
    once = hub.loop.timer(0.01)
    once.start(fired.append, "once")
    cancelled = hub.loop.timer(0.01)
    cancelled.start(fired.append, "cancelled")
    cancelled.close()
    gevent.sleep(0.1)
    assert fired == ["once"]
    once.close()


@relies_on("gevent loop", "run_callback", "now")
def test_run_callback_runs_in_the_hub_next_and_now_follows_the_loop(hub):
    ran = []
    before = hub.loop.now()
    hub.loop.run_callback(lambda arg: ran.append((arg, greenlet.getcurrent() is hub)), "arg")
    assert ran == []  # not now: at the loop's next turn
    gevent.sleep(0.02)
    assert ran == [("arg", True)]
    assert hub.loop.now() >= before + 0.02


@relies_on("greenlet.greenlet", "throw", "parent")
@relies_on("gevent", "GreenletExit")
def test_a_thrown_exception_interrupts_a_parked_greenlet(hub):
    caught = []

    def parked():
        try:
            switch_to_hub(hub)()
        except gevent.GreenletExit:
            caught.append("exit")
            raise

    runner = greenlet.greenlet(parked, hub)
    hub.loop.run_callback(runner.switch)
    gevent.sleep(0.01)
    assert runner.parent is hub and not runner.dead
    hub.loop.run_callback(runner.throw, gevent.GreenletExit)
    gevent.sleep(0.01)
    assert caught == ["exit"] and runner.dead


@relies_on("greenlet.greenlet", "parent", "switch")
def test_a_greenlet_whose_call_returns_goes_back_to_its_parent_the_hub(hub):
    order = []

    def run(value):
        order.append(value)
        return "done"  # to the parent: the hub, which carries on with its loop

    child = greenlet.greenlet(run, hub)
    hub.loop.run_callback(child.switch, "ran")
    gevent.sleep(0.01)
    assert order == ["ran"] and child.dead


@relies_on("gevent", "signal_handler")
@pytest.mark.skipif(sys.platform == "win32", reason="no SIGUSR1")
def test_a_signal_handler_runs_in_the_hub():
    heard = []
    handler = gevent.signal_handler(signal.SIGUSR1, lambda: heard.append(greenlet.getcurrent()))
    try:
        signal.raise_signal(signal.SIGUSR1)
        gevent.sleep(0.05)
    finally:
        handler.cancel()
    assert len(heard) == 1


@relies_on("gevent.socket", "wait_read")
def test_wait_read_returns_once_readable(pair):
    a, b = pair
    gevent.spawn_later(0.01, b.send, b"x")
    with gevent.Timeout(TIMEOUT):
        gevent.socket.wait_read(a.fileno())
    assert a.recv(1) == b"x"


@relies_on("gevent._socket3.socket", "_sock", "_read_event", "hub", "timeout")
def test_a_gevent_socket_exposes_its_plain_socket_and_read_watcher(hub):
    assert f"{gevent.socket.socket.__module__}.socket" == "gevent._socket3.socket"
    sock = gevent.socket.socket()
    try:
        sock.settimeout(3.5)
        assert sock.timeout == 3.5
        assert isinstance(sock._sock, _socket.socket)
        assert sock._sock.fileno() == sock.fileno()
        assert sock.hub is hub
        assert sock._read_event.fd == sock.fileno()
        assert sock._read_event.events & READ
        assert sock._read_event.callback is None  # nobody waits on it
    finally:
        sock.close()


@relies_on("gevent.ssl.SSLSocket", "_sslobj")
def test_a_gevent_tls_socket_is_told_apart_by_its_sslobj(certificates):
    context = gevent.ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(str(certificates.ca))
    plain = gevent.socket.socket()
    tls = context.wrap_socket(
        gevent.socket.socket(), server_hostname="127.0.0.1", do_handshake_on_connect=False
    )
    try:
        assert isinstance(tls, gevent.ssl.SSLSocket)
        assert hasattr(tls, "_sslobj") and not hasattr(plain, "_sslobj")
    finally:
        plain.close()
        tls.close()


@relies_on("gevent.exceptions", "ConcurrentObjectUseError", "BlockingSwitchOutError")
def test_gevent_refuses_a_second_waiter_and_a_wait_in_the_hub(hub):
    a, b = gevent.socket.socketpair()
    try:
        first = gevent.spawn(a.recv, 1)
        gevent.sleep(0)
        with pytest.raises(gevent.exceptions.ConcurrentObjectUseError):
            a.recv(1)
        b.send(b"x")
        assert first.get(timeout=TIMEOUT) == b"x"
        refused = []

        def in_the_hub():
            try:
                gevent.sleep(0.01)
            except gevent.exceptions.BlockingSwitchOutError as exc:
                refused.append(exc)

        hub.loop.run_callback(in_the_hub)
        gevent.sleep(0.02)
        assert len(refused) == 1
    finally:
        a.close()
        b.close()


@relies_on("_socket.socket", "_accept", "recv_into", "send", "shutdown")
def test_the_c_socket_accepts_a_bare_descriptor_and_moves_bytes():
    with socket.create_server(("127.0.0.1", 0)) as listener:
        with socket.create_connection(listener.getsockname(), timeout=TIMEOUT) as client:
            fd, address = listener._accept()
            assert isinstance(fd, int) and address == client.getsockname()
            accepted = _socket.socket(socket.AF_INET, socket.SOCK_STREAM, 0, fd)
            try:
                accepted.settimeout(TIMEOUT)
                client.sendall(b"hola")
                buffer = bytearray(8)
                assert accepted.recv_into(buffer) == 4 and buffer[:4] == b"hola"
                assert accepted.send(b"HOLA") == 4
                accepted.shutdown(socket.SHUT_WR)
                assert client.recv(8) == b"HOLA" and client.recv(8) == b""
            finally:
                accepted.close()


@relies_on("_socket", "getaddrinfo", "AI_NUMERICHOST")
@relies_on("gevent.hub.Hub", "resolver")
def test_a_replaced_resolver_is_the_one_gevent_asks(hub):
    assert _socket.getaddrinfo("127.0.0.1", 80, 0, 0, 0, _socket.AI_NUMERICHOST)
    with pytest.raises(_socket.gaierror):
        _socket.getaddrinfo("localhost", 80, 0, 0, 0, _socket.AI_NUMERICHOST)
    asked = []
    original = hub.resolver

    class Recording:
        def getaddrinfo(self, *args, **kwargs):
            asked.append(args[0])
            return original.getaddrinfo(*args, **kwargs)

        def __getattr__(self, name):
            return getattr(original, name)

    hub.resolver = Recording()
    try:
        assert gevent.socket.getaddrinfo("127.0.0.1", 80)
    finally:
        hub.resolver = original
    assert asked == ["127.0.0.1"]


def test_every_name_upper_relies_on_is_exercised():
    listed = {(owner, name) for owner, names in USED_GEVENT_NAMES.items() for name in names}
    assert listed - COVERED == set(), "add a test of what upper relies on these for"
    assert COVERED - listed == set(), "list these in upper.green.USED_GEVENT_NAMES"
