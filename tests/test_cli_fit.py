"""`sdekit fit` and `sdekit evaluate` through the command line."""

import json

import numpy as np
import pytest

from sdekit.cli import _main


@pytest.fixture(autouse=True)
def no_debug(monkeypatch):
    monkeypatch.delenv("SDEKIT_DEBUG", raising=False)


def _toy(path, n=100, length=20, seed=1):
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
        split=np.where(np.arange(n) < 70, "train", "test"),
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


def test_fit_json_then_evaluate_reproduces(tmp_path, capsys):
    data = _toy(tmp_path / "toy.npz")
    out = tmp_path / "run"
    status = _main.main(
        [
            "fit",
            "--model",
            "lsde",
            "--data",
            data,
            "--missing",
            "0.3",
            "--seed",
            "2",
            "--out",
            str(out),
            "--json",
            *SMALL,
        ]
    )
    assert status == 0
    lines = capsys.readouterr().out.strip().splitlines()
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
    assert "test accuracy" in lines[0]
    assert json.loads((out / "config.json").read_text())["model"] == "lsde"

    assert _main.main(["evaluate", "--checkpoint", str(out), "--json"]) == 0
    again = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert again["test_accuracy"] == report["test_accuracy"]
    assert again["test_loss"] == report["test_loss"]


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
    assert "No such data file" in capsys.readouterr().err


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
