"""The stable family's jobs as library calls (`sdekit fit`, `evaluate`, `predict`):
one configuration or checkpoint in, one report out, so that the command line,
notebooks and the benchmark share them.

The data flow is one way: the configuration gives the data and the task
([`sdekit.stable.load_job_data`][]); the task object then answers every question
about the task (loss, monitor, metrics, naive baseline, report fields, units).
"""

import dataclasses
import math
import os
import pathlib
import tempfile
import time
from typing import Any

import jax.random as jr
import numpy as np
import optax

from .. import train as _train
from .._families import read_config
from ..data import (
    check_missing_rate,
    load_dataset,
    load_file,
    read_array,
    read_npz,
    TimeSeriesDataset,
)
from ._dynamics import MODELS
from ._loss import make_loss
from ._model import LatentModel
from ._predict import metrics, predict
from ._prepare import prepare_data, PreparedData
from ._task import as_task, default_task, TASKS


@dataclasses.dataclass(frozen=True)
class FitConfig:
    """Everything that determines a run; stored as the checkpoint's `config.json`.

    **Fields:**

    - `model`: `"lsde"`, `"lnsde"` (default), `"gsde"`, `"neural-ode"`,
        `"neural-sde"` or `"neural-cde"`.
    - `dataset`: a bundled data set name ([`sdekit.data.bundled_datasets`][] or
        `"co2"`), or `None` with `data`.
    - `data`: path of the user's NPY, NPZ or CSV file (see
        [`sdekit.data.load_file`][]).
    - `task`: default from the data (classification, regression, or forecasting).
    - `missing`: fraction of each channel's points dropped, in $[0, 1)$.
    - `seed`: seeds masks, the validation split, initialisation and training.
    - `epochs`, `patience`: passes over the training set; stop after `patience`
        epochs without a better validation score (`None`: never). By default as many
        epochs as give 1000 optimiser steps, between 100 and 1000: the bundled sets
        have a few dozen to a few hundred training series, one or two steps an epoch,
        and ArrowHead needs several hundred steps before it fits at all.
    - `hidden`, `depth`: latent size (= network width) and hidden layers.
    - `lr`, `weight_decay`, `batch_size`: AdamW with cosine decay of the
        learning rate over the run.
    - `horizon`: model time the observation window is mapped onto. A horizon of
        10 rather than 1 lets the latent move further from its start and (with the
        $(\\sin t, \\cos t)$ time features) see more of the time embedding.
    - `steps`: Euler-Maruyama steps over the horizon; default the number of
        observation intervals, clipped to [32, 128].
    - `bounded`: the official code's tanh-bounded form of the dynamics.
    - `intensity`: add observation-intensity channels to the control path.
    - `valid_fraction`: part of the training split held out for validation.
    - `eval_samples`: Brownian samples averaged per series in evaluation.
    - `augment`: observation dropout in training (see [`sdekit.stable.make_loss`][]).
    """

    model: str = "lnsde"
    dataset: str | None = "BasicMotions"
    data: str | None = None
    task: str | None = None
    missing: float = 0.0
    seed: int = 0
    epochs: int | None = None
    patience: int | None = 300
    hidden: int = 64
    depth: int = 2
    lr: float = 3e-3
    weight_decay: float = 1e-4
    batch_size: int = 128
    horizon: float = 10.0
    steps: int | None = None
    bounded: bool = False
    intensity: bool = False
    valid_fraction: float = 0.2
    eval_samples: int = 4
    augment: float = 0.2

    def checked(self) -> "FitConfig":
        """This config with its values checked (a `ValueError` naming the bad one)."""
        if self.model not in MODELS:
            raise ValueError(
                f"Unknown model {self.model!r}; choose one of {', '.join(MODELS)}."
            )
        if (self.dataset is None) == (self.data is None):
            raise ValueError("Give exactly one of a bundled data set or a data file.")
        if self.task is not None and self.task not in TASKS:
            raise ValueError(
                f"Unknown task {self.task!r}; choose one of {', '.join(TASKS)}."
            )
        missing = check_missing_rate(self.missing)
        for name in ("epochs", "hidden", "depth", "batch_size", "eval_samples"):
            value = getattr(self, name)
            if name == "epochs" and value is None:
                continue
            if not isinstance(value, int) or value < (0 if name == "depth" else 1):
                raise ValueError(f"`{name}` must be a positive integer, got {value!r}.")
        if self.patience is not None and self.patience < 1:
            raise ValueError(
                f"`patience` must be a positive integer, got {self.patience}."
            )
        if self.steps is not None and self.steps < 1:
            raise ValueError(f"`steps` must be a positive integer, got {self.steps}.")
        for name in ("lr", "horizon"):
            value = getattr(self, name)
            if not (
                isinstance(value, (int, float)) and math.isfinite(value) and value > 0
            ):
                raise ValueError(f"`{name}` must be a positive number, got {value!r}.")
        if not 0 <= self.augment < 1:
            raise ValueError(f"`augment` must be in [0, 1), got {self.augment!r}.")
        if not 0 < self.valid_fraction < 1:
            raise ValueError(
                f"`valid_fraction` must be in (0, 1), got {self.valid_fraction}."
            )
        return dataclasses.replace(self, missing=missing)

    @property
    def data_name(self) -> str:
        return (
            self.dataset
            if self.dataset is not None
            else os.path.basename(str(self.data))
        )


