"""What the project's command lines share: their parser (``parser.py``), option types
and the address and TLS options (``options.py``).

Library code never imports this package; only ``upper.server.cli``,
``upper.client.cli``, ``upper.check`` and the locustfile do.
"""
