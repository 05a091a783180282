"""The checker as a teacher and a student use it: ``--start`` with the student servers of
tests/students (real processes), ``--level``, ``--class`` with its reports and summary,
and ``--junit`` validated against the Jenkins JUnit schema."""

import csv
import json
import shlex
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import psutil
import pytest
import xmlschema
from helpers import clean_env
from junitparser import Error, Failure, JUnitXml

from upper.check.grading import ClassFileError, read_class
from upper.check.student_server import command_line, describe_exit

STUDENTS = Path(__file__).parent / "students"
JUNIT_SCHEMA = Path(__file__).parent / "schemas" / "junit-10.xsd"
RUN_LIMIT = 120
# The options every run here gets: short waits, as the servers are local and small.
QUICK = ("--timeout", "1", "--start-timeout", "5", "--stop-grace", "1")


def student(script: str, *args: str) -> str:
    """The --start command of a student server, run with this Python."""
    return shlex.join([sys.executable, script, "{port}", *args])


def check(*args: str, cwd=None, env=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "upper.check", *args], capture_output=True, text=True,
        timeout=RUN_LIMIT, cwd=cwd, env=env or clean_env(LANGUAGE="en", LANG="C.UTF-8"),
    )


def started(script: str, *args: str, level: str = "basic", extra=()) -> subprocess.CompletedProcess:
    return check("--start", student(script, *args), "--cwd", str(STUDENTS), "--level", level,
                 *QUICK, *extra)


def assert_none_alive(pids) -> None:
    """No process of ``pids`` runs (zombies, which no signal can end, do not count)."""
    alive = []
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                alive.append(pid)
        except psutil.NoSuchProcess:
            pass
    assert alive == []


def processes_running_from(folder: Path) -> list[psutil.Process]:
    """Live processes whose command line names something under ``folder``."""
    found = []
    for process in psutil.process_iter(["cmdline", "status"]):
        if process.info["status"] == psutil.STATUS_ZOMBIE:
            continue
        if any(str(folder) in word for word in process.info["cmdline"] or ()):
            found.append(process)
    return found


def read_pids(path: Path) -> list[int]:
    return [int(line) for line in path.read_text().split()]


# -- --start ----------------------------------------------------------------------------


def test_a_correct_server_started_by_the_checker_passes_every_check_and_is_stopped():
    done = check("--start", student("correcto.py"), "--cwd", str(STUDENTS), *QUICK)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "level full: every check" in done.stdout
    assert "24 passed, 0 failed, 0 not run" in done.stdout
    assert done.stdout.rstrip().endswith("server: stopped on SIGTERM")
    assert "{port}" not in done.stdout.splitlines()[0]  # the command as it was run


def test_a_first_week_per_recv_server_passes_basic_and_fails_full():
    basic = started("primera_semana.py", extra=("--json",))
    assert basic.returncode == 0, basic.stdout + basic.stderr
    document = json.loads(basic.stdout)
    assert document["level"] == "basic"
    assert [c["name"] for c in document["checks"]] == ["hola-servidor", "desconexion-closes"]
    assert document["passed"] is True
    assert document["server"]["stop"] == "stopped"

    full = started("primera_semana.py", level="full", extra=("--json",))
    assert full.returncode == 1, full.stdout + full.stderr
    document = json.loads(full.stdout)
    assert document["level"] == "full"
    failed = {c["name"] for c in document["checks"] if c["status"] == "fail"}
    passed = {c["name"] for c in document["checks"] if c["status"] == "pass"}
    assert {"hola-servidor", "desconexion-closes"} <= passed
    # bytes.upper() knows no 'ß', and strip() takes ' DESCONEXION' for the keyword
    assert {"unicode-case-mapping", "lookalike-leading-space"} <= failed


def test_a_server_that_exits_at_start_is_reported_with_its_status_and_output():
    done = started("arranque_roto.py")
    assert done.returncode == 2
    lines = done.stderr.splitlines()
    assert lines[0].endswith(  # after the name the checker was called by
        ": error: did not start: the server exited before accepting connections (exit 3)"
    )
    assert "  | no encuentro config.ini" in lines
    assert "Traceback" not in done.stderr


def test_a_server_that_never_listens_is_reported_and_stopped():
    done = check("--start", student("nunca_escucha.py"), "--cwd", str(STUDENTS),
                 "--start-timeout", "1", "--stop-grace", "1")
    assert done.returncode == 2
    assert "did not start: nothing accepted connections on 127.0.0.1:" in done.stderr
    assert "within 1s" in done.stderr
    assert "server: stopped on SIGTERM" in done.stderr
    assert "  | pensando en otra cosa" in done.stderr


