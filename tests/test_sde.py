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
    scalar = sdekit.SDE(
        lambda t, y, a: y, lambda t, y, a: 0.7 * y, noise_structure="scalar"
    )
    np.testing.assert_allclose(
        scalar.ito_correction(0.0, y, None), 0.5 * 0.49 * y, rtol=1e-5
    )
    # General noise: columns g_j = B_j y, correction = ½ Σ_j B_j B_j y.
    B = jr.normal(getkey(), (2, 3, 3))
    general = sdekit.SDE(
        lambda t, y, a: y,
        lambda t, y, a: jnp.stack([B[0] @ y, B[1] @ y], axis=1),
        noise_structure="general",
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
    sde = sdekit.SDE(lambda t, y, a: jnp.zeros(3), g, noise_structure=noise, **kwargs)
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
    # One representation for every structure: a lineax operator from the Brownian
    # motion's shape to the state's.
    op = sde.diffusion_operator(0.0, jnp.zeros(3), None)
    assert isinstance(op, lx.AbstractLinearOperator)
    assert op.in_structure().shape == shape and op.out_structure().shape == (3,)
    np.testing.assert_allclose(op.mv(dw), expected, rtol=1e-6)
    assert isinstance(terms, dfx.MultiTerm)


def test_old_noise_spelling_still_works_with_a_warning():
    with pytest.warns(DeprecationWarning, match="noise_structure"):
        sde = sdekit.SDE(lambda t, y, a: y, lambda t, y, a: y, noise="scalar")
    assert sde.noise_structure == "scalar"
    with pytest.warns(DeprecationWarning, match="noise_structure"):
        assert sde.noise == "scalar"
    with pytest.raises(TypeError, match="noise_structure"):
        sdekit.SDE(
            lambda t, y, a: y, lambda t, y, a: y, noise_structure="scalar", noise="scalar"
        )


@pytest.mark.parametrize("structure", ["diagonal", "scalar", "general"])
def test_diffusion_may_return_an_operator(getkey, structure):
    # The same diffusion returned as an array and as a lineax operator (any structure)
    # gives the same operator, Itô correction and terms.
    B = jr.normal(getkey(), (3, 3))
    dims = dict(noise_dim=2) if structure == "general" else {}

    def as_array(t, y, a):
        if structure == "general":
            return jnp.stack([B @ y, jnp.sin(y)], axis=1)
        return jnp.tanh(B @ y)

    def as_operator(t, y, a):
        g = as_array(t, y, a)
        if structure == "diagonal":
            return lx.DiagonalLinearOperator(g)
        if structure == "scalar":
            return lx.FunctionLinearOperator(
                lambda w: g * w, jax.ShapeDtypeStruct((), g.dtype)
            )
        return lx.MatrixLinearOperator(g)

    y = jr.normal(getkey(), (3,))
    one = sdekit.SDE(lambda t, y, a: -y, as_array, noise_structure=structure, **dims)
    other = sdekit.SDE(
        lambda t, y, a: -y, as_operator, noise_structure=structure, **dims
    )
    w = jr.normal(getkey(), one.brownian_shape((3,)))
    np.testing.assert_allclose(
        one.diffusion_operator(0.0, y, None).mv(w),
        other.diffusion_operator(0.0, y, None).mv(w),
        rtol=1e-6,
    )
    np.testing.assert_allclose(
        one.ito_correction(0.0, y, None), other.ito_correction(0.0, y, None), rtol=1e-5
    )
    # An operator of the wrong input shape is refused, naming the shapes.
    wrong = sdekit.SDE(
        lambda t, y, a: -y,
        lambda t, y, a: lx.MatrixLinearOperator(jnp.ones((3, 5))),
        noise_structure=structure,
        **dims,
    )
    with pytest.raises(ValueError, match="diffusion must return"):
        wrong.diffusion_operator(0.0, y, None)