def default_epochs(steps_per_epoch: int, steps: int = 1000) -> int:
    """Epochs for about `steps` optimiser steps, between 100 and 1000."""
    return int(min(1000, max(100, math.ceil(steps / steps_per_epoch))))


def default_out(config: FitConfig) -> str:
    """`runs/<model>-<data>-missing<rate>-seed<seed>`, relative to the working directory."""
    stem = os.path.splitext(config.data_name)[0]
    return os.path.join(
        "runs", f"{config.model}-{stem}-missing{config.missing:g}-seed{config.seed}"
    )


def load_job_data(config: FitConfig) -> PreparedData:
    """The prepared arrays of a run, with its task object (deterministic given the
    config: the same masks, split and normaliser every time)."""
    if config.data is None:
        train, test = load_dataset(str(config.dataset))
    else:
        train, test = load_file(config.data, task=config.task, seed=config.seed)
        if test is None:
            raise ValueError(
                f"{config.data_name}: every series is marked 'train'; mark some "
                "'test', or drop the split column to have a test split carved out."
            )
    task = as_task(config.task) if config.task is not None else default_task(train)
    return prepare_data(
        train,
        test,
        task=task,
        missing=config.missing,
        seed=config.seed,
        horizon=config.horizon,
        intensity=config.intensity,
        valid_fraction=config.valid_fraction,
    )


def build_model(config: FitConfig, data: PreparedData) -> LatentModel:
    """A freshly initialised model for `data` (seeded by `config.seed`)."""
    intervals = data.train["knots"].shape[1] - 1
    steps = config.steps or min(128, max(32, intervals))
    return LatentModel(
        config.model,
        data.input_channels,
        data.output_size,
        config.hidden,
        config.depth,
        data.save_times,
        config.horizon,
        steps,
        config.bounded,
        config.intensity,
        skip=data.task.skip,
        key=jr.fold_in(jr.key(config.seed), 2),
    )


def _test_key(config: FitConfig):
    # Fixed, so that `sdekit evaluate` (and `predict` on the test series) reproduce
    # the figures of `sdekit fit` exactly.
    return jr.fold_in(jr.key(config.seed), 1)


def _evaluate(config: FitConfig, model: LatentModel, data: PreparedData):
    return metrics(model, data.test, _test_key(config), data.task, config.eval_samples)


def _report(
    config: FitConfig, data: PreparedData, test: dict[str, float], model: LatentModel
) -> dict[str, Any]:
    return {
        "model": config.model,
        "dataset": config.data_name,
        "task": data.task.name,
        "missing": config.missing,
        "seed": config.seed,
        **data.task.report(test),
        **data.task.naive(model, data.test),
        "warnings": list(data.warnings),
    }