def test_a_program_that_cannot_be_run_is_one_line():
    done = check("--start", "no-such-program-here {port}", "--cwd", str(STUDENTS))
    assert done.returncode == 2
    [line] = done.stderr.splitlines()
    assert ": error: did not start: cannot run 'no-such-program-here " in line
    assert "Traceback" not in done.stderr


def test_a_server_that_crashes_mid_run_is_reported_with_its_traceback():
    done = started("falla_a_mitad.py")
    assert done.returncode == 1
    assert "server: crashed (exit 1)" in done.stdout
    assert "  | ValueError: no sé contestar a hola servidor" in done.stdout
    # the next check is refused (not run) or reset (failed) by the dying listener
    assert any(line.startswith(("NOT RUN desconexion-closes", "FAIL    desconexion-closes"))
               for line in done.stdout.splitlines())


def test_a_server_ignoring_sigterm_is_killed_with_its_whole_process_group(tmp_path):
    pidfile = tmp_path / "pids"
    done = started("ignora_sigterm.py", str(pidfile), "hijo")
    assert done.returncode == 0, done.stdout + done.stderr  # the checks passed
    assert "server: did not stop on SIGTERM (killed)" in done.stdout
    pids = read_pids(pidfile)
    assert len(pids) == 2  # the server and its child, both ignoring SIGTERM
    assert_none_alive(pids)


_WITHOUT_KILLPG = textwrap.dedent("""
    import os, sys
    del os.killpg  # as on Windows: no process groups to signal
    from upper.check.cli import run
    sys.argv = ["upper-check", *sys.argv[1:]]
    run()
""")


