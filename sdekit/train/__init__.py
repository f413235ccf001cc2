"""The training loop shared by every sdekit model family: atomic checkpoints that only
ever replace themselves, progress that says what it is doing, and data parallelism over
the devices of one process or of many (`jax.distributed`)."""

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
