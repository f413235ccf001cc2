"""The `sdekit` command line (`sdekit = "sdekit.cli:console"` in pyproject.toml)."""

from ._main import console as console, main as main
