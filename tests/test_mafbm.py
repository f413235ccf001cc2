"""MA-fBM (sdekit.noise): speeds, weights, covariances, sampling, augmentation."""

import math

import diffrax as dfx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
import scipy.special as sc
from helpers import variance_tolerance
from scipy import stats
from scipy.integrate import quad

import sdekit
from sdekit.noise import (
    augment,
    augmented_initial_state,
    check_step_size,
    exact_covariance,
    exp_gammaincc,
    FractionalNoise,
    mafbm_covariance,
    mafbm_omega,
    mafbm_speeds,
    omega_system,
    regularized_gammainc,
    solve_fractional,
    split_components,
    tail_variance,
)


# Relative Frobenius error of the covariance on a 20 x 20 grid on [0.05, 1], T = 1,
# for H = 0.1, 0.3, 0.5, 0.7, 0.9 (Daems et al.'s code, ../shared/REFERENCES.md).
REFERENCE_ERRORS = {
    ("I", 5, 20.0): [0.277, 0.0145, 0.012, 0.103, 0.523],
    ("I", 20, 1000.0): [0.118, 9.6e-4, 1.7e-4, 7.9e-3, 0.22],
    ("II", 5, 20.0): [0.135, 0.0098, 2e-6, 1.3e-3, 9.4e-4],
    ("II", 20, 1000.0): [0.058, 4.4e-4, 1e-9, 1.2e-5, 4e-6],
}
HURSTS = [0.1, 0.3, 0.5, 0.7, 0.9]


def relative_covariance_error(noise, ts):
    exact = noise.exact_covariance(ts)
    return float(jnp.linalg.norm(noise.covariance(ts) - exact) / jnp.linalg.norm(exact))


def test_speeds():
    np.testing.assert_allclose(
        mafbm_speeds(5, 20.0), [0.05, 0.2236068, 1.0, 4.472136, 20.0], rtol=1e-6
    )
    g = mafbm_speeds(12, 300.0)
    assert g[0] == pytest.approx(1 / 300) and g[-1] == pytest.approx(300)
    np.testing.assert_allclose(np.diff(np.log(g)), np.log(g[1] / g[0]))


@pytest.mark.parametrize(("kind", "K", "gamma_max"), list(REFERENCE_ERRORS))
def test_covariance_error_within_reference_table(x64, kind, K, gamma_max):
    ts = jnp.linspace(0.05, 1.0, 20)
    for h, reference in zip(HURSTS, REFERENCE_ERRORS[(kind, K, gamma_max)]):
        noise = FractionalNoise(h, K, gamma_max, 1.0, kind)
        error = relative_covariance_error(noise, ts)
        # "Within the errors of the reference table or better", up to the table's
        # rounding (2-3 significant figures).
        assert error <= 1.05 * reference + 1e-8, (kind, K, h, error, reference)


def _transfer_error(noise):
    # RMS relative error of sum_k w_k / (g_k + i lam) against (i lam)^(-alpha) over the
    # band's inner four decades.
    g, w = noise.speeds, np.asarray(noise.omega())
    lam = np.geomspace(10 * g[0], g[-1] / 10, 400)
    transfer = (1j * lam) ** (noise.hurst + 0.5) * np.sum(
        w / (g[None, :] + 1j * lam[:, None]), axis=1
    )
    return float(np.sqrt(np.mean(np.abs(transfer - 1) ** 2)))


def test_spectral_weights_fit_the_transfer_function(x64):
    # The setup of Hurst estimation for 2000 points: 12 speeds from 1/447 to 447 and a
    # horizon of 45 (the data's span). The spectral weights fit fBM's transfer function
    # across the band at every H; the optimal ones lose it for H > 1/2 (and with it the
    # estimate of H: a bias of -0.09 at H = 0.8, see docs/fractional.md).
    for h, bound in ((0.1, 0.02), (0.3, 0.03), (0.5, 0.05), (0.7, 0.07), (0.9, 0.1)):
        spectral = FractionalNoise(h, 12, 447.0, 45.0, "I", weights="spectral")
        assert _transfer_error(spectral) < bound, (h, _transfer_error(spectral))
    for h in (0.7, 0.9):
        optimal = FractionalNoise(h, 12, 447.0, 45.0, "I")
        spectral = FractionalNoise(h, 12, 447.0, 45.0, "I", weights="spectral")
        assert _transfer_error(spectral) < _transfer_error(optimal)
    assert _transfer_error(FractionalNoise(0.9, 12, 447.0, 45.0, "I")) > 0.3


