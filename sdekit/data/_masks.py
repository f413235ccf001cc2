"""Seeded missingness and seeded validation splits."""

import numpy as np

from ._dataset import TimeSeriesDataset


def check_missing_rate(rate, length: int | None = None) -> float:
    """`rate` as a float in $[0, 1)$, or a `ValueError` saying what is allowed.

    With `length` (the number of time points of a series), also refuse a rate that
    would leave a channel fewer than 2 observed points ([`sdekit.data.missing_mask`][]
    drops `floor(rate * length)` of them): one point carries no dynamics, and the
    control path needs two.
    """
    try:
        value = float(rate)
    except (TypeError, ValueError):
        raise ValueError(
            f"The missing rate must be a number in [0, 1), got {rate!r}."
        ) from None
    if not 0.0 <= value < 1.0:
        raise ValueError(
            f"The missing rate must be in [0, 1) (the fraction of points each channel "
            f"drops), got {rate!r}."
        )
    if length is not None:
        kept = int(length) - int(np.floor(value * length))
        if kept < 2:
            # The largest rate that keeps two points: floor(rate * length) <= length - 2.
            limit = (length - 2) / length
            raise ValueError(
                f"A missing rate of {format_missing_rate(value)} keeps {kept} of the "
                f"{length} time points of each channel; at least 2 are needed, so use "
                f"a rate of at most {format_missing_rate(limit)}."
            )
    return value


def format_missing_rate(rate: float) -> str:
    """The rate as an exact percentage for reports: `0.5` -> `"50%"`, `0.999` ->
    `"99.9%"` (never rounded up to `"100%"`)."""
    # Ten significant digits: exact for any rate a user types, and free of binary
    # noise (100 * 0.3 is 30.000000000000004).
    return f"{100 * float(rate):.10g}%"


def missing_mask(
    shape: tuple[int, int, int], rate: float, seed: int, stream: int = 0
) -> np.ndarray:
    """Which points to drop: `(n, length, channels)` booleans, `True` = dropped.

    Each channel of each series drops exactly `floor(rate * length)` of its time
    points, chosen uniformly and independently of the other channels (the official
    code's per-channel protocol); a rate that would keep fewer than 2 points is
    refused ([`sdekit.data.check_missing_rate`][]). The same `(shape, rate, seed, stream)` gives the same mask on every
    machine (NumPy's PCG64 seeded from `(seed, stream)`).

    **Arguments:**

    - `shape`: `(n, length, channels)`.
    - `rate`: the fraction of points to drop, in $[0, 1)$, keeping at least 2.
    - `seed`: the user's seed.
    - `stream`: separates independent masks for the same seed (e.g. 0 for the train
        split, 1 for the test split).
    """
    n, length, channels = shape
    rate = check_missing_rate(rate, length)
    drop = int(np.floor(rate * length))
    mask = np.zeros((n, channels, length), dtype=bool)
    if drop == 0:
        return np.transpose(mask, (0, 2, 1))
    rng = np.random.default_rng([int(seed), int(stream)])
    # argsort of uniform noise: a uniform random subset per (series, channel) in one go.
    order = np.argsort(rng.random((n, channels, length)), axis=-1)
    np.put_along_axis(mask, order[..., :drop], True, axis=-1)
    return np.transpose(mask, (0, 2, 1))


def drop_observations(
    dataset: TimeSeriesDataset, rate: float, seed: int, stream: int = 0
) -> TimeSeriesDataset:
    """`dataset` with the points of [`sdekit.data.missing_mask`][] set to `NaN`."""
    mask = missing_mask(dataset.values.shape, rate, seed, stream)
    return dataset.replace(values=np.where(mask, np.nan, dataset.values))


def validation_split(
    dataset: TimeSeriesDataset, fraction: float, seed: int, stratify: bool = True
) -> tuple[TimeSeriesDataset, TimeSeriesDataset]:
    """Carve a seeded validation part out of `dataset`.

    With `stratify` (and integer labels), each class gives `round(fraction * count)`
    of its series, at least one when it has two or more, so every class with
    enough examples is seen in validation; otherwise a plain random `fraction`.

    **Returns:** `(train, valid)`.
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"`fraction` must be in (0, 1), got {fraction!r}.")
    n = dataset.num_series
    if n < 2:
        raise ValueError(
            f"{dataset.name}: {n} series cannot be split into training and validation."
        )
    rng = np.random.default_rng([int(seed), 7919])
    if stratify and dataset.labels is not None and dataset.classes is not None:
        picked = []
        for c in range(len(dataset.classes)):
            members = np.flatnonzero(dataset.labels == c)
            if len(members) < 2:
                continue
            take = min(len(members) - 1, max(1, int(round(fraction * len(members)))))
            picked.append(rng.permutation(members)[:take])
        valid = np.sort(np.concatenate(picked)) if picked else np.array([], int)
    else:
        take = min(n - 1, max(1, int(round(fraction * n))))
        valid = np.sort(rng.permutation(n)[:take])
    if len(valid) == 0:
        raise ValueError(
            f"{dataset.name}: no class has two series, so no validation part can be "
            "carved out."
        )
    keep = np.setdiff1d(np.arange(n), valid)
    return dataset.subset(keep), dataset.subset(valid)
