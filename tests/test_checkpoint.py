"""Checkpoints: the format, atomic saves, and the rule that a save replaces only an
sdekit checkpoint (issue 10: `--out` used to delete users' folders and files)."""

import json
import os
import pathlib
import subprocess
import sys

import equinox as eqx
import jax.numpy as jnp
import jax.random as jr
import jax.tree_util as jtu
import numpy as np
import optax
import pytest
from _train_script import mse_loss, shift_problem

from sdekit.train import (
    _checkpoint,
    check_checkpoint_dir,
    fit,
    load_checkpoint,
    load_model,
    load_report,
    save_checkpoint,
    save_report,
)


ROOT = pathlib.Path(__file__).resolve().parents[1]
SCRIPT = pathlib.Path(__file__).with_name("_train_script.py")


def _assert_trees_equal(a, b):
    a, b = eqx.filter(a, eqx.is_array), eqx.filter(b, eqx.is_array)
    assert jtu.tree_structure(a) == jtu.tree_structure(b)
    for x, y in zip(jtu.tree_leaves(a), jtu.tree_leaves(b)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def _mlp(width: int, seed: int = 0):
    return eqx.nn.MLP(3, 2, width, 2, key=jr.key(seed))


def _opt_state(model):
    optimizer = optax.adam(1e-3)
    params = eqx.filter(model, eqx.is_inexact_array)
    state = optimizer.init(params)
    # One update, so that a freshly initialised state would not pass for it.
    grads = jtu.tree_map(jnp.ones_like, params)
    return optimizer.update(grads, state, params)[1]


def _save(directory, model, epoch, config=None, epochs=None):
    state = {"epochs_completed": epoch}
    if epochs is not None:
        state["epochs"] = epochs
    save_checkpoint(
        directory,
        model=model,
        opt_state=_opt_state(model),
        state=state,
        config={"epoch": epoch} if config is None else config,
    )


def _load(directory):
    like = _mlp(8, seed=9)
    return load_checkpoint(directory, like_model=like, like_opt_state=_opt_state(like))


def _tree(path: pathlib.Path) -> dict[str, bytes | None]:
    """Every file and directory under `path`, with the bytes of the files."""
    return {
        str(p.relative_to(path)): (p.read_bytes() if p.is_file() else None)
        for p in sorted(path.rglob("*"))
    }


#
# Format and atomic saves
#


def test_checkpoint_round_trip(tmp_path):
    directory = tmp_path / "ckpt"
    model, best = _mlp(8, seed=0), _mlp(8, seed=1)
    opt_state = _opt_state(model)
    state = {"epochs_completed": 3, "history": [{"loss": 0.5}], "best_epoch": 1}
    config = {"width": 8, "name": "mlp", "lr": [1e-3, 1e-4]}
    save_checkpoint(
        directory,
        model=model,
        opt_state=opt_state,
        state=state,
        config=config,
        best_model=best,
    )
    assert sorted(os.listdir(directory)) == [
        ".sdekit-checkpoint",
        "best_model.1.eqx",
        "config.json",
        "model.1.eqx",
        "opt_state.1.eqx",
        "state.json",
    ]
    assert sorted(os.listdir(tmp_path)) == ["ckpt"]
    assert json.loads((directory / "config.json").read_text()) == config

    like_model = _mlp(8, seed=2)
    like_opt_state = optax.adam(1e-3).init(eqx.filter(like_model, eqx.is_inexact_array))
    loaded = load_checkpoint(
        directory, like_model=like_model, like_opt_state=like_opt_state
    )
    _assert_trees_equal(loaded[0], model)
    _assert_trees_equal(loaded[1], opt_state)
    assert loaded[2] == state and loaded[3] == config
    _assert_trees_equal(load_model(directory, like_model), best)
    _assert_trees_equal(load_model(directory, like_model, best=False), model)
    # A shape-only `like` is enough.
    _assert_trees_equal(load_model(directory, eqx.filter_eval_shape(_mlp, 8)), best)

    # A second save replaces the first generation's files by the second's.
    _save(directory, _mlp(8, seed=3), 4)
    assert sorted(os.listdir(directory)) == [
        ".sdekit-checkpoint",
        "config.json",
        "model.2.eqx",
        "opt_state.2.eqx",
        "state.json",
    ]
    _assert_trees_equal(_load(directory)[0], _mlp(8, seed=3))


def test_checkpoint_mismatch_errors(tmp_path):
    directory = tmp_path / "ckpt"
    model = _mlp(8)
    save_checkpoint(directory, model=model, opt_state=_opt_state(model), state={})
    with pytest.raises(ValueError, match=r"layers\[0\]\.weight") as info:
        load_model(directory, _mlp(9))
    assert "(8, 3)" in str(info.value) and "(9, 3)" in str(info.value)
    with pytest.raises(FileNotFoundError, match="No complete checkpoint.*does not exist"):
        load_model(tmp_path / "elsewhere", model)


def test_crash_before_commit_keeps_previous(tmp_path, monkeypatch):
    directory = tmp_path / "ckpt"
    previous, new = _mlp(8, seed=0), _mlp(8, seed=1)
    _save(directory, previous, 1)

    def crash(src, dst):
        raise OSError("simulated crash")

    # The commit is the `os.replace` of state.json: fail it.
    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="simulated crash"):
        _save(directory, new, 2)
    monkeypatch.undo()
    # The new generation was written in full beside the previous one, which still loads.
    assert {"model.2.eqx", "state.json.partial"} <= set(os.listdir(directory))
    model, opt_state, state, config = _load(directory)
    _assert_trees_equal(model, previous)
    _assert_trees_equal(opt_state, _opt_state(previous))
    assert state == {"epochs_completed": 1} and config == {"epoch": 1}

    # The next save clears the leftovers and lands.
    _save(directory, new, 3)
    model, _, state, _ = _load(directory)
    _assert_trees_equal(model, new)
    assert state == {"epochs_completed": 3}
    assert sorted(os.listdir(directory)) == [
        ".sdekit-checkpoint",
        "config.json",
        "model.3.eqx",
        "opt_state.3.eqx",
        "state.json",
    ]
    assert sorted(os.listdir(tmp_path)) == ["ckpt"]


