"""Fractional SDEs (sdekit.fractional): the fractional OU process, Hurst estimation,
maximum likelihood, the NUTS posterior and the latent fractional SDE."""

import functools as ft
import math

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax
import pytest
import scipy.linalg as sl
import scipy.stats
from helpers import mean_tolerance, variance_tolerance
from scipy.optimize import minimize_scalar

import sdekit
import sdekit.train
from sdekit.fractional import (
    _hurst,
    DENSE_MAX_POINTS,
    estimate_hurst,
    estimation_setup,
    fbm_log_likelihood,
    fit_fou_mle,
    fou_system,
    FractionalOU,
    hurst_posterior,
    latent_fractional_loss,
    LatentFractionalSDE,
    profile_log_likelihood,
    van_loan,
)
from sdekit.fractional._search import _result_at
from sdekit.noise import FractionalNoise


def fbm_path(seed, hurst, n, length=1.0):
    fbm = pytest.importorskip("fbm")
    np.random.seed(seed)  # the fbm package samples from NumPy's global generator
    return fbm.FBM(n=n - 1, hurst=hurst, length=length).fbm()


def exact_mle(path):
    """The exact Gaussian MLE of H from the fGn Toeplitz covariance (sigma profiled)."""
    x = np.diff(path)
    n = x.shape[0]
    k = np.arange(n, dtype=float)

    def nll(h):
        acov = 0.5 * (
            np.abs(k + 1) ** (2 * h) - 2 * k ** (2 * h) + np.abs(k - 1) ** (2 * h)
        )
        chol = sl.cholesky(sl.toeplitz(acov), lower=True)
        z = sl.solve_triangular(chol, x, lower=True)
        return 0.5 * (n * np.log(z @ z / n) + 2 * np.sum(np.log(np.diag(chol))))

    return minimize_scalar(
        nll, bounds=(0.01, 0.99), method="bounded", options=dict(xatol=1e-5)
    ).x


def test_fou_moments_against_exact_transition(x64, getkey):
    # The solver's mean and variance at t = 1 against the exact linear-Gaussian
    # transition of the augmented system (Van Loan), which the likelihood uses.
    noise = FractionalNoise(0.7, 5, 20.0, 1.0, "I")
    fou = FractionalOU(theta=1.5, mu=0.4, sigma=0.8, noise=noise)
    n = 10_000
    xs = np.asarray(fou.sample(getkey(), np.array([1.0]), 2.0, num_paths=n, dt0=0.005))
    mean = 0.4 + (2.0 - 0.4) * math.exp(-1.5)
    F, G = fou_system(1.5, noise)
    F = F.at[0, 1:].multiply(0.8)
    G = G.at[0].multiply(0.8)
    _, Q = van_loan(F, G, 1.0)
    # X(1) - its mean = (X part of the noise over [0, 1]) + (effect of Y(0) ~ S).
    S = 1 / (noise.speeds[:, None] + noise.speeds[None, :])
    P0 = np.zeros((6, 6))
    P0[1:, 1:] = S
    Phi = sl.expm(np.asarray(F))
    var = float((Phi @ P0 @ Phi.T + np.asarray(Q))[0, 0])
    assert abs(xs.mean() - mean) < mean_tolerance(math.sqrt(var), n)
    # Euler's O(dt) bias on the fastest component (gamma_max dt = 0.1) adds ~2%.
    assert abs(xs.var() - var) < variance_tolerance(var, n) + 0.02 * var


@pytest.mark.parametrize(("hurst", "seed"), [(0.35, 1), (0.75, 2)])
def test_estimate_hurst_matches_exact_mle(hurst, seed):
    # On 1000-point fBM paths the exact MLE has RMSE ~0.023 (REFERENCES); sdekit's
    # estimate (the Kalman route at this length) must agree with it on the same path
    # far more closely than that.
    path = fbm_path(seed, hurst, 1000)
    est = estimate_hurst(path, dt=1 / 999)
    exact = exact_mle(path)
    assert est.details["method"] == "kalman"
    assert abs(est.hurst - exact) < 0.006, (est.hurst, exact)
    assert abs(est.hurst - hurst) < 4.5 * 0.023
    # The curvature's standard error is the right size (asymptotic sd ~0.02).
    assert 0.01 < est.hurst_std < 0.04
    # The usual normalisation: the paths have Var B(1) = 1.
    assert 0.6 < est.sigma < 1.6
    assert est.converged and est.obs_std == 0.0


