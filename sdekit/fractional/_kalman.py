"""Exact likelihood of a fractional Ornstein-Uhlenbeck process observed with Gaussian
noise at arbitrary times: a Kalman filter on the augmented linear-Gaussian system."""

import equinox as eqx
import jax
import jax.core
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Bool, Float, Int

from ..noise import FractionalNoise, stationary_covariance, tail_variance


def fou_system(
    theta: Float[ArrayLike, ""],
    noise: FractionalNoise,
    omega: Float[Array, " K"] | None = None,
) -> tuple[Float[Array, "m m"], Float[Array, " m"]]:
    r"""The drift matrix $F$ and diffusion vector $G$ of the fractional OU process
    $\mathrm{d}X = -\theta X\,\mathrm{d}t + \mathrm{d}\hat B$ written, with the
    noise's components, as the linear SDE $\mathrm{d}s = F s\,\mathrm{d}t +
    G\,\mathrm{d}W$ on $s = (X, Y_1, \dots, Y_K)$ (Daems et al. 2024, equation 11):

    $$F = \begin{pmatrix} -\theta & -(\omega \odot \gamma)^\top \\ 0 &
    -\operatorname{diag}\gamma \end{pmatrix}, \qquad G = (\bar\omega, 1, \dots, 1).$$

    (Unit scale: with a diffusion scale $\sigma$ the state is $(X, \sigma Y)$ and the
    covariances scale by $\sigma^2$.) Pass `omega` if already computed.
    """
    omega = noise.omega() if omega is None else omega
    dtype = omega.dtype
    gammas = jnp.asarray(noise.speeds, dtype)
    K = gammas.shape[0]
    top = jnp.concatenate([-jnp.asarray(theta, dtype)[None], -omega * gammas])
    bottom = jnp.concatenate([jnp.zeros((K, 1), dtype), -jnp.diag(gammas)], axis=1)
    F = jnp.concatenate([top[None], bottom])
    G = jnp.concatenate([jnp.sum(omega)[None], jnp.ones((K,), dtype)])
    return F, G


# Enough halvings for steps up to 2^48 times the fastest time scale.
_MAX_DOUBLINGS = 48


def van_loan(
    drift: Float[Array, "m m"], diffusion: Float[Array, "m p"], dt: Float[ArrayLike, ""]
) -> tuple[Float[Array, "m m"], Float[Array, "m m"]]:
    r"""The exact transition of $\mathrm{d}s = F s\,\mathrm{d}t + L\,\mathrm{d}W$ over
    a step $\Delta$: $s(t + \Delta) = \Phi s(t) + \xi$, $\xi \sim \mathcal{N}(0, Q)$,
    with $\Phi = e^{F \Delta}$ and $Q = \int_0^\Delta e^{F u} L L^\top e^{F^\top u}
    \mathrm{d}u$, both from one matrix exponential (Van Loan 1978, *Computing
    integrals involving the matrix exponential*, theorem 1):
    $\exp\Big(\begin{pmatrix} -F & L L^\top \\ 0 & F^\top \end{pmatrix}h\Big) =
    \begin{pmatrix} \cdot & M_{12} \\ 0 & M_{22} \end{pmatrix}$, $\Phi_h = M_{22}^\top$,
    $Q_h = \Phi_h M_{12}$.

    The block holds $e^{-F h}$, which grows like $e^{\gamma_{\max} h}$: for a stiff
    system and a long step its cancellation would destroy $Q$. So the exponential is
    taken over $h = \Delta / 2^k$ with $\lVert F \rVert h \le 1$, and the step is
    doubled $k$ times, $\Phi_{2h} = \Phi_h^2$, $Q_{2h} = Q_h + \Phi_h Q_h \Phi_h^\top$,
    which only adds positive semi-definite terms.
    """
    m = drift.shape[0]
    L = diffusion.reshape(m, -1)
    dt = jnp.asarray(dt, drift.dtype)
    norm = jnp.max(jnp.sum(jnp.abs(drift), axis=1))
    doublings = jnp.clip(
        jnp.ceil(jnp.log2(jnp.maximum(jax.lax.stop_gradient(norm * dt), 1.0))),
        0,
        _MAX_DOUBLINGS,
    )
    h = dt / 2.0**doublings
    block = jnp.concatenate(
        [
            jnp.concatenate([-drift, L @ L.T], axis=1),
            jnp.concatenate([jnp.zeros_like(drift), drift.T], axis=1),
        ]
    )
    E = jax.scipy.linalg.expm(block * h)
    Phi = E[m:, m:].T
    Q = Phi @ E[:m, m:]

    def double(i, carry):
        Phi, Q = carry
        doubled = (Phi @ Phi, Q + Phi @ Q @ Phi.T)
        return jax.tree_util.tree_map(
            lambda new, old: jnp.where(i < doublings, new, old), doubled, carry
        )

    Phi, Q = jax.lax.fori_loop(0, _MAX_DOUBLINGS, double, (Phi, Q))
    return Phi, 0.5 * (Q + Q.T)


