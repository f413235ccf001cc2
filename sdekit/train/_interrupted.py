"""The exception `fit` raises on Ctrl-C, after saving what it can."""

import os


class TrainingInterrupted(KeyboardInterrupt):
    """Raised by [`sdekit.train.fit`][] when it is interrupted (Ctrl-C, `SIGINT`).

    Before raising, `fit` writes a checkpoint of the last epoch that finished, if one
    did and it was not saved yet, so that `resume=True` (`--resume`) continues from
    there. It is a `KeyboardInterrupt`, so code that does not know it still stops.

    **Attributes:**

    - `checkpoint_dir`: the directory holding this run's checkpoint, or `None` when
        nothing of this run was saved (no `checkpoint_dir`, or interrupted during the
        first epoch of a fresh run).
    - `epochs_completed`: the epochs that checkpoint holds, counting those of a resumed
        run; without a checkpoint, the epochs that finished (and are lost).
    - `epochs`: the number of epochs the run was asked for.
    """

    checkpoint_dir: str | None
    epochs_completed: int
    epochs: int

    def __init__(
        self,
        *,
        checkpoint_dir: str | os.PathLike | None,
        epochs_completed: int,
        epochs: int,
    ):
        self.checkpoint_dir = None if checkpoint_dir is None else os.fspath(checkpoint_dir)
        self.epochs_completed = epochs_completed
        self.epochs = epochs
        if self.checkpoint_dir is None:
            message = (
                f"training interrupted after {epochs_completed} of {epochs} epochs; "
                "nothing was saved"
            )
        else:
            message = (
                f"training interrupted after epoch {epochs_completed} of {epochs}; "
                f"checkpoint in {self.checkpoint_dir}"
            )
        # Set directly rather than through the base initialiser: `str(error)` and
        # tracebacks read `args`.
        self.args = (message,)
