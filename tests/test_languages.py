"""Spanish and English: the catalogs are complete, every message a person reads goes
through them, and the three command lines speak the language the user asks for.

The catalogs are checked against the messages Babel extracts from the code (as the
maintainers' ``pybabel extract`` does); the command lines run in subprocesses with
the environment a Spanish user has (``LANG=es_ES.UTF-8``) or with ``--lang es``.
"""

import ast
import json
import os
import pathlib
import re
import socket
import subprocess
import sys

import pytest
from babel.messages.extract import DEFAULT_KEYWORDS, extract_from_dir, extract_from_file
from babel.messages.pofile import read_po
from wrong_servers import AsciiUpperServer, ResetOnCloseServer

from upper import i18n

ROOT = pathlib.Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "upper"
CATALOGS = PACKAGE / "locale" / "es" / "LC_MESSAGES"
KEYWORDS = {**DEFAULT_KEYWORDS, "Message": None}
"""What marks a message: gettext's names (``_``, ``ngettext``) and ``upper.i18n.Message``."""
MARKERS = {"_", "ngettext", "Message"}
RUN_TIMEOUT = 60.0
SPANISH = {"LANG": "es_ES.UTF-8"}
ENGLISH = {"LANG": "C"}


def environment(**variables: str) -> dict[str, str]:
    """The test's environment with no language settings but ``variables``."""
    env = {
        name: value
        for name, value in os.environ.items()
        if name not in i18n.ENVIRONMENT and not name.startswith("UPPER_")
    }
    env.update(variables)
    return env


def run(*command: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*command],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        env=environment(**env),
    )


