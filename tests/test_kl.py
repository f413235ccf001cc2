import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import mean_tolerance

import sdekit


THETA_Q, THETA_P, SIGMA, Y0, T = 2.0, 0.5, 0.6, 1.5, 1.0


def ou_kl_closed_form():
    # u = (θ_p - θ_q) y / σ, so KL = (θ_p - θ_q)^2 / (2σ^2) ∫_0^T E_q[y_t^2] dt with
    # E_q[y_t^2] = y0^2 e^{-2θt} + σ^2 (1 - e^{-2θt}) / (2θ), θ = θ_q.
    a = (THETA_P - THETA_Q) ** 2 / (2 * SIGMA**2)
    th = THETA_Q
    decay = (1 - np.exp(-2 * th * T)) / (2 * th)
    second_moment_integral = Y0**2 * decay + SIGMA**2 / (2 * th) * (T - decay)
    return a * second_moment_integral


@pytest.mark.parametrize("noise", ["diagonal", "scalar", "general"])
def test_ou_pathwise_kl(getkey, noise):
    kwargs = dict(noise_dim=1) if noise == "general" else {}
    if noise == "general":
        diffusion = lambda t, y, a: SIGMA * jnp.ones((1, 1))  # noqa: E731
    else:
        diffusion = lambda t, y, a: SIGMA * jnp.ones_like(y)  # noqa: E731
    posterior = sdekit.SDE(
        lambda t, y, a: -THETA_Q * y, diffusion, noise_structure=noise, **kwargs
    )
    augmented = sdekit.with_pathwise_kl(posterior, lambda t, y, a: -THETA_P * y)
    n = 20_000
    y0 = jnp.concatenate([jnp.full((n, 1), Y0), jnp.zeros((n, 1))], axis=1)
    sol = sdekit.solve(
        augmented, y0, np.array([0.5, T]), key=getkey(), dt0=0.002, t0=0.0
    )
    ys, kl = sdekit.split_kl(sol.ys)
    assert ys.shape == (n, 2, 1)
    kl_t = np.asarray(kl[:, -1])
    expected = ou_kl_closed_form()
    # The KL coordinate carries no noise of its own and is non-decreasing.
    assert np.all(np.asarray(kl[:, 1] >= kl[:, 0]))
    # Monte Carlo error plus Euler's O(dt) bias (relative, about θ dt).
    tol = mean_tolerance(kl_t.std(), n) + 2 * THETA_Q * 0.002 * expected
    assert abs(kl_t.mean() - expected) < tol, (kl_t.mean(), expected, tol)


def test_girsanov_integrand_general_noise_least_squares():
    # A non-square diffusion (2 states, 3 noises): u is the minimum-norm solution.
    G = jnp.array([[1.0, 0.0, 1.0], [0.0, 2.0, 0.0]])
    post = sdekit.SDE(
        lambda t, y, a: y + 1.0, lambda t, y, a: G, noise_structure="general", noise_dim=3
    )
    value = sdekit.girsanov_integrand(post, lambda t, y, a: y, 0.0, jnp.zeros(2))
    u = np.linalg.pinv(np.asarray(G)) @ np.ones(2)
    np.testing.assert_allclose(value, 0.5 * u @ u, rtol=1e-5)
    # Differentiable and jit-able.
    grad = jax.jit(
        jax.grad(
            lambda y: sdekit.girsanov_integrand(post, lambda t, y, a: 0.5 * y, 0.0, y)
        )
    )(jnp.ones(2))
    assert grad.shape == (2,) and bool(jnp.all(jnp.isfinite(grad)))
