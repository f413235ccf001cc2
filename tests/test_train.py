import json
import os
import pathlib
import signal
import subprocess
import sys

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import jax.tree_util as jtu
import numpy as np
import optax
import pytest
from _train_script import LinearModel, mse_loss, shift_problem

from sdekit.train import _fit, fit, load_model, TrainingInterrupted


ROOT = pathlib.Path(__file__).resolve().parents[1]
SCRIPT = pathlib.Path(__file__).with_name("_train_script.py")


def _run_script(*args: str, xla_flags: str | None = None):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in [env.get("PYTHONPATH"), str(ROOT)] if p
    )
    # Host devices only: the two-device test fakes its devices on the CPU platform.
    env["JAX_PLATFORMS"] = "cpu"
    env.pop("XLA_FLAGS", None)
    if xla_flags is not None:
        env["XLA_FLAGS"] = xla_flags
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def _assert_trees_equal(a, b):
    a, b = eqx.filter(a, eqx.is_array), eqx.filter(b, eqx.is_array)
    assert jtu.tree_structure(a) == jtu.tree_structure(b)
    for x, y in zip(jtu.tree_leaves(a), jtu.tree_leaves(b)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def _mlp(width: int, seed: int = 0):
    return eqx.nn.MLP(3, 2, width, 2, key=jr.key(seed))


#
# Numerics of training
#


@pytest.mark.parametrize("seed", [0, 1])
def test_linear_regression_recovers_least_squares(seed):
    with jax.enable_x64(True):
        rng = np.random.default_rng(seed)
        num, dim = 512, 3
        x = rng.normal(size=(num, dim))
        y = x @ rng.normal(size=dim) + 0.3 + 0.1 * rng.normal(size=num)

        def loss_fn(model, batch, key):
            xb, yb = batch
            return jnp.mean((jax.vmap(model)(xb)[:, 0] - yb) ** 2), {}

        epochs, batch_size = 60, 64
        # A schedule decaying to zero averages out the minibatch noise, so the iterate
        # converges to the least-squares solution itself, not to a ball around it.
        schedule = optax.cosine_decay_schedule(0.05, epochs * (num // batch_size))
        result = fit(
            eqx.nn.Linear(dim, 1, key=jr.key(seed)),
            loss_fn,
            (x, y),
            key=jr.key(seed),
            optimizer=optax.adam(schedule),
            epochs=epochs,
            batch_size=batch_size,
            progress=False,
        )
        design = np.concatenate([x, np.ones((num, 1))], axis=1)
        expected = np.linalg.lstsq(design, y, rcond=None)[0]
        got = np.concatenate([result.model.weight[0], result.model.bias])
        np.testing.assert_allclose(got, expected, atol=1e-3)
        assert result.epochs_run == epochs and len(result.history) == epochs
        assert result.best_epoch is None and not result.stopped_early
        # Reported training loss is the mean over each epoch's steps; at the end it is
        # close to the least-squares residual.
        final_mse = np.mean((design @ expected - y) ** 2)
        np.testing.assert_allclose(
            result.history[-1]["train"]["loss"], final_mse, rtol=0.1
        )


class DropoutLinear(eqx.Module):
    dropout: eqx.nn.Dropout
    linear: LinearModel

    def __call__(self, x, key):
        return self.linear(self.dropout(x, key=key))


def test_default_eval_is_mean_in_inference_mode():
    with jax.enable_x64(True):
        linear, train, valid = shift_problem(2, np.float64, num_valid=100)
        model = DropoutLinear(eqx.nn.Dropout(0.5), linear)

        def loss_fn(model, batch, key):
            x, y = batch
            keys = jr.split(key, x.shape[0])
            residual = jax.vmap(model)(x, keys) - y
            return jnp.mean(residual**2), {"mae": jnp.mean(jnp.abs(residual))}

        result = fit(
            model,
            loss_fn,
            train,
            key=jr.key(0),
            optimizer=optax.sgd(0.015),
            epochs=3,
            # 100 validation examples in batches of 32, 32, 32 and 4.
            batch_size=32,
            valid_data=valid,
            progress=False,
        )
        # The returned (best) model's validation metrics, computed by hand without
        # dropout: they match only if evaluation ran in inference mode and weighted
        # the uneven batches correctly.
        residual = valid[0] @ np.asarray(result.model.linear.weight) + float(
            result.model.linear.bias
        )
        residual = residual - valid[1]
        recorded = result.history[result.best_epoch]["valid"]
        np.testing.assert_allclose(recorded["loss"], np.mean(residual**2), rtol=1e-12)
        np.testing.assert_allclose(
            recorded["mae"], np.mean(np.abs(residual)), rtol=1e-12
        )
        assert result.best_metric == recorded["loss"]
        # Training itself used dropout: the model is still in training mode.
        assert result.model.dropout.inference is False


@pytest.mark.parametrize("seed", [0, 1])
def test_early_stopping_restores_best_model(seed):
    model, train, valid = shift_problem(seed)
    patience = 3
    kwargs = dict(
        key=jr.key(seed), optimizer=optax.sgd(0.015), batch_size=16, progress=False
    )
    result = fit(
        model,
        mse_loss,
        train,
        epochs=50,
        valid_data=valid,
        patience=patience,
        **kwargs,
    )
    valid_loss = np.array([h["valid"]["loss"] for h in result.history])
    best = result.best_epoch
    assert result.stopped_early
    assert best == int(np.argmin(valid_loss)) and best > 0
    assert result.best_metric == valid_loss[best]
    # Stopped exactly `patience` epochs after the last improvement.
    assert result.epochs_run == len(result.history) == best + 1 + patience
    assert np.all(valid_loss[best + 1 :] > valid_loss[best])
    assert [h["epoch"] for h in result.history] == list(range(result.epochs_run))

    # The returned model is the one after epoch `best`, not the last one: training
    # again for exactly `best + 1` epochs (no validation) reproduces it.
    at_best = fit(model, mse_loss, train, epochs=best + 1, **kwargs)
    _assert_trees_equal(result.model, at_best.model)
    at_end = fit(model, mse_loss, train, epochs=result.epochs_run, **kwargs)
    assert not np.allclose(at_end.model.weight, result.model.weight)


def test_custom_eval_fn_and_max_mode():
    model, train, valid = shift_problem(3)
    kwargs = dict(
        key=jr.key(3),
        optimizer=optax.sgd(0.015),
        epochs=50,
        batch_size=16,
        valid_data=valid,
        patience=3,
        progress=False,
    )
    by_loss = fit(model, mse_loss, train, **kwargs)

    def eval_fn(model, data, key):
        x, y = data
        return {"neg_mse": -jnp.mean((jax.vmap(model)(x) - y) ** 2)}

    by_neg = fit(
        model, mse_loss, train, eval_fn=eval_fn, monitor="neg_mse", mode="max", **kwargs
    )
    assert by_neg.best_epoch == by_loss.best_epoch
    np.testing.assert_allclose(by_neg.best_metric, -by_loss.best_metric, rtol=1e-6)
    _assert_trees_equal(by_neg.model, by_loss.model)


def test_step_compiles_once():
    traces = []

    def loss_fn(model, batch, key):
        traces.append(jtu.tree_leaves(batch)[0].shape)
        return mse_loss(model, batch, key)

    model, train, _ = shift_problem(0)
    # 64 examples in batches of 20: three steps an epoch, the partial fourth dropped.
    result = fit(model, loss_fn, train, key=jr.key(0), epochs=4, batch_size=20)
    assert traces == [(20, 4)]
    assert len(result.history) == 4 and np.all(result.model.weight != 0)

    traces.clear()
    _, _, valid = shift_problem(0, num_valid=48)
    fit(model, loss_fn, train, key=jr.key(0), epochs=4, batch_size=20, valid_data=valid)
    # One training step; evaluation of 48 examples in batches of 20 has two shapes.
    assert sorted(traces) == [(8, 4), (20, 4), (20, 4)]


def test_steps_per_call_takes_the_same_steps():
    model, train, valid = shift_problem(3, num_train=200)
    traces = []

    def loss_fn(model, batch, key):
        traces.append(jtu.tree_leaves(batch)[0].shape)
        # A loss that uses its key, so that a step given another step's key would show.
        loss, metrics = mse_loss(model, batch, key)
        return loss + 0.1 * jr.normal(key), metrics

    kwargs = dict(
        key=jr.key(4),
        optimizer=optax.adam(0.02),
        epochs=2,
        batch_size=16,  # 12 steps an epoch, 8 examples dropped
        valid_data=valid,
        progress=False,
    )
    one = fit(model, loss_fn, train, **kwargs)
    assert traces == [(16, 4)] * 2  # the step, the evaluation (48 = 3 x 16)
    # 4 divides the 12 steps; 5 leaves a group of 2 (a second compiled variant); 50
    # is more than an epoch: one call an epoch.
    for steps_per_call, variants in [(4, 1), (5, 2), (50, 1)]:
        traces.clear()
        grouped = fit(model, loss_fn, train, **kwargs, steps_per_call=steps_per_call)
        assert traces == [(16, 4)] * (variants + 1), steps_per_call
        for a, b in zip(jtu.tree_leaves(grouped.model), jtu.tree_leaves(one.model)):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
        for g, o in zip(grouped.history, one.history, strict=True):
            assert g["train"] == pytest.approx(o["train"], rel=1e-5)
            assert g["valid"] == pytest.approx(o["valid"], rel=1e-5)
        assert grouped.best_epoch == one.best_epoch
    assert np.linalg.norm(one.model.weight) > 0.3  # it did train


def test_best_tolerance_keeps_the_latest_near_best_model(tmp_path):
    # The validation metric is scripted by epoch (the calls so far count them).
    model, train, valid = shift_problem(7)
    scripted = [5.0, 3.0, 3.5, 3.2, 4.0, 3.05, 3.6, 3.7]

    def eval_fn(model, data, key):
        epoch = len(calls)
        calls.append(epoch)
        return {"loss": scripted[epoch], "se": 0.3}

    def run(epochs, tolerance, fresh=True, **kwargs):
        if fresh:
            calls.clear()
        return fit(
            model,
            mse_loss,
            train,
            key=jr.key(0),
            optimizer=optax.sgd(0.0),  # the model does not move: only selection
            epochs=epochs,
            batch_size=64,
            valid_data=valid,
            eval_fn=eval_fn,
            best_tolerance=tolerance,
            progress=False,
            **kwargs,
        )

    calls: list[int] = []
    assert run(8, 0.0).best_epoch == 1
    for tolerance in (0.3, "se"):
        result = run(8, tolerance)
        # 3.2 (epoch 3) and 3.05 (epoch 5) are within 0.3 of the record 3.0.
        assert (result.best_epoch, result.best_metric) == (5, 3.05)
    # Early stopping still counts from the record (epoch 1): patience 3 stops after
    # epoch 4 even though epoch 3 was kept.
    result = run(8, 0.3, patience=3)
    assert result.stopped_early and result.epochs_run == 5 and result.best_epoch == 3
    # The record (3.0) is saved beside the kept model's value (3.2) and resumed.
    run(4, 0.3, checkpoint_dir=tmp_path / "run")  # leaves `calls` at epoch 4
    saved = json.loads((tmp_path / "run" / "state.json").read_text())["state"]
    assert (saved["best_metric"], saved["record_metric"]) == (3.2, 3.0)
    resumed = run(8, 0.3, checkpoint_dir=tmp_path / "run", fresh=False)
    assert (resumed.best_epoch, resumed.best_metric) == (5, 3.05)
    with pytest.raises(ValueError, match="best_tolerance"):
        run(2, -1.0)
    with pytest.raises(ValueError, match="not among the validation metrics"):
        run(2, "loss_se")


def test_validate_every_evaluates_every_kth_and_the_last_epoch(tmp_path):
    # The validation metric is scripted by validation (the calls so far count them).
    model, train, valid = shift_problem(7)
    calls: list[int] = []

    def run(epochs, scripted, fresh=True, **kwargs):
        if fresh:
            calls.clear()

        def eval_fn(model, data, key):
            value = scripted[len(calls)]
            if value is KeyboardInterrupt:
                raise KeyboardInterrupt
            calls.append(len(calls))
            return {"loss": value}

        return fit(
            model,
            mse_loss,
            train,
            key=jr.key(0),
            optimizer=optax.sgd(0.0),
            epochs=epochs,
            batch_size=64,
            valid_data=valid,
            eval_fn=eval_fn,
            progress=False,
            **kwargs,
        )

    # Epochs 0..6 (zero-based) validated after epochs 2 and 5, and after the last.
    result = run(7, [3.0, 2.0, 2.5], validate_every=3)
    validated = [h["epoch"] for h in result.history if h["valid"] is not None]
    assert validated == [2, 5, 6] and len(calls) == 3
    assert (result.best_epoch, result.best_metric) == (5, 2.0)
    # Patience counts epochs, not validations: every 2 epochs, patience 4 stops two
    # validations after the record (epoch 1), after epoch 5.
    result = run(10, [1.0] + [2.0] * 9, validate_every=2, patience=4)
    assert result.stopped_early and result.epochs_run == 6 and result.best_epoch == 1
    # A run interrupted during its second validation (after epoch 5) resumes from
    # epoch 5 on the same schedule.
    with pytest.raises(TrainingInterrupted):
        run(7, [3.0, KeyboardInterrupt], validate_every=3, checkpoint_dir=tmp_path)
    resumed = run(
        7, [3.0, 2.0, 2.5], fresh=False, validate_every=3, checkpoint_dir=tmp_path
    )
    validated = [h["epoch"] for h in resumed.history if h["valid"] is not None]
    assert validated == [2, 5, 6] and resumed.best_epoch == 5
    with pytest.raises(ValueError, match="validate_every"):
        run(2, [1.0], validate_every=0)


def test_prepare_fn_sees_a_calls_minibatches_together():
    # A `prepare_fn` whose host callback records the shapes it is given, and which
    # changes the batch by its key: the steps must see the prepared batches, with
    # keys that do not depend on how the steps are grouped into calls.
    model, train, valid = shift_problem(5, num_train=200)
    seen = []

    def record(x):
        seen.append(np.shape(x))
        return np.zeros(np.shape(x)[:-1], np.float32)

    def prepare_fn(model, batch, key):
        x, y = batch
        zero = jax.pure_callback(
            record,
            jax.ShapeDtypeStruct(x.shape[:-1], jnp.float32),
            x,
            vmap_method="expand_dims",
        )
        return x, y + zero + jr.normal(key, y.shape)

    kwargs = dict(
        key=jr.key(6),
        optimizer=optax.adam(0.02),
        epochs=2,
        batch_size=16,  # 12 steps an epoch
        valid_data=valid,
        progress=False,
    )
    plain = fit(model, mse_loss, train, **kwargs)
    one = fit(model, mse_loss, train, **kwargs, prepare_fn=prepare_fn)
    assert seen == [(1, 16, 4)] * 24  # one minibatch a call, every step
    seen.clear()
    grouped = fit(
        model, mse_loss, train, **kwargs, steps_per_call=6, prepare_fn=prepare_fn
    )
    assert seen == [(6, 16, 4)] * 4  # the six minibatches of a call at once
    for a, b in zip(jtu.tree_leaves(grouped.model), jtu.tree_leaves(one.model)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    # The noise reached the loss: the training loss is about one (its variance) above
    # the unprepared run's, and the validation data were not prepared.
    gap = one.history[-1]["train"]["loss"] - plain.history[-1]["train"]["loss"]
    assert 0.5 < gap < 1.5
    assert one.history[-1]["valid"]["loss"] < 0.5


#
# Resuming
#


def test_fit_resume_in_process(tmp_path):
    model, train, valid = shift_problem(1)
    kwargs = dict(
        key=jr.key(1),
        optimizer=optax.sgd(0.015),
        epochs=3,
        batch_size=16,
        valid_data=valid,
        progress=False,
        checkpoint_dir=tmp_path / "run",
        config={"lr": 0.015},
    )
    first = fit(model, mse_loss, train, **kwargs)
    assert json.loads((tmp_path / "run" / "config.json").read_text()) == {"lr": 0.015}

    # Resuming a finished run returns it without doing any work.
    calls = []

    def counting_loss(model, batch, key):
        calls.append(None)
        return mse_loss(model, batch, key)

    again = fit(model, counting_loss, train, **kwargs)
    assert calls == []
    _assert_trees_equal(again.model, first.model)
    assert again.history == first.history and again.best_epoch == first.best_epoch

    # Asking for more epochs continues the run, as if it had never stopped.
    longer = fit(model, mse_loss, train, **{**kwargs, "epochs": 6})
    straight = fit(model, mse_loss, train, **{**kwargs, "epochs": 6, "overwrite": True})
    _assert_trees_equal(longer.model, straight.model)
    assert longer.epochs_run == 6 and longer.best_epoch == straight.best_epoch

    with pytest.raises(
        ValueError, match=r"other settings .*config\['lr'\] 0.015 there, 0.1 now"
    ):
        fit(model, mse_loss, train, **{**kwargs, "config": {"lr": 0.1}})
    with pytest.raises(ValueError, match="different `key`"):
        fit(model, mse_loss, train, **{**kwargs, "key": jr.key(2), "epochs": 7})
    with pytest.raises(ValueError, match="already run 6 epochs"):
        fit(model, mse_loss, train, **kwargs)


class _InterruptAt:
    """Stands in for `shard_batch` (or `real`) and raises `KeyboardInterrupt` (what
    Ctrl-C raises) at its `call`-th call, i.e. inside an epoch, between two steps."""

    def __init__(self, call: int, real=None):
        self.call, self.calls = call, 0
        self.real = _fit.shard_batch if real is None else real

    def __call__(self, batch, mesh):
        self.calls += 1
        if self.calls == self.call:
            raise KeyboardInterrupt
        return self.real(batch, mesh)


def test_ctrl_c_saves_the_last_finished_epoch_and_resumes_exactly(
    tmp_path, monkeypatch
):
    model, train, valid = shift_problem(2)
    run = tmp_path / "run"
    kwargs = dict(
        key=jr.key(3),
        optimizer=optax.adam(0.02),
        epochs=6,
        batch_size=16,  # four steps an epoch
        valid_data=valid,
        progress=False,
        checkpoint_every=100,  # so that only the interrupt saves
    )
    # Interrupted at the third step of epoch 3 (an epoch places four training batches
    # and three validation batches): epochs 1 and 2 finished.
    monkeypatch.setattr(_fit, "shard_batch", _InterruptAt(2 * (4 + 3) + 3))
    with pytest.raises(TrainingInterrupted) as info:
        fit(model, mse_loss, train, checkpoint_dir=run, **kwargs)
    monkeypatch.undo()
    error = info.value
    assert isinstance(error, KeyboardInterrupt)
    assert (error.checkpoint_dir, error.epochs_completed, error.epochs) == (
        str(run),
        2,
        6,
    )
    assert "after epoch 2 of 6" in str(error) and str(run) in str(error)
    assert (
        json.loads((run / "state.json").read_text())["state"]["epochs_completed"] == 2
    )

    resumed = fit(model, mse_loss, train, checkpoint_dir=run, resume=True, **kwargs)
    straight = fit(model, mse_loss, train, **kwargs)
    _assert_trees_equal(resumed.model, straight.model)
    assert [h["train"] for h in resumed.history] == [
        h["train"] for h in straight.history
    ]

    # Interrupted again during the save of the epoch after: that save is retried.
    real_save, calls = _fit.save_checkpoint, []

    def save_interrupted_once(directory, **kwargs):
        calls.append(kwargs["state"]["epochs_completed"])
        if len(calls) == 1:
            raise KeyboardInterrupt
        real_save(directory, **kwargs)

    monkeypatch.setattr(_fit, "save_checkpoint", save_interrupted_once)
    with pytest.raises(TrainingInterrupted) as info:
        fit(
            model,
            mse_loss,
            train,
            checkpoint_dir=tmp_path / "b",
            **{**kwargs, "checkpoint_every": 1},
        )
    assert calls == [1, 1] and info.value.epochs_completed == 1


def test_ctrl_c_and_resume_with_steps_per_call(tmp_path, monkeypatch):
    model, train, valid = shift_problem(2)
    run = tmp_path / "run"
    kwargs = dict(
        key=jr.key(3),
        optimizer=optax.adam(0.02),
        epochs=4,
        batch_size=8,  # eight steps an epoch: two calls of four
        valid_data=valid,
        progress=False,
        checkpoint_every=100,  # so that only the interrupt saves
        steps_per_call=4,
    )
    # Interrupted before the second call of epoch 3: epochs 1 and 2 finished.
    monkeypatch.setattr(_fit, "shard_steps", _InterruptAt(2 * 2 + 2, _fit.shard_steps))
    with pytest.raises(TrainingInterrupted) as info:
        fit(model, mse_loss, train, checkpoint_dir=run, **kwargs)
    monkeypatch.undo()
    assert (info.value.epochs_completed, info.value.epochs) == (2, 4)
    resumed = fit(model, mse_loss, train, checkpoint_dir=run, resume=True, **kwargs)
    straight = fit(model, mse_loss, train, **kwargs)
    _assert_trees_equal(resumed.model, straight.model)
    metrics = lambda result: [(h["train"], h["valid"]) for h in result.history]  # noqa: E731
    assert metrics(resumed) == metrics(straight)


def test_ctrl_c_in_the_first_epoch_saves_nothing(tmp_path, monkeypatch):
    model, train, _ = shift_problem(0)
    kwargs = dict(key=jr.key(0), epochs=3, batch_size=16, progress=False)
    monkeypatch.setattr(_fit, "shard_batch", _InterruptAt(2))
    with pytest.raises(TrainingInterrupted) as info:
        fit(model, mse_loss, train, checkpoint_dir=tmp_path / "new", **kwargs)
    assert (info.value.checkpoint_dir, info.value.epochs_completed) == (None, 0)
    assert "nothing was saved" in str(info.value)
    assert not (tmp_path / "new").exists()

    # Without a checkpoint directory, the finished epochs are counted, and lost.
    monkeypatch.setattr(_fit, "shard_batch", _InterruptAt(4 + 1))
    with pytest.raises(TrainingInterrupted) as info:
        fit(model, mse_loss, train, **kwargs)
    assert (info.value.checkpoint_dir, info.value.epochs_completed) == (None, 1)
    monkeypatch.undo()

    # --overwrite replaces the old run only at the new run's first save: interrupted
    # before it, the old run is still there, whole.
    old = fit(model, mse_loss, train, checkpoint_dir=tmp_path / "old", **kwargs)
    before = (tmp_path / "old" / "state.json").read_bytes()
    monkeypatch.setattr(_fit, "shard_batch", _InterruptAt(2))
    with pytest.raises(TrainingInterrupted) as info:
        fit(
            model,
            mse_loss,
            train,
            checkpoint_dir=tmp_path / "old",
            overwrite=True,
            **{**kwargs, "key": jr.key(1)},
        )
    assert info.value.checkpoint_dir is None
    assert (tmp_path / "old" / "state.json").read_bytes() == before
    _assert_trees_equal(load_model(tmp_path / "old", model), old.model)


def test_kill_and_resume_equals_uninterrupted(tmp_path):
    ckpt, kill_after = tmp_path / "run", 10
    killed = _run_script(
        "resume",
        "--ckpt",
        str(ckpt),
        "--out",
        str(tmp_path / "killed.json"),
        "--kill-after",
        str(kill_after),
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert not (tmp_path / "killed.json").exists()
    saved = json.loads((ckpt / "state.json").read_text())["state"]
    assert saved["epochs_completed"] == kill_after

    out = tmp_path / "resumed.json"
    resumed = _run_script(
        "resume", "--ckpt", str(ckpt), "--out", str(out), "--reference"
    )
    assert resumed.returncode == 0, resumed.stderr
    data = json.loads(out.read_text())
    res, ref = data["resumed"], data["reference"]
    # The run must carry across the kill what a resume has to restore: a best model
    # from before it and an early-stopping counter that is running.
    assert ref["stopped_early"] and ref["best_epoch"] < kill_after - 1
    assert ref["epochs_run"] > kill_after
    # The resumed process ran only the remaining epochs...
    assert data["epochs_saved_here"] == list(
        range(kill_after + 1, ref["epochs_run"] + 1)
    )
    # ... and ended bit for bit where the uninterrupted run did.
    for a, b in zip(res["params"], ref["params"], strict=True):
        np.testing.assert_array_equal(a, b)
    for name in ["best_epoch", "best_metric", "stopped_early", "epochs_run"]:
        assert res[name] == ref[name], name
    assert res["history_train"] == ref["history_train"]
    assert res["history_valid"] == ref["history_valid"]


#
# Data parallelism
#


def test_sharded_equals_single_device(tmp_path):
    out = tmp_path / "sharded.json"
    proc = _run_script(
        "sharded",
        "--out",
        str(out),
        xla_flags="--xla_force_host_platform_device_count=2",
    )
    assert proc.returncode == 0, proc.stderr
    data = json.loads(out.read_text())
    two, grouped, one = data["two"], data["two_grouped"], data["one"]
    # Each minibatch of 16 was split 8 + 8 over the two devices, along its batch axis.
    assert two["placed"] and all(
        p
        == {"num_devices": 2, "split_on_batch_axis": True, "shard_shapes": [[8, 3]] * 2}
        for p in two["placed"]
    )
    # Four steps per call (six an epoch: a group of four, then of two): the stacked
    # minibatches split along their batch axis, not the steps'.
    assert grouped["placed"] == [
        {"num_devices": 2, "split_on_batch_axis": True, "shard_shapes": [[k, 8, 3]] * 2}
        for k in (4, 2)
    ]
    assert all(p["num_devices"] == 1 for p in one["placed"])
    assert two["param_devices"] == 2 and two["param_replicated"]
    assert grouped["param_devices"] == 2 and grouped["param_replicated"]
    # Same steps, same result; only the order of the float64 reductions differs.
    for run in (two, grouped):
        assert run["best_epoch"] == one["best_epoch"]
        for a, b in zip(run["params"], one["params"], strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(
            [h["loss"] for h in run["history_train"]],
            [h["loss"] for h in one["history_train"]],
            rtol=1e-12,
        )
    assert np.linalg.norm(two["params"][0]) > 0.5  # it did train
    assert "not divisible by the number of devices (2)" in data["indivisible_error"]


#
# Bad input
#


def _bad_inputs():
    _, train, valid = shift_problem(0)
    x, y = train
    return [
        ({"train_data": (x[:0], y[:0])}, "is empty"),
        ({"train_data": (x, y[:-1])}, "same leading"),
        ({"train_data": ()}, "contains no arrays"),
        ({"valid_data": (valid[0], valid[1][:-1])}, "`valid_data` must all"),
        ({"batch_size": 0}, "`batch_size` must be an integer >= 1"),
        ({"epochs": 0}, "`epochs` must be an integer >= 1"),
        ({"mode": "median"}, "`mode` must be 'min' or 'max'"),
        ({"patience": 2, "valid_data": None}, "`patience` needs `valid_data`"),
        ({"patience": 0}, "`patience` must be an integer >= 1"),
        ({"config": {"x": object()}}, "`config` must be JSON-serialisable"),
        ({"devices": []}, "`devices` is empty"),
    ]


@pytest.mark.parametrize("overrides, message", _bad_inputs())
def test_bad_input_fails_before_any_work(overrides, message):
    model, train, valid = shift_problem(0)
    calls = []

    def loss_fn(model, batch, key):
        calls.append(None)
        return mse_loss(model, batch, key)

    kwargs = dict(train_data=train, valid_data=valid, epochs=2, batch_size=16)
    kwargs.update(overrides)
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        fit(model, loss_fn, key=jr.key(0), progress=False, **kwargs)
    assert calls == []


def test_bad_monitor_and_loss_fn():
    model, train, valid = shift_problem(0)
    with pytest.raises(
        ValueError, match=r"not among the validation metrics \['loss', 'mae'\]"
    ):
        fit(
            model,
            mse_loss,
            train,
            key=jr.key(0),
            valid_data=valid,
            monitor="accuracy",
            progress=False,
        )
    with pytest.raises(ValueError, match="must return a pair"):
        fit(model, lambda m, b, k: mse_loss(m, b, k)[0], train, key=jr.key(0))


#
# Compilation cache
#

_CACHED_PROGRAM = """
import json, os, sys
from sdekit.train import enable_compilation_cache

path = enable_compilation_cache()  # before equinox is imported, as the command does
import equinox as eqx
import jax
import jax.numpy as jnp

events = []
jax.monitoring.register_event_listener(lambda event, **kwargs: events.append(event))


@jax.jit
def program(x):
    x = eqx.error_if(x, x < 0, "negative")  # a callback, unless EQX_ON_ERROR=nan
    for i in range(300):  # enough work to take over 0.1 s to compile
        x = jnp.sin(x) * 1.01 + jnp.cos(x * i)
    return x


program(1.0).block_until_ready()
jax.clear_caches()  # the second compilation has only the disk to turn to
program(1.0).block_until_ready()
print(json.dumps({
    "path": None if path is None else str(path),
    "eqx_on_error": os.environ.get("EQX_ON_ERROR"),
    "hits": events.count("/jax/compilation_cache/cache_hits"),
    "misses": events.count("/jax/compilation_cache/cache_misses"),
}))
"""


def test_compilation_cache_hits_for_a_program_with_runtime_checks(tmp_path):
    env = dict(os.environ, JAX_PLATFORMS="cpu", SDEKIT_CACHE_DIR=str(tmp_path / "c"))
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in [env.get("PYTHONPATH"), str(ROOT)] if p
    )
    for name in ("SDEKIT_NO_CACHE", "EQX_ON_ERROR", "JAX_COMPILATION_CACHE_DIR"):
        env.pop(name, None)
    proc = subprocess.run(
        [sys.executable, "-c", _CACHED_PROGRAM],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.splitlines()[-1])
    assert out == {
        "path": str(tmp_path / "c"),
        "eqx_on_error": "nan",
        "hits": 1,
        "misses": 1,
    }
    assert any(p.name.startswith("jit_program-") for p in (tmp_path / "c").iterdir())


def test_compilation_cache_settings(monkeypatch, tmp_path):
    from sdekit.train import enable_compilation_cache
    from sdekit.train._cache import default_cache_dir

    monkeypatch.setenv("SDEKIT_NO_CACHE", "1")
    assert enable_compilation_cache(tmp_path / "c") is None
    assert not (tmp_path / "c").exists()
    monkeypatch.delenv("SDEKIT_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "sdekit" / "jax"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_cache_dir() == tmp_path / "home" / ".cache" / "sdekit" / "jax"
    monkeypatch.setenv("SDEKIT_CACHE_DIR", str(tmp_path / "mine"))
    assert default_cache_dir() == tmp_path / "mine"


def test_a_first_ctrl_c_is_deferred_to_the_training_loop():
    # Python's handler raises KeyboardInterrupt wherever the interpreter is (inside a
    # finaliser it is dropped); `fit` sets a flag instead and checks it between
    # compiled calls. A second Ctrl-C interrupts at once; the old handler comes back.
    import signal

    from sdekit.train._interrupted import deferred_interrupt

    before = signal.getsignal(signal.SIGINT)
    with deferred_interrupt() as interrupt:
        interrupt.check()  # nothing pressed: no-op
        signal.raise_signal(signal.SIGINT)
        assert interrupt.pressed
        with pytest.raises(KeyboardInterrupt):
            interrupt.check()
        with pytest.raises(KeyboardInterrupt):
            signal.raise_signal(signal.SIGINT)
    assert signal.getsignal(signal.SIGINT) is before
