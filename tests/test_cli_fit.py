"""`sdekit fit`, `sdekit evaluate` and `sdekit predict` of the stable family through
the command line."""

import contextlib
import io
import json
import shutil
import warnings

import numpy as np
import pytest

import sdekit.stable as st
from sdekit.cli import _main
from sdekit.data import drop_observations, TimeSeriesDataset
from sdekit.stable import _jobs as _stable_jobs


@pytest.fixture(autouse=True)
def no_debug(monkeypatch):
    monkeypatch.delenv("SDEKIT_DEBUG", raising=False)


def _toy(path, n=100, length=20, seed=1, train=70):
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 2
    t = np.linspace(0, 1, length)
    values = (2 * labels - 1)[:, None] * 1.5 * t[None] + 0.4 * rng.normal(
        size=(n, length)
    )
    np.savez(
        path,
        values=values,
        labels=labels,
        times=t,
        split=np.where(np.arange(n) < train, "train", "test"),
    )
    return str(path)


SMALL = [
    "--epochs",
    "20",
    "--hidden",
    "16",
    "--depth",
    "1",
    "--steps",
    "10",
    "--lr",
    "1e-2",
]


FIT = ["--model", "lsde", "--missing", "0.3", "--seed", "2", "--json", *SMALL]


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """One small `sdekit fit` shared by the tests below: (stdout lines, data file,
    checkpoint directory)."""
    tmp = tmp_path_factory.mktemp("cli-fit")
    data, out = _toy(tmp / "toy.npz"), tmp / "run"
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        status = _main.main(["fit", "--data", data, "--out", str(out), *FIT])
    assert status == 0
    return stdout.getvalue().strip().splitlines(), data, out


def test_fit_json_then_evaluate_reproduces(fitted, capsys):
    lines, _, out = fitted
    report = json.loads(lines[-1])
    for key in (
        "model",
        "dataset",
        "missing",
        "seed",
        "test_accuracy",
        "epochs",
        "seconds",
    ):
        assert key in report
    assert report["model"] == "lsde" and report["dataset"] == "toy.npz"
    assert report["missing"] == 0.3 and report["seed"] == 2 and report["epochs"] == 20
    assert report["test_accuracy"] >= 0.8  # chance is 0.5
    assert "test accuracy" in lines[0] and "30% missing" in lines[0]
    assert report["warnings"] == []
    assert json.loads((out / "config.json").read_text())["model"] == "lsde"

    assert _main.main(["evaluate", "--checkpoint", str(out), "--json"]) == 0
    again = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert again["test_accuracy"] == report["test_accuracy"]
    assert again["test_loss"] == report["test_loss"]


def _test_series(data_file):
    """The run's test series, masked as the run masked them (seed 2, stream 1)."""
    raw = np.load(data_file)
    rows = raw["split"] == "test"
    test = TimeSeriesDataset(
        raw["values"][rows][..., None], raw["times"], raw["labels"][rows], ("0", "1")
    )
    return drop_observations(test, 0.3, seed=2, stream=1), raw["times"]


def test_predict_on_the_test_series_gives_the_test_figures(fitted, tmp_path, capsys):
    lines, data_file, out = fitted
    report = json.loads(lines[-1])
    test, times = _test_series(data_file)
    new = tmp_path / "new.npz"
    np.savez(new, values=test.values, times=times)
    saved = tmp_path / "predictions" / "p.npy"  # its folder is made
    argv = ["predict", "--checkpoint", str(out), "--data", str(new), "--out", str(saved)]
    assert _main.main([*argv, "--json"]) == 0
    printed = capsys.readouterr().out.strip().splitlines()
    answer = json.loads(printed[-1])
    probabilities = np.load(saved)
    assert probabilities.shape == (30, 2) and answer["shape"] == [30, 2]
    assert answer["predictions"] == str(saved) and answer["task"] == "classification"
    np.testing.assert_allclose(probabilities.sum(axis=-1), 1.0, rtol=1e-5)
    # Normalised with the run's own normaliser and predicted with the evaluation's
    # samples and key: exactly the figures of the fit.
    predicted = np.argmax(probabilities, axis=-1)
    assert np.mean(predicted == test.labels) == report["test_accuracy"]
    p = np.clip(probabilities[np.arange(30), test.labels], 1e-12, 1.0)
    assert -np.mean(np.log(p)) == pytest.approx(report["test_loss"], rel=1e-6)
    assert answer["classes"] == ["0", "1"]
    assert answer["predicted"] == [answer["classes"][i] for i in predicted]
    assert "saved 30x2 predictions" in printed[0] and "predicted classes" in printed[2]
    # The same values as .npy (no times: the training grid) give the same array, and
    # the file is replaced whole.
    np.save(tmp_path / "new.npy", test.values[..., 0])
    argv[4] = str(tmp_path / "new.npy")
    assert _main.main(argv) == 0
    np.testing.assert_array_equal(np.load(saved), probabilities)
    assert [f.name for f in saved.parent.iterdir()] == ["p.npy"]


def _checkpoint_of(tmp_path, family):
    other = tmp_path / "other"
    other.mkdir()
    (other / "config.json").write_text(json.dumps({"family": family}))
    return other


