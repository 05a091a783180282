"""``python -m upper_client.check``: the checker's old name; the code is ``upper.check``."""