class _Filtered(eqx.Module):
    variances: Array  # innovation variances, (n,)
    innovations: Array  # (n, columns)
    counted: Array  # whether step i contributes to the likelihood, (n,)


def _filter(
    Phis: Float[Array, "u m m"],
    Qs: Float[Array, "u m m"],
    index: Int[Array, " n"],
    ys: Float[Array, "n c"],
    observed: Bool[Array, " n"],
    initial_cov: Float[Array, "m m"],
    obs_var: Float[Array, ""],
) -> _Filtered:
    # Kalman filter observing the first state component, for several data columns at
    # once (they share covariances and gains). The first state component has a flat
    # prior: the first observed value pins it (mean y, variance obs_var, independent
    # of the rest) and does not count in the likelihood. Everything before that first
    # observation only propagates the other components. Step i uses the transition
    # Phis[index[i]], Qs[index[i]]: indexing inside the loop, rather than gathering
    # all n transitions first, makes the backward pass four times cheaper.
    m = Phis.shape[1]
    dtype = Phis.dtype
    c = ys.shape[1]
    first = jnp.eye(m, dtype=dtype)[0]

    def step(carry, inputs):
        mean, cov, started = carry
        i, y, obs = inputs
        Phi, Q = Phis[i], Qs[i]
        mean = Phi @ mean
        cov = Phi @ cov @ Phi.T + Q
        # Update.
        # Before the first observation the first component's variance is a
        # placeholder 0: a unit S keeps that (unused) branch, and its gradient, finite.
        S = jnp.where(started, cov[0, 0] + obs_var, 1.0)
        gain = cov[:, 0] / S
        v = y - mean[0]
        upd_mean = mean + gain[:, None] * v[None, :]
        upd_cov = cov - S * jnp.outer(gain, gain)
        # Diffuse start at the first observation.
        rest = cov * (1 - first)[:, None] * (1 - first)[None, :]
        init_cov = rest + obs_var * jnp.outer(first, first)
        init_mean = mean * (1 - first)[:, None] + first[:, None] * y[None, :]
        new_mean = jnp.where(obs, jnp.where(started, upd_mean, init_mean), mean)
        new_cov = jnp.where(obs, jnp.where(started, upd_cov, init_cov), cov)
        new_cov = 0.5 * (new_cov + new_cov.T)
        counted = obs & started
        out = (jnp.where(counted, S, 1.0), jnp.where(counted, v, 0.0), counted)
        return (new_mean, new_cov, started | obs), out

    mean0 = jnp.zeros((m, c), dtype)
    carry = (mean0, initial_cov, jnp.asarray(False))
    _, (variances, innovations, counted) = jax.lax.scan(
        step, carry, (index, ys, observed)
    )
    return _Filtered(variances, innovations, counted)


