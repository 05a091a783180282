"""What the project's command lines share: option types and the server's address options.

Library code never imports this package; only ``upper.server.cli``,
``upper.client.cli``, ``upper.check`` and the locustfile do.
"""
