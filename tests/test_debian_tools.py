"""A test that needs a Debian tool fails without it under CI and skips, naming the package,
elsewhere: one function, ``helpers.missing_debian_tool``, decides for every such test."""

import pathlib
import subprocess
import sys
import textwrap

import pytest
from helpers import clean_env, missing_debian_tool, require_tool

TOOL = "no-such-tool-for-upper"
PACKAGE = "no-such-package"
RUN_TIMEOUT = 120.0


def test_under_ci_a_missing_tool_fails_naming_the_package(monkeypatch):
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match=f"apt-get install {PACKAGE}"):
        require_tool(TOOL, package=PACKAGE)


@pytest.mark.parametrize("ci", [None, "", "false"])
def test_elsewhere_a_missing_tool_skips_naming_tool_and_package(monkeypatch, ci):
    if ci is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", ci)
    with pytest.raises(pytest.skip.Exception) as skipped:
        require_tool(TOOL, package=PACKAGE)
    assert str(skipped.value) == f"needs {TOOL}: apt-get install {PACKAGE} (.ci/run installs it)"


def test_the_detail_says_what_else_went_wrong(monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="needs OpenSSL's headers: apt-get install"
                       " libssl-dev .*; cc: fatal error"):
        missing_debian_tool("OpenSSL's headers", "libssl-dev", detail="cc: fatal error")


def test_a_present_tool_is_found():
    assert require_tool("sh", package="dash").endswith("/sh")


@pytest.mark.parametrize(("ci", "outcome"), [("", "SKIPPED"), ("true", "FAILED")])
def test_a_plain_pytest_run_reports_the_tool(tmp_path, ci, outcome):
    """What a developer sees: pytest's own summary names the tool and the package."""
    (tmp_path / "test_needs_tool.py").write_text(textwrap.dedent(f"""
        from helpers import require_tool

        def test_it():
            require_tool({TOOL!r}, package={PACKAGE!r})
    """))
    tests_folder = str(pathlib.Path(__file__).resolve().parent)
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-rsf", "-p", "no:cacheprovider", "-n", "0",
         "-o", "addopts=", "-o", f"pythonpath={tests_folder}", str(tmp_path)],
        capture_output=True, text=True, timeout=RUN_TIMEOUT, cwd=tmp_path,
        env=clean_env(CI=ci),
    )
    assert run.returncode == (0 if outcome == "SKIPPED" else 1), run.stdout + run.stderr
    summary = [line for line in run.stdout.splitlines() if line.startswith(outcome)]
    assert summary, run.stdout
    assert f"needs {TOOL}: apt-get install {PACKAGE}" in summary[0], summary
