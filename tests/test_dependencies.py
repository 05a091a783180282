"""The declared dependencies: requirements.txt and pyproject.toml say the same, the
floors job's constraints pin exactly pyproject's lower bounds, and every third-party
module upper imports is declared."""

import ast
import sys
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
CONFIG = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
MODULE_TO_DISTRIBUTION = {"prometheus_client": "prometheus-client"}


def declared(*extras: str) -> dict[str, Requirement]:
    lines = list(CONFIG["dependencies"])
    for extra in extras or CONFIG["optional-dependencies"]:
        lines += CONFIG["optional-dependencies"][extra]
    return {canonicalize_name(r.name): r for r in map(Requirement, lines)}


def requirement_lines(path: Path) -> list[str]:
    lines = (line.split("#", 1)[0].strip() for line in path.read_text().splitlines())
    return [line for line in lines if line and not line.startswith("-")]


def lower_bound(requirement: Requirement) -> Version:
    bounds = [Version(s.version) for s in requirement.specifier if s.operator == ">="]
    assert len(bounds) == 1, f"{requirement}: one >= bound, the floor"
    return bounds[0]


def test_requirements_txt_is_pyprojects_dependencies_and_extras():
    in_requirements = {
        str(Requirement(line)) for line in requirement_lines(ROOT / "requirements.txt")
    }
    assert in_requirements == {str(r) for r in declared().values()}
    assert "-e ." in (ROOT / "requirements.txt").read_text().splitlines()


def test_the_floors_constraints_pin_every_lower_bound():
    pins = {}
    for line in requirement_lines(ROOT / ".ci" / "constraints-floors.txt"):
        requirement = Requirement(line)
        (specifier,) = requirement.specifier
        assert specifier.operator == "==", line
        pins[canonicalize_name(requirement.name)] = Version(specifier.version)
    assert pins == {name: lower_bound(r) for name, r in declared().items()}


def test_the_ci_runs_the_floors_job():
    assert ".ci/floors" in (ROOT / ".ci" / "run").read_text().splitlines()
    assert "constraints-floors.txt" in (ROOT / ".ci" / "floors").read_text()


def third_party_imports(paths) -> set[str]:
    names = set()
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return {name for name in names if name not in sys.stdlib_module_names and name != "upper"}


def distributions(modules: set[str]) -> set[str]:
    return {canonicalize_name(MODULE_TO_DISTRIBUTION.get(name, name)) for name in modules}


def test_every_module_upper_imports_is_declared():
    loadtest_folder = ROOT / "upper" / "loadtest"
    files = list((ROOT / "upper").rglob("*.py"))
    server_side = third_party_imports(p for p in files if loadtest_folder not in p.parents)
    runtime = {canonicalize_name(Requirement(line).name) for line in CONFIG["dependencies"]}
    assert distributions(server_side) <= runtime, "declare them in [project] dependencies"
    loadtest = third_party_imports(loadtest_folder.rglob("*.py"))
    assert distributions(loadtest) <= runtime | set(declared("loadtest"))
    # greenlet is imported directly (upper.green), not only through gevent.
    assert "greenlet" in distributions(server_side)
