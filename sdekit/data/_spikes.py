"""Spike counts of neural populations, binned per trial, and the Neural Latents
Benchmark's split of them into held-in / held-out neurons and forward-prediction bins.

**NPZ layout** (`numpy.savez`), read by [`sdekit.data.load_spikes`][]:

- `train_spikes`, `test_spikes`: `(trials, bins, neurons)` non-negative integer counts
    (integer dtype, or floats holding whole numbers);
- `train_rates`, `test_rates` (optional): the true rates in spikes per bin, shaped like
    the counts (synthetic data), for the rate $R^2$;
- `train_behavior`, `test_behavior` (optional): `(trials, bins, dims)` behaviour (e.g.
    hand velocity) on the same bins, for the velocity $R^2$;
- `train_conditions`, `test_conditions` (optional): `(trials,)` condition labels
    (integers or strings), for the PSTH $R^2$.

Both splits must have the same neurons and bins. The last `heldout_neurons` neurons
are held out: in training trials they are seen (the model learns to predict them), in
test trials they are predicted from the held-in neurons alone, which is what co-bps
scores. The last `forward_bins` bins of every trial are the forward-prediction window:
never shown to the model's encoder, predicted from the bins before them (fp-bps).
"""

import dataclasses
import os

import numpy as np


def check_spike_counts(counts, name: str = "spikes") -> np.ndarray:
    """`counts` as an int64 array, after checking that it is a `(trials, bins,
    neurons)` array of non-negative whole numbers (a one-line `ValueError` naming
    `name` otherwise)."""
    counts = np.asarray(counts)
    if counts.ndim != 3:
        raise ValueError(
            f"{name} must have shape (trials, bins, neurons), got shape {counts.shape}."
        )
    if 0 in counts.shape:
        raise ValueError(f"{name} is empty (shape {counts.shape}).")
    if counts.dtype.kind == "b" or counts.dtype.kind not in "iuf":
        raise ValueError(
            f"{name} must hold integer spike counts, got dtype {counts.dtype}."
        )
    if counts.dtype.kind == "f":
        if not np.all(np.isfinite(counts)):
            raise ValueError(f"{name} contains NaN or infinite values; counts only.")
        if np.any(counts != np.round(counts)):
            raise ValueError(
                f"{name} holds non-integer values; spike counts must be whole numbers "
                "(bin spike times into counts first)."
            )
    if np.any(counts < 0):
        raise ValueError(f"{name} holds negative values; spike counts are >= 0.")
    return counts.astype(np.int64)


