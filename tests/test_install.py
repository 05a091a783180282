"""The light install works: the wheel, installed in a fresh venv without the dev extras,
gives a server, a checker and a client that work; the README's user examples run as
written in that venv.

These tests need the package index that pip is configured with (for gevent and
prometheus_client) and take time: one venv for the whole module (about 20 s to
build and install on this project's 2-CPU VM), generous timeouts.
"""

import os
import pathlib
import re
import shutil
import subprocess
import sys
import venv

import pytest
from helpers import clean_env

ROOT = pathlib.Path(__file__).resolve().parent.parent
INSTALL_TIMEOUT = 600.0
RUN_TIMEOUT = 60.0
READY_TIMEOUT = 30.0
README_INSTALL = "python3 -m venv .venv && .venv/bin/pip install ."
RUNTIME_DEPENDENCIES = {"gevent", "greenlet", "prometheus-client", "zope-event", "zope-interface"}
DEV_ONLY = ("locust", "pytest", "hypothesis", "trustme", "uvloop", "matplotlib", "psutil")

# One venv for the module: under pytest-xdist its tests stay on one worker (--dist loadgroup).
pytestmark = [pytest.mark.xdist_group("light-venv"), pytest.mark.timeout(INSTALL_TIMEOUT * 2)]


def bin_dir(environment: pathlib.Path) -> pathlib.Path:
    return environment / ("Scripts" if os.name == "nt" else "bin")


@pytest.fixture(scope="module")
def light_venv(tmp_path_factory) -> pathlib.Path:
    """A fresh venv holding only the project's wheel and its runtime dependencies."""
    work = tmp_path_factory.mktemp("install")
    wheels = work / "wheels"
    # Build from a copy: building in the worktree would leave build/ and *.egg-info there.
    source = work / "source"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(
        ".git", ".venv", "build", "*.egg-info", "__pycache__", ".pytest_cache", "tests"))
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(wheels),
         str(source)],
        check=True, timeout=INSTALL_TIMEOUT, env=clean_env(),
    )
    (wheel,) = wheels.glob("upper-*.whl")
    environment = work / "venv"
    venv.create(environment, with_pip=True)
    subprocess.run(
        [str(bin_dir(environment) / "python"), "-m", "pip", "install", "--quiet", str(wheel)],
        check=True, timeout=INSTALL_TIMEOUT, env=clean_env(), cwd=work,
    )
    return environment


def installed(environment: pathlib.Path) -> set[str]:
    listed = subprocess.run(
        [str(bin_dir(environment) / "python"), "-m", "pip", "list", "--format=freeze"],
        capture_output=True, text=True, check=True, timeout=RUN_TIMEOUT,
    )
    names = {line.split("==")[0].lower().replace("_", "-").replace(".", "-")
             for line in listed.stdout.splitlines()}
    return names - {"pip", "setuptools", "wheel"}


def venv_env(environment: pathlib.Path, **extra: str) -> dict[str, str]:
    """The environment of a shell whose venv is activated (what `. .venv/bin/activate` does)."""
    env = clean_env(**extra)
    env.pop("PYTHONPATH", None)
    env["VIRTUAL_ENV"] = str(environment)
    env["PATH"] = os.pathsep.join([str(bin_dir(environment)), env.get("PATH", "")])
    return env


class Server:
    """`upper-server --port 0` from the light venv, read until its ready line."""

    def __init__(self, environment: pathlib.Path, command: list[str], cwd: pathlib.Path):
        self.process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=cwd,
            env=venv_env(environment, UPPER_PORT="0"),
        )
        self.ready_line = read_ready_line(self.process)
        found = re.search(r"127\.0\.0\.1:(\d+)", self.ready_line)
        assert found, self.ready_line
        self.port = int(found.group(1))

    def stop(self) -> int:
        self.process.terminate()
        try:
            return self.process.wait(timeout=RUN_TIMEOUT)
        finally:
            if self.process.poll() is None:
                self.process.kill()


def read_ready_line(process: subprocess.Popen) -> str:
    import selectors

    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        if not selector.select(READY_TIMEOUT):
            process.kill()
            pytest.fail(f"no ready line within {READY_TIMEOUT}s: {process.stderr.read()}")
    line = process.stdout.readline()
    if not line:
        process.wait(timeout=RUN_TIMEOUT)
        pytest.fail(f"the server ended before its ready line: {process.stderr.read()}")
    return line.strip()


def run_in(environment, command, cwd, port, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        command, capture_output=True, text=True, timeout=RUN_TIMEOUT, cwd=cwd,
        env=venv_env(environment, UPPER_PORT=str(port)), **kwargs,
    )


# --- (a) the wheel, without the dev extras -------------------------------------------------


def test_the_light_venv_holds_only_the_runtime_dependencies(light_venv):
    names = installed(light_venv)
    assert names == {"upper"} | RUNTIME_DEPENDENCIES, names
    assert not any(name in names for name in DEV_ONLY)


