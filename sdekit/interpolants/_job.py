"""The interpolant family's jobs as library calls (`sdekit fit --model interpolant`,
`evaluate`, `sample`, `logprob`): one configuration in, one report out."""

import dataclasses
import functools as ft
import math
import os
import pathlib
import time
from typing import Any, Literal

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax

from .. import train as _train
from .._families import read_config
from ..data import read_array, read_npz
from ..data._densities import load_digits, TOY_DENSITIES, toy_density
from ._coupling import IndependentCoupling, OTCoupling
from ._interpolant import INTERPOLANTS, make_interpolant
from ._likelihood import log_likelihood
from ._loss import interpolant_loss, pair_minibatch
from ._model import ACTIVATIONS, data_scaling, InterpolantModel, LOSSES
from ._sample import sample


FAMILY = "interpolants"
DATASETS = (*TOY_DENSITIES, "digits")


@dataclasses.dataclass(frozen=True)
class FitConfig:
    """Everything that determines a run; stored as the checkpoint's config.

    **Fields:**

    - `dataset`: a bundled set, one of [`sdekit.data.TOY_DENSITIES`][] (sampled,
        `num_train` points) or `"digits"`; or `None` with `data`.
    - `data`: the user's `.npy` file of shape `(n, d)`, or `.npz` with `x` `(n, d)`
        and optionally `label` `(n,)` (integers `0..k-1`).
    - `num_train`: training points drawn from a toy density.
    - `conditional`: train on the labels (digits, or an NPZ with `label`), for
        classifier-free guidance.
    - `interpolant`, `gamma`, `a`: see [`sdekit.interpolants.make_interpolant`][].
    - `loss`: `"velocity"`, `"denoiser"` or `"score"`.
    - `coupling`: `"independent"` or `"ot"` (minibatch OT, `ot_method`).
    - `steps`, `steps_per_call`, `batch_size`, `lr`: Adam steps in all (rounded up to
        whole epochs, passes over the training points), steps per compiled call of
        the trainer (at most an epoch's), examples per step, peak learning rate (cosine
        decay to 1% of it).
    - `width`, `depth`, `activation`, `time_features`: the network.
    - `t_clip`, `label_dropout`: see [`sdekit.interpolants.interpolant_loss`][].
    - `valid_fraction`: held-out share of the data (user's data and digits keep a
        test split of the same size as well).
    """

    model: str = "interpolant"
    dataset: str | None = "gaussian-mixture"
    data: str | None = None
    num_train: int = 50000
    conditional: bool = False
    interpolant: str = "linear"
    gamma: str | None = None
    a: float = 1.0
    loss: Literal["velocity", "denoiser", "score"] = "velocity"
    coupling: str = "independent"
    ot_method: Literal["exact", "sinkhorn", "hungarian"] = "exact"
    seed: int = 0
    steps: int = 60000
    steps_per_call: int = 500
    batch_size: int = 512
    lr: float = 2e-3
    width: int = 256
    depth: int = 3
    activation: str = "silu"
    time_features: int = 0
    t_clip: float = 1e-3
    label_dropout: float = 0.1
    valid_fraction: float = 0.1

    def checked(self) -> "FitConfig":
        """This config with its values checked (a `ValueError` naming the bad one)."""
        if (self.dataset is None) == (self.data is None):
            raise ValueError("Give exactly one of a bundled data set or a data file.")
        if self.dataset is not None and self.dataset not in DATASETS:
            raise ValueError(
                f"Unknown data set {self.dataset!r}; choose one of {', '.join(DATASETS)}."
            )
        if self.interpolant not in INTERPOLANTS:
            raise ValueError(
                f"Unknown interpolant {self.interpolant!r}; choose one of "
                f"{', '.join(INTERPOLANTS)}."
            )
        make_interpolant(self.interpolant, self.gamma, self.a)
        if self.loss not in LOSSES:
            raise ValueError(
                f"Unknown loss {self.loss!r}; choose one of {', '.join(LOSSES)}."
            )
        if self.coupling not in ("independent", "ot"):
            raise ValueError(
                f"Unknown coupling {self.coupling!r}; choose independent or ot."
            )
        OTCoupling(self.ot_method)
        if self.activation not in ACTIVATIONS:
            raise ValueError(
                f"Unknown activation {self.activation!r}; choose one of "
                f"{', '.join(ACTIVATIONS)}."
            )
        for name in (
            "num_train",
            "steps",
            "steps_per_call",
            "batch_size",
            "width",
            "depth",
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"`{name}` must be a positive integer, got {value!r}.")
        if not isinstance(self.time_features, int) or self.time_features < 0:
            raise ValueError("`time_features` must be a non-negative integer.")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"`lr` must be a positive number, got {self.lr!r}.")
        if not 0 <= self.t_clip < 0.5:
            raise ValueError(f"`t_clip` must be in [0, 0.5), got {self.t_clip}.")
        if not 0 <= self.label_dropout < 1:
            raise ValueError("`label_dropout` must be in [0, 1).")
        if not 0 < self.valid_fraction < 0.5:
            raise ValueError("`valid_fraction` must be in (0, 0.5).")
        return self

    @property
    def data_name(self) -> str:
        if self.dataset is not None:
            return self.dataset
        return os.path.splitext(os.path.basename(str(self.data)))[0]


