"""The four tasks as objects: classification, regression, interpolation, forecasting.

A task is what a model learns from a set of series. It turns a data set into the
arrays a model trains on, says where the head reads the latent and how many outputs
it has, and owns the loss, the metrics, the validation score that picks the best
epoch, the naive prediction a model has to beat, the figures of the report and the
mapping of predictions back to the user's units. Everything else (the model, the
trainer, the jobs) asks the task instead of branching on its name.

Every array dict a task builds has the series as leading axis, so that
[`sdekit.train.fit`][] can batch it: `knots` `(n, length)` (model times), `values`
`(n, length, channels)` (inputs, NaN where missing), and the targets: `label`
(classification), `target` (regression), or `targets` and `target_mask`
(interpolation, forecasting).
"""

import abc
from collections.abc import Callable
from typing import Any, ClassVar, Literal

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from ..data import Normaliser, TimeSeriesDataset


def masked_mse(predictions, targets, mask):
    """The mean squared error over the entries where `mask` is 1 (0 if there are
    none): the loss, the metric and the naive baseline of interpolation and
    forecasting. Works on NumPy and JAX arrays alike."""
    squared = mask * (predictions - targets) ** 2
    return squared.sum() / jnp.maximum(mask.sum(), 1.0)


def _final_time(knots: np.ndarray) -> np.ndarray:
    # Classification and regression read the latent once, at the end of the window.
    return knots[-1:]


def _series_inputs(values: np.ndarray, knots: np.ndarray) -> dict[str, np.ndarray]:
    """The model's inputs: `values` as float32, `knots` repeated for every series."""
    return {
        "values": values.astype(np.float32),
        "knots": np.broadcast_to(
            knots.astype(np.float32), (len(values), len(knots))
        ).copy(),
    }


def _centre(inputs: np.ndarray) -> np.ndarray:
    """Each series' mean observed input per channel, `(n, 1, channels)` (0 where a
    channel has none): subtracted from the inputs and the targets, it leaves squared
    errors unchanged, and the model need not extrapolate the level of a series (e.g.
    co2's trend)."""
    with np.errstate(invalid="ignore"):
        count = (~np.isnan(inputs)).sum(axis=1, keepdims=True)
        return np.where(
            count > 0,
            np.nansum(inputs, axis=1, keepdims=True) / np.maximum(count, 1),
            0.0,
        )


def _holdout(values: np.ndarray, fraction: float, seed: int, stream: int):
    """Split the observed points into inputs and held-out targets: each channel of
    each series holds out `floor(fraction * observed)` of its observed points (but
    keeps at least one)."""
    observed = ~np.isnan(values)
    rng = np.random.default_rng([int(seed), stream])
    noise = np.where(observed, rng.random(values.shape), np.inf)
    rank = np.argsort(np.argsort(noise, axis=1), axis=1)
    count = observed.sum(axis=1, keepdims=True)
    take = np.minimum(np.floor(fraction * count), np.maximum(count - 1, 0))
    held = observed & (rank < take)
    return np.where(held, np.nan, values), np.where(held, values, np.nan)