def python_m(module: str, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return run(sys.executable, "-m", module, *args, env=env)


@pytest.fixture
def english_afterwards():
    """Tests that switch this process's language leave it English."""
    yield
    i18n.use(i18n.SOURCE_LANGUAGE)


# -- the catalogs -------------------------------------------------------------------------


def extracted_messages() -> dict:
    """msgid (a str, or (singular, plural)) -> where it is, for every message in upper/."""
    found = {}
    for filename, lineno, message, _comments, _context in extract_from_dir(
        str(PACKAGE), method_map=[("**.py", "python")], keywords=KEYWORDS
    ):
        key = message if isinstance(message, str) else tuple(message)
        found.setdefault(key, f"upper/{filename}:{lineno}")
    return found


def read_catalog(name: str):
    with (CATALOGS / f"{name}.po").open("rb") as source:
        return read_po(source, locale="es")


def placeholders(text: str) -> set[str]:
    """The ``{name}`` and ``%(name)s`` fields a translation must keep."""
    return set(re.findall(r"\{[^{}]*\}|%\(\w+\)\w", text))


def test_every_message_has_a_spanish_translation():
    catalog = read_catalog("upper")
    missing = []
    for msgid, where in extracted_messages().items():
        entry = catalog.get(msgid if isinstance(msgid, str) else msgid[0])
        strings = [] if entry is None else (
            list(entry.string) if isinstance(entry.string, tuple) else [entry.string]
        )
        if entry is None or not all(strings) or entry.fuzzy:
            missing.append(f"{where}: {msgid!r}")
    assert not missing, (
        "no Spanish msgstr in upper.po (docs/checking.md, Languages):\n" + "\n".join(missing)
    )


def test_the_catalog_has_no_stale_or_fuzzy_entries():
    catalog = read_catalog("upper")
    used = {key if isinstance(key, str) else key[0] for key in extracted_messages()}
    stale = [entry.id for entry in catalog if entry.id and
             (entry.id if isinstance(entry.id, str) else entry.id[0]) not in used]
    fuzzy = [entry.id for entry in catalog if entry.id and entry.fuzzy]
    assert not stale, f"upper.po has entries no code uses: {stale}"
    assert not fuzzy, f"upper.po has fuzzy entries (not translations): {fuzzy}"
    assert not catalog.obsolete, f"upper.po has obsolete entries: {list(catalog.obsolete)}"


@pytest.mark.parametrize("name", ["upper", "argparse"])
def test_translations_keep_every_placeholder(name):
    wrong = []
    for entry in read_catalog(name):
        if not entry.id:
            continue
        ids = [entry.id] if isinstance(entry.id, str) else list(entry.id)
        strings = [entry.string] if isinstance(entry.string, str) else list(entry.string)
        for string in strings:
            if placeholders(string) != placeholders(ids[-1]) and placeholders(string) != (
                placeholders(ids[0])
            ):
                wrong.append((entry.id, string))
    assert not wrong, wrong


def test_every_argparse_message_of_this_python_has_a_spanish_translation():
    import argparse

    catalog = read_catalog("argparse")
    missing = []
    for _lineno, message, _comments, _context in extract_from_file(
        "python", argparse.__file__, keywords=DEFAULT_KEYWORDS
    ):
        msgid = message if isinstance(message, str) else message[0]
        entry = catalog.get(msgid)
        if entry is None or not entry.string or entry.fuzzy:
            missing.append(msgid)
    assert not missing, f"add to argparse.po (Python {sys.version_info[:2]}): {missing}"


def test_the_compiled_catalogs_are_installed():
    """The install compiled the current .po sources (setup.py's build_catalogs), here in
    place: each .mo holds every translation its .po has now (headers aside: Babel dates
    the ones a .po leaves out)."""
    import gettext

    for name in ("upper", "argparse"):
        compiled = i18n.catalog_path("es", name)
        assert compiled.exists(), f"{compiled} is missing: reinstall (pip install -e .)"
        with compiled.open("rb") as mo:
            installed = {key: value for key, value in gettext.GNUTranslations(mo)._catalog.items()
                         if key != ""}
        source = {}
        for entry in read_catalog(name):
            if not entry.id or entry.fuzzy:
                continue
            if isinstance(entry.id, str):
                source[entry.id] = entry.string
            else:
                for index, string in enumerate(entry.string):
                    source[(entry.id[0], index)] = string
        assert installed == source, (
            f"{compiled} is not {name}.po compiled: reinstall (pip install -e .) to compile it"
        )


# -- every message a person reads is marked ------------------------------------------------

SHOWN_BY = {"print", "warn", "fail", "error", "_write"}
"""Calls whose arguments a person reads (``parser.error``, the report's ``_write``)."""
SHOWN_AS = {"help", "description", "epilog"}
"""argparse keywords whose values a person reads."""
USER_FACING = [
    "upper/server/cli.py",
    "upper/client/cli.py",
    "upper/check/cli.py",
    "upper/check/report.py",
    "upper/cli/options.py",
    "upper/cli/parser.py",
]
MACHINE_READ = {("upper/server/cli.py", "announce")}
"""The server's ready line: tools and tests read it, so it is the same in every language."""
NOT_WORDS = re.compile(r"^(--?[a-z0-9][a-z0-9-]*|[^A-Za-z]*)$")
"""Literals with nothing to translate: option names, punctuation, escapes, spacing."""


def bare_literals(node: ast.AST) -> list[ast.AST]:
    """String literals with words in them, outside any ``_()``/``ngettext()``/``Message()``."""
    if isinstance(node, ast.Call) and _called(node) in MARKERS:
        return []
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [] if NOT_WORDS.match(node.value) else [node]
    if isinstance(node, ast.JoinedStr):  # judged whole: f"--{prefix}key" is an option's name
        text = "".join(p.value if isinstance(p, ast.Constant) else "0" for p in node.values)
        found = [] if NOT_WORDS.match(text) else [node]
        for part in node.values:
            if isinstance(part, ast.FormattedValue):
                found += bare_literals(part.value)
        return found
    found = []
    for child in ast.iter_child_nodes(node):
        found += bare_literals(child)
    return found


def _called(call: ast.Call) -> str:
    func = call.func
    return func.id if isinstance(func, ast.Name) else getattr(func, "attr", "")


def functions_of(tree: ast.AST):
    """(enclosing function's name, node) for every node."""
    def walk(node, function):
        for child in ast.iter_child_nodes(node):
            name = child.name if isinstance(child, ast.FunctionDef) else function
            yield name, child
            yield from walk(child, name)
    yield from walk(tree, "")


@pytest.mark.parametrize("path", USER_FACING)
def test_what_a_person_reads_goes_through_the_catalog(path):
    tree = ast.parse((ROOT / path).read_text(encoding="utf-8"))
    unmarked = []
    for function, node in functions_of(tree):
        if not isinstance(node, ast.Call) or (path, function) in MACHINE_READ:
            continue
        shown = list(node.args) if _called(node) in SHOWN_BY else []
        if _called(node) == "add_argument_group":
            shown = list(node.args[:1])
        shown += [k.value for k in node.keywords if k.arg in SHOWN_AS]
        for argument in shown:
            for literal in bare_literals(argument):
                unmarked.append(f"{path}:{literal.lineno}: {ast.unparse(literal)}")
    assert not unmarked, "wrap in _() (or Message()) and translate:\n" + "\n".join(unmarked)


def test_every_marked_message_is_a_literal():
    """Babel can only extract a literal: ``_(f"...")`` or ``_(text)`` is never translated."""
    dynamic = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path == PACKAGE / "i18n.py":
            continue  # the machinery: Message.translated() looks its msgid up
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and (
                node.func.id in MARKERS
            ):
                count = 2 if node.func.id == "ngettext" else 1
                for argument in node.args[:count]:
                    if not (isinstance(argument, ast.Constant) and isinstance(argument.value, str)):
                        where = path.relative_to(ROOT)
                        dynamic.append(f"{where}:{node.lineno}: {ast.unparse(node)[:80]}")
    assert not dynamic, dynamic


# -- choosing the language ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("variables", "language"),
    [
        ({"LANG": "es"}, "es"),
        ({"LANG": "es_ES.UTF-8"}, "es"),
        ({"LANG": "es_AR"}, "es"),
        ({"LANG": "es_MX.utf8@euro"}, "es"),
        ({"LANG": "en_US.UTF-8"}, "en"),
        ({"LANG": "fr_FR.UTF-8"}, "en"),
        ({"LANG": "C"}, "en"),
        ({}, "en"),
        ({"LC_MESSAGES": "es_ES.UTF-8", "LANG": "en_US.UTF-8"}, "es"),
        ({"LC_ALL": "en_GB.UTF-8", "LC_MESSAGES": "es_ES.UTF-8"}, "en"),
        ({"LANGUAGE": "es", "LC_ALL": "C.UTF-8"}, "es"),
        ({"LANGUAGE": "", "LANG": "es_CL.UTF-8"}, "es"),  # an empty variable is skipped
        ({"LANGUAGE": "fr:es_ES", "LANG": "en_US.UTF-8"}, "es"),  # the first one we have
        ({"LANGUAGE": "en:es"}, "en"),
        ({"LANGUAGE": "C:es"}, "en"),
    ],
)
def test_the_language_is_read_as_gettext_reads_it(variables, language):
    assert i18n.language_from_environment(variables) == language


