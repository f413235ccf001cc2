"""`sdekit hurst`: reading files, the JSON line, and one-line errors."""

import json

import numpy as np
import pytest

import sdekit.cli._main as cli


HURST = "sdekit.cli._hurst"


@pytest.fixture
def run(capsys, monkeypatch):
    """Run `sdekit hurst ...` in-process through the real CLI entry point (without
    the persistent compilation cache, which would stay on for the whole session)."""
    assert HURST in cli.SUBCOMMANDS
    monkeypatch.setenv("SDEKIT_NO_CACHE", "1")

    def call(*argv):
        status = cli.main(["hurst", *argv])
        out, err = capsys.readouterr()
        return status, out, err

    return call


@pytest.fixture(scope="module")
def series():
    fbm = pytest.importorskip("fbm")
    np.random.seed(11)
    path = fbm.FBM(n=399, hurst=0.7, length=1.0).fbm()
    path[[10, 200]] = np.nan
    return path


def _last_json(out):
    return json.loads(out.strip().splitlines()[-1])


def test_npy_and_csv_give_the_same_estimate(run, tmp_path, series):
    npy = tmp_path / "x.npy"
    np.save(npy, series)
    status, out, err = run("--input", str(npy), "--dt", "0.0025", "--json")
    assert status == 0, err
    result = _last_json(out)
    assert {"hurst", "hurst_std", "log_likelihood", "seconds"} <= set(result)
    # 400 points: fBM's exact dense likelihood (the faster route there), named in
    # the report.
    assert result["details"]["method"] == "dense" and "(dense likelihood)" in out
    assert abs(result["hurst"] - 0.7) < 0.12 and 0 < result["hurst_std"] < 0.1
    assert result["num_observed"] == 398
    csv = tmp_path / "x.csv"
    # A header, one value per line, an empty cell for a missing value.
    lines = ["value"] + ["" if np.isnan(v) else repr(float(v)) for v in series]
    csv.write_text("\n".join(lines) + "\n")
    status, out, _ = run("--input", str(csv), "--dt", "0.0025", "--json")
    assert status == 0
    np.testing.assert_allclose(_last_json(out)["hurst"], result["hurst"], rtol=1e-9)
    # The same regular times given as a file.
    times = tmp_path / "t.npy"
    np.save(times, np.arange(400) * 0.0025)
    status, out, _ = run("--input", str(npy), "--times", str(times), "--json")
    assert status == 0
    np.testing.assert_allclose(_last_json(out)["hurst"], result["hurst"], rtol=1e-6)


def test_two_column_time_value_csv_is_times_and_values(run, tmp_path, series):
    # A time,value CSV (irregular times, a header) gives the estimate of the same
    # values with --times.
    keep = np.sort(np.random.default_rng(2).choice(400, 300, replace=False))
    times, values = np.arange(400)[keep] * 0.0025, series[keep]
    rows = ["time,value"] + [
        f"{float(t)!r},{'NA' if np.isnan(v) else repr(float(v))}"
        for t, v in zip(times, values)
    ]
    (tmp_path / "tv.csv").write_text("\n".join(rows) + "\n")
    status, out, err = run("--input", str(tmp_path / "tv.csv"), "--json")
    assert status == 0, err
    np.save(tmp_path / "v.npy", values)
    np.save(tmp_path / "t.npy", times)
    status, out2, _ = run(
        "--input", str(tmp_path / "v.npy"), "--times", str(tmp_path / "t.npy"), "--json"
    )
    assert status == 0
    one, two = _last_json(out), _last_json(out2)
    assert one["num_observed"] == two["num_observed"] == int(np.sum(~np.isnan(values)))
    np.testing.assert_allclose(one["hurst"], two["hurst"], rtol=1e-9)


@pytest.mark.slow
def test_fou_model_reports_drift(run, tmp_path, series):
    npy = tmp_path / "x.npy"
    np.save(npy, series)
    status, out, _ = run(
        "--input", str(npy), "--dt", "0.0025", "--model", "fou", "--json"
    )
    assert status == 0
    result = _last_json(out)
    assert (
        result["model"] == "fou" and result["theta"] > 0 and np.isfinite(result["mu"])
    )


@pytest.mark.parametrize(
    ("content", "args", "message"),
    [
        (np.r_[np.zeros(20), np.inf], ("--dt", "1"), "infinite"),
        (np.arange(4.0), ("--dt", "1"), "at least 8"),
        (np.arange(50.0), ("--dt", "0"), "dt must be a positive"),
        (np.arange(50.0), ("--dt", "-2"), "dt must be a positive"),
        (np.zeros((10, 3)), ("--dt", "1"), "one column"),
        (np.arange(50.0), (), "give --dt (the time step of a regular series) or"),
        # Two columns whose first is not a time axis: not two series.
        (np.random.default_rng(0).normal(size=(30, 2)), (), "not strictly increasing"),
        (np.c_[np.arange(30.0), np.ones(30)], ("--dt", "1"), "drop --dt/--times"),
        (np.arange(50.0), ("--dt", "1", "--model", "fou", "--method", "dense"), "fBM"),
    ],
)
def test_bad_input_is_one_error_line(run, tmp_path, content, args, message):
    path = tmp_path / "x.npy"
    np.save(path, content)
    status, out, err = run("--input", str(path), *args)
    assert status == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("sdekit: error:")
    assert message in lines[0]


def test_unreadable_files_are_one_error_line(run, tmp_path):
    garbage = tmp_path / "x.npy"
    garbage.write_bytes(b"not an npy file")
    text = tmp_path / "x.csv"
    text.write_text("1.0\nabc\n2.0\n")
    for path, message in (
        (garbage, "not a readable NPY file"),
        (text, "line 2, column 1: 'abc' is not a number"),
        (tmp_path / "missing.npy", "not found"),
        (tmp_path / "x.parquet", "unknown file type '.parquet'"),
    ):
        if path.suffix == ".parquet":
            path.write_text("x")
        status, _, err = run("--input", str(path), "--dt", "1")
        assert status == 1 and err.count("\n") == 1 and message in err, err


@pytest.mark.slow
def test_posterior_reports_an_interval(run, tmp_path, series):
    npy = tmp_path / "x.npy"
    np.save(npy, series)
    status, out, _ = run(
        "--input",
        str(npy),
        "--dt",
        "0.0025",
        "--posterior",
        "--num-samples",
        "100",
        "--json",
    )
    assert status == 0
    result = _last_json(out)
    lo, hi = result["hurst_interval"]
    assert lo < result["hurst"] < hi and result["hurst_std"] > 0
