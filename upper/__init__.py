"""upper: a gevent TCP server that answers every line in uppercase, its client, and its tests.

- ``upper.protocol``: the protocol's rules, sans I/O (``docs/protocol.md``);
- ``upper.green``: the gevent internals the hot paths rely on, and reusable greenlets;
- ``upper.server``: the server (``upper-server``, ``python -m upper_server``);
- ``upper.client``: the client library (``UpperClient``) and its command line;
- ``upper.check``: the conformance checker (``upper-check``);
- ``upper.loadtest``: the Locust user (``loadtest/locustfile.py`` runs it);
- ``upper.cli``: what the command lines share.
"""