def test_exact_type_two_covariance_against_quadrature(x64):
    for h in (0.2, 0.5, 0.8):
        a = h + 0.5
        for t, s in ((1.0, 0.3), (0.7, 0.69), (0.5, 0.5), (2.0, 1.5)):
            integral = quad(lambda u: (t - u) ** (a - 1) * (s - u) ** (a - 1), 0, s)[0]
            expected = integral / sc.gamma(a) ** 2
            got = exact_covariance(h, jnp.array([t]), jnp.array([s]), kind="II")[0, 0]
            np.testing.assert_allclose(got, expected, rtol=1e-8)
        # Variance t^2H / (2H Gamma(alpha)^2), and type I's V_H t^2H.
        got = exact_covariance(h, jnp.array([1.5]), kind="II")[0, 0]
        np.testing.assert_allclose(got, 1.5 ** (2 * h) / (2 * h * sc.gamma(a) ** 2))
        vh = 1 / (sc.gamma(2 * h + 1) * math.sin(math.pi * h))
        got = exact_covariance(h, jnp.array([1.5]), kind="I")[0, 0]
        np.testing.assert_allclose(got, vh * 1.5 ** (2 * h))


def test_incomplete_gamma_against_scipy(x64):
    a = np.linspace(0.5, 2.5, 9)[:, None]
    z = np.geomspace(1e-6, 600.0, 80)[None, :]
    np.testing.assert_allclose(
        regularized_gammainc(a, z), sc.gammainc(a, z), rtol=1e-13
    )
    np.testing.assert_allclose(
        exp_gammaincc(a, z), np.exp(z) * sc.gammaincc(a, z), rtol=1e-12
    )
    # Far beyond float64's exp: the asymptotic series z^(a-1)/Gamma(a) (1 + (a-1)/z).
    big = 1e5
    got = np.asarray(exp_gammaincc(a[:, 0], big))
    expected = big ** (a[:, 0] - 1) / sc.gamma(a[:, 0]) * (1 + (a[:, 0] - 1) / big)
    np.testing.assert_allclose(got, expected, rtol=1e-8)
    # Differentiable in a, to second order.
    d2 = jax.grad(jax.grad(lambda a_: exp_gammaincc(a_, 50.0)))(1.3)
    eps = 1e-4
    fd = (
        exp_gammaincc(1.3 + eps, 50.0)
        - 2 * exp_gammaincc(1.3, 50.0)
        + exp_gammaincc(1.3 - eps, 50.0)
    ) / eps**2
    np.testing.assert_allclose(d2, fd, rtol=1e-5)


@pytest.mark.parametrize(
    ("kind", "weights"), [("I", "optimal"), ("II", "optimal"), ("I", "spectral")]
)
def test_omega_gradient_against_finite_differences(x64, kind, weights):
    g = mafbm_speeds(5, 20.0)

    @jax.jit
    def omega(h):
        return mafbm_omega(h, g, 1.0, kind, weights)

    jacfwd, jacrev = jax.jit(jax.jacfwd(omega)), jax.jit(jax.jacrev(omega))
    for h in (0.15, 0.45, 0.8):
        forward = jacfwd(h)
        reverse = jacrev(h)
        np.testing.assert_allclose(forward, reverse, rtol=1e-9, atol=1e-12)
        eps = 1e-5
        fd = (omega(h + eps) - omega(h - eps)) / (2 * eps)
        # Type II's A has condition number ~1e7: central differences lose ~1e-4.
        rtol = 1e-6 if (kind, weights) == ("I", "optimal") else 2e-3
        scale = jnp.max(jnp.abs(fd))
        np.testing.assert_allclose(forward / scale, fd / scale, atol=rtol)
    # Second derivatives exist in float64 (the Hessian used for standard errors).
    assert np.all(np.isfinite(jax.hessian(lambda h: jnp.sum(omega(h) ** 2))(0.3)))


def test_omega_is_the_minimiser(x64):
    g = mafbm_speeds(5, 20.0)
    for kind in ("I", "II"):
        A, b, c = omega_system(0.3, g, 1.0, kind)
        w = mafbm_omega(0.3, g, 1.0, kind)

        def error(v):
            return v @ A @ v - 2 * b @ v + c

        # The integrated squared error is non-negative and smallest at omega.
        assert float(error(w)) >= -1e-12 * float(c)
        for key in jr.split(jr.key(0), 5):
            direction = jr.normal(key, (5,))
            assert error(w + 1e-3 * direction) > error(w)


