"""The container every loader returns: values with NaN for missing, shared times, labels."""

import dataclasses
from typing import Literal

import numpy as np


Task = Literal["classification", "regression", "interpolation", "forecasting"]


@dataclasses.dataclass(frozen=True)
class TimeSeriesDataset:
    """A set of multivariate time series observed on one shared grid of times.

    Irregular sampling is represented as missingness on that grid: a series that was
    not observed at a time has `NaN` there, channel by channel. (A file whose series
    have their own times is put on the union of all their times by
    [`sdekit.data.load_file`][].)

    **Fields:**

    - `values`: `(n, length, channels)` floats, `NaN` where not observed.
    - `times`: `(length,)` strictly increasing observation times.
    - `labels`: `(n,)` integer class indices (classification), float targets
        (regression), or `None` (interpolation and forecasting need none).
    - `classes`: the class names, `labels[i]` indexing them; `None` unless
        classification.
    - `name`: where the data came from, for messages and reports.
    """

    values: np.ndarray
    times: np.ndarray
    labels: np.ndarray | None = None
    classes: tuple[str, ...] | None = None
    name: str = "data"

    def __post_init__(self):
        values = np.asarray(self.values, dtype=np.float64)
        times = np.asarray(self.times, dtype=np.float64)
        if values.ndim != 3:
            raise ValueError(
                f"{self.name}: `values` must have shape (series, length, channels), "
                f"got shape {values.shape}."
            )
        if times.shape != (values.shape[1],):
            raise ValueError(
                f"{self.name}: `times` must have one entry per time step "
                f"({values.shape[1]}), got shape {times.shape}."
            )
        if not np.all(np.isfinite(times)) or np.any(np.diff(times) <= 0):
            raise ValueError(
                f"{self.name}: observation times must be finite and strictly "
                "increasing."
            )
        if np.any(np.isinf(values)):
            raise ValueError(
                f"{self.name}: `values` contains infinite entries; use NaN for "
                "missing observations."
            )
        if self.labels is not None:
            labels = np.asarray(self.labels)
            if labels.shape != (values.shape[0],):
                raise ValueError(
                    f"{self.name}: need one label per series ({values.shape[0]}), got "
                    f"shape {labels.shape}."
                )
            object.__setattr__(self, "labels", labels)
        object.__setattr__(self, "values", values)
        object.__setattr__(self, "times", times)

    @property
    def num_series(self) -> int:
        return self.values.shape[0]

    @property
    def length(self) -> int:
        return self.values.shape[1]

    @property
    def num_channels(self) -> int:
        return self.values.shape[2]

    @property
    def observed(self) -> np.ndarray:
        """`(n, length, channels)` booleans: where a value was observed."""
        return ~np.isnan(self.values)

    def subset(self, index) -> "TimeSeriesDataset":
        """The series at `index` (an index array or boolean mask)."""
        return dataclasses.replace(
            self,
            values=self.values[index],
            labels=None if self.labels is None else self.labels[index],
        )

    def replace(self, **changes) -> "TimeSeriesDataset":
        return dataclasses.replace(self, **changes)