@pytest.mark.parametrize(("hurst", "seed"), [(0.3, 9), (0.8, 10)])
def test_dense_and_kalman_routes_agree(hurst, seed):
    # At a length both routes serve: the dense route maximises the exact likelihood,
    # so it must find the exact MLE's maximum (to the optimiser's tolerance); the
    # Kalman route's MA-fBM likelihood must agree with it within the approximation,
    # far more closely than either agrees with the truth.
    path = fbm_path(seed, hurst, 400)
    exact = exact_mle(path)
    dense = estimate_hurst(path, dt=1 / 399, method="dense")
    kalman = estimate_hurst(path, dt=1 / 399, method="kalman")
    assert dense.details["method"] == "dense" and kalman.details["method"] == "kalman"
    assert abs(dense.hurst - exact) < 2e-4, (dense.hurst, exact)
    # Within a quarter of a standard error (0.03 here; the approximation is coarsest
    # at large H).
    assert abs(kalman.hurst - dense.hurst) < 0.25 * dense.hurst_std
    # Their curvatures agree too, and their scales up to what the difference in H
    # explains: sigma is in units of [0, 1], so sigma ~ 399^H at a fixed step size.
    np.testing.assert_allclose(kalman.hurst_std, dense.hurst_std, rtol=0.05)
    shift = math.log(399) * abs(kalman.hurst - dense.hurst)
    assert abs(math.log(kalman.sigma / dense.sigma)) < shift + 0.02
    assert dense.converged and kalman.converged


def _levels_log_likelihood(times, ys, hurst, sigma, obs_std):
    # log p(y_2..n | y_1) with a flat prior on the level: the density of the
    # differences y_i - y_1, whose covariance is that of fBM started at t_1 plus the
    # noise of y_i and of y_1 (levels, not increments: an independent formula).
    keep = ~np.isnan(ys)
    t, y = times[keep], ys[keep]
    u = t[1:] - t[0]
    cov = 0.5 * (
        u[:, None] ** (2 * hurst)
        + u[None, :] ** (2 * hurst)
        - np.abs(u[:, None] - u[None, :]) ** (2 * hurst)
    )
    cov = sigma**2 * cov + obs_std**2 * (np.eye(len(u)) + 1.0)
    return scipy.stats.multivariate_normal(np.zeros(len(u)), cov).logpdf(y[1:] - y[0])


@pytest.mark.parametrize(("hurst", "obs_std"), [(0.3, 0.0), (0.8, 0.2)])
def test_fbm_log_likelihood_against_the_covariance_of_levels(x64, hurst, obs_std):
    rng = np.random.default_rng(0)
    times = np.sort(rng.uniform(0.0, 3.0, 40))
    ys = np.cumsum(rng.normal(size=40)) * 0.3
    ys[[5, 17]] = np.nan
    got = fbm_log_likelihood(times, ys, hurst=hurst, sigma=0.7, obs_std=obs_std)
    want = _levels_log_likelihood(times, ys, hurst, 0.7, obs_std)
    np.testing.assert_allclose(float(got), want, rtol=1e-10)
    # Differentiable in H, against central differences.
    grad = jax.grad(
        lambda h: fbm_log_likelihood(times, ys, hurst=h, sigma=0.7, obs_std=obs_std)
    )(hurst)
    step = 1e-5
    fd = (
        _levels_log_likelihood(times, ys, hurst + step, 0.7, obs_std)
        - _levels_log_likelihood(times, ys, hurst - step, 0.7, obs_std)
    ) / (2 * step)
    np.testing.assert_allclose(float(grad), fd, rtol=1e-6)


