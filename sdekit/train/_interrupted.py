"""Ctrl-C during `fit`: caught at a safe point, and the exception `fit` raises after
saving what it can."""

import contextlib
import os
import signal
import threading
from collections.abc import Iterator


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


class _Interrupt:
    # Set by the SIGINT handler; `check` turns it into a KeyboardInterrupt in the
    # training loop itself.
    pressed: bool = False

    def check(self) -> None:
        if self.pressed:
            raise KeyboardInterrupt


@contextlib.contextmanager
def deferred_interrupt() -> Iterator[_Interrupt]:
    """Within the block, a first Ctrl-C only sets a flag that the training loop
    checks between compiled calls (`check()`); a second one interrupts at once.

    Python's own handler raises `KeyboardInterrupt` at whatever bytecode runs next:
    inside a finaliser it is printed and dropped (training goes on), and between a
    library's lock acquisition and its `try` it leaves the lock held (the save that
    follows then hangs). On a loaded CI machine a process interrupted after its first
    epoch once did not exit within 120 s, likely by one of these. Outside
    the main thread (where no handler can be set) nothing changes."""
    interrupt = _Interrupt()
    if threading.current_thread() is not threading.main_thread():
        yield interrupt
        return

    def handler(signum, frame):
        if interrupt.pressed:
            raise KeyboardInterrupt
        interrupt.pressed = True

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield interrupt
    finally:
        signal.signal(signal.SIGINT, previous)