@dataclasses.dataclass(frozen=True)
class SpikeTrials:
    """Binned spike counts of one set of trials, with what is known about them.

    **Fields:**

    - `spikes`: `(trials, bins, neurons)` non-negative integer counts.
    - `rates`: the true rates (spikes per bin) shaped like `spikes`, or `None`.
    - `behavior`: `(trials, bins, dims)` behaviour on the same bins, or `None`.
    - `conditions`: `(trials,)` condition labels, or `None`.
    - `name`: where the trials came from, for messages.
    """

    spikes: np.ndarray
    rates: np.ndarray | None = None
    behavior: np.ndarray | None = None
    conditions: np.ndarray | None = None
    name: str = "spikes"

    def __post_init__(self):
        spikes = check_spike_counts(self.spikes, f"{self.name}: spikes")
        object.__setattr__(self, "spikes", spikes)
        if self.rates is not None:
            rates = np.asarray(self.rates, dtype=np.float64)
            if rates.shape != spikes.shape:
                raise ValueError(
                    f"{self.name}: rates must be shaped like the spikes {spikes.shape}, "
                    f"got {rates.shape}."
                )
            if not np.all(np.isfinite(rates)) or np.any(rates < 0):
                raise ValueError(
                    f"{self.name}: rates must be finite and non-negative (spikes per "
                    "bin)."
                )
            object.__setattr__(self, "rates", rates)
        if self.behavior is not None:
            behavior = np.asarray(self.behavior, dtype=np.float64)
            if behavior.ndim == 2:
                behavior = behavior[..., None]
            if behavior.ndim != 3 or behavior.shape[:2] != spikes.shape[:2]:
                raise ValueError(
                    f"{self.name}: behavior must have shape (trials, bins, dims) = "
                    f"({spikes.shape[0]}, {spikes.shape[1]}, dims), got "
                    f"{np.shape(self.behavior)}."
                )
            if not np.all(np.isfinite(behavior)):
                raise ValueError(f"{self.name}: behavior contains NaN or infinities.")
            object.__setattr__(self, "behavior", behavior)
        if self.conditions is not None:
            conditions = np.asarray(self.conditions)
            if conditions.shape != (spikes.shape[0],):
                raise ValueError(
                    f"{self.name}: conditions must have one label per trial "
                    f"({spikes.shape[0]},), got shape {conditions.shape}."
                )
            object.__setattr__(self, "conditions", conditions)

    @property
    def num_trials(self) -> int:
        return self.spikes.shape[0]

    @property
    def num_bins(self) -> int:
        return self.spikes.shape[1]

    @property
    def num_neurons(self) -> int:
        return self.spikes.shape[2]

    def subset(self, index) -> "SpikeTrials":
        """The trials at `index` (an index array or boolean mask)."""

        def pick(x):
            return None if x is None else x[index]

        return dataclasses.replace(
            self,
            spikes=self.spikes[index],
            rates=pick(self.rates),
            behavior=pick(self.behavior),
            conditions=pick(self.conditions),
        )


def default_heldout_neurons(num_neurons: int) -> int:
    """A quarter of the neurons, rounded (at least one, and one fewer than all): about
    the Neural Latents Benchmark's share (MC_Maze holds out 45 of 182)."""
    return int(min(max(1, round(num_neurons / 4)), num_neurons - 1))


@dataclasses.dataclass(frozen=True)
class SpikingDataset:
    """Training and test trials, with the held-out neurons and forward bins marked.

    **Fields:**

    - `train`, `test`: [`sdekit.data.SpikeTrials`][] with the same neurons and bins.
    - `heldout_neurons`: $K$: the last $K$ neurons are held out, `0 <= K < neurons`.
    - `forward_bins`: $F$: the last $F$ bins of each trial are the forward-prediction
        window, `0 <= F < bins`.
    - `bin_ms`: the bin width in milliseconds, when known (reports only).
    - `name`: the data set's name.
    """

    train: SpikeTrials
    test: SpikeTrials
    heldout_neurons: int = 0
    forward_bins: int = 0
    bin_ms: float | None = None
    name: str = "spikes"

    def __post_init__(self):
        for split in (self.train, self.test):
            if not isinstance(split, SpikeTrials):
                raise TypeError("`train` and `test` must be sdekit.data.SpikeTrials.")
        if self.train.spikes.shape[1:] != self.test.spikes.shape[1:]:
            raise ValueError(
                f"{self.name}: training and test trials must have the same bins and "
                f"neurons, got {self.train.spikes.shape[1:]} and "
                f"{self.test.spikes.shape[1:]} (bins, neurons)."
            )
        k, f = self.heldout_neurons, self.forward_bins
        n, t = self.num_neurons, self.num_bins
        if not isinstance(k, (int, np.integer)) or not 0 <= k < n:
            raise ValueError(
                f"--heldout-neurons must be an integer in [0, {n - 1}] (the data have "
                f"{n} neurons and at least one must stay held-in), got {k!r}."
            )
        if not isinstance(f, (int, np.integer)) or not 0 <= f < t:
            raise ValueError(
                f"--forward-bins must be an integer in [0, {t - 1}] (the trials have "
                f"{t} bins and at least one must be observed), got {f!r}."
            )
        for field in ("rates", "behavior", "conditions"):
            if (getattr(self.train, field) is None) != (
                getattr(self.test, field) is None
            ):
                raise ValueError(
                    f"{self.name}: `{field}` is given for one split only; give it for "
                    "both training and test trials, or for neither."
                )
        object.__setattr__(self, "heldout_neurons", int(k))
        object.__setattr__(self, "forward_bins", int(f))

    @property
    def num_neurons(self) -> int:
        return self.train.num_neurons

    @property
    def num_heldin(self) -> int:
        return self.num_neurons - self.heldout_neurons

    @property
    def num_bins(self) -> int:
        """Bins per trial, the forward window included."""
        return self.train.num_bins

    @property
    def observed_bins(self) -> int:
        """Bins per trial before the forward window: what the encoder sees."""
        return self.num_bins - self.forward_bins

    def heldin(self, trials: SpikeTrials) -> np.ndarray:
        """`(trials, observed_bins, heldin)` counts: the model's input."""
        return trials.spikes[:, : self.observed_bins, : self.num_heldin]

    def heldout(self, trials: SpikeTrials) -> np.ndarray:
        """`(trials, observed_bins, heldout)` counts that co-bps scores."""
        return trials.spikes[:, : self.observed_bins, self.num_heldin :]

    def forward(self, trials: SpikeTrials) -> np.ndarray:
        """`(trials, forward_bins, neurons)` counts that fp-bps scores."""
        return trials.spikes[:, self.observed_bins :, :]


