"""Estimating the Hurst index of a one-dimensional series by maximum likelihood (and
its posterior by NUTS), with the exact Kalman likelihood of MA-fBM models."""

import dataclasses
import functools as ft
import math
import time
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import gammaln
from jaxtyping import ArrayLike

from ..noise import FractionalNoise
from ._kalman import (
    _innovations,
    check_observation_times,
    profile_from_innovations,
    step_structure,
)


Model = Literal["fbm", "fou"]
_MODELS = ("fbm", "fou")
# "Strong" evidence for observation noise on the scale of 2 log(Bayes factor).
_NOISE_EVIDENCE = 6.0
# Smallest number of observed values per model: below that there is nothing to fit.
_MIN_OBSERVED = {"fbm": 8, "fou": 16}
# Box of the unconstrained search coordinates (logit H, log eta, log kappa).
_LOGIT_H = (math.log(0.005 / 0.995), math.log(0.995 / 0.005))
_LOG_ETA = (math.log(1e-4), math.log(1e2))
_LOG_KAPPA = (math.log(1e-3), math.log(1e4))


@dataclasses.dataclass(frozen=True)
class EstimationSetup:
    """How a series' times map onto the MA-fBM used to estimate its Hurst index.

    Time is rescaled by `scale` so that the speeds' band, from `slow / span` to
    `fast / spacing` in the data's time units, is centred on 1: $\\gamma_{\\max}$ is
    then $\\sqrt{(\\text{fast}/\\text{slow})(\\text{span}/\\text{spacing})}$ (447 for
    2000 regular points). fBM is self-similar, so the rescaling only changes the
    units of $\\sigma$ and $\\theta$, which are reported in the data's units.

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
    `times`: speeds from `slow / span` to `fast / spacing` (defaults: ten times
    slower than the whole series, ten times faster than its finest steps, beyond
    which the left-out fine scales enter as white noise; see
    [`sdekit.noise.tail_variance`][])."""
    times = np.asarray(times, np.float64)
    steps = np.diff(times)
    span = float(times[-1] - times[0])
    spacing = float(np.percentile(steps, 10))
    low, high = slow / span, fast / spacing
    scale = math.sqrt(low * high)
    rescaled = (times - times[0]) * scale
    unique, index = step_structure(rescaled)
    return EstimationSetup(
        times=rescaled,
        scale=scale,
        spacing=spacing * scale,
        span=span * scale,
        num_components=int(num_components),
        gamma_max=math.sqrt(high / low),
        steps=unique,
        index=index,
    )


def _log_vh(h):
    # V_H = Var B(1) in Daems et al.'s normalisation.
    return -gammaln(2 * h + 1) - jnp.log(jnp.sin(jnp.pi * h))


def _unpack(x, model, with_noise):
    h = jax.nn.sigmoid(x[0])
    log_eta = x[1] if with_noise else None
    log_kappa = x[-1] if model == "fou" else None
    return h, log_eta, log_kappa


def _obs_ratio2(h, log_eta, spacing):
    # eta is the observation noise relative to the standard deviation of one step of
    # the fBM part: r = eta sqrt(V_H) spacing^H sigma.
    if log_eta is None:
        return 0.0
    return jnp.exp(2 * log_eta + _log_vh(h) + 2 * h * jnp.log(spacing))


@ft.partial(jax.jit, static_argnames=("config",))
def _profile_batch(xs, ys, steps, index, spacing, span, config):
    """Negative profile log-likelihoods (and sigma, mu) at a batch of points."""
    K, gamma_max, horizon, model, with_noise = config

    def one(x):
        h, log_eta, log_kappa = _unpack(x, model, with_noise)
        noise = FractionalNoise(h, K, gamma_max, horizon, "I", "spectral")
        theta = 0.0 if model == "fbm" else jnp.exp(log_kappa) / span
        ratio2 = _obs_ratio2(h, log_eta, spacing)
        variances, innovations, counted = _innovations(
            noise, theta, ratio2, ys, None, steps, index, True
        )
        loglik, sigma, mu = profile_from_innovations(variances, innovations, counted)
        return -loglik, sigma, mu

    return jax.vmap(one)(xs)


class _Objective:
    """The negative profile log-likelihood of one series and one model variant, in
    the search coordinates, evaluated in batches (one compiled call per batch)."""

    def __init__(self, setup, ys, model, with_noise):
        self.setup = setup
        self.ys = jnp.asarray(ys, jnp.float64)
        self.model = model
        self.with_noise = with_noise
        self.dim = 1 + int(with_noise) + int(model == "fou")
        self.config = (
            setup.num_components,
            setup.gamma_max,
            setup.span,
            model,
            with_noise,
        )
        self.evaluations = 0

    def __call__(self, xs):
        xs = np.atleast_2d(np.asarray(xs, np.float64))
        self.evaluations += xs.shape[0]
        nll, sigma, mu = _profile_batch(
            jnp.asarray(xs),
            self.ys,
            jnp.asarray(self.setup.steps),
            jnp.asarray(self.setup.index),
            self.setup.spacing,
            self.setup.span,
            self.config,
        )
        return np.asarray(nll), np.asarray(sigma), np.asarray(mu)

    def bounds(self):
        box = [_LOGIT_H]
        if self.with_noise:
            box.append(_LOG_ETA)
        if self.model == "fou":
            box.append(_LOG_KAPPA)
        return np.array(box)