def test_omega_in_float32_mode_uses_float64():
    # Runs with x64 off: the weights come from the host in float64, cast to float32.
    assert not jax.config.jax_enable_x64
    g = mafbm_speeds(5, 20.0)
    w32 = mafbm_omega(jnp.float32(0.3), g, 1.0, "II")
    assert w32.dtype == jnp.float32
    with jax.enable_x64(True):
        w64 = np.asarray(mafbm_omega(0.3, g, 1.0, "II"))
        d64 = np.asarray(jax.jacfwd(lambda h: mafbm_omega(h, g, 1.0, "II"))(0.3))
    np.testing.assert_allclose(w32, w64, rtol=1e-6)

    def f(h):
        return mafbm_omega(h, g, 1.0, "II")

    np.testing.assert_allclose(jax.jit(jax.jacfwd(f))(jnp.float32(0.3)), d64, rtol=1e-5)
    np.testing.assert_allclose(jax.jacrev(f)(jnp.float32(0.3)), d64, rtol=1e-5)
    batched = jax.vmap(jax.grad(lambda h: jnp.sum(f(h))))(jnp.array([0.3, 0.6]))
    assert batched.shape == (2,) and np.all(np.isfinite(batched))


@pytest.mark.parametrize("hurst", [0.0, 1.0, -0.2, 1.5, float("nan")])
def test_hurst_outside_unit_interval_errors(hurst):
    with pytest.raises(ValueError, match="open interval"):
        FractionalNoise(hurst)
    with pytest.raises(ValueError, match="open interval"):
        mafbm_omega(hurst, mafbm_speeds(5, 20.0), 1.0)


def test_bad_configuration_errors():
    with pytest.raises(ValueError, match="at least K = 2"):
        FractionalNoise(0.3, num_components=1)
    with pytest.raises(ValueError, match="at least K = 2"):
        mafbm_speeds(0, 20.0)
    with pytest.raises(ValueError, match="gamma_max"):
        FractionalNoise(0.3, gamma_max=0.5)
    with pytest.raises(ValueError, match="horizon"):
        FractionalNoise(0.3, horizon=-1.0)
    with pytest.raises(ValueError, match="kind"):
        FractionalNoise(0.3, kind="III")
    with pytest.raises(ValueError, match="weights"):
        FractionalNoise(0.3, weights="best")


def test_tail_variance_against_quadrature(x64):
    g = mafbm_speeds(8, 50.0)
    for h in (0.1, 0.3):
        w = mafbm_omega(h, g, 1.0, weights="spectral")

        def difference(lam):
            transfer = np.sum(np.asarray(w) / (g + 1j * lam))
            return lam ** (-2 * h - 1) - abs(transfer) ** 2

        expected = quad(difference, g[-1], np.inf, limit=200)[0] / math.pi
        np.testing.assert_allclose(tail_variance(h, w, g), expected, rtol=1e-6)
    # Above H = 1/2 fBM has little power above gamma_max: a negligible tail.
    w = mafbm_omega(0.8, g, 1.0, weights="spectral")
    w1 = mafbm_omega(0.1, g, 1.0, weights="spectral")
    assert (
        0 <= float(tail_variance(0.8, w, g)) < 1e-3 * float(tail_variance(0.1, w1, g))
    )


def _brownian_sde():
    return sdekit.SDE(
        lambda t, y, a: jnp.zeros_like(y),
        lambda t, y, a: jnp.ones_like(y),
        noise_structure="scalar",
        additive=True,
    )


def _check_covariance(samples, expected):
    # Each entry of a sample covariance has variance (C_ii C_jj + C_ij^2) / n.
    n = samples.shape[0]
    got = np.cov(samples.T)
    diag = np.diag(expected)
    sd = np.sqrt((np.outer(diag, diag) + expected**2) / n)
    assert np.all(np.abs(got - expected) < 4.5 * sd + 0.01 * np.abs(expected)), (
        got,
        expected,
    )


