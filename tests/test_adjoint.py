import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

import sdekit


class Field(eqx.Module):
    net: eqx.nn.MLP

    def __call__(self, t, y, args):
        return self.net(jnp.concatenate([y, jnp.atleast_1d(t)]))


def _leaves(tree):
    return jax.tree_util.tree_leaves(eqx.filter(tree, eqx.is_inexact_array))


def _neural_sde(getkey, calculus, noise="diagonal"):
    drift = Field(eqx.nn.MLP(4, 3, 16, 2, activation=jnp.tanh, key=getkey()))
    diffusion = Field(
        eqx.nn.MLP(4, 3, 16, 1, final_activation=jax.nn.sigmoid, key=getkey())
    )
    return drift, diffusion


@pytest.mark.parametrize("calculus", ["stratonovich", "ito"])
@pytest.mark.parametrize("shared_times", [True, False])
def test_reversible_gradients_equal_backprop(x64, getkey, calculus, shared_times):
    # The same reversible-Heun discretisation differentiated two ways: by diffrax's
    # backprop (all steps stored) and by the O(1)-memory reversible adjoint.
    key = getkey()
    params = _neural_sde(getkey, calculus)
    y0 = jr.normal(getkey(), (6, 3))
    ts = (
        np.array([0.0, 0.3, 0.65, 1.0])
        if shared_times
        else [np.array([0.0, 0.3, 1.0])] * 3 + [np.array([0.2, 0.9])] * 3
    )

    def loss(diff, adjoint):
        params, y0 = diff
        sde = sdekit.SDE(params[0], params[1], calculus=calculus)
        sol = sdekit.solve(
            sde,
            y0,
            ts,
            key=key,
            dt0=0.02,
            t0=0.0,
            t1=1.0,
            solver=dfx.ReversibleHeun(),
            adjoint=adjoint,
        )
        return jnp.sum(jnp.where(sol.mask[..., None], jnp.sin(sol.ys), 0.0))

    # Gradients with respect to the networks' parameters and the initial states.
    grad = eqx.filter_jit(eqx.filter_value_and_grad(loss))
    direct, g_direct = grad((params, y0), None)
    rev, g_rev = grad((params, y0), sdekit.ReversibleAdjoint())
    np.testing.assert_allclose(rev, direct, rtol=1e-10)
    leaves_rev, leaves_direct = _leaves(g_rev), _leaves(g_direct)
    assert len(leaves_rev) == len(leaves_direct) > 0
    for a, b in zip(leaves_rev, leaves_direct):
        assert float(jnp.max(jnp.abs(b))) > 0
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-12)


def _temp_bytes(num_steps, adjoint, getkey):
    drift, diffusion = _neural_sde(getkey, "ito")
    key = getkey()

    def loss(params):
        sde = sdekit.SDE(params[0], params[1])
        sol = sdekit.solve(
            sde,
            jnp.ones((16, 3)),
            np.array([1.0]),
            key=key,
            dt0=1.0 / num_steps,
            t0=0.0,
            adjoint=adjoint,
        )
        return jnp.mean(sol.ys**2)

    params = (drift, diffusion)
    dyn, static = eqx.partition(params, eqx.is_inexact_array)
    f = jax.jit(lambda d: eqx.filter_grad(loss)(eqx.combine(d, static)))
    return f.lower(dyn).compile().memory_analysis().temp_size_in_bytes


def test_reversible_memory_is_constant_in_steps(getkey):
    # XLA's compile-time buffer assignment: the backprop adjoint grows linearly in the
    # number of steps, the reversible one does not (it regenerates the noise from the
    # key; only the step grid, one float per step, grows).
    rev_small = _temp_bytes(100, sdekit.ReversibleAdjoint(), getkey)
    rev_large = _temp_bytes(3000, sdekit.ReversibleAdjoint(), getkey)
    direct_large = _temp_bytes(3000, None, getkey)
    assert rev_large <= 1.5 * rev_small, (rev_small, rev_large)
    assert direct_large > 5 * rev_large, (direct_large, rev_large)


@pytest.mark.parametrize(
    "solver, additive",
    [(dfx.Euler(), False), (dfx.Heun(), False), (dfx.SRA1(), True)],
    ids=["euler", "heun", "sra1-levy-area"],
)
@pytest.mark.parametrize("shared_times", [True, False])
def test_scan_engine_equals_diffeqsolve(x64, getkey, solver, additive, shared_times):
    # The default engine on the grid path (ScanAdjoint: the solver's step in a scan,
    # each step rematerialised, or not) against one diffrax.diffeqsolve with diffrax's
    # own backpropagation, on the same grid and increments: the same solutions and the
    # same gradients, for a solver with Levy areas too.
    key = getkey()
    drift, diffusion = _neural_sde(getkey, "ito")
    if additive:
        scale = jr.uniform(getkey(), (3,), minval=0.2, maxval=0.8)
        diffusion = lambda t, y, args: scale * (1.0 + t)  # noqa: E731
    y0 = jr.normal(getkey(), (5, 3))
    ts = (
        np.array([0.0, 0.3, 0.65, 1.0])
        if shared_times
        else [np.array([0.0, 0.3, 1.0])] * 2 + [np.array([0.2, 0.9])] * 3
    )

    def loss(diff, adjoint):
        drift, y0 = diff
        sde = sdekit.SDE(drift, diffusion, calculus="ito", additive=additive)
        sol = sdekit.solve(
            sde, y0, ts, key=key, dt0=0.05, t0=0.0, t1=1.0, solver=solver, adjoint=adjoint
        )
        return jnp.sum(jnp.where(sol.mask[..., None], jnp.sin(sol.ys), 0.0))

    grad = eqx.filter_jit(eqx.filter_value_and_grad(loss))
    reference, g_reference = grad((drift, y0), dfx.RecursiveCheckpointAdjoint())
    for adjoint in (None, sdekit.ScanAdjoint(remat=False)):
        value, g = grad((drift, y0), adjoint)
        np.testing.assert_allclose(value, reference, rtol=1e-10)
        leaves, expected = _leaves(g), _leaves(g_reference)
        assert len(leaves) == len(expected) > 0
        for a, b in zip(leaves, expected):
            assert float(jnp.max(jnp.abs(b))) > 0
            np.testing.assert_allclose(a, b, rtol=1e-8, atol=1e-12)