@dataclasses.dataclass(frozen=True)
class JobData:
    """The splits of a run, in data coordinates, and the true density if known."""

    train: dict[str, np.ndarray]
    valid: dict[str, np.ndarray]
    test: dict[str, np.ndarray]
    num_classes: int
    density: Any = None


def _split(arrays: dict[str, np.ndarray], fraction: float, seed: int):
    n = len(arrays["x"])
    order = np.random.default_rng(seed).permutation(n)
    k = max(1, int(round(fraction * n)))
    pick = lambda idx: {name: a[idx] for name, a in arrays.items()}  # noqa: E731
    return pick(order[2 * k :]), pick(order[:k]), pick(order[k : 2 * k])


def read_points(
    path: str | os.PathLike, *, labels: bool = True
) -> dict[str, np.ndarray]:
    """A user's points: `.npy` (or CSV) of shape `(n, d)`, or `.npz` with `x` and
    optionally `label`; checked finite and of rank 2."""
    path = os.fspath(path)
    if path.lower().endswith(".npz"):
        arrays = read_npz(path, required=("x",), optional=("label",))
        if not labels:
            arrays.pop("label", None)
    else:
        arrays = {"x": read_array(path)}
    x = arrays["x"]
    if x.ndim != 2 or x.shape[0] < 1:
        raise ValueError(
            f"{path}: the points must be an array of shape (n, d) with n >= 1, got "
            f"shape {x.shape}; reshape images to (n, height * width)."
        )
    if not np.all(np.isfinite(x)):
        bad = int(np.sum(~np.all(np.isfinite(x), axis=1)))
        raise ValueError(f"{path}: {bad} rows hold NaN or infinite values; drop them.")
    arrays["x"] = x.astype(np.float32)
    if "label" in arrays:
        label = np.asarray(arrays["label"])
        if label.shape != (x.shape[0],) or not np.issubdtype(label.dtype, np.integer):
            raise ValueError(
                f"{path}: `label` must be {x.shape[0]} integers, got {label.dtype} "
                f"of shape {label.shape}."
            )
        if label.min() < 0:
            raise ValueError(f"{path}: labels must be 0, 1, ..., k-1.")
        arrays["label"] = label.astype(np.int32)
    return arrays