def test_a_message_is_english_text_that_translates_where_it_is_shown(english_afterwards):
    inner = i18n.Message("waiting for the reply")
    message = i18n.Message("the server reset the connection while {doing}", doing=inner)
    assert message == "the server reset the connection while waiting for the reply"
    assert json.dumps(message) == json.dumps(str(message))  # machine output gets the English
    assert i18n.use("es")
    assert message.translated() == (
        "el servidor reinició la conexión mientras se esperaba la respuesta"
    )
    assert i18n.translated(ValueError(message)) == message.translated()
    assert message == "the server reset the connection while waiting for the reply"


def test_library_messages_are_english_until_a_command_line_chooses(english_afterwards):
    assert i18n.current == "en"
    assert i18n.Message("connection closed").translated() == "connection closed"
    assert i18n.use("es")
    assert i18n.Message("connection closed").translated() == "conexión cerrada"


# -- the command lines in Spanish -----------------------------------------------------------

COMMANDS = [
    ("upper_server", "python -m upper_server"),
    ("upper_client", "python -m upper_client"),
    ("upper.check", "python -m upper.check"),
]


@pytest.mark.parametrize(("module", "prog"), COMMANDS)
@pytest.mark.parametrize(("how", "args", "env"), [
    ("LANG", [], SPANISH),
    ("--lang", ["--lang", "es"], ENGLISH),
])
def test_help_is_in_spanish(module, prog, how, args, env):
    result = python_m(module, *args, "--help", env=env)
    assert result.returncode == 0, result.stderr
    text = result.stdout
    assert text.startswith(f"uso: {prog} "), text  # argparse's own words, routed
    assert "\nopciones:\n" in text, text
    assert "mostrar este mensaje de ayuda y salir" in text, text
    assert "idioma de los mensajes" in text, text
    assert "\nestado de salida:\n  0    " in text, text
    assert "\n  2    error de uso" in text, text
    assert "usage:" not in text and "show this help" not in text, text