def test_crash_after_commit_loads_new(tmp_path, monkeypatch):
    directory = tmp_path / "ckpt"
    previous, new = _mlp(8, seed=0), _mlp(8, seed=1)
    _save(directory, previous, 1)

    def crash(directory, keep):
        raise OSError("simulated crash")

    monkeypatch.setattr(_checkpoint, "_remove_stale", crash)
    with pytest.raises(OSError, match="simulated crash"):
        _save(directory, new, 2)
    monkeypatch.undo()
    # Committed: the new checkpoint loads, the old generation's files are still there.
    assert {"model.1.eqx", "model.2.eqx"} <= set(os.listdir(directory))
    model, _, state, _ = _load(directory)
    _assert_trees_equal(model, new)
    assert state == {"epochs_completed": 2}


def test_version_1_checkpoint_loads_and_is_upgraded_in_place(tmp_path):
    # The layout sdekit 0.1 wrote: fixed file names, the config in its own file.
    directory = tmp_path / "old"
    directory.mkdir()
    model = _mlp(8, seed=4)
    eqx.tree_serialise_leaves(directory / "model.eqx", model)
    eqx.tree_serialise_leaves(directory / "opt_state.eqx", _opt_state(model))
    (directory / "config.json").write_text(json.dumps({"width": 8}))
    manifest = {
        "model.eqx": _checkpoint._manifest(model),
        "opt_state.eqx": _checkpoint._manifest(_opt_state(model)),
    }
    state = {"epochs_completed": 2, "stopped_early": False}
    (directory / "state.json").write_text(
        json.dumps({"format_version": 1, "state": state, "manifest": manifest})
    )
    (directory / "notes.txt").write_text("mine")
    loaded = _load(directory)
    _assert_trees_equal(loaded[0], model)
    assert loaded[2] == state and loaded[3] == {"width": 8}
    assert check_checkpoint_dir(directory, resume=True, config={"width": 8}) == "resume"

    _save(directory, _mlp(8, seed=5), 3)
    assert sorted(os.listdir(directory)) == [
        ".sdekit-checkpoint",
        "config.json",
        "model.1.eqx",
        "notes.txt",
        "opt_state.1.eqx",
        "state.json",
    ]
    assert (directory / "notes.txt").read_text() == "mine"
    _assert_trees_equal(_load(directory)[0], _mlp(8, seed=5))


#
# A save replaces only a checkpoint (the cases of issue 10)
#


