"""The argument parser every command line of the project uses, and how it names itself.

A usage error is one line and a pointer to ``--help``, exit status 2 (here folded)::

    upper-server: error: argument --port: invalid port 'abc': use a number from 0 to 65535
    (see upper-server --help)

``--help`` ends with the command's exit statuses, and every command takes
``--lang es|en``. The language is chosen (``choose_language``) before the parser
is built, since argparse translates its headings and the help texts are ours.
"""

import argparse
import sys
import textwrap

from upper import i18n
from upper.i18n import _

LANG_OPTION = "--lang"
WIDTH = 79
"""Columns the descriptions and the epilog are wrapped to (argparse wraps the options' help)."""


def invoked_as(script: str) -> str:
    """What the user typed to start this command: ``python -m PACKAGE`` when it runs as
    ``python -m``, else ``script`` (the console script's name, also what ``-c`` shows)."""
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    name = getattr(spec, "name", "") or ""
    if name.endswith(".__main__"):
        return f"python -m {name.removesuffix('.__main__')}"
    return script


def requested_language(argv: list[str]) -> str | None:
    """The value of ``--lang`` in ``argv`` if it names a language we have, else None
    (a bad value is left to the parser, which reports it)."""
    for index, arg in enumerate(argv):
        if arg == "--":
            break
        if arg == LANG_OPTION and index + 1 < len(argv):
            value = argv[index + 1]
        elif arg.startswith(LANG_OPTION + "="):
            value = arg.split("=", 1)[1]
        else:
            continue
        return value if value in i18n.LANGUAGES else None
    return None


def choose_language(argv: list[str], prog: str) -> str:
    """Use ``--lang``'s language, or else the environment's; the language chosen.
    ``prog`` names the command in the warning for a catalog that is not installed."""
    language = requested_language(argv) or i18n.language_from_environment()
    if not i18n.use(language):
        print(
            _("{prog}: warning: the {language} catalog is not installed; messages stay in "
              "English (reinstall upper)").format(prog=prog, language=language),
            file=sys.stderr,
        )
    return i18n.current


def fill(text: str) -> str:
    return textwrap.fill(text, WIDTH, break_on_hyphens=False)


class CommandLine(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` with the project's promises: one-line usage errors
    (exit 2), ``--lang``, and an epilog listing ``exit_statuses`` (status, meaning)."""

    def __init__(self, *, exit_statuses: list[tuple[int, str]], epilog: str = "", **kwargs):
        lines = [_("exit status:")]
        lines += [f"  {status:<5}{meaning}" for status, meaning in exit_statuses]
        epilog = "\n".join(([epilog, ""] if epilog else []) + lines)
        if "description" in kwargs:
            kwargs["description"] = fill(kwargs["description"])
        super().__init__(
            epilog=epilog, formatter_class=argparse.RawDescriptionHelpFormatter, **kwargs
        )
        self.add_argument(
            LANG_OPTION,
            choices=i18n.LANGUAGES,
            help=_("language of the messages (default: from LANGUAGE, LC_ALL, LC_MESSAGES or "
                   "LANG: es, es_ES.UTF-8, es_AR, ... are Spanish; anything else English)"),
        )

    def error(self, message: str):
        """One line, not the usage block: the option, what is wrong, where help is."""
        self.exit(
            2,
            _("{prog}: error: {message} (see {prog} --help)").format(
                prog=self.prog, message=message
            )
            + "\n",
        )


def usage_error_status(meaning: str | None = None) -> tuple[int, str]:
    return 2, meaning or _("usage error (a bad option or value)")


def interrupted_status(meaning: str | None = None) -> tuple[int, str]:
    return 130, meaning or _("interrupted (Ctrl+C)")


def error_line(prog: str, error) -> str:
    """``PROG: error: MESSAGE``, the one line every command prints for a user's mistake."""
    return _("{prog}: error: {message}").format(prog=prog, message=i18n.translated(error))


def warn(prog: str, message) -> None:
    """``PROG: warning: MESSAGE`` on stderr."""
    print(
        _("{prog}: warning: {message}").format(prog=prog, message=i18n.translated(message)),
        file=sys.stderr,
    )
