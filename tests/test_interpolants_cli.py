"""`sdekit fit --model interpolant`, `evaluate`, `sample` and `logprob` through the
command line: the JSON contract and one-line errors for bad input."""

import contextlib
import io
import json

import numpy as np
import pytest

from sdekit.cli import _main


@pytest.fixture(autouse=True)
def no_debug(monkeypatch):
    monkeypatch.delenv("SDEKIT_DEBUG", raising=False)


def _run(argv):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = _main.main(argv)
    return code, out.getvalue(), err.getvalue()


# 480 training points in batches of 48: 10 steps an epoch, in calls of 4, 4 and 2.
SMALL = [
    "--steps",
    "40",
    "--steps-per-call",
    "4",
    "--width",
    "16",
    "--depth",
    "1",
    "--batch-size",
    "48",
    "--quiet",
    "--json",
]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    root = tmp_path_factory.mktemp("interpolant")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(600, 3)) * np.array([1.0, 2.0, 0.5]) + 1.0
    np.save(root / "x.npy", x)
    code, out, err = _run(
        [
            "fit",
            "--model",
            "interpolant",
            "--data",
            str(root / "x.npy"),
            "--out",
            str(root / "run"),
            *SMALL,
        ]
    )
    assert code == 0, err
    report = json.loads(out.strip().splitlines()[-1])
    return root, report


@pytest.mark.slow
def test_fit_report(checkpoint):
    root, report = checkpoint
    assert report["dim"] == 3 and report["steps"] == 40 and report["epochs"] == 4
    assert np.isfinite(report["test_mean_logprob"])
    code, out, err = _run(["evaluate", "--checkpoint", str(root / "run"), "--json"])
    assert code == 0, err
    again = json.loads(out.strip().splitlines()[-1])
    assert again["test_mean_logprob"] == pytest.approx(
        report["test_mean_logprob"], abs=1e-4
    )


@pytest.mark.slow
def test_sample_and_logprob(checkpoint):
    root, _ = checkpoint
    code, out, err = _run(
        [
            "sample",
            "--checkpoint",
            str(root / "run"),
            "-n",
            "50",
            "--out",
            str(root / "s.npy"),
            "--json",
            "--steps",
            "4",
        ]
    )
    assert code == 0, err
    assert np.load(root / "s.npy").shape == (50, 3)
    code, out, err = _run(
        [
            "sample",
            "--checkpoint",
            str(root / "run"),
            "-n",
            "20",
            "--out",
            str(root / "s2.npy"),
            "--sde",
            "--eps",
            "0.5",
            "--steps",
            "20",
            "--json",
        ]
    )
    assert code == 0, err
    assert np.all(np.isfinite(np.load(root / "s2.npy")))
    for extra in ([], ["--hutchinson"]):
        code, out, err = _run(
            [
                "logprob",
                "--checkpoint",
                str(root / "run"),
                "--data",
                str(root / "s.npy"),
                "--json",
                *extra,
            ]
        )
        assert code == 0, err
        report = json.loads(out.strip().splitlines()[-1])
        assert report["n"] == 50 and np.isfinite(report["mean_logprob"])
        assert report["seconds"] >= 0