@pytest.mark.parametrize(
    "script, stop",
    [
        ("correcto.py", "server: stopped on terminate()"),
        ("ignora_sigterm.py", "server: did not stop on terminate() (killed)"),
    ],
)
def test_without_process_groups_the_server_is_terminated_then_killed(tmp_path, script, stop):
    args = [str(tmp_path / "pids")] if script == "ignora_sigterm.py" else []
    done = subprocess.run(
        [sys.executable, "-c", _WITHOUT_KILLPG, "--start", student(script, *args),
         "--cwd", str(STUDENTS), "--level", "basic", *QUICK],
        capture_output=True, text=True, timeout=RUN_LIMIT, env=clean_env(LANGUAGE="en"),
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.rstrip().endswith(stop)
    if args:
        assert_none_alive(read_pids(tmp_path / "pids"))


def test_without_a_port_placeholder_the_checker_waits_on_port(tmp_path):
    from helpers import free_port

    port = free_port()
    command = shlex.join([sys.executable, "correcto.py", str(port)])
    done = check("--start", command, "--cwd", str(STUDENTS), "--port", str(port),
                 "--level", "basic", *QUICK)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"against 127.0.0.1:{port} " in done.stdout


def test_a_port_already_in_use_is_refused_before_starting(server):
    host, port = server.address
    command = shlex.join([sys.executable, "correcto.py", str(port)])
    done = check("--start", command, "--cwd", str(STUDENTS), "--host", host, "--port", str(port))
    assert done.returncode == 2
    assert done.stderr.splitlines()[0].endswith(
        f": error: did not start: something already accepts connections on "
        f"{host}:{port}: stop it, or put {{port}} in the command"
    )


def test_exit_statuses_are_described_as_a_person_reads_them():
    assert describe_exit(3) == "exit 3"
    assert describe_exit(-signal.SIGSEGV) == "killed by SIGSEGV"
    assert describe_exit(None) == "still running"


def test_the_command_is_split_by_sh_rules_on_posix_and_left_whole_on_windows():
    command = "python3 'mi servidor.py' --port {port} \"a b\""
    assert command_line(command, 4000, windows=False) == [
        "python3", "mi servidor.py", "--port", "4000", "a b"
    ]
    assert command_line(command, 4000, windows=True) == (
        "python3 'mi servidor.py' --port 4000 \"a b\""
    )
    with pytest.raises(ValueError):
        command_line("python3 'unclosed {port}", 4000, windows=False)


@pytest.mark.parametrize(
    "args, complaint",
    [
        (["--cwd", "."], "argument --cwd: needs --start"),
        (["--start", "x", "--cwd", "/no/such/dir"], "argument --cwd: no directory"),
        (["--start", "x", "--class", "c.csv"], "argument --class: not with --start"),
        (["--out", "d"], "argument --out: needs --class"),
        (["--class", "c.csv", "--json"], "argument --json: not with --class"),
        (["--level", "basic", "--only", "lf-lines"], "argument --only: not with --level basic"),
        (["--level", "medium"], "argument --level: invalid choice"),
        (["--junit", "/no/such/dir/x.xml"], "argument --junit: no directory for"),
    ],
)
def test_classroom_usage_errors_are_exit_2(args, complaint, capsys):
    from upper.check.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code == 2
    assert complaint in capsys.readouterr().err


# -- --class ----------------------------------------------------------------------------

CLASS = {
    # name: (server, its extra arguments, summary's passed column, summary's error column)
    "Ana": ("correcto.py", [], "yes", ""),
    "Beto": ("arranque_roto.py", [], "no",
             "did not start: the server exited before accepting connections (exit 3)"),
    "Carla Núñez": ("nunca_escucha.py", [], "no", "did not start: nothing accepted"),
    "Dani": ("ignora_sigterm.py", ["PIDFILE", "hijo"], "yes", ""),
    "Elena": ("falla_a_mitad.py", [], "no", "crashed (exit 1)"),
    "Fede": ("primera_semana.py", [], "yes", ""),
}


def make_class(root: Path) -> Path:
    """A folder per student with their server (and comun.py), and the class file."""
    rows = [["name", "directory", "command"]]
    for name, (script, args, _passed, _error) in CLASS.items():
        folder = root / name.split()[0].lower()
        folder.mkdir()
        shutil.copy(STUDENTS / script, folder / "servidor.py")
        shutil.copy(STUDENTS / "comun.py", folder)
        args = [str(root / f"{folder.name}.pids") if a == "PIDFILE" else a for a in args]
        rows.append([name, folder.name, student("servidor.py", *args)])
    class_file = root / "clase.csv"
    with open(class_file, "w", newline="", encoding="utf-8") as out:
        csv.writer(out).writerows(rows)
    return class_file


def test_a_class_run_grades_every_student_and_leaves_nothing_running(tmp_path):
    class_file = make_class(tmp_path)
    out, junit = tmp_path / "informes", tmp_path / "clase.xml"
    done = check("--class", str(class_file), "--out", str(out), "--junit", str(junit),
                 "--level", "basic", "--timeout", "1", "--start-timeout", "2",
                 "--stop-grace", "1")
    assert done.returncode == 1, done.stdout + done.stderr  # not every student passed
    assert processes_running_from(tmp_path) == []
    assert_none_alive(read_pids(tmp_path / "dani.pids"))

    with open(out / "summary.csv", encoding="utf-8") as summary:
        rows = {row["student"]: row for row in csv.DictReader(summary)}
    assert list(rows) == list(CLASS)
    for name, (_script, _args, passed, error) in CLASS.items():
        assert rows[name]["passed"] == passed, rows[name]
        assert rows[name]["error"].startswith(error), rows[name]
        assert (out / rows[name]["report"]).is_file()
    # its second check fails or is not run, as its dying listener refuses or resets it
    assert rows["Elena"]["failed_checks"].split()[0] == "hola-servidor"
    assert rows["Dani"]["server_stop"] == "killed"
    assert rows["Beto"]["server_stop"] == "had-exited"

    report = json.loads((out / "Carla_Núñez.json").read_text(encoding="utf-8"))
    assert report["student"] == "Carla Núñez" and report["level"] == "basic"
    assert report["server"]["started"] is False
    assert report["server"]["output"] == ["pensando en otra cosa"]
    assert "ValueError" in (out / "Elena.log").read_text(encoding="utf-8")
    assert "server: did not stop on SIGTERM (killed)" in (out / "Dani.txt").read_text()

    table = done.stdout.splitlines()
    assert "students passed: 3 of 6 (level basic)" in table
    assert any(line.startswith("Dani ") and "(killed)" in line for line in table)

    suites = {suite.name: suite for suite in JUnitXml.fromfile(str(junit))}
    assert list(suites) == list(CLASS)  # one testsuite per student
    xmlschema.XMLSchema(str(JUNIT_SCHEMA)).validate(str(junit))


def test_a_class_file_without_the_columns_is_one_line(tmp_path):
    class_file = tmp_path / "clase.csv"
    class_file.write_text("nombre,comando\nAna,python3 s.py\n")
    done = check("--class", str(class_file))
    assert done.returncode == 2
    assert done.stderr.strip().endswith(
        "the header row needs the columns name, directory, command (missing: name, directory, "
        "command)"
    )


def test_the_class_file_resolves_folders_skips_comments_and_refuses_twins(tmp_path):
    class_file = tmp_path / "clase.csv"
    class_file.write_text(
        "\ufeffName,Command,Directory,email\n# a comment\n\nAna,python3 s.py {port},ana,a@x\n"
    )
    [ana] = read_class(class_file)
    assert (ana.name, ana.command, ana.directory) == ("Ana", "python3 s.py {port}",
                                                      (tmp_path / "ana").resolve())
    class_file.write_text("name,directory,command\nAna,a,x\nAna,b,y\n")
    with pytest.raises(ClassFileError, match="line 3: 'Ana' is in the class twice"):
        read_class(class_file)


# -- --junit ----------------------------------------------------------------------------


def test_junit_has_a_case_per_check_and_failures_with_sent_expected_got(tmp_path):
    junit = tmp_path / "full.xml"
    done = started("primera_semana.py", level="full", extra=("--junit", str(junit)))
    assert done.returncode == 1
    xmlschema.XMLSchema(str(JUNIT_SCHEMA)).validate(str(junit))
    [suite] = JUnitXml.fromfile(str(junit))
    assert suite.tests == 24 and suite.failures >= 2
    properties = {p.name: p.value for p in suite.properties()}
    assert properties["level"] == "full" and properties["server_stop"] == "stopped"
    cases = {case.name: case for case in suite}
    [failure] = cases["unicode-case-mapping"].result
    assert isinstance(failure, Failure)
    assert "sent:" in failure.text and "expected:" in failure.text and "got:" in failure.text
    assert "STRASSE" in failure.text
    assert cases["hola-servidor"].is_passed


def test_junit_against_a_running_server_says_the_level(server, tmp_path):
    junit = tmp_path / "basic.xml"
    host, port = server.address
    done = check("--host", host, "--port", str(port), "--level", "basic", "--junit", str(junit))
    assert done.returncode == 0, done.stdout + done.stderr
    xmlschema.XMLSchema(str(JUNIT_SCHEMA)).validate(str(junit))
    [suite] = JUnitXml.fromfile(str(junit))
    assert [case.name for case in suite] == ["hola-servidor", "desconexion-closes"]
    assert {p.name: p.value for p in suite.properties()}["level"] == "basic"


def test_junit_of_a_server_that_did_not_start_has_an_error_with_its_output(tmp_path):
    junit = tmp_path / "roto.xml"
    done = started("arranque_roto.py", extra=("--junit", str(junit)))
    assert done.returncode == 2
    xmlschema.XMLSchema(str(JUNIT_SCHEMA)).validate(str(junit))
    [suite] = JUnitXml.fromfile(str(junit))
    start = next(case for case in suite if case.name == "start")
    [error] = start.result
    assert isinstance(error, Error) and "no encuentro config.ini" in error.text


# -- in Spanish ---------------------------------------------------------------------------


def test_a_spanish_user_reads_the_server_lines_in_spanish_and_json_stays_english():
    spanish = clean_env(LANG="es_ES.UTF-8")
    for name in ("LANGUAGE", "LC_ALL", "LC_MESSAGES"):
        spanish.pop(name, None)
    done = check("--start", student("falla_a_mitad.py"), "--cwd", str(STUDENTS),
                 "--level", "basic", *QUICK, env=spanish)
    assert done.returncode == 1, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert "nivel basic: solo la prueba de clase (hola servidor, DESCONEXION)" in lines
    assert "servidor: se cayó (estado de salida 1)" in lines
    assert "servidor: ya había terminado (estado de salida 1)" in lines
    assert "sus últimas líneas de salida:" in lines

    json_run = check("--start", student("arranque_roto.py"), "--cwd", str(STUDENTS),
                     "--level", "basic", "--json", *QUICK, env=spanish)
    document = json.loads(json_run.stdout)
    assert document["server"]["error"] == (
        "did not start: the server exited before accepting connections (exit 3)"
    )
    assert {c["reason"] for c in document["checks"]} == {"the server did not start"}


def test_a_spanish_teacher_reads_the_class_table_in_spanish(tmp_path):
    spanish = clean_env(LANG="es_ES.UTF-8")
    for name in ("LANGUAGE", "LC_ALL", "LC_MESSAGES"):
        spanish.pop(name, None)
    class_file = tmp_path / "clase.csv"
    class_file.write_text(
        "name,directory,command\n"
        f"Ana,{STUDENTS},{student('primera_semana.py')}\n"
        f"Beto,{STUDENTS},{student('arranque_roto.py')}\n"
    )
    out = tmp_path / "informes"
    done = check("--class", str(class_file), "--out", str(out), "--level", "basic", *QUICK,
                 env=spanish)
    assert done.returncode == 1, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert any(line.startswith("estudiante  resultado") for line in lines), lines
    assert any(line.startswith("Ana ") and "APROBADO" in line for line in lines), lines
    assert any(line.startswith("Beto ") and "SUSPENSO" in line and "no arrancó: el servidor "
               "terminó antes de aceptar conexiones (estado de salida 3)" in line
               for line in lines), lines
    assert "aprobados: 1 de 2 (nivel basic)" in lines
    with open(out / "summary.csv", encoding="utf-8") as summary:
        rows = list(csv.DictReader(summary))
    assert rows[1]["error"] == (  # the CSV is read by programs: the same in every language
        "did not start: the server exited before accepting connections (exit 3)"
    )
