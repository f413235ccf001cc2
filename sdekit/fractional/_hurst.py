"""Estimating the Hurst index of a one-dimensional series by maximum likelihood (and
its posterior by NUTS), with the exact Kalman likelihood of MA-fBM models."""

import dataclasses
import math
import time
from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import gammaln
from jaxtyping import ArrayLike

from ..noise import FractionalNoise
from ._dense import _dense_profile
from ._kalman import (
    _innovations,
    check_observation_times,
    profile_from_innovations,
    step_structure,
)
from ._search import AbstractNegLogLikelihood, search


Model = Literal["fbm", "fou"]
_MODELS = ("fbm", "fou")
Method = Literal["auto", "dense", "kalman"]
_METHODS = ("auto", "dense", "kalman")
# Up to this many observed values, fBM's exact dense likelihood is the faster route:
# at 512 points both take the same time once compiled (and the dense one compiles in
# less than half the time), at 1000 the Kalman filter is 3x faster (docs/benchmarks.md,
# "Hurst timings"). Its gradients cost O(n^3) per step of the search.
DENSE_MAX_POINTS = 512
# "Strong" evidence for observation noise on the scale of 2 log(Bayes factor).
_NOISE_EVIDENCE = 6.0
# Smallest number of observed values per model: below that there is nothing to fit.
_MIN_OBSERVED = {"fbm": 8, "fou": 16}
# Box of the search coordinates (logit H, eta, log kappa). eta, the observation
# noise over the standard deviation of one step, enters squared: "no noise" is the
# interior point 0, where the likelihood is smooth (on a log scale it would be at
# minus infinity, and BFGS would chase it for all its steps).
_LOGIT_H = (math.log(0.005 / 0.995), math.log(0.995 / 0.005))
_ETA = (-1e2, 1e2)
_LOG_KAPPA = (math.log(1e-3), math.log(1e4))


@dataclasses.dataclass(frozen=True)
class EstimationSetup:
    """How a series' times map onto the MA-fBM used to estimate its Hurst index.

    Time is rescaled by `scale` so that the speeds' band, from `slow / span` to
    `fast / spacing` (or a little faster) in the data's time units, is centred on 1:
    $\\gamma_{\\max}$ is then $\\sqrt{(\\text{fast}/\\text{slow})\\,R}$ with $R$ the
    ratio $\\text{span}/\\text{spacing}$ rounded up to a power of $\\sqrt 2$ (452 for
    2000 regular points), so that series of similar lengths share one
    $\\gamma_{\\max}$ and with it their compiled likelihood. fBM is self-similar, so
    the rescaling only changes the units of $\\sigma$ and $\\theta$, which are
    reported in the data's units.

    **Fields:** `times` (rescaled, from 0), `scale`, `spacing` and `span` (rescaled:
    the 10th percentile of the steps, and the whole interval), `num_components`,
    `gamma_max`, `steps` and `index` (see [`sdekit.fractional.step_structure`][]).
    """

    times: np.ndarray
    scale: float
    spacing: float
    span: float
    num_components: int
    gamma_max: float
    steps: np.ndarray
    index: np.ndarray

    def noise(self, hurst) -> FractionalNoise:
        """The [`sdekit.noise.FractionalNoise`][] at Hurst index `hurst`: type I,
        spectral weights."""
        return FractionalNoise(
            hurst,
            self.num_components,
            self.gamma_max,
            self.span,
            kind="I",
            weights="spectral",
        )


