"""Training runs for `tests/test_train.py` that need a process of their own.

- `python tests/_train_script.py resume --ckpt DIR --out FILE [--kill-after K]
  [--reference]`: train the shift problem below with checkpoints in DIR (resuming from
  them if present). With `--kill-after K` the process SIGKILLs itself right after the
  checkpoint of epoch K is written. With `--reference` it also trains the same problem
  without checkpoints, uninterrupted, for comparison.
- `python tests/_train_script.py sharded --out FILE`: under
  `XLA_FLAGS=--xla_force_host_platform_device_count=2`, train one problem on two devices
  and on one, and record where the minibatches were placed.

Results go to FILE as JSON. The test module also imports the problem definitions.
"""

import argparse
import json
import os
import signal
import sys

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax
from jax.sharding import PartitionSpec as P
from jaxtyping import Array


class LinearModel(eqx.Module):
    weight: Array
    bias: Array

    def __call__(self, x):
        return x @ self.weight + self.bias


def mse_loss(model, batch, key):
    del key
    x, y = batch
    residual = jax.vmap(model)(x) - y
    return jnp.mean(residual**2), {"mae": jnp.mean(jnp.abs(residual))}


def shift_problem(seed: int, dtype=np.float32, num_train=64, num_valid=48, dim=4):
    """A linear model trained from zero towards `2u` but validated against `u`.

    On these isotropic inputs stochastic gradient descent moves the weights from 0
    almost straight towards `2u`, passing `u` on the way: the validation loss falls,
    reaches its minimum, then rises for ever after. A case for early stopping and
    best-model restore that does not depend on the seed.
    """
    rng = np.random.default_rng(seed)
    u = rng.normal(size=dim)
    u = u / np.linalg.norm(u)
    x_train = rng.normal(size=(num_train, dim))
    x_valid = rng.normal(size=(num_valid, dim))
    train = (x_train, x_train @ (2 * u) + 0.05 * rng.normal(size=num_train))
    valid = (x_valid, x_valid @ u)
    model = LinearModel(jnp.zeros(dim, dtype), jnp.zeros((), dtype))
    cast = lambda data: tuple(a.astype(dtype) for a in data)  # noqa: E731
    return model, cast(train), cast(valid)


def _params(model) -> list[list[float]]:
    return [np.asarray(leaf).tolist() for leaf in jax.tree_util.tree_leaves(model)]


def _summary(result) -> dict:
    return {
        "params": _params(result.model),
        "best_epoch": result.best_epoch,
        "best_metric": result.best_metric,
        "stopped_early": result.stopped_early,
        "epochs_run": result.epochs_run,
        "history_train": [h["train"] for h in result.history],
        "history_valid": [h["valid"] for h in result.history],
    }


def _resume(args) -> dict:
    from sdekit.train import _fit, fit

    jax.config.update("jax_enable_x64", True)
    model, train, valid = shift_problem(0, np.float64)
    kwargs = dict(
        key=jr.key(5),
        # Adam, so that a resume that lost the optimiser state would show.
        optimizer=optax.adam(0.02),
        epochs=60,
        batch_size=16,
        valid_data=valid,
        patience=4,
        progress=False,
    )
    saves = []
    real_save = _fit.save_checkpoint

    def save_then_maybe_die(directory, **save_kwargs):
        real_save(directory, **save_kwargs)
        saves.append(save_kwargs["state"]["epochs_completed"])
        if saves[-1] == args.kill_after:
            # No cleanup, no flushing: as abrupt as a pre-empted job.
            os.kill(os.getpid(), signal.SIGKILL)

    _fit.save_checkpoint = save_then_maybe_die
    result = fit(
        model,
        mse_loss,
        train,
        checkpoint_dir=args.ckpt,
        config={"problem": "shift", "seed": 0},
        **kwargs,
    )
    _fit.save_checkpoint = real_save
    out = {"resumed": _summary(result), "epochs_saved_here": saves}
    if args.reference:
        out["reference"] = _summary(fit(model, mse_loss, train, **kwargs))
    return out


def _sharded(args) -> dict:
    from sdekit.train import _fit, fit

    jax.config.update("jax_enable_x64", True)
    assert len(jax.devices()) == 2, "run with --xla_force_host_platform_device_count=2"
    rng = np.random.default_rng(3)
    x = rng.normal(size=(96, 3))
    y = x @ np.array([1.0, -2.0, 0.5]) + 0.1 * rng.normal(size=96)
    model = LinearModel(jnp.zeros(3), jnp.zeros(()))

    placed = []
    real_shard = _fit.shard_batch

    def spy(batch, mesh):
        out = real_shard(batch, mesh)
        leaf = jax.tree_util.tree_leaves(out)[0]
        placed.append(
            {
                "num_devices": len(leaf.sharding.device_set),
                "split_on_batch_axis": leaf.sharding.spec == P("batch"),
                "shard_shapes": [list(s.data.shape) for s in leaf.addressable_shards],
            }
        )
        return out

    _fit.shard_batch = spy
    results = {}
    for name, devices in [("two", jax.devices()), ("one", jax.devices()[:1])]:
        placed.clear()
        result = fit(
            model,
            mse_loss,
            (x, y),
            key=jr.key(0),
            optimizer=optax.adam(0.05),
            epochs=8,
            batch_size=16,
            valid_data=(x[:40], y[:40]),
            devices=devices,
            progress=False,
        )
        leaf = result.model.weight
        results[name] = {
            **_summary(result),
            "placed": placed[:2],
            "param_devices": len(leaf.sharding.device_set),
            "param_replicated": bool(leaf.sharding.is_fully_replicated),
        }
    _fit.shard_batch = real_shard
    try:
        fit(model, mse_loss, (x, y), key=jr.key(0), epochs=1, batch_size=15)
    except ValueError as e:
        results["indivisible_error"] = str(e)
    return results


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("command", choices=["resume", "sharded"])
    parser.add_argument("--out", required=True)
    parser.add_argument("--ckpt")
    parser.add_argument("--kill-after", type=int, default=None)
    parser.add_argument("--reference", action="store_true")
    args = parser.parse_args(argv)
    out = _resume(args) if args.command == "resume" else _sharded(args)
    with open(args.out, "w") as f:
        json.dump(out, f)


if __name__ == "__main__":
    main(sys.argv[1:])
