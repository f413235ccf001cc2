"""The four tasks: from data sets to arrays, losses and metrics.

- classification: cross-entropy of the head on the final latent;
- regression: squared error of the head on the final latent (targets standardised);
- interpolation: reconstruct held-out observations at their times;
- forecasting: predict the observations after the input window.

Every task's arrays are a dict whose leaves have the series as leading axis, so
that [`sdekit.train.fit`][] can batch them.
"""

import dataclasses

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax

from ..data import (
    drop_observations,
    Normaliser,
    TimeSeriesDataset,
    validation_split,
)


TASKS = ("classification", "regression", "interpolation", "forecasting")
# Streams that keep the seeded masks of different splits and purposes independent.
_TRAIN, _TEST, _HOLDOUT_TRAIN, _HOLDOUT_TEST = 0, 1, 2, 3


@dataclasses.dataclass(frozen=True)
class PreparedData:
    """What [`sdekit.stable.prepare_data`][] returns: array dicts per split and what
    a model needs to know about them."""

    task: str
    train: dict
    valid: dict
    test: dict
    input_channels: int
    intensity: bool
    output_size: int
    save_times: np.ndarray
    classes: tuple[str, ...] | None
    normaliser: Normaliser


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


def _centre(inputs: np.ndarray, *others: np.ndarray):
    """Subtract each series' mean observed input per channel (0 if none) from the
    inputs and the targets: squared errors are unchanged, and the level of a series
    (e.g. co2's trend) need not be extrapolated by the model."""
    with np.errstate(invalid="ignore"):
        count = (~np.isnan(inputs)).sum(axis=1, keepdims=True)
        offset = np.where(
            count > 0,
            np.nansum(inputs, axis=1, keepdims=True) / np.maximum(count, 1),
            0.0,
        )
    return (inputs - offset, *(o - offset for o in others))


def _arrays(
    data: TimeSeriesDataset,
    task: str,
    knots: np.ndarray,
    seed: int,
    stream: int,
    holdout: float,
    input_length: int,
) -> dict:
    f32 = np.float32
    values = data.values
    out: dict = {}
    if task in ("classification", "regression"):
        inputs, knot_times = values, knots
    elif task == "interpolation":
        inputs, targets = _holdout(values, holdout, seed, stream)
        inputs, targets = _centre(inputs, targets)
        knot_times = knots
    else:
        inputs, targets = _centre(values[:, :input_length], values)
        targets[:, :input_length] = np.nan
        knot_times = knots[:input_length]
    out["values"] = inputs.astype(f32)
    out["knots"] = np.broadcast_to(
        knot_times.astype(f32), (len(values), len(knot_times))
    ).copy()
    if task == "classification":
        out["label"] = data.labels.astype(np.int32)
    elif task == "regression":
        out["target"] = data.labels.astype(f32)
    else:
        out["target_mask"] = (~np.isnan(targets)).astype(f32)
        out["targets"] = np.nan_to_num(targets).astype(f32)
    return out


def default_task(data: TimeSeriesDataset) -> str:
    """Classification with class labels, regression with real targets, otherwise
    forecasting."""
    if data.labels is None:
        return "forecasting"
    return "classification" if data.classes is not None else "regression"


def prepare_data(
    train: TimeSeriesDataset,
    test: TimeSeriesDataset,
    *,
    task: str,
    missing: float,
    seed: int,
    horizon: float = 10.0,
    intensity: bool = False,
    valid_fraction: float = 0.2,
    holdout: float = 0.3,
    input_fraction: float = 0.75,
) -> PreparedData:
    """Mask, split, normalise and build the control paths.

    Steps, in order: drop `missing` of each channel's points (seeded; the train and
    test splits get independent masks); carve a seeded validation part out of train
    (stratified for classification); fit a [`sdekit.data.Normaliser`][] on the rest
    of train and apply it to every split; map the times onto $[0, \\text{horizon}]$;
    build each task's inputs and targets. The control paths are built by the model
    from the inputs (see [`sdekit.data.ControlPath`][]).

    **Arguments:**

    - `train`, `test`: the splits, e.g. from [`sdekit.data.load_dataset`][].
    - `task`: one of `"classification"`, `"regression"`, `"interpolation"`,
        `"forecasting"`.
    - `missing`: fraction of points each channel drops, in $[0, 1)$.
    - `seed`: seeds the masks, the validation split and the held-out points.
    - `horizon`: the model time the observation window is mapped onto.
    - `intensity`: add the observation-intensity channels to the path.
    - `valid_fraction`: the part of train used for validation.
    - `holdout`: interpolation: the fraction of observed points held out as targets.
    - `input_fraction`: forecasting: the part of the window given as input.
    """
    if task not in TASKS:
        raise ValueError(f"Unknown task {task!r}; choose one of {', '.join(TASKS)}.")
    if task == "classification" and (train.labels is None or train.classes is None):
        raise ValueError(
            f"{train.name} has no class labels, so it cannot be used for "
            "classification; use --task interpolation or forecasting."
        )
    if task == "regression" and (train.labels is None or train.classes is not None):
        raise ValueError(
            f"{train.name} has no real-valued targets, so it cannot be used for "
            "regression."
        )
    if train.num_channels != test.num_channels or train.length != test.length:
        raise ValueError(
            f"The train and test splits differ in shape: {train.values.shape[1:]} vs "
            f"{test.values.shape[1:]} (length, channels)."
        )
    if not 0.0 < horizon:
        raise ValueError(f"`horizon` must be positive, got {horizon}.")
    if task in ("interpolation", "forecasting"):
        train = train.replace(labels=None, classes=None)
        test = test.replace(labels=None, classes=None)
    train = drop_observations(train, missing, seed, _TRAIN)
    test = drop_observations(test, missing, seed, _TEST)
    fit_part, valid = validation_split(
        train, valid_fraction, seed, stratify=task == "classification"
    )
    normaliser = Normaliser.fit(fit_part, regression=task == "regression")
    fit_part, valid, test = (normaliser.apply(d) for d in (fit_part, valid, test))
    times = train.times
    knots = (times - times[0]) / (times[-1] - times[0]) * horizon
    input_length = max(2, min(len(times) - 1, int(round(input_fraction * len(times)))))
    common = dict(task=task, knots=knots, holdout=holdout, input_length=input_length)
    arrays = {
        "train": _arrays(fit_part, seed=seed, stream=_HOLDOUT_TRAIN, **common),
        # Validation series come from train, so they share its hold-out stream but
        # draw different rows of it.
        "valid": _arrays(valid, seed=seed + 1, stream=_HOLDOUT_TRAIN, **common),
        "test": _arrays(test, seed=seed, stream=_HOLDOUT_TEST, **common),
    }
    if task in ("classification", "regression"):
        save_times = np.array([horizon])
        output_size = len(train.classes) if task == "classification" else 1
    else:
        save_times = knots
        output_size = train.num_channels
    return PreparedData(
        task=task,
        input_channels=train.num_channels,
        intensity=intensity,
        output_size=output_size,
        save_times=save_times,
        classes=train.classes,
        normaliser=normaliser,
        **arrays,
    )


