"""What the project's command lines share: option types and the server's address options.

Library code never imports this package; only ``upper_server.cli``,
``upper_client.cli``, ``upper_client.check`` and the locustfile do.
"""
