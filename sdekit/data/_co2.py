"""statsmodels' Mauna Loa CO2 record: weekly, with real gaps, cut into windows."""

import numpy as np

from ._dataset import TimeSeriesDataset


def load_co2_series() -> TimeSeriesDataset:
    """The whole weekly record (1958-2001) as one series, 2284 weeks with 59 real
    NaNs; times in years since the first week."""
    try:
        from statsmodels.datasets import co2
    except ImportError as e:
        raise ImportError(
            "The co2 data set needs statsmodels: pip install 'sdekit[data]'."
        ) from e
    frame = co2.load_pandas().data
    assert frame is not None  # statsmodels' Dataset defaults it to None; co2 sets it
    values = frame["co2"].to_numpy(dtype=np.float64)
    weeks = np.arange(len(values), dtype=np.float64)
    return TimeSeriesDataset(values[None, :, None], weeks / 52.1775, name="co2")


def load_co2(
    window: int = 104, stride: int = 4, test_fraction: float = 0.2
) -> tuple[TimeSeriesDataset, TimeSeriesDataset]:
    """Windows of the co2 record for interpolation and forecasting.

    Windows of `window` weeks every `stride` weeks, each on its own time axis (years
    since the window's start). The split is chronological so that the test windows
    lie wholly after every training window: train from the first
    `1 - test_fraction` of the record, test from the rest.

    **Returns:** `(train, test)` [`sdekit.data.TimeSeriesDataset`][]s without labels.
    """
    series = load_co2_series()
    values, times = series.values[0], series.times
    if not 2 <= window <= len(times):
        raise ValueError(f"`window` must be in [2, {len(times)}], got {window}.")
    cut = int(round((1 - test_fraction) * len(times)))
    starts = np.arange(0, len(times) - window + 1, stride)
    train_starts = starts[starts + window <= cut]
    test_starts = starts[starts >= cut]
    if len(test_starts) == 0:
        test_starts = np.array([len(times) - window])
    rel = times[:window] - times[0]

    def cut_out(begin):
        return np.stack([values[s : s + window] for s in begin])

    return (
        TimeSeriesDataset(cut_out(train_starts), rel, name="co2/train"),
        TimeSeriesDataset(cut_out(test_starts), rel, name="co2/test"),
    )