def test_padding_to_a_shared_length_changes_no_likelihood(x64):
    # Both routes pad a series to a bucketed length (so that similar lengths share one
    # compiled search); the padded likelihoods must equal the unpadded ones.
    rng = np.random.default_rng(1)
    times = np.cumsum(rng.uniform(0.5, 1.5, 200))
    ys = np.cumsum(rng.normal(size=200))
    ys[[3, 50, 51]] = np.nan
    h, eta = 0.6, 0.3
    data, unit = _hurst._dense_data(times, ys)
    assert data["increments"].shape[0] > 200 - 3 - 1  # padded
    x = jnp.array([math.log(h / (1 - h)), eta])
    nll, (sigma, _) = jax.jit(_hurst._DenseNLL())(x, data)
    direct = fbm_log_likelihood(
        (times - times[0]) / unit, ys, hurst=h, sigma=sigma, obs_std=eta * sigma
    )
    np.testing.assert_allclose(-float(nll), float(direct), rtol=1e-10)
    # sigma is the profile maximiser (the noise relative to it held at eta).
    for factor in (0.99, 1.01):
        other = fbm_log_likelihood(
            (times - times[0]) / unit,
            ys,
            hurst=h,
            sigma=sigma * factor,
            obs_std=eta * sigma * factor,
        )
        assert float(other) < float(direct)
    setup = estimation_setup(times, 6)
    data = _hurst._kalman_data(setup, ys)
    assert data["ys"].shape[0] > 200 and data["steps"].shape[0] > len(setup.steps)
    x = jnp.array([math.log(h / (1 - h)), eta])
    nll, (sigma, _) = jax.jit(_hurst._KalmanNLL(6, setup.gamma_max, "fbm"))(x, data)
    noise = FractionalNoise(h, 6, setup.gamma_max, 1.0, "I", "spectral")
    ratio = eta * math.exp(0.5 * float(_hurst._log_vh(h)) + h * math.log(setup.spacing))
    loglik, sigma_ref, _ = profile_log_likelihood(
        setup.times, ys, noise=noise, noise_ratio=ratio, tail_noise=True
    )
    np.testing.assert_allclose(-float(nll), float(loglik), rtol=1e-10)
    np.testing.assert_allclose(sigma, sigma_ref, rtol=1e-9)


def test_curvature_by_differences_matches_the_exact_hessian(x64):
    # The search takes the curvature for standard errors from central differences of
    # the likelihood through the grid's compiled function (no third compiled
    # function); against jax.hessian, near an optimum and away from it.
    path = fbm_path(8, 0.6, 100)
    ys = (path - path[0]) / np.std(np.diff(path))
    data, _ = _hurst._dense_data(np.arange(100.0), ys)
    objective = _hurst._DenseNLL()
    active = np.array([True, True])
    hessian = jax.jit(jax.hessian(lambda x: objective(x, data)[0]))
    for x in ([0.4, 0.3], [-1.0, 0.05]):
        x = np.array(x)
        found = _result_at(objective, x, active, data, 12)
        np.testing.assert_allclose(
            found.hessian, np.asarray(hessian(jnp.asarray(x))), rtol=1e-4, atol=1e-3
        )


def test_fou_profile_likelihood_is_continuous_in_theta(x64):
    # fBM with a drift: fOU with a small theta and a far mu is the drift, so the
    # profile over mu must stay smooth as theta shrinks across the searched box. A
    # threshold on mu's identification once made it jump by about a nat inside the
    # box: the search settled on the jump and the standard error of H came out 100x
    # too small.
    n = 1000
    ys = fbm_path(0, 0.7, n) + 3.0 * np.linspace(0.0, 1.0, n)
    ys = (ys - ys[0]) / np.std(np.diff(ys))
    setup = estimation_setup(np.linspace(0.0, 1.0, n), 12)
    data = _hurst._kalman_data(setup, ys)
    objective = _hurst._KalmanNLL(12, setup.gamma_max, "fou")
    low, high = _hurst._LOG_KAPPA
    log_kappa = np.linspace(low, low + 6.0, 300)
    points = np.stack([np.full(300, 0.8), np.zeros(300), log_kappa], axis=-1)
    values = np.asarray(jax.jit(jax.vmap(lambda x: objective(x, data)[0]))(points))
    assert np.all(np.isfinite(values))
    # Neighbours 0.02 apart in log kappa: a smooth profile moves by far less.
    assert np.max(np.abs(np.diff(values))) < 0.05
    estimate = estimate_hurst(ys, dt=1.0 / (n - 1), model="fou", obs_noise=False)
    reference = estimate_hurst(ys, dt=1.0 / (n - 1), model="fbm", obs_noise=False)
    assert 0.5 < estimate.hurst_std / reference.hurst_std < 2.0


