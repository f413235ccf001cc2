"""Time-series data for sdekit's models: aeon's bundled classification and regression
sets, statsmodels' co2 record, users' files (one reader for NPY, NPZ and CSV, shared
by every command); seeded missingness, validation splits, NaN-aware normalisation and
the Hermite cubic control path."""

from ._aeon import bundled_datasets as bundled_datasets, load_bundled as load_bundled
from ._co2 import load_co2 as load_co2, load_co2_series as load_co2_series
from ._dataset import Task as Task, TimeSeriesDataset as TimeSeriesDataset
from ._densities import (
    AbstractDensity as AbstractDensity,
    Checkerboard as Checkerboard,
    eight_gaussians as eight_gaussians,
    GaussianMixture as GaussianMixture,
    load_digits as load_digits,
    Moons as Moons,
    random_mixture as random_mixture,
    Rings as Rings,
    StandardGaussian as StandardGaussian,
    TOY_DENSITIES as TOY_DENSITIES,
    toy_density as toy_density,
)
from ._files import load_file as load_file
from ._lorenz import (
    lorenz_spikes as lorenz_spikes,
    lorenz_trajectories as lorenz_trajectories,
)
from ._masks import (
    check_missing_rate as check_missing_rate,
    drop_observations as drop_observations,
    format_missing_rate as format_missing_rate,
    missing_mask as missing_mask,
    validation_split as validation_split,
)
from ._normalise import Normaliser as Normaliser
from ._nwb import load_nwb as load_nwb
from ._paths import (
    ControlPath as ControlPath,
    fill_missing as fill_missing,
    path_channels as path_channels,
)
from ._read import (
    MISSING_TOKENS as MISSING_TOKENS,
    read_array as read_array,
    read_npz as read_npz,
    read_table as read_table,
)
from ._spikes import (
    check_spike_counts as check_spike_counts,
    default_heldout_neurons as default_heldout_neurons,
    load_spikes as load_spikes,
    save_spikes as save_spikes,
    SpikeTrials as SpikeTrials,
    SpikingDataset as SpikingDataset,
)


def load_dataset(name: str) -> tuple[TimeSeriesDataset, TimeSeriesDataset]:
    """A data set by name: `"co2"` (windows, [`sdekit.data.load_co2`][]) or any of
    [`sdekit.data.bundled_datasets`][]. **Returns:** `(train, test)`."""
    if str(name).lower() == "co2":
        return load_co2()
    return load_bundled(name)
