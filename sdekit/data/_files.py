"""Users' own time series from an NPY, NPZ or CSV file, read by sdekit's one reader
([`sdekit.data.read_array`][]; the same missing-value tokens and errors everywhere).

**NPY** (`numpy.save`): the values alone, `(n, length, channels)` or `(n, length)`,
NaN where missing, at times `0, 1, ..., length - 1`, without labels (a task that
needs none: interpolation or forecasting).

**NPZ** (`numpy.savez`): keys

- `values`: `(n, length, channels)` or `(n, length)` floats, NaN where missing;
- `times` (optional): `(length,)` shared times, or `(n, length)` per-series times
    (NaN after a series' last time); default `0, 1, ..., length - 1`;
- `labels` (optional): `(n,)` class names or integers (classification) or floats
    (regression);
- `split` (optional): `(n,)` strings `"train"` / `"test"`.

**CSV** (long format, one row per series and time, a header line):
`series,time,<channel columns...>[,label][,split]`. Empty cells, `nan` and the other
[`sdekit.data.MISSING_TOKENS`][] are missing values; the label and split must be the
same on every row of a series. (`.tsv` is read the same way, tab-separated.)

Series with their own times are put on the union of all times (NaN elsewhere), which
is how [`sdekit.data.TimeSeriesDataset`][] represents irregular sampling. Without a
`split`, a seeded, stratified quarter of the series becomes the test split.
"""

import os

import numpy as np

from ._dataset import TimeSeriesDataset
from ._masks import validation_split
from ._read import (
    column_name,
    number_error,
    parse_number,
    read_array,
    read_npz,
    read_table,
)


def _encode_labels(raw, name: str, task: str | None):
    """(labels, classes) from raw labels: text or integer-valued labels are classes
    unless `task` says regression; other numbers are regression targets."""
    raw = np.asarray(raw)
    numeric = raw.dtype.kind in "biuf"
    if task in ("classification",) or (
        task is None
        and (
            not numeric
            or (raw.dtype.kind in "biu")
            or np.all(np.isfinite(raw.astype(float)) & (raw.astype(float) % 1 == 0))
        )
    ):
        if numeric and raw.dtype.kind == "f" and not np.all(raw % 1 == 0):
            raise ValueError(
                f"{name}: classification labels must be names or integers; got "
                "fractional numbers (use --task regression for real-valued targets)."
            )
        text = np.array([str(int(v)) if numeric else str(v) for v in raw])
        if numeric:
            classes = tuple(str(c) for c in sorted({int(v) for v in raw}))
        else:
            classes = tuple(sorted(set(text)))
        index = {c: i for i, c in enumerate(classes)}
        return np.array([index[t] for t in text]), classes
    if not numeric:
        raise ValueError(f"{name}: regression targets must be numbers.")
    labels = raw.astype(np.float64)
    if not np.all(np.isfinite(labels)):
        raise ValueError(f"{name}: regression targets contain NaN or infinite values.")
    return labels, None


def _union_grid(times: np.ndarray, values: np.ndarray, name: str):
    """Per-series times `(n, length)` (NaN-padded) -> shared union grid."""
    n, length, channels = values.shape
    rows = []
    for i in range(n):
        own = times[i]
        seen = np.isfinite(own)
        if not seen.any():
            raise ValueError(f"{name}: series {i} has no observation time.")
        if not seen[: seen.sum()].all():
            raise ValueError(
                f"{name}: series {i} has NaN times before its last time; only a NaN "
                "tail (padding) is allowed."
            )
        if np.any(np.diff(own[seen]) <= 0):
            raise ValueError(
                f"{name}: the times of series {i} are not strictly increasing."
            )
        rows.append(own[seen])
    grid = np.unique(np.concatenate(rows))
    out = np.full((n, len(grid), channels), np.nan)
    for i, own in enumerate(rows):
        out[i, np.searchsorted(grid, own)] = values[i, : len(own)]
    return grid, out


def _finish(values, times, labels, split, name, where, task, seed):
    # `name` names the data set, `where` the file in error messages.
    values = np.asarray(values, dtype=np.float64)
    if values.ndim == 2:
        values = values[..., None]
    if values.ndim != 3 or values.shape[0] == 0 or values.shape[1] < 2:
        raise ValueError(
            f"{where}: `values` must have shape (series, length, channels) or "
            f"(series, length) with length >= 2, got shape {values.shape}."
        )
    n, length, _ = values.shape
    if times is None:
        times = np.arange(length, dtype=np.float64)
    times = np.asarray(times, dtype=np.float64)
    if times.shape == (n, length):
        times, values = _union_grid(times, values, where)
    elif times.shape != (length,):
        raise ValueError(
            f"{where}: `times` must have shape ({length},) or ({n}, {length}), got "
            f"{times.shape}."
        )
    if not np.all(np.isfinite(times)) or np.any(np.diff(times) <= 0):
        raise ValueError(f"{where}: `times` must be finite and strictly increasing.")
    if np.all(np.isnan(values)):
        raise ValueError(f"{where}: every value is missing.")
    classes = None
    if labels is not None:
        labels = np.asarray(labels)
        if labels.shape != (n,):
            raise ValueError(
                f"{where}: need one label per series ({n}), got shape {labels.shape}."
            )
        labels, classes = _encode_labels(labels, where, task)
    data = TimeSeriesDataset(values, times, labels, classes, name)
    if split is not None:
        split = np.asarray([str(s).strip().lower() for s in split])
        if split.shape != (n,) or not set(split) <= {"train", "test"}:
            raise ValueError(
                f"{where}: `split` must hold 'train' or 'test' for each of the {n} series."
            )
        if not (split == "train").any():
            raise ValueError(f"{where}: no series is marked 'train'.")
        train = data.subset(split == "train").replace(name=f"{name}/train")
        if not (split == "test").any():
            return train, None
        return train, data.subset(split == "test").replace(name=f"{name}/test")
    train, test = validation_split(data, 0.25, seed, stratify=classes is not None)
    return train.replace(name=f"{name}/train"), test.replace(name=f"{name}/test")


