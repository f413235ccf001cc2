"""The documentation stays true to the code: every Python example on every page of `docs/`
runs, every public name has an API entry, and every page is in the site's navigation.

Examples. Each page's ```python blocks run in order, in one namespace, in a fresh Python
process whose working directory is a temporary folder (so a block that writes a file
writes it there, never into the repository). A block that cannot run (a fragment, a
sketch of a user's own code) opts out with a comment on the line just before its fence,

    <!-- docs-test: skip (the reason, shown on the page) -->

which `docs/hooks/skipped_examples.py` also renders as a visible note. A traceback names
the page and its line, so a failing example is found in the markdown directly.

`python tests/test_docs.py [PAGE]` runs one page's examples inside `docs/assets/` (default
`getting-started.md`, which regenerates the figure that page shows).
"""

import dataclasses
import importlib
import json
import os
import pathlib
import pkgutil
import re
import subprocess
import sys
import textwrap
import typing

import pytest


ROOT = pathlib.Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PAGES = sorted(DOCS.rglob("*.md"))

# Pages whose examples take long enough to go to the slow step, with the reason. Prefer
# smaller settings on the page to an entry here.
SLOW_PAGES: dict[str, str] = {}

# Subpackages of sdekit that are not Python API, with the reason. Every other public
# subpackage (found on disk, so a new family is covered as soon as it has an __init__.py)
# must have an API entry for each of its public classes and functions.
NOT_API = {
    "cli": "the `sdekit` command, documented by `sdekit --help` and the family pages",
}

