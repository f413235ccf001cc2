import diffrax as dfx
import jax
import jax.numpy as jnp
import jax.random as jr
import lineax as lx
import numpy as np
import pytest

import sdekit


def test_ito_correction_closed_forms(getkey):
    y = jr.normal(getkey(), (3,))
    # Diagonal noise g_i = s_i y_i^2: correction_i = ½ g_i ∂g_i/∂y_i = s_i^2 y_i^3.
    s = jnp.array([0.5, 1.0, 2.0])
    diag = sdekit.SDE(lambda t, y, a: y, lambda t, y, a: s * y**2)
    np.testing.assert_allclose(
        diag.ito_correction(0.0, y, None), s**2 * y**3, rtol=1e-5
    )
    # Cross-dependence must not leak in for diagonal noise: g_i = sin(sum y).
    cross = sdekit.SDE(
        lambda t, y, a: y, lambda t, y, a: jnp.sin(jnp.sum(y)) * jnp.ones(3)
    )
    expected = 0.5 * jnp.sin(jnp.sum(y)) * jnp.cos(jnp.sum(y)) * jnp.ones(3)
    np.testing.assert_allclose(cross.ito_correction(0.0, y, None), expected, rtol=1e-5)
    # Scalar noise g = σ y (GBM): ½ σ^2 y.
    scalar = sdekit.SDE(lambda t, y, a: y, lambda t, y, a: 0.7 * y, noise="scalar")
    np.testing.assert_allclose(
        scalar.ito_correction(0.0, y, None), 0.5 * 0.49 * y, rtol=1e-5
    )
    # General noise: columns g_j = B_j y, correction = ½ Σ_j B_j B_j y.
    B = jr.normal(getkey(), (2, 3, 3))
    general = sdekit.SDE(
        lambda t, y, a: y,
        lambda t, y, a: jnp.stack([B[0] @ y, B[1] @ y], axis=1),
        noise="general",
        noise_dim=2,
    )
    expected = 0.5 * (B[0] @ B[0] @ y + B[1] @ B[1] @ y)
    np.testing.assert_allclose(
        general.ito_correction(0.0, y, None), expected, rtol=1e-4
    )
    # Additive noise: none.
    additive = sdekit.SDE(lambda t, y, a: y, lambda t, y, a: jnp.ones(3), additive=True)
    np.testing.assert_array_equal(additive.ito_correction(0.0, y, None), jnp.zeros(3))


def test_drift_conversion_round_trip(getkey):
    y = jr.normal(getkey(), (3,))
    sde = sdekit.SDE(lambda t, y, a: -y, lambda t, y, a: 0.3 * y**2)
    strat = sdekit.SDE(
        sde.drift_in("stratonovich"), sde.diffusion, calculus="stratonovich"
    )
    np.testing.assert_allclose(strat.drift_in("ito")(0.0, y, None), -y, rtol=1e-5)


@pytest.mark.parametrize(
    "noise, shape", [("diagonal", (3,)), ("scalar", ()), ("general", (2,))]
)
def test_terms_match_noise_structure(getkey, noise, shape):
    kwargs = dict(noise_dim=2) if noise == "general" else {}
    g = (
        (lambda t, y, a: jnp.ones((3, 2)))
        if noise == "general"
        else (lambda t, y, a: 2 * jnp.ones(3))
    )
    sde = sdekit.SDE(lambda t, y, a: jnp.zeros(3), g, noise=noise, **kwargs)
    assert sde.brownian_shape((3,)) == shape
    path = sdekit.GridBrownianPath(jnp.linspace(0.0, 1.0, 3), shape, getkey())
    terms = sde.terms(path)
    dw = path.evaluate(0.0, 0.5)
    out = terms.terms[1].vf_prod(0.0, jnp.zeros(3), None, dw)
    if noise == "general":
        expected = jnp.ones((3, 2)) @ dw
    else:
        expected = 2 * dw * jnp.ones(3)
    np.testing.assert_allclose(out, expected, rtol=1e-6)
    assert isinstance(
        sde.diffusion_operator(0.0, jnp.zeros(3), None),
        (lx.AbstractLinearOperator, jax.Array),
    )
    assert isinstance(terms, dfx.MultiTerm)
