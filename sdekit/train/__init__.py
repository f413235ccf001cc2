"""The training loop shared by every sdekit model family, with atomic checkpoints and
data parallelism over local devices."""

from ._checkpoint import (
    load_checkpoint as load_checkpoint,
    load_model as load_model,
    save_checkpoint as save_checkpoint,
)
from ._fit import fit as fit, FitResult as FitResult
