"""How `fit` reports its progress: a tqdm bar on a terminal, plain lines in a log, or
nothing."""

import sys
import time
from typing import Any, TextIO

from tqdm.auto import tqdm


def _is_terminal(file: TextIO) -> bool:
    try:
        return bool(file.isatty())
    except (AttributeError, ValueError):
        return False


def _metrics(postfix: dict[str, str]) -> str:
    return ", ".join(f"{name} {value}" for name, value in postfix.items())


class EpochProgress:
    """The progress of one call of `fit`, on `file` (default: stderr).

    On a terminal it is a tqdm bar over epochs whose description reads `compiling` until
    the first training step has been compiled, then `training`. The first epoch of a
    session pays for compilation (often most of its time), so once it ends the bar's
    clock and tqdm's smoothed rate are restarted: rates and time estimates count
    only the epochs after it.

    When `file` is not a terminal (a log file, a pipe, a batch job), a bar's carriage
    returns would make a mess, so instead it writes plain lines: one when compilation
    starts and ends, one after the first epoch, then one per tenth of the run.
    With `enabled=False` it writes nothing.
    """

    def __init__(
        self, total: int, initial: int, enabled: bool, file: TextIO | None = None
    ):
        self.file = sys.stderr if file is None else file
        self.total = total
        self.initial = initial
        self.mode = (
            "off" if not enabled else "bar" if _is_terminal(self.file) else "lines"
        )
        self.bar: Any = None
        self._started = time.perf_counter()
        # (time, epochs done) at the end of this session's first epoch: rates are
        # measured from there.
        self._clock: tuple[float, int] | None = None
        self._tenth = initial * 10 // total

    def note(self, line: str) -> None:
        """A line for the user: above the bar, or as a log line."""
        if self.mode == "bar":
            tqdm.write(line, file=self.file)
        elif self.mode == "lines":
            print(line, file=self.file, flush=True)

    def compiling(self) -> None:
        """The first training step is about to be traced and compiled."""
        self._started = time.perf_counter()
        if self.mode == "bar":
            # Only now: a run with nothing to train shows no bar.
            self.bar = tqdm(
                total=self.total,
                initial=self.initial,
                unit="epoch",
                desc="compiling",
                file=self.file,
                dynamic_ncols=True,
            )
        elif self.mode == "lines":
            self.note(
                f"epoch {self.initial + 1} of {self.total}: compiling the training step"
            )

    def compiled(self) -> None:
        """The first training step has been compiled (its result may still be running)."""
        seconds = time.perf_counter() - self._started
        if self.mode == "bar":
            self.bar.set_description("training")
        elif self.mode == "lines":
            self.note(f"compiled in {seconds:.1f} s; training")

    def epoch_done(self, done: int, postfix: dict[str, str]) -> None:
        """Epoch `done` (counting from 1) has finished, with these metrics to show."""
        now = time.perf_counter()
        first = self._clock is None
        if first:
            self._clock = (now, done)
        if self.mode == "bar":
            self.bar.set_postfix(postfix, refresh=False)
            self.bar.update(1)
            if first:
                # Forget the compilation: zero tqdm's clock and smoothed rates, keep the
                # count (`reset` zeroes it too).
                self.bar.reset()
                self.bar.n = self.bar.last_print_n = self.bar.initial = done
                self.bar.refresh()
        elif self.mode == "lines":
            tenth = done * 10 // self.total
            if first or tenth > self._tenth or done == self.total:
                self._tenth = tenth
                self.note(self._line(done, postfix, now))

    def _line(self, done: int, postfix: dict[str, str], now: float) -> str:
        assert self._clock is not None
        since, at = self._clock
        line = f"epoch {done}/{self.total} ({done / self.total:.0%}): {_metrics(postfix)}"
        if done > at:
            per_epoch = (now - since) / (done - at)
            left = tqdm.format_interval(per_epoch * (self.total - done))
            line += f"; {per_epoch:.3g} s/epoch, {left} left"
        else:
            line += f"; {now - self._started:.1f} s with compilation"
        return line

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def postfix(
    train_metrics: dict[str, float], valid_metrics: dict[str, float] | None
) -> dict[str, str]:
    """The bar's postfix: training loss, then every validation metric."""
    out = {"loss": f"{train_metrics['loss']:.4g}"}
    for name, value in (valid_metrics or {}).items():
        out[f"valid_{name}"] = f"{value:.4g}"
    return out
