"""The training loop shared by every model family."""

import functools as ft
import json
import operator
import os
import time
from collections.abc import Callable, Sequence
from typing import Any, Literal

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import jax.tree_util as jtu
import numpy as np
import optax
from jax.sharding import NamedSharding, PartitionSpec as P
from jaxtyping import Array, PRNGKeyArray, PyTree

from ._checkpoint import describe_run, read_checkpoint, save_checkpoint
from ._checkpoint_dir import ARGUMENTS, plan_checkpoint_dir
from ._distributed import check_same_everywhere, is_main_process, wait_for_everyone
from ._interrupted import deferred_interrupt, TrainingInterrupted
from ._progress import EpochProgress, postfix
from ._sharding import (
    _put,
    BATCH_AXIS,
    check_batch_size,
    constrain_replicated,
    host_local,
    make_mesh,
    num_devices,
    replicate,
    replicate_batch,
    shard_batch,
)


LossFn = Callable[[PyTree, PyTree, PRNGKeyArray], tuple[Array, dict[str, Array]]]
PrepareFn = Callable[[PyTree, PyTree, PRNGKeyArray], PyTree]
EvalFn = Callable[[PyTree, PyTree, PRNGKeyArray], dict[str, Any]]


class FitResult(eqx.Module):
    """What [`sdekit.train.fit`][] returns.

    **Fields:**

    - `model`: the best model by the monitored validation metric when `valid_data` was
        given (best-model restore), otherwise the model after the last epoch.
    - `history`: one dict per epoch run, oldest first, with keys `epoch` (0-based),
        `train` (mean loss and metrics over the epoch's steps), `valid` (validation
        metrics, or `None` without `valid_data`) and `seconds` (wall time of the
        epoch's training and validation).
    - `best_epoch`: the 0-based epoch of `model` when a best was tracked, so that
        `history[best_epoch]` is its entry; `None` otherwise.
    - `best_metric`: the monitored metric at `best_epoch`, or `None`.
    - `stopped_early`: whether early stopping ended training before `epochs`.
    - `epochs_run`: the number of epochs completed, counting those of a resumed run.
    """

    model: PyTree
    history: list[dict[str, Any]]
    best_epoch: int | None
    best_metric: float | None
    stopped_early: bool
    epochs_run: int


def _check_int(value: Any, name: str, minimum: int) -> int:
    try:
        value = operator.index(value)
    except TypeError:
        raise ValueError(
            f"`{name}` must be an integer >= {minimum}, got {value!r}."
        ) from None
    if value < minimum:
        raise ValueError(f"`{name}` must be an integer >= {minimum}, got {value}.")
    return value


def _check_data(data: PyTree, name: str) -> tuple[PyTree, int]:
    """Check that `data` is a non-empty PyTree of arrays sharing their leading axis.

    **Returns:**

    `data` with non-array leaves converted to NumPy, and the number of examples.
    """
    data = jtu.tree_map(
        lambda x: x if isinstance(x, (jax.Array, np.ndarray)) else np.asarray(x), data
    )
    leaves = jtu.tree_leaves_with_path(data)
    if len(leaves) == 0:
        raise ValueError(
            f"`{name}` contains no arrays. Pass a PyTree of arrays whose leading axis "
            "indexes examples, e.g. `(x, y)` with `x.shape[0] == y.shape[0]`."
        )
    for path, x in leaves:
        if x.ndim == 0:
            raise ValueError(
                f"`{name}{jtu.keystr(path)}` is a scalar, but every leaf of `{name}` "
                "needs a leading axis indexing examples."
            )
    sizes = {x.shape[0] for _, x in leaves}
    if len(sizes) > 1:
        shapes = ", ".join(f"{name}{jtu.keystr(p)}: {x.shape}" for p, x in leaves)
        raise ValueError(
            f"The leaves of `{name}` must all have the same leading (example) axis "
            f"length, but their shapes are {shapes}. Give every array one row per "
            "example."
        )
    (size,) = sizes
    if size == 0:
        raise ValueError(f"`{name}` is empty: its arrays have 0 examples.")
    return data, size


