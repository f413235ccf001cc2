import diffrax as dfx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
import scipy.stats
from helpers import mean_tolerance, variance_tolerance

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
    sde = sdekit.SDE(
        lambda t, y, a: 0.3 * y, lambda t, y, a: 0.5 * y, noise_structure="scalar"
    )

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


LEVY_AREAS = [dfx.SpaceTimeLevyArea, dfx.SpaceTimeTimeLevyArea]


@pytest.mark.parametrize("levy_area", LEVY_AREAS)
def test_levy_area_moments(getkey, levy_area):
    # Over one grid interval of length h: W ~ N(0, h), H ~ N(0, h/12), K ~ N(0, h/720),
    # independent. Over two intervals [0, 2h] the combination must give H ~ N(0, 2h/12)
    # with Cov(H_{0,2h}, W_{0,h}) = h/4, and K ~ N(0, 2h/720) with
    # Cov(K_{0,2h}, W_{0,h}) = 0 and Cov(K_{0,2h}, H_{0,h}) = h/96 (the integrals of the
    # Brownian bridge's covariance against the areas' weights).
    n = 20_000
    ts = jnp.array([0.0, 0.3, 0.6, 1.0])
    h = 0.3

    def draw(k):
        path = sdekit.GridBrownianPath(ts, (), k, levy_area=levy_area)
        return path.evaluate(0.0, 0.3, use_levy=True), path.evaluate(
            0.0, 0.6, use_levy=True
        )

    one, two = jax.vmap(draw)(jr.split(getkey(), n))
    assert isinstance(one, levy_area) and isinstance(two, levy_area)
    np.testing.assert_allclose(one.dt[0], h, rtol=1e-6)
    parts = [("W", 1.0), ("H", 1 / 12)]
    if levy_area is dfx.SpaceTimeTimeLevyArea:
        parts.append(("K", 1 / 720))
    for name, scale in parts:
        for x, length in ((getattr(one, name), h), (getattr(two, name), 2 * h)):
            x = np.asarray(x)
            var = scale * length
            assert abs(x.mean()) < mean_tolerance(np.sqrt(var), n), name
            assert abs(x.var() - var) < variance_tolerance(var, n), name

    def check_cov(a, b, expected):
        a, b = np.asarray(a), np.asarray(b)
        prod = (a - a.mean()) * (b - b.mean())
        assert abs(prod.mean() - expected) < mean_tolerance(prod.std(), n)

    check_cov(one.W, one.H, 0.0)
    check_cov(two.H, one.W, h / 4)
    if levy_area is dfx.SpaceTimeTimeLevyArea:
        check_cov(one.W, one.K, 0.0)
        check_cov(one.H, one.K, 0.0)
        check_cov(two.K, one.W, 0.0)
        check_cov(two.K, one.H, h / 96)


@pytest.mark.parametrize("levy_area", [dfx.BrownianIncrement, *LEVY_AREAS])
def test_levy_areas_same_in_every_mode(getkey, levy_area):
    # Presampled, drawn on demand (presample=False) and a batch of keys as one path all
    # give the same increment and areas over each grid interval.
    ts = jnp.linspace(0.0, 1.0, 6)
    keys = jr.split(getkey(), 3)
    batched = sdekit.GridBrownianPath(ts, (2,), keys, levy_area=levy_area)
    n = jnp.arange(5)

    def every_interval(path):
        return jax.vmap(lambda a, b: path.evaluate(a, b, use_levy=True))(ts[n], ts[n + 1])

    together = every_interval(batched)
    for i, k in enumerate(keys):
        stored = sdekit.GridBrownianPath(ts, (2,), k, levy_area=levy_area)
        lazy = sdekit.GridBrownianPath(
            ts, (2,), k, levy_area=levy_area, presample=False
        )
        a, b = every_interval(stored), every_interval(lazy)
        for name in ("W", "H", "K"):
            if hasattr(a, name):
                x, y, z = getattr(a, name), getattr(b, name), getattr(together, name)
                assert x.shape == (5, 2)
                np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-7)
                np.testing.assert_allclose(z[:, i], y, rtol=1e-5, atol=1e-7)


def test_levy_areas_off_grid_are_nan_and_bad_input(getkey):
    ts = jnp.linspace(0.0, 1.0, 5)
    path = sdekit.GridBrownianPath(
        ts, (), getkey(), levy_area=dfx.SpaceTimeTimeLevyArea
    )
    off = path.evaluate(0.1, 0.5, use_levy=True)
    assert np.isnan(off.H) and np.isnan(off.K) and np.isfinite(off.W)
    on = path.evaluate(0.25, 0.75, use_levy=True)
    assert np.isfinite(on.H) and np.isfinite(on.K)
    with pytest.raises(ValueError, match="levy_area"):
        sdekit.GridBrownianPath(ts, (), getkey(), levy_area=dfx.AbstractSpaceTimeLevyArea)


def test_levy_area_for_solvers():
    # The path generates what the solver's own `minimal_levy_area` asks for.
    from sdekit._solvers import levy_area_for

    assert levy_area_for(dfx.Euler()) is dfx.BrownianIncrement
    assert levy_area_for(dfx.Heun()) is dfx.BrownianIncrement
    for solver in (dfx.SEA(), dfx.SRA1(), dfx.ShARK(), dfx.ALIGN()):
        assert levy_area_for(solver) is dfx.SpaceTimeLevyArea
    for solver in (dfx.ShOULD(), dfx.QUICSORT()):
        assert levy_area_for(solver) is dfx.SpaceTimeTimeLevyArea
