"""``upper.green.greenlets.ReusableGreenlets``: calls run at once from the hub, one after
another in the same greenlet, without keeping what the last call used."""

import gc
import weakref

import gevent
import pytest
from greenlet import getcurrent

from upper.green.greenlets import ReusableGreenlets


@pytest.fixture
def hub():
    return gevent.get_hub()


def run_from_hub(hub, greenlets: ReusableGreenlets, function, *args) -> None:
    """``greenlets.run`` is called from the hub, as the server's watcher callbacks do."""
    hub.loop.run_callback(greenlets.run, function, *args)
    gevent.sleep(0.01)


def test_calls_run_one_after_another_in_the_same_greenlet(hub):
    greenlets = ReusableGreenlets(hub)
    ran_in = []
    run_from_hub(hub, greenlets, lambda tag: ran_in.append((tag, getcurrent())), "first")
    run_from_hub(hub, greenlets, lambda tag: ran_in.append((tag, getcurrent())), "second")
    assert [tag for tag, _ in ran_in] == ["first", "second"]
    assert ran_in[0][1] is ran_in[1][1]
    assert ran_in[0][1].parent is hub
    assert greenlets.idle == 1


def test_a_call_that_waits_keeps_its_greenlet_and_the_next_gets_another(hub):
    greenlets = ReusableGreenlets(hub)
    waiting, ran_in = [], []

    def wait_to_be_woken():
        waiting.append(getcurrent())
        hub.switch()  # parked until switched to, as a connection waits on its watcher
        ran_in.append(getcurrent())

    run_from_hub(hub, greenlets, wait_to_be_woken)
    run_from_hub(hub, greenlets, lambda: ran_in.append(getcurrent()))
    assert ran_in[0] is not waiting[0]  # the waiting one was not handed out
    hub.loop.run_callback(waiting[0].switch)
    gevent.sleep(0.01)
    assert ran_in[1] is waiting[0]
    assert greenlets.idle == 2


def test_at_most_keep_greenlets_stay_parked(hub):
    greenlets = ReusableGreenlets(hub, keep=1)
    waiting = []

    def wait_to_be_woken():
        waiting.append(getcurrent())
        hub.switch()

    run_from_hub(hub, greenlets, wait_to_be_woken)
    run_from_hub(hub, greenlets, wait_to_be_woken)
    for parked in waiting:
        hub.loop.run_callback(parked.switch)
    gevent.sleep(0.01)
    assert greenlets.idle == 1
    assert sum(parked.dead for parked in waiting) == 1


def test_a_parked_greenlet_keeps_nothing_of_its_last_call(hub):
    class Connection:
        def serve(self, data):
            pass

    greenlets = ReusableGreenlets(hub)
    connection, data = Connection(), Connection()
    gone = [weakref.ref(connection), weakref.ref(data)]
    run_from_hub(hub, greenlets, connection.serve, data)
    del connection, data
    gc.collect()
    assert [ref() for ref in gone] == [None, None]
    assert greenlets.idle == 1


def test_clear_ends_the_parked_greenlets(hub):
    greenlets = ReusableGreenlets(hub)
    run_from_hub(hub, greenlets, lambda: None)
    parked = weakref.ref(greenlets._idle[0])
    greenlets.clear()
    gc.collect()
    assert greenlets.idle == 0
    assert parked() is None  # ended and freed: the pool held its only reference