@pytest.mark.parametrize(("module", "prog"), COMMANDS)
def test_a_usage_error_is_one_spanish_line(module, prog):
    result = python_m(module, "--port", "abc", env=SPANISH)
    assert result.returncode == 2, result
    assert result.stdout == ""
    lowest = 0 if module == "upper_server" else 1
    assert result.stderr == (
        f"{prog}: error: argumento --port: puerto no válido 'abc': usar un número de "
        f"{lowest} a 65535 (ver {prog} --help)\n"
    )


def test_argparse_errors_are_spanish_too():
    result = python_m("upper_client", "--timeout", env=SPANISH)
    assert result.returncode == 2
    assert result.stderr == (
        "python -m upper_client: error: argumento --timeout: se esperaba un argumento "
        "(ver python -m upper_client --help)\n"
    )


def test_an_invalid_lang_is_a_usage_error_in_the_environment_language():
    result = python_m("upper_server", "--lang", "fr", env=SPANISH)
    assert result.returncode == 2
    assert result.stderr.startswith(
        "python -m upper_server: error: argumento --lang: opción no válida: 'fr'"
    ), result.stderr


def test_a_missing_catalog_is_one_warning_and_english(tmp_path):
    code = (
        "import pathlib, sys\n"
        "from upper import i18n\n"
        "i18n.LOCALE_DIR = pathlib.Path(sys.argv.pop(1))  # an install without the catalogs\n"
        "from upper.client.cli import run\n"
        "run()"
    )
    result = run(sys.executable, "-c", code, str(tmp_path), "--lang", "es", "--port", "abc",
                 env=ENGLISH)
    assert result.returncode == 2
    warning, error = result.stderr.splitlines()
    assert warning == (
        "upper-client: warning: the es catalog is not installed; messages stay in English "
        "(reinstall upper)"
    )
    assert error.startswith("upper-client: error: argument --port: invalid port 'abc'"), error


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]  # free once closed: nothing listens there


def test_the_client_says_in_spanish_that_nothing_listens():
    port = free_port()
    result = python_m("upper_client", "--port", str(port), "hola", env=SPANISH)
    assert result.returncode == 1
    assert result.stderr == (
        f"python -m upper_client: error: no se pudo conectar a 127.0.0.1:{port}: "
        "conexión rechazada (¿está en marcha el servidor?)\n"
    )


@pytest.mark.parametrize(("unsent", "english", "spanish"), [
    (["extra"], "1 message not sent", "1 mensaje sin enviar"),
    (["extra", "more"], "2 messages not sent", "2 mensajes sin enviar"),
])
def test_the_clients_notice_counts_in_both_languages(server, unsent, english, spanish):
    args = ["--port", str(server.port), "hola", "DESCONEXION", *unsent]
    for env, ended, count in (
        (ENGLISH, "DESCONEXION ended the session", english),
        (SPANISH, "DESCONEXION terminó la sesión", spanish),
    ):
        result = python_m("upper_client", *args, env=env)
        assert result.returncode == 0, result.stderr
        assert result.stdout == "HOLA\n"
        assert result.stderr == f"python -m upper_client: {ended}; {count}\n"


def test_the_server_says_in_spanish_that_the_port_is_taken():
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        result = python_m("upper_server", "--lang", "es", "--port", str(port), env=ENGLISH)
    assert result.returncode == 1
    assert result.stderr == (
        f"python -m upper_server: error: la dirección 127.0.0.1:{port} ya está en uso\n"
    )


def test_the_ready_line_is_the_same_in_spanish(start_server):
    server = start_server("--lang", "es")
    assert server.banner.startswith("upper_server listening on 127.0.0.1:"), server.banner


