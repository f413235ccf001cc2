"""The Neural Latents Benchmark metrics against hand computations, and the smoothing
baseline's pieces against closed forms."""

import math

import numpy as np
import pytest

from sdekit.langevin import (
    bits_per_spike,
    co_bps,
    fit_poisson_glm,
    fp_bps,
    poisson_nll,
    psth_r2,
    rate_r2,
    smooth_spikes,
    velocity_r2,
)
from sdekit.langevin._metrics import _ratio_standard_error, _trial_bits


def test_poisson_nll_by_hand():
    rates = np.array([[[0.5, 2.0]], [[1.0, 0.0]]])
    spikes = np.array([[[0, 3]], [[2, 0]]])
    # sum of r - y log r + log y!, the zero rate floored at 1e-9 (and y = 0 there).
    expected = (
        0.5
        + (2.0 - 3 * math.log(2.0) + math.log(6.0))
        + (1.0 - 0.0 + math.log(2.0))
        + 1e-9
    )
    assert poisson_nll(rates, spikes) == pytest.approx(expected, rel=1e-12)


def test_bits_per_spike_by_hand():
    spikes = np.array([[[1.0], [0.0]], [[3.0], [0.0]]])  # one neuron, mean count 1
    rates = np.array([[[1.5], [0.5]], [[2.5], [0.5]]])

    def nll(r):
        return sum(
            ri - yi * math.log(ri) + math.lgamma(yi + 1)
            for ri, yi in zip(r.ravel(), spikes.ravel())
        )

    expected = (nll(np.ones(4)) - nll(rates)) / 4.0 / math.log(2)
    assert bits_per_spike(rates, spikes) == pytest.approx(expected, rel=1e-12)
    # The null model itself scores exactly zero.
    null = np.full_like(spikes, 1.0)
    assert bits_per_spike(null, spikes) == pytest.approx(0.0, abs=1e-12)


def test_co_bps_orders_true_and_wrong_rates():
    rng = np.random.default_rng(0)
    rates = np.exp(rng.normal(0.0, 1.0, (200, 20, 5)))
    spikes = rng.poisson(rates)
    assert co_bps(rates, spikes) > 0.1
    assert co_bps(np.full_like(rates, 10.0), spikes) < 0
    assert fp_bps(rates, spikes) == co_bps(rates, spikes)


def test_bits_per_spike_standard_error_matches_replicate_spread():
    # Per-trial bits saved add up to bits_per_spike, and their delta-method standard
    # error predicts the spread of bits_per_spike over independent sets of trials
    # drawn from the same rates (scored by the same imperfect model).
    rng = np.random.default_rng(1)
    true = np.exp(rng.normal(-0.5, 0.8, (40, 6)))[None]
    model = true * np.exp(rng.normal(0.0, 0.3, true.shape))
    replicates, trials = 400, 60
    scores, errors = [], []
    for _ in range(replicates):
        spikes = rng.poisson(np.broadcast_to(true, (trials,) + true.shape[1:]))
        rates = np.broadcast_to(model, spikes.shape)
        bits, counts = _trial_bits(rates, spikes)
        scores.append(bits_per_spike(rates, spikes))
        assert bits.sum() / counts.sum() == pytest.approx(scores[-1], rel=1e-9)
        errors.append(_ratio_standard_error(bits, counts))
    spread = np.std(scores, ddof=1)
    # The sample standard deviation of 400 draws is within 3.5% (one sd) of its
    # value; 12% allows that and the delta method's approximation.
    assert np.median(errors) == pytest.approx(spread, rel=0.12)
    assert math.isnan(_ratio_standard_error(bits[:1], counts[:1]))


def test_metrics_reject_bad_rates():
    spikes = np.ones((2, 3, 1))
    with pytest.raises(ValueError, match="negative"):
        bits_per_spike(-np.ones((2, 3, 1)), spikes)
    with pytest.raises(ValueError, match="NaN"):
        bits_per_spike(np.full((2, 3, 1), np.nan), spikes)
    with pytest.raises(ValueError, match="same shape"):
        bits_per_spike(np.ones((2, 3, 2)), spikes)


