"""Load tests for UPPER servers: the Locust harness (``locustfile``, ``tcp_user``) and drivers."""