class AbstractTask(eqx.Module):
    """What a model learns from a set of series, and how it is scored.

    The class variables say how the trainer and the model treat the task: `name`
    (as in `--task`), `monitor` and `mode` (the validation metric that picks the best
    epoch, and whether higher or lower is better), `stratify` (whether the validation
    split keeps each class's share), `skip` (whether the head corrects the naive
    prediction instead of predicting the values; see
    [`sdekit.stable.LatentModel`][]).
    """

    name: eqx.AbstractClassVar[str]
    monitor: eqx.AbstractClassVar[str]
    mode: eqx.AbstractClassVar[Literal["min", "max"]]
    stratify: eqx.AbstractClassVar[bool]
    skip: eqx.AbstractClassVar[bool]

    @abc.abstractmethod
    def check(self, data: TimeSeriesDataset) -> TimeSeriesDataset:
        """`data` as this task reads it (labels dropped where it needs none), or a
        `ValueError` saying why the data cannot serve this task."""

    @abc.abstractmethod
    def normaliser(self, train: TimeSeriesDataset) -> Normaliser:
        """The normalisation fitted on the training part."""

    @abc.abstractmethod
    def arrays(
        self, data: TimeSeriesDataset, knots: np.ndarray, seed: int, stream: int
    ) -> dict[str, np.ndarray]:
        """Inputs and targets of a (normalised) split; `seed` and `stream` seed
        whatever the task draws (interpolation's held-out points)."""

    @abc.abstractmethod
    def inputs(
        self, values: np.ndarray, knots: np.ndarray
    ) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
        """What the model reads of new (normalised) series `(n, length, channels)`
        on the training grid `knots`, and the per-series offset the predictions are
        relative to (`None` where there is none)."""

    @abc.abstractmethod
    def save_times(self, knots: np.ndarray) -> np.ndarray:
        """The model times at which the head reads the latent."""

    @abc.abstractmethod
    def output_size(self, data: TimeSeriesDataset) -> int:
        """The number of outputs of the head."""

    @abc.abstractmethod
    def loss(self, outputs, batch) -> tuple[jax.Array, dict[str, jax.Array]]:
        """The training loss and metrics of head outputs `(batch, times, out)`."""

    @abc.abstractmethod
    def readout(self, outputs) -> jax.Array:
        """The prediction from one Brownian sample of head outputs `(samples, batch,
        times, out)`; predictions are averaged over samples."""

    @abc.abstractmethod
    def metrics(self, predictions: np.ndarray, data: dict) -> dict[str, float]:
        """Metrics of averaged predictions against a split's targets."""

    @abc.abstractmethod
    def validation_metrics(
        self, predictions: np.ndarray, data: dict
    ) -> dict[str, float]:
        """The metrics of the validation split, including `monitor`."""

    @abc.abstractmethod
    def naive(self, model, data: dict) -> dict[str, float]:
        """Report fields of the naive prediction a model has to beat (none for
        classification)."""

    @abc.abstractmethod
    def report(self, metrics: dict[str, float]) -> dict[str, float]:
        """The report's fields from the test metrics."""

    @abc.abstractmethod
    def to_user_units(
        self,
        predictions: np.ndarray,
        normaliser: Normaliser,
        offset: np.ndarray | None,
    ) -> np.ndarray:
        """Averaged predictions in the units of the user's data."""

    @abc.abstractmethod
    def prediction_report(
        self, predictions: np.ndarray, length: int, classes: tuple[str, ...] | None
    ) -> dict[str, Any]:
        """Report fields saying what `predictions` (in the user's units, for series
        of `length` points) hold: `saved`, and for classification `classes` and
        `predicted` (each series' most probable class, by name)."""


class Classification(AbstractTask):
    """Classify each series: cross-entropy of the head on the final latent.

    Best epoch by validation accuracy, ties broken by the lower cross-entropy.
    Predictions are class probabilities `(n, classes)`.
    """

    name: ClassVar[str] = "classification"
    monitor: ClassVar[str] = "score"
    mode: ClassVar[Literal["min", "max"]] = "max"
    stratify: ClassVar[bool] = True
    skip: ClassVar[bool] = False

    def check(self, data):
        if data.labels is None or data.classes is None:
            raise ValueError(
                f"{data.name} has no class labels, so it cannot be used for "
                "classification; use --task interpolation or forecasting."
            )
        return data

    def normaliser(self, train):
        return Normaliser.fit(train)

    def arrays(self, data, knots, seed, stream):
        assert data.labels is not None
        return {
            **_series_inputs(data.values, knots),
            "label": data.labels.astype(np.int32),
        }

    def inputs(self, values, knots):
        return _series_inputs(values, knots), None

    def save_times(self, knots):
        return _final_time(knots)

    def output_size(self, data):
        assert data.classes is not None
        return len(data.classes)

    def loss(self, outputs, batch):
        logits = outputs[:, -1]
        loss = optax.softmax_cross_entropy_with_integer_labels(
            logits, batch["label"]
        ).mean()
        accuracy = jnp.mean(jnp.argmax(logits, -1) == batch["label"])
        return loss, {"accuracy": accuracy}

    def readout(self, outputs):
        return jax.nn.softmax(outputs[:, :, -1], axis=-1)

    def metrics(self, predictions, data):
        """`accuracy`, and `loss`: the cross-entropy of the averaged probabilities."""
        labels = np.asarray(data["label"])
        p = np.clip(predictions[np.arange(len(labels)), labels], 1e-12, 1.0)
        return {
            "accuracy": float(np.mean(np.argmax(predictions, -1) == labels)),
            "loss": float(-np.mean(np.log(p))),
        }

    def validation_metrics(self, predictions, data):
        out = self.metrics(predictions, data)
        # Validation accuracy, ties broken by the lower cross-entropy: small
        # validation sets tie often, and the better-calibrated model generalises.
        out["score"] = out["accuracy"] - 1e-3 * min(out["loss"], 10.0)
        return out

    def naive(self, model, data):
        return {}

    def report(self, metrics):
        return {"test_accuracy": metrics["accuracy"], "test_loss": metrics["loss"]}

    def to_user_units(self, predictions, normaliser, offset):
        return predictions

    def prediction_report(self, predictions, length, classes):
        assert classes is not None
        return {
            "saved": "class probabilities (series, classes), columns in the order "
            "of `classes`",
            "classes": list(classes),
            "predicted": [classes[i] for i in np.argmax(predictions, axis=-1)],
        }