def test_rate_r2_variance_weighted_by_hand():
    true = np.array([[[1.0, 10.0], [3.0, 30.0]]])  # neuron 2 varies 10x more
    pred = np.array([[[2.0, 10.0], [2.0, 30.0]]])
    # Neuron 1: SSE 2, SST 2; neuron 2: SSE 0, SST 200. Weighted: 1 - 2 / 202.
    assert rate_r2(pred, true) == pytest.approx(1 - 2 / 202, rel=1e-12)
    assert rate_r2(true, true) == 1.0


def test_psth_r2_by_hand():
    # Two conditions, two trials each, two bins, one neuron.
    rates = np.array([[[1.0], [2.0]], [[3.0], [2.0]], [[5.0], [5.0]], [[5.0], [7.0]]])
    conditions = np.array(["a", "a", "b", "b"])
    true_psth = np.array([[[2.0], [2.0]], [[5.0], [7.0]]])
    # Predicted PSTHs: a -> (2, 2), b -> (5, 6); stacked truth (2, 2, 5, 7).
    truth = np.array([2.0, 2.0, 5.0, 7.0])
    pred = np.array([2.0, 2.0, 5.0, 6.0])
    expected = 1 - np.sum((truth - pred) ** 2) / np.sum((truth - truth.mean()) ** 2)
    got = psth_r2(rates, conditions, true_psth, np.array(["a", "b"]))
    assert got == pytest.approx(expected, rel=1e-12)


def test_velocity_r2_matches_scikit_learn():
    pytest.importorskip("sklearn")
    from sklearn.linear_model import Ridge

    rng = np.random.default_rng(1)
    readout = rng.normal(size=(6, 2))
    train_rates = rng.gamma(2.0, 1.0, (40, 10, 6))
    test_rates = rng.gamma(2.0, 1.0, (10, 10, 6))
    train_behavior = train_rates @ readout + rng.normal(0, 0.5, (40, 10, 2))
    test_behavior = test_rates @ readout + rng.normal(0, 0.5, (10, 10, 2))
    got = velocity_r2(train_rates, train_behavior, test_rates, test_behavior)
    # With this much data every alpha of the grid gives nearly the same fit.
    ridge = Ridge(alpha=1e-2).fit(
        train_rates.reshape(-1, 6), train_behavior.reshape(-1, 2)
    )
    reference = ridge.score(test_rates.reshape(-1, 6), test_behavior.reshape(-1, 2))
    assert got == pytest.approx(reference, abs=1e-3)
    assert got > 0.8


def test_smooth_spikes_keeps_mass_inside_and_is_linear():
    spikes = np.zeros((1, 41, 2))
    spikes[0, 20, 0] = 3.0
    smoothed = smooth_spikes(spikes, 2.0)
    assert smoothed[0, :, 0].sum() == pytest.approx(3.0)
    assert np.argmax(smoothed[0, :, 0]) == 20
    assert np.all(smoothed[0, :, 1] == 0)
    # Standard deviation of the kernel (truncated at 3 sd: within 2%).
    t = np.arange(41) - 20
    sd = math.sqrt(np.sum(smoothed[0, :, 0] / 3.0 * t**2))
    assert sd == pytest.approx(2.0, rel=0.02)


def test_poisson_glm_recovers_weights():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(20000, 3))
    weights = np.array([[0.5, -0.2], [0.0, 0.3], [-0.4, 0.1]])
    counts = rng.poisson(np.exp(x @ weights + np.array([0.2, -0.5])))
    got_w, got_b = fit_poisson_glm(x, counts, alpha=0.0)
    # Maximum-likelihood standard errors here are about 1 / sqrt(n * rate) ~ 0.01.
    np.testing.assert_allclose(got_w, weights, atol=0.05)
    np.testing.assert_allclose(got_b, [0.2, -0.5], atol=0.05)
