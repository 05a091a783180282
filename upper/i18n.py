"""The language of what a person reads: English, or Spanish where the user asks for it.

Every message the command lines show goes through ``_()`` (and ``ngettext()`` for
counts), so that the gettext catalog of the ``upper`` domain can translate it.
Text that is made before anyone knows who will read it, or that machine-readable
output carries too (library exceptions, the checker's results, which ``--json``
prints in English in every language), is a ``Message``: English as a ``str``,
translated by ``translated()`` where a person reads it.

Protocol words (``DESCONEXION``, ``HOLA SERVIDOR``), machine-readable output
(``--json``, the server's ready line) and log records are never translated.

The language is English until a command line calls ``use()``: library users get
English messages whatever their locale. The catalogs are ``locale/LANG/LC_MESSAGES/
DOMAIN.mo`` beside this file, compiled from the ``.po`` sources at install or build
time (``setup.py``); argparse's own messages ("usage:", "options:", its errors) come
from the ``argparse`` domain's catalog there.
"""

import gettext
import os
from pathlib import Path

DOMAIN = "upper"
ARGPARSE_DOMAIN = "argparse"
LOCALE_DIR = Path(__file__).parent / "locale"
SOURCE_LANGUAGE = "en"
LANGUAGES = (SOURCE_LANGUAGE, "es")
"""The languages a person can choose: the one the messages are written in, and the catalogs'."""
ENVIRONMENT = ("LANGUAGE", "LC_ALL", "LC_MESSAGES", "LANG")
"""Where gettext looks for the language, in its order: the first one set decides."""

_translation: gettext.NullTranslations = gettext.NullTranslations()
current = SOURCE_LANGUAGE
"""The language in use."""


def _(message: str) -> str:
    return _translation.gettext(message)


def ngettext(singular: str, plural: str, count: int) -> str:
    return _translation.ngettext(singular, plural, count)


class Message(str):
    """An English message that is translated where a person reads it.

    ``Message("no reply within {seconds}s", seconds=5)`` is the ``str`` ``"no reply
    within 5s"``; ``translated()`` looks ``msgid`` up in the catalog then fills in the
    same values (themselves translated when they are ``Message``s). Babel extracts
    ``Message("...")`` like ``_("...")``.
    """

    def __new__(cls, msgid: str, **values):
        self = super().__new__(cls, msgid.format(**values) if values else msgid)
        self.msgid = msgid
        self.values = values
        return self

    def translated(self) -> str:
        text = _(self.msgid)
        if not self.values:
            return text
        return text.format(**{name: translated(value) for name, value in self.values.items()})


def translated(text) -> str:
    """``text`` in the language in use: a ``Message`` translated, an exception's ``Message``
    too (``str(exception)`` would lose it), anything else as ``str()`` has it."""
    if isinstance(text, BaseException):
        text = message_of(text)
    if isinstance(text, Message):
        return text.translated()
    return str(text)


def message_of(exception: BaseException) -> str:
    """The exception's one argument when it is a ``Message`` (to be translated later),
    else its ``str()``."""
    if len(exception.args) == 1 and isinstance(exception.args[0], Message):
        return exception.args[0]
    return str(exception)


def language_from_environment(environ=None) -> str:
    """The language the environment asks for, read as gettext reads it.

    The first of ``LANGUAGE``, ``LC_ALL``, ``LC_MESSAGES``, ``LANG`` that is set and
    not empty holds a colon-separated list (``es_AR.UTF-8``, ``fr:es``); the first
    entry we have a language for wins, ``C`` or ``POSIX`` means English, and a list
    with neither is English.
    """
    environ = os.environ if environ is None else environ
    for variable in ENVIRONMENT:
        value = environ.get(variable)
        if value:
            for entry in value.split(":"):
                language = _language_of(entry)
                if language in LANGUAGES:
                    return language
                if language in ("c", "posix"):
                    return SOURCE_LANGUAGE
            return SOURCE_LANGUAGE
    return SOURCE_LANGUAGE


def _language_of(locale_name: str) -> str:
    """``es_ES.UTF-8@euro`` -> ``es``."""
    for separator in ".@_-":
        locale_name = locale_name.split(separator, 1)[0]
    return locale_name.strip().lower()


def catalog_path(language: str, domain: str = DOMAIN) -> Path:
    return LOCALE_DIR / language / "LC_MESSAGES" / f"{domain}.mo"


def use(language: str) -> bool:
    """Show messages in ``language`` (one of ``LANGUAGES``) from now on, argparse's too.

    False when that language's catalog is not installed (the messages stay English).
    """
    import argparse  # only command lines choose a language: library users never load it

    global _translation, current
    if language == SOURCE_LANGUAGE or not catalog_path(language).exists():
        _translation = gettext.NullTranslations()
        argparse_translation = gettext.NullTranslations()
        found = language == SOURCE_LANGUAGE
    else:
        _translation = gettext.translation(DOMAIN, LOCALE_DIR, [language])
        argparse_translation = gettext.translation(
            ARGPARSE_DOMAIN, LOCALE_DIR, [language], fallback=True
        )
        found = True
    # argparse imported gettext's functions of the global domain ("messages"), which no
    # catalog of ours can serve without changing every other library's domain too; its
    # module globals are looked up at each call, so pointing them at our catalog is enough.
    argparse._ = argparse_translation.gettext
    argparse.ngettext = argparse_translation.ngettext
    current = language if found else SOURCE_LANGUAGE
    return found
