"""Spiking data: the Lorenz generator, the NPZ layout and its round trip, the held-out /
forward split, and every bad input refused with one clear line."""

import numpy as np
import pytest
from helpers import mean_tolerance

from sdekit.data import (
    load_spikes,
    lorenz_spikes,
    lorenz_trajectories,
    save_spikes,
    SpikeTrials,
    SpikingDataset,
)


def test_lorenz_rk4_converges_at_order_four():
    start = np.array([[1.0, 1.0, 20.0]])
    reference = lorenz_trajectories(start, 2, 0.4, substeps=400)[:, -1]
    errors = [
        np.abs(lorenz_trajectories(start, 2, 0.4, substeps=n)[:, -1] - reference).max()
        for n in (20, 40, 80)
    ]
    slope = np.polyfit(np.log([1 / 20, 1 / 40, 1 / 80]), np.log(errors), 1)[0]
    assert 3.6 < slope < 4.4, (slope, errors)


def test_lorenz_data_set_has_the_documented_layout():
    data = lorenz_spikes(seed=3)
    assert data.train.spikes.shape == (1248, 50, 29)
    assert data.test.spikes.shape == (312, 50, 29)
    assert data.heldout_neurons == 7 and data.forward_bins == 0
    assert data.train.spikes.dtype == np.int64
    # Per-trial normalised latents: centred, largest absolute value exactly one.
    latents = np.concatenate([data.train.behavior, data.test.behavior])
    np.testing.assert_allclose(latents.mean(axis=1), 0.0, atol=1e-12)
    np.testing.assert_allclose(np.abs(latents).max(axis=(1, 2)), 1.0)
    conditions = np.concatenate([data.train.conditions, data.test.conditions])
    assert np.array_equal(np.bincount(conditions), np.full(65, 24))
    # Trials of a condition share their rates.
    first = data.train.rates[data.train.conditions == conditions[0]]
    assert np.all(first == first[0])
    # Counts are Poisson with the stored rates: the total count matches its mean.
    rates, spikes = data.train.rates, data.train.spikes
    assert abs(spikes.sum() - rates.sum()) < mean_tolerance(np.sqrt(rates.sum()), 1)


def test_lorenz_is_seeded():
    a, b, c = lorenz_spikes(seed=1), lorenz_spikes(seed=1), lorenz_spikes(seed=2)
    assert np.array_equal(a.train.spikes, b.train.spikes)
    assert np.array_equal(a.test.rates, b.test.rates)
    assert not np.array_equal(a.train.spikes, c.train.spikes)


def test_heldout_and_forward_slices():
    spikes = np.arange(2 * 6 * 5).reshape(2, 6, 5)
    trials = SpikeTrials(spikes)
    data = SpikingDataset(trials, trials, heldout_neurons=2, forward_bins=1)
    assert data.num_heldin == 3 and data.observed_bins == 5
    assert np.array_equal(data.heldin(trials), spikes[:, :5, :3])
    assert np.array_equal(data.heldout(trials), spikes[:, :5, 3:])
    assert np.array_equal(data.forward(trials), spikes[:, 5:, :])


def _arrays(rng, trials=6, bins=8, neurons=5):
    rates = rng.gamma(2.0, 0.5, (trials, bins, neurons))
    return dict(
        spikes=rng.poisson(rates),
        rates=rates,
        behavior=rng.normal(size=(trials, bins, 2)),
        conditions=np.array(["a", "b"] * (trials // 2)),
    )


def test_npz_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    train = SpikeTrials(**_arrays(rng), name="train")
    test = SpikeTrials(**_arrays(rng, trials=4), name="test")
    path = tmp_path / "spikes.npz"
    save_spikes(path, SpikingDataset(train, test, heldout_neurons=1))
    loaded = load_spikes(path, heldout_neurons=2, forward_bins=3)
    assert loaded.heldout_neurons == 2 and loaded.forward_bins == 3
    for mine, back in ((train, loaded.train), (test, loaded.test)):
        assert np.array_equal(mine.spikes, back.spikes)
        assert np.array_equal(mine.rates, back.rates)
        assert np.array_equal(mine.behavior, back.behavior)
        assert np.array_equal(mine.conditions, back.conditions)
    # Without --heldout-neurons: a quarter of the 5 neurons, rounded.
    assert load_spikes(path).heldout_neurons == 1


def test_npz_with_counts_only(tmp_path):
    rng = np.random.default_rng(1)
    path = tmp_path / "counts.npz"
    np.savez(path, train_spikes=rng.poisson(1.0, (5, 4, 3)).astype(float),
             test_spikes=rng.poisson(1.0, (2, 4, 3)))  # fmt: skip
    data = load_spikes(path, heldout_neurons=0)
    assert data.train.rates is None and data.test.conditions is None
    assert data.train.spikes.dtype == np.int64


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(train_spikes=-np.ones((3, 4, 5))), "negative"),
        (dict(train_spikes=np.full((3, 4, 5), 0.5)), "non-integer"),
        (dict(train_spikes=np.ones((3, 4))), r"\(trials, bins, neurons\)"),
        (dict(test_spikes=np.ones((3, 4, 6), int)), "same bins and neurons"),
        (dict(train_spikes=np.full((3, 4, 5), np.nan)), "NaN"),
        (dict(train_rates=np.ones((3, 4, 5))), "one split only"),
        (dict(train_rates=np.ones((3, 4, 4)), test_rates=np.ones((3, 4, 5))), "shaped"),
    ],
)
def test_bad_npz_is_refused_with_one_line(tmp_path, change, message):
    arrays = dict(train_spikes=np.ones((3, 4, 5), int), test_spikes=np.ones((3, 4, 5), int))
    arrays.update(change)
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(ValueError, match=message) as info:
        load_spikes(path, heldout_neurons=1)
    assert "\n" not in str(info.value)


def test_npz_missing_or_unknown_keys(tmp_path):
    path = tmp_path / "bad.npz"
    np.savez(path, train_spikes=np.ones((3, 4, 5), int))
    with pytest.raises(ValueError, match="lacks test_spikes"):
        load_spikes(path)
    np.savez(path, train_spikes=np.ones((3, 4, 5), int),
             test_spikes=np.ones((3, 4, 5), int), train_rate=np.ones(3))  # fmt: skip
    with pytest.raises(ValueError, match="unknown train_rate"):
        load_spikes(path)


@pytest.mark.parametrize(
    "heldout, forward, message",
    [(5, 0, "--heldout-neurons"), (-1, 0, "--heldout-neurons"), (0, 4, "--forward-bins")],
)
def test_heldout_and_forward_must_leave_something_observed(heldout, forward, message):
    trials = SpikeTrials(np.ones((2, 4, 5), int))
    with pytest.raises(ValueError, match=message):
        SpikingDataset(trials, trials, heldout_neurons=heldout, forward_bins=forward)
