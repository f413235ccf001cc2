"""From a data set's train and test splits to the arrays a model trains on: masks,
the validation split, normalisation, model time, and the task's inputs and targets."""

import dataclasses
import warnings

import numpy as np

from ..data import drop_observations, Normaliser, TimeSeriesDataset, validation_split
from ._task import AbstractTask, as_task


# Streams that keep the seeded masks of different splits and purposes independent.
_TRAIN, _TEST, _HOLDOUT_TRAIN, _HOLDOUT_TEST = 0, 1, 2, 3

# The fewest training series a run accepts: at least one is held out for validation
# (early stopping) and at least two are fitted.
MIN_TRAIN_SERIES = 3
# Below this many training (or test) series, or 2 training series of a class, a run
# warns that its figures say little.
FEW_SERIES = 10


class SmallDataWarning(UserWarning):
    """A training or test split too small for its figures to say much."""


@dataclasses.dataclass(frozen=True)
class PreparedData:
    """What [`sdekit.stable.prepare_data`][] returns: array dicts per split and what
    a model needs to know about them.

    **Fields:**

    - `task`: the [`sdekit.stable.AbstractTask`][] the arrays are built for.
    - `train`, `valid`, `test`: the splits' array dicts (see the task).
    - `input_channels`: channels of the observations.
    - `intensity`: whether the control path has observation-intensity channels.
    - `output_size`: outputs of the head.
    - `save_times`: model times at which the head reads the latent.
    - `times`: the training window's observation times, in the data's units.
    - `knots`: the same times mapped onto $[0, \\text{horizon}]$.
    - `classes`: the class names (classification), else `None`.
    - `normaliser`: fitted on the training part, applied to every split.
    - `warnings`: what [`sdekit.stable.SmallDataWarning`][] said about the sizes.
    """

    task: AbstractTask
    train: dict
    valid: dict
    test: dict
    input_channels: int
    intensity: bool
    output_size: int
    save_times: np.ndarray
    times: np.ndarray
    knots: np.ndarray
    classes: tuple[str, ...] | None
    normaliser: Normaliser
    warnings: tuple[str, ...] = ()


def _check_enough(train: TimeSeriesDataset) -> None:
    """Refuse a training split that cannot be both fitted and validated."""
    n = train.num_series
    if n < MIN_TRAIN_SERIES:
        raise ValueError(
            f"{train.name} has {n} training series; at least {MIN_TRAIN_SERIES} are "
            "needed (at least one is held out for validation and two are fitted). "
            "Add series, or mark more of them 'train'."
        )
    if train.classes is not None and train.labels is not None:
        present = np.unique(train.labels)
        if len(present) < 2:
            raise ValueError(
                f"{train.name}: every training series is of class "
                f"{train.classes[present[0]]!r}; classification needs training series "
                "of at least 2 classes."
            )


def _small_data_notes(
    train: TimeSeriesDataset,
    fit_part: TimeSeriesDataset,
    valid: TimeSeriesDataset,
    test: TimeSeriesDataset,
) -> list[str]:
    notes = []
    if train.num_series < FEW_SERIES:
        notes.append(
            f"{train.name} has only {train.num_series} training series "
            f"({fit_part.num_series} fitted, {valid.num_series} for validation); with "
            f"fewer than {FEW_SERIES} the test figures say little."
        )
    if train.classes is not None and train.labels is not None:
        counts = np.bincount(train.labels, minlength=len(train.classes))
        few = [f"{c!r}: {k}" for c, k in zip(train.classes, counts) if k < 2]
        if few:
            notes.append(
                f"{train.name}: fewer than 2 training series of class "
                f"{', '.join(few)}; such a class cannot be both fitted and validated."
            )
    if test.num_series < FEW_SERIES:
        notes.append(
            f"{test.name} has only {test.num_series} test series; with fewer than "
            f"{FEW_SERIES} the test figures say little."
        )
    return notes


def prepare_data(
    train: TimeSeriesDataset,
    test: TimeSeriesDataset,
    *,
    task: AbstractTask | str,
    missing: float,
    seed: int,
    horizon: float = 10.0,
    intensity: bool = False,
    valid_fraction: float = 0.2,
) -> PreparedData:
    """Mask, split, normalise and build the task's arrays.

    Steps, in order: drop `missing` of each channel's points (seeded; the train and
    test splits get independent masks); carve a seeded validation part out of train
    (stratified for classification); fit a [`sdekit.data.Normaliser`][] on the rest
    of train and apply it to every split; map the times onto $[0, \\text{horizon}]$;
    build the task's inputs and targets. The control paths are built by the model
    from the inputs (see [`sdekit.data.ControlPath`][]).

    A training split of fewer than 3 series, or of a single class, is refused with a
    `ValueError`; fewer than 10 training or test series, or fewer than 2 training
    series of a class, give a [`sdekit.stable.SmallDataWarning`][] (also kept in
    `warnings`).

    **Arguments:**

    - `train`, `test`: the splits, e.g. from [`sdekit.data.load_dataset`][].
    - `task`: a task ([`sdekit.stable.Classification`][], ...) or its name,
        `"classification"`, `"regression"`, `"interpolation"` or `"forecasting"`
        (default settings).
    - `missing`: fraction of points each channel drops, in $[0, 1)$.
    - `seed`: seeds the masks, the validation split and the held-out points.
    - `horizon`: the model time the observation window is mapped onto.
    - `intensity`: add the observation-intensity channels to the path.
    - `valid_fraction`: the part of train used for validation.
    """
    task = as_task(task)
    train, test = task.check(train), task.check(test)
    if train.num_channels != test.num_channels or train.length != test.length:
        raise ValueError(
            f"The train and test splits differ in shape: {train.values.shape[1:]} vs "
            f"{test.values.shape[1:]} (length, channels)."
        )
    if not 0.0 < horizon:
        raise ValueError(f"`horizon` must be positive, got {horizon}.")
    _check_enough(train)
    train = drop_observations(train, missing, seed, _TRAIN)
    test = drop_observations(test, missing, seed, _TEST)
    fit_part, valid = validation_split(train, valid_fraction, seed, stratify=task.stratify)
    notes = _small_data_notes(train, fit_part, valid, test)
    for note in notes:
        warnings.warn(note, SmallDataWarning, stacklevel=2)
    normaliser = task.normaliser(fit_part)
    fit_part, valid, test = (normaliser.apply(d) for d in (fit_part, valid, test))
    times = train.times
    knots = (times - times[0]) / (times[-1] - times[0]) * horizon
    return PreparedData(
        task=task,
        train=task.arrays(fit_part, knots, seed, _HOLDOUT_TRAIN),
        # Validation series come from train, so they share its hold-out stream but
        # draw different rows of it.
        valid=task.arrays(valid, knots, seed + 1, _HOLDOUT_TRAIN),
        test=task.arrays(test, knots, seed, _HOLDOUT_TEST),
        input_channels=train.num_channels,
        intensity=intensity,
        output_size=task.output_size(train),
        save_times=task.save_times(knots),
        times=times,
        knots=knots,
        classes=train.classes,
        normaliser=normaliser,
        warnings=tuple(notes),
    )
