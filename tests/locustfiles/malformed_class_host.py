"""A TcpUser whose own ``host`` is malformed: found only at ``init``, after --processes forks."""

from locust import task

from upper.loadtest.tcp_user import TcpUser


class MisconfiguredUser(TcpUser):
    host = "tcp://127.0.0.1:notaport"

    @task
    def nothing(self) -> None:
        pass