def _strong(tree: PyTree) -> PyTree:
    # A weakly typed leaf (e.g. from `jnp.asarray(1.0)`) comes back strongly typed from
    # the first step, which would retrace the step on the second; fix the type upfront.
    return jtu.tree_map(
        lambda x: (
            jnp.asarray(x, dtype=x.dtype)
            if isinstance(x, jax.Array) and x.weak_type
            else x
        ),
        tree,
    )


def _place(tree: PyTree, mesh) -> PyTree:
    return replicate(_strong(tree), mesh)


def _loss_and_metrics(
    loss_fn: LossFn, model: PyTree, batch: PyTree, key: PRNGKeyArray
) -> tuple[Array, dict[str, Array]]:
    """Call `loss_fn` and check its output at trace time."""
    out = loss_fn(model, batch, key)
    if not (isinstance(out, tuple) and len(out) == 2):
        raise ValueError(
            "`loss_fn` must return a pair `(loss, metrics)`: a scalar loss and a dict "
            "of scalar metrics. Return `(loss, {})` when there are no metrics."
        )
    loss, metrics = out
    if jnp.shape(loss) != ():
        raise ValueError(
            f"`loss_fn` must return a scalar loss, but it has shape {jnp.shape(loss)}. "
            "Reduce it over the batch, e.g. with `jnp.mean`."
        )
    if not isinstance(metrics, dict):
        raise ValueError(
            "The second output of `loss_fn` must be a dict of scalar metrics, got "
            f"{type(metrics).__name__}. Return `(loss, {{}})` when there are none."
        )
    if "loss" in metrics:
        raise ValueError(
            "`loss_fn`'s metrics dict has the key 'loss', which is reserved for the "
            "loss itself. Rename that metric."
        )
    for name, value in metrics.items():
        if jnp.shape(value) != ():
            raise ValueError(
                f"Metric {name!r} returned by `loss_fn` must be a scalar, but has "
                f"shape {jnp.shape(value)}."
            )
    return loss, metrics


def _host_mean(
    outputs: list[dict[str, Any]], weights: Sequence[float] | None = None
) -> dict[str, float]:
    """Weighted mean of a list of metric dicts, as Python floats.

    One `device_get` for the whole list: the only host synchronisation of an epoch.
    """
    host = jax.device_get(outputs)
    w = np.ones(len(host)) if weights is None else np.asarray(weights, np.float64)
    return {
        name: float(
            sum(wi * np.float64(out[name]) for wi, out in zip(w, host)) / w.sum()
        )
        for name in host[0]
    }


def _epoch_mean(outputs: list[dict[str, Any]]) -> dict[str, float]:
    """Mean of the training metrics of an epoch's steps, as Python floats.

    Each output holds one step's scalars or a group's stacked values (one per step);
    every step counts once. One `device_get`: the epoch's only host synchronisation.
    """
    host = jax.device_get(outputs)
    return {
        name: float(
            np.mean(np.concatenate([np.ravel(np.float64(out[name])) for out in host]))
        )
        for name in host[0]
    }


def shard_steps(batches: PyTree, mesh) -> PyTree:
    """Place minibatches stacked along a new leading (step) axis, `(steps, batch, ...)`,
    with each one split across `mesh` along its batch axis, the second."""
    sharding = NamedSharding(mesh, P(None, BATCH_AXIS))
    return jtu.tree_map(lambda x: _put(x, mesh, sharding), batches)


def _to_floats(metrics: Any) -> dict[str, float]:
    if not isinstance(metrics, dict):
        raise ValueError(
            f"`eval_fn` must return a dict of scalar metrics, got "
            f"{type(metrics).__name__}."
        )
    out = {}
    for name, value in jax.device_get(metrics).items():
        if np.shape(value) != ():
            raise ValueError(
                f"Metric {name!r} returned by `eval_fn` must be a scalar, but has "
                f"shape {np.shape(value)}."
            )
        out[name] = float(value)
    return out