class Regression(AbstractTask):
    """Predict a real target per series: squared error of the head on the final
    latent, the targets standardised with the training part's mean and standard
    deviation. Predictions are targets `(n,)` in the data's units."""

    name: ClassVar[str] = "regression"
    monitor: ClassVar[str] = "mse"
    mode: ClassVar[Literal["min", "max"]] = "min"
    stratify: ClassVar[bool] = False
    skip: ClassVar[bool] = False

    def check(self, data):
        if data.labels is None or data.classes is not None:
            raise ValueError(
                f"{data.name} has no real-valued targets, so it cannot be used for "
                "regression."
            )
        return data

    def normaliser(self, train):
        return Normaliser.fit(train, regression=True)

    def arrays(self, data, knots, seed, stream):
        assert data.labels is not None
        return {
            **_series_inputs(data.values, knots),
            "target": data.labels.astype(np.float32),
        }

    def inputs(self, values, knots):
        return _series_inputs(values, knots), None

    def save_times(self, knots):
        return _final_time(knots)

    def output_size(self, data):
        return 1

    def loss(self, outputs, batch):
        loss = jnp.mean((outputs[:, -1, 0] - batch["target"]) ** 2)
        return loss, {"mse": loss}

    def readout(self, outputs):
        return outputs[:, :, -1, 0]

    def metrics(self, predictions, data):
        """`mse`, in units of the training targets' variance."""
        return {"mse": float(np.mean((predictions - np.asarray(data["target"])) ** 2))}

    def validation_metrics(self, predictions, data):
        return self.metrics(predictions, data)

    def naive(self, model, data):
        # The training mean predicts 0 on the standardised targets.
        return {"naive_mse": float(np.mean(np.asarray(data["target"]) ** 2))}

    def report(self, metrics):
        return {"test_mse": metrics["mse"]}

    def to_user_units(self, predictions, normaliser, offset):
        return predictions * normaliser.target_scale + normaliser.target_mean

    def prediction_report(self, predictions, length, classes):
        return {"saved": "predicted targets (series,), in the data's units"}


class AbstractObservationTask(AbstractTask):
    """Predict observations of the series themselves at given times
    (interpolation, forecasting): the head reads the latent at every knot, and the
    loss and metric are the mean squared error over the target points
    ([`sdekit.stable.masked_mse`][]), in units of the training standard deviation.
    Each series is centred on its observed input mean first. Predictions are values
    `(n, length, channels)` at every time of the training window."""

    def check(self, data):
        return data.replace(labels=None, classes=None)

    def normaliser(self, train):
        return Normaliser.fit(train)

    def save_times(self, knots):
        return knots

    def output_size(self, data):
        return data.num_channels

    def loss(self, outputs, batch):
        loss = masked_mse(outputs, batch["targets"], batch["target_mask"])
        return loss, {"mse": loss}

    def readout(self, outputs):
        return outputs

    def metrics(self, predictions, data):
        """`mse` over the target points, in units of the training standard
        deviation."""
        mask = np.asarray(data["target_mask"])
        return {"mse": float(masked_mse(predictions, np.asarray(data["targets"]), mask))}

    def validation_metrics(self, predictions, data):
        return self.metrics(predictions, data)

    def naive(self, model, data):
        """`naive_mse`: the linear interpolation of the inputs (interpolation) or
        their last value (forecasting), i.e. the control path's own values."""
        pred = np.asarray(
            model.baseline(jnp.asarray(data["knots"]), jnp.asarray(data["values"]))
        )
        mask = np.asarray(data["target_mask"])
        return {"naive_mse": float(masked_mse(pred, np.asarray(data["targets"]), mask))}

    def report(self, metrics):
        return {"test_mse": metrics["mse"]}

    def to_user_units(self, predictions, normaliser, offset):
        assert offset is not None
        return (predictions + offset) * normaliser.scale + normaliser.mean


