"""The `sdekit` command line (`sdekit = "sdekit.cli:main"` in pyproject.toml)."""

from ._main import main as main
