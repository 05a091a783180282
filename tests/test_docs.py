"""The README's quick start is what CI runs, so it stays true."""

import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parent.parent


def quick_start_commands() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"^(python3 -m venv .*)$", section, flags=re.MULTILINE)


def test_quick_start_is_exactly_two_commands():
    commands = quick_start_commands()
    assert len(commands) == 2
    assert commands[0].endswith("python -m upper_server")
    assert commands[1].endswith("python -m pytest")


def test_ci_runs_the_readme_test_command():
    ci_lines = (ROOT / ".ci" / "run").read_text().splitlines()
    assert quick_start_commands()[1] in ci_lines


def layout_section() -> str:
    readme = (ROOT / "README.md").read_text()
    return readme.split("## Layout", 1)[1].split("\n## ", 1)[0]


def test_the_layout_names_every_module():
    """A newcomer finds every module in the README's layout table."""
    layout = layout_section()
    missing = []
    for folder in ("upper", "upper_server", "upper_client", "loadtest", "benchmarks"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            relative = path.relative_to(ROOT)
            package = f"{relative.parent.as_posix()}/"
            if path.name in ("__init__.py", "__main__.py"):
                named = package in layout
            else:
                named = package in layout and path.name in layout
            if not named:
                missing.append(relative.as_posix())
    assert not missing, f"add to the README's Layout section: {missing}"