def load_job_data(config: FitConfig) -> JobData:
    """The run's data splits (deterministic given the config)."""
    if config.dataset in TOY_DENSITIES:
        density = toy_density(config.dataset)
        key = jr.fold_in(jr.key(config.seed), 1)
        k_train, k_valid, k_test = jr.split(key, 3)
        n_valid = max(1, int(config.valid_fraction * config.num_train))
        draw = lambda k, n: {"x": np.asarray(density.sample(k, n))}  # noqa: E731
        return JobData(
            draw(k_train, config.num_train),
            draw(k_valid, n_valid),
            draw(k_test, 20000),
            0,
            density,
        )
    if config.dataset == "digits":
        x_train, y_train, x_test, y_test = load_digits()
        train = {"x": x_train, "label": y_train}
        n_valid = max(1, int(config.valid_fraction * len(x_train)))
        valid = {name: a[:n_valid] for name, a in train.items()}
        train = {name: a[n_valid:] for name, a in train.items()}
        test = {"x": x_test, "label": y_test}
        num_classes = 10
    else:
        assert config.data is not None  # checked(): exactly one of dataset and data
        arrays = read_points(config.data, labels=config.conditional)
        train, valid, test = _split(arrays, config.valid_fraction, config.seed)
        num_classes = int(arrays["label"].max()) + 1 if "label" in arrays else 0
    if not config.conditional:
        for split in (train, valid, test):
            split.pop("label", None)
        num_classes = 0
    elif num_classes == 0:
        raise ValueError(
            "--conditional needs labels: an .npz with `label` beside `x`, or digits."
        )
    return JobData(train, valid, test, num_classes)


def build_model(config: FitConfig, train_x: np.ndarray, num_classes: int):
    """A freshly initialised model with the training data's scaling."""
    shift, scale = data_scaling(jnp.asarray(train_x))
    return InterpolantModel(
        make_interpolant(config.interpolant, config.gamma, config.a),
        train_x.shape[1],
        key=jr.fold_in(jr.key(config.seed), 2),
        loss=config.loss,
        independent=config.coupling == "independent",
        shift=shift,
        scale=scale,
        width=config.width,
        depth=config.depth,
        activation=config.activation,
        time_features=config.time_features,
        num_classes=num_classes,
    )


def coupling_of(config: FitConfig):
    if config.coupling == "independent":
        return IndependentCoupling()
    return OTCoupling(config.ot_method)


def default_out(config: FitConfig) -> str:
    """`runs/interpolant-<data>-seed<seed>`."""
    return os.path.join("runs", f"interpolant-{config.data_name}-seed{config.seed}")


def _stored_config(config: FitConfig) -> dict[str, Any]:
    return {"family": FAMILY, **dataclasses.asdict(config)}


def _mean_logprob(model, x, labels=None, *, hutchinson=False, key=None, chunk=2048):
    """Log-likelihoods of `x` in chunks of one compiled shape (the last one padded)."""
    jitted = eqx.filter_jit(log_likelihood)
    n = len(x)
    out = []
    for start in range(0, n, chunk):
        part = x[start : start + chunk]
        size = len(part)
        size_to = min(chunk, n) if n >= chunk else n
        pad = size_to - size
        part = np.concatenate([part, np.repeat(part[-1:], pad, 0)]) if pad else part
        lab = None
        if labels is not None:
            lab = labels[start : start + chunk]
            lab = np.concatenate([lab, np.repeat(lab[-1:], pad, 0)]) if pad else lab
        k = None if key is None else jr.fold_in(key, start)
        values = jitted(
            model, jnp.asarray(part), labels=lab, hutchinson=hutchinson, key=k
        )
        out.append(np.asarray(values)[:size])
    return np.concatenate(out)