def fbm_transition(
    omega: Float[Array, " K"], gammas: Float[Array, " K"], dt: Float[ArrayLike, ""]
) -> tuple[Float[Array, "m m"], Float[Array, "m m"]]:
    r"""[`sdekit.fractional.van_loan`][] in closed form for $\theta = 0$: then
    $X(t + \Delta) - X(t) = \omega^\top (Y(t + \Delta) - Y(t))$, the components move
    independently of $X$, $Y(t + \Delta) = e^{-\gamma\Delta} Y(t) + \xi$ with
    $\operatorname{Cov} \xi_{ij} = (1 - e^{-(\gamma_i + \gamma_j)\Delta}) /
    (\gamma_i + \gamma_j)$, and the increment of $X$ is $\omega^\top$ that of $Y$."""
    decay = jnp.exp(-gammas * dt)
    gsum = gammas[:, None] + gammas[None, :]
    Qy = -jnp.expm1(-gsum * dt) / gsum
    Qyw = Qy @ omega
    Phi = jnp.concatenate(
        [
            jnp.concatenate([jnp.ones((1,), omega.dtype), omega * (decay - 1)])[None],
            jnp.concatenate(
                [jnp.zeros((gammas.shape[0], 1), omega.dtype), jnp.diag(decay)], axis=1
            ),
        ]
    )
    Q = jnp.concatenate(
        [
            jnp.concatenate([(omega @ Qyw)[None], Qyw])[None],
            jnp.concatenate([Qyw[:, None], Qy], axis=1),
        ]
    )
    return Phi, Q


def _is_static_zero(x) -> bool:
    return isinstance(x, (int, float, np.ndarray, np.generic)) and bool(
        np.all(np.asarray(x) == 0)
    )


