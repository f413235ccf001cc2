"""Every tutorial notebook runs from top to bottom, and is stored without outputs.

A notebook that runs through is also written, with its outputs, to `.cache/notebooks/`
(git-ignored), recording the SHA-256 of the stored notebook it ran: the documentation site
shows those copies (docs/hooks/notebooks.py), so its notebooks have outputs without the
docs build running any.
"""

import hashlib
import importlib.util
import os
import pathlib

import pytest


nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

ROOT = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
# Where the executed copies go and how they say what they ran; docs/hooks/notebooks.py
# reads them (test_the_site_shows_a_copy_only_of_the_notebook_as_it_is checks the two agree).
EXECUTED = ROOT / ".cache" / "notebooks"
METADATA_KEY = "sdekit_executed"


def test_there_are_notebooks():
    assert NOTEBOOKS, "no notebooks found in notebooks/"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_stored_without_outputs(path):
    notebook = nbformat.read(path, as_version=4)
    with_outputs = [
        index
        for index, cell in enumerate(notebook.cells)
        if cell.cell_type == "code"
        and (cell.outputs or cell.execution_count is not None)
    ]
    assert not with_outputs, (
        f"{path.name}: cells {with_outputs} have outputs; clear them before committing."
    )


# End to end runs of whole tutorials, 30-220 s each on 2 cores: in CI's slow step, which
# runs before the strict docs build that shows their outputs (.ci/run).
@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs(path, monkeypatch, tmp_path):
    # The notebooks' small settings (the kernel inherits this environment).
    monkeypatch.setenv("SDEKIT_NOTEBOOK_FAST", "1")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    # The kernel "python3" runs as the interpreter running the tests (jupyter_client swaps
    # `python` in the kernel's command for sys.executable), so it imports this checkout.
    # It runs in a temporary folder, as on Colab: what a notebook writes (checkpoints
    # under runs/) stays out of the repository.
    notebook = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(
        notebook,
        timeout=300,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},
    )
    # Raises CellExecutionError, with the failing cell and its traceback, on any error.
    client.execute()
    save_executed(notebook, digest, EXECUTED / path.name)


def save_executed(notebook, source_sha256: str, target: pathlib.Path) -> None:
    """Write an executed notebook where the docs build looks for it, recording the
    SHA-256 of the stored notebook it ran."""
    notebook.metadata[METADATA_KEY] = {"source_sha256": source_sha256, "fast": True}
    target.parent.mkdir(parents=True, exist_ok=True)
    # Written whole or not at all: the docs build may read it at any time.
    partial = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    nbformat.write(notebook, partial)
    os.replace(partial, target)


def test_the_site_shows_a_copy_only_of_the_notebook_as_it_is(tmp_path):
    pytest.importorskip("mkdocs")
    spec = importlib.util.spec_from_file_location(
        "notebooks_hook", ROOT / "docs" / "hooks" / "notebooks.py"
    )
    hook = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hook)
    # A repository with one notebook, executed as test_notebook_runs does.
    stored = tmp_path / "notebooks" / "01_tiny.ipynb"
    stored.parent.mkdir()
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("1 + 1")])
    nbformat.write(notebook, stored)
    digest = hashlib.sha256(stored.read_bytes()).hexdigest()
    copy = tmp_path / EXECUTED.relative_to(ROOT) / stored.name
    save_executed(notebook, digest, copy)
    assert hook._executed_copy(stored, tmp_path) == copy
    # Once the stored notebook changes, its old outputs are not shown.
    notebook.cells.append(nbformat.v4.new_code_cell("2 + 2"))
    nbformat.write(notebook, stored)
    assert hook._executed_copy(stored, tmp_path) is None