def _evaluate(config: FitConfig, model, data: JobData) -> dict[str, Any]:
    test = data.test
    x = test["x"][:5000]
    labels = test.get("label")
    labels = None if labels is None else labels[:5000]
    if config.interpolant == "mirror":
        # The mirror interpolant carries the data to themselves: there is no base
        # density to change variables from, so no likelihood. The held-out loss (fixed
        # keys) is what can be compared between runs.
        batch = {"x": jnp.asarray(x)}
        if labels is not None:
            batch["label"] = jnp.asarray(labels)
        keys = jr.split(jr.key(config.seed), 4)
        loss = jnp.mean(
            jax.vmap(
                lambda k: interpolant_loss(
                    model,
                    batch,
                    k,
                    t_clip=config.t_clip,
                    coupling=IndependentCoupling(),
                )[0]
            )(keys)
        )
        return {"test_mean_logprob": None, "test_loss": float(loss), "num_test": len(x)}
    logp = _mean_logprob(model, x, labels)
    report: dict[str, Any] = {
        "test_mean_logprob": float(np.mean(logp)),
        "num_test": len(x),
    }
    if data.density is not None:
        truth = float(np.mean(np.asarray(data.density.log_prob(jnp.asarray(x)))))
        report["true_mean_logprob"] = truth
        report["logprob_gap"] = truth - report["test_mean_logprob"]
    return report


