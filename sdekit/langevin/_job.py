"""`sdekit fit --model langevin-flow`, `sdekit evaluate` and `sdekit predict` as library
calls: one configuration in, one report out, shared by the command line, the notebook
and the benchmark."""

import dataclasses
import math
import os
import pathlib
import time
from typing import Any, Protocol

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np

from .. import train as _train
from .._families import read_config
from ..data import (
    check_spike_counts,
    load_nwb,
    load_spikes,
    lorenz_spikes,
    read_array,
    read_npz,
    SpikingDataset,
)
from ._dynamics import (
    DiscreteLangevinMap,
    ForcedLangevinDynamics,
    GRUDynamics,
    LangevinDynamics,
    SOLVERS,
)
from ._loss import make_loss, optimizer
from ._metrics import (
    _ratio_standard_error,
    _trial_bits,
    bits_per_spike,
    co_bps,
    condition_psth,
    fp_bps,
    psth_r2,
    rate_r2,
    velocity_r2,
)
from ._model import SequentialVAE
from ._potential import CoupledOscillatorPotential
from ._smoothing import smooth_spikes, smoothing_baseline


FAMILY = "langevin"
MODEL = "langevin-flow"
DATASETS = ("lorenz",)
DYNAMICS = ("langevin", "discrete")

# Network sizes: the defaults fit two CPU cores; "paper" is the official code's.
PRESETS = {
    "cpu": dict(hidden=64, groups=4, sites=8, size=64, heads=2, feedforward=128),
    "paper": dict(hidden=280, groups=4, sites=70, size=840, heads=2, feedforward=512),
}


