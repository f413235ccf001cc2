import numpy as np
import pytest

from sdekit.demo import (
    crps_loss,
    OrnsteinUhlenbeck,
    ou_demo,
    simulate_observations,
    TRUE_PARAMETERS,
)


@pytest.mark.slow  # 40 epochs through the solver: about a minute on two cores
def test_demo_recovers_ou_parameters(tmp_path):
    # From a start at (theta, mu, sigma) = (0.5, 0.0, 1.5) the fit must land near the truth
    # (1.5, 0.5, 0.6); the tolerances are ~3x the errors seen on 256 paths.
    out = ou_demo(
        seed=1,
        num_paths=256,
        epochs=40,
        checkpoint_dir=tmp_path / "ckpt",
        progress=False,
    )
    err = out["relative_error"]
    assert err["theta"] < 0.25 and err["sigma"] < 0.15, out
    assert abs(out["fitted"]["mu"] - TRUE_PARAMETERS["mu"]) < 0.15, out
    # The fitted model scores as well as the truth on held-out paths (a proper score).
    assert out["valid_crps_fitted"] < out["valid_crps_true"] * 1.03
    assert (tmp_path / "ckpt" / "state.json").exists()


def test_crps_prefers_the_truth():
    import jax.random as jr

    data = simulate_observations(jr.key(3), 256)
    batch = {k: np.asarray(v) for k, v in data.items()}
    truth = crps_loss(OrnsteinUhlenbeck(**TRUE_PARAMETERS), batch, jr.key(4))[0]
    wrong = crps_loss(
        OrnsteinUhlenbeck(theta=1.5, mu=0.5, sigma=1.2), batch, jr.key(4)
    )[0]
    assert float(truth) < float(wrong)


def test_demo_rejects_tiny_data():
    with pytest.raises(ValueError, match="num_paths"):
        ou_demo(num_paths=2, progress=False)


def test_demo_out_is_checked_before_any_work(capsys, tmp_path):
    import equinox as eqx
    import optax

    from sdekit.cli import main
    from sdekit.train import save_checkpoint

    # A finished demo run, as `sdekit demo --paths 16 --epochs 3 --out run` leaves it.
    run = tmp_path / "run"
    model = OrnsteinUhlenbeck(**TRUE_PARAMETERS)
    save_checkpoint(
        run,
        model=model,
        opt_state=optax.adam(0.05).init(eqx.filter(model, eqx.is_inexact_array)),
        state={"epochs_completed": 3, "epochs": 3, "stopped_early": False},
        config=dict(job="ou_demo", seed=0, paths=16, lr=0.05),
    )
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    argv = ["demo", "--paths", "16", "--epochs", "3", "--out", str(run)]
    # Refused, naming both ways on (demo used to resume by default while fit started
    # over; one rule now).
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "epoch 3 of 3, finished" in err and "--resume" in err and "--overwrite" in err
    # Another seed cannot resume it: the setting is named as a flag, with both values.
    assert main([*argv, "--seed", "1", "--resume"]) == 1
    assert "--seed 0 there, 1 now" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="2"):
        main([*argv, "--resume", "--overwrite"])  # argparse refuses both
    assert "not allowed with argument" in capsys.readouterr().err
    # A folder that is not a checkpoint, or a file: refused whatever the flags.
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    for target in [tmp_path / "mine", tmp_path / "mine" / "notes.txt"]:
        for flag in ["--resume", "--overwrite"]:
            assert main(["demo", "--paths", "16", "--out", str(target), flag]) == 1
            assert "sdekit: error:" in capsys.readouterr().err
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep"
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before
    assert main(["demo", "--paths", "2"]) == 1
    assert "num_paths" in capsys.readouterr().err


@pytest.mark.slow  # three demo runs through the solver
def test_demo_command_line(capsys, tmp_path, monkeypatch):
    import json
    import shlex

    from sdekit.cli import main
    from sdekit.train import _fit, load_report

    run = tmp_path / "run"
    real_shard_batch = _fit.shard_batch

    def interrupt_at(call: int):
        calls = []

        def shard_batch(batch, mesh):
            calls.append(None)
            if len(calls) == call:
                raise KeyboardInterrupt  # what Ctrl-C raises
            return real_shard_batch(batch, mesh)

        return shard_batch

    # Ctrl-C in epoch 2 (one training and one validation batch an epoch: the third
    # batch is epoch 2's): epoch 1 is saved, and the command that resumes it printed.
    monkeypatch.setattr(_fit, "shard_batch", interrupt_at(3))
    argv = ["demo", "--paths", "16", "--epochs", "3", "--out", str(run), "--json"]
    assert main(argv) == 130
    monkeypatch.undo()
    err = capsys.readouterr().err
    assert "interrupted after epoch 1 of 3; checkpoint saved in" in err
    command = shlex.split(err.split("resume with: ")[1])
    assert command[:2] == ["sdekit", "demo"] and "--resume" in command

    # That command finishes the run; the report lands beside the checkpoint.
    assert main(command[1:]) == 0
    captured = capsys.readouterr()
    out = json.loads(captured.out.strip().splitlines()[-1])
    assert set(out["fitted"]) == {"theta", "mu", "sigma"} and out["epochs"] == 3
    assert "resumed from epoch 1 of 3" in captured.err
    assert load_report(run) == out

    # The same command again is refused; --overwrite starts afresh, and replaces the
    # old run only at its first save: an interrupt before that leaves it whole.
    assert main(argv) == 1
    assert "--resume" in capsys.readouterr().err
    monkeypatch.setattr(_fit, "shard_batch", interrupt_at(1))
    assert main([*argv, "--overwrite"]) == 130
    monkeypatch.undo()
    assert "nothing was saved" in capsys.readouterr().err
    assert load_report(run) == out
