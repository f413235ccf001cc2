"""The training loop shared by every sdekit model family: atomic checkpoints that only
ever replace themselves, progress that says what it is doing, and data parallelism over
the devices of one process or of many (`jax.distributed`)."""

import importlib as _importlib
from typing import TYPE_CHECKING


if TYPE_CHECKING:
    # What type checkers and the API docs see; at run time the same names are loaded
    # on first use by `__getattr__` below.
    from ._cache import enable_compilation_cache as enable_compilation_cache
    from ._checkpoint import (
        load_checkpoint as load_checkpoint,
        load_model as load_model,
        load_report as load_report,
        save_checkpoint as save_checkpoint,
        save_report as save_report,
    )
    from ._checkpoint_dir import check_checkpoint_dir as check_checkpoint_dir
    from ._distributed import init_distributed as init_distributed
    from ._fit import fit as fit, FitResult as FitResult
    from ._interrupted import TrainingInterrupted as TrainingInterrupted


# Each public name and its module. Loaded on first use, so that the command line can
# call `enable_compilation_cache` before equinox is imported: it sets `EQX_ON_ERROR`,
# which equinox reads once, at import.
_HOMES = {
    "enable_compilation_cache": "._cache",
    "load_checkpoint": "._checkpoint",
    "load_model": "._checkpoint",
    "load_report": "._checkpoint",
    "save_checkpoint": "._checkpoint",
    "save_report": "._checkpoint",
    "check_checkpoint_dir": "._checkpoint_dir",
    "init_distributed": "._distributed",
    "fit": "._fit",
    "FitResult": "._fit",
    "TrainingInterrupted": "._interrupted",
}


def __getattr__(name: str):
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'sdekit.train' has no attribute {name!r}")
    value = getattr(_importlib.import_module(home, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(_HOMES)
