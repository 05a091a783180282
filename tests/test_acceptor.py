"""``Acceptor``: its own accept watcher, bounded per wake-up, paused at the limit and on
EMFILE, closed cleanly. Real sockets on loopback; the owner is a recorder of what the
acceptor hands it (the server's side is tested through the server, in test_hardening)."""

import errno
import logging
import resource
import socket
import sys
from types import SimpleNamespace

import gevent
import gevent.socket
import pytest

from upper.server.acceptor import Accepting, Acceptor

TIMEOUT = 10.0


class Owner:
    """What ``UpperServer`` gives an acceptor: the limit, registration, the counters."""

    def __init__(self) -> None:
        self.registered: list[socket.socket] = []
        self.at_the_limit = False
        self.stopped_for_descriptors = 0
        self.stats = SimpleNamespace(accept_errors=0)

    def full(self) -> bool:
        return self.at_the_limit

    def register(self, sock, address) -> None:
        assert address[0] == "127.0.0.1"
        self.registered.append(sock)

    def accepting_stopped(self) -> None:
        self.stopped_for_descriptors += 1

    def close(self) -> None:
        for sock in self.registered:
            sock.close()


@pytest.fixture
def owner():
    recorder = Owner()
    yield recorder
    recorder.close()


@pytest.fixture
def acceptor(owner):
    made = Acceptor(("127.0.0.1", 0), owner)
    made.start()
    yield made
    made.close()


@pytest.fixture
def clients():
    opened = []

    def connect(address, count: int) -> list[socket.socket]:
        for _ in range(count):
            # Blocking connects complete in the listener's backlog: nothing accepts yet.
            opened.append(socket.create_connection(address[:2], timeout=TIMEOUT))
        return opened

    yield connect
    for sock in opened:
        sock.close()


def wait_for(predicate) -> bool:
    with gevent.Timeout(TIMEOUT, False):
        while not predicate():
            gevent.sleep(0.005)
        return True
    return False


def test_an_address_is_listened_on_at_start(owner, clients):
    made = Acceptor(("127.0.0.1", 0), owner)
    assert made.state is Accepting.IDLE and made.socket is None
    made.start()
    try:
        assert made.state is Accepting.ACCEPTING
        assert made.address[1] != 0
        clients(made.address, 2)
        assert wait_for(lambda: len(owner.registered) == 2)
        assert all(
            sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) for sock in owner.registered
        )
    finally:
        made.close()


def test_each_wake_up_accepts_at_most_max_accept(acceptor, owner, clients):
    acceptor.max_accept = 3
    clients(acceptor.address, 7)
    # One wake-up of the watcher, called as the loop calls it: three, then the others' turn.
    acceptor._accept_ready()
    assert len(owner.registered) == 3
    acceptor._accept_ready()
    assert len(owner.registered) == 6
    acceptor._accept_ready()  # the seventh, then EAGAIN: nothing waits any more
    assert len(owner.registered) == 7
    assert acceptor.state is Accepting.ACCEPTING


def test_at_the_limit_it_stops_watching_until_resumed(acceptor, owner, clients):
    owner.at_the_limit = True
    clients(acceptor.address, 3)
    assert wait_for(lambda: acceptor.state is Accepting.FULL)
    gevent.sleep(0.05)  # the loop runs; a stopped watcher accepts nothing
    assert owner.registered == []
    owner.at_the_limit = False
    acceptor.resume()
    assert acceptor.state is Accepting.ACCEPTING
    assert wait_for(lambda: len(owner.registered) == 3)


@pytest.mark.skipif(sys.platform == "win32", reason="no RLIMIT_NOFILE")
def test_out_of_descriptors_it_backs_off_doubling_and_a_resume_cuts_it_short(
    acceptor, owner, clients, caplog
):
    clients(acceptor.address, 2)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    fillers = []
    try:
        # Leave this process no descriptor to accept with (a real EMFILE).
        probe = socket.socket()
        resource.setrlimit(resource.RLIMIT_NOFILE, (probe.fileno() + 8, hard))
        probe.close()
        with pytest.raises(OSError) as full:
            while True:
                fillers.append(socket.socket())
        assert full.value.errno == errno.EMFILE
        with caplog.at_level(logging.WARNING, logger="upper.server.acceptor"):
            acceptor._accept_ready()
            assert acceptor.state is Accepting.PAUSED
            assert acceptor._retry_delay == acceptor.retry_min
            acceptor.resume()  # no descriptor came free: the next try fails again, doubled
            acceptor._accept_ready()
            assert acceptor._retry_delay == 2 * acceptor.retry_min
        assert owner.stats.accept_errors == 2
        assert owner.stopped_for_descriptors == 2
        assert owner.registered == []
        assert len([r for r in caplog.records if "cannot accept" in r.getMessage()]) == 1
    finally:
        for sock in fillers:
            sock.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    with caplog.at_level(logging.WARNING, logger="upper.server.acceptor"):
        acceptor.resume()
        assert wait_for(lambda: len(owner.registered) == 2)
    assert acceptor._retry_delay == 0
    assert any("accepting connections again" in r.getMessage() for r in caplog.records)


def test_close_closes_the_socket_and_is_final(owner):
    made = Acceptor(("127.0.0.1", 0), owner)
    made.start()
    listener = made.socket
    made.close()
    assert made.state is Accepting.CLOSED
    assert listener.fileno() == -1
    made.close()  # twice is fine
    made.resume()  # nothing leaves CLOSED
    assert made.state is Accepting.CLOSED
    with pytest.raises(RuntimeError):
        made.start()


def test_a_given_socket_is_accepted_on_and_closed_with_the_acceptor(owner, clients):
    listener = socket.create_server(("127.0.0.1", 0))
    made = Acceptor(listener, owner)
    assert made.address == listener.getsockname()
    made.start()
    clients(made.address, 1)
    assert wait_for(lambda: len(owner.registered) == 1)
    made.close()
    assert listener.fileno() == -1


def test_a_cooperative_socket_is_accepted_on(owner, clients):
    listener = gevent.socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    made = Acceptor(listener, owner)
    made.start()
    try:
        clients(made.address, 2)
        assert wait_for(lambda: len(owner.registered) == 2)
    finally:
        made.close()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux's accept after shutdown")
def test_a_listener_that_stops_being_one_closes_the_acceptor_with_one_line(acceptor, owner, caplog):
    with caplog.at_level(logging.ERROR, logger="upper.server.acceptor"):
        acceptor.socket.shutdown(socket.SHUT_RD)  # Linux: accept() now fails with EINVAL
        assert wait_for(lambda: acceptor.state is Accepting.CLOSED)
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "no longer accepting" in errors[0].getMessage()
    assert errors[0].exc_info is None


def test_a_failing_registration_is_logged_then_the_timer_resumes(acceptor, owner, clients, caplog):
    register = owner.register

    def broken(sock, address):
        raise ValueError("a bug in the owner")

    owner.register = broken
    clients(acceptor.address, 1)
    with caplog.at_level(logging.ERROR, logger="upper.server.acceptor"):
        assert wait_for(lambda: acceptor.state is Accepting.PAUSED)
    assert "cannot serve a new connection" in caplog.records[0].getMessage()
    assert acceptor._retry_delay == acceptor.retry_min
    owner.register = register
    clients(acceptor.address, 1)
    # No resume(): the back-off timer turns the watcher on again by itself.
    assert wait_for(lambda: len(owner.registered) == 1)
    assert acceptor.state is Accepting.ACCEPTING