_PYTHON = ("python", "py", "python3")
_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})[ \t]*(?P<info>[^`\n]*)$")
# A marker is an HTML comment alone on its line (a mention in running text is not one).
_MARKER = re.compile(r"^[ \t]*<!--\s*docs-test\b(?P<body>.*?)-->[ \t]*$", re.MULTILINE)
_SKIP = re.compile(r"^:\s*skip\s*\((?P<reason>.*)\)\s*$", re.DOTALL)
_API_ENTRY = re.compile(r"^::: ([\w.]+)", re.MULTILINE)


@dataclasses.dataclass(frozen=True)
class Block:
    """One fenced Python block of a page."""

    page: pathlib.Path
    line: int  # the page's line number of the block's first line of code
    code: str  # dedented, so that blocks inside list items run too
    skip: str | None  # the reason given by a `docs-test: skip (...)` marker, if any


def _name(page: pathlib.Path) -> str:
    return page.relative_to(DOCS).as_posix()


def python_blocks(page: pathlib.Path) -> list[Block]:
    """The ```python blocks of `page`, in order, with their skip markers."""
    lines = page.read_text().splitlines()
    blocks = []
    i = 0
    while i < len(lines):
        fence = _FENCE.match(lines[i])
        if fence is None:
            i += 1
            continue
        # A fence closes with at least as many of the same characters, alone on a line.
        char, length = fence["fence"][0], len(fence["fence"])
        closing = re.compile(rf"^[ \t]*{re.escape(char)}{{{length},}}[ \t]*$")
        end = i + 1
        while end < len(lines) and not closing.match(lines[end]):
            end += 1
        language = fence["info"].strip().lstrip("{.").split(" ")[0].rstrip("}")
        if language in _PYTHON:
            marker = _MARKER.search(lines[i - 1]) if i > 0 else None
            skip = None
            if marker is not None:
                found = _SKIP.match(marker["body"])
                skip = found["reason"].strip() if found else ""
            code = textwrap.dedent("\n".join(lines[i + 1 : end]))
            blocks.append(Block(page, i + 2, code, skip))
        i = end + 1
    return blocks


def _example_pages():
    for page in PAGES:
        if any(block.skip is None for block in python_blocks(page)):
            name = _name(page)
            marks = [pytest.mark.slow] if name in SLOW_PAGES else []
            yield pytest.param(page, id=name, marks=marks)


# Runs each block with the page as its file name and the page's line numbers, so that a
# traceback shows the failing line of the markdown.
_DRIVER = """
import json, sys
namespace = {"__name__": "__main__"}
for path, line, code in json.load(sys.stdin):
    exec(compile("\\n" * (line - 1) + code, path, "exec"), namespace)
"""


def run_examples(page: pathlib.Path, cwd: pathlib.Path) -> subprocess.CompletedProcess:
    """Run the page's examples (skipped blocks left out) in a fresh process in `cwd`."""
    blocks = [
        (str(b.page), b.line, b.code) for b in python_blocks(page) if b.skip is None
    ]
    env = dict(os.environ)
    env["MPLBACKEND"] = "Agg"
    # As strict as the test suite's own JAX configuration (tests/conftest.py).
    env["JAX_NUMPY_RANK_PROMOTION"] = "raise"
    # This checkout's sdekit, whatever the working directory.
    env["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT), *filter(None, [env.get("PYTHONPATH")])]
    )
    return subprocess.run(
        [sys.executable, "-c", _DRIVER],
        input=json.dumps(blocks),
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.mark.parametrize("page", list(_example_pages()))
def test_examples_run(page, tmp_path):
    out = run_examples(page, tmp_path)
    assert out.returncode == 0, (
        f"docs/{_name(page)}: an example failed (the traceback names the page's line):\n"
        f"{out.stderr[-4000:]}"
    )


def test_skip_markers_give_a_reason_and_precede_an_example():
    wrong = []
    for page in PAGES:
        text = page.read_text()
        # A block's code starts at `line`, its fence one line above, its marker two.
        marker_lines = {b.line - 2 for b in python_blocks(page) if b.skip}
        for marker in _MARKER.finditer(text):
            line = text.count("\n", 0, marker.start()) + 1
            found = _SKIP.match(marker["body"])
            if found is None or not found["reason"].strip():
                wrong.append(f"docs/{_name(page)}:{line}: {marker[0]!r}")
            elif line not in marker_lines:
                wrong.append(
                    f"docs/{_name(page)}:{line}: not on the line just before a ```python "
                    "fence"
                )
    assert not wrong, (
        "docs-test markers must read `<!-- docs-test: skip (reason) -->`, with a reason, "
        "on the line just before a ```python fence:\n" + "\n".join(wrong)
    )


def _public_subpackages() -> list[str]:
    # Found on disk (no import), so that a family is covered once it has an __init__.py.
    path = [str(ROOT / "sdekit")]
    return sorted(
        f"sdekit.{info.name}"
        for info in pkgutil.iter_modules(path)
        if info.ispkg and not info.name.startswith("_") and info.name not in NOT_API
    )


def _is_api(obj) -> bool:
    # Classes and functions. Submodules (sdekit.train) are documented by their own members;
    # type aliases (Literal[...]) and registries (MODELS) by the pages that use them.
    return (
        callable(obj)
        and typing.get_origin(obj) is None
        and not isinstance(obj, type(sys))
    )


def _public_names(module) -> list[str]:
    return sorted(
        f"{module.__name__}.{name}"
        for name in dir(module)
        if not name.startswith("_") and _is_api(getattr(module, name))
    )


def _api_entries() -> dict[str, list[str]]:
    """Each `::: name` entry of docs/, with the pages that have it."""
    entries: dict[str, list[str]] = {}
    for page in PAGES:
        for name in _API_ENTRY.findall(page.read_text()):
            entries.setdefault(name, []).append(_name(page))
    return entries


@pytest.mark.parametrize("module", ["sdekit", *_public_subpackages()])
def test_every_public_name_has_an_api_entry(module):
    documented = _api_entries()
    missing = [
        name
        for name in _public_names(importlib.import_module(module))
        if name not in documented
    ]
    page = "docs/api/<page>.md" if module == "sdekit" else f"docs/api/{module[7:]}.md"
    assert not missing, (
        f"{module}: these public names have no `::: name` entry on any page of docs/: "
        f"{missing}. Add one line `::: name` for each, e.g. to {page} (listed under "
        "'API reference' in mkdocs.yml's nav)."
    )


def _resolve(name: str):
    # The longest importable module prefix, then attributes (`sdekit.SDE.drift_in`).
    # A module that exists but fails to import raises its own error here.
    parts = name.split(".")
    for split in range(len(parts), 0, -1):
        prefix = ".".join(parts[:split])
        try:
            obj = importlib.import_module(prefix)
        except ModuleNotFoundError as error:
            if error.name != prefix:
                raise
            continue
        for attribute in parts[split:]:
            obj = getattr(obj, attribute)
        return obj
    raise AttributeError(name)


def test_every_api_entry_exists_once():
    entries = _api_entries()
    unknown = []
    for name, pages in entries.items():
        try:
            _resolve(name)
        except AttributeError:
            unknown.append(f"{name} ({', '.join(pages)})")
    assert not unknown, f"`::: name` entries naming nothing in sdekit: {unknown}"
    # Two entries of one name give two anchors for one cross-reference, which the strict
    # build refuses; say where they are.
    twice = {name: pages for name, pages in entries.items() if len(pages) > 1}
    assert not twice, f"names with more than one `::: name` entry: {twice}"


def test_a_subpackage_with_an_api_page_has_its_entries_there():
    # A family without an API page may keep its entries on its own page; once
    # docs/api/<name>.md exists, every entry of sdekit.<name> goes there, so that one
    # page is the whole reference of the subpackage.
    misplaced = []
    for name, pages in _api_entries().items():
        for module in _public_subpackages():
            page = f"api/{module.removeprefix('sdekit.')}.md"
            if name.startswith(module + ".") and (DOCS / page).exists():
                misplaced += [
                    f"{name} (on {other}, belongs on {page})"
                    for other in pages
                    if other != page
                ]
    assert not misplaced, f"entries not on their subpackage's API page: {misplaced}"


def _nav_paths() -> list[str]:
    # The page paths in mkdocs.yml's nav ("  - Title: path.md" or "  - path.md").
    text = (ROOT / "mkdocs.yml").read_text()
    nav = text[text.index("\nnav:") :]
    return re.findall(r"^\s*-\s*(?:[^:\n]*:\s*)?(\S+\.md)\s*$", nav, re.MULTILINE)


def test_every_page_is_in_the_nav():
    nav = _nav_paths()
    pages = [_name(page) for page in PAGES]
    assert not set(pages) - set(nav), (
        f"pages of docs/ missing from mkdocs.yml's nav: {sorted(set(pages) - set(nav))}"
    )
    assert not set(nav) - set(pages), (
        f"mkdocs.yml's nav lists pages that do not exist: {sorted(set(nav) - set(pages))}"
    )


if __name__ == "__main__":
    assets = DOCS / "assets"
    assets.mkdir(exist_ok=True)
    page = DOCS / (sys.argv[1] if len(sys.argv) > 1 else "getting-started.md")
    result = run_examples(page, assets)
    sys.stdout.write(result.stdout)
    sys.stderr.write(result.stderr)
    sys.exit(result.returncode)