def _read_npz(path, what):
    return read_npz(
        path, required=("values",), optional=("times", "labels", "split"), what=what
    )


def _read_csv(path, where, what):
    header, rows = read_table(path, what=what)
    if header is None or "series" not in header or "time" not in header:
        raise ValueError(
            f"{where}: a CSV needs the long format, a header row 'series,time,' then "
            "one column per channel (optional 'label', 'split') and one row per "
            f"series and time; got {'no header' if header is None else header}. "
            "(A plain array of values can be saved as .npy.)"
        )
    channels = [h for h in header if h not in ("series", "time", "label", "split")]
    if not channels:
        raise ValueError(f"{where}: the CSV has no value columns besides {header}.")
    col = {h: i for i, h in enumerate(header)}

    def number(row, line, column):
        value = parse_number(row[col[column]])
        if value is None:
            raise number_error(
                path, what, line, column_name(header, col[column]), row[col[column]]
            )
        return value

    series: dict[str, dict] = {}
    for line, row in rows:
        key = row[col["series"]].strip()
        entry = series.setdefault(key, {"t": [], "x": [], "label": None, "split": None})
        t = number(row, line, "time")
        if not np.isfinite(t):
            raise ValueError(
                f"{where}, line {line}: the time is missing; every row needs its time."
            )
        entry["t"].append(t)
        entry["x"].append([number(row, line, c) for c in channels])
        for extra in ("label", "split"):
            if extra in col:
                value = row[col[extra]].strip()
                if entry[extra] is not None and entry[extra] != value:
                    raise ValueError(
                        f"{where}, line {line}: series {key!r} has {extra} {value!r} "
                        f"here but {entry[extra]!r} on an earlier row."
                    )
                entry[extra] = value
    length = max(len(e["t"]) for e in series.values())
    n = len(series)
    times = np.full((n, length), np.nan)
    values = np.full((n, length, len(channels)), np.nan)
    for i, entry in enumerate(series.values()):
        order = np.argsort(entry["t"], kind="stable")
        t = np.asarray(entry["t"])[order]
        if np.any(np.diff(t) == 0):
            raise ValueError(
                f"{where}: series {list(series)[i]!r} has two rows with the same time."
            )
        times[i, : len(t)] = t
        values[i, : len(t)] = np.asarray(entry["x"])[order]
    out = {"values": values, "times": times}
    if "label" in col:
        labels = [e["label"] for e in series.values()]
        try:
            out["labels"] = np.array([float(v) for v in labels])
        except ValueError:
            out["labels"] = np.array(labels)
    if "split" in col:
        out["split"] = np.array([e["split"] for e in series.values()])
    return out


def load_file(
    path: str | os.PathLike,
    task: str | None = None,
    seed: int = 0,
    *,
    what: str = "--data",
) -> tuple[TimeSeriesDataset, TimeSeriesDataset | None]:
    """Read a user's NPY, NPZ or CSV file (formats in this module's docstring)
    through sdekit's one reader ([`sdekit.data.read_array`][],
    [`sdekit.data.read_npz`][], [`sdekit.data.read_table`][]).

    **Arguments:**

    - `path`: a `.npy`, `.npz` or `.csv` (`.tsv`, `.txt`) file.
    - `task`: `"classification"` or `"regression"` to say how to read numeric labels
        (default: integers are classes, other numbers regression targets).
    - `seed`: seeds the test split when the file has no `split`.
    - `what`: how error messages name the file's role (the command-line option).

    **Returns:** `(train, test)`; `test` is `None` when `split` marks no test series.
    """
    path = os.fspath(path)
    name = os.path.basename(path)
    where = f"{what} file {path}" if what else f"file {path}"
    suffix = os.path.splitext(path)[1].lower()
    if suffix == ".npz" and os.path.isfile(path):
        raw = _read_npz(path, what)
    elif suffix in (".csv", ".tsv", ".txt") and os.path.isfile(path):
        raw = _read_csv(path, where, what)
    else:
        # An NPY file; read_array also names what is wrong with a missing file or an
        # unknown file type.
        raw = {"values": read_array(path, what=what)}
    return _finish(
        raw["values"],
        raw.get("times"),
        raw.get("labels"),
        raw.get("split"),
        name,
        where,
        task if task in ("classification", "regression") else None,
        seed,
    )