@pytest.mark.parametrize("content", ["subfolder", "notes"])
def test_save_refuses_a_directory_that_is_not_a_checkpoint(tmp_path, content):
    runs = tmp_path / "myruns"
    if content == "subfolder":
        # An earlier run kept in a subfolder: `--out runs` used to wipe every run.
        _save(runs / "earlier", _mlp(8), 1)
    else:
        runs.mkdir()
        (runs / "notes.txt").write_text("my notes")
    before = _tree(tmp_path)
    with pytest.raises(ValueError, match="does not hold an sdekit checkpoint") as info:
        _save(runs, _mlp(8, seed=1), 1)
    assert "\n" not in str(info.value)
    assert _tree(tmp_path) == before
    for flags in [{}, {"resume": True}, {"overwrite": True}]:
        with pytest.raises(ValueError, match="does not hold an sdekit checkpoint"):
            check_checkpoint_dir(runs, **flags)


def test_save_refuses_a_file(tmp_path):
    existing = tmp_path / "existing.txt"
    existing.write_text("precious")
    with pytest.raises(ValueError, match="is a file"):
        _save(existing, _mlp(8), 1)
    for flags in [{}, {"resume": True}, {"overwrite": True}]:
        with pytest.raises(ValueError, match="is a file"):
            check_checkpoint_dir(existing, **flags)
    assert _tree(tmp_path) == {"existing.txt": b"precious"}


def test_a_save_touches_nothing_of_the_users(tmp_path):
    run = tmp_path / "run"
    _save(run, _mlp(8), 1)
    users = {
        "run.old/thesis.tex": b"a",
        "run.tmp/data.csv": b"b",
        "existing.txt.old": b"c",
        "run/notes.txt": b"d",
        # Inside the checkpoint, names that look like its own but are not ours to take.
        "run/model.eqx.bak": b"e",
        "run/sub/model.1.eqx": b"f",
    }
    for name, data in users.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(data)
    for epoch in (2, 3):
        _save(run, _mlp(8, seed=epoch), epoch)
    tree = _tree(tmp_path)
    for name, data in users.items():
        assert tree[name] == data
    assert sorted(os.listdir(tmp_path)) == ["existing.txt.old", "run", "run.old", "run.tmp"]


def test_check_checkpoint_dir(tmp_path, capsys):
    config = {"model": "lnsde", "batch_size": 128, "missing": 0.5}
    run = tmp_path / "run"

    # Nothing there, or an empty directory: a fresh run; --resume says it found nothing.
    assert check_checkpoint_dir(run) == "fresh"
    assert capsys.readouterr().err == ""
    assert check_checkpoint_dir(run, resume=True, config=config) == "fresh"
    assert "nothing to resume" in capsys.readouterr().err
    assert check_checkpoint_dir(run, resume=True, quiet=True) == "fresh"
    assert capsys.readouterr().err == ""
    run.mkdir()
    assert check_checkpoint_dir(run, config=config) == "fresh"
    assert check_checkpoint_dir(run, resume=True) == "fresh"
    assert "is empty" in capsys.readouterr().err

    # An unfinished run (rerunning the command after Ctrl-C): refused, saying how far it
    # got and naming both ways on.
    _save(run, _mlp(8), 12, config=config, epochs=100)
    with pytest.raises(ValueError) as info:
        check_checkpoint_dir(run, config=config)
    message = str(info.value)
    assert "epoch 12 of 100, unfinished" in message
    assert "--resume" in message and "--overwrite" in message
    assert check_checkpoint_dir(run, resume=True, config=config) == "resume"
    assert check_checkpoint_dir(run, overwrite=True, config=config) == "overwrite"
    with pytest.raises(ValueError, match="contradict"):
        check_checkpoint_dir(run, resume=True, overwrite=True)

    # Another run's settings: named as flags, with both values.
    other = {**config, "batch_size": 64, "missing": 0.7}
    with pytest.raises(ValueError) as info:
        check_checkpoint_dir(run, resume=True, config=other)
    message = str(info.value)
    assert "--batch-size 128 there, 64 now" in message
    assert "--missing 0.5 there, 0.7 now" in message
    assert "--model" not in message and "--overwrite" in message
    assert check_checkpoint_dir(run, overwrite=True, config=other) == "overwrite"

    # A finished run says so.
    _save(run, _mlp(8), 100, config=config, epochs=100)
    with pytest.raises(ValueError, match="epoch 100 of 100, finished"):
        check_checkpoint_dir(run)


