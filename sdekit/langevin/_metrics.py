"""The Neural Latents Benchmark's metrics, as its evaluation code (nlb_tools) defines
them, and the rate $R^2$ against true rates.

All take NumPy arrays shaped `(trials, bins, neurons)` (rates in spikes per bin) and
compute in float64. The velocity $R^2$ uses scikit-learn (the `data` extra), as the
benchmark's own code does.
"""

import math
from typing import Any

import numpy as np


def _check_pair(rates, spikes, name: str) -> tuple[np.ndarray, np.ndarray]:
    rates = np.asarray(rates, dtype=np.float64)
    spikes = np.asarray(spikes, dtype=np.float64)
    if rates.shape != spikes.shape:
        raise ValueError(
            f"{name}: rates {rates.shape} and spikes {spikes.shape} must have the same "
            "shape."
        )
    if spikes.size == 0:
        raise ValueError(f"{name}: no spikes to score (an empty array).")
    if np.any(np.isnan(rates)):
        raise ValueError(f"{name}: the rate predictions contain NaN.")
    if np.any(rates < 0):
        raise ValueError(f"{name}: the rate predictions contain negative values.")
    return rates, spikes


def _log_factorial(counts: np.ndarray) -> np.ndarray:
    # Counts are whole numbers: lgamma of the few distinct values, looked up.
    values, index = np.unique(counts, return_inverse=True)
    table = np.array([math.lgamma(v + 1.0) for v in values])
    return table[index].reshape(counts.shape)


def poisson_nll(rates, spikes) -> float:
    r"""The Poisson negative log-likelihood $\sum (r - y \log r + \log y!)$ of counts
    $y$ under rates $r$ (spikes per bin), summed over every entry, with the
    log-factorial term. Zero rates are floored at $10^{-9}$ and negative ones
    rejected, as in nlb_tools."""
    rates, spikes = _check_pair(rates, spikes, "poisson_nll")
    rates = np.maximum(rates, 1e-9)
    return float(np.sum(rates - spikes * np.log(rates) + _log_factorial(spikes)))


def bits_per_spike(rates, spikes) -> float:
    r"""$\big(\mathrm{NLL}_{\text{null}} - \mathrm{NLL}\big) / (n_{\text{spikes}}
    \ln 2)$: how many bits per spike the rates save over the null model that predicts
    each neuron's mean count over the given trials and bins. Positive when the rates
    beat the null; 0 for the null itself. **Returns:** NaN when there are no spikes."""
    rates, spikes = _check_pair(rates, spikes, "bits_per_spike")
    total = spikes.sum()
    if total == 0:
        return float("nan")
    axes = tuple(range(spikes.ndim - 1))
    null = np.broadcast_to(spikes.mean(axis=axes, keepdims=True), spikes.shape)
    saved = poisson_nll(null, spikes) - poisson_nll(rates, spikes)
    return float(saved / total / math.log(2))


def _trial_bits(rates, spikes) -> tuple[np.ndarray, np.ndarray]:
    # Per trial (the first axis): the bits that the rates save over bits_per_spike's
    # null model, and the spike count; bits_per_spike is the ratio of their sums. The
    # log-factorial terms cancel in the difference.
    rates, spikes = _check_pair(rates, spikes, "bits_per_spike")
    axes = tuple(range(spikes.ndim - 1))
    null = spikes.mean(axis=axes, keepdims=True)

    def nll(r):
        r = np.maximum(r, 1e-9)
        return r - spikes * np.log(r)

    per_entry = (nll(np.broadcast_to(null, spikes.shape)) - nll(rates)) / math.log(2)
    trials = tuple(range(1, spikes.ndim))
    return per_entry.sum(axis=trials), spikes.sum(axis=trials)


def _ratio_standard_error(bits: np.ndarray, counts: np.ndarray) -> float:
    # The standard error of sum(bits) / sum(counts) over independent trials, by the
    # delta method (the ratio estimator's), the null model's rates taken as fixed.
    # NaN with fewer than two trials or no spikes.
    n, total = len(bits), float(np.sum(counts))
    if n < 2 or total == 0:
        return float("nan")
    residual = bits - (np.sum(bits) / total) * counts
    return float(np.sqrt(n / (n - 1) * np.sum(residual**2)) / total)


def co_bps(heldout_rates, heldout_spikes) -> float:
    """Co-smoothing bits per spike: [`sdekit.langevin.bits_per_spike`][] of the
    held-out neurons' predicted rates, `(trials, bins, heldout)`, in the evaluated
    (test) trials, from the held-in neurons alone."""
    return bits_per_spike(heldout_rates, heldout_spikes)


def fp_bps(forward_rates, forward_spikes) -> float:
    """Forward-prediction bits per spike: [`sdekit.langevin.bits_per_spike`][] of all
    neurons' rates in the bins after the observed window, `(trials, forward_bins,
    neurons)`."""
    return bits_per_spike(forward_rates, forward_spikes)