FAMILY = "stable"


def _stored_config(config: FitConfig) -> dict[str, Any]:
    # The family name goes first, so that `sdekit evaluate --checkpoint` finds it.
    return {"family": FAMILY, **dataclasses.asdict(config)}


def fit_job(
    config: FitConfig,
    out: str | os.PathLike | None = None,
    *,
    progress: bool = True,
    resume: bool = False,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Train a model on a data set and evaluate it on the test split.

    Loads and prepares the data ([`sdekit.stable.prepare_data`][]), trains with
    [`sdekit.train.fit`][] (early stopping and best-model restore on the validation
    split, by the task's `monitor`; the checkpoint directory `out` holds the config
    and, at the end, `report.json`), and evaluates the best model on the test split
    with a fixed key, so that [`sdekit.stable.evaluate_job`][] reproduces the figures
    exactly.

    **Arguments:**

    - `config`: the run's [`sdekit.stable.FitConfig`][].
    - `out`: the checkpoint directory (default [`sdekit.stable.default_out`][]).
    - `progress`: show the trainer's progress.
    - `resume`: continue the run in `out` (same config).
    - `overwrite`: replace an sdekit checkpoint in `out` with a fresh run.

    **Returns:** a JSON-ready report: `model`, `dataset`, `task`, `missing`, `seed`,
    `test_accuracy` and `test_loss` (classification) or `test_mse` (in units of the
    training standard deviation) and `naive_mse` (that of the training mean for
    regression, of linear interpolation or of the last observed value for
    interpolation and forecasting: the bar a model has to clear), `warnings` (what
    [`sdekit.stable.SmallDataWarning`][] said), `valid` (the best validation
    metrics), `epochs` (run), `best_epoch`, `seconds` (wall time, data loading
    included) and `checkpoint`.
    """
    start = time.perf_counter()
    config = config.checked()
    out = default_out(config) if out is None else os.fspath(out)
    # Refuse a directory in the way before any work (data loading included).
    _train.check_checkpoint_dir(
        out,
        resume=resume,
        overwrite=overwrite,
        config=_stored_config(config),
        quiet=not progress,
    )
    data = load_job_data(config)
    task = data.task
    model = build_model(config, data)
    num_train = data.train["knots"].shape[0]
    steps_per_epoch = max(1, num_train // config.batch_size)
    epochs = config.epochs or default_epochs(steps_per_epoch)
    schedule = optax.cosine_decay_schedule(
        config.lr, epochs * steps_per_epoch, alpha=0.05
    )

    def evaluate(model, split, key):
        predictions = predict(model, split, key, task, config.eval_samples)
        return task.validation_metrics(predictions, split)

    result = _train.fit(
        model,
        make_loss(task, config.augment),
        data.train,
        key=jr.fold_in(jr.key(config.seed), 0),
        optimizer=optax.adamw(schedule, weight_decay=config.weight_decay),
        epochs=epochs,
        batch_size=config.batch_size,
        valid_data=data.valid,
        eval_fn=evaluate,
        monitor=task.monitor,
        mode=task.mode,
        patience=config.patience,
        checkpoint_dir=out,
        config=_stored_config(config),
        resume=resume,
        overwrite=overwrite,
        progress=progress,
        checkpoint_every=max(1, min(25, epochs // 4)),
    )
    report = _report(config, data, _evaluate(config, result.model, data), result.model)
    best = result.best_epoch
    report.update(
        valid=result.history[best]["valid"] if best is not None else None,
        epochs=result.epochs_run,
        best_epoch=best,
        seconds=round(time.perf_counter() - start, 2),
        checkpoint=out,
    )
    _train.save_report(out, report)
    return report


def _stored_run(checkpoint: str | os.PathLike) -> tuple[pathlib.Path, FitConfig]:
    """The checkpoint's path and its configuration, or a one-line `ValueError` when
    it is not a stable-family checkpoint."""
    path = pathlib.Path(checkpoint)
    stored = read_config(path)
    family = stored.pop("family", FAMILY)
    if family != FAMILY:
        raise ValueError(
            f"{path} holds a checkpoint of the {family} family, not of the stable "
            "neural SDEs; pass it to `sdekit evaluate/predict --checkpoint`, which "
            "find its family."
        )
    try:
        config = FitConfig(**stored).checked()
    except TypeError as e:
        raise ValueError(
            f"{path / 'config.json'} is not a stable-family config: {e}"
        ) from None
    if config.data is not None and not os.path.isfile(config.data):
        # Said here, or the reader's "--data file ... not found" would seem to be
        # about the file given to `sdekit predict`.
        raise ValueError(
            f"{path} was trained on {config.data}, which is not there (a relative "
            "path is read from the working directory); the run's data, masks and "
            "normaliser are rebuilt from it, so run from where `sdekit fit` ran or "
            "restore the file."
        )
    return path, config


def _load_run(path: pathlib.Path, config: FitConfig):
    """The run's prepared data and its best model."""
    data = load_job_data(config)
    return data, _train.load_model(path, build_model(config, data))


def evaluate_job(checkpoint: str | os.PathLike) -> dict[str, Any]:
    """Reload a checkpoint written by [`sdekit.stable.fit_job`][] and recompute its
    test metrics: the same data, masks, best model and evaluation key, hence the same
    figures.

    **Returns:** the report of `fit_job` without the training fields.
    """
    path, config = _stored_run(checkpoint)
    data, model = _load_run(path, config)
    report = _report(config, data, _evaluate(config, model, data), model)
    report["checkpoint"] = str(path)
    return report


def _read_new_series(path: str, what: str) -> tuple[np.ndarray, np.ndarray | None]:
    """`(values, times)` of a predict input file, through sdekit's one reader."""
    suffix = os.path.splitext(path)[1].lower()
    if suffix == ".npz":
        raw = read_npz(
            path,
            required=("values",),
            # A file made for `sdekit fit --data` is accepted; labels and split are
            # not read.
            optional=("times", "labels", "split"),
            what=what,
        )
        values, times = raw["values"], raw.get("times")
    elif suffix == ".npy":
        values, times = read_array(path, what=what), None
    else:
        raise ValueError(
            f"{what} file {path}: sdekit predict reads the series as .npy (the "
            "values, (series, length, channels), NaN where missing) or .npz (values "
            "and optional times); save them with numpy.save or numpy.savez."
        )
    return np.asarray(values, dtype=np.float64), times


def _check_new_series(
    values: np.ndarray,
    times: np.ndarray | None,
    data: PreparedData,
    where: str,
) -> TimeSeriesDataset:
    """The new series as a data set on the training grid, or a one-line
    `ValueError` naming what does not match the trained model."""
    if values.ndim == 2:
        values = values[..., None]
    length, channels = len(data.times), data.input_channels
    expected = f"(series, {length}, {channels})" + (
        f" or (series, {length})" if channels == 1 else ""
    )
    if values.ndim != 3 or values.shape[0] == 0:
        raise ValueError(
            f"{where}: the values must have shape {expected}, as the series the "
            f"model was trained on; got shape {values.shape}."
        )
    if values.shape[2] != channels:
        raise ValueError(
            f"{where}: the series have {values.shape[2]} channels, but the model was "
            f"trained on {channels}; give values of shape {expected}."
        )
    if values.shape[1] != length:
        raise ValueError(
            f"{where}: the series have {values.shape[1]} time points, but the model "
            f"was trained on windows of {length}; give values of shape {expected} "
            "(NaN where not observed)."
        )
    if times is not None:
        times = np.asarray(times, dtype=np.float64)

        def relative(t):
            return (t - t[0]) / (t[-1] - t[0])

        if (
            times.shape != (length,)
            or not np.all(np.isfinite(times))
            or np.any(np.diff(times) <= 0)
            or not np.allclose(relative(times), relative(data.times), atol=1e-6)
        ):
            raise ValueError(
                f"{where}: `times` must be the training window's {length} times (or "
                "the same spacing shifted and scaled); leave them out to use them."
            )
    empty = np.flatnonzero(np.all(np.isnan(values), axis=(1, 2)))
    if len(empty):
        raise ValueError(
            f"{where}: series {int(empty[0])} has no observed value"
            + (f" (and {len(empty) - 1} more)" if len(empty) > 1 else "")
            + "; nothing can be predicted from it."
        )
    return TimeSeriesDataset(values, data.times, name=where)


def _save_npy(out: str, array: np.ndarray) -> None:
    """`numpy.save` to `out` atomically: a reader sees the old file or the new one,
    never half of one."""
    folder = os.path.dirname(os.path.abspath(out))
    os.makedirs(folder, exist_ok=True)
    handle, partial = tempfile.mkstemp(
        prefix=f".{os.path.basename(out)}.", suffix=".partial", dir=folder
    )
    try:
        with os.fdopen(handle, "wb") as f:
            np.save(f, array)
            f.flush()
            os.fsync(f.fileno())
        os.replace(partial, out)
    except BaseException:
        if os.path.exists(partial):
            os.remove(partial)
        raise


def predict_job(
    checkpoint: str | os.PathLike,
    data_file: str | os.PathLike,
    out: str | os.PathLike,
) -> dict[str, Any]:
    """Apply a checkpoint's best model to new series and save its predictions as a
    `.npy` file (written atomically).

    The new series must lie on the training window: the same number of time points
    and channels (`times`, when given, must be the training times or the same
    spacing shifted and scaled). They are normalised with the training run's
    normaliser, rebuilt from the stored configuration (the same data, masks and split
    as the fit), and predicted with the evaluation's Brownian samples and key: the
    test series of the run, masked as in the run, give exactly the test figures.

    What is saved, by task:

    - classification: class probabilities `(n, classes)`;
    - regression: the predicted targets `(n,)`, in the data's units;
    - interpolation: values `(n, length, channels)` at every time of the window, in
        the data's units (observed points reconstructed, missing ones filled in);
    - forecasting: values `(n, length, channels)` at every time of the window; the
        model reads only the first part of the window (points after it may be NaN)
        and forecasts the rest.

    **Arguments:**

    - `checkpoint`: a directory written by [`sdekit.stable.fit_job`][].
    - `data_file`: a `.npy` file of values `(n, length, channels)` (or `(n, length)`
        for one channel), NaN where missing, or a `.npz` file with `values` and
        optionally `times` (`labels` and `split` are ignored), read through
        [`sdekit.data.read_array`][] / [`sdekit.data.read_npz`][].
    - `out`: the `.npy` file to write (its folder is created if needed).

    **Returns:** a JSON-ready report: `model`, `dataset` (the training data), `task`,
    `checkpoint`, `data`, `predictions` (the path written), `shape`, `saved` (what the
    array holds), and for classification `classes` and `predicted` (the predicted
    class of each series, by name).
    """
    out = os.fspath(out)
    data_file = os.fspath(data_file)
    if os.path.splitext(out)[1].lower() != ".npy" or os.path.isdir(out):
        raise ValueError(
            f"--out {out}: give the name of a .npy file to write the predictions to."
        )
    path, config = _stored_run(checkpoint)
    values, times = _read_new_series(data_file, "--data")
    data, model = _load_run(path, config)
    new = _check_new_series(values, times, data, f"--data file {data_file}")
    task = data.task
    inputs, offset = task.inputs(data.normaliser.apply(new).values, data.knots)
    predictions = predict(model, inputs, _test_key(config), task, config.eval_samples)
    result = task.to_user_units(predictions, data.normaliser, offset)
    _save_npy(out, result)
    return {
        "model": config.model,
        "dataset": config.data_name,
        "task": task.name,
        "checkpoint": str(path),
        "data": data_file,
        "predictions": out,
        "shape": list(result.shape),
        **task.prediction_report(result, len(data.knots), data.classes),
    }