def fit_job(
    config: FitConfig,
    out: str | os.PathLike | None = None,
    *,
    progress: bool = True,
    resume: bool = False,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Train an interpolant on a data set and report its held-out log-likelihood.

    Training is [`sdekit.train.fit`][] with minibatches of `batch_size` training
    points, `steps_per_call` Adam steps (minibatches, coupling and all) in each
    compiled call, and as many epochs as `steps` needs. The validation loss (fixed
    keys) picks the model: the latest epoch's within one standard error of the lowest
    validation loss.

    **Returns:** a JSON-ready report: `model`, `dataset`, `seed`, `interpolant`,
    `loss`, `coupling`, `dim`, `num_classes`, `test_mean_logprob` (nats, exact
    divergence, up to 5000 test points), for a toy density also `true_mean_logprob`
    and `logprob_gap` (truth minus model), `steps`, `epochs`, `best_epoch`, `seconds`
    and `checkpoint`.
    """
    start = time.perf_counter()
    config = config.checked()
    out = default_out(config) if out is None else os.fspath(out)
    _train.check_checkpoint_dir(
        out,
        resume=resume,
        overwrite=overwrite,
        config=_stored_config(config),
        quiet=not progress,
    )
    data = load_job_data(config)
    model = build_model(config, data.train["x"], data.num_classes)
    coupling = coupling_of(config)

    def loss_fn(m, batch, key):
        return interpolant_loss(
            m,
            batch,
            key,
            coupling=coupling,
            t_clip=config.t_clip,
            label_dropout=config.label_dropout,
        )

    # The trainer's epochs: every step sees a full minibatch (the last partial one of
    # an epoch is dropped), or all the points when there are fewer than a batch.
    steps_per_epoch = max(1, len(data.train["x"]) // config.batch_size)
    epochs = math.ceil(config.steps / steps_per_epoch)
    schedule = optax.cosine_decay_schedule(
        config.lr, epochs * steps_per_epoch, alpha=0.01
    )
    valid_key = jr.fold_in(jr.key(config.seed), 4)

    @eqx.filter_jit
    def valid_loss(m, valid):
        # In minibatches of the training size (what an OT coupling is computed on),
        # with the same keys every epoch: two epochs' losses then differ by the model,
        # not by the draws. One pass costs about 3% of an epoch of the defaults' (four
        # cost 12%: the trainer validates after every epoch).
        n = len(valid["x"])
        size = min(n, config.batch_size)
        batches = jax.tree.map(
            lambda a: a[: n - n % size].reshape(n // size, size, *a.shape[1:]), valid
        )
        keys = jr.split(valid_key, n // size)
        losses = jax.vmap(lambda k, b: loss_fn(m, b, k)[0])(keys, batches)
        # Its standard error, from the spread of the minibatches' losses.
        count = losses.shape[0]
        spread = jnp.std(losses, ddof=1) if count > 1 else jnp.array(jnp.nan)
        return jnp.mean(losses), spread / jnp.sqrt(count)

    def evaluate(m, valid, key):
        loss, se = valid_loss(m, valid)
        return {"loss": loss, "loss_se": se}

    result = _train.fit(
        model,
        loss_fn,
        data.train,
        key=jr.fold_in(jr.key(config.seed), 0),
        optimizer=optax.adam(schedule),
        epochs=epochs,
        batch_size=config.batch_size,
        steps_per_call=config.steps_per_call,
        # An OT coupling's assignments for a whole call, solved together (in parallel).
        prepare_fn=None
        if coupling.independent
        else ft.partial(pair_minibatch, coupling=coupling),
        valid_data=data.valid,
        eval_fn=evaluate,
        # The kept model: the latest within one standard error of the best validation
        # loss. Picking the lowest one picks a fluctuation: on the 14-component mixture
        # it chose epoch 373 of 619, 0.027 nats short of the truth, where the last
        # epoch's model was 0.015 short (and better on fresh validation draws).
        best_tolerance="loss_se",
        checkpoint_dir=out,
        config=_stored_config(config),
        resume=resume,
        overwrite=overwrite,
        progress=progress,
        checkpoint_every=max(1, epochs // 10),
    )
    report = {
        "model": config.model,
        "dataset": config.data_name,
        "seed": config.seed,
        "interpolant": config.interpolant,
        "loss": config.loss,
        "coupling": config.coupling,
        "dim": int(data.train["x"].shape[1]),
        "num_classes": data.num_classes,
        **_evaluate(config, result.model, data),
        "steps": result.epochs_run * steps_per_epoch,
        "epochs": result.epochs_run,
        "best_epoch": result.best_epoch,
        "seconds": round(time.perf_counter() - start, 2),
        "checkpoint": out,
    }
    _train.save_report(out, report)
    return report


def load_run(checkpoint: str | os.PathLike):
    """`(config, model, data_or_None)` of a checkpoint written by
    [`sdekit.interpolants.fit_job`][] (the best model)."""
    path = pathlib.Path(checkpoint)
    stored = read_config(path)
    family = stored.pop("family", None)
    if family != FAMILY:
        raise ValueError(
            f"{path} holds a checkpoint of the {family!r} family, not an interpolant; "
            "use the checkpoint of an `sdekit fit --model interpolant` run."
        )
    fields = {f.name for f in dataclasses.fields(FitConfig)}
    config = FitConfig(**{k: v for k, v in stored.items() if k in fields})
    report = _train.load_report(path)
    data = None
    if report is not None and "dim" in report:
        dim, num_classes = report["dim"], report["num_classes"]
        like_x = np.zeros((2, dim), np.float32)
    else:
        data = load_job_data(config)
        like_x, num_classes = data.train["x"], data.num_classes
    like = build_model(config, like_x, num_classes)
    model = _train.load_model(path, like)
    return config, model, data


def evaluate_job(checkpoint: str | os.PathLike) -> dict[str, Any]:
    """Recompute a checkpoint's test report (held-out mean log-likelihood)."""
    start = time.perf_counter()
    config, model, data = load_run(checkpoint)
    if data is None:
        data = load_job_data(config)
    report = {
        "model": config.model,
        "dataset": config.data_name,
        "seed": config.seed,
        **_evaluate(config, model, data),
        "seconds": round(time.perf_counter() - start, 2),
        "checkpoint": os.fspath(checkpoint),
    }
    return report


def sample_job(
    checkpoint: str | os.PathLike,
    num: int,
    out: str | os.PathLike,
    *,
    seed: int = 0,
    sde: bool = False,
    eps: float = 1.0,
    steps: int | None = None,
    label: int | None = None,
    guidance: float | None = None,
) -> dict[str, Any]:
    """Draw `num` samples from a checkpoint's model and save them to `out` (`.npy`).

    **Returns:** `n`, `out`, `sampler` (`"ode"` or `"sde"`), `eps`, `seconds`.
    """
    start = time.perf_counter()
    if not (isinstance(num, int) and num >= 1):
        raise ValueError(f"-n must be a positive integer, got {num}.")
    out = os.fspath(out)
    if not out.endswith(".npy"):
        raise ValueError(f"--out {out}: samples are saved as .npy; name it *.npy.")
    if os.path.isdir(out):
        raise ValueError(f"--out {out} is a directory; give a file name.")
    if steps is not None and steps < 1:
        raise ValueError(f"--steps must be a positive integer, got {steps}.")
    if eps < 0 or not math.isfinite(eps):
        raise ValueError(f"--eps must be a number >= 0, got {eps}.")
    config, model, _ = load_run(checkpoint)
    if label is not None and not model.num_classes:
        raise ValueError(
            "--label needs a conditional model (sdekit fit ... --conditional)."
        )
    if label is not None and not 0 <= label < model.num_classes:
        raise ValueError(f"--label must be in 0..{model.num_classes - 1}, got {label}.")
    if guidance is not None and label is None:
        raise ValueError("--guidance needs --label (the class to guide to).")
    start_points = None
    if config.interpolant == "mirror":
        # Its samplers start at data points: the training points the run saw.
        train = load_job_data(config).train
        candidates = np.arange(len(train["x"]))
        if label is not None and "label" in train:
            candidates = candidates[train["label"] == label]
        rng = np.random.default_rng(seed)
        chosen = rng.choice(candidates, num, replace=num > len(candidates))
        start_points = train["x"][chosen]
    if sde and not model.has_score():
        raise ValueError(
            "--sde needs a score: this model was trained with an OT coupling or a "
            "non-Gaussian base and loss 'velocity'; retrain with --loss denoiser."
        )
    draw = eqx.filter_jit(
        lambda m, k, x0: sample(
            m,
            k,
            num,
            sde=sde,
            eps=eps,
            steps=steps,
            labels=label,
            guidance=guidance,
            start=x0,
        )
    )
    x = np.asarray(draw(model, jr.key(seed), start_points))
    parent = os.path.dirname(os.path.abspath(out))
    os.makedirs(parent, exist_ok=True)
    np.save(out, x)
    return {
        "n": num,
        "out": out,
        "sampler": "sde" if sde else "ode",
        "eps": eps if sde else None,
        "label": label,
        "guidance": guidance,
        "seconds": round(time.perf_counter() - start, 2),
    }


def logprob_job(
    checkpoint: str | os.PathLike,
    data: str | os.PathLike,
    *,
    hutchinson: bool = False,
    seed: int = 0,
    out: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """Log-density of the points in `data` under a checkpoint's model.

    **Returns:** `mean_logprob` (nats per point), `std_logprob`, `n`, `dim`,
    `divergence` (`"exact"` or `"hutchinson"`), `seconds`, and `out` when the
    per-point values were saved.
    """
    start = time.perf_counter()
    config, model, _ = load_run(checkpoint)
    if config.interpolant == "mirror":
        raise ValueError(
            f"{checkpoint} is a mirror interpolant, which carries the data to "
            "themselves: it has no base density, so no log-density. Fit a generative "
            "interpolant (--interpolant linear, trig, encdec or vp) for sdekit logprob."
        )
    arrays = read_points(data)
    x = arrays["x"]
    if x.shape[1] != model.dim:
        raise ValueError(
            f"{data}: the points have {x.shape[1]} columns, the model {model.dim}."
        )
    labels = arrays.get("label") if model.num_classes else None
    logp = _mean_logprob(
        model,
        x,
        labels,
        hutchinson=hutchinson,
        key=jr.key(seed) if hutchinson else None,
    )
    report = {
        "mean_logprob": float(np.mean(logp)),
        "std_logprob": float(np.std(logp)),
        "n": int(len(x)),
        "dim": int(model.dim),
        "divergence": "hutchinson" if hutchinson else "exact",
        "seconds": round(time.perf_counter() - start, 2),
    }
    if out is not None:
        np.save(os.fspath(out), logp)
        report["out"] = os.fspath(out)
    return report