def test_estimate_hurst_chooses_its_likelihood():
    limit = DENSE_MAX_POINTS
    assert _hurst._method("auto", "fbm", limit) == "dense"
    assert _hurst._method("auto", "fbm", limit + 1) == "kalman"
    assert _hurst._method("auto", "fou", 50) == "kalman"
    assert _hurst._method("kalman", "fbm", 50) == "kalman"
    with pytest.raises(ValueError, match="fBM only"):
        estimate_hurst(np.cumsum(np.ones(50)) ** 0.5, model="fou", method="dense")
    with pytest.raises(ValueError, match="'auto', 'dense' or 'kalman'"):
        estimate_hurst(np.cumsum(np.ones(50)) ** 0.5, method="exact")


def test_estimate_hurst_irregular_times_and_missing_values():
    path = fbm_path(3, 0.3, 1500)
    times = np.arange(1500) / 1499
    keep = np.sort(np.random.default_rng(0).choice(1500, 900, replace=False))
    ys = path[keep].copy()
    ys[::17] = np.nan
    est = estimate_hurst(ys, times=times[keep])
    assert abs(est.hurst - 0.3) < 0.07
    assert est.num_observed == int(np.sum(~np.isnan(ys)))
    # The JSON-ready view.
    out = est.as_dict()
    assert {"hurst", "hurst_std", "log_likelihood", "seconds"} <= set(out)


def test_estimate_hurst_finds_observation_noise():
    path = fbm_path(4, 0.7, 1000)
    step = np.std(np.diff(path))
    noisy = path + 2 * step * np.random.default_rng(1).normal(size=path.shape)
    est = estimate_hurst(noisy, dt=1 / 999)
    assert est.obs_std > 0
    np.testing.assert_allclose(est.obs_std, 2 * step, rtol=0.25)
    assert abs(est.hurst - 0.7) < 0.1


def test_estimate_hurst_is_equivariant_to_the_scale_of_the_data():
    path = fbm_path(5, 0.5, 300)
    est = estimate_hurst(path * 3.0 + 1.0, dt=0.1, obs_noise=False)
    # Rescaling the data by 3 changes the log-likelihood by -(n - 1) log 3 only.
    ref = estimate_hurst(path, dt=0.1, obs_noise=False)
    np.testing.assert_allclose(est.hurst, ref.hurst, atol=1e-6)
    np.testing.assert_allclose(
        est.log_likelihood, ref.log_likelihood - 299 * math.log(3), rtol=1e-7
    )
    np.testing.assert_allclose(est.sigma, 3 * ref.sigma, rtol=1e-5)


def test_estimate_hurst_errors():
    with pytest.raises(ValueError, match="infinite"):
        estimate_hurst(np.array([0.0, np.inf] + [1.0] * 20))
    with pytest.raises(ValueError, match="at least 8"):
        estimate_hurst(np.array([0.0, 1.0, np.nan, 2.0, 3.0]))
    with pytest.raises(ValueError, match="dt"):
        estimate_hurst(np.zeros(50), dt=0.0)
    with pytest.raises(ValueError, match="dt"):
        estimate_hurst(np.zeros(50), dt=-1.0)
    with pytest.raises(ValueError, match="strictly increasing"):
        estimate_hurst(np.zeros(50), times=np.r_[np.arange(49.0), 10.0])
    with pytest.raises(ValueError, match="model"):
        estimate_hurst(np.zeros(50), model="arima")
    with pytest.raises(ValueError, match="one-dimensional"):
        estimate_hurst(np.zeros((50, 2)))
    with pytest.raises(ValueError, match="constant"):
        estimate_hurst(np.full(50, 3.0))