@pytest.mark.parametrize("kind", ["I", "II"])
def test_monte_carlo_covariance_of_solver_paths(getkey, kind):
    noise = FractionalNoise(0.3, 5, 20.0, 1.0, kind)
    ts = np.array([0.25, 0.5, 1.0])
    n = 20_000
    # Heun is weak order 2 on this additive linear system: at gamma_max dt = 0.2 the
    # fastest component's variance is off by ~1%, within the allowance above.
    sol = solve_fractional(
        _brownian_sde(),
        jnp.zeros((n, 1)),
        ts,
        noise=noise,
        key=getkey(),
        dt0=0.01,
        t0=0.0,
        solver=dfx.Heun(),
    )
    _check_covariance(
        np.asarray(sol.ys[:, :, 0], np.float64), np.asarray(noise.covariance(ts))
    )


@pytest.mark.parametrize("kind", ["I", "II"])
def test_exact_sampler_covariance(getkey, kind):
    noise = FractionalNoise(0.7, 6, 30.0, 2.0, kind)
    ts = np.array([0.1, 0.4, 1.3, 2.0])
    samples = np.asarray(noise.sample(getkey(), ts, num_paths=20_000), np.float64)
    _check_covariance(samples, np.asarray(noise.covariance(ts)))


def test_solve_with_fractional_noise_is_solve_fractional(getkey):
    sde = sdekit.SDE(lambda t, y, a: -y, lambda t, y, a: 0.5 * (1 + y**2) ** 0.5)
    noise = FractionalNoise(0.7, 5, 20.0, 1.0, "I")
    y0, ts, key = jnp.ones((8, 1)), np.array([0.3, 1.0]), getkey()
    swapped = sdekit.solve(sde, y0, ts, key=key, dt0=0.01, t0=0.0, noise=noise)
    direct = solve_fractional(sde, y0, ts, noise=noise, key=key, dt0=0.01, t0=0.0)
    np.testing.assert_array_equal(swapped.ys, direct.ys)
    # Brownian and fractional noise drive different paths from the same key.
    brownian = sdekit.solve(sde, y0, ts, key=key, dt0=0.01, t0=0.0)
    assert not np.allclose(brownian.ys, swapped.ys)
    with pytest.raises(TypeError, match="FractionalNoise"):
        sdekit.solve(sde, y0, ts, key=key, dt0=0.01, noise="fbm")
    # The step-size check applies: gamma_max dt must stay below 1/2.
    with pytest.raises(ValueError, match="gamma_max"):
        sdekit.solve(sde, y0, ts, key=key, dt0=0.05, t0=0.0, noise=noise)


def test_solver_paths_against_exact_fbm_samples(getkey):
    fbm = pytest.importorskip("fbm")
    # Type I with an approximation error of 0.5% (K = 10, gamma_max = 100 at H = 0.3),
    # below what 4000 samples resolve; fBM from Davies-Harte, scaled to Daems et al.'s
    # normalisation Var B(1) = V_H.
    h, n = 0.3, 4000
    noise = FractionalNoise(h, 10, 100.0, 1.0, "I")
    assert relative_covariance_error_64(noise) < 0.006
    # Through the core solver, by swapping the noise object.
    sol = sdekit.solve(
        _brownian_sde(),
        jnp.zeros((n, 1)),
        np.array([0.5, 1.0]),
        noise=noise,
        key=getkey(),
        dt0=0.002,
        t0=0.0,
        solver=dfx.Heun(),
    )
    approx = np.asarray(sol.ys[:, :, 0], np.float64)
    vh = 1 / (sc.gamma(2 * h + 1) * math.sin(math.pi * h))
    np.random.seed(0)
    exact = np.stack(
        [fbm.FBM(n=64, hurst=h, length=1.0).fbm()[[32, 64]] for _ in range(n)]
    ) * math.sqrt(vh)
    # Three two-sample KS tests, each at level 1e-3: the values at 1/2 and 1 and the
    # increment between them.
    for a, b in (
        (approx[:, 0], exact[:, 0]),
        (approx[:, 1], exact[:, 1]),
        (approx[:, 1] - approx[:, 0], exact[:, 1] - exact[:, 0]),
    ):
        assert stats.ks_2samp(a, b).pvalue > 1e-3
    # And the variances agree within their sampling error.
    for a, b in (
        (approx[:, 1], exact[:, 1]),
        (approx[:, 1] - approx[:, 0], exact[:, 1] - exact[:, 0]),
    ):
        tol = variance_tolerance(np.var(b), n) * math.sqrt(2)
        assert abs(np.var(a) - np.var(b)) < tol


def relative_covariance_error_64(noise):
    with jax.enable_x64(True):
        return relative_covariance_error(noise, jnp.linspace(0.05, 1.0, 20))


