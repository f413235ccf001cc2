"""mkdocs hook: the tutorial notebooks of `notebooks/` as pages of the site, with their
outputs where the notebook tests have produced them.

Notebooks are stored without outputs. `tests/test_notebooks.py` executes each one (with
`SDEKIT_NOTEBOOK_FAST=1`) and, when it runs through, writes the executed copy to
`.cache/notebooks/` (git-ignored), recording the SHA-256 of the notebook it ran. For
each `notebooks/*.ipynb`, this hook gives mkdocs-jupyter that copy when it matches the
notebook as it is now, and the stored notebook (without outputs) otherwise; it lists every
notebook in the nav's "Tutorials" section, so a new notebook needs no edit here.

A plain `mkdocs build --strict` therefore needs no kernel and no network; a missing or
stale copy is logged. With `SDEKIT_DOCS_REQUIRE_OUTPUTS=1` (as in `.ci/run`, which runs
the tests first) a missing or stale copy is a warning, which fails the strict build.
"""

import hashlib
import json
import logging
import os
import pathlib

from mkdocs.plugins import event_priority
from mkdocs.structure.files import File


log = logging.getLogger("mkdocs.hooks.notebooks")

SECTION = "Tutorials"
# Where the notebook tests write executed copies, relative to the repository root.
EXECUTED = pathlib.Path(".cache") / "notebooks"
# The notebook metadata key under which the tests record what they executed.
METADATA_KEY = "sdekit_executed"


def source_digest(path: pathlib.Path) -> str:
    """The SHA-256 of a stored notebook's bytes, which an executed copy records."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _root(config) -> pathlib.Path:
    return pathlib.Path(config.config_file_path).resolve().parent


def _notebooks(config) -> list[pathlib.Path]:
    return sorted((_root(config) / "notebooks").glob("*.ipynb"))


def _executed_copy(notebook: pathlib.Path, root: pathlib.Path) -> pathlib.Path | None:
    copy = root / EXECUTED / notebook.name
    try:
        recorded = json.loads(copy.read_text())["metadata"][METADATA_KEY]["source_sha256"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return copy if recorded == source_digest(notebook) else None


def on_config(config):
    # Fill the nav's Tutorials section with every notebook, in file-name order.
    pages = [f"notebooks/{path.name}" for path in _notebooks(config)]
    for item in config.nav or []:
        if isinstance(item, dict) and SECTION in item:
            item[SECTION] = pages
            return config
    log.warning("mkdocs.yml's nav has no %r section for the notebooks.", SECTION)
    return config


# Before mkdocs-jupyter's own on_files (priority 0), which turns the notebooks into pages.
@event_priority(50)
def on_files(files, config):
    root = _root(config)
    require = os.environ.get("SDEKIT_DOCS_REQUIRE_OUTPUTS", "") not in ("", "0")
    for notebook in _notebooks(config):
        copy = _executed_copy(notebook, root)
        if copy is None:
            (log.warning if require else log.info)(
                "notebooks/%s: no executed copy matching it in %s, so the site shows it "
                "without outputs; `pytest tests/test_notebooks.py` writes one.",
                notebook.name,
                EXECUTED,
            )
        # A file of `src_dir` rather than `File.generated`: mkdocs-jupyter finds the
        # notebook through `src_dir`, which a generated file does not have.
        files.append(
            File(
                f"notebooks/{notebook.name}",
                src_dir=str((copy or notebook).parents[1]),
                dest_dir=config.site_dir,
                use_directory_urls=config.use_directory_urls,
            )
        )
    return files
