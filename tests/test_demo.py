import numpy as np
import pytest

from sdekit.demo import (
    crps_loss,
    OrnsteinUhlenbeck,
    ou_demo,
    simulate_observations,
    TRUE_PARAMETERS,
)


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


def test_demo_command_line(capsys):
    import json

    from sdekit.cli import main

    assert main(["demo", "--paths", "64", "--epochs", "3", "--json"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(out["fitted"]) == {"theta", "mu", "sigma"} and out["epochs"] == 3
    assert main(["demo", "--paths", "2"]) == 1
    assert "num_paths" in capsys.readouterr().err