def estimation_setup(
    times: ArrayLike, num_components: int = 12, slow: float = 0.1, fast: float = 10.0
) -> EstimationSetup:
    """The [`sdekit.fractional.EstimationSetup`][] for concrete, strictly increasing
    `times`: speeds from `slow / span` to `fast / spacing` or a little faster
    (defaults: ten times slower than the whole series, ten times faster than its
    finest steps, beyond which the left-out fine scales enter as white noise; see
    [`sdekit.noise.tail_variance`][])."""
    times = np.asarray(times, np.float64)
    steps = np.diff(times)
    span = float(times[-1] - times[0])
    spacing = float(np.percentile(steps, 10))
    # gamma_max is static in the compiled likelihood: a ladder of ratios keeps it the
    # same for similar series (the band reaches at most 19% further on the fast side).
    ratio = 2.0 ** (math.ceil(2 * math.log2(span / spacing) - 1e-9) / 2)
    low = slow / span
    gamma_max = math.sqrt(fast / slow * ratio)
    scale = low * gamma_max
    rescaled = (times - times[0]) * scale
    unique, index = step_structure(rescaled)
    return EstimationSetup(
        times=rescaled,
        scale=scale,
        spacing=spacing * scale,
        span=span * scale,
        num_components=int(num_components),
        gamma_max=gamma_max,
        steps=unique,
        index=index,
    )


def _log_vh(h):
    # V_H = Var B(1) in Daems et al.'s normalisation.
    return -gammaln(2 * h + 1) - jnp.log(jnp.sin(jnp.pi * h))


def _sigmoid(x: float) -> float:
    # On the host: an eager `jax.nn.sigmoid` would compile a program per call site.
    return 1.0 / (1.0 + math.exp(-x))


def _log_vh_host(h: float) -> float:
    # `_log_vh` on the host, for the same reason as `_sigmoid`.
    return -math.lgamma(2 * h + 1) - math.log(math.sin(math.pi * h))


def _bucket(size: int, minimum: int, step: float) -> int:
    """The smallest of `minimum * step**k` (rounded up to a multiple of 8) that holds
    `size`: arrays are padded to it, so that series of similar lengths share one
    compiled shape (and one entry of JAX's persistent compilation cache)."""
    k = max(0, math.ceil(math.log(max(size, 1) / minimum) / math.log(step) - 1e-9))
    while True:
        bucket = 8 * math.ceil(minimum * step**k / 8)
        if bucket >= size:
            return bucket
        k += 1


class _DenseNLL(AbstractNegLogLikelihood):
    """Exact fBM (`_dense.py`), in time units of the finest spacing. Search
    coordinates: logit H, eta (the noise sd over one step's sd)."""

    def __call__(self, x, data):
        loglik, sigma = _dense_profile(
            jax.nn.sigmoid(x[0]),
            x[1] ** 2,
            (data["log_distances"], data["positive"]),
            data["increments"],
            data["counted"],
        )
        return -loglik, (sigma, jnp.zeros_like(sigma))


class _KalmanNLL(AbstractNegLogLikelihood):
    """MA-fBM by the Kalman filter (`_kalman.py`) on the setup's rescaled times.
    Search coordinates: logit H, eta, and log kappa = log(theta span) (fou)."""

    num_components: int
    gamma_max: float
    model: str

    def __call__(self, x, data):
        h = jax.nn.sigmoid(x[0])
        # The spectral weights do not depend on the horizon: a constant one keeps
        # the compiled code the same for every span.
        noise = FractionalNoise(
            h, self.num_components, self.gamma_max, 1.0, "I", "spectral"
        )
        # A static 0 keeps fBM's closed-form transitions.
        theta = 0.0 if self.model == "fbm" else jnp.exp(x[2]) / data["span"]
        # eta is the observation noise relative to the standard deviation of one
        # step of the fBM part: r = eta sqrt(V_H) spacing^H sigma.
        ratio2 = x[1] ** 2 * jnp.exp(_log_vh(h) + 2 * h * jnp.log(data["spacing"]))
        variances, innovations, counted = _innovations(
            noise, theta, ratio2, data["ys"], None, data["steps"], data["index"], True
        )
        loglik, sigma, mu = profile_from_innovations(variances, innovations, counted)
        return -loglik, (sigma, mu)