def step_structure(times: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The steps between concrete `times` (the first step, to `times[0]` itself, is
    0) as `(distinct steps, index)`, so that `distinct[index]` are the steps: each
    distinct step needs one transition (one on a regular grid). Steps equal up to
    roundoff (`np.linspace`'s) are merged; that moves a step by at most 1e-11 of the
    largest."""
    times = np.asarray(times, np.float64)
    steps = np.diff(times, prepend=times[:1])
    keys = np.round(steps / max(steps.max(), 1e-300) * 1e11)
    _, first, index = np.unique(keys, return_index=True, return_inverse=True)
    return steps[first], index.reshape(-1)


def _transitions(theta, noise, omega, steps):
    # theta == 0 known statically: closed form; otherwise the matrix exponential.
    dtype = omega.dtype
    if _is_static_zero(theta):
        gammas = jnp.asarray(noise.speeds, dtype)

        def transition(dt):
            return fbm_transition(omega, gammas, dt)
    else:
        F, G = fou_system(theta, noise, omega)

        def transition(dt):
            return van_loan(F, G, dt)

    return jax.vmap(transition)(jnp.asarray(steps, dtype))


def check_observation_times(times: np.ndarray) -> None:
    """Observation times must be finite and strictly increasing (a `ValueError`)."""
    if not np.all(np.isfinite(times)):
        raise ValueError("`times` contains NaN or infinite values.")
    if np.any(np.diff(times) <= 0):
        raise ValueError(
            "`times` must be strictly increasing (sort the observations and merge "
            "duplicates)."
        )


def _check_series(times, ys):
    """Eager checks of concrete inputs; returns NumPy arrays."""
    times = np.asarray(times, np.float64)
    ys = np.asarray(ys, np.float64)
    if times.ndim != 1 or ys.shape != times.shape:
        raise ValueError(
            f"`times` and `ys` must be one-dimensional and of the same length, got "
            f"shapes {times.shape} and {ys.shape}."
        )
    check_observation_times(times)
    if np.any(np.isinf(ys)):
        raise ValueError(
            "The series contains infinite values; mark missing observations as NaN."
        )
    if np.sum(~np.isnan(ys)) < 2:
        raise ValueError(
            "The series needs at least two observed (non-NaN) values: the first one "
            "only fixes the level."
        )
    return times, ys


def _innovations(noise, theta, ratio2, ys, mu, steps, index, tail_noise):
    # The unit-scale filter on ys - mu (or on [ys, 1] when mu is None).
    omega = noise.omega()
    dtype = omega.dtype
    ys = jnp.asarray(ys, dtype)
    observed = ~jnp.isnan(ys)
    y0 = jnp.where(observed, ys, 0.0)
    if mu is None:
        columns = jnp.stack([y0, observed.astype(dtype)], axis=1)
    else:
        columns = (y0 - jnp.asarray(mu, dtype))[:, None]
    Phis, Qs = _transitions(theta, noise, omega, steps)
    if index is None:
        index = jnp.arange(ys.shape[0])
    m = noise.num_components + 1
    cov0 = jnp.zeros((m, m), dtype)
    if noise.kind == "I":
        S = jnp.asarray(stationary_covariance(noise.speeds), dtype)
        cov0 = cov0.at[1:, 1:].set(S)
    obs_var = jnp.asarray(ratio2, dtype)
    if tail_noise:
        obs_var = obs_var + tail_variance(noise.hurst, omega, noise.speeds)
    filtered = _filter(Phis, Qs, index, columns, observed, cov0, obs_var)
    return filtered.variances, filtered.innovations, filtered.counted


def _steps_of(times):
    if isinstance(times, jax.Array):
        return jnp.diff(times, prepend=times[:1]), None
    return step_structure(np.asarray(times, np.float64))


def filter_innovations(
    times: Float[ArrayLike, " n"],
    ys: Float[ArrayLike, " n"],
    *,
    noise: FractionalNoise,
    theta: Float[ArrayLike, ""] = 0.0,
    noise_ratio: Float[ArrayLike, ""] = 0.0,
    mu: Float[ArrayLike, ""] | None = None,
    tail_noise: bool = False,
) -> tuple[Array, Array, Array]:
    r"""Run the unit-scale Kalman filter ($\sigma = 1$, observation standard deviation
    `noise_ratio` $= r/\sigma$) on `ys - mu`, and, if `mu` is `None`, also on a
    column of ones, so that the innovations for any level $\mu$ are
    $v(\mu) = v_y - \mu v_1$ (the filter is linear in the data).

    Concrete (NumPy) `times` are best: one transition is computed per distinct step.
    With `theta` a Python `0` the transitions are in closed form
    ([`sdekit.fractional.fbm_transition`][]); otherwise matrix exponentials.

    **Returns:** `(variances, innovations, counted)` of shapes `(n,)`, `(n, 1 or 2)`,
    `(n,)`: innovation variances in units of $\sigma^2$, innovations, and which
    observations count in the likelihood (observed, and not the first observed).
    """
    steps, index = _steps_of(times)
    return _innovations(
        noise, theta, jnp.square(noise_ratio), ys, mu, steps, index, tail_noise
    )


def _gaussian_log_likelihood(variances, residuals, counted, sigma2):
    terms = jnp.log(2 * jnp.pi * sigma2 * variances) + residuals**2 / (
        sigma2 * variances
    )
    return -0.5 * jnp.sum(jnp.where(counted, terms, 0.0))


def fou_log_likelihood(
    times: Float[ArrayLike, " n"],
    ys: Float[ArrayLike, " n"],
    *,
    noise: FractionalNoise,
    theta: Float[ArrayLike, ""] = 0.0,
    mu: Float[ArrayLike, ""] = 0.0,
    sigma: Float[ArrayLike, ""] = 1.0,
    obs_std: Float[ArrayLike, ""] = 0.0,
    tail_noise: bool = False,
) -> Float[Array, ""]:
    r"""The exact log-likelihood of observations $y_i = X(t_i) + \varepsilon_i$,
    $\varepsilon_i \sim \mathcal{N}(0, r^2)$, of the fractional OU process

    $$\mathrm{d}X = -\theta (X - \mu)\,\mathrm{d}t + \sigma\,\mathrm{d}\hat B$$

    driven by the MA-fBM `noise` ($\theta = 0$: scaled fBM), at arbitrary increasing
    times. The augmented state $(X, Y_1, \dots, Y_K)$ is linear-Gaussian; each
    interval's transition is exact ([`sdekit.fractional.van_loan`][]), so the
    Kalman filter gives the exact marginal likelihood of the approximating model,
    differentiable in every parameter, in $O(n K^3)$ time.

    The level is not assumed known: $X(t_1)$ at the first observed time has a flat
    prior, so the first observation fixes it and the likelihood is that of the
    others given it, $p(y_2, \dots, y_n \mid y_1)$. The components start from their
    stationary law (type I) or at rest at `times[0]` (type II). NaN observations are
    missing: the filter predicts over them.

    **Arguments:**

    - `times`: strictly increasing observation times, `(n,)`.
    - `ys`: observations, `(n,)`, NaN where missing.
    - `noise`: the [`sdekit.noise.FractionalNoise`][] (carries $H$, $K$,
        $\gamma_{\max}$, the horizon and the type; use float64).
    - `theta`, `mu`, `sigma`: drift rate $\theta \ge 0$, level $\mu$, scale $\sigma > 0$.
    - `obs_std`: $r \ge 0$.
    - `tail_noise`: if `True`, add $\sigma^2 v$ to the observation variance, with
        $v$ the variance of the fine scales the approximation leaves out
        ([`sdekit.noise.tail_variance`][]): closer to the likelihood of true fBM
        noise (used, with spectral weights, by [`sdekit.fractional.estimate_hurst`][]).

    **Returns:** the log-likelihood, a scalar.
    """
    if not isinstance(times, jax.core.Tracer) and not isinstance(ys, jax.core.Tracer):
        times, ys = _check_series(times, ys)
    sigma = jnp.asarray(sigma)
    variances, innovations, counted = filter_innovations(
        times,
        ys,
        noise=noise,
        theta=theta,
        noise_ratio=obs_std / sigma,
        mu=mu,
        tail_noise=tail_noise,
    )
    return _gaussian_log_likelihood(variances, innovations[:, 0], counted, sigma**2)


def profile_log_likelihood(
    times: Float[ArrayLike, " n"],
    ys: Float[ArrayLike, " n"],
    *,
    noise: FractionalNoise,
    theta: Float[ArrayLike, ""] = 0.0,
    noise_ratio: Float[ArrayLike, ""] = 0.0,
    tail_noise: bool = False,
) -> tuple[Array, Array, Array]:
    r"""[`sdekit.fractional.fou_log_likelihood`][] maximised in closed form over the
    scale $\sigma$ and the level $\mu$, with the observation noise given relative to
    the scale ($r = \rho\sigma$, `noise_ratio` $= \rho$): every covariance is then
    proportional to $\sigma^2$ and the innovations are linear in $\mu$, so

    $\hat\mu = \sum_i v_{y,i} v_{1,i}/F_i \big/ \sum_i v_{1,i}^2/F_i$,
    $\hat\sigma^2 = \frac1N \sum_i (v_{y,i} - \hat\mu v_{1,i})^2 / F_i$.

    ($\mu$ is not identified when $\theta = 0$; it is then 0.)

    **Returns:** `(log_likelihood, sigma, mu)` at the maximising $\sigma$, $\mu$.
    """
    variances, innovations, counted = filter_innovations(
        times,
        ys,
        noise=noise,
        theta=theta,
        noise_ratio=noise_ratio,
        tail_noise=tail_noise,
    )
    return profile_from_innovations(variances, innovations, counted)


def profile_from_innovations(variances, innovations, counted):
    r"""The profile log-likelihood and maximising $(\sigma, \mu)$ from the output of
    [`sdekit.fractional.filter_innovations`][] with `mu=None`."""
    vy, v1 = innovations[:, 0], innovations[:, 1]
    weight = jnp.where(counted, 1 / variances, 0.0)
    denom = jnp.sum(weight * v1**2)
    # mu enters through v1, of order theta dt per step: it is identified whenever
    # theta > 0 (the fitted mu v1 does not depend on v1's scale, and v1 is accurate
    # to its own size down to theta dt ~ 1e-10), and not at all for fBM's static
    # theta = 0, where v1 is exactly 0. A threshold inside the searched range of
    # theta would make the profile jump there (by about a nat), and the search and
    # the curvature for standard errors would find the jump.
    identified = denom > 1e-30 * jnp.maximum(jnp.sum(weight), 1.0)
    mu = jnp.where(
        identified, jnp.sum(weight * vy * v1) / jnp.where(identified, denom, 1.0), 0.0
    )
    residuals = vy - mu * v1
    count = jnp.sum(counted)
    sigma2 = jnp.sum(weight * residuals**2) / count
    loglik = _gaussian_log_likelihood(variances, residuals, counted, sigma2)
    return loglik, jnp.sqrt(sigma2), mu