def _task_loss(task, outputs, batch):
    """Per-batch loss and metrics of head outputs `(batch, times, out)`."""
    if task == "classification":
        logits = outputs[:, -1]
        loss = optax.softmax_cross_entropy_with_integer_labels(
            logits, batch["label"]
        ).mean()
        accuracy = jnp.mean(jnp.argmax(logits, -1) == batch["label"])
        return loss, {"accuracy": accuracy}
    if task == "regression":
        loss = jnp.mean((outputs[:, -1, 0] - batch["target"]) ** 2)
        return loss, {"mse": loss}
    mask = batch["target_mask"]
    loss = jnp.sum(mask * (outputs - batch["targets"]) ** 2) / jnp.maximum(
        mask.sum(), 1.0
    )
    return loss, {"mse": loss}


def make_loss(task: str, augment: float = 0.0):
    """`loss_fn(model, batch, key) -> (loss, metrics)` for [`sdekit.train.fit`][]:
    one sample of the Brownian motion per series.

    With `augment > 0` every step first drops each remaining input observation with
    probability `augment` (fresh per step; "observation dropout"): the model is
    trained on many maskings of each series, as it will meet new ones at test time.
    """
    if task not in TASKS:
        raise ValueError(f"Unknown task {task!r}; choose one of {', '.join(TASKS)}.")
    if not 0.0 <= augment < 1.0:
        raise ValueError(f"`augment` must be in [0, 1), got {augment!r}.")

    def loss_fn(model, batch, key):
        values = batch["values"]
        if augment > 0:
            key, drop_key = jr.split(key)
            drop = jr.bernoulli(drop_key, augment, values.shape)
            values = jnp.where(drop, jnp.nan, values)
        return _task_loss(task, model(batch["knots"], values, key), batch)

    return loss_fn


@eqx.filter_jit
def _predict_chunk(model, chunk, key, num_samples):
    batch = chunk["knots"].shape[0]

    def tile(x):
        return jnp.concatenate([x] * num_samples, axis=0)

    outputs = model(tile(chunk["knots"]), tile(chunk["values"]), key)
    outputs = outputs.reshape(num_samples, batch, *outputs.shape[1:])
    return outputs


def predict(model, data: dict, key, task: str, num_samples: int = 1, chunk: int = 256):
    """The model's predictions for a whole split, `num_samples` Brownian samples per
    series averaged: class probabilities `(n, classes)` for classification, otherwise
    outputs `(n, times, out)`. Deterministic given `key`; the split is processed in
    chunks of equal size (the last padded), so it compiles once."""
    n = data["knots"].shape[0]
    size = min(n, chunk)
    results = []
    for index, start in enumerate(range(0, n, size)):
        rows = np.arange(start, start + size) % n

        def take(x):
            return jnp.asarray(np.asarray(x)[rows])

        part = {"knots": take(data["knots"]), "values": take(data["values"])}
        out = _predict_chunk(model, part, jr.fold_in(key, index), num_samples)
        if task == "classification":
            out = jax.nn.softmax(out[:, :, -1], axis=-1)
        results.append(np.asarray(out.mean(axis=0))[: min(size, n - start)])
    return np.concatenate(results, axis=0)


def metrics(
    model, data: dict, key, task: str, num_samples: int = 1
) -> dict[str, float]:
    """Metrics of a split: `accuracy` and `loss` (cross-entropy of the averaged
    probabilities) for classification, `mse` (in units of the training standard
    deviation) otherwise."""
    pred = predict(model, data, key, task, num_samples)
    if task == "classification":
        labels = np.asarray(data["label"])
        p = np.clip(pred[np.arange(len(labels)), labels], 1e-12, 1.0)
        return {
            "accuracy": float(np.mean(np.argmax(pred, -1) == labels)),
            "loss": float(-np.mean(np.log(p))),
        }
    if task == "regression":
        return {
            "mse": float(np.mean((pred[:, -1, 0] - np.asarray(data["target"])) ** 2))
        }
    mask = np.asarray(data["target_mask"])
    err = mask * (pred - np.asarray(data["targets"])) ** 2
    return {"mse": float(err.sum() / max(mask.sum(), 1.0))}
