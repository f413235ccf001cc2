"""A synthetic spiking data set driven by the Lorenz system, with known rates."""

import numpy as np

from ._spikes import default_heldout_neurons, SpikeTrials, SpikingDataset


def _lorenz_field(x, sigma, rho, beta):
    a, b, c = x[..., 0], x[..., 1], x[..., 2]
    return np.stack([sigma * (b - a), a * (rho - c) - b, a * b - beta * c], axis=-1)


def lorenz_trajectories(
    initial: np.ndarray,
    num_points: int,
    dt: float,
    *,
    substeps: int = 10,
    sigma: float = 10.0,
    rho: float = 28.0,
    beta: float = 8.0 / 3.0,
) -> np.ndarray:
    r"""Solutions of the Lorenz system $\dot a = \sigma (b - a)$,
    $\dot b = a (\rho - c) - b$, $\dot c = a b - \beta c$ by classical Runge-Kutta,
    all initial states at once (vectorised over the leading axes).

    **Arguments:**

    - `initial`: `(..., 3)` initial states.
    - `num_points`: points returned per trajectory, the first being `initial`.
    - `dt`: time between returned points; each is reached in `substeps` RK4 steps.

    **Returns:** `(..., num_points, 3)`.
    """
    x = np.asarray(initial, dtype=np.float64)
    h = dt / substeps
    out = np.empty(x.shape[:-1] + (num_points, 3))
    out[..., 0, :] = x
    for i in range(1, num_points):
        for _ in range(substeps):
            k1 = _lorenz_field(x, sigma, rho, beta)
            k2 = _lorenz_field(x + 0.5 * h * k1, sigma, rho, beta)
            k3 = _lorenz_field(x + 0.5 * h * k2, sigma, rho, beta)
            k4 = _lorenz_field(x + h * k3, sigma, rho, beta)
            x = x + (h / 6) * (k1 + 2 * k2 + 2 * k3 + k4)
        out[..., i, :] = x
    return out


def lorenz_spikes(
    *,
    seed: int = 0,
    num_conditions: int = 65,
    trials_per_condition: int = 24,
    num_bins: int = 50,
    num_neurons: int = 29,
    bin_time: float = 0.025,
    base_rate: float = 0.4,
    gain: float = 1.0,
    test_fraction: float = 0.2,
    heldout_neurons: int | None = None,
    forward_bins: int = 0,
) -> SpikingDataset:
    r"""Poisson spike counts of neurons reading out a Lorenz attractor.

    The generator, in the form LFADS and the Neural Data Transformer evaluated on
    (65 conditions x 24 trials = 1560 trials of 50 bins, 29 neurons):

    1. Each condition starts from its own point of the attractor: a random state run
        for 20 time units (to reach the attractor) and then for a random extra
        0-2 units; the Lorenz system ($\sigma = 10$, $\rho = 28$, $\beta = 8/3$) is
        then integrated over the trial, `num_bins` bins of `bin_time` time units
        each (default 1.25 units: one to two turns about a lobe), by RK4.
    2. Per trial, the latent is centred (mean over the trial's bins) and divided by
        its largest absolute value over the trial, so $x_t \in [-1, 1]^3$.
    3. Log-rates are $\log r_{tn} = \log(\text{base\_rate}) + \text{gain}\,
        (W x_t)_n$ with a random readout $W_{nj} \sim \mathcal{N}(0, 1)$, one per
        data set; rates are in spikes per bin.
    4. Counts $y_{tn} \sim \mathrm{Poisson}(r_{tn})$, independently in every trial
        (trials of a condition share their rates, not their spikes).
    5. A seeded random `test_fraction` of the trials is the test split (80/20 by
        default: 1248 and 312 trials).

    Everything is drawn from `numpy.random.default_rng(seed)`. It takes a few tens of
    milliseconds.

    **Arguments:**

    - `seed`: seeds the initial states, the readout, the spikes and the split.
    - `num_conditions`, `trials_per_condition`: the trials, grouped by condition
        (the `conditions` labels, for the PSTH $R^2$).
    - `num_bins`, `num_neurons`, `bin_time`: the shape and the Lorenz time per bin.
    - `base_rate`, `gain`: the rates' baseline (spikes per bin) and modulation depth.
    - `test_fraction`: share of trials in the test split.
    - `heldout_neurons`: default a quarter of the neurons
        ([`sdekit.data.default_heldout_neurons`][]: 7 of 29).
    - `forward_bins`: the last bins predicted forward (default none).

    **Returns:** a [`sdekit.data.SpikingDataset`][] with the true rates and condition
    labels on both splits, and the per-bin latents as `behavior` (so that the
    velocity $R^2$ measures how well the latent state is decoded from the rates).
    """
    for name, value in (
        ("num_conditions", num_conditions),
        ("trials_per_condition", trials_per_condition),
        ("num_bins", num_bins),
        ("num_neurons", num_neurons),
    ):
        if not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"`{name}` must be a positive integer, got {value!r}.")
    if num_neurons < 2 or num_bins < 2:
        raise ValueError("Need at least 2 neurons and 2 bins.")
    if not (bin_time > 0 and base_rate > 0 and gain >= 0):
        raise ValueError("`bin_time` and `base_rate` must be > 0 and `gain` >= 0.")
    if not 0 < test_fraction < 1:
        raise ValueError(f"`test_fraction` must be in (0, 1), got {test_fraction}.")
    rng = np.random.default_rng(seed)
    start = rng.normal(0.0, 1.0, (num_conditions, 3)) + np.array([0.0, 0.0, 25.0])
    burn = 10.0 + rng.uniform(0.0, 2.0, num_conditions)
    # One RK4 run over the longest burn-in, then each condition's state at its own time.
    burn_dt = 0.02
    steps = np.round(burn / burn_dt).astype(int)
    path = lorenz_trajectories(start, int(steps.max()) + 1, burn_dt, substeps=1)
    initial = path[np.arange(num_conditions), steps]
    latents = lorenz_trajectories(initial, num_bins, bin_time)
    latents = latents - latents.mean(axis=1, keepdims=True)
    latents = latents / np.abs(latents).max(axis=(1, 2), keepdims=True)
    readout = rng.normal(0.0, 1.0, (3, num_neurons))
    log_rates = np.log(base_rate) + gain * latents @ readout
    conditions = np.repeat(np.arange(num_conditions), trials_per_condition)
    rates = np.exp(log_rates)[conditions]
    spikes = rng.poisson(rates)
    behavior = latents[conditions]
    order = rng.permutation(len(conditions))
    num_test = int(round(test_fraction * len(conditions)))
    test, train = np.sort(order[:num_test]), np.sort(order[num_test:])
    trials = SpikeTrials(
        spikes, rates=rates, behavior=behavior, conditions=conditions, name="lorenz"
    )
    if heldout_neurons is None:
        heldout_neurons = default_heldout_neurons(num_neurons)
    return SpikingDataset(
        trials.subset(train),
        trials.subset(test),
        heldout_neurons=heldout_neurons,
        forward_bins=forward_bins,
        name="lorenz",
    )
