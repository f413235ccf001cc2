"""Neural Latents Benchmark recordings in NWB files, binned into spike-count trials.

The benchmark's own loader (nlb_tools) pins pandas <= 1.3.4 and does not install on
Python >= 3.11, so this reads the files with pynwb directly (the `nwb` extra:
`pip install 'sdekit[nwb]'`), following the layout of the benchmark's files:

- `units`: one row per unit with `spike_times` (seconds), `obs_intervals` (the
    intervals during which the unit was recorded) and a boolean `heldout` column;
- `trials`: `start_time`, `stop_time`, `split` (`"train"`, `"val"`, `"test"`), an
    alignment time such as `move_onset_time`, and condition fields such as
    `trial_type` and `trial_version`;
- behaviour as `TimeSeries` anywhere in the file (acquisition or a processing
    module), e.g. `hand_vel`, sampled on a regular grid or at given timestamps.
"""

import os

import numpy as np

from ._spikes import default_heldout_neurons, SpikeTrials, SpikingDataset


# Condition fields of the benchmark's data sets (MC_Maze, Area2_Bump), tried in turn.
CONDITION_FIELDS = (("trial_type", "trial_version"), ("cond_dir", "ctr_hold_bump"))


def _open(path: str):
    try:
        import pynwb
    except ImportError as e:
        raise ImportError(
            "Reading NWB files needs pynwb: pip install 'sdekit[nwb]'."
        ) from e
    if not os.path.isfile(path):
        raise ValueError(f"--data {path}: no such file.")
    try:
        # By keyword: pynwb's docval-wrapped __init__ reads to a type checker as
        # taking no positional arguments.
        io = pynwb.NWBHDF5IO(path=path, mode="r")
        nwbfile = io.read()
        if not isinstance(nwbfile, pynwb.NWBFile):
            raise TypeError(f"it holds a {type(nwbfile).__name__}, not an NWBFile")
        return io, nwbfile
    except Exception as e:  # h5py and hdmf raise many kinds; all mean "not readable"
        message = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ValueError(
            f"--data {path} cannot be read as an NWB file ({message}); pass an NWB "
            "file of the Neural Latents Benchmark layout, or spikes as .npz."
        ) from None


def _find_timeseries(nwbfile, name: str):
    import pynwb

    found = []
    for obj in nwbfile.objects.values():
        if isinstance(obj, pynwb.TimeSeries) and obj.name == name:
            found.append(obj)
    return found[0] if found else None


def _column(table, name: str, path: str, what: str):
    if name not in table.colnames:
        raise ValueError(
            f"--data {path}: the {what} table has no `{name}` column (its columns: "
            f"{', '.join(table.colnames)})."
        )
    return table[name]


# Bin edges are sums of floats (an alignment time plus multiples of the bin width), a
# few ulps off the millisecond grid that spike and sample times lie on; a time within
# this of an edge counts as on it (a bin holds [edge_k, edge_{k+1})).
_TOLERANCE = 1e-7


def _bin_counts(spike_times: np.ndarray, edges: np.ndarray) -> np.ndarray:
    # Counts in [edge_k, edge_{k+1}) for every trial's edges at once.
    spike_times = np.sort(np.asarray(spike_times, dtype=np.float64))
    index = np.searchsorted(spike_times, edges - _TOLERANCE, side="left")
    return np.diff(index, axis=-1)


def _bin_behavior(series, edges: np.ndarray, lag: float) -> np.ndarray:
    """Mean of the series' samples within each bin, the bins shifted by `lag` s."""
    data = np.asarray(series.data[()], dtype=np.float64)
    if data.ndim == 1:
        data = data[:, None]
    if series.timestamps is not None:
        times = np.asarray(series.timestamps[()], dtype=np.float64)
    else:
        start = series.starting_time or 0.0
        times = start + np.arange(data.shape[0]) / series.rate
    index = np.searchsorted(times, edges + lag - _TOLERANCE, side="left")
    sums = np.concatenate([np.zeros((1, data.shape[1])), np.cumsum(data, axis=0)])
    counts = np.diff(index, axis=-1)
    totals = sums[index[..., 1:]] - sums[index[..., :-1]]
    with np.errstate(invalid="ignore", divide="ignore"):
        return totals / counts[..., None]


