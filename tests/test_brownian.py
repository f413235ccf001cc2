import diffrax as dfx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import scipy.stats

import sdekit


def test_increments_are_gaussian_ks(getkey):
    # Increments over an irregular grid, standardised by sqrt(dt), against N(0, 1).
    ts = jnp.sort(
        jnp.concatenate([jnp.zeros(1), jr.uniform(getkey(), (2000,)), jnp.ones(1)])
    )
    path = sdekit.GridBrownianPath(ts, (), getkey())
    z = np.asarray(jax.vmap(path.evaluate)(ts[:-1], ts[1:]) / jnp.sqrt(jnp.diff(ts)))
    assert scipy.stats.kstest(z, "norm").pvalue > 1e-4
    # Non-overlapping increments are uncorrelated.
    assert abs(np.corrcoef(z[:-1], z[1:])[0, 1]) < 4.5 / np.sqrt(z.size)


def test_increments_over_several_grid_steps(getkey):
    # W(t) - W(s) across many grid steps has variance t - s, over independent paths.
    ts = jnp.linspace(0.0, 2.0, 101)
    keys = jr.split(getkey(), 5000)
    w = jax.vmap(lambda k: sdekit.GridBrownianPath(ts, (), k).evaluate(0.2, 1.7))(keys)
    assert abs(float(jnp.var(w)) - 1.5) < 4.5 * 1.5 * np.sqrt(2 / 5000)
    assert abs(float(jnp.mean(w))) < 4.5 * np.sqrt(1.5 / 5000)


def test_exact_on_grid_and_additive(getkey):
    ts = jnp.linspace(0.0, 1.0, 11)
    path = sdekit.GridBrownianPath(ts, (3,), getkey())
    assert isinstance(path, dfx.AbstractBrownianPath)
    whole = path.evaluate(0.0, 1.0)
    parts = path.evaluate(0.0, 0.3) + path.evaluate(0.3, 1.0)
    np.testing.assert_allclose(whole, parts, atol=1e-6)
    np.testing.assert_array_equal(path.evaluate(0.0), jnp.zeros(3))
    levy = path.evaluate(0.0, 0.5, use_levy=True)
    np.testing.assert_allclose(levy.W, path.evaluate(0.0, 0.5))


def test_batched_keys_match_single_keys(getkey):
    ts = jnp.linspace(0.0, 1.0, 6)
    keys = jr.split(getkey(), 4)
    batched = sdekit.GridBrownianPath(ts, (2,), keys)
    for i, k in enumerate(keys):
        single = sdekit.GridBrownianPath(ts, (2,), k)
        np.testing.assert_array_equal(
            batched.evaluate(0.2, 0.8)[i], single.evaluate(0.2, 0.8)
        )


def test_differentiable_solve_through_path(getkey):
    # Reverse-mode through diffrax's checkpointed adjoint over the grid path: the gradient
    # of y(1) = y0 * exp(...) for GBM is y(1) / y0, per path.
    ts = jnp.linspace(0.0, 1.0, 51)
    path = sdekit.GridBrownianPath(ts, (), getkey())
    sde = sdekit.SDE(lambda t, y, a: 0.3 * y, lambda t, y, a: 0.5 * y, noise="scalar")

    def final(y0):
        sol = dfx.diffeqsolve(
            sde.terms(path),
            dfx.Euler(),
            0.0,
            1.0,
            None,
            y0,
            stepsize_controller=dfx.StepTo(ts=ts),
            saveat=dfx.SaveAt(t1=True),
        )
        return sol.ys[-1, 0]

    y0 = jnp.array([2.0])
    np.testing.assert_allclose(jax.grad(final)(y0)[0], final(y0) / 2.0, rtol=1e-5)
