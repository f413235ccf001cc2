"""NaN-aware normalisation with statistics from the training split only."""

import dataclasses

import numpy as np

from ._dataset import TimeSeriesDataset


@dataclasses.dataclass(frozen=True)
class Normaliser:
    """Per-channel standardisation $(x - \\mu_c) / \\sigma_c$, with $\\mu_c, \\sigma_c$
    the mean and standard deviation of channel $c$'s *observed* training values
    (NaNs ignored, and kept as NaN). Regression targets get their own mean and scale.

    Build it with `Normaliser.fit(train)` on the training split and apply
    it to every split, so no statistic of validation or test data leaks into training.
    """

    mean: np.ndarray
    scale: np.ndarray
    target_mean: float = 0.0
    target_scale: float = 1.0

    @classmethod
    def fit(cls, train: TimeSeriesDataset, regression: bool = False) -> "Normaliser":
        values = train.values
        with np.errstate(invalid="ignore"), _quiet_nan_warnings():
            mean = np.nanmean(values, axis=(0, 1))
            scale = np.nanstd(values, axis=(0, 1))
        mean = np.where(np.isfinite(mean), mean, 0.0)
        scale = np.where(np.isfinite(scale) & (scale > 1e-12), scale, 1.0)
        target_mean, target_scale = 0.0, 1.0
        if regression and train.labels is not None:
            target_mean = float(np.mean(train.labels))
            target_scale = float(np.std(train.labels)) or 1.0
        return cls(mean, scale, target_mean, target_scale)

    def apply(self, dataset: TimeSeriesDataset) -> TimeSeriesDataset:
        values = (dataset.values - self.mean) / self.scale
        labels = dataset.labels
        if labels is not None and dataset.classes is None:
            labels = (labels - self.target_mean) / self.target_scale
        return dataset.replace(values=values, labels=labels)


class _quiet_nan_warnings:
    # nanmean of an all-NaN channel warns; we replace the NaN it returns right after.
    def __enter__(self):
        import warnings

        self._catch = warnings.catch_warnings()
        self._catch.__enter__()
        warnings.simplefilter("ignore", RuntimeWarning)

    def __exit__(self, *exc):
        return self._catch.__exit__(*exc)
