"""The Neural Latents Benchmark's smoothing baseline: Gaussian-smoothed held-in spikes
and a Poisson GLM from their logarithm to each neuron's counts."""

import dataclasses

import numpy as np

from ..data import SpikingDataset
from ._metrics import co_bps


# Kernel standard deviations tried, in bins (with 20 ms bins: 10 to 120 ms, the range
# the benchmark's own sweep covers).
WIDTHS = (0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0)


def smooth_spikes(spikes, width: float) -> np.ndarray:
    """Convolve each neuron's counts along the bins with a normalised Gaussian of
    standard deviation `width` bins (truncated at 3 standard deviations; zero outside
    the trial, so the edges are damped as by the benchmark's `np.convolve(...,
    "same")`).

    **Arguments:**

    - `spikes`: `(trials, bins, neurons)` counts.
    - `width`: the kernel's standard deviation in bins, `> 0`.
    """
    if not width > 0:
        raise ValueError(f"The kernel width must be > 0 bins, got {width!r}.")
    spikes = np.asarray(spikes, dtype=np.float64)
    half = int(np.ceil(3 * width))
    offsets = np.arange(-half, half + 1)
    kernel = np.exp(-0.5 * (offsets / width) ** 2)
    kernel /= kernel.sum()
    padded = np.pad(spikes, ((0, 0), (half, half), (0, 0)))
    bins = spikes.shape[1]
    return sum(w * padded[:, j : j + bins] for j, w in enumerate(kernel))  # pyright: ignore


def fit_poisson_glm(
    inputs, counts, alpha: float = 0.01, iterations: int = 50
) -> tuple[np.ndarray, np.ndarray]:
    r"""A Poisson GLM with log link per output column: minimises
    $\frac1n \sum_i (e^{x_i^\top w + b} - y_i (x_i^\top w + b)) + \frac{\alpha}{2}
    \lVert w \rVert^2$ (scikit-learn's `PoissonRegressor(alpha)` objective; the
    intercept is not penalised) by Newton's method with step halving, which converges
    in a few iterations on this convex problem.

    **Arguments:**

    - `inputs`: `(n, p)` features.
    - `counts`: `(n, m)` non-negative targets, one GLM per column.
    - `alpha`: the L2 penalty.

    **Returns:** `(weights, intercepts)`, `(p, m)` and `(m,)`.
    """
    x = np.asarray(inputs, dtype=np.float64)
    y = np.asarray(counts, dtype=np.float64)
    n, p = x.shape
    design = np.concatenate([x, np.ones((n, 1))], axis=1)
    penalty = np.full(p + 1, alpha)
    penalty[-1] = 0.0
    weights = np.zeros((p, y.shape[1]))
    intercepts = np.zeros(y.shape[1])

    def objective(theta, target):
        eta = design @ theta
        return np.mean(np.exp(eta) - target * eta) + 0.5 * np.sum(penalty * theta**2)

    for j in range(y.shape[1]):
        target = y[:, j]
        theta = np.zeros(p + 1)
        theta[-1] = np.log(max(target.mean(), 1e-9))
        value = objective(theta, target)
        for _ in range(iterations):
            mu = np.exp(design @ theta)
            grad = design.T @ (mu - target) / n + penalty * theta
            hess = (design * mu[:, None]).T @ design / n + np.diag(penalty)
            hess[np.diag_indices_from(hess)] += 1e-10
            step = np.linalg.solve(hess, grad)
            scale = 1.0
            while True:
                candidate = theta - scale * step
                new = objective(candidate, target)
                if np.isfinite(new) and new <= value or scale < 1e-6:
                    break
                scale /= 2
            converged = value - new < 1e-10 * max(1.0, abs(value))
            theta, value = candidate, new
            if converged:
                break
        weights[:, j], intercepts[j] = theta[:-1], theta[-1]
    return weights, intercepts


@dataclasses.dataclass(frozen=True)
class SmoothingBaseline:
    """What [`sdekit.langevin.smoothing_baseline`][] returns.

    **Fields:**

    - `train_rates`, `test_rates`: `(trials, observed_bins, neurons)` predicted rates
        of all neurons (GLMs from the held-in neurons' smoothed spikes).
    - `width`: the kernel's standard deviation (bins) chosen on the training trials.
    - `scores`: the validation co-bps of every width tried, `{width: co_bps}`.
    """

    train_rates: np.ndarray
    test_rates: np.ndarray
    width: float
    scores: dict[float, float]


def _features(spikes, width):
    smoothed = smooth_spikes(spikes, width)
    # The logarithm of the smoothed counts (offset 1e-4), as the benchmark's baseline.
    return np.log(smoothed + 1e-4).reshape(-1, spikes.shape[-1])


def _predict(features, weights, intercepts, shape):
    rates = np.exp(np.clip(features @ weights + intercepts, -30.0, 30.0))
    return rates.reshape(*shape[:2], -1)


def smoothing_baseline(
    data: SpikingDataset,
    *,
    widths: tuple[float, ...] = WIDTHS,
    alpha: float = 0.01,
    valid_fraction: float = 0.2,
    seed: int = 0,
) -> SmoothingBaseline:
    """The benchmark's smoothing baseline, its kernel width chosen on training trials.

    The held-in spikes of the observed bins are smoothed with a Gaussian kernel
    ([`sdekit.langevin.smooth_spikes`][]); Poisson GLMs
    ([`sdekit.langevin.fit_poisson_glm`][]) map the log of the smoothed held-in
    spikes in each bin to each neuron's count in that bin. The width is the one of
    `widths` whose GLMs, fitted on a seeded `1 - valid_fraction` of the training
    trials, give the best co-bps on the rest (with no held-out neurons: the best
    held-in log-likelihood); the GLMs are then refitted on all training trials, for
    every neuron (held-in ones too, so that rate $R^2$ compares like with like).

    **Returns:** a [`sdekit.langevin.SmoothingBaseline`][].
    """
    train = data.heldin(data.train)
    test = data.heldin(data.test)
    observed = slice(0, data.observed_bins)
    targets = data.train.spikes[:, observed]
    widths = tuple(w for w in widths if w < data.observed_bins / 2) or (min(widths),)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(train))
    num_valid = max(1, int(round(valid_fraction * len(train))))
    valid, fit = order[:num_valid], order[num_valid:]
    scored = slice(data.num_heldin, None) if data.heldout_neurons else slice(0, None)
    scores = {}
    for width in widths:
        features = _features(train[fit], width)
        weights, intercepts = fit_poisson_glm(
            features,
            targets[fit][..., scored].reshape(-1, targets[..., scored].shape[-1]),
            alpha,
        )
        rates = _predict(
            _features(train[valid], width), weights, intercepts, train[valid].shape
        )
        scores[width] = co_bps(rates, targets[valid][..., scored])
    width = max(scores, key=lambda w: scores[w])
    features = _features(train, width)
    weights, intercepts = fit_poisson_glm(
        features, targets.reshape(-1, targets.shape[-1]), alpha
    )
    return SmoothingBaseline(
        train_rates=_predict(features, weights, intercepts, train.shape),
        test_rates=_predict(_features(test, width), weights, intercepts, test.shape),
        width=float(width),
        scores={float(w): float(s) for w, s in scores.items()},
    )