def test_the_installed_server_checker_and_client_work(light_venv, tmp_path):
    scripts = bin_dir(light_venv)
    server = Server(light_venv, [str(scripts / "upper-server"), "--port", "0"], cwd=tmp_path)
    try:
        assert server.ready_line.startswith("upper_server listening on 127.0.0.1:")
        address = f"127.0.0.1:{server.port}"
        checked = run_in(light_venv, [str(scripts / "upper-check"), "--host", address],
                         cwd=tmp_path, port=server.port)
        assert checked.returncode == 0, checked.stdout + checked.stderr
        assert "0 failed, 0 not run" in checked.stdout, checked.stdout
        client = run_in(light_venv, [str(scripts / "upper-client"), "--port", str(server.port),
                                     "hola servidor"], cwd=tmp_path, port=server.port)
        assert client.returncode == 0, client.stderr
        assert client.stdout == "HOLA SERVIDOR\n"
    finally:
        assert server.stop() == 0


def test_the_installed_code_is_the_wheels_not_the_worktrees(light_venv, tmp_path):
    where = subprocess.run(
        [str(bin_dir(light_venv) / "python"), "-c", "import upper; print(upper.__file__)"],
        capture_output=True, text=True, check=True, timeout=RUN_TIMEOUT, cwd=tmp_path,
        env=venv_env(light_venv),
    )
    location = pathlib.Path(where.stdout.strip()).resolve()
    assert pathlib.Path(light_venv).resolve() in location.parents, location


# --- (b) the README's user commands, as written ------------------------------------------


def readme_sessions() -> dict[str, list[tuple[str, list[str]]]]:
    """Per README section, the `$ command` lines of its code blocks, each with its output."""
    sessions: dict[str, list[tuple[str, list[str]]]] = {}
    readme = (ROOT / "README.md").read_text()
    for section in readme.split("\n## ")[1:]:
        title, body = section.split("\n", 1)
        for block in re.findall(r"^```\n(.*?)^```", body, flags=re.MULTILINE | re.DOTALL):
            for line in block.splitlines():
                if line.startswith("$ "):
                    sessions.setdefault(title, []).append((line[2:], []))
                elif title in sessions:
                    sessions[title][-1][1].append(line)
    return sessions


def test_the_readme_shows_the_light_install():
    readme = (ROOT / "README.md").read_text()
    assert README_INSTALL in readme.splitlines()
    assert ". .venv/bin/activate" in readme and ".venv\\Scripts\\activate" in readme


def test_the_readme_examples_run_as_written(light_venv, tmp_path):
    sessions = readme_sessions()
    ((server_command, server_output),) = sessions["The server"]
    server = Server(light_venv, ["bash", "-c", f"exec {server_command}"], cwd=tmp_path)
    try:
        # As written it listens on 5000; here UPPER_PORT=0 picks a free port instead.
        assert server.ready_line == server_output[0].replace("5000", str(server.port))
        ran = 0
        for title in ("The client", "Checking a server"):
            for command, output in sessions[title]:
                ran += run_readme_command(light_venv, command, output, tmp_path, server.port)
        assert ran >= 3
        python_example(light_venv, tmp_path, server.port)
    finally:
        assert server.stop() == 0


def run_readme_command(environment, command, output, cwd, port) -> int:
    if "< libro.txt > LIBRO.txt" in command:
        (cwd / "libro.txt").write_text("canción de cuna\nstraße\n", encoding="utf-8")
    done = run_in(environment, ["bash", "-c", command], cwd=cwd, port=port)
    assert done.returncode == 0, (command, done.stdout, done.stderr)
    if "< libro.txt > LIBRO.txt" in command:
        assert (cwd / "LIBRO.txt").read_text(encoding="utf-8") == "CANCIÓN DE CUNA\nSTRASSE\n"
        return 1
    got = done.stdout.replace(f"127.0.0.1:{port}", "127.0.0.1:5000").splitlines()
    if "..." in output:  # an excerpt: its lines in order, the figures of time left out
        expected = [line for line in output if line and line != "..."]
        shown = [line for line in got if line]
        positions = [index_of(shown, line) for line in expected]
        assert positions == sorted(positions), (command, got)
    else:
        assert got == output, (command, got)
    return 1


def index_of(lines: list[str], wanted: str) -> int:
    pattern = re.escape(wanted).replace(r"0\.7s", r"[0-9.]+s")
    for index, line in enumerate(lines):
        if re.fullmatch(pattern, line):
            return index
    pytest.fail(f"{wanted!r} not in the output: {lines}")


def python_example(environment, cwd, port) -> None:
    """The README's library example, with the port of this test's server."""
    readme = (ROOT / "README.md").read_text()
    (code,) = re.findall(r"^```python\n(.*?)^```", readme, flags=re.MULTILINE | re.DOTALL)
    # A line `expression  # 'value'` says what the expression gives: assert it.
    script = re.sub(r"^(\s*)(\S.*?)\s+# ('[^']*')$", r"\1assert \2 == \3", code,
                    flags=re.MULTILINE).replace("5000", str(port))
    assert "assert" in script, script
    done = run_in(environment, [str(bin_dir(environment) / "python"), "-c", script],
                  cwd=cwd, port=port)
    assert done.returncode == 0, (script, done.stderr)