def test_fit_mle_matches_closed_form_profile(x64):
    # With H fixed and no observation noise, the optax fit of sigma must land on the
    # closed-form profile maximum (theta = 0: scaled fBM, transitions in closed form).
    noise = FractionalNoise(0.6, 5, 20.0, 4.0, "I")
    true = FractionalOU(theta=0.0, mu=0.0, sigma=0.7, noise=noise)
    ts = np.linspace(0.0, 4.0, 81)
    ys = np.asarray(true.sample(jr.key(0), ts, 0.5, dt0=0.01))[0]
    init = FractionalOU(theta=0.0, mu=0.0, sigma=1.0, noise=noise)
    # H and sigma by the default BFGS (optimistix, exact gradients): at the optimum,
    # sigma is the closed-form profile maximiser at the fitted H.
    result = fit_fou_mle(ts, ys, init, obs_std=0.0, fit=("hurst", "sigma"))
    assert result.converged and 0 < result.num_steps < 100
    assert result.history[-1] < result.history[0]
    fitted = result.process.noise
    loglik, sigma, _ = profile_log_likelihood(ts, ys, noise=fitted)
    np.testing.assert_allclose(result.process.sigma, sigma, rtol=1e-4)
    np.testing.assert_allclose(result.log_likelihood, loglik, rtol=1e-8)
    # And H maximises the profile likelihood.
    for dh in (-0.01, 0.01):
        other = eqx.tree_at(lambda n: n.hurst, fitted, fitted.hurst + dh)
        assert profile_log_likelihood(ts, ys, noise=other)[0] < loglik
    assert abs(float(fitted.hurst) - 0.6) < 0.25


@pytest.mark.slow
def test_fit_mle_recovers_parameters(x64):
    noise = FractionalNoise(0.3, 6, 50.0, 10.0, "I", "spectral")
    true = FractionalOU(theta=1.0, mu=0.0, sigma=1.0, noise=noise)
    ts = np.linspace(0.0, 10.0, 801)
    ys = np.asarray(true.sample(jr.key(1), ts, 0.0, dt0=0.005))[0]
    ys = ys + 0.05 * np.random.default_rng(0).normal(size=ys.shape)
    ys[::9] = np.nan
    init = FractionalOU(
        theta=0.3,
        mu=0.2,
        sigma=0.5,
        noise=FractionalNoise(0.5, 6, 50.0, 10.0, "I", "spectral"),
    )
    result = fit_fou_mle(ts, ys, init, obs_std=0.2)
    assert abs(float(result.process.noise.hurst) - 0.3) < 0.1
    assert 0.3 < result.process.theta < 3.0
    assert np.isfinite(result.log_likelihood)
    assert result.history[-1] < result.history[0]
    with pytest.raises(ValueError, match="Unknown parameters"):
        fit_fou_mle(ts, ys, init, fit=("hurst", "drift"))


def test_fou_rejects_negative_rates():
    with pytest.raises(ValueError, match="theta"):
        FractionalOU(theta=-1.0, mu=0.0, sigma=1.0, noise=FractionalNoise(0.3))
    with pytest.raises(ValueError, match="sigma"):
        FractionalOU(theta=1.0, mu=0.0, sigma=-1.0, noise=FractionalNoise(0.3))


def _latent_data(n_series=8, n=16):
    noise = FractionalNoise(0.7, 5, 20.0, 1.0)
    fou = FractionalOU(theta=2.0, mu=0.0, sigma=0.5, noise=noise)
    ts = np.linspace(0.0, 1.0, n)
    xs = np.asarray(fou.sample(jr.key(0), ts, 1.0, num_paths=n_series, dt0=0.02))
    ys = xs[..., None] + 0.05 * np.random.default_rng(0).normal(size=(n_series, n, 1))
    ys[:, 3::5] = np.nan
    return np.broadcast_to(ts, (n_series, n)).astype(np.float32), ys.astype(np.float32)


