"""How much of the protocol a run checks, as a course goes.

``basic`` is the classroom's own test (the seed's ``client_tester.py``): 'hola
servidor' answered 'HOLA SERVIDOR', then 'DESCONEXION' closing the connection.
A first-week server that answers each ``recv()`` passes it. ``full`` is every
check of the table.
"""

from upper.check.checks import CHECKS, Check

BASIC, FULL = "basic", "full"
LEVELS = (BASIC, FULL)
DEFAULT_LEVEL = FULL

_BASIC_CHECKS = ("hola-servidor", "desconexion-closes")


def checks_of(level: str) -> list[Check]:
    """The checks a level runs, in the table's order; ``KeyError`` for an unknown level."""
    if level == FULL:
        return list(CHECKS)
    if level == BASIC:
        return [c for c in CHECKS if c.name in _BASIC_CHECKS]
    raise KeyError(level)