def _default_evaluator(loss_fn: LossFn, batch_size: int, mesh) -> EvalFn:
    """Mean of `loss_fn`'s loss and metrics over a data set, in batches.

    Batch results are weighted by batch size, so a loss that is a mean over examples
    gives exactly its mean over the whole data set.
    """

    @eqx.filter_jit
    def eval_step(model, batch, key, index):
        loss, metrics = _loss_and_metrics(loss_fn, model, batch, jr.fold_in(key, index))
        return {"loss": loss, **metrics}

    def evaluate(model, data, key):
        (size,) = {x.shape[0] for x in jtu.tree_leaves(data)}
        outputs, weights = [], []
        for index, start in enumerate(range(0, size, batch_size)):
            batch = jtu.tree_map(lambda x: x[start : start + batch_size], data)
            count = min(batch_size, size - start)
            # A trailing partial batch need not split evenly over the devices, so it is
            # replicated instead; it costs one extra compilation, never a wrong mean.
            if count % num_devices(mesh) == 0:
                batch = shard_batch(batch, mesh)
            else:
                batch = replicate_batch(batch, mesh)
            outputs.append(eval_step(model, batch, key, np.uint32(index)))
            weights.append(count)
        return _host_mean(outputs, weights)

    return evaluate


def _within(value: float, best: float | None, tolerance: float, mode: str) -> bool:
    if np.isnan(value) or best is None or tolerance <= 0:
        return False
    return value <= best + tolerance if mode == "min" else value >= best - tolerance


def _tolerance(best_tolerance: float | str, valid_metrics: dict[str, float]) -> float:
    if not isinstance(best_tolerance, str):
        return float(best_tolerance)
    if best_tolerance not in valid_metrics:
        raise ValueError(
            f"`best_tolerance={best_tolerance!r}` is not among the validation metrics "
            f"{sorted(valid_metrics)}. Pass a number, or the name of one of those."
        )
    value = float(valid_metrics[best_tolerance])
    return value if np.isfinite(value) else 0.0


def _improved(value: float, best: float | None, mode: str) -> bool:
    if np.isnan(value):
        return False
    if best is None:
        return True
    return value < best if mode == "min" else value > best


def _permutation(key: PRNGKeyArray, n: int) -> np.ndarray:
    """A permutation of `range(n)` drawn by NumPy from `key`'s bits: the same on every
    process for the same key. `jr.permutation` sorts on the device, 250 ms for 307200
    examples on two CPU cores against 12 ms here: at hundreds of small steps per
    compiled call it was a third of the epoch."""
    seed = np.asarray(jax.random.key_data(key)).ravel()
    return np.random.default_rng(seed).permutation(n)


def _host_copy(tree: PyTree) -> PyTree:
    # What process 0 can serialise: arrays that span processes as local NumPy copies.
    return jtu.tree_map(host_local, tree)