def test_latent_fractional_sde_kl():
    ts, ys = _latent_data()
    model = LatentFractionalSDE(1, 2, key=jr.key(1), context_dim=4, hidden=8)

    @eqx.filter_jit
    def paths(model):
        return model.posterior_paths(
            jnp.asarray(ts[0]),
            jnp.asarray(ys[0]),
            jr.key(2),
            dt0=0.02,
            t0=0.0,
            t1=1.0,
            num_samples=3,
        )

    # The control starts at zero: the posterior is the prior, the path KL is 0.
    latents, kl, kl_init = paths(model)
    assert latents.shape == (3, 16, 2)
    np.testing.assert_allclose(kl, 0.0, atol=1e-7)
    assert float(kl_init) >= 0
    # A constant control u = c: the KL is (1/2) |c|^2 per unit time, exactly.
    steered = eqx.tree_at(
        lambda m: m.control.layers[-1].bias, model, jnp.array([0.3, -0.4])
    )
    _, kl, _ = paths(steered)
    np.testing.assert_allclose(kl, 0.5 * (0.3**2 + 0.4**2) * 1.0, rtol=1e-4)
    with pytest.raises(ValueError, match="gamma_max"):
        latent_fractional_loss(model, (ts, ys), jr.key(3), dt0=0.05, t0=0.0, t1=1.0)


@pytest.mark.slow
def test_latent_fractional_sde_trains_with_the_shared_trainer():
    ts, ys = _latent_data()
    model = LatentFractionalSDE(1, 2, key=jr.key(1), context_dim=4, hidden=8)
    loss_fn = ft.partial(latent_fractional_loss, dt0=0.02, t0=0.0, t1=1.0)
    (loss, metrics), grads = eqx.filter_jit(
        eqx.filter_value_and_grad(
            lambda m: loss_fn(m, (ts, ys), jr.key(3)), has_aux=True
        )
    )(model)
    assert np.isfinite(float(loss)) and set(metrics) == {"nll", "kl", "hurst"}
    # H is learnable: the gradient reaches it through omega(H).
    assert np.isfinite(float(grads.raw_hurst)) and float(grads.raw_hurst) != 0.0
    result = sdekit.train.fit(
        model,
        loss_fn,
        (ts, ys),
        key=jr.key(4),
        optimizer=optax.adam(2e-2),
        epochs=6,
        batch_size=8,
        progress=False,
    )
    losses = [h["train"]["loss"] for h in result.history]
    assert losses[-1] < losses[0]
    assert result.model.raw_hurst != model.raw_hurst


@pytest.mark.slow
def test_hurst_posterior():
    path = fbm_path(6, 0.4, 400)
    est, samples = hurst_posterior(path, dt=1 / 399, num_warmup=150, num_samples=150)
    lo, hi = est.hurst_interval
    assert lo < est.hurst < hi
    assert lo - 0.02 < 0.4 < hi + 0.02
    # The posterior's spread matches the curvature's standard error.
    np.testing.assert_allclose(est.hurst_std, est.details["mle_hurst_std"], rtol=0.5)
    assert samples["hurst"].shape == (150,)


@pytest.mark.slow
def test_estimate_hurst_fou_recovers_theta():
    fbm = pytest.importorskip("fbm")
    np.random.seed(7)
    n, span, theta = 1500, 10.0, 1.0
    dt = span / (n - 1)
    noise = fbm.FBM(n=n - 1, hurst=0.6, length=span).fgn()
    x = np.zeros(n)
    for i in range(n - 1):
        x[i + 1] = math.exp(-theta * dt) * x[i] + noise[i]
    est = estimate_hurst(x + 3.0, dt=dt, model="fou")
    assert abs(est.hurst - 0.6) < 0.06
    assert 0.3 < est.theta < 3.0
    assert abs(est.mu - 3.0) < 1.5