def _targets(inputs: np.ndarray, knots: np.ndarray, targets: np.ndarray):
    offset = _centre(inputs)
    targets = targets - offset
    return {
        **_series_inputs(inputs - offset, knots),
        "target_mask": (~np.isnan(targets)).astype(np.float32),
        "targets": np.nan_to_num(targets).astype(np.float32),
    }


class Interpolation(AbstractObservationTask):
    """Reconstruct held-out observations at their times: each channel of each series
    holds out `holdout` of its observed points (seeded), and the head predicts a
    correction to the linear interpolation of the rest (`skip`).

    **Arguments:**

    - `holdout`: the fraction of observed points held out as targets, in (0, 1).
    """

    holdout: float = eqx.field(default=0.3, static=True)
    name: ClassVar[str] = "interpolation"
    monitor: ClassVar[str] = "mse"
    mode: ClassVar[Literal["min", "max"]] = "min"
    stratify: ClassVar[bool] = False
    # Learn the correction to linear interpolation rather than the values (co2 at
    # 30% missing: docs/stable-sdes.md, "Tasks").
    skip: ClassVar[bool] = True

    def __check_init__(self):
        if not 0.0 < self.holdout < 1.0:
            raise ValueError(f"`holdout` must be in (0, 1), got {self.holdout!r}.")

    def arrays(self, data, knots, seed, stream):
        inputs, targets = _holdout(data.values, self.holdout, seed, stream)
        return _targets(inputs, knots, targets)

    def inputs(self, values, knots):
        offset = _centre(values)
        return _series_inputs(values - offset, knots), offset

    def prediction_report(self, predictions, length, classes):
        return {
            "saved": "values (series, length, channels) at every time of the window, "
            "in the data's units: observed points reconstructed, missing ones "
            "filled in"
        }


class Forecasting(AbstractObservationTask):
    """Predict the observations after an input window: the model reads the first
    `input_fraction` of the window and the head predicts the values at every time
    (the path is held at its last value beyond the input, so the latent runs on
    under its own dynamics); the targets are the points after the input.

    **Arguments:**

    - `input_fraction`: the part of the window given as input, in (0, 1).
    """

    input_fraction: float = eqx.field(default=0.75, static=True)
    name: ClassVar[str] = "forecasting"
    monitor: ClassVar[str] = "mse"
    mode: ClassVar[Literal["min", "max"]] = "min"
    stratify: ClassVar[bool] = False
    # The last value is a poor start for a trend and a season (co2: docs, "Tasks"),
    # so the head predicts the values themselves.
    skip: ClassVar[bool] = False

    def __check_init__(self):
        if not 0.0 < self.input_fraction < 1.0:
            raise ValueError(
                f"`input_fraction` must be in (0, 1), got {self.input_fraction!r}."
            )

    def input_length(self, length: int) -> int:
        """The number of input points of a window of `length` (at least 2, and at
        least one point left to forecast)."""
        return max(2, min(length - 1, int(round(self.input_fraction * length))))

    def arrays(self, data, knots, seed, stream):
        length = self.input_length(len(knots))
        targets = data.values.copy()
        targets[:, :length] = np.nan
        return _targets(data.values[:, :length], knots[:length], targets)

    def inputs(self, values, knots):
        length = self.input_length(len(knots))
        offset = _centre(values[:, :length])
        return _series_inputs(values[:, :length] - offset, knots[:length]), offset

    def prediction_report(self, predictions, length, classes):
        inputs = self.input_length(length)
        return {
            "saved": "values (series, length, channels) at every time of the window, "
            f"in the data's units: the model reads the first {inputs} points and "
            f"forecasts the remaining {length - inputs}"
        }


# Callables rather than classes for the type checker: a class with abstract class
# variables reads to it as one whose constructor wants them.
TASKS: dict[str, Callable[[], AbstractTask]] = {
    "classification": Classification,
    "regression": Regression,
    "interpolation": Interpolation,
    "forecasting": Forecasting,
}


def as_task(task: "AbstractTask | str") -> AbstractTask:
    """A task object from a task or its name (`--task`), with default settings."""
    if isinstance(task, AbstractTask):
        return task
    if task not in TASKS:
        raise ValueError(f"Unknown task {task!r}; choose one of {', '.join(TASKS)}.")
    return TASKS[task]()


def default_task(data: TimeSeriesDataset) -> AbstractTask:
    """Classification with class labels, regression with real targets, otherwise
    forecasting."""
    if data.labels is None:
        return Forecasting()
    return Classification() if data.classes is not None else Regression()