@dataclasses.dataclass(frozen=True)
class FitConfig:
    """Everything that determines a run; stored as the checkpoint's `config.json`.

    **Fields:**

    - `model`: `"langevin-flow"`.
    - `dataset`: `"lorenz"` ([`sdekit.data.lorenz_spikes`][]), or `None` with `data`.
    - `data`: a spikes `.npz` ([`sdekit.data.load_spikes`][]) or an NWB file of the
        Neural Latents Benchmark ([`sdekit.data.load_nwb`][]).
    - `heldout_neurons`: hold out the last $K$ neurons (default: the NWB file's own
        flags, else a quarter); `forward_bins`: predict $F$ bins past the window.
    - `bin_ms`: the bin width for NWB files.
    - `seed`: seeds the split, the initialisation and training.
    - `dynamics`: `"langevin"` (the SDE, integrated by `solver`) or `"discrete"` (the
        official code's map, [`sdekit.langevin.DiscreteLangevinMap`][]).
    - `inferred_input`: let the encoder infer a force on the velocity, paid for by
        the pathwise KL ([`sdekit.langevin.ForcedLangevinDynamics`][]); `None`
        (default): on for `dynamics="langevin"`, off for the discrete map.
    - `solver`: `"align"` or `"should"`.
    - `preset`: `"cpu"` (default sizes for two CPU cores) or `"paper"` (encoder 280,
        latent 4 x 70, decoder 840 wide with 2 heads and feed-forward 512); the five
        size fields below override it.
    - `hidden`, `groups`, `sites`, `size`, `heads`, `feedforward`, `dropout`: the
        encoder's width, the latent's layout, the decoder's.
    - `bin_time`, `steps_per_bin`, `friction`, `temperature`: model time per bin,
        solver steps per bin, initial $\\gamma$ and $T$.
    - `keep`: coordinated dropout's keep probability.
    - `beta`, `ramp`: the KL weight and the share of training over which it ramps
        up from 0.
    - `lr`, `weight_decay`, `batch_size`: Adam with decoupled weight decay and
        reduce-on-plateau (see [`sdekit.langevin.optimizer`][]).
    - `steps`: optimiser steps of training, turned into epochs (`epochs` sets them
        directly); `patience`: early stopping on the validation score (`None`: off).
    - `valid_fraction`: the share of training trials held out for validation (and
        best-model selection).
    - `eval_passes`: stochastic passes averaged (in rate space) for the rates.
    - `baseline`: also train the deterministic-latent baseline (the same sequential
        VAE with a GRU generator) alongside, on the same batches.
    """

    model: str = MODEL
    dataset: str | None = "lorenz"
    data: str | None = None
    heldout_neurons: int | None = None
    forward_bins: int = 0
    bin_ms: float = 20.0
    seed: int = 0
    dynamics: str = "langevin"
    inferred_input: bool | None = None
    solver: str = "align"
    preset: str = "cpu"
    hidden: int | None = None
    groups: int | None = None
    sites: int | None = None
    size: int | None = None
    heads: int | None = None
    feedforward: int | None = None
    dropout: float = 0.05
    bin_time: float = 0.1
    steps_per_bin: int = 1
    friction: float = 1.0
    temperature: float = 1.0
    keep: float = 0.5
    beta: float = 1.0
    ramp: float = 0.25
    lr: float = 3e-3
    weight_decay: float = 1e-5
    batch_size: int = 64
    steps: int = 3000
    epochs: int | None = None
    patience: int | None = None
    valid_fraction: float = 0.1
    eval_passes: int = 16
    baseline: bool = True

    @property
    def forced(self) -> bool:
        """Whether the flow is pushed by an inferred force: `inferred_input`, or by
        default for the Langevin SDE. With the force the posterior can move the latent
        path, which an initial-state posterior cannot: on the Lorenz set it raised the
        rate $R^2$ from 0.927 to 0.944 at 1.2 times the training time
        (docs/langevin.md)."""
        if self.inferred_input is None:
            return self.dynamics == "langevin"
        return self.inferred_input

    def checked(self) -> "FitConfig":
        """This config with its values checked (a `ValueError` naming the bad one)."""
        if self.model != MODEL:
            raise ValueError(f"Unknown model {self.model!r}; the family has {MODEL!r}.")
        if (self.dataset is None) == (self.data is None):
            raise ValueError("Give exactly one of --dataset or --data.")
        if self.dataset is not None and self.dataset not in DATASETS:
            raise ValueError(
                f"Unknown data set {self.dataset!r}; bundled: {', '.join(DATASETS)} "
                "(or pass your own spikes with --data FILE.npz or FILE.nwb)."
            )
        if self.data is not None:
            suffix = os.path.splitext(str(self.data))[1].lower()
            if suffix not in (".npz", ".nwb"):
                raise ValueError(
                    f"--data {self.data}: expected a .npz file of spike counts or a "
                    ".nwb file of the Neural Latents Benchmark, got '{suffix}'."
                )
        if self.dynamics not in DYNAMICS:
            raise ValueError(
                f"--dynamics must be one of {', '.join(DYNAMICS)}, got {self.dynamics!r}."
            )
        if self.inferred_input is True and self.dynamics != "langevin":
            raise ValueError(
                "--inferred-input drives the Langevin SDE; it does not combine with "
                "--dynamics discrete."
            )
        if self.solver not in SOLVERS:
            raise ValueError(
                f"--solver must be one of {', '.join(SOLVERS)}, got {self.solver!r}."
            )
        if self.preset not in PRESETS:
            raise ValueError(
                f"--preset must be one of {', '.join(PRESETS)}, got {self.preset!r}."
            )
        integers = ("hidden", "groups", "sites", "size", "heads", "feedforward")
        for name in integers + ("steps_per_bin", "batch_size", "steps", "eval_passes"):
            value = getattr(self, name)
            if value is None:
                continue
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                flag = "--" + name.replace("_", "-")
                raise ValueError(f"{flag} must be a positive integer, got {value!r}.")
        for name in ("epochs", "patience"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ValueError(f"--{name} must be a positive integer, got {value!r}.")
        for name in ("heldout_neurons", "forward_bins"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 0):
                flag = "--" + name.replace("_", "-")
                raise ValueError(
                    f"{flag} must be a non-negative integer, got {value!r}."
                )
        for name in ("bin_ms", "bin_time", "friction", "temperature", "lr"):
            value = getattr(self, name)
            if not (
                isinstance(value, (int, float)) and math.isfinite(value) and value > 0
            ):
                flag = "--" + name.replace("_", "-")
                raise ValueError(f"{flag} must be a positive number, got {value!r}.")
        if not 0 < self.keep < 1:
            raise ValueError(f"--keep must be in (0, 1), got {self.keep!r}.")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"--dropout must be in [0, 1), got {self.dropout!r}.")
        if not (self.beta >= 0 and 0 <= self.ramp <= 1 and self.weight_decay >= 0):
            raise ValueError(
                "--beta and --weight-decay must be >= 0, --ramp in [0, 1]."
            )
        if not 0 < self.valid_fraction < 0.5:
            raise ValueError(
                f"--valid-fraction must be in (0, 0.5), got {self.valid_fraction!r}."
            )
        sizes = self.sizes
        if sizes["size"] % sizes["heads"]:
            raise ValueError(
                f"--size ({sizes['size']}) must be divisible by --heads "
                f"({sizes['heads']})."
            )
        return self

    @property
    def sizes(self) -> dict[str, int]:
        """The network sizes: the preset's, overridden by the fields that are set."""
        sizes = dict(PRESETS[self.preset])
        for name in sizes:
            if getattr(self, name) is not None:
                sizes[name] = getattr(self, name)
        return sizes

    @property
    def data_name(self) -> str:
        if self.dataset is not None:
            return self.dataset
        return os.path.basename(str(self.data))


