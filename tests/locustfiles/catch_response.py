"""A Locust user written only against the documented request API of loadtest/tcp_user.py.

Each request name is one behaviour, and ``checks`` counts what the report cannot
show; tests/test_locust_request_api.py reads both from the run's output.
"""

import logging

import gevent
from locust import constant, events, task
from locust.exception import LocustError

from upper.loadtest.tcp_user import TcpUser

log = logging.getLogger("catch_response_user")
checks = {"replies as documented": 0, "wrong attributes": 0, "context": 0, "time fixed": 0}
block_entered_at: set[float] = set()  # replies' response times (ms) as their blocks began


class CheckingUser(TcpUser):
    wait_time = constant(0.01)

    @task
    def cycle(self) -> None:
        client = self.client
        if not client.connect():
            return
        reply = client.request("hola ñandú", name="plain")
        documented = ("HOLA ÑANDÚ", "HOLA ÑANDÚ", "HOLA ÑANDÚ\n".encode(), None)
        self.check(documented == (reply.text, reply.expected, reply.content, reply.error))
        reply = client.request(b"stra\xc3\x9fe", name="bytes")
        self.check((reply.text, reply.error is None, reply.elapsed > 0) == ("STRASSE", True, True))

        with client.request("hola", name="refused", catch_response=True) as reply:
            if reply.text == "HOLA":
                reply.failure("refused on purpose")

        with client.request(
            "hola", name="accepted", expected="adiós", catch_response=True
        ) as reply:
            if reply.error is not None and reply.text == "HOLA":
                reply.success()

        with client.request(
            "hola", name="left to the check", expected="adiós", catch_response=True
        ):
            pass

        with client.request("hola", name="slow block", catch_response=True) as reply:
            block_entered_at.add(reply.elapsed * 1000)
            gevent.sleep(0.05)

        client.request("hola", name="with context", context={"flavour": "vanilla"})

        reply = client.request("hola", name="no catch")
        for misuse in (reply.success, lambda: reply.failure("no"), reply.__enter__):
            try:
                misuse()
            except LocustError:
                client.request("hola", name="misuse refused")
        client.disconnect()

    @staticmethod
    def check(ok: bool) -> None:
        checks["replies as documented" if ok else "wrong attributes"] += 1


@events.request.add_listener
def _record(name, response_time, context, **_kwargs) -> None:
    # Recorded as the block ends (even when its user is killed in it): the response
    # time must be the one the reply had when the block began.
    if name == "slow block" and response_time in block_entered_at:
        block_entered_at.discard(response_time)
        checks["time fixed"] += 1
    if name == "with context" and context.get("flavour") == "vanilla":
        checks["context"] += 1


@events.quit.add_listener
def _report(**_kwargs) -> None:
    log.warning("checks: %s", checks)