def rate_r2(rates, true_rates) -> float:
    r"""$R^2$ of predicted against true rates, flattened over trials and bins and
    variance-weighted over neurons: $1 - \sum (r - \hat r)^2 / \sum (r -
    \bar r_n)^2$ with $\bar r_n$ each neuron's mean (scikit-learn's
    `r2_score(..., multioutput="variance_weighted")`)."""
    rates, true = _check_pair(rates, true_rates, "rate_r2")
    pred = rates.reshape(-1, rates.shape[-1])
    true = true.reshape(-1, true.shape[-1])
    total = np.sum((true - true.mean(axis=0)) ** 2)
    if total == 0:
        raise ValueError("rate_r2: the true rates do not vary; R^2 is undefined.")
    return float(1.0 - np.sum((true - pred) ** 2) / total)


def _r2_uniform(true: np.ndarray, pred: np.ndarray) -> float:
    # scikit-learn's r2_score with its default multioutput="uniform_average": the mean
    # over columns of each column's R^2 (a constant column scores 1 if predicted
    # exactly, else 0, as there).
    scores = []
    for j in range(true.shape[1]):
        residual = np.sum((true[:, j] - pred[:, j]) ** 2)
        total = np.sum((true[:, j] - true[:, j].mean()) ** 2)
        if total > 0:
            scores.append(1.0 - residual / total)
        else:
            scores.append(1.0 if residual == 0 else 0.0)
    return float(np.mean(scores))


def psth_r2(rates, conditions, true_psth, psth_conditions) -> float:
    r"""$R^2$ of peri-stimulus time histograms across conditions: the predicted rates
    averaged over each condition's trials, stacked (conditions x bins) against the
    true PSTHs, $R^2$ per neuron averaged over neurons (nlb_tools' `eval_psth`).

    **Arguments:**

    - `rates`: `(trials, bins, neurons)` predicted rates of the evaluated trials.
    - `conditions`: `(trials,)` their condition labels.
    - `true_psth`: `(conditions, bins, neurons)` the true PSTHs.
    - `psth_conditions`: `(conditions,)` the label of each row of `true_psth`.
        Conditions without evaluated trials are skipped.
    """
    rates = np.asarray(rates, dtype=np.float64)
    conditions = np.asarray(conditions)
    true_psth = np.asarray(true_psth, dtype=np.float64)
    if conditions.shape != rates.shape[:1]:
        raise ValueError("psth_r2: need one condition label per trial.")
    if true_psth.shape[1:] != rates.shape[1:]:
        raise ValueError(
            f"psth_r2: true PSTHs {true_psth.shape} must have the rates' bins and "
            f"neurons {rates.shape[1:]}."
        )
    pred, true = [], []
    for label, psth in zip(psth_conditions, true_psth):
        members = conditions == label
        if members.any():
            pred.append(rates[members].mean(axis=0))
            true.append(psth)
    if not pred:
        raise ValueError("psth_r2: no evaluated trial has a condition with a PSTH.")
    return _r2_uniform(np.concatenate(true), np.concatenate(pred))


def condition_psth(values, conditions) -> tuple[np.ndarray, np.ndarray]:
    """Mean of `values` `(trials, bins, neurons)` over the trials of each condition.

    **Returns:** `(psth, labels)`: `(conditions, bins, neurons)` and the sorted labels.
    """
    values = np.asarray(values, dtype=np.float64)
    conditions = np.asarray(conditions)
    labels = np.unique(conditions)
    return np.stack([values[conditions == c].mean(axis=0) for c in labels]), labels


def velocity_r2(train_rates, train_behavior, test_rates, test_behavior) -> float:
    r"""$R^2$ of behaviour decoded linearly from rates, as the benchmark scores it:
    ridge regression from the rates of all neurons (each bin a sample) to the
    behaviour, its penalty chosen by 5-fold cross-validation over
    $\alpha \in \{10^{-4}, 10^{-3.5}, \dots, 1\}$ on the training trials
    (scikit-learn's `GridSearchCV(Ridge(), {"alpha": logspace(-4, 0, 9)})`), scored
    on the test trials by `r2_score` averaged over behaviour dimensions. Needs
    scikit-learn (`pip install 'sdekit[data]'`)."""
    try:
        from sklearn.linear_model import Ridge
        from sklearn.model_selection import GridSearchCV
    except ImportError as e:
        raise ImportError(
            "velocity_r2 needs scikit-learn: pip install 'sdekit[data]'."
        ) from e

    def flat(x):
        x = np.asarray(x, dtype=np.float64)
        return x.reshape(-1, x.shape[-1])

    decoder = GridSearchCV(Ridge(), {"alpha": np.logspace(-4, 0, 9)}, cv=5)
    decoder.fit(flat(train_rates), flat(train_behavior))
    score: Any = decoder.score(flat(test_rates), flat(test_behavior))
    return float(score)