def fit(
    model: PyTree,
    loss_fn: LossFn,
    train_data: PyTree,
    *,
    key: PRNGKeyArray,
    optimizer: optax.GradientTransformation | None = None,
    epochs: int = 100,
    batch_size: int = 128,
    valid_data: PyTree | None = None,
    eval_fn: EvalFn | None = None,
    monitor: str = "loss",
    mode: Literal["min", "max"] = "min",
    patience: int | None = None,
    checkpoint_dir: str | os.PathLike | None = None,
    config: dict[str, Any] | None = None,
    resume: bool = True,
    overwrite: bool = False,
    progress: bool = True,
    devices: Sequence[jax.Device] | None = None,  # pyright: ignore[reportInvalidTypeForm]
    checkpoint_every: int = 1,
    steps_per_call: int = 1,
    prepare_fn: PrepareFn | None = None,
    best_tolerance: float | str = 0.0,
    validate_every: int = 1,
) -> FitResult:
    """Train `model` by minibatch gradient descent on `loss_fn`.

    Each epoch draws a permutation of the training examples (by NumPy, seeded from a
    key folded from `key` and the epoch number with `jr.fold_in`), and takes one
    optimiser step per minibatch. When there is more than one minibatch, the last
    partial one is dropped, so every step has the same shape and the step compiles
    once; the dropped examples differ from epoch to epoch. With fewer than
    `batch_size` examples, each epoch is one step on all of them. The key of every step
    depends only on `(key, epoch, step)`, so a resumed run takes exactly the steps of
    an uninterrupted one.

    The step (`eqx.filter_value_and_grad`, the optax update, `eqx.apply_updates`) is a
    single `eqx.filter_jit` function. With `steps_per_call=K > 1`, the steps of an
    epoch run K at a time in one compiled call: the host gathers K consecutive
    minibatches (the same minibatches and step keys as with `K = 1`), stacks them on a
    new leading axis, and a `jax.lax.scan` takes the K steps. A small model's step can
    cost less than calling a compiled function from Python; this leaves one call per K
    steps (timings in the [benchmarks](../benchmarks.md#stochastic-interpolants)). The
    results are those of `K = 1` up to the order of floating-point operations, so
    `steps_per_call` is not part of what a resumed run must repeat.

    The steps run data-parallel over `devices`: each minibatch is split along its
    batch axis over a one-dimensional mesh with axis `"batch"`, the model and optimiser
    state are replicated, and XLA partitions the step. Trainable leaves are `eqx.is_inexact_array`; other leaves are left alone.
    After [`sdekit.train.init_distributed`][] the mesh spans the devices of every
    process: each process must call `fit` with the same arguments (the same data), and
    process 0 alone writes checkpoints and progress.

    After each epoch with `valid_data` (or every `validate_every` epochs, and after the
    last), the model is evaluated in inference mode (`eqx.nn.inference_mode`), the
    best model by `monitor` is kept, and training stops once `patience` epochs pass
    without improvement (a NaN never improves).

    **Checkpoint directory.** `checkpoint_dir` follows the rule of
    [`sdekit.train.check_checkpoint_dir`][], checked before any work: a new or empty
    directory starts a fresh run; a checkpoint of the same run (same `config`, `key`,
    batch size and number of examples) is continued when `resume=True`; any checkpoint
    is replaced, at the new run's first save, when `overwrite=True`; a checkpoint
    without either, a checkpoint of another run with `resume=True`, a file or a
    directory that is not a checkpoint are refused with a `ValueError`.

    **Interruption.** A first Ctrl-C (`SIGINT`, in the main thread) is acted on when
    the compiled call under way returns, a second one at once. `fit` then saves the
    last finished epoch (when it has a `checkpoint_dir` and that epoch was not saved
    yet) and raises [`sdekit.train.TrainingInterrupted`][], which says where the
    checkpoint is and how many epochs it holds. The unfinished epoch is lost: its minibatches would not
    replay identically from a checkpoint taken in its middle. In a multi-process run
    no extra checkpoint is written (the processes may stop at different steps); the
    last regular one is resumed.

    **Arguments:**

    - `model`: the model, any PyTree (usually an `eqx.Module`).
    - `loss_fn`: pure function `loss_fn(model, batch, key) -> (loss, metrics)` with a
        scalar `loss` and a dict of scalar `metrics` (the name `"loss"` is reserved).
        `batch` has the PyTree structure of `train_data`.
    - `train_data`: PyTree of arrays whose leading axes all index the examples.
    - `key`: a JAX PRNG key, the only source of randomness. Resume with the same key.
    - `optimizer`: an `optax.GradientTransformation` (learning-rate schedules live
        inside it). Defaults to `optax.adamw(1e-3)`.
    - `epochs`: the number of passes over `train_data`.
    - `batch_size`: examples per step (over all devices of all processes); must be
        divisible by the number of devices.
    - `valid_data`: optional validation data, structured like `train_data`.
    - `eval_fn`: optional `eval_fn(model, valid_data, key) -> metrics`, called with
        the model in inference mode and the same key every epoch. Defaults to the mean
        of `loss_fn`'s loss and metrics over `valid_data`, in batches of `batch_size`.
    - `monitor`: the validation metric that picks the best model.
    - `mode`: `"min"` or `"max"`: whether a smaller or larger `monitor` is better.
    - `best_tolerance`: the model kept as the best is the latest whose `monitor` is
        within this much of the best value seen so far (default 0: the epoch of that
        value). A number, or the name of a validation metric that gives it each epoch,
        such as the standard error of `monitor`: among epochs that the validation data
        cannot tell apart, the later (more converged) model is kept, not the one whose
        value was lowest by chance (the one-standard-error rule). Early stopping still
        counts the epochs since the best value improved.
    - `patience`: stop after this many epochs without improvement. `None` (default)
        never stops early. Requires `valid_data`.
    - `validate_every`: evaluate on `valid_data` (and choose the best model) every
        this many epochs and after the last; the epochs between have `"valid": None`
        in the history. When an epoch is a step or two, evaluating after each can cost
        more than the training.
    - `checkpoint_dir`: if given, a checkpoint directory written atomically every
        `checkpoint_every` epochs and after the last (see
        [`sdekit.train.save_checkpoint`][]).
    - `config`: JSON-serialisable configuration stored with the checkpoint. A resumed
        run must pass the same config (or `None`).
    - `resume`: if `True` (default) and `checkpoint_dir` holds a checkpoint of this
        run, continue from it (model, optimiser state, epoch, best model, history,
        early-stopping counter); the result equals that of an uninterrupted run. A
        finished run is returned as it is. With nothing to resume, start afresh.
    - `overwrite`: start afresh even if `checkpoint_dir` holds a checkpoint (of this
        run or another), replacing it at the first save. Takes precedence over
        `resume`.
    - `progress`: report progress on stderr (see below); `False` prints nothing.
    - `devices`: the devices to train on. Defaults to `jax.devices()`.
    - `checkpoint_every`: save a checkpoint every this many epochs.
    - `steps_per_call`: optimiser steps per compiled call (see above). A group never
        spans two epochs: with `steps_per_epoch` steps an epoch, it is at most that, and
        a last, shorter group of `steps_per_epoch % steps_per_call` steps compiles a
        second variant. The host holds a group's minibatches at once.
    - `prepare_fn`: optional `prepare_fn(model, batch, key) -> batch`, work on each
        training minibatch that needs no gradient (pairing it with base samples,
        augmenting it), done for all the minibatches of a compiled call at once,
        under `jax.vmap`, before the call's steps: a host callback inside it then
        receives every minibatch of the call together and can solve them in parallel.
        It sees the model as it was at the start of the call, so it should read only
        parts that training does not change. `loss_fn` receives its output; the
        validation data are given to `loss_fn` unprepared.

    On a terminal, progress is a tqdm bar that reads `compiling` until the first step
    has been compiled, then `training`, with rates and estimates that leave the first
    epoch (and its compilation) out. In a log (stderr not a terminal) it is one plain
    line per tenth of the run. A line also says when a run is resumed and when early
    stopping ends it.

    **Returns:**

    A [`sdekit.train.FitResult`][] with the best (or final) model and the history.
    """
    # Check everything we can before any work.
    epochs = _check_int(epochs, "epochs", 1)
    batch_size = _check_int(batch_size, "batch_size", 1)
    checkpoint_every = _check_int(checkpoint_every, "checkpoint_every", 1)
    steps_per_call = _check_int(steps_per_call, "steps_per_call", 1)
    validate_every = _check_int(validate_every, "validate_every", 1)
    if mode not in ("min", "max"):
        raise ValueError(
            f"`mode` must be 'min' or 'max', got {mode!r}: 'min' when a smaller "
            f"`monitor` ({monitor!r}) is better, 'max' when a larger one is."
        )
    if patience is not None:
        patience = _check_int(patience, "patience", 1)
    if valid_data is None and patience is not None:
        raise ValueError(
            "`patience` needs `valid_data`: early stopping watches a validation metric."
        )
    if not isinstance(best_tolerance, str) and not (
        isinstance(best_tolerance, (int, float)) and best_tolerance >= 0
    ):
        raise ValueError(
            f"`best_tolerance` must be a number >= 0 or a validation metric's name, got "
            f"{best_tolerance!r}."
        )
    if valid_data is None and eval_fn is not None:
        raise ValueError("`eval_fn` was given without `valid_data` to evaluate it on.")
    train_data, num_train = _check_data(train_data, "train_data")
    if valid_data is not None:
        valid_data, _ = _check_data(valid_data, "valid_data")
    if config is not None:
        # Round trip through JSON now, so a bad config fails before training, and
        # compares equal to the one read back on resume.
        try:
            config = json.loads(json.dumps(config))
        except (TypeError, ValueError) as e:
            raise ValueError(
                f"`config` must be JSON-serialisable, but serialising it failed: {e}."
            ) from e
    plan = "fresh"
    if checkpoint_dir is not None:
        plan, _ = plan_checkpoint_dir(
            checkpoint_dir,
            resume=resume and not overwrite,
            overwrite=overwrite,
            config=config,
            spelling=ARGUMENTS,
        )

    if num_train > batch_size:
        steps_per_epoch, step_size = num_train // batch_size, batch_size
    else:
        steps_per_epoch, step_size = 1, num_train
    # The epoch's steps in groups `(first step, number of steps)` of one call each.
    group_size = min(steps_per_call, steps_per_epoch)
    groups = [
        (first, min(group_size, steps_per_epoch - first))
        for first in range(0, steps_per_epoch, group_size)
    ]
    mesh = make_mesh(devices)
    check_batch_size(step_size, mesh)
    if optimizer is None:
        optimizer = optax.adamw(1e-3)

    model = _place(model, mesh)
    if len(jtu.tree_leaves(eqx.filter(model, eqx.is_inexact_array))) == 0:
        raise ValueError(
            "`model` has no trainable leaves (floating-point arrays), so there is "
            "nothing to fit."
        )
    opt_state = _place(optimizer.init(eqx.filter(model, eqx.is_inexact_array)), mesh)
    train_key, valid_key = jr.split(key)
    run = {
        "key": np.asarray(jr.key_data(key)).tolist(),
        "batch_size": batch_size,
        "num_train": num_train,
    }

    start_epoch, history = 0, []
    best_model, best_epoch, best_metric = None, None, None
    # The best value of `monitor` seen so far (`best_metric` is the kept model's).
    record = None
    since_improvement, stopped_early = 0, False
    if plan == "resume":
        assert checkpoint_dir is not None
        loaded = read_checkpoint(
            checkpoint_dir, like_model=model, like_opt_state=opt_state
        )
        state = loaded["state"]
        for name, value in run.items():
            if state.get("run", {}).get(name, value) != value:
                raise ValueError(
                    f"The checkpoint in {checkpoint_dir} was written by a run with a "
                    f"different `{name}` ({state['run'][name]} vs {value} now), so "
                    "resuming would not continue that run. Pass the original value, "
                    "or `overwrite=True` to start afresh."
                )
        if state["epochs_completed"] > epochs:
            raise ValueError(
                f"The checkpoint in {checkpoint_dir} has already run "
                f"{state['epochs_completed']} epochs, more than `epochs={epochs}`. "
                "Ask for at least as many epochs, or pass `overwrite=True`."
            )
        model = _place(loaded["model"], mesh)
        opt_state = _place(loaded["opt_state"], mesh)
        if loaded["best_model"] is not None:
            best_model = _place(loaded["best_model"], mesh)
        start_epoch, history = state["epochs_completed"], state["history"]
        best_epoch, best_metric = state["best_epoch"], state["best_metric"]
        record = state.get("record_metric", best_metric)
        since_improvement = state["epochs_since_improvement"]
        stopped_early = state["stopped_early"]

    # Every process decided alone what to do with the checkpoint directory; they must
    # agree, or they would run different programs and wait for each other for ever.
    check_same_everywhere(
        [("fresh", "resume", "overwrite").index(plan), start_epoch],
        f"The processes see different checkpoints in {checkpoint_dir}: put the "
        "checkpoint directory on a file system that every process sees",
    )

    compute = ft.partial(_loss_and_metrics, loss_fn)

    def prepare(model, batches, epoch_key, steps):
        # One key per step, apart from the loss's (which `fold_in(epoch_key, step)`
        # keeps as it is without `prepare_fn`).
        assert prepare_fn is not None
        keys = jax.vmap(lambda step: jr.fold_in(jr.fold_in(epoch_key, step), 1))(steps)
        return jax.vmap(prepare_fn, in_axes=(None, 0, 0))(model, batches, keys)

    # No buffer donation: the best model kept for early stopping, and the snapshot of
    # the last finished epoch kept for Ctrl-C, may still hold the arrays that a later
    # step would otherwise overwrite.
    def train_step(model, opt_state, batch, epoch_key, step):
        step_key = jr.fold_in(epoch_key, step)
        (loss, metrics), grads = eqx.filter_value_and_grad(compute, has_aux=True)(
            model, batch, step_key
        )
        params = eqx.filter(model, eqx.is_inexact_array)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        model = eqx.apply_updates(model, updates)
        model, opt_state = constrain_replicated((model, opt_state), mesh)
        return model, opt_state, {"loss": loss, **metrics}

    @eqx.filter_jit
    def train_steps(model, opt_state, batches, epoch_key, steps):
        # `len(steps)` steps on the minibatches stacked along the leading axis of
        # `batches`. The scan carries the arrays; the rest (activation functions,
        # the optimiser's static parts) stays outside.
        arrays, static = eqx.partition((model, opt_state), eqx.is_array)
        if prepare_fn is not None:
            batches = prepare(model, batches, epoch_key, steps)

        def body(arrays, inputs):
            batch, step = inputs
            model, opt_state = eqx.combine(arrays, static)
            model, opt_state, out = train_step(model, opt_state, batch, epoch_key, step)
            return eqx.filter((model, opt_state), eqx.is_array), out

        arrays, outputs = jax.lax.scan(body, arrays, (batches, steps))
        model, opt_state = eqx.combine(arrays, static)
        return model, opt_state, outputs

    @eqx.filter_jit
    def train_one_step(model, opt_state, batch, epoch_key, step):
        if prepare_fn is not None:
            batches = jtu.tree_map(lambda x: x[None], batch)
            prepared = prepare(model, batches, epoch_key, step[None])
            batch = jtu.tree_map(lambda x: x[0], prepared)
        return train_step(model, opt_state, batch, epoch_key, step)

    def run_group(model, opt_state, perm, epoch_key, first, count):
        index = perm[first * step_size : (first + count) * step_size]
        if steps_per_call == 1:
            batch = shard_batch(jtu.tree_map(lambda x: x[index], train_data), mesh)
            return train_one_step(model, opt_state, batch, epoch_key, np.uint32(first))
        batches = jtu.tree_map(
            lambda x: x[index].reshape(count, step_size, *x.shape[1:]), train_data
        )
        steps = np.arange(first, first + count, dtype=np.uint32)
        return train_steps(
            model, opt_state, shard_steps(batches, mesh), epoch_key, steps
        )

    if eval_fn is None:
        evaluate = _default_evaluator(loss_fn, batch_size, mesh)
    else:
        evaluate = lambda m, d, k: _to_floats(eval_fn(m, d, k))  # noqa: E731

    main = is_main_process()

    def save(snapshot: tuple) -> None:
        state, model, opt_state, best_model = snapshot
        assert checkpoint_dir is not None
        if main:
            save_checkpoint(
                checkpoint_dir,
                model=_host_copy(model),
                opt_state=_host_copy(opt_state),
                best_model=None if best_model is None else _host_copy(best_model),
                config=config,
                state=state,
            )
        # The other processes wait, so that none runs ahead of (or exits before) the
        # checkpoint that describes it.
        wait_for_everyone(f"sdekit checkpoint {state['epochs_completed']}")

    reporter = EpochProgress(epochs, start_epoch, progress and main)
    if plan == "resume":
        if stopped_early or start_epoch == epochs:
            reporter.note(
                f"{checkpoint_dir}: this run has already finished "
                f"({describe_run(state)}); nothing to train"
            )
        else:
            reporter.note(
                f"resumed from epoch {start_epoch} of {epochs} in {checkpoint_dir}"
            )
    # The epochs that this run's checkpoint holds, and the last finished epoch as
    # (trainer state, model, optimiser state, best model): what Ctrl-C saves.
    saved = start_epoch if plan == "resume" else None
    last = None
    # The progress shows the latest validation, also between validations.
    shown_valid = next((h["valid"] for h in reversed(history) if h["valid"]), None)
    first_step = True
    try:
        # A Ctrl-C is acted on between compiled calls (`interrupt.check()`), never in
        # the middle of a library's bookkeeping; a second one stops at once.
        with deferred_interrupt() as interrupt:
            for epoch in range(start_epoch, epochs):
                if stopped_early:
                    break
                interrupt.check()
                start = time.perf_counter()
                perm_key, epoch_key = jr.split(jr.fold_in(train_key, epoch))
                perm = _permutation(perm_key, num_train)
                outputs = []
                for first, count in groups:
                    if first_step:
                        reporter.compiling()
                    model, opt_state, out = run_group(
                        model, opt_state, perm, epoch_key, first, count
                    )
                    if first_step:
                        reporter.compiled()
                        first_step = False
                    outputs.append(out)
                    interrupt.check()
                train_metrics = _epoch_mean(outputs)
                interrupt.check()

                valid_metrics = None
                validating = (epoch + 1) % validate_every == 0 or epoch + 1 == epochs
                if valid_data is not None and validating:
                    # The same key every epoch: only the model changes between two
                    # evaluations, so their difference is not sampling noise.
                    valid_metrics = evaluate(
                        eqx.nn.inference_mode(model), valid_data, valid_key
                    )
                    if monitor not in valid_metrics:
                        raise ValueError(
                            f"`monitor={monitor!r}` is not among the validation metrics "
                            f"{sorted(valid_metrics)}. Pass one of those, or add it to the "
                            "metrics dict of `loss_fn` (or to the output of `eval_fn`)."
                        )
                    value = valid_metrics[monitor]
                    tolerance = _tolerance(best_tolerance, valid_metrics)
                    if _improved(value, record, mode):
                        record, keep = value, True
                        since_improvement = 0
                    else:
                        keep = _within(value, record, tolerance, mode)
                        since_improvement += validate_every
                        stopped_early = (
                            patience is not None and since_improvement >= patience
                        )
                    if keep:
                        best_model, best_epoch, best_metric = model, epoch, value

                # A new list, not an append: the snapshot below must not change later.
                history = history + [
                    {
                        "epoch": epoch,
                        "train": train_metrics,
                        "valid": valid_metrics,
                        "seconds": time.perf_counter() - start,
                    }
                ]
                state = {
                    "epochs_completed": epoch + 1,
                    "epochs": epochs,
                    "best_epoch": best_epoch,
                    "best_metric": best_metric,
                    "record_metric": record,
                    "epochs_since_improvement": since_improvement,
                    "stopped_early": stopped_early,
                    "history": history,
                    "run": run,
                }
                # One assignment, so that an interrupt sees the old snapshot or the new.
                last = (state, model, opt_state, best_model)
                if valid_metrics is not None:
                    shown_valid = valid_metrics
                reporter.epoch_done(epoch + 1, postfix(train_metrics, shown_valid))
                if stopped_early:
                    best = (
                        "no epoch gave a number"
                        if best_epoch is None
                        else f"the best was epoch {best_epoch + 1} ({monitor} {best_metric:.4g})"
                    )
                    reporter.note(
                        f"stopped early after epoch {epoch + 1} of {epochs}: validation "
                        f"{monitor} has not improved for {patience} epochs; {best}"
                    )

                done = stopped_early or epoch + 1 == epochs
                if checkpoint_dir is not None and (
                    done or (epoch + 1) % checkpoint_every == 0
                ):
                    save(last)
                    saved = epoch + 1
    except KeyboardInterrupt:
        reporter.close()
        # Not across processes: each may have been interrupted at another step, and a
        # save waits for all of them. They resume from the last regular save.
        if checkpoint_dir is not None and last is not None and jax.process_count() == 1:
            if last[0]["epochs_completed"] != saved:
                try:
                    save(last)
                    saved = last[0]["epochs_completed"]
                except KeyboardInterrupt:
                    # A second Ctrl-C during that save: the checkpoint saved before
                    # it is still whole (saves are atomic).
                    pass
        if checkpoint_dir is not None and saved is not None:
            raise TrainingInterrupted(
                checkpoint_dir=checkpoint_dir, epochs_completed=saved, epochs=epochs
            ) from None
        raise TrainingInterrupted(
            checkpoint_dir=None, epochs_completed=len(history), epochs=epochs
        ) from None
    finally:
        reporter.close()

    return FitResult(
        model=model if best_model is None else best_model,
        history=history,
        best_epoch=best_epoch,
        best_metric=best_metric,
        stopped_early=stopped_early,
        epochs_run=len(history),
    )