def _optional(arrays, key):
    return arrays[key] if key in arrays else None


def load_spikes(
    path: str | os.PathLike,
    *,
    heldout_neurons: int | None = None,
    forward_bins: int = 0,
    bin_ms: float | None = None,
) -> SpikingDataset:
    """Read spiking data from an NPZ file in the layout of this module's docstring
    (see [`sdekit.data.SpikeTrials`][]).

    **Arguments:**

    - `path`: the `.npz` file.
    - `heldout_neurons`: hold out the last $K$ neurons; default
        [`sdekit.data.default_heldout_neurons`][] (a quarter).
    - `forward_bins`: the last $F$ bins of each trial are the forward window.
    - `bin_ms`: the bin width, for reports.

    **Returns:** a [`sdekit.data.SpikingDataset`][].
    """
    from ._read import read_npz

    name = os.path.basename(os.fspath(path))
    arrays = read_npz(
        path,
        required=("train_spikes", "test_spikes"),
        optional=(
            "train_rates",
            "test_rates",
            "train_behavior",
            "test_behavior",
            "train_conditions",
            "test_conditions",
        ),
    )
    splits = {}
    for split in ("train", "test"):
        splits[split] = SpikeTrials(
            arrays[f"{split}_spikes"],
            rates=_optional(arrays, f"{split}_rates"),
            behavior=_optional(arrays, f"{split}_behavior"),
            conditions=_optional(arrays, f"{split}_conditions"),
            name=f"{name}: {split}",
        )
    if heldout_neurons is None:
        heldout_neurons = default_heldout_neurons(splits["train"].num_neurons)
    return SpikingDataset(
        splits["train"],
        splits["test"],
        heldout_neurons=heldout_neurons,
        forward_bins=forward_bins,
        bin_ms=bin_ms,
        name=name,
    )


def save_spikes(path: str | os.PathLike, data: SpikingDataset) -> None:
    """Write a [`sdekit.data.SpikingDataset`][] to an NPZ file that
    [`sdekit.data.load_spikes`][] reads back (the held-out and forward split are not
    stored: pass them again when loading)."""
    arrays = {}
    for split, trials in (("train", data.train), ("test", data.test)):
        arrays[f"{split}_spikes"] = trials.spikes
        for field in ("rates", "behavior", "conditions"):
            value = getattr(trials, field)
            if value is not None:
                arrays[f"{split}_{field}"] = value
    np.savez(path, **arrays)