def test_the_checkers_report_is_in_spanish():
    with AsciiUpperServer() as wrong:
        host, port = wrong.address
        result = python_m(
            "upper.check", "--host", host, "--port", str(port),
            "--only", "hola-servidor", "unicode-case-mapping", env=SPANISH,
        )
    assert result.returncode == 1, result.stderr
    out = result.stdout
    assert out.startswith(f"upper-check: 2 comprobaciones contra {host}:{port} "), out
    assert "\nla prueba de la clase\n" in out, out
    assert re.search(r"\nPASA +hola-servidor +'hola servidor' se responde con 'HOLA SERVIDOR'\n",
                     out), out
    assert re.search(r"\nFALLA +unicode-case-mapping +mayúsculas completas", out), out
    assert "la respuesta difiere de lo que dice el protocolo" in out, out
    assert "enviado:" in out and "esperado:" in out and "recibido:" in out, out
    assert "^ primera diferencia, en el byte" in out, out
    assert "arreglo: decodificar la línea como UTF-8" in out, out
    assert "1 pasaron, 1 fallaron, 0 no se hicieron (2 comprobaciones, " in out, out
    assert out.rstrip().endswith("no conforme"), out


def comparable(document: str) -> dict:
    """The JSON document with its timings (which differ from run to run) set to 0."""
    parsed = json.loads(document)
    parsed["seconds"] = 0
    for check in parsed["checks"]:
        check["seconds"] = 0
    return parsed


@pytest.mark.parametrize(
    ("wrong_server", "checks"),
    [
        (AsciiUpperServer, ["hola-servidor", "unicode-case-mapping"]),
        (ResetOnCloseServer, ["clean-close"]),
    ],
)
def test_json_is_the_same_in_every_language(wrong_server, checks):
    with wrong_server() as wrong:
        host, port = wrong.address
        args = ["--host", host, "--port", str(port), "--json", "--only", *checks]
        spanish = python_m("upper.check", *args, env=SPANISH)
        english = python_m("upper.check", *args, env=ENGLISH)
        spanish_flag = python_m("upper.check", "--lang", "es", *args, env=ENGLISH)
    assert english.returncode == spanish.returncode == spanish_flag.returncode == 1
    assert english.stderr == spanish.stderr == spanish_flag.stderr == ""
    document = comparable(english.stdout)
    assert comparable(spanish.stdout) == document
    assert comparable(spanish_flag.stdout) == document
    failed = [check for check in document["checks"] if check["status"] == "fail"]
    assert failed and all(check["reason"] and check["hint"] for check in failed)
    # Byte for byte apart from the timings: the same keys, order and English sentences.
    timings = re.compile(r'"seconds": [0-9.]+')
    assert timings.sub("", spanish.stdout) == timings.sub("", english.stdout)


# -- what the commands call themselves --------------------------------------------------------


def console_script(name: str) -> pathlib.Path:
    script = pathlib.Path(sys.executable).parent / name
    assert script.exists(), f"{script} is missing: install the project (pip install -e .)"
    return script


@pytest.mark.parametrize("script", ["upper-server", "upper-client", "upper-check"])
def test_a_console_script_calls_itself_by_its_name(script):
    help_text = run(str(console_script(script)), "--help", env=ENGLISH)
    assert help_text.returncode == 0, help_text.stderr
    assert help_text.stdout.startswith(f"usage: {script} [-h]"), help_text.stdout
    error = run(str(console_script(script)), "--port", "abc", env=ENGLISH)
    assert error.returncode == 2
    (line,) = error.stderr.splitlines()
    assert line.startswith(f"{script}: error: argument --port: invalid port 'abc': ")
    assert line.endswith(f" (see {script} --help)")


@pytest.mark.parametrize("module", ["upper_server", "upper_client", "upper_client.check",
                                    "upper.check"])
def test_python_m_calls_itself_python_m(module):
    result = python_m(module, "--help", env=ENGLISH)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"usage: python -m {module} [-h]"), result.stdout


