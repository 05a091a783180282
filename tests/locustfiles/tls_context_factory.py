"""A user class with its own ``ssl_context_factory``: trusts the CA in ``$UPPER_TEST_CA``."""

import os
import ssl

from locust import task

from upper.loadtest.tcp_user import TcpUser


def trust_the_test_ca() -> ssl.SSLContext:
    return ssl.create_default_context(cafile=os.environ["UPPER_TEST_CA"])


class OwnContextUser(TcpUser):
    ssl_context_factory = trust_the_test_ca

    @task
    def one_session(self) -> None:
        if self.client.connect():
            self.client.upper("contexto propio")
            self.client.disconnect()