def _dense_data(times, ys):
    """Padded arrays for `_DenseNLL`, times in units of the finest spacing (the
    10th percentile of the observed steps). **Returns:** `(data, unit)`."""
    seen = ~np.isnan(ys)
    t, y = times[seen], ys[seen]
    unit = float(np.percentile(np.diff(t), 10))
    u = (t - t[0]) / unit
    size = _bucket(len(u) - 1, 128, 2**0.25)
    # Padding: further times (any distinct ones), zero increments, not counted.
    u = np.concatenate([u, u[-1] + np.arange(1, size + 2 - len(u))])
    distance = np.abs(u[:, None] - u[None, :])
    positive = distance > 0
    increments = np.zeros(size)
    increments[: len(y) - 1] = np.diff(y)
    data = {
        "log_distances": np.log(np.where(positive, distance, 1.0)),
        "positive": positive,
        "increments": increments,
        "counted": np.arange(size) < len(y) - 1,
    }
    return data, unit


def _kalman_data(setup, ys):
    """Padded arrays for `_KalmanNLL`: NaN observations after the end, over steps
    of length 0 (the first distinct step), are predicted over and not counted."""
    size = _bucket(len(ys), 256, 2**0.5)
    # Each distinct step costs a transition (a matrix exponential for fou) at every
    # evaluation: powers of two, from 2 (a regular series has 2: 0 and dt).
    num_steps = 2 ** math.ceil(math.log2(max(len(setup.steps), 2)))
    padded = np.full(size, np.nan)
    padded[: len(ys)] = ys
    index = np.zeros(size, np.int32)
    index[: len(ys)] = setup.index
    steps = np.zeros(num_steps)
    steps[: len(setup.steps)] = setup.steps
    return {
        "ys": padded,
        "index": index,
        "steps": steps,
        "spacing": np.asarray(setup.spacing),
        "span": np.asarray(setup.span),
    }


def _grid(model, around=None):
    """The search's starting grid, one shape per model so that both variants (with
    and without observation noise) share a compiled search.

    Without noise: H from 0.02 to 0.98 (and, fou, kappa in {0.1, 1, 10, 100}); eta
    is 0 (and inactive). With noise, around the noise-free fit `around`: H from 0.1 below to
    0.2 above its estimate (noise read as roughness biases H down), eta in
    {0.1, 0.5, 2} (and kappa within a factor 10 of its estimate)."""
    if around is None:
        h = np.linspace(0.02, 0.98, 12)
        eta = np.zeros(1)
        kappa = np.log([0.1, 1.0, 10.0, 100.0])
    else:
        h0 = _sigmoid(float(around[0]))
        h = np.clip(h0 + np.array([-0.1, 0.0, 0.1, 0.2]), 0.01, 0.99)
        eta = np.array([0.1, 0.5, 2.0])
        kappa = around[-1] + np.log([0.1, 1 / 3, 1.0, 3.0])
    axes = [np.log(h / (1 - h)), eta] + ([kappa] if model == "fou" else [])
    return np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, len(axes))


def _box(model):
    box = [_LOGIT_H, _ETA] + ([_LOG_KAPPA] if model == "fou" else [])
    return np.array(box)