@pytest.mark.parametrize(("module", "statuses"), [
    ("upper_server", ["0", "1", "2", "130"]),
    ("upper_client", ["0", "1", "2", "130", "141"]),
    ("upper.check", ["0", "1", "2", "130"]),
])
def test_help_lists_the_exit_statuses(module, statuses):
    result = python_m(module, "--help", env=ENGLISH)
    epilog = result.stdout.split("\nexit status:\n", 1)[1]
    listed = [line.split()[0] for line in epilog.splitlines() if line.strip()]
    assert listed == statuses, epilog


def test_log_level_has_help_and_shows_its_default():
    result = python_m("upper_server", "--help", env=ENGLISH)
    flat = " ".join(result.stdout.split())
    assert "--log-level {debug,info,warning,error} the least severe log records written to " \
        "stderr (default: info)" in flat, result.stdout


# -- macOS: port 5000 and the AirPlay Receiver ----------------------------------------------

AIRPLAY = "AirPlay Receiver usually holds port 5000"
PORT_5000_TAKEN = """
import errno, os, socket
_bind = socket.socket.bind
def _bind_unless_5000(self, address):
    # What macOS's AirPlay Receiver does to us: port 5000 is someone else's.
    if address[1] == 5000:
        raise OSError(errno.EADDRINUSE, os.strerror(errno.EADDRINUSE))
    return _bind(self, address)
socket.socket.bind = _bind_unless_5000
"""


def server_on(platform: str, port: int, env=ENGLISH) -> subprocess.CompletedProcess:
    """The server's command line on ``platform`` (this one if empty), port 5000 taken."""
    patch = f"import sys\nsys.platform = {platform!r}\n" if platform else ""
    code = f"{PORT_5000_TAKEN}{patch}from upper.server.cli import run\nrun()"
    return run(sys.executable, "-c", code, "--host", "127.0.0.1", "--port", str(port), env=env)


@pytest.mark.parametrize(("platform", "says_airplay"), [("darwin", True), ("", False)])
def test_port_5000_in_use_names_airplay_only_on_macos(platform, says_airplay):
    result = server_on(platform, 5000)
    assert result.returncode == 1, result
    (line,) = result.stderr.splitlines()
    assert line.startswith("upper-server: error: address 127.0.0.1:5000 is already in use")
    assert (AIRPLAY in line) is says_airplay, line


def test_another_port_in_use_on_macos_does_not_name_airplay():
    with socket.create_server(("127.0.0.1", 0)) as taken:
        result = server_on("darwin", taken.getsockname()[1])
    assert result.returncode == 1
    (line,) = result.stderr.splitlines()
    assert "already in use" in line and "AirPlay" not in line, line


def test_the_airplay_clause_is_translated():
    result = server_on("darwin", 5000, env=SPANISH)
    assert result.returncode == 1, result
    (line,) = result.stderr.splitlines()
    assert "ya está en uso; en macOS el receptor AirPlay suele ocupar el puerto 5000" in line, line


# -- the build compiles the catalogs into a wheel ------------------------------------------


@pytest.mark.timeout(300)
def test_a_wheel_carries_the_compiled_catalogs(tmp_path):
    """pip builds the wheel as users get it (its build requirements, Babel among them, in an
    isolated environment); unpacked and imported without site-packages, it speaks Spanish."""
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(tmp_path),
         str(ROOT)],
        capture_output=True, text=True, timeout=280,
    )
    assert built.returncode == 0, built.stderr
    (wheel,) = tmp_path.glob("upper-*.whl")
    import zipfile

    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        archive.extractall(tmp_path / "unpacked")
    for domain in ("upper", "argparse"):
        assert f"upper/locale/es/LC_MESSAGES/{domain}.mo" in names, sorted(names)
    probe = (
        "import sys; sys.path.insert(0, sys.argv[1])\n"
        "from upper import i18n\n"
        "assert i18n.__file__.startswith(sys.argv[1]), i18n.__file__\n"
        "print(i18n.use('es'), i18n._('connection closed'))"
    )
    # -S: no site-packages, so neither the editable install nor anything else is imported.
    shown = subprocess.run(
        [sys.executable, "-S", "-c", probe, str(tmp_path / "unpacked")],
        capture_output=True, text=True, timeout=RUN_TIMEOUT,
    )
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout == "True conexión cerrada\n"
