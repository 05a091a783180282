"""The language of what a person reads: English, or Spanish where the user asks for it.

Every message the command lines show goes through ``_()`` (and ``ngettext()`` for
counts), so that the gettext catalog of the ``upper`` domain can translate it.
Protocol words (``DESCONEXION``, ``HOLA SERVIDOR``) and machine-readable output
(``--json`` keys) are never translated.
"""

import gettext

DOMAIN = "upper"

_translation: gettext.NullTranslations = gettext.NullTranslations()


def _(message: str) -> str:
    return _translation.gettext(message)


def ngettext(singular: str, plural: str, count: int) -> str:
    return _translation.ngettext(singular, plural, count)