@dataclasses.dataclass(frozen=True)
class HurstEstimate:
    """The result of [`sdekit.fractional.estimate_hurst`][].

    **Fields:**

    - `hurst`, `hurst_std`: the estimate of $H$ and its standard error, from the
        curvature of the profile log-likelihood at the maximum (or the posterior mean
        and standard deviation, when `posterior` was asked for).
    - `hurst_interval`: the 95% posterior interval, or `None`.
    - `sigma`: the diffusion scale, in the data's time units and the usual fBM
        normalisation ($\\mathrm{Var}\\, B(1) = 1$).
    - `obs_std`: the observation noise's standard deviation (0 when the
        likelihood-ratio test kept none).
    - `theta`, `mu`: the drift $-\\theta(X - \\mu)$ (`fou` only, else `None`).
    - `log_likelihood`: the maximised log-likelihood $\\log p(y_2, \\dots, y_n \\mid
        y_1)$.
    - `model`, `num_observed`, `converged`, `seconds`, and `details` (the setup and
        the search's figures).
    """

    hurst: float
    hurst_std: float
    sigma: float
    obs_std: float
    theta: float | None
    mu: float | None
    log_likelihood: float
    model: str
    num_observed: int
    converged: bool
    seconds: float
    hurst_interval: tuple[float, float] | None = None
    details: dict[str, Any] = dataclasses.field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict of the fields."""
        out = dataclasses.asdict(self)
        if out["hurst_interval"] is not None:
            out["hurst_interval"] = list(out["hurst_interval"])
        return out


def _check_inputs(ys, dt, times, model, obs_noise):
    if model not in _MODELS:
        raise ValueError(f"`model` must be 'fbm' or 'fou', got {model!r}.")
    if obs_noise not in ("auto", True, False):
        raise ValueError(
            f"`obs_noise` must be 'auto', True or False, got {obs_noise!r}."
        )
    try:
        ys = np.asarray(ys, np.float64)
    except (TypeError, ValueError):
        raise ValueError("The series must be an array of numbers.") from None
    ys = np.squeeze(ys)
    if ys.ndim != 1:
        raise ValueError(
            f"The series must be one-dimensional, got shape {np.shape(ys)}."
        )
    if np.any(np.isinf(ys)):
        bad = int(np.argwhere(np.isinf(ys))[0, 0])
        raise ValueError(
            f"The series contains an infinite value (first at index {bad}); mark "
            "missing observations as NaN instead."
        )
    observed = int(np.sum(~np.isnan(ys)))
    need = _MIN_OBSERVED[model]
    if observed < need:
        raise ValueError(
            f"The series has {observed} observed (non-NaN) values; estimating the "
            f"Hurst index with model {model!r} needs at least {need}."
        )
    if dt is not None and times is not None:
        raise ValueError("Pass either `dt` or `times`, not both.")
    if times is None:
        dt = 1.0 if dt is None else dt
        try:
            dt = float(dt)
        except (TypeError, ValueError):
            raise ValueError(f"`dt` must be a positive number, got {dt!r}.") from None
        if not (math.isfinite(dt) and dt > 0):
            raise ValueError(f"`dt` must be a positive number, got {dt!r}.")
        times = np.arange(ys.shape[0]) * dt
    else:
        times = np.asarray(times, np.float64).squeeze()
        if times.shape != ys.shape:
            raise ValueError(
                f"`times` must have one entry per value: {ys.shape[0]} values but "
                f"times of shape {times.shape}."
            )
        check_observation_times(times)
    values = ys[~np.isnan(ys)]
    if np.all(values == values[0]):
        raise ValueError(
            "The series is constant: there is no variation to estimate a Hurst index "
            "from."
        )
    # Missing values at either end carry nothing; dropping them keeps the time
    # rescaling to the observed span.
    seen = np.flatnonzero(~np.isnan(ys))
    ys, times = ys[seen[0] : seen[-1] + 1], times[seen[0] : seen[-1] + 1]
    return ys, times, observed


class _Fit(NamedTuple):
    x: np.ndarray  # the optimum in search coordinates (all of them)
    value: float  # the negative log-likelihood there
    sigma: float  # the profiled scale (unit of the route's time)
    mu: float  # the profiled level (fou), else 0
    covariance: np.ndarray  # inverse Hessian over the active coordinates
    converged: bool
    steps: int


def _fit_variant(objective, data, model, with_noise, count, around=None):
    box = _box(model)
    active = np.array([True, with_noise] + [True] * (model == "fou"))
    found = search(
        objective,
        _grid(model, around),
        box[:, 0],
        box[:, 1],
        active,
        data,
        count,
    )
    # The inverse curvature; directions of (numerically) no curvature get a huge
    # rather than an infinite or negative variance.
    hessian = found.hessian
    vals, vecs = np.linalg.eigh(0.5 * (hessian + hessian.T))
    vals = np.maximum(vals, 1e-12 * max(vals.max(initial=0.0), 1e-300))
    sigma, mu = found.aux
    return _Fit(
        x=found.x,
        value=found.value,
        sigma=float(sigma),
        mu=float(mu),
        covariance=(vecs / vals) @ vecs.T,
        converged=found.converged,
        steps=found.steps,
    )


def _method(method, model, observed):
    if method not in _METHODS:
        raise ValueError(
            f"`method` must be 'auto', 'dense' or 'kalman', got {method!r}."
        )
    if method == "dense" and model != "fbm":
        raise ValueError(
            "method='dense' is the exact likelihood of fBM only; the fou model uses "
            "the Kalman filter (method='kalman' or 'auto')."
        )
    if method == "auto":
        return "dense" if model == "fbm" and observed <= DENSE_MAX_POINTS else "kalman"
    return method


def estimate_hurst(
    ys: ArrayLike,
    *,
    dt: float | None = None,
    times: ArrayLike | None = None,
    model: Model = "fbm",
    obs_noise: Literal["auto"] | bool = "auto",
    num_components: int = 12,
    method: Method = "auto",
) -> HurstEstimate:
    r"""Estimate the Hurst index of a one-dimensional series by maximum likelihood.

    The series is modelled as $y_i = X(t_i) + \varepsilon_i$ with
    $\varepsilon_i \sim \mathcal{N}(0, r^2)$ and $X$ either scaled fractional
    Brownian motion ($\mathrm{d}X = \sigma\,\mathrm{d}B^H$, `model="fbm"`) or a
    fractional Ornstein-Uhlenbeck process ($\mathrm{d}X = -\theta(X - \mu)\,
    \mathrm{d}t + \sigma\,\mathrm{d}B^H$, `model="fou"`).

    Two likelihoods, chosen by `method`:

    - `"dense"` (fBM only): the exact likelihood of fBM from the dense covariance
        of the increments ([`sdekit.fractional.fbm_log_likelihood`][]), $O(n^3)$
        time;
    - `"kalman"`: $B^H$ approximated by type-I MA-fBM with spectral weights on
        speeds fitted to the series' time scales
        ([`sdekit.fractional.estimation_setup`][]), the fine scales it leaves out
        added as white noise ([`sdekit.noise.tail_variance`][]), and the exact
        likelihood of that model by the Kalman filter
        ([`sdekit.fractional.fou_log_likelihood`][]), $O(n K^3)$ time;
    - `"auto"` (default): dense for fBM with at most
        `sdekit.fractional.DENSE_MAX_POINTS` observed values, where it is faster
        (docs/benchmarks.md), Kalman otherwise. The two agree within the
        approximation MA-fBM makes (H within a few thousandths at 1000 points).

    The likelihood is profiled in closed form over $\sigma$ (and $\mu$), searched
    on a grid over $H$ (and the noise level and $\theta$), and maximised from the
    best grid point by BFGS (optimistix) with exact derivatives, all in one
    compiled call; series are padded to a few bucketed lengths, so that similar
    lengths share compiled code. The standard error of $H$ comes from the exact
    Hessian of the profile log-likelihood (the inverse Hessian over all searched
    parameters). With `obs_noise="auto"`, observation noise is kept only on strong
    evidence: $2\Delta\log L - \log n > 6$, a Bayes factor above $e^3$ by the BIC.

    Runs in float64 (inside `jax.enable_x64`) whatever the global setting.

    **Arguments:**

    - `ys`: the series, shape `(n,)`; NaN marks missing values.
    - `dt`: the time step of a regularly sampled series (default 1), or
    - `times`: the observation times, strictly increasing, shape `(n,)`.
    - `model`: `"fbm"` (default) or `"fou"`.
    - `obs_noise`: `"auto"` (default), `True` (always estimate $r$) or `False`
        ($r = 0$).
    - `num_components`: $K$, the number of Ornstein-Uhlenbeck components of the
        Kalman route (default 12).
    - `method`: `"auto"` (default), `"dense"` or `"kalman"`.

    **Returns:** a [`sdekit.fractional.HurstEstimate`][].
    """
    start = time.perf_counter()
    ys, times, observed = _check_inputs(ys, dt, times, model, obs_noise)
    method = _method(method, model, observed)
    with jax.enable_x64(True):
        setup = estimation_setup(times, num_components)
        # Work on a standardised copy: the likelihood is invariant to the level and
        # scale of the data up to the log-Jacobian, added back below.
        values = ys[~np.isnan(ys)]
        scale = float(np.std(np.diff(values))) or float(np.std(values)) or 1.0
        level = float(values[0])
        ys_scaled = (ys - level) / scale
        if method == "dense":
            data, unit = _dense_data(times, ys_scaled)
            objective = _DenseNLL()
        else:
            data = _kalman_data(setup, ys_scaled)
            objective = _KalmanNLL(setup.num_components, setup.gamma_max, model)
        fits = {}
        if obs_noise in ("auto", False):
            fits[False] = _fit_variant(objective, data, model, False, observed - 1)
        if obs_noise in ("auto", True):
            around = fits[False].x if obs_noise == "auto" else None
            fits[True] = _fit_variant(
                objective, data, model, True, observed - 1, around
            )
        chosen = bool(obs_noise)
        if obs_noise == "auto":
            # Keep the noise only on strong evidence: a Bayes factor above e^3 by the
            # BIC approximation (2 dlogL - log n > 6, Kass and Raftery 1995). At small
            # H noise and roughness are hard to tell apart, and near H = 1 so are
            # noise and a slightly smaller H; a false detection costs an error of
            # several standard errors in H, while noise large enough to bias H is
            # found (tests).
            gain = 2 * (fits[False].value - fits[True].value)
            chosen = gain - math.log(observed - 1) > _NOISE_EVIDENCE
        fit = fits[chosen]
        h = _sigmoid(float(fit.x[0]))
        # The standard error of H from the curvature in logit(H), by the delta method.
        hurst_std = float(h * (1 - h) * math.sqrt(max(fit.covariance[0, 0], 0.0)))
        sigma_scaled = fit.sigma * scale
        obs_std = 0.0
        theta = mu = None
        if method == "dense":
            # Time was in units of `unit`: sigma B(t / unit) = sigma unit^-H B(t).
            sigma = sigma_scaled * unit**-h
            time_scale = 1 / unit
            if chosen:
                obs_std = abs(fit.x[1]) * sigma_scaled
        else:
            log_vh = _log_vh_host(h)
            sigma = sigma_scaled * setup.scale**h * math.exp(0.5 * log_vh)
            time_scale = setup.scale
            if chosen:
                ratio = math.exp(0.5 * log_vh + h * math.log(setup.spacing))
                obs_std = abs(fit.x[1]) * ratio * sigma_scaled
            if model == "fou":
                theta = math.exp(fit.x[2]) / setup.span * setup.scale
                mu = fit.mu * scale + level
        log_likelihood = -fit.value - (observed - 1) * math.log(scale)
    return HurstEstimate(
        hurst=h,
        hurst_std=hurst_std,
        sigma=sigma,
        obs_std=obs_std,
        theta=theta,
        mu=mu,
        log_likelihood=log_likelihood,
        model=model,
        num_observed=observed,
        converged=fit.converged,
        seconds=time.perf_counter() - start,
        details={
            "method": method,
            "num_components": setup.num_components,
            "gamma_max": setup.gamma_max,
            "time_scale": time_scale,
            "obs_noise_tested": obs_noise == "auto",
            "optimiser_steps": sum(f.steps for f in fits.values()),
        },
    )
