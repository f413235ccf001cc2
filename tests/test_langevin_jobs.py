"""`sdekit fit --model langevin-flow`, `sdekit evaluate` and `sdekit predict` through the
command line, and the bad inputs they refuse before any training."""

import contextlib
import io
import json

import numpy as np
import pytest

from sdekit.cli import _main
from sdekit.data import lorenz_spikes, save_spikes
from sdekit.langevin import co_bps


@pytest.fixture(autouse=True)
def no_debug(monkeypatch):
    monkeypatch.delenv("SDEKIT_DEBUG", raising=False)


TINY = [
    "--heldout-neurons", "2", "--forward-bins", "2", "--steps", "8", "--hidden", "8",
    "--groups", "2", "--sites", "2", "--size", "8", "--feedforward", "8",
    "--eval-passes", "2",
]  # fmt: skip


def _tiny_data(path):
    data = lorenz_spikes(
        num_conditions=6, trials_per_condition=8, num_bins=12, num_neurons=8, seed=1
    )
    save_spikes(path, data)
    return data


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """One tiny fit shared by the tests below: (stdout lines, data, file, checkpoint)."""
    tmp = tmp_path_factory.mktemp("langevin-fit")
    path, out = tmp / "tiny.npz", tmp / "run"
    data = _tiny_data(path)
    argv = ["fit", "--model", "langevin-flow", "--data", str(path), "--out", str(out)]
    # A learning rate at which the validation score falls after the first epochs, so
    # that the one-standard-error rule keeps another epoch than the best score's.
    argv += ["--lr", "0.03"]
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        status = _main.main([*argv, *TINY, "--json", "--quiet"])
    assert status == 0
    return stdout.getvalue().strip().splitlines(), data, path, out


def test_fit_reports_every_metric_and_evaluate_reproduces(fitted, capsys):
    lines, data, _, out = fitted
    report = json.loads(lines[-1])
    for key in (
        "co_bps",
        "fp_bps",
        "rate_r2",
        "vel_r2",
        "psth_r2",
        "epochs",
        "seconds",
    ):
        assert np.isfinite(report[key]), key
    for name in ("smoothing", "deterministic"):
        assert np.isfinite(report["baselines"][name]["co_bps"])
    assert "fp_bps" not in report["baselines"]["smoothing"]
    assert report["neurons"] == 8 and report["heldout_neurons"] == 2
    assert report["forward_bins"] == 2 and report["test_trials"] == data.test.num_trials
    assert json.loads((out / "config.json").read_text())["family"] == "langevin"
    assert "langevin-flow on tiny.npz" in lines[0] and "smoothing baseline" in lines[1]
    # The kept epoch follows the one-standard-error rule on the validation score: the
    # latest within its epoch's standard error of the best score seen by then.
    state = json.loads((out / "state.json").read_text())["state"]
    valid = [entry["valid"] for entry in state["history"]]
    record, kept = -np.inf, None
    for epoch, scores in enumerate(valid):
        assert scores["score_se"] > 0
        record = max(record, scores["score"])
        if scores["score"] >= record - scores["score_se"]:
            kept = epoch
    assert report["best_epoch"] == kept
    assert kept != int(np.argmax([scores["score"] for scores in valid]))

    assert _main.main(["evaluate", "--checkpoint", str(out), "--json"]) == 0
    again = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    for key in ("co_bps", "fp_bps", "rate_r2", "vel_r2", "psth_r2"):
        assert again[key] == report[key]
    assert again["baselines"] == report["baselines"]


def test_predict_gives_the_evaluated_rates(fitted, tmp_path, capsys):
    lines, data, _, out = fitted
    report = json.loads(lines[-1])
    counts = tmp_path / "test.npy"
    np.save(counts, data.test.spikes)  # all neurons and bins: the model reads its part
    rates_file = tmp_path / "rates" / "r.npy"
    argv = ["predict", "--checkpoint", str(out), "--data", str(counts)]
    assert _main.main([*argv, "--out", str(rates_file), "--json"]) == 0
    answer = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    rates = np.load(rates_file)
    assert rates.shape == (data.test.num_trials, 12, 8) and answer["trials"] == 10
    assert np.all(rates > 0)
    got = co_bps(rates[:, :10, 6:], data.test.spikes[:, :10, 6:])
    assert got == report["co_bps"]
    # Only the held-in neurons of the observed bins, as .npz: the same rates.
    np.savez(tmp_path / "heldin.npz", spikes=data.test.spikes[:, :10, :6])
    again = tmp_path / "again.npy"
    argv[-1] = str(tmp_path / "heldin.npz")
    assert _main.main([*argv, "--out", str(again)]) == 0
    np.testing.assert_array_equal(np.load(again), rates)
    np.save(tmp_path / "bad.npy", data.test.spikes[:, :7])
    argv[-1] = str(tmp_path / "bad.npy")
    assert _main.main([*argv, "--out", str(again)]) == 1
    assert "observed bins" in capsys.readouterr().err


def _fails(argv, capsys, message):
    assert _main.main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("sdekit: error:") and message in err, err
    assert len(err.splitlines()) == 1


def test_bad_input_is_refused_before_training(tmp_path, capsys):
    path = tmp_path / "tiny.npz"
    _tiny_data(path)
    base = ["fit", "--model", "langevin-flow", "--out", str(tmp_path / "run")]
    _fails([*base, "--data", str(path), "--heldout-neurons", "8"], capsys,
           "--heldout-neurons must be an integer in [0, 7]")  # fmt: skip
    _fails(
        [*base, "--data", str(path), "--forward-bins", "12"], capsys, "--forward-bins"
    )
    bad = tmp_path / "negative.npz"
    np.savez(bad, train_spikes=-np.ones((4, 5, 3)), test_spikes=np.ones((2, 5, 3)))
    _fails([*base, "--data", str(bad)], capsys, "negative")
    np.savez(bad, train_spikes=np.ones((4, 5, 3)))
    _fails([*base, "--data", str(bad)], capsys, "lacks test_spikes")
    np.savez(bad, train_spikes=np.ones((4, 5)), test_spikes=np.ones((4, 5)))
    _fails([*base, "--data", str(bad)], capsys, "(trials, bins, neurons)")
    nwb = tmp_path / "broken.nwb"
    nwb.write_text("not HDF5")
    pytest.importorskip("pynwb")
    _fails([*base, "--data", str(nwb)], capsys, "cannot be read as an NWB file")
    _fails([*base, "--dynamics", "discrete", "--inferred-input"], capsys,
           "--inferred-input")  # fmt: skip
    _fails([*base, "--data", str(tmp_path / "x.csv")], capsys, ".npz")
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_a_small_fit_beats_the_smoothing_baseline(tmp_path, capsys):
    # A reduced Lorenz set (20 conditions x 12 trials): the flow must beat the
    # benchmark's smoothing baseline on held-out neurons.
    data = lorenz_spikes(num_conditions=20, trials_per_condition=12, seed=4)
    path = tmp_path / "lorenz.npz"
    save_spikes(path, data)
    argv = ["fit", "--model", "langevin-flow", "--data", str(path), "--no-baseline",
            "--heldout-neurons", "7", "--steps", "600", "--eval-passes", "8",
            "--out", str(tmp_path / "run"), "--json", "--quiet"]  # fmt: skip
    assert _main.main(argv) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["co_bps"] > report["baselines"]["smoothing"]["co_bps"]
