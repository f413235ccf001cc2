"""Data parallelism over processes (`jax.distributed`): two CPU processes on this
machine, talking through gloo, train exactly what one process trains (issue 9, item 5)."""

import json
import os
import pathlib
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest
from _train_script import distributed_problem, mse_loss

from sdekit.train import fit, init_distributed


ROOT = pathlib.Path(__file__).resolve().parents[1]
SCRIPT = pathlib.Path(__file__).with_name("_train_script.py")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def test_two_processes_train_what_one_process_trains(tmp_path):
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    env["PYTHONPATH"] = os.pathsep.join(p for p in [env.get("PYTHONPATH"), str(ROOT)] if p)
    # One CPU device a process: the mesh has two devices, one in each process.
    env.pop("XLA_FLAGS", None)
    coordinator = f"localhost:{_free_port()}"
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                str(SCRIPT),
                "distributed",
                "--coordinator",
                coordinator,
                "--num-processes",
                "2",
                "--process-id",
                str(i),
                "--ckpt",
                str(tmp_path / "run"),
                "--out",
                str(tmp_path / f"process{i}.json"),
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    try:
        logs = [p.communicate(timeout=300)[1] for p in procs]
    finally:
        for p in procs:
            p.kill()
    for p, log in zip(procs, logs):
        assert p.returncode == 0, log
    runs = [json.loads((tmp_path / f"process{i}.json").read_text()) for i in range(2)]
    for i, run in enumerate(runs):
        assert run["joined"] and run["process_index"] == i
        assert run["process_count"] == 2 and run["num_devices"] == 2
        # The global batch of 16 spans both processes; each feeds its 8 examples.
        assert run["placed"] == [{"global_shape": [16, 4], "local_shards": [[8, 4]]}]
        assert run["param_replicated"] and run["param_devices"] == 2
    # Process 0 alone writes checkpoints (3 epochs, then 3 more after the resume) and
    # progress; process 1 waits for each save.
    assert runs[0]["saves"] == [1, 2, 3, 4, 5, 6] and runs[1]["saves"] == []
    assert "resumed from epoch 3 of 6" in logs[0] and "epoch 1/3" in logs[0]
    assert "epoch" not in logs[1]
    saved = json.loads((tmp_path / "run" / "state.json").read_text())["state"]
    assert saved["epochs_completed"] == 6

    # One process, one device, the same global batch: the same steps.
    with jax.enable_x64(True):
        model, train, kwargs = distributed_problem()
        one = fit(
            model,
            mse_loss,
            train,
            epochs=6,
            progress=False,
            devices=jax.devices()[:1],
            **kwargs,
        )
        params = [np.asarray(x) for x in jax.tree_util.tree_leaves(one.model)]
    for run in runs:
        assert run["best_epoch"] == one.best_epoch
        # Only the order of the float64 reductions differs (an all-reduce of two
        # halves against one sum).
        for a, b in zip(run["params"], params, strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-13)
        np.testing.assert_allclose(
            [h["loss"] for h in run["history_valid"]],
            [h["valid"]["loss"] for h in one.history],
            rtol=1e-10,
        )
    assert np.linalg.norm(params[0]) > 0.5  # it did train


def test_init_distributed_settings(monkeypatch):
    for name in [
        "JAX_COORDINATOR_ADDRESS",
        "JAX_NUM_PROCESSES",
        "JAX_PROCESS_ID",
        "SLURM_STEP_NUM_TASKS",
        "SLURM_NTASKS",
        "OMPI_COMM_WORLD_SIZE",
    ]:
        monkeypatch.delenv(name, raising=False)
    # Nothing given, no launcher: this process runs alone.
    assert init_distributed() is False
    # A one-task Slurm job is an ordinary run.
    monkeypatch.setenv("SLURM_NTASKS", "1")
    assert init_distributed() is False
    assert init_distributed("localhost:1234", 1, 0) is False
    with pytest.raises(ValueError, match="--num-processes, --process-id missing"):
        init_distributed("localhost:1234")
    monkeypatch.setenv("JAX_NUM_PROCESSES", "2")
    with pytest.raises(ValueError, match="--process-id missing"):
        init_distributed("localhost:1234")
    with pytest.raises(ValueError, match="HOST:PORT"):
        init_distributed("localhost", 2, 0)
    with pytest.raises(ValueError, match=r"--process-id must be in 0..1"):
        init_distributed("localhost:1234", 2, 2)
    monkeypatch.setenv("JAX_PROCESS_ID", "x")
    with pytest.raises(ValueError, match="JAX_PROCESS_ID='x' must be an integer"):
        init_distributed()
    # Nothing above joined a run.
    assert jax.process_count() == 1
