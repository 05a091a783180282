"""The build step pyproject.toml cannot declare: compiling the gettext catalogs.

``upper/locale/LANG/LC_MESSAGES/DOMAIN.po`` (the sources, in the repository) become
``.mo`` files (what ``gettext`` reads, never committed) with Babel, as a sub-command
of ``build``: into the build directory for a wheel, into the source tree for an
editable install (setuptools then runs it with ``editable_mode``, as PEP 660's
editable wheels read the package from the source tree).
"""

from pathlib import Path

from setuptools import Command, setup
from setuptools.command.build import build

LOCALE = Path("upper") / "locale"


class build_catalogs(Command):
    description = "compile the gettext catalogs (.po to .mo) with Babel"
    user_options = []

    def initialize_options(self):
        self.build_lib = None
        self.editable_mode = False

    def finalize_options(self):
        self.set_undefined_options("build_py", ("build_lib", "build_lib"))

    def _pairs(self):
        """(source .po, target .mo) for every catalog."""
        root = Path() if self.editable_mode else Path(self.build_lib)
        return [(po, root / po.with_suffix(".mo")) for po in sorted(LOCALE.glob("*/*/*.po"))]

    def run(self):
        from babel.messages.mofile import write_mo
        from babel.messages.pofile import read_po

        for po, mo in self._pairs():
            with po.open("rb") as source:
                catalog = read_po(source, locale=po.parts[-3])
            mo.parent.mkdir(parents=True, exist_ok=True)
            with mo.open("wb") as target:
                write_mo(target, catalog, use_fuzzy=False)  # a fuzzy entry is not a translation

    def get_source_files(self):
        return [str(po) for po, _mo in self._pairs()]

    def get_outputs(self):
        return [str(mo) for _po, mo in self._pairs()]

    def get_output_mapping(self):
        return {str(mo): str(po) for po, mo in self._pairs()}


build.sub_commands.append(("build_catalogs", None))

setup(cmdclass={"build_catalogs": build_catalogs})
