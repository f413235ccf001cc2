"""The exact Kalman likelihood of fractional OU models (sdekit.fractional._kalman)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg as sl
from scipy.stats import multivariate_normal

from sdekit.fractional import (
    fbm_transition,
    fou_log_likelihood,
    fou_system,
    profile_log_likelihood,
    van_loan,
)
from sdekit.noise import FractionalNoise


def _series(seed, n, span=2.0):
    rng = np.random.default_rng(seed)
    times = np.sort(rng.uniform(0.0, span, n))
    times[0] = 0.0
    ys = np.cumsum(rng.normal(size=n)) * 0.5
    return times, ys


def _dense_fbm(noise, times, ys, sigma, obs_std):
    """log p(y_2.. | y_1) for y = X(t_1) + sigma (B(t) - B(t_1)) + noise, with the
    MA-fBM covariance in closed form: the increments y_i - y_1 are Gaussian with
    covariance sigma^2 C + r^2 (I + 1 1')."""
    n = times.shape[0]
    full = np.asarray(
        noise.covariance(times - times[0] if noise.kind == "I" else times)
    )
    D = np.eye(n)[1:] - np.eye(n)[[0] * (n - 1)]
    C = D @ full @ D.T
    cov = sigma**2 * C + obs_std**2 * (np.eye(n - 1) + np.ones((n - 1, n - 1)))
    return cov, ys[1:] - ys[0]


def _dense_logpdf(cov, resid, keep):
    idx = np.flatnonzero(keep)
    return multivariate_normal(np.zeros(idx.size), cov[np.ix_(idx, idx)]).logpdf(
        resid[idx]
    )


@pytest.mark.parametrize("kind", ["I", "II"])
@pytest.mark.parametrize("missing", [False, True])
def test_fbm_likelihood_equals_dense(x64, kind, missing):
    noise = FractionalNoise(0.35, 5, 20.0, 2.0, kind)
    times, ys = _series(1, 14)
    sigma, obs_std = 1.3, 0.2
    cov, resid = _dense_fbm(noise, times, ys, sigma, obs_std)
    keep = np.ones(13, bool)
    if missing:
        ys = ys.copy()
        ys[[3, 8, 13]] = np.nan
        keep[[2, 7, 12]] = False
    got = fou_log_likelihood(times, ys, noise=noise, sigma=sigma, obs_std=obs_std)
    np.testing.assert_allclose(got, _dense_logpdf(cov, resid, keep), rtol=1e-10)
    # Under jit and vmap (over the scale).
    batched = jax.jit(
        jax.vmap(
            lambda s: fou_log_likelihood(
                times, ys, noise=noise, sigma=s, obs_std=obs_std
            )
        )
    )(jnp.array([sigma, 2 * sigma]))
    np.testing.assert_allclose(batched[0], got, rtol=1e-10)


def _dense_fou(noise, times, ys, theta, mu, sigma, obs_std):
    # The covariance of X assembled from the continuous-time solution, with SciPy's
    # expm and adaptive quadrature for the noise integral (independent of the
    # filter's Van Loan transitions).
    F, G = map(np.asarray, fou_system(theta, noise))
    F = F.copy()
    F[0, 1:] *= sigma
    G = G.copy()
    G[0] *= sigma
    G = G[:, None]
    m = F.shape[0]
    P0 = np.zeros((m, m))
    if noise.kind == "I":
        P0[1:, 1:] = 1 / (noise.speeds[:, None] + noise.speeds[None, :])
    tau = times - times[0]

    nodes, weights = np.polynomial.legendre.leggauss(20)

    def Q(t):
        # Composite Gauss-Legendre, 40 panels of 20 nodes: exact to roundoff for
        # these exponentials (rates up to 2 gamma_max = 20, panels of width <= 0.05).
        total = np.zeros((m, m))
        edges = np.linspace(0.0, t, 41)
        for a, b in zip(edges[:-1], edges[1:]):
            for x, w in zip(nodes, weights):
                E = sl.expm(F * (0.5 * (b - a) * x + 0.5 * (a + b))) @ G
                total += 0.5 * (b - a) * w * (E @ E.T)
        return total

    P = [sl.expm(F * t) @ P0 @ sl.expm(F * t).T + Q(t) for t in tau]
    n = times.shape[0]
    C = np.zeros((n, n))
    for i in range(n):
        for j in range(i + 1):
            C[i, j] = C[j, i] = (sl.expm(F * (tau[i] - tau[j])) @ P[j])[0, 0]
    decay = np.exp(-theta * tau)
    resid = ys - mu - decay * (ys[0] - mu)
    cov = C + obs_std**2 * (np.eye(n) + np.outer(decay, decay))
    return cov[1:, 1:], resid[1:]


@pytest.mark.parametrize("kind", ["I", "II"])
def test_fou_likelihood_equals_dense(x64, kind):
    noise = FractionalNoise(0.7, 4, 10.0, 2.0, kind)
    times, ys = _series(2, 9)
    theta, mu, sigma, obs_std = 0.8, 0.3, 1.1, 0.25
    cov, resid = _dense_fou(noise, times, ys, theta, mu, sigma, obs_std)
    got = fou_log_likelihood(
        times, ys, noise=noise, theta=theta, mu=mu, sigma=sigma, obs_std=obs_std
    )
    keep = np.ones(8, bool)
    np.testing.assert_allclose(got, _dense_logpdf(cov, resid, keep), rtol=1e-9)
    ys = ys.copy()
    ys[[2, 5]] = np.nan
    keep[[1, 4]] = False
    got = fou_log_likelihood(
        times, ys, noise=noise, theta=theta, mu=mu, sigma=sigma, obs_std=obs_std
    )
    np.testing.assert_allclose(got, _dense_logpdf(cov, resid, keep), rtol=1e-9)


def test_van_loan_matches_closed_form_at_theta_zero(x64):
    noise = FractionalNoise(0.3, 6, 50.0, 1.0, "I")
    omega = noise.omega()
    F, G = fou_system(0.0, noise)
    for dt in (1e-4, 0.03, 2.0):
        Phi, Q = van_loan(F, G, dt)
        Phi0, Q0 = fbm_transition(omega, jnp.asarray(noise.speeds), dt)
        np.testing.assert_allclose(Phi, Phi0, rtol=1e-10, atol=1e-13)
        np.testing.assert_allclose(Q, Q0, rtol=1e-8, atol=1e-13 * float(jnp.max(Q0)))


def test_profile_likelihood_is_the_maximum(x64):
    noise = FractionalNoise(0.6, 5, 20.0, 2.0, "I")
    times, ys = _series(3, 40)
    theta, ratio = 0.7, 0.2
    loglik, sigma, mu = profile_log_likelihood(
        times, ys, noise=noise, theta=theta, noise_ratio=ratio
    )

    @jax.jit
    def full(sigma_, mu_):
        return fou_log_likelihood(
            times,
            ys,
            noise=noise,
            theta=theta,
            mu=mu_,
            sigma=sigma_,
            obs_std=ratio * sigma_,
        )

    np.testing.assert_allclose(full(sigma, mu), loglik, rtol=1e-12)
    for ds, dm in ((0.01, 0), (-0.01, 0), (0, 0.05), (0, -0.05)):
        assert full(sigma + ds, mu + dm) < loglik
    # theta = 0: the level is not identified and is reported as 0.
    _, _, mu0 = profile_log_likelihood(times, ys, noise=noise)
    assert float(mu0) == 0.0


def test_likelihood_gradients_against_finite_differences(x64):
    times, ys = _series(4, 30)
    times = jnp.asarray(times)

    @jax.jit
    def loglik(params):
        h, theta, sigma, r = params
        return fou_log_likelihood(
            times,
            ys,
            noise=FractionalNoise(h, 5, 20.0, 2.0, "I", "spectral"),
            theta=theta,
            mu=0.1,
            sigma=sigma,
            obs_std=r,
            tail_noise=True,
        )

    x = jnp.array([0.4, 0.9, 1.2, 0.3])
    grad = jax.jit(jax.grad(loglik))(x)
    eps = 1e-6
    fd = [
        (loglik(x.at[i].add(eps)) - loglik(x.at[i].add(-eps))) / (2 * eps)
        for i in range(4)
    ]
    np.testing.assert_allclose(grad, fd, rtol=1e-5)


def test_tail_noise_is_extra_observation_variance(x64):
    noise = FractionalNoise(0.2, 6, 50.0, 2.0, "I", "spectral")
    times, ys = _series(5, 20)
    v = float(noise.tail_variance())
    assert v > 0
    a = fou_log_likelihood(
        times, ys, noise=noise, sigma=0.7, obs_std=0.1, tail_noise=True
    )
    b = fou_log_likelihood(
        times, ys, noise=noise, sigma=0.7, obs_std=np.sqrt(0.01 + 0.49 * v)
    )
    np.testing.assert_allclose(a, b, rtol=1e-12)


def test_bad_series_errors(x64):
    noise = FractionalNoise(0.4)
    with pytest.raises(ValueError, match="strictly increasing"):
        fou_log_likelihood(np.array([0.0, 1.0, 1.0]), np.zeros(3), noise=noise)
    with pytest.raises(ValueError, match="infinite"):
        fou_log_likelihood(np.arange(3.0), np.array([0.0, np.inf, 1.0]), noise=noise)
    with pytest.raises(ValueError, match="at least two observed"):
        fou_log_likelihood(np.arange(3.0), np.array([np.nan, 1.0, np.nan]), noise=noise)