@pytest.mark.parametrize(
    "case, message",
    [
        ("channels", "the series have 2 channels, but the model was trained on 1"),
        ("length", "19 time points, but the model was trained on windows of 20"),
        ("times", "`times` must be the training window's 20 times"),
        ("empty", "series 3 has no observed value"),
        ("csv", "sdekit predict reads the series as .npy"),
        ("out", "give the name of a .npy file"),
        ("family", "Unknown model family 'kalman-filters'"),
        ("moved", "was trained on gone.npz, which is not there"),
    ],
)
def test_predict_bad_input_gets_one_line(fitted, tmp_path, capsys, case, message):
    _, _, checkpoint = fitted
    values = np.random.default_rng(0).normal(size=(5, 20))
    data, out = tmp_path / "new.npy", tmp_path / "p.npy"
    if case == "channels":
        values = np.stack([values, values], axis=-1)
    elif case == "length":
        values = values[:, :19]
    elif case == "empty":
        values[3] = np.nan
    elif case == "times":
        data = tmp_path / "new.npz"
        np.savez(data, values=values, times=np.linspace(0, 1, 20) ** 2)
    elif case == "csv":
        data = tmp_path / "new.csv"
        data.write_text("series,time,x\na,0,1\n")
    elif case == "out":
        out = tmp_path / "p.txt"
    elif case == "family":
        checkpoint = _checkpoint_of(tmp_path, "kalman-filters")
    elif case == "moved":  # the run's training data is no longer where it was
        checkpoint = shutil.copytree(checkpoint, tmp_path / "copy")
        config = json.loads((checkpoint / "config.json").read_text())
        (checkpoint / "config.json").write_text(json.dumps({**config, "data": "gone.npz"}))
    if data.suffix == ".npy":
        np.save(data, values)
    argv = ["--checkpoint", str(checkpoint), "--data", str(data), "--out", str(out)]
    assert _main.main(["predict", *argv]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("sdekit: error: ")
    assert message in err[0]
    assert not out.exists()


def test_predict_job_refuses_another_familys_checkpoint(tmp_path):
    other = _checkpoint_of(tmp_path, "fractional")
    with pytest.raises(ValueError, match="checkpoint of the fractional family"):
        st.predict_job(other, tmp_path / "new.npy", tmp_path / "p.npy")


def test_too_small_a_training_set_is_refused_before_training(tmp_path, capsys):
    data = _toy(tmp_path / "tiny.npz", n=4, train=2)
    out = tmp_path / "run"
    assert _main.main(["fit", "--data", data, "--out", str(out)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "has 2 training series; at least 3" in err[0]
    assert not out.exists()


def test_small_data_warnings_are_plain_lines(capsys):
    with _stable_jobs._warnings_as_lines():
        warnings.warn("only 5 training series", st.SmallDataWarning)
        warnings.warn("only 5 training series", st.SmallDataWarning)
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["sdekit: warning: only 5 training series"] * 2


@pytest.mark.parametrize(
    "argv, message",
    [
        (["fit", "--dataset", "NoSuchSet"], "Unknown data set 'NoSuchSet'"),
        (["fit", "--model", "transformer"], "Unknown model 'transformer'"),
        (["fit", "--missing", "1.0"], "[0, 1)"),
        (["fit", "--missing", "-0.1"], "[0, 1)"),
        (["fit", "--task", "ranking"], "Unknown task 'ranking'"),
        (["fit", "--epochs", "0"], "epochs"),
        (["evaluate", "--checkpoint", "/nonexistent/run"], "does not exist"),
    ],
)
def test_clear_errors(argv, message, capsys):
    if "NoSuchSet" in argv:
        pytest.importorskip("aeon")
    assert _main.main(argv) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("sdekit: error: ")
    assert message in err[0]


def test_malformed_file(tmp_path, capsys):
    bad = tmp_path / "bad.csv"
    bad.write_text("series,time,x\na,0,1\na,1,abc\n")
    assert _main.main(["fit", "--data", str(bad)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not a number" in err[0]
    assert _main.main(["fit", "--data", str(tmp_path / "none.npz")]) == 1
    assert "none.npz not found" in capsys.readouterr().err


@pytest.mark.slow
def test_fit_basicmotions_at_half_missing(tmp_path, capsys):
    pytest.importorskip("aeon")
    argv = [
        "fit",
        "--dataset",
        "BasicMotions",
        "--missing",
        "0.5",
        "--out",
        str(tmp_path / "bm"),
        "--json",
    ]
    assert _main.main(argv) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["test_accuracy"] >= 0.9


def test_summary_counts_the_best_epoch_from_one():
    # The progress lines say "epoch 1 of 3"; the summary must name the same epoch, while
    # the JSON's best_epoch stays the 0-based index into the history.
    from sdekit.stable._jobs import _describe

    report = {
        "model": "lnsde",
        "dataset": "BasicMotions",
        "task": "classification",
        "missing": 0.5,
        "seed": 0,
        "test_accuracy": 0.9,
        "epochs": 3,
        "best_epoch": 0,
        "seconds": 1.0,
        "checkpoint": "runs/x",
    }
    assert "3 epochs (best: epoch 1) in 1 s" in _describe(report)
    assert "3 epochs in 1 s" in _describe({**report, "best_epoch": None})