def test_bad_input_before_any_work(tmp_path):
    # A checkpoint directory is only opened after the cheap checks.
    fake = tmp_path / "fake"
    fake.mkdir()
    (fake / "config.json").write_text(json.dumps({"family": "interpolants"}))
    code, _, err = _run(
        [
            "sample",
            "--checkpoint",
            str(fake),
            "-n",
            "0",
            "--out",
            str(tmp_path / "a.npy"),
        ]
    )
    assert code == 1 and "positive" in err and len(err.strip().splitlines()) == 1
    code, _, err = _run(
        [
            "sample",
            "--checkpoint",
            str(fake),
            "-n",
            "3",
            "--out",
            str(tmp_path / "a.txt"),
        ]
    )
    assert code == 1 and ".npy" in err
    nan = np.ones((10, 3))
    nan[2, 1] = np.nan
    np.save(tmp_path / "nan.npy", nan)
    code, _, err = _run(
        [
            "fit",
            "--model",
            "interpolant",
            "--data",
            str(tmp_path / "nan.npy"),
            "--out",
            str(tmp_path / "r"),
            *SMALL,
        ]
    )
    assert code == 1 and "NaN" in err
    np.save(tmp_path / "rank3.npy", np.zeros((4, 3, 2)))
    code, _, err = _run(
        [
            "fit",
            "--model",
            "interpolant",
            "--data",
            str(tmp_path / "rank3.npy"),
            "--out",
            str(tmp_path / "r3"),
            *SMALL,
        ]
    )
    assert code == 1 and "shape (n, d)" in err
    code, _, err = _run(
        [
            "fit",
            "--model",
            "interpolant",
            "--interpolant",
            "wiggly",
            "--out",
            str(tmp_path / "w"),
            *SMALL,
        ]
    )
    assert code == 1 and "interpolant" in err
    # A checkpoint of another family.
    other = tmp_path / "other"
    other.mkdir()
    (other / "config.json").write_text(
        json.dumps({"family": "stable", "model": "lnsde"})
    )
    code, _, err = _run(
        [
            "sample",
            "--checkpoint",
            str(other),
            "-n",
            "5",
            "--out",
            str(tmp_path / "c.npy"),
        ]
    )
    assert code == 1 and "sample" in err


@pytest.mark.slow
def test_bad_input_against_a_checkpoint(checkpoint, tmp_path):
    root, _ = checkpoint
    run = str(root / "run")
    np.save(tmp_path / "rank3.npy", np.zeros((4, 3, 2)))
    code, _, err = _run(
        ["logprob", "--checkpoint", run, "--data", str(tmp_path / "rank3.npy")]
    )
    assert code == 1 and "shape (n, d)" in err
    np.save(tmp_path / "cols.npy", np.zeros((4, 2)))
    code, _, err = _run(
        ["logprob", "--checkpoint", run, "--data", str(tmp_path / "cols.npy")]
    )
    assert code == 1 and "columns" in err
    code, _, err = _run(
        [
            "sample",
            "--checkpoint",
            run,
            "-n",
            "5",
            "--out",
            str(tmp_path / "b.npy"),
            "--label",
            "1",
        ]
    )
    assert code == 1 and "conditional" in err


def test_mirror_interpolant_fits_samples_from_data_and_has_no_logprob(tmp_path):
    # The command-line contract offers --interpolant mirror: it trains, reports a held-out
    # loss instead of a likelihood, samples from training points, and refuses logprob.
    rng = np.random.default_rng(1)
    np.save(tmp_path / "x.npy", rng.normal(size=(600, 2)) + 3.0)
    run = str(tmp_path / "run")
    code, out, err = _run(
        ["fit", "--model", "interpolant", "--interpolant", "mirror", "--loss", "denoiser",
         "--data", str(tmp_path / "x.npy"), "--out", run, *SMALL]
    )  # fmt: skip
    assert code == 0, err
    report = json.loads(out.strip().splitlines()[-1])
    assert report["interpolant"] == "mirror" and report["test_mean_logprob"] is None
    assert np.isfinite(report["test_loss"]) and report["test_loss"] > 0
    code, out, err = _run(
        ["sample", "--checkpoint", run, "-n", "30", "--out", str(tmp_path / "s.npy"),
         "--sde", "--steps", "20", "--json"]
    )  # fmt: skip
    assert code == 0, err
    samples = np.load(tmp_path / "s.npy")
    # Started at training points (mean 3): an untrained-sized model moves them, but not
    # back to the origin a Gaussian base would start from.
    assert samples.shape == (30, 2) and abs(samples.mean() - 3.0) < 1.5
    code, _, err = _run(
        ["logprob", "--checkpoint", run, "--data", str(tmp_path / "x.npy")]
    )
    assert code == 1 and "no base density" in err and len(err.strip().splitlines()) == 1