def _stencil(x, step):
    # Points for central differences: x, x +- h e_i, x +- h e_i +- h e_j (i < j).
    p = x.shape[0]
    eye = np.eye(p) * step
    points = [x]
    for i in range(p):
        points += [x + eye[i], x - eye[i]]
    for i in range(p):
        for j in range(i + 1, p):
            points += [
                x + eye[i] + eye[j],
                x + eye[i] - eye[j],
                x - eye[i] + eye[j],
                x - eye[i] - eye[j],
            ]
    return np.array(points)


def _derivatives(values, p, step):
    # Gradient and Hessian from the values at `_stencil` points.
    f0 = values[0]
    plus, minus = values[1 : 2 * p + 1 : 2], values[2 : 2 * p + 1 : 2]
    grad = (plus - minus) / (2 * step)
    hess = np.diag((plus - 2 * f0 + minus) / step**2)
    k = 2 * p + 1
    for i in range(p):
        for j in range(i + 1, p):
            pp, pm, mp, mm = values[k : k + 4]
            hess[i, j] = hess[j, i] = (pp - pm - mp + mm) / (4 * step**2)
            k += 4
    return grad, hess


def _newton(objective, x0, *, step=1e-3, max_iterations=40, xtol=1e-5, ftol=1e-5):
    """Damped Newton (Levenberg-Marquardt) on the objective, with finite-difference
    derivatives from one batched evaluation per iteration.

    **Returns:** `(x, f, hessian, converged)`."""
    box = objective.bounds()
    x = np.clip(np.asarray(x0, np.float64), box[:, 0], box[:, 1])
    p = x.shape[0]
    damping = 1e-3
    converged = False
    for _ in range(max_iterations):
        values = objective(_stencil(x, step))[0]
        f = values[0]
        grad, hess = _derivatives(values, p, step)
        # Levenberg-Marquardt: increase the damping until the step decreases f.
        improved = False
        for _ in range(12):
            shifted = hess + damping * np.diag(np.maximum(np.abs(np.diag(hess)), 1.0))
            try:
                delta = -np.linalg.solve(shifted, grad)
            except np.linalg.LinAlgError:
                damping *= 10
                continue
            candidate = np.clip(x + delta, box[:, 0], box[:, 1])
            f_new = objective(candidate[None])[0][0]
            if np.isfinite(f_new) and f_new <= f:
                improved = True
                break
            damping *= 10
        if not improved:
            converged = bool(np.max(np.abs(grad)) < 1e-3 * max(1.0, abs(f)) ** 0.5)
            break
        moved = np.max(np.abs(candidate - x))
        x = candidate
        damping = max(damping / 10, 1e-6)
        # The log-likelihood to 1e-5: H to ~1e-4 of a standard error and better.
        if moved < xtol or f - f_new < ftol:
            converged = True
            break
    values = objective(_stencil(x, step))[0]
    _, hess = _derivatives(values, p, step)
    return x, values[0], hess, converged


def _grid(objective, around=None):
    """The best point of a coarse grid: H from 0.02 to 0.98, eta in {0.1, 0.5, 2},
    kappa in {0.1, 1, 10, 100}. With `around` (the noise-free fit, when adding
    noise), H only from 0.1 below to 0.2 above its estimate (noise read as roughness
    biases H down) and kappa at its estimate: the noise-free fit has located them."""
    if around is None:
        h = np.linspace(0.02, 0.98, 25)
    else:
        h0 = float(jax.nn.sigmoid(around[0]))
        h = np.clip(h0 + np.array([-0.1, 0.0, 0.1, 0.2]), 0.01, 0.99)
    axes = [np.log(h / (1 - h))]
    if objective.with_noise:
        axes.append(np.log([0.1, 0.5, 2.0]))
    if objective.model == "fou":
        kappa = np.log([0.1, 1.0, 10.0, 100.0]) if around is None else around[-1:]
        axes.append(kappa)
    mesh = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, len(axes))
    values = objective(mesh)[0]
    values = np.where(np.isfinite(values), values, np.inf)
    return mesh[int(np.argmin(values))], float(np.min(values))


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


def _fit_variant(setup, ys_scaled, model, with_noise, around=None):
    objective = _Objective(setup, ys_scaled, model, with_noise)
    x0, _ = _grid(objective, around)
    x, f, hess, converged = _newton(objective, x0)
    return objective, x, f, hess, converged