def load_nwb(
    path: str | os.PathLike,
    *,
    bin_ms: float = 20.0,
    align_field: str | None = "move_onset_time",
    align_range_ms: tuple[float, float] = (-250.0, 450.0),
    forward_bins: int = 0,
    heldout_neurons: int | None = None,
    behavior_field: str | None = "hand_vel",
    behavior_lag_ms: float = 0.0,
    condition_fields: tuple[str, ...] | None = None,
    seed: int = 0,
) -> SpikingDataset:
    """Bin a Neural Latents Benchmark NWB file into spike-count trials.

    Every trial's window is `align_range_ms` around its `align_field` time (with no
    such column: from `start_time`, as long as the shortest trial), extended by
    `forward_bins` bins for forward prediction; spikes are counted in bins of
    `bin_ms` milliseconds. Trials whose window leaves any unit's `obs_intervals` are
    dropped. Units flagged `heldout` become the held-out neurons, placed after the
    held-in ones (without the flag, the last `heldout_neurons`).

    Trials of split `"train"` form the training set and those of split `"val"` the
    test set (the benchmark's local evaluation: `"test"` trials come without held-out
    spikes and are dropped); without a `split` column a seeded fifth of the trials is
    the test set.

    **Arguments:**

    - `path`: the `.nwb` file.
    - `bin_ms`: the bin width in milliseconds.
    - `align_field`, `align_range_ms`: the alignment time column and the window
        around it in milliseconds (MC_Maze's: `move_onset_time`, (-250, 450)).
    - `forward_bins`: bins after the window to predict (fp-bps).
    - `heldout_neurons`: only for files without a `heldout` column.
    - `behavior_field`: the `TimeSeries` to bin as behaviour (averaged per bin), or
        `None`; absent from the file: no behaviour.
    - `behavior_lag_ms`: the behaviour is read this much later than the spikes (the
        benchmark's velocity decoding uses 80-120 ms for the motor data sets).
    - `condition_fields`: trial columns whose values together label a condition;
        default the benchmark's (`trial_type`, `trial_version`) or (`cond_dir`,
        `ctr_hold_bump`) when present.
    - `seed`: the split when the file has none.

    **Returns:** a [`sdekit.data.SpikingDataset`][].
    """
    path = os.fspath(path)
    if not bin_ms > 0:
        raise ValueError(f"--bin-ms must be > 0, got {bin_ms!r}.")
    io, nwbfile = _open(path)
    try:
        units, trials = nwbfile.units, nwbfile.trials
        if units is None or len(units) == 0:
            raise ValueError(f"--data {path}: the NWB file has no units table.")
        if trials is None or len(trials) == 0:
            raise ValueError(f"--data {path}: the NWB file has no trials table.")
        spike_times = list(_column(units, "spike_times", path, "units")[:])
        if "heldout" in units.colnames:
            heldout = np.asarray(units["heldout"][:], dtype=bool)
        else:
            k = default_heldout_neurons(len(spike_times))
            k = k if heldout_neurons is None else heldout_neurons
            heldout = np.arange(len(spike_times)) >= len(spike_times) - k
        intervals = (
            [np.asarray(x, dtype=np.float64) for x in units["obs_intervals"][:]]
            if "obs_intervals" in units.colnames
            else None
        )
        start = np.asarray(trials["start_time"][:], dtype=np.float64)
        stop = np.asarray(trials["stop_time"][:], dtype=np.float64)
        width = bin_ms / 1000.0
        if align_field is not None and align_field in trials.colnames:
            anchor = np.asarray(trials[align_field][:], dtype=np.float64)
            lo, hi = (float(x) / 1000.0 for x in align_range_ms)
            if not hi > lo:
                raise ValueError(
                    f"--align-range must be increasing, got {align_range_ms}."
                )
            num_bins = int(round((hi - lo) / width))
            begin = anchor + lo
        else:
            duration = np.min(stop - start)
            num_bins = int(np.floor(duration / width + 1e-9))
            begin = start
        if num_bins < 2:
            raise ValueError(
                f"--data {path}: a trial window holds {num_bins} bins of {bin_ms} ms; "
                "use smaller bins or a longer window."
            )
        total = num_bins + int(forward_bins)
        edges = begin[:, None] + width * np.arange(total + 1)[None, :]
        keep = np.isfinite(begin)
        if intervals is not None:
            for own in intervals:
                inside = np.zeros(len(begin), dtype=bool)
                for a, b in own.reshape(-1, 2):
                    inside |= (edges[:, 0] >= a) & (edges[:, -1] <= b)
                keep &= inside
        split = (
            np.asarray([str(s) for s in trials["split"][:]])
            if "split" in trials.colnames
            else None
        )
        counts = np.stack([_bin_counts(s, edges) for s in spike_times], axis=-1)
        order = np.concatenate([np.flatnonzero(~heldout), np.flatnonzero(heldout)])
        counts = counts[..., order]
        behavior = None
        series = _find_timeseries(nwbfile, behavior_field) if behavior_field else None
        if series is not None:
            behavior = _bin_behavior(series, edges, behavior_lag_ms / 1000.0)
            keep &= np.all(np.isfinite(behavior), axis=(1, 2))
        conditions = None
        fields = [condition_fields] if condition_fields else list(CONDITION_FIELDS)
        for group in fields:
            if all(name in trials.colnames for name in group):
                columns = [np.asarray(trials[name][:]).astype(str) for name in group]
                conditions = np.array(["/".join(v) for v in zip(*columns)])
                break
        else:
            if condition_fields:
                missing = [n for n in condition_fields if n not in trials.colnames]
                raise ValueError(
                    f"--data {path}: the trials table has no column {missing[0]!r} "
                    f"(its columns: {', '.join(trials.colnames)})."
                )
    finally:
        io.close()
    if split is not None:
        train = keep & (split == "train")
        test = keep & (split == "val")
    else:
        chosen = np.flatnonzero(keep)
        rng = np.random.default_rng(seed)
        test_index = rng.choice(chosen, max(1, len(chosen) // 5), replace=False)
        test = np.zeros(len(keep), dtype=bool)
        test[test_index] = True
        train = keep & ~test
    if not train.any() or not test.any():
        raise ValueError(
            f"--data {path}: after dropping trials outside the recorded intervals, "
            f"{int(train.sum())} training and {int(test.sum())} test (`val`) trials "
            "remain; both are needed."
        )
    name = os.path.basename(path)
    trials_all = SpikeTrials(
        counts, behavior=behavior, conditions=conditions, name=name
    )
    return SpikingDataset(
        trials_all.subset(train),
        trials_all.subset(test),
        heldout_neurons=int(heldout.sum()),
        forward_bins=int(forward_bins),
        bin_ms=float(bin_ms),
        name=name,
    )
