"""The classification and regression sets that aeon ships inside its package."""

import functools as ft
import os

import numpy as np

from ._dataset import TimeSeriesDataset


def _aeon_data_dir() -> str:
    try:
        import aeon
    except ImportError as e:
        raise ImportError(
            "Loading aeon's bundled data sets needs aeon: pip install 'sdekit[data]'."
        ) from e
    return os.path.join(os.path.dirname(aeon.__file__), "datasets", "data")


def _header_task(path: str) -> str | None:
    """'classification' or 'regression' from a .ts file's header, or None."""
    with open(path, errors="replace") as f:
        for line in f:
            line = line.strip().lower()
            if line.startswith("@classlabel") and "true" in line:
                return "classification"
            if line.startswith("@targetlabel") and "true" in line:
                return "regression"
            if line.startswith("@data"):
                return None
    return None


@ft.cache
def bundled_datasets() -> dict[str, str]:
    """The data sets that aeon bundles with both a train and a test split, so that
    they load without a network: `{name: "classification" | "regression"}`.

    Read off aeon's data folder (`<name>/<name>_TRAIN.ts` and `_TEST.ts`, the task
    from the file header), so a newer aeon's additions appear here by themselves.
    """
    root = _aeon_data_dir()
    found = {}
    for name in sorted(os.listdir(root)):
        train = os.path.join(root, name, f"{name}_TRAIN.ts")
        test = os.path.join(root, name, f"{name}_TEST.ts")
        if os.path.isfile(train) and os.path.isfile(test):
            task = _header_task(train)
            if task is not None:
                found[name] = task
    return found


def _series(X) -> list[np.ndarray]:
    """aeon's `(n, channels, length)` array or list of `(channels, length_i)` arrays
    (unequal lengths) as a list of `(channels, length_i)` arrays."""
    return [np.asarray(x, dtype=np.float64) for x in X]


def _resampled(series: list[np.ndarray], length: int) -> np.ndarray:
    """`(n, length, channels)`: series of other lengths are resampled to `length` by
    linear interpolation on $[0, 1]$ (the paper's recipe for unequal lengths)."""
    grid = np.linspace(0.0, 1.0, length)
    out = np.empty((len(series), length, series[0].shape[0]))
    for i, x in enumerate(series):
        if x.shape[1] == length:
            out[i] = x.T
            continue
        own = np.linspace(0.0, 1.0, x.shape[1])
        for c in range(x.shape[0]):
            out[i, :, c] = np.interp(grid, own, x[c]) if x.shape[1] > 1 else x[c, 0]
    return out


def load_bundled(name: str) -> tuple[TimeSeriesDataset, TimeSeriesDataset]:
    """aeon's train and test split of a bundled data set, times in $[0, 1]$.

    **Arguments:**

    - `name`: one of [`sdekit.data.bundled_datasets`][] (case-sensitive, as aeon).

    **Returns:** `(train, test)` [`sdekit.data.TimeSeriesDataset`][]s. Class labels
    are indices into `classes`, the sorted class names of the training split.
    """
    available = bundled_datasets()
    if name not in available:
        close = [n for n in available if n.lower() == str(name).lower()]
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(
            f"Unknown data set {name!r}.{hint} The bundled ones (no network needed) "
            f"are: {', '.join(available)}, and 'co2'; or pass your own file with "
            "--data."
        )
    task = available[name]
    from aeon.datasets import load_classification, load_regression

    loader = load_classification if task == "classification" else load_regression
    raw = {}
    for split in ("train", "test"):
        # [:2]: aeon's loaders are typed as maybe returning metadata third, which
        # they do only when asked (return_metadata=True).
        X, y = loader(name, split=split, extract_path=_aeon_data_dir())[:2]
        raw[split] = (_series(X), np.asarray(y))
    # Unequal lengths (within or across the splits) go to the longest one.
    length = max(x.shape[1] for series, _ in raw.values() for x in series)
    splits = {s: (_resampled(series, length), y) for s, (series, y) in raw.items()}
    times = np.linspace(0.0, 1.0, length)
    classes = None
    if task == "classification":
        classes = tuple(sorted({str(label) for label in splits["train"][1]}))
        index = {c: i for i, c in enumerate(classes)}
        for split, (values, y) in splits.items():
            unknown = {str(v) for v in y} - set(index)
            if unknown:
                raise ValueError(
                    f"{name}: the {split} split has classes {sorted(unknown)} that the "
                    "training split lacks."
                )
            splits[split] = (values, np.array([index[str(v)] for v in y]))
    else:
        splits = {s: (v, y.astype(np.float64)) for s, (v, y) in splits.items()}
    train, test = (
        TimeSeriesDataset(
            values=splits[s][0],
            times=times,
            labels=splits[s][1],
            classes=classes,
            name=f"{name}/{s}",
        )
        for s in ("train", "test")
    )
    return train, test
