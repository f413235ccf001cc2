"""Training runs for `tests/test_train.py` that need a process of their own.

- `python tests/_train_script.py resume --ckpt DIR --out FILE [--kill-after K]
  [--reference]`: train the shift problem below with checkpoints in DIR (resuming from
  them if present). With `--kill-after K` the process SIGKILLs itself right after the
  checkpoint of epoch K is written. With `--reference` it also trains the same problem
  without checkpoints, uninterrupted, for comparison.
- `python tests/_train_script.py sharded --out FILE`: under
  `XLA_FLAGS=--xla_force_host_platform_device_count=2`, train one problem on two devices
  (one step per call, and four), and on one, and record where the minibatches were
  placed.
- `python tests/_train_script.py interrupt --ckpt DIR --out FILE`: train until SIGINT,
  with progress on stderr, and record the `TrainingInterrupted` raised.
- `python tests/_train_script.py distributed --coordinator HOST:PORT --num-processes N
  --process-id I --ckpt DIR --out FILE`: one process of a multi-process run
  (`jax.distributed`) of `distributed_problem`: three epochs, then a resume to six.
- `python tests/_train_script.py stress --ckpt DIR --kills N --seed S --out FILE`: fork a
  child that saves checkpoints into DIR/run in a loop, SIGKILL it after a random delay,
  check what is on disk, N times. JAX's backend is never started (the trees are NumPy
  arrays), so forking is safe.

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
    real_shard, real_shard_steps = _fit.shard_batch, _fit.shard_steps

    def spy(real, spec):
        def place(batch, mesh):
            out = real(batch, mesh)
            leaf = jax.tree_util.tree_leaves(out)[0]
            placed.append(
                {
                    "num_devices": len(leaf.sharding.device_set),
                    "split_on_batch_axis": leaf.sharding.spec == spec,
                    "shard_shapes": [list(s.data.shape) for s in leaf.addressable_shards],
                }
            )
            return out

        return place

    _fit.shard_batch = spy(real_shard, P("batch"))
    # Stacked minibatches (steps, batch, ...): split along the batch axis, the second.
    _fit.shard_steps = spy(real_shard_steps, P(None, "batch"))
    results = {}
    runs = [
        ("two", jax.devices(), 1),
        ("two_grouped", jax.devices(), 4),
        ("one", jax.devices()[:1], 1),
    ]
    for name, devices, steps_per_call in runs:
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
            steps_per_call=steps_per_call,
        )
        leaf = result.model.weight
        results[name] = {
            **_summary(result),
            "placed": placed[:2],
            "param_devices": len(leaf.sharding.device_set),
            "param_replicated": bool(leaf.sharding.is_fully_replicated),
        }
    _fit.shard_batch, _fit.shard_steps = real_shard, real_shard_steps
    try:
        fit(model, mse_loss, (x, y), key=jr.key(0), epochs=1, batch_size=15)
    except ValueError as e:
        results["indivisible_error"] = str(e)
    return results


def _stress_trees(epoch: int) -> tuple[dict, dict]:
    # About 0.5 MB a save, so that a kill can land inside the writing of a file.
    model = {"w": np.full((256, 256), epoch, np.float32), "b": np.full(7, epoch)}
    opt_state = {"m": np.full((128, 256), -epoch, np.float32), "count": np.int32(epoch)}
    return model, opt_state


class _Checker:
    """A forked child that loads the checkpoint whenever asked, and answers in JSON.

    Loading starts JAX's backend (threads), and forking a process that runs one is
    unsafe; so loading happens here, once forked, and the process that forks the savers
    never loads anything itself.
    """

    def __init__(self, ckpt):
        request_read, self._requests = os.pipe()
        self._answers, answer_write = os.pipe()
        self.pid = os.fork()
        if self.pid == 0:
            os.close(self._requests)
            os.close(self._answers)
            with os.fdopen(request_read) as requests, os.fdopen(answer_write, "w") as out:
                for line in requests:
                    try:
                        answer = {"epoch": _check_stress_checkpoint(ckpt, int(line))}
                    except BaseException as e:  # every failure goes back to the parent
                        answer = {"error": repr(e)}
                    out.write(json.dumps(answer) + "\n")
                    out.flush()
            os._exit(0)
        os.close(request_read)
        os.close(answer_write)
        self._answer_lines = os.fdopen(self._answers)

    def epoch(self, previous: int) -> int:
        os.write(self._requests, f"{previous}\n".encode())
        answer = json.loads(self._answer_lines.readline())
        if "error" in answer:
            raise AssertionError(answer["error"])
        return answer["epoch"]

    def close(self) -> None:
        os.close(self._requests)
        os.waitpid(self.pid, 0)


def _check_stress_checkpoint(ckpt, previous: int) -> int:
    """Load the checkpoint left by a kill: the old one or a newer one, whole."""
    from sdekit.train._checkpoint import read_checkpoint

    like_model, like_opt_state = _stress_trees(0)
    out = read_checkpoint(ckpt, like_model=like_model, like_opt_state=like_opt_state)
    epoch = out["state"]["epochs_completed"]
    assert epoch >= previous, (epoch, previous)
    expected = _stress_trees(epoch)
    for a, b in zip(
        jax.tree_util.tree_leaves((out["model"], out["opt_state"])),
        jax.tree_util.tree_leaves(expected),
        strict=True,
    ):
        np.testing.assert_array_equal(a, b)
    assert (out["best_model"] is not None) == bool(epoch % 2)
    assert out["config"] == {"epoch_parity": epoch % 2}
    return epoch


def _stress(args) -> dict:
    import pathlib
    import time

    from sdekit.train._checkpoint import _GENERATION_FILE, save_checkpoint

    rng = np.random.default_rng(args.seed)
    root = pathlib.Path(args.ckpt)
    ckpt = root / "run"

    def save(epoch: int) -> None:
        model, opt_state = _stress_trees(epoch)
        save_checkpoint(
            ckpt,
            model=model,
            opt_state=opt_state,
            best_model=model if epoch % 2 else None,
            state={"epochs_completed": epoch},
            config={"epoch_parity": epoch % 2},
        )

    def snapshot() -> dict[str, bytes]:
        return {
            str(p.relative_to(root)): p.read_bytes()
            for p in sorted(root.rglob("*"))
            if p.is_file() and not (p.parent == ckpt and p.name != "notes.txt")
        }

    # A first checkpoint, then the user's things around it (and one inside it) that no
    # save may touch: the names the old design used for its siblings among them.
    save(0)
    for path in [
        root / "run.old" / "thesis.tex",
        root / "run.tmp" / "data.csv",
        root / "run.old.txt",
        root / "existing.txt.old",
        ckpt / "notes.txt",
    ]:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(rng.bytes(64))
    users = snapshot()
    root_listing = sorted(p.name for p in root.iterdir())

    start = time.perf_counter()
    for epoch in range(1, 4):
        save(epoch)
    save_seconds = (time.perf_counter() - start) / 3
    current = 3

    outcomes = dict(unchanged=0, advanced=0, before_commit=0, before_clean_up=0)
    checker = _Checker(ckpt)
    for _ in range(args.kills):
        pid = os.fork()
        if pid == 0:
            # The child: save one epoch after another until killed.
            try:
                epoch = current + 1
                while True:
                    save(epoch)
                    epoch += 1
            finally:
                os._exit(0)
        time.sleep(rng.uniform(0.0, 2.5 * save_seconds))
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)

        epoch = checker.epoch(current)
        # Nothing of the user's was touched, and nothing new appeared beside the run.
        assert snapshot() == users
        assert sorted(p.name for p in root.iterdir()) == root_listing
        # Where the kill landed: before a commit (files of a newer generation than
        # state.json names), or after one and before its clean-up (older ones).
        outcomes["advanced" if epoch > current else "unchanged"] += 1
        committed = json.loads((ckpt / "state.json").read_text())["generation"]
        generations = {
            int(m.group(2)) for m in map(_GENERATION_FILE.match, os.listdir(ckpt)) if m
        }
        outcomes["before_commit"] += any(g > committed for g in generations)
        outcomes["before_clean_up"] += any(g < committed for g in generations)
        current = epoch

    checker.close()
    # The next save after all that cleans up after the killed ones.
    save(current + 1)
    out_names = sorted(os.listdir(ckpt))
    return {
        "outcomes": outcomes,
        "final_listing": out_names,
        "final_epoch": current + 1,
        "save_seconds": save_seconds,
        "users_intact": snapshot() == users,
    }


def _interrupt(args) -> dict:
    """Train until interrupted (the test sends SIGINT), with progress on stderr."""
    from sdekit.train import fit, TrainingInterrupted

    model, train, _ = shift_problem(0)
    try:
        fit(
            model,
            mse_loss,
            train,
            key=jr.key(0),
            optimizer=optax.sgd(1e-3),
            epochs=100_000,
            batch_size=16,
            checkpoint_dir=args.ckpt,
            checkpoint_every=1000,
        )
    except TrainingInterrupted as e:
        return {
            "checkpoint_dir": e.checkpoint_dir,
            "epochs_completed": e.epochs_completed,
            "epochs": e.epochs,
            "message": str(e),
        }
    return {"finished": True}


def distributed_problem():
    """The problem the two-process test trains, and the arguments of both halves."""
    model, train, valid = shift_problem(4, np.float64)
    kwargs = dict(
        key=jr.key(7),
        optimizer=optax.adam(0.02),
        batch_size=16,
        valid_data=valid,
        config={"problem": "shift", "seed": 4},
    )
    return model, train, kwargs


def _distributed(args) -> dict:
    """One process of a multi-process run: three epochs, then a resume to six."""
    from sdekit.train import _fit, fit, init_distributed

    jax.config.update("jax_enable_x64", True)
    joined = init_distributed(args.coordinator, args.num_processes, args.process_id)
    model, train, kwargs = distributed_problem()

    placed, saves = [], []
    real_shard, real_save = _fit.shard_batch, _fit.save_checkpoint

    def spy_shard(batch, mesh):
        out = real_shard(batch, mesh)
        leaf = jax.tree_util.tree_leaves(out)[0]
        placed.append(
            {
                "global_shape": list(leaf.shape),
                "local_shards": [list(s.data.shape) for s in leaf.addressable_shards],
            }
        )
        return out

    def spy_save(directory, **save_kwargs):
        saves.append(save_kwargs["state"]["epochs_completed"])
        real_save(directory, **save_kwargs)

    _fit.shard_batch, _fit.save_checkpoint = spy_shard, spy_save
    fit(model, mse_loss, train, epochs=3, checkpoint_dir=args.ckpt, **kwargs)
    result = fit(
        model, mse_loss, train, epochs=6, checkpoint_dir=args.ckpt, resume=True, **kwargs
    )
    leaf = result.model.weight
    return {
        "joined": joined,
        "process_index": jax.process_index(),
        "process_count": jax.process_count(),
        "num_devices": len(jax.devices()),
        "params": [
            np.asarray(x.addressable_data(0)).tolist()
            for x in jax.tree_util.tree_leaves(result.model)
        ],
        "param_replicated": bool(leaf.sharding.is_fully_replicated),
        "param_devices": len(leaf.sharding.device_set),
        "history_train": [h["train"] for h in result.history],
        "history_valid": [h["valid"] for h in result.history],
        "best_epoch": result.best_epoch,
        "placed": placed[:1],
        "saves": saves,
    }


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "command", choices=["resume", "sharded", "stress", "interrupt", "distributed"]
    )
    parser.add_argument("--out", required=True)
    parser.add_argument("--ckpt")
    parser.add_argument("--kill-after", type=int, default=None)
    parser.add_argument("--reference", action="store_true")
    parser.add_argument("--kills", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--coordinator")
    parser.add_argument("--num-processes", type=int)
    parser.add_argument("--process-id", type=int)
    args = parser.parse_args(argv)
    commands = dict(
        resume=_resume,
        sharded=_sharded,
        stress=_stress,
        interrupt=_interrupt,
        distributed=_distributed,
    )
    out = commands[args.command](args)
    with open(args.out, "w") as f:
        json.dump(out, f)


if __name__ == "__main__":
    main(sys.argv[1:])