def test_an_interrupted_first_save_counts_as_empty(tmp_path, monkeypatch):
    run = tmp_path / "run"

    def crash(src, dst):
        raise OSError("simulated crash")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError):
        _save(run, _mlp(8), 1)
    monkeypatch.undo()
    # The marker proves the leftovers are sdekit's: nothing loadable, nothing to lose.
    assert (run / ".sdekit-checkpoint").is_file() and not (run / "state.json").exists()
    assert check_checkpoint_dir(run) == "fresh"
    _save(run, _mlp(8), 1)
    assert _load(run)[2] == {"epochs_completed": 1}


def test_fit_refuses_before_any_work(tmp_path):
    model, train, _ = shift_problem(0)
    calls = []

    def loss_fn(model, batch, key):
        calls.append(None)
        return mse_loss(model, batch, key)

    kwargs = dict(key=jr.key(0), epochs=1, batch_size=16, progress=False)
    (tmp_path / "folder").mkdir()
    (tmp_path / "folder" / "notes.txt").write_text("mine")
    (tmp_path / "existing.txt").write_text("mine")
    before = _tree(tmp_path)
    for target, message in [("folder", "not hold an sdekit"), ("existing.txt", "file")]:
        for flags in [{}, {"overwrite": True}]:
            with pytest.raises(ValueError, match=message):
                fit(model, loss_fn, train, checkpoint_dir=tmp_path / target, **kwargs, **flags)
    assert calls == [] and _tree(tmp_path) == before

    # A finished run in the way of `resume=False`: refused, in Python's words.
    fit(model, loss_fn, train, checkpoint_dir=tmp_path / "run", **kwargs)
    calls.clear()
    with pytest.raises(ValueError, match=r"resume=True .* overwrite=True"):
        fit(model, loss_fn, train, checkpoint_dir=tmp_path / "run", resume=False, **kwargs)
    assert calls == []


#
# Reports
#


def test_report_round_trip_and_staleness(tmp_path):
    run = tmp_path / "run"
    with pytest.raises(ValueError, match="not an sdekit checkpoint"):
        save_report(tmp_path, {"test_mse": 0.1})
    _save(run, _mlp(8), 3, epochs=5)
    with pytest.raises(FileNotFoundError, match="epoch 3 of 5, unfinished"):
        load_report(run)
    report = {"test_mse": 0.125, "epochs": 5, "valid": {"mse": 0.5}}
    save_report(run, report)
    assert load_report(run) == report
    assert not any(name.endswith(".partial") for name in os.listdir(run))
    with pytest.raises(ValueError, match="JSON-serialisable"):
        save_report(run, {"x": object()})
    assert load_report(run) == report
    # A later save moves the run on: the report no longer describes it.
    _save(run, _mlp(8), 4, epochs=5)
    assert not (run / "report.json").exists()


#
# SIGKILL at random moments
#


def test_sigkill_during_saves_never_loses_a_checkpoint_or_a_users_file(tmp_path):
    out = tmp_path / "stress.json"
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    env["PYTHONPATH"] = os.pathsep.join(p for p in [env.get("PYTHONPATH"), str(ROOT)] if p)
    proc = subprocess.run(
        [
            sys.executable,
            "-W",
            "error::RuntimeWarning",
            str(SCRIPT),
            "stress",
            "--ckpt",
            str(tmp_path / "root"),
            "--kills",
            "200",
            "--seed",
            "0",
            "--out",
            str(out),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    # The script asserts after every kill that the checkpoint loads whole (the old one
    # or a newer one) and that no file of the user's changed.
    assert proc.returncode == 0, proc.stderr
    data = json.loads(out.read_text())
    outcomes = data["outcomes"]
    assert sum(outcomes[k] for k in ("unchanged", "advanced")) == 200
    # The kills landed on both sides of commits, and inside the windows that matter.
    assert min(outcomes.values()) >= 10, outcomes
    assert data["users_intact"]
    assert [n for n in data["final_listing"] if n != "notes.txt"] == sorted(
        [".sdekit-checkpoint", "config.json", "state.json"]
        + [f"{r}.{g}.eqx" for r, g in _final_files(tmp_path / "root" / "run")]
    )


def _final_files(run):
    files = json.loads((run / "state.json").read_text())["files"]
    return [(role, name.split(".")[1]) for role, name in files.items()]
