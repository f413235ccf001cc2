"""The documentation stays true to the code: its examples run, and every public name has an
API page.

`python tests/test_docs.py` reruns the examples of `docs/getting-started.md` inside `docs/assets/`,
which regenerates the figure that page shows.
"""

import os
import pathlib
import re
import subprocess
import sys
import typing

import pytest

import sdekit
import sdekit.data
import sdekit.fractional
import sdekit.noise
import sdekit.stable
import sdekit.train


ROOT = pathlib.Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
# Pages whose ```python blocks, concatenated in order, form one script. The longer two take
# about half a minute each on two CPU cores, mostly compiling.
EXAMPLE_PAGES = [
    "index.md",
    pytest.param("getting-started.md", marks=pytest.mark.slow),
    pytest.param("concepts.md", marks=pytest.mark.slow),
]

_PYTHON_BLOCK = re.compile(r"^```python\n(.*?)^```$", re.DOTALL | re.MULTILINE)


def _script(page: str) -> str:
    text = (DOCS / page).read_text()
    return "\n\n".join(block for block in _PYTHON_BLOCK.findall(text))


def _run(page: str, cwd: pathlib.Path) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["MPLBACKEND"] = "Agg"
    # As strict as the test suite's own JAX configuration (tests/conftest.py).
    env["JAX_NUMPY_RANK_PROMOTION"] = "raise"
    return subprocess.run(
        [sys.executable, "-c", _script(page)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.mark.parametrize("page", EXAMPLE_PAGES)
def test_examples_run(page, tmp_path):
    assert _script(page).strip(), f"docs/{page} has no python examples"
    out = _run(page, tmp_path)
    assert out.returncode == 0, f"docs/{page} examples failed:\n{out.stderr[-4000:]}"


def _public_names(module) -> list[str]:
    return sorted(
        f"{module.__name__}.{name}"
        for name in dir(module)
        if not name.startswith("_") and _is_api(getattr(module, name))
    )


def _is_api(obj) -> bool:
    # Classes and functions. Submodules (sdekit.train) are documented by their own members;
    # type aliases (Literal[...]) and registries (MODELS) by the pages that use them.
    return (
        callable(obj)
        and typing.get_origin(obj) is None
        and not isinstance(obj, type(sys))
    )


PUBLIC_MODULES = [
    sdekit,
    sdekit.train,
    sdekit.data,
    sdekit.stable,
    sdekit.noise,
    sdekit.fractional,
]


def test_every_public_name_has_an_api_entry():
    documented = set()
    for page in DOCS.rglob("*.md"):
        documented.update(re.findall(r"^::: ([\w.]+)", page.read_text(), re.MULTILINE))
    missing = [
        name
        for module in PUBLIC_MODULES
        for name in _public_names(module)
        if name not in documented
    ]
    assert not missing, f"public names without a `::: name` entry in docs/: {missing}"


def test_every_api_entry_exists():
    for page in DOCS.rglob("*.md"):
        for name in re.findall(r"^::: ([\w.]+)", page.read_text(), re.MULTILINE):
            module, _, attribute = name.rpartition(".")
            assert hasattr(sys.modules.get(module), attribute), f"{page.name}: {name}"


if __name__ == "__main__":
    assets = DOCS / "assets"
    assets.mkdir(exist_ok=True)
    result = _run("getting-started.md", assets)
    sys.stdout.write(result.stdout)
    sys.stderr.write(result.stderr)
    sys.exit(result.returncode)