def test_augment_structure_and_values():
    noise = FractionalNoise(0.3, 4, 10.0, 1.0, "I")
    w = np.asarray(noise.omega())
    g = noise.speeds
    z = jnp.arange(1.0, 2 + 2 * 4 + 1) / 10  # d = 2, m = 2 channels, K = 4

    def drift(t, y, a):
        return -y

    # Diagonal noise: one channel per coordinate.
    diag = sdekit.SDE(drift, lambda t, y, a: jnp.array([2.0, 3.0]) * (1 + y))
    aug = augment(diag, noise, state_size=2)
    assert aug.noise_structure == "general" and aug.noise_dim == 2
    x, y = np.asarray(z[:2]), np.asarray(z[2:]).reshape(2, 4)
    scale = np.array([2.0, 3.0]) * (1 + x)
    expected = np.concatenate([-x - scale * (y @ (w * g)), (-g * y).ravel()])
    np.testing.assert_allclose(aug.drift(0.0, z, None), expected, rtol=1e-5)
    G = np.asarray(aug.diffusion_operator(0.0, z, None).as_matrix())
    assert G.shape == (10, 2)
    np.testing.assert_allclose(G[:2], np.diag(scale * w.sum()), rtol=1e-5)
    np.testing.assert_allclose(G[2:], np.kron(np.eye(2), np.ones((4, 1))))
    # General noise: a (d, m) matrix.
    B = jnp.array([[1.0, 0.5], [0.0, 2.0]])
    gen = sdekit.SDE(drift, lambda t, y, a: B, noise_structure="general", noise_dim=2)
    aug = augment(gen, noise)
    np.testing.assert_allclose(
        aug.drift(0.0, z, None)[:2], -x - np.asarray(B) @ (y @ (w * g)), rtol=1e-5
    )
    with pytest.raises(ValueError, match="state_size"):
        augment(diag, noise)
    # The initial components and the split.
    z0 = augmented_initial_state(diag, noise, jnp.ones((7, 2)), jr.key(0))
    xs, ys = split_components(z0, 2, 4)
    assert xs.shape == (7, 2) and ys.shape == (7, 2, 4)
    np.testing.assert_allclose(xs, 1.0)
    assert float(jnp.std(ys)) > 0  # type I starts stationary, not at rest


def test_step_size_check():
    noise = FractionalNoise(0.3, 5, 20.0)
    with pytest.raises(ValueError, match="gamma_max \\* dt0"):
        solve_fractional(
            _brownian_sde(),
            jnp.zeros((2, 1)),
            np.array([0.0, 1.0]),
            noise=noise,
            key=jr.key(0),
            dt0=0.05,
        )
    check_step_size(noise, 0.02)  # 0.4 < 0.5: fine
    check_step_size(
        noise, 0.05, dfx.ImplicitEuler()
    )  # implicit solvers are not checked


def test_learnable_hurst_gradient_through_the_solver(x64):
    # d/dH of a Monte Carlo variance through omega(H), the solver and its adjoint,
    # against central differences on the same noise.
    key = jr.key(3)

    @jax.jit
    def loss(h):
        noise = FractionalNoise(h, 5, 20.0, 1.0, "II")
        sol = solve_fractional(
            _brownian_sde(),
            jnp.zeros((64, 1)),
            np.array([1.0]),
            noise=noise,
            key=key,
            dt0=0.01,
            t0=0.0,
        )
        return jnp.mean(sol.ys**2)

    grad = jax.jit(jax.grad(loss))(0.4)
    eps = 1e-5
    fd = (loss(0.4 + eps) - loss(0.4 - eps)) / (2 * eps)
    np.testing.assert_allclose(grad, fd, rtol=1e-5)


def test_mafbm_covariance_matches_formula_directly(x64):
    # Type II, t >= s: sum_ij w_i w_j e^{-g_i (t-s)} (1 - e^{-(g_i+g_j) s}) / (g_i+g_j).
    noise = FractionalNoise(0.4, 4, 10.0, 1.0, "II")
    w, g = np.asarray(noise.omega()), noise.speeds
    t, s = 0.9, 0.35
    gs = g[:, None] + g[None, :]
    expected = np.sum(
        np.outer(w, w) * np.exp(-g[:, None] * (t - s)) * (1 - np.exp(-gs * s)) / gs
    )
    got = mafbm_covariance(w, g, jnp.array([t]), jnp.array([s]), "II")[0, 0]
    np.testing.assert_allclose(got, expected, rtol=1e-12)
