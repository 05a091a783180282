"""The README and docs/ stay true: the quick start is what CI runs, the README
stays short, every relative link resolves, and the layout names every module."""

import pathlib
import re
import unicodedata

ROOT = pathlib.Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
README_MAX_LINES = 250
LAYOUT_FOLDERS = ("upper", "upper_server", "upper_client", "loadtest", "benchmarks")


def quick_start_commands() -> list[str]:
    readme = README.read_text()
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


def test_the_readme_is_short():
    lines = README.read_text().splitlines()
    assert len(lines) <= README_MAX_LINES, (
        f"README.md has {len(lines)} lines; at most {README_MAX_LINES}: move detail to docs/"
    )


# --- links ---------------------------------------------------------------------------------

_FENCE = re.compile(r"^(```|~~~).*?^\1", re.MULTILINE | re.DOTALL)
_INLINE_CODE = re.compile(r"`[^`\n]*`")
_LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def documents() -> list[pathlib.Path]:
    return [README, ROOT / "CHANGELOG.md", *sorted((ROOT / "docs").rglob("*.md"))]


def prose(text: str) -> str:
    """The text without code blocks and inline code, where brackets are not links."""
    return _INLINE_CODE.sub("", _FENCE.sub("", text))


def github_anchor(heading: str) -> str:
    """The id GitHub gives a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = _INLINE_CODE.sub(lambda match: match.group(0)[1:-1], heading.strip().lower())
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)  # a link keeps its words
    kept = []
    for char in text:
        if char in " -_" or unicodedata.category(char)[0] in "LN":
            kept.append("-" if char == " " else char)
    return "".join(kept)


def anchors(path: pathlib.Path) -> set[str]:
    seen: dict[str, int] = {}
    found = set()
    for line in _FENCE.sub("", path.read_text()).splitlines():
        heading = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not heading:
            continue
        anchor = github_anchor(heading.group(1))
        count = seen.get(anchor, 0)
        seen[anchor] = count + 1
        found.add(anchor if count == 0 else f"{anchor}-{count}")
    return found


def broken_links(path: pathlib.Path, root: pathlib.Path = ROOT) -> list[str]:
    broken = []
    for target in _LINK.findall(prose(path.read_text())):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
            continue
        file_part, _, anchor = target.partition("#")
        linked = (path.parent / file_part).resolve() if file_part else path
        if not linked.exists():
            broken.append(f"{target} (no such file)")
        elif root not in linked.parents and linked != root:
            broken.append(f"{target} (outside the repository)")
        elif anchor and (linked.suffix != ".md" or anchor not in anchors(linked)):
            broken.append(f"{target} (no such heading)")
    return broken


def test_github_anchors_follow_githubs_rule():
    assert github_anchor("Behind a balancer: the PROXY protocol") == (
        "behind-a-balancer-the-proxy-protocol"
    )
    assert github_anchor("Pipelining: `--pipeline-depth`") == "pipelining---pipeline-depth"
    assert github_anchor("Limits, and what happens at each") == "limits-and-what-happens-at-each"


def test_a_broken_link_is_found(tmp_path):
    (tmp_path / "inside").mkdir()
    (tmp_path / "outside.md").write_text("# Elsewhere\n")
    page = tmp_path / "inside" / "a.md"
    page.write_text(
        "# Title\n\n[ok](#title) [gone](b.md) [no](#nowhere) [out](../outside.md)\n"
        "`[not a link](c.md)`\n"
    )
    assert broken_links(page, root=tmp_path / "inside") == [
        "b.md (no such file)",
        "#nowhere (no such heading)",
        "../outside.md (outside the repository)",
    ]


def test_every_relative_link_resolves():
    broken = {
        path.relative_to(ROOT).as_posix(): links
        for path in documents()
        if (links := broken_links(path))
    }
    assert not broken, f"links that do not resolve: {broken}"


def test_the_readme_links_every_docs_page():
    linked = set(_LINK.findall(prose(README.read_text())))
    pages = [f"docs/{page.name}" for page in sorted((ROOT / "docs").glob("*.md"))]
    missing = [page for page in pages if page not in linked]
    assert not missing, f"the README links no: {missing}"


# --- the layout table ----------------------------------------------------------------------


def layout_section() -> str:
    architecture = (ROOT / "docs" / "architecture.md").read_text()
    return architecture.split("## Layout", 1)[1].split("\n## ", 1)[0]


def test_the_layout_names_every_module():
    """A newcomer finds every module in docs/architecture.md's layout table."""
    layout = layout_section()
    missing = []
    for folder in LAYOUT_FOLDERS:
        for path in sorted((ROOT / folder).rglob("*.py")):
            relative = path.relative_to(ROOT)
            package = f"{relative.parent.as_posix()}/"
            if path.name in ("__init__.py", "__main__.py"):
                named = package in layout
            else:
                named = package in layout and path.name in layout
            if not named:
                missing.append(relative.as_posix())
    assert not missing, f"add to the Layout section of docs/architecture.md: {missing}"


# --- the checker's --json keys -------------------------------------------------------------


def documented_json_keys() -> set[str]:
    checking = (ROOT / "docs" / "checking.md").read_text()
    section = checking.split("## The JSON document", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"^\| `([a-z_]+)` \|", section, flags=re.MULTILINE))


def test_docs_checking_names_every_key_of_the_json_document():
    import json

    from upper.check.outcome import Evidence, Result, Status
    from upper.check.report import json_document

    results = [
        Result("a-pass", "passes", Status.PASS, seconds=0.1, section="s"),
        Result("a-difference", "differs", Status.FAIL, reason="r", hint="h", section="s",
               evidence=Evidence(sent=b"hola\r\n", sent_total=6, before=b"HOLA",
                                 expected=b"\r\n", got=b"\n", difference_at=4)),
        Result("nothing-back", "silent", Status.FAIL, reason="r", hint="h", section="s",
               evidence=Evidence(sent=b"hola\n", sent_total=5)),
        Result("not-run", "not run", Status.NOT_RUN, reason="server gone", section="s"),
    ]
    document = json.loads(json_document("127.0.0.1:5000", 5.0, results, 1.0))
    written = set(document)
    for check in document["checks"]:
        written |= set(check)
    undocumented = written - documented_json_keys()
    assert not undocumented, f"document these --json keys in docs/checking.md: {undocumented}"
    summary_row = re.search(r"^\| `summary` \|.*$", (ROOT / "docs" / "checking.md").read_text(),
                            flags=re.MULTILINE).group(0)
    assert all(f"`{key}`" in summary_row for key in document["summary"]), summary_row


# --- paths named in the docs ---------------------------------------------------------------

_NAMED_PATH = re.compile(
    r"`((?:upper|upper_server|upper_client|upper_protocol|upper_gevent|loadtest|benchmarks|tests)"
    r"/[\w/.-]*\.(?:py|c|po|md))`"
)


def test_every_source_path_the_docs_name_exists():
    """A module moved or renamed is not left behind in the docs under its old path."""
    gone = {}
    for path in documents():
        missing = [name for name in _NAMED_PATH.findall(path.read_text())
                   if not (ROOT / name).exists()]
        if missing:
            gone[path.relative_to(ROOT).as_posix()] = sorted(set(missing))
    assert not gone, f"paths in the docs that do not exist: {gone}"