def estimate_hurst(
    ys: ArrayLike,
    *,
    dt: float | None = None,
    times: ArrayLike | None = None,
    model: Model = "fbm",
    obs_noise: Literal["auto"] | bool = "auto",
    num_components: int = 12,
) -> HurstEstimate:
    r"""Estimate the Hurst index of a one-dimensional series by maximum likelihood.

    The series is modelled as $y_i = X(t_i) + \varepsilon_i$ with
    $\varepsilon_i \sim \mathcal{N}(0, r^2)$ and $X$ either scaled fractional
    Brownian motion ($\mathrm{d}X = \sigma\,\mathrm{d}B^H$, `model="fbm"`) or a
    fractional Ornstein-Uhlenbeck process ($\mathrm{d}X = -\theta(X - \mu)\,
    \mathrm{d}t + \sigma\,\mathrm{d}B^H$, `model="fou"`), with $B^H$ approximated by
    type-I MA-fBM with spectral weights on speeds fitted to the series' time scales
    ([`sdekit.fractional.estimation_setup`][]) and the fine scales it leaves out
    added as white noise ([`sdekit.noise.tail_variance`][]). Its exact likelihood
    ([`sdekit.fractional.fou_log_likelihood`][]) is profiled in closed form over
    $\sigma$ and $\mu$, searched on a grid over $H$ (and the noise level and
    $\theta$), and maximised from the best grid point by Newton's method with
    finite-difference derivatives. The standard error of $H$ comes from the
    curvature of the profile log-likelihood (the inverse Hessian over all searched
    parameters). With `obs_noise="auto"`, observation noise is kept only on strong
    evidence: $2\Delta\log L - \log n > 6$, a Bayes factor above $e^3$ by the BIC.

    Runs in float64 (inside `jax.enable_x64`) whatever the global setting, in
    $O(n K^3)$ time.

    **Arguments:**

    - `ys`: the series, shape `(n,)`; NaN marks missing values.
    - `dt`: the time step of a regularly sampled series (default 1), or
    - `times`: the observation times, strictly increasing, shape `(n,)`.
    - `model`: `"fbm"` (default) or `"fou"`.
    - `obs_noise`: `"auto"` (default), `True` (always estimate $r$) or `False`
        ($r = 0$).
    - `num_components`: $K$, the number of Ornstein-Uhlenbeck components (default 12).

    **Returns:** a [`sdekit.fractional.HurstEstimate`][].
    """
    start = time.perf_counter()
    ys, times, observed = _check_inputs(ys, dt, times, model, obs_noise)
    with jax.enable_x64(True):
        setup = estimation_setup(times, num_components)
        # Work on a standardised copy: the likelihood is invariant to the level and
        # scale of the data up to the log-Jacobian, added back below.
        steps = np.diff(ys[~np.isnan(ys)])
        scale = float(np.std(steps)) or float(np.std(ys[~np.isnan(ys)])) or 1.0
        level = float(ys[~np.isnan(ys)][0])
        ys_scaled = (ys - level) / scale
        variants = [False, True] if obs_noise == "auto" else [bool(obs_noise)]
        fits = {variants[0]: _fit_variant(setup, ys_scaled, model, variants[0])}
        if obs_noise == "auto":
            fits[True] = _fit_variant(
                setup, ys_scaled, model, True, around=fits[False][1]
            )
        chosen = variants[0]
        # Keep the noise only on strong evidence: a Bayes factor above e^3 by the BIC
        # approximation (2 dlogL - log n > 6, Kass and Raftery 1995). At small H noise
        # and roughness are hard to tell apart, and near H = 1 so are noise and a
        # slightly smaller H; a false detection costs an error of several standard
        # errors in H, while noise large enough to bias H is found (tests).
        gain = 2 * (fits[False][2] - fits[True][2]) if obs_noise == "auto" else 0.0
        if gain - math.log(observed - 1) > _NOISE_EVIDENCE:
            chosen = True
        objective, x, f, hess, converged = fits[chosen]
        _, sigma_unit, mu_unit = objective(x[None])
        h, log_eta, log_kappa = _unpack(jnp.asarray(x), model, chosen)
        h = float(h)
        # The standard error of H from the curvature in logit(H), by the delta method.
        vals, vecs = np.linalg.eigh(0.5 * (hess + hess.T))
        vals = np.maximum(vals, 1e-12 * max(vals.max(initial=0.0), 1e-300))
        cov = (vecs / vals) @ vecs.T
        hurst_std = float(h * (1 - h) * math.sqrt(max(cov[0, 0], 0.0)))
        sigma_rescaled = float(sigma_unit[0]) * scale
        log_vh = float(_log_vh(h))
        sigma = sigma_rescaled * setup.scale**h * math.exp(0.5 * log_vh)
        obs_std = 0.0
        if chosen:
            obs_std = math.sqrt(float(_obs_ratio2(h, log_eta, setup.spacing))) * (
                sigma_rescaled
            )
        theta = mu = None
        if model == "fou":
            theta = float(np.exp(log_kappa)) / setup.span * setup.scale
            mu = float(mu_unit[0]) * scale + level
        num_counted = observed - 1
        log_likelihood = -float(f) - num_counted * math.log(scale)
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
        converged=bool(converged),
        seconds=time.perf_counter() - start,
        details={
            "num_components": setup.num_components,
            "gamma_max": setup.gamma_max,
            "time_scale": setup.scale,
            "obs_noise_tested": obs_noise == "auto",
            "evaluations": sum(fit[0].evaluations for fit in fits.values()),
        },
    )