def _validate_every(steps_per_epoch: int, epochs: int) -> int:
    """Epochs between validation passes: at least 16 optimiser steps apart (the Lorenz
    set's epoch is 17 steps: every epoch), but 8 passes or more in a run. On a small
    set an epoch is one step, and a validation pass after each was most of the time
    (150 trials: 0.17 s an epoch; a validation pass alone 0.12 s, timed apart)."""
    return max(1, min(math.ceil(16 / steps_per_epoch), epochs // 8))


def default_out(config: FitConfig) -> str:
    """`runs/langevin-flow-<data>-seed<seed>`, relative to the working directory."""
    stem = os.path.splitext(config.data_name)[0]
    return os.path.join("runs", f"{config.model}-{stem}-seed{config.seed}")


def load_job_data(config: FitConfig) -> SpikingDataset:
    """The run's data set (deterministic given the config)."""
    if config.dataset == "lorenz":
        return lorenz_spikes(
            seed=config.seed,
            heldout_neurons=config.heldout_neurons,
            forward_bins=config.forward_bins,
        )
    assert config.data is not None
    if str(config.data).lower().endswith(".nwb"):
        return load_nwb(
            config.data,
            bin_ms=config.bin_ms,
            forward_bins=config.forward_bins,
            heldout_neurons=config.heldout_neurons,
            seed=config.seed,
        )
    return load_spikes(
        config.data,
        heldout_neurons=config.heldout_neurons,
        forward_bins=config.forward_bins,
    )


class ModelPair(eqx.Module):
    """The Langevin flow and, optionally, the deterministic-latent baseline, trained
    side by side on the same batches (their parameters are disjoint, so the summed
    loss trains each on its own loss)."""

    flow: SequentialVAE
    baseline: SequentialVAE | None


class _NeuronCounts(Protocol):
    # What build_models reads of a data set (a SpikingDataset, or _PredictShapes).
    @property
    def num_heldin(self) -> int: ...

    @property
    def num_neurons(self) -> int: ...


def build_models(config: FitConfig, data: _NeuronCounts) -> ModelPair:
    """Freshly initialised models for `data` (a [`sdekit.data.SpikingDataset`][], or
    anything with its `num_heldin` and `num_neurons`), seeded by `config.seed`."""
    sizes = config.sizes
    key = jr.fold_in(jr.key(config.seed), 2)
    k_flow, k_baseline, k_gru = jr.split(key, 3)
    potential = CoupledOscillatorPotential(sizes["groups"], sizes["sites"])
    if config.dynamics == "discrete":
        dynamics = DiscreteLangevinMap(potential)
    elif config.forced:
        dynamics = ForcedLangevinDynamics(
            potential,
            bin_time=config.bin_time,
            steps_per_bin=config.steps_per_bin,
            solver=config.solver,
            friction=config.friction,
            temperature=config.temperature,
        )
    else:
        dynamics = LangevinDynamics(
            potential,
            bin_time=config.bin_time,
            steps_per_bin=config.steps_per_bin,
            solver=config.solver,
            friction=config.friction,
            temperature=config.temperature,
        )
    shared: dict[str, Any] = dict(
        num_heldin=data.num_heldin,
        num_neurons=data.num_neurons,
        hidden=sizes["hidden"],
        size=sizes["size"],
        heads=sizes["heads"],
        feedforward=sizes["feedforward"],
        dropout=config.dropout,
    )
    flow = SequentialVAE(dynamics, key=k_flow, **shared)
    baseline = None
    if config.baseline:
        # The same width of latent features as the flow's (z, v).
        generator = GRUDynamics(dynamics.feature_size, key=k_gru)
        baseline = SequentialVAE(generator, key=k_baseline, **shared)
    return ModelPair(flow, baseline)


def _as_float(spikes: np.ndarray) -> np.ndarray:
    return np.asarray(spikes, np.float32)


def _split_train(config: FitConfig, data: SpikingDataset):
    """Training and validation trials (a seeded `valid_fraction` of the training set)."""
    rng = np.random.default_rng(config.seed)
    order = rng.permutation(data.train.num_trials)
    num_valid = max(1, int(round(config.valid_fraction * len(order))))
    return np.sort(order[num_valid:]), np.sort(order[:num_valid])


def infer_rates(
    model: SequentialVAE,
    heldin: np.ndarray,
    num_bins: int,
    key,
    *,
    passes: int = 16,
    chunk: int = 128,
) -> np.ndarray:
    """Rates (spikes per bin) of all neurons in `num_bins` bins, from the held-in
    neurons' counts `heldin` `(trials, observed_bins, heldin)`: the mean of `exp` of
    the log-rates over `passes` stochastic passes (posterior samples of the initial
    state and of the latent noise), in inference mode (no dropout).

    The mean is taken in rate space, the posterior predictive mean of the rate (the
    official code averages log-rates, a geometric mean that is biased low). Trials go
    through in chunks of `chunk` (the last one padded), so that one compiled program
    serves any number of trials and passes.

    **Returns:** `(trials, num_bins, neurons)` float64.
    """
    if not (isinstance(passes, int) and passes >= 1):
        raise ValueError(f"`passes` must be a positive integer, got {passes!r}.")
    model = eqx.nn.inference_mode(model)
    # On one device, unsharded: a model straight from the trainer carries its mesh's
    # sharding and one loaded from a checkpoint none, and the compiled program is
    # keyed on it; placed alike, both share one program (`sdekit evaluate` and
    # `predict` after a fit in the same process compile nothing).
    params, static = eqx.partition(model, eqx.is_array)
    model = eqx.combine(jax.device_put(params, jax.devices()[0]), static)
    heldin = np.asarray(heldin, np.float32)
    out = []
    for index, start in enumerate(range(0, heldin.shape[0], chunk)):
        part = heldin[start : start + chunk]
        count = part.shape[0]
        if count < chunk:
            pad = np.zeros((chunk - count, *part.shape[1:]), part.dtype)
            part = np.concatenate([part, pad])
        count_passes = jnp.asarray(passes, jnp.int32)  # an array: traced, not static
        rates = _mean_rates(
            model, jnp.asarray(part), num_bins, jr.fold_in(key, index), count_passes
        )
        out.append(np.asarray(rates, np.float64)[:count])
    return np.concatenate(out)


@eqx.filter_jit
def _mean_rates(model, heldin, num_bins, key, passes):
    # `passes` is traced (a while loop): one program for any number of passes.
    def one(i, total):
        log_rates, _ = model(heldin, num_bins, key=jr.fold_in(key, i))
        return total + jnp.exp(log_rates)

    start = jnp.zeros((heldin.shape[0], num_bins, model.num_neurons), heldin.dtype)
    total = jax.lax.fori_loop(0, passes, one, start)
    return total / passes.astype(total.dtype)


def _scored(data: SpikingDataset, array: np.ndarray) -> dict[str, np.ndarray]:
    """The part of a `(trials, bins, neurons)` array that each validation metric
    scores: co-bps the held-out neurons, fp-bps the forward bins, `heldin_bps` the
    held-in counts of the observed bins."""
    observed, heldin = data.observed_bins, data.num_heldin
    parts = {}
    if data.heldout_neurons:
        parts["co_bps"] = array[:, :observed, heldin:]
    if data.forward_bins:
        parts["fp_bps"] = array[:, observed:]
    parts["heldin_bps"] = array[:, :observed, :heldin]
    return parts


def _validation_score(
    data: SpikingDataset, rates: np.ndarray, spikes: np.ndarray
) -> dict:
    """Validation metrics of one model: the bits per spike of each part that
    `_scored` names (co-bps and fp-bps are bits per spike of their parts)."""
    targets = _scored(data, spikes)
    return {
        metric: bits_per_spike(part, targets[metric])
        for metric, part in _scored(data, rates).items()
    }


def _monitor(data: SpikingDataset) -> str:
    if data.heldout_neurons:
        return "co_bps"
    if data.forward_bins:
        return "fp_bps"
    return "heldin_bps"


def _score_standard_error(
    data: SpikingDataset, rates: list[np.ndarray], spikes: np.ndarray
) -> float:
    """The standard error, over validation trials, of the models' mean monitored bits
    per spike (all are ratios with the same spike count, so their mean is one ratio
    of the models' mean bits saved per trial)."""
    monitor = _monitor(data)
    target = _scored(data, spikes)[monitor]
    per_model = [_trial_bits(_scored(data, r)[monitor], target) for r in rates]
    bits = np.mean([saved for saved, _ in per_model], axis=0)
    return _ratio_standard_error(bits, per_model[0][1])


def _test_key(config: FitConfig):
    # Fixed, so that `sdekit evaluate` reproduces the figures of `sdekit fit` exactly.
    return jr.fold_in(jr.key(config.seed), 1)


def _test_rates_key(config: FitConfig):
    # The key of the test trials' rates, shared by evaluation and `sdekit predict`.
    return jr.fold_in(_test_key(config), 0)


def _true_psth(data: SpikingDataset) -> tuple[np.ndarray, np.ndarray]:
    """The conditions' true PSTHs over the observed bins: the mean true rates of all
    the condition's trials when the rates are known, else the mean of their spikes
    smoothed with a Gaussian of 1.5 bins (30 ms at 20 ms bins, the benchmark's).
    Trials of a split without condition labels (an NPZ file may label only its test
    trials) do not count."""
    observed = data.observed_bins
    values, conditions = [], []
    for trials in (data.train, data.test):
        if trials.conditions is None:
            continue
        if trials.rates is not None:
            values.append(trials.rates[:, :observed])
        else:
            values.append(smooth_spikes(trials.spikes[:, :observed], 1.5))
        conditions.append(trials.conditions)
    return condition_psth(np.concatenate(values), np.concatenate(conditions))


def _model_metrics(
    data: SpikingDataset, train_rates: np.ndarray | None, test_rates: np.ndarray
) -> dict[str, float]:
    """The test metrics of one model's rates (all neurons; the observed bins, and the
    forward ones when the rates cover them)."""
    observed, heldin = data.observed_bins, data.num_heldin
    test = data.test
    out: dict[str, float] = {}
    if data.heldout_neurons:
        out["co_bps"] = co_bps(
            test_rates[:, :observed, heldin:], test.spikes[:, :observed, heldin:]
        )
    if data.forward_bins and test_rates.shape[1] == data.num_bins:
        out["fp_bps"] = fp_bps(test_rates[:, observed:], test.spikes[:, observed:])
    if test.rates is not None:
        out["rate_r2"] = rate_r2(test_rates[:, :observed], test.rates[:, :observed])
    if (
        test.behavior is not None
        and data.train.behavior is not None
        and train_rates is not None
    ):
        out["vel_r2"] = velocity_r2(
            train_rates[:, :observed],
            data.train.behavior[:, :observed],
            test_rates[:, :observed],
            test.behavior[:, :observed],
        )
    if test.conditions is not None:
        psth, labels = _true_psth(data)
        out["psth_r2"] = psth_r2(
            test_rates[:, :observed], test.conditions, psth, labels
        )
    return out


def _rates(config, model, data, trials, key):
    return infer_rates(
        model,
        _as_float(data.heldin(trials)),
        data.num_bins,
        key,
        passes=config.eval_passes,
    )


def _evaluate(config: FitConfig, models: ModelPair, data: SpikingDataset) -> dict:
    key = _test_key(config)
    need_train = data.test.behavior is not None
    report: dict[str, Any] = {}
    for name, model in (("flow", models.flow), ("deterministic", models.baseline)):
        if model is None:
            continue
        test_rates = _rates(config, model, data, data.test, _test_rates_key(config))
        train_rates = (
            _rates(config, model, data, data.train, jr.fold_in(key, 1))
            if need_train
            else None
        )
        report[name] = _model_metrics(data, train_rates, test_rates)
    smoothing = smoothing_baseline(data, seed=config.seed)
    # The smoothing baseline covers the observed bins only (no forward prediction).
    report["smoothing"] = {
        **_model_metrics(data, smoothing.train_rates, smoothing.test_rates),
        "width_bins": smoothing.width,
    }
    return report


def _stored_config(config: FitConfig) -> dict[str, Any]:
    # The family name goes first, so that `sdekit evaluate --checkpoint` finds it.
    return {"family": FAMILY, **dataclasses.asdict(config)}


def _dynamics_summary(model: SequentialVAE) -> dict[str, Any]:
    dynamics = model.dynamics
    out: dict[str, Any] = {"dynamics": type(dynamics).__name__}
    if isinstance(dynamics, (LangevinDynamics, ForcedLangevinDynamics)):
        out["friction"] = float(jnp.mean(jnp.exp(dynamics.log_friction)))
        out["temperature"] = float(jnp.mean(jnp.exp(dynamics.log_temperature)))
    if isinstance(
        dynamics, (LangevinDynamics, ForcedLangevinDynamics, DiscreteLangevinMap)
    ):
        out["stiffness"] = float(dynamics.potential.stiffness)
    return out


def _report(config, data, evaluation, models) -> dict[str, Any]:
    flow = evaluation["flow"]
    report: dict[str, Any] = {
        "model": config.model,
        "dataset": config.data_name,
        "seed": config.seed,
        "neurons": data.num_neurons,
        "heldout_neurons": data.heldout_neurons,
        "bins": data.num_bins,
        "forward_bins": data.forward_bins,
        "train_trials": data.train.num_trials,
        "test_trials": data.test.num_trials,
        **flow,
        "baselines": {
            name: evaluation[name]
            for name in ("smoothing", "deterministic")
            if name in evaluation
        },
        **_dynamics_summary(models.flow),
    }
    return report


def fit_job(
    config: FitConfig,
    out: str | os.PathLike | None = None,
    *,
    progress: bool = True,
    resume: bool = False,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Train a latent Langevin flow (and its deterministic baseline) on spiking data and
    report the Neural Latents Benchmark metrics on the test trials.

    Loads the data ([`sdekit.langevin.load_job_data`][]), trains both models side by
    side with [`sdekit.train.fit`][] ([`sdekit.langevin.make_loss`][],
    [`sdekit.langevin.optimizer`][]; of the validation trials' score, the models'
    mean co-bps, the latest epoch within one standard error of the best is kept), fits
    the smoothing baseline, and evaluates all three on the test trials with a fixed
    key, so that
    [`sdekit.langevin.evaluate_job`][] reproduces the figures exactly.

    **Arguments:**

    - `config`: the run's [`sdekit.langevin.FitConfig`][].
    - `out`: the checkpoint directory (default [`sdekit.langevin.default_out`][]).
    - `progress`: show the trainer's progress.
    - `resume`: continue the run in `out` (same config).
    - `overwrite`: replace an sdekit checkpoint in `out` with a fresh run.

    **Returns:** a JSON-ready report: the flow's `co_bps` (with held-out neurons),
    `fp_bps` (with forward bins), `rate_r2` (with true rates), `vel_r2` (with
    behaviour), `psth_r2` (with conditions); `baselines` with the same metrics of the
    `smoothing` and `deterministic` baselines; the learnt `friction`, `temperature`
    and `stiffness`; `epochs`, `best_epoch`, `seconds` (wall time, data loading and
    evaluation included), `train_seconds` and `checkpoint`.
    """
    start = time.perf_counter()
    config = config.checked()
    out = default_out(config) if out is None else os.fspath(out)
    # Refuse a directory in the way before any work (data loading included).
    _train.check_checkpoint_dir(
        out, resume=resume, overwrite=overwrite, config=_stored_config(config)
    )
    data = load_job_data(config)
    models = build_models(config, data)
    fit_index, valid_index = _split_train(config, data)
    spikes = _as_float(data.train.spikes)
    train_data = {"spikes": spikes[fit_index]}
    valid_spikes = data.train.spikes[valid_index]
    batch_size = min(config.batch_size, len(fit_index))
    steps_per_epoch = max(1, len(fit_index) // batch_size)
    epochs = config.epochs or max(1, math.ceil(config.steps / steps_per_epoch))
    ramp_steps = int(round(config.ramp * epochs * steps_per_epoch))
    flow_loss = make_loss(
        num_heldin=data.num_heldin,
        observed_bins=data.observed_bins,
        keep=config.keep,
        beta=config.beta,
        ramp_steps=ramp_steps,
    )

    def loss_fn(pair: ModelPair, batch, key):
        k_flow, k_baseline = jr.split(key)
        loss, metrics = flow_loss(pair.flow, batch, k_flow)
        if pair.baseline is not None:
            baseline_loss, baseline_metrics = flow_loss(
                pair.baseline, batch, k_baseline
            )
            loss = loss + baseline_loss
            metrics = {**metrics, "baseline_nll": baseline_metrics["nll"]}
        return loss, metrics

    monitor = _monitor(data)
    valid_heldin = _as_float(data.heldin(data.train.subset(valid_index)))

    def eval_fn(pair: ModelPair, valid, key):
        del valid  # the validation trials are the NumPy arrays above
        scores, all_rates = {}, []
        members = [("flow", pair.flow), ("baseline", pair.baseline)]
        for index, (name, model) in enumerate(members):
            if model is None:
                continue
            rates = infer_rates(
                model, valid_heldin, data.num_bins, jr.fold_in(key, index), passes=4
            )
            all_rates.append(rates)
            for metric, value in _validation_score(data, rates, valid_spikes).items():
                scores[f"{name}_{metric}"] = value
        values = [v for k, v in scores.items() if k.endswith("_" + monitor)]
        scores["score"] = float(np.mean(values))
        scores["score_se"] = _score_standard_error(data, all_rates, valid_spikes)
        return scores

    result = _train.fit(
        models,
        loss_fn,
        train_data,
        key=jr.fold_in(jr.key(config.seed), 0),
        optimizer=optimizer(
            config.lr,
            weight_decay=config.weight_decay,
            steps_per_epoch=steps_per_epoch,
        ),
        epochs=epochs,
        batch_size=batch_size,
        valid_data={"spikes": _as_float(valid_spikes)},
        eval_fn=eval_fn,
        monitor="score",
        mode="max",
        # The one-standard-error rule: the latest models whose score the validation
        # trials cannot tell from the best. With few validation trials the best score
        # is often an early epoch's lucky draw (a 150-trial set kept epoch 76 of 3000,
        # mid-way through the KL ramp, at a rate R^2 of 0.58 where the last epoch's
        # flow had 0.67; docs/langevin.md).
        best_tolerance="score_se",
        patience=config.patience,
        validate_every=_validate_every(steps_per_epoch, epochs),
        checkpoint_dir=out,
        config=_stored_config(config),
        resume=resume,
        overwrite=overwrite,
        progress=progress,
        checkpoint_every=max(1, min(25, epochs // 4)),
    )
    train_seconds = time.perf_counter() - start
    evaluation = _evaluate(config, result.model, data)
    report = _report(config, data, evaluation, result.model)
    best = result.best_epoch
    report.update(
        valid=result.history[best]["valid"] if best is not None else None,
        epochs=result.epochs_run,
        best_epoch=best,
        train_seconds=round(train_seconds, 2),
        seconds=round(time.perf_counter() - start, 2),
        checkpoint=out,
    )
    _train.save_report(out, report)
    return report


def _stored_run(checkpoint: str | os.PathLike) -> tuple[pathlib.Path, FitConfig]:
    """The checkpoint's path and its configuration, or a one-line `ValueError` when
    it is not a Langevin-flow checkpoint."""
    path = pathlib.Path(checkpoint)
    stored = read_config(path)
    family = stored.pop("family", None)
    if family != FAMILY:
        raise ValueError(
            f"{path} holds a checkpoint of the {family} family, not a latent Langevin "
            "flow; pass it to `sdekit evaluate/predict --checkpoint`, which find its "
            "family."
        )
    try:
        return path, FitConfig(**stored).checked()
    except TypeError as e:
        raise ValueError(
            f"{path}/config.json does not hold a langevin-flow configuration ({e})."
        ) from None


def load_job_models(checkpoint: str | os.PathLike, data: SpikingDataset | None = None):
    """The best models of a checkpoint written by [`sdekit.langevin.fit_job`][], with
    its config (and its data, loaded again from the config unless given).

    **Returns:** `(models, config, data)`.
    """
    path, config = _stored_run(checkpoint)
    if data is None:
        data = load_job_data(config)
    like = build_models(config, data)
    models = _train.load_model(path, like)
    return models, config, data


def evaluate_job(checkpoint: str | os.PathLike) -> dict[str, Any]:
    """Recompute the test report of a checkpoint written by
    [`sdekit.langevin.fit_job`][]: the same data, the best models, the same keys, so
    the metrics equal those `sdekit fit` printed.

    **Returns:** the report, without the training figures (`epochs`, `seconds`, ...).
    """
    start = time.perf_counter()
    models, config, data = load_job_models(checkpoint)
    evaluation = _evaluate(config, models, data)
    report = _report(config, data, evaluation, models)
    report.update(
        seconds=round(time.perf_counter() - start, 2), checkpoint=str(checkpoint)
    )
    return report


def _read_counts(path: str) -> np.ndarray:
    if path.lower().endswith(".npz"):
        arrays = read_npz(path, required=("spikes",), what="--data")
        return arrays["spikes"]
    return read_array(path, what="--data")


def predict_job(
    checkpoint: str | os.PathLike, data: str | os.PathLike, out: str | os.PathLike
) -> dict[str, Any]:
    """Infer the rates of new trials with a checkpoint's Langevin flow, and save them.

    **Arguments:**

    - `checkpoint`: a directory written by [`sdekit.langevin.fit_job`][].
    - `data`: a `.npy` array (or a `.npz` with the array `spikes`) of counts shaped
        `(trials, bins, neurons)`, with the checkpoint's bins (the observed ones, or
        all) and neurons (the held-in ones, or all): the model reads the held-in
        neurons of the observed bins.
    - `out`: the `.npy` file for the rates, `(trials, bins, neurons)` in spikes per bin
        over all the model's bins (forward bins included) and neurons.

    **Returns:** a JSON-ready summary: `trials`, `bins`, `neurons`, `out`.
    """
    data, out = os.fspath(data), os.fspath(out)
    if not out.lower().endswith(".npy"):
        raise ValueError(f"--out {out}: the rates are saved as .npy; name it *.npy.")
    path, config = _stored_run(checkpoint)
    try:
        shapes = _train.load_report(path)
    except FileNotFoundError:
        shapes = None
    if shapes is not None:
        num_neurons, heldout = shapes["neurons"], shapes["heldout_neurons"]
        num_bins, forward = shapes["bins"], shapes["forward_bins"]
    else:
        dataset = load_job_data(config)
        num_neurons, heldout = dataset.num_neurons, dataset.heldout_neurons
        num_bins, forward = dataset.num_bins, dataset.forward_bins
    num_heldin, observed = num_neurons - heldout, num_bins - forward
    counts = check_spike_counts(_read_counts(data), f"--data {data}")
    if counts.shape[1] not in (observed, num_bins) or counts.shape[2] not in (
        num_heldin,
        num_neurons,
    ):
        raise ValueError(
            f"--data {data}: counts of shape {counts.shape}; the model reads "
            f"(trials, {observed} observed bins (or all {num_bins}), {num_heldin} "
            f"held-in neurons (or all {num_neurons}))."
        )
    heldin = counts[:, :observed, :num_heldin]
    like = _PredictShapes(num_heldin, num_neurons)
    models = _train.load_model(path, build_models(config, like))
    rates = infer_rates(
        models.flow,
        _as_float(heldin),
        num_bins,
        _test_rates_key(config),
        passes=config.eval_passes,
    )
    if os.path.dirname(out):
        os.makedirs(os.path.dirname(out), exist_ok=True)
    np.save(out, rates)
    return {
        "trials": int(rates.shape[0]),
        "bins": num_bins,
        "neurons": num_neurons,
        "out": out,
    }


@dataclasses.dataclass(frozen=True)
class _PredictShapes:
    # What build_models reads of a data set: enough to rebuild the models' shapes.
    num_heldin: int
    num_neurons: int
