"""sdekit.data: masks, splits, normalisation, control paths, loaders and user files."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import sdekit.data as sd


def _toy(n=12, length=20, channels=3, seed=0, labels=True):
    rng = np.random.default_rng(seed)
    values = rng.normal(size=(n, length, channels))
    y = np.arange(n) % 3 if labels else None
    return sd.TimeSeriesDataset(
        values, np.linspace(0, 1, length), y, ("a", "b", "c") if labels else None, "toy"
    )


# ---------------------------------------------------------------- masks and splits


def test_mask_reproducible_and_per_channel():
    shape = (30, 50, 4)
    a = sd.missing_mask(shape, 0.3, seed=3)
    b = sd.missing_mask(shape, 0.3, seed=3)
    c = sd.missing_mask(shape, 0.3, seed=4)
    d = sd.missing_mask(shape, 0.3, seed=3, stream=1)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c) and not np.array_equal(a, d)
    # Exactly floor(rate * length) points per channel of each series.
    assert np.all(a.sum(axis=1) == 15)
    # Channels drop independently: their patterns differ.
    assert np.mean(a[:, :, 0] == a[:, :, 1]) < 0.8


@pytest.mark.parametrize("rate", [0.0, 0.5, 0.7, 0.8])
def test_mask_keeps_two_points_per_channel(rate):
    mask = sd.missing_mask((5, 7, 2), rate, seed=0)
    assert np.all((~mask).sum(axis=1) >= 2)
    assert np.all(mask.sum(axis=1) == int(np.floor(rate * 7)))


@pytest.mark.parametrize(("rate", "length"), [(0.999, 20), (0.95, 20), (0.9, 7)])
def test_rate_that_leaves_one_point_is_refused(rate, length):
    # (length - 2) / length is the largest rate that keeps two points.
    kept = length - int(np.floor(rate * length))
    with pytest.raises(ValueError) as error:
        sd.missing_mask((3, length, 2), rate, seed=0)
    text = str(error.value)
    assert f"keeps {kept} of the {length} time points" in text
    assert sd.format_missing_rate((length - 2) / length) in text
    sd.missing_mask((3, length, 2), (length - 2) / length, seed=0)


@pytest.mark.parametrize(
    ("rate", "text"),
    [(0.0, "0%"), (0.3, "30%"), (0.5, "50%"), (0.999, "99.9%"), (0.9999, "99.99%")],
)
def test_missing_rate_is_reported_exactly(rate, text):
    # Not "100% missing" for 0.999 (issue 10).
    assert sd.format_missing_rate(rate) == text


@pytest.mark.parametrize("rate", [-0.1, 1.0, 1.5, "half", None])
def test_bad_missing_rate(rate):
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        sd.missing_mask((2, 5, 1), rate, seed=0)


def test_drop_observations_only_adds_nans():
    data = _toy()
    dropped = sd.drop_observations(data, 0.5, seed=1)
    kept = ~np.isnan(dropped.values)
    assert np.array_equal(dropped.values[kept], data.values[kept])
    assert np.isclose(np.isnan(dropped.values).mean(), 0.5)


def test_validation_split_stratified_and_seeded():
    data = _toy(n=30)
    train, valid = sd.validation_split(data, 0.2, seed=0)
    assert train.num_series + valid.num_series == 30
    assert np.array_equal(np.bincount(valid.labels), [2, 2, 2])
    again = sd.validation_split(data, 0.2, seed=0)[1]
    other = sd.validation_split(data, 0.2, seed=1)[1]
    assert np.array_equal(valid.values, again.values)
    assert not np.array_equal(valid.values, other.values)
    # No series is in both parts.
    rows = {v.tobytes() for v in train.values}
    assert not any(v.tobytes() in rows for v in valid.values)


def test_normaliser_uses_training_statistics_only():
    data = sd.drop_observations(_toy(n=40), 0.4, seed=0)
    other = data.replace(values=data.values * 10 + 5)
    norm = sd.Normaliser.fit(data)
    scaled = norm.apply(data).values
    assert np.allclose(np.nanmean(scaled, axis=(0, 1)), 0.0, atol=1e-12)
    assert np.allclose(np.nanstd(scaled, axis=(0, 1)), 1.0)
    assert np.array_equal(np.isnan(scaled), np.isnan(data.values))
    # Another split is mapped with the training statistics, not its own.
    assert np.allclose(
        norm.apply(other).values,
        (other.values - norm.mean) / norm.scale,
        equal_nan=True,
    )
    assert not np.allclose(np.nanmean(norm.apply(other).values), 0.0)


# ---------------------------------------------------------------- control paths


def test_fill_missing_is_linear_interpolation():
    times = np.array([0.0, 0.5, 1.5, 2.0, 4.0])
    values = np.array([[np.nan, 1.0, np.nan, 3.0, np.nan], [np.nan] * 5]).T[None]
    filled = np.asarray(sd.fill_missing(times, values))
    # Before the first / after the last observation: held; in between: linear in time.
    assert np.allclose(filled[0, :, 0], [1.0, 1.0, 1.0 + 2.0 * (1.0 / 1.5), 3.0, 3.0])
    assert np.allclose(filled[0, :, 1], 0.0)


def test_control_path_passes_through_observations(getkey):
    data = sd.drop_observations(_toy(n=6, length=15, channels=2), 0.5, seed=2)
    times = data.times * 7.0
    path = sd.ControlPath(times, data.values, intensity=True)
    assert path.channels == 1 + 2 + 2
    observed = ~np.isnan(data.values)
    for k, t in enumerate(times):
        x = np.asarray(path.evaluate(t))
        assert np.isclose(x[0, 0], t / times[-1], atol=1e-6)  # the time channel
        got, want = x[:, 1:3][observed[:, k]], data.values[:, k][observed[:, k]]
        assert np.allclose(got, want, atol=1e-5)
    # Between knots it is smooth, outside it is held (zero derivative).
    assert np.allclose(path.evaluate(times[-1] + 3.0), path.evaluate(times[-1]))
    assert np.allclose(path.derivative(times[-1] + 3.0), 0.0)
    assert np.all(np.isfinite(np.asarray(path.derivative(0.5 * (times[3] + times[4])))))
    # Under jit as well.
    jitted = jax.jit(lambda v, t: sd.ControlPath(times, v).evaluate(t))
    assert np.allclose(
        jitted(jnp.asarray(data.values), times[4]),
        sd.ControlPath(times, data.values).evaluate(times[4]),
        atol=1e-6,
    )


def test_intensity_channel_counts_observations():
    values = np.array([[1.0, np.nan, 2.0, np.nan]])[..., None]
    channels = np.asarray(sd.path_channels(np.arange(4.0), values, intensity=True))
    assert np.allclose(channels[0, :, 2], np.array([1, 1, 2, 2]) / 4)


# ---------------------------------------------------------------- user files


def _write_npz(path, **arrays):
    np.savez(path, **arrays)
    return str(path)


def test_npz_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    values = rng.normal(size=(20, 8, 2))
    values[0, 3, 1] = np.nan
    split = np.array(["train"] * 15 + ["test"] * 5)
    labels = np.array(["up", "down"] * 10)
    path = _write_npz(
        tmp_path / "d.npz",
        values=values,
        labels=labels,
        split=split,
        times=np.arange(8) * 0.5,
    )
    train, test = sd.load_file(path)
    assert train.values.shape == (15, 8, 2) and test.values.shape == (5, 8, 2)
    assert train.classes == ("down", "up")
    assert np.isnan(train.values[0, 3, 1])
    assert np.allclose(train.times, np.arange(8) * 0.5)
    assert np.array_equal(np.array(train.classes)[train.labels], labels[:15])


def test_npy_values_and_the_same_missing_tokens_as_every_command(tmp_path):
    # `sdekit fit --data x.npy`: the values alone (no labels), regular times.
    values = np.random.default_rng(1).normal(size=(12, 6))
    values[0, 2] = np.nan
    np.save(tmp_path / "d.npy", values)
    train, test = sd.load_file(tmp_path / "d.npy", seed=0)
    assert train.num_series + test.num_series == 12 and train.num_channels == 1
    assert train.labels is None and np.allclose(train.times, np.arange(6))
    both = np.concatenate([train.values, test.values])[..., 0]
    assert np.isnan(both).sum() == 1
    # The long CSV reads every missing token of the shared reader.
    rows = ["series,time,x"] + [
        f"s{s},{t},{token if t == 1 else s + t}"
        for s, token in enumerate(sorted(sd.MISSING_TOKENS))
        for t in range(3)
    ]
    (tmp_path / "d.csv").write_text("\n".join(rows) + "\n")
    train, test = sd.load_file(tmp_path / "d.csv", seed=0)
    both = np.concatenate([train.values, test.values])[..., 0]
    assert np.isnan(both[:, 1]).all() and not np.isnan(both[:, [0, 2]]).any()


def test_per_series_times_go_on_the_union_grid(tmp_path):
    times = np.array([[0.0, 1.0, 3.0], [0.0, 2.0, np.nan]])
    values = np.array([[1.0, 2.0, 3.0], [4.0, 5.0, np.nan]])
    path = _write_npz(
        tmp_path / "d.npz",
        values=values,
        times=times,
        split=np.array(["train", "test"]),
    )
    train, test = sd.load_file(path)
    assert np.allclose(train.times, [0, 1, 2, 3])
    assert np.allclose(train.values[0, :, 0], [1, 2, np.nan, 3], equal_nan=True)
    assert np.allclose(test.values[0, :, 0], [4, np.nan, 5, np.nan], equal_nan=True)


def test_csv_long_format(tmp_path):
    rows = ["series,time,x,y,label"]
    for s in range(8):
        for t in range(5):
            x = "" if (s + t) % 4 == 0 else str(s + t)
            rows.append(f"s{s},{t * 0.1 + (0.05 if s % 2 else 0)},{x},{-t},{s % 2}")
    path = tmp_path / "d.csv"
    path.write_text("\n".join(rows) + "\n")
    train, test = sd.load_file(path, seed=0)
    assert train.num_series + test.num_series == 8
    assert train.num_channels == 2 and train.classes == ("0", "1")
    assert train.length == 10  # two interleaved time grids
    assert np.isnan(train.values).any()


@pytest.mark.parametrize(
    "content, message",
    [
        ("time,x\n0,1\n", "long format"),
        ("series,time,x\na,0,1\na,1,oops\n", "line 3, column 3 .'x'.: 'oops' is not"),
        ("series,time,x\na,0,1\na,NA,2\n", "line 3: the time is missing"),
        ("1,2\n3,4\n", "long format, a header row 'series,time,'"),
        ("series,time,x,label\na,0,1,u\na,1,2,v\n", "label"),
        ("series,time,x\na,0,1\nb,1\n", "line 3 has 2 fields but line 1 has 3"),
        ("series,time,x\na,0,1\na,0,2\n", "same time"),
        ("series,time,x\na,0,1,7\n", "fields"),
        ("", "empty"),
    ],
)
def test_malformed_csv(tmp_path, content, message):
    path = tmp_path / "bad.csv"
    path.write_text(content)
    with pytest.raises(ValueError, match=message):
        sd.load_file(path)


def test_malformed_npz_and_paths(tmp_path):
    with pytest.raises(ValueError, match=r"lacks values .*\(its arrays: x\)"):
        sd.load_file(_write_npz(tmp_path / "a.npz", x=np.zeros((3, 4))))
    with pytest.raises(ValueError, match="has unknown time .* optional: times"):
        sd.load_file(
            _write_npz(tmp_path / "t.npz", values=np.zeros((3, 4)), time=np.arange(4))
        )
    with pytest.raises(ValueError, match="shape"):
        sd.load_file(_write_npz(tmp_path / "b.npz", values=np.zeros(5)))
    with pytest.raises(ValueError, match="one label per series"):
        sd.load_file(
            _write_npz(tmp_path / "c.npz", values=np.zeros((3, 4)), labels=np.zeros(2))
        )
    with pytest.raises(ValueError, match="strictly increasing"):
        sd.load_file(
            _write_npz(
                tmp_path / "d.npz",
                values=np.zeros((3, 4)),
                times=np.array([0, 2, 1, 3.0]),
            )
        )
    with pytest.raises(ValueError, match="not a readable NPZ"):
        (tmp_path / "e.npz").write_text("not a zip")
        sd.load_file(tmp_path / "e.npz")
    with pytest.raises(ValueError, match="unknown file type '.json'; use .npy, .npz"):
        (tmp_path / "f.json").write_text(json.dumps({}))
        sd.load_file(tmp_path / "f.json")
    with pytest.raises(ValueError, match="--data file .*missing.npz not found"):
        sd.load_file(tmp_path / "missing.npz")


# ---------------------------------------------------------------- bundled data


def test_bundled_aeon_sets():
    pytest.importorskip("aeon")
    names = sd.bundled_datasets()
    for name in (
        "BasicMotions",
        "GunPoint",
        "ArrowHead",
        "ItalyPowerDemand",
        "JapaneseVowels",
    ):
        assert names[name] == "classification"
    assert names["Covid3Month"] == "regression"
    train, test = sd.load_dataset("BasicMotions")
    assert train.values.shape == (40, 100, 6) and test.values.shape == (40, 100, 6)
    assert len(train.classes) == 4 and np.all(np.bincount(train.labels) == 10)
    # Unequal lengths are resampled to the longest.
    train, test = sd.load_dataset("JapaneseVowels")
    assert train.length == test.length and not np.isnan(train.values).any()


def test_unknown_dataset():
    pytest.importorskip("aeon")
    with pytest.raises(ValueError, match="Unknown data set 'NoSuchSet'"):
        sd.load_dataset("NoSuchSet")
    with pytest.raises(ValueError, match="Did you mean 'GunPoint'"):
        sd.load_dataset("gunpoint")


def test_co2_has_real_gaps_and_chronological_split():
    pytest.importorskip("statsmodels")
    series = sd.load_co2_series()
    assert series.values.shape == (1, 2284, 1)
    assert np.isnan(series.values).sum() == 59
    train, test = sd.load_co2(window=52, stride=13)
    assert train.length == test.length == 52
    assert train.num_series > test.num_series > 0
