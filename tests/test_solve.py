"""Strong orders, moments against closed forms, batching, gradients and bad input."""

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
import scipy.linalg
from helpers import linear_sde_exact, mean_tolerance, strong_order, variance_tolerance

import sdekit


MU, SIGMA = 0.5, 0.8
THETA, OU_SIGMA = 1.5, 0.7


def gbm(calculus="ito", noise="scalar"):
    return sdekit.SDE(
        lambda t, y, a: MU * y,
        lambda t, y, a: SIGMA * y,
        noise_structure=noise,
        calculus=calculus,
    )


def gbm_exact(calculus):
    drift = MU - 0.5 * SIGMA**2 if calculus == "ito" else MU

    def exact(path):
        w = path.evaluate(0.0, 1.0)
        return jnp.ones(1) * jnp.exp(drift + SIGMA * w)

    return exact


def ou():
    return sdekit.SDE(
        lambda t, y, a: -THETA * y,
        lambda t, y, a: OU_SIGMA * jnp.ones_like(y),
        noise_structure="diagonal",
        additive=True,
    )


def ou_exact(path):
    # y(1) = e^{-θ}(y0 + σ ∫ e^{θs} dW) and, by parts, ∫ e^{θs} dW = e^{θ} W(1) - θ ∫ W e^{θs} ds;
    # the ds-integral by the trapezoid rule on the fine grid (error far below the coarse ones).
    w = path.values[:, 0]
    s = path.ts
    f = w * jnp.exp(THETA * s)
    integral = jnp.sum(0.5 * (f[1:] + f[:-1]) * jnp.diff(s))
    stoch = jnp.exp(THETA) * w[-1] - THETA * integral
    return jnp.exp(-THETA) * (1.0 + OU_SIGMA * stoch) * jnp.ones(1)


@pytest.mark.parametrize(
    "name, sde, solver, exact, order",
    [
        ("euler-gbm", gbm(), dfx.Euler(), gbm_exact("ito"), 0.5),
        ("euler-ou-additive", ou(), dfx.Euler(), ou_exact, 1.0),
        (
            "milstein-gbm",
            gbm(noise="diagonal"),
            dfx.ItoMilstein(),
            gbm_exact("ito"),
            1.0,
        ),
        (
            "heun-gbm-stratonovich",
            gbm("stratonovich"),
            dfx.Heun(),
            gbm_exact("stratonovich"),
            1.0,
        ),
        # An Itô SDE solved by a Stratonovich solver: the drift is converted.
        ("heun-gbm-ito-converted", gbm("ito"), dfx.Heun(), gbm_exact("ito"), 1.0),
        ("heun-ou-additive", ou(), dfx.Heun(), ou_exact, 1.0),
    ],
)
def test_strong_order(x64, getkey, name, sde, solver, exact, order):
    slope, errors = strong_order(sde, solver, jnp.ones(1), exact, getkey())
    assert errors[-1] < errors[0]
    assert abs(slope - order) < 0.25, (name, slope, errors)


def test_ou_moments(getkey):
    # dy = -θ y dt + σ dW from y0 = 1: mean e^{-θt}, variance σ²(1 - e^{-2θt}) / (2θ).
    n = 20_000
    ts = np.array([0.25, 0.5, 1.0, 2.0])
    sol = sdekit.solve(ou(), jnp.ones((n, 1)), ts, key=getkey(), dt0=0.005, t0=0.0)
    y = np.asarray(sol.ys[:, :, 0])
    mean = np.exp(-THETA * ts)
    var = OU_SIGMA**2 * (1 - np.exp(-2 * THETA * ts)) / (2 * THETA)
    # Euler's bias on the variance is O(dt): 1 - (1 - θ dt)^2 vs 1 - e^{-2θ dt}; well inside the band.
    np.testing.assert_array_less(
        np.abs(y.mean(0) - mean), [mean_tolerance(np.sqrt(v), n) for v in var]
    )
    np.testing.assert_array_less(
        np.abs(y.var(0) - var), [variance_tolerance(v, n) + 0.01 * v for v in var]
    )


def test_gbm_moments(getkey):
    # Itô GBM: E y = e^{μt}, Var y = e^{2μt}(e^{σ²t} - 1).
    n = 40_000
    ts = np.array([0.5, 1.0])
    sol = sdekit.solve(gbm(), jnp.ones((n, 1)), ts, key=getkey(), dt0=0.002, t0=0.0)
    y = np.asarray(sol.ys[:, :, 0])
    mean = np.exp(MU * ts)
    var = np.exp(2 * MU * ts) * (np.exp(SIGMA**2 * ts) - 1)
    tol = [mean_tolerance(np.sqrt(v), n) + 0.005 * m for v, m in zip(var, mean)]
    np.testing.assert_array_less(np.abs(y.mean(0) - mean), tol)
    # log y is Gaussian: mean (μ - σ²/2) t, variance σ² t (exact in law, no kurtosis issue).
    logy = np.log(y)
    np.testing.assert_array_less(
        np.abs(logy.mean(0) - (MU - SIGMA**2 / 2) * ts),
        [mean_tolerance(SIGMA * np.sqrt(t), n) + 0.01 for t in ts],
    )
    np.testing.assert_array_less(
        np.abs(logy.var(0) - SIGMA**2 * ts),
        [variance_tolerance(SIGMA**2 * t, n) + 0.01 for t in ts],
    )


def test_adaptive_virtual_brownian_moments(getkey):
    # The adaptive path (VirtualBrownianTree + PID) reaches the same OU law.
    n = 2000
    sol = sdekit.solve(
        ou(),
        jnp.ones((n, 1)),
        np.array([1.0]),
        key=getkey(),
        dt0=0.02,
        t0=0.0,
        brownian="virtual",
        solver=dfx.Heun(),
        stepsize_controller=dfx.PIDController(rtol=1e-2, atol=1e-2),
    )
    y = np.asarray(sol.ys[:, 0, 0])
    var = OU_SIGMA**2 * (1 - np.exp(-2 * THETA)) / (2 * THETA)
    assert abs(y.mean() - np.exp(-THETA)) < mean_tolerance(np.sqrt(var), n)
    assert abs(y.var() - var) < variance_tolerance(var, n) + 0.02 * var


def test_saves_land_on_observation_times(getkey):
    # With the diffusion switched off the solve is the exact Euler ODE solve on the grid;
    # y' = 1 is integrated exactly, so every save equals its own time.
    sde = sdekit.SDE(
        lambda t, y, a: jnp.ones_like(y), lambda t, y, a: jnp.zeros_like(y)
    )
    ts = [np.array([0.0, 0.013, 0.5, 0.77]), np.array([0.1, 0.9]), np.array([0.33])]
    sol = sdekit.solve(
        sde, jnp.zeros((3, 1)), ts, key=getkey(), dt0=0.1, t0=0.0, t1=1.0
    )
    assert sol.ys.shape == (3, 4, 1)
    np.testing.assert_array_equal(sol.mask, [[1, 1, 1, 1], [1, 1, 0, 0], [1, 0, 0, 0]])
    for i, t in enumerate(ts):
        np.testing.assert_allclose(sol.ys[i, : len(t), 0], t, atol=1e-6)
    # Uniform steps plus one step per save time.
    assert int(sol.stats["num_steps"][0]) == 10 + 4


def test_shared_and_per_path_times_agree(getkey):
    # The batch-as-one-state fast path and the vmap path draw the same noise per key.
    sde = gbm(noise="diagonal")
    ts = np.array([0.2, 0.6, 1.0])
    key = getkey()
    shared = sdekit.solve(sde, jnp.ones((5, 1)), ts, key=key, dt0=0.05, t0=0.0)
    per_path = sdekit.solve(
        sde, jnp.ones((5, 1)), np.tile(ts, (5, 1)), key=key, dt0=0.05, t0=0.0
    )
    np.testing.assert_allclose(shared.ys, per_path.ys, rtol=1e-5)


@pytest.mark.parametrize("noise", ["diagonal", "scalar", "general"])
def test_noise_structures(getkey, noise):
    # Three components driven by the noise structure under test; the variance of y(1)
    # for dy = g dW with constant g is (g g^T) diag.
    n = 20_000
    if noise == "general":
        G = jnp.array([[1.0, 0.0], [0.5, 0.5], [0.0, 2.0]])
        sde = sdekit.SDE(
            lambda t, y, a: jnp.zeros_like(y),
            lambda t, y, a: G,
            noise_structure="general",
            noise_dim=2,
            additive=True,
        )
        var = np.diag(np.asarray(G @ G.T))
    else:
        g = jnp.array([1.0, 0.5, 2.0])
        sde = sdekit.SDE(
            lambda t, y, a: jnp.zeros_like(y),
            lambda t, y, a: g,
            noise_structure=noise,
            additive=True,
        )
        var = np.asarray(g**2)
    sol = sdekit.solve(
        sde, jnp.zeros((n, 3)), np.array([1.0]), key=getkey(), dt0=0.1, t0=0.0
    )
    y = np.asarray(sol.ys[:, 0])
    np.testing.assert_array_less(
        np.abs(y.var(0) - var), [variance_tolerance(v, n) for v in var]
    )
    corr = np.corrcoef(y.T)[0, 2]
    if noise == "scalar":
        assert corr > 0.999  # one shared Brownian motion
    else:
        assert abs(corr) < 4.5 / np.sqrt(n)


def test_jit_and_vmap(getkey):
    sde = gbm(noise="diagonal")

    def final_mean(y0, key):
        sol = sdekit.solve(
            sde, y0, np.array([0.5, 1.0]), key=key, dt0=0.1, t0=0.0, t1=1.0
        )
        return sol.ys[:, -1].mean()

    y0 = jnp.ones((4, 1))
    key = getkey()
    eager = final_mean(y0, key)
    jitted = jax.jit(final_mean)(y0, key)
    np.testing.assert_allclose(eager, jitted, rtol=1e-6)
    mapped = jax.vmap(final_mean, in_axes=(0, None))(jnp.stack([y0, 2 * y0]), key)
    # GBM is linear in y0 for a fixed path.
    np.testing.assert_allclose(mapped, [eager, 2 * eager], rtol=1e-5)
    # Traced save times work when t0 and t1 are given.
    traced = jax.jit(
        lambda ts: (
            sdekit.solve(sde, y0, ts, key=key, dt0=0.1, t0=0.0, t1=1.0).ys[:, -1].mean()
        )
    )(jnp.array([0.5, 1.0]))
    np.testing.assert_allclose(traced, eager, rtol=1e-6)


def test_gradient_matches_finite_differences(x64, getkey):
    # d/dθ of E[y(1)^2] on fixed noise, for a neural drift parameter and the diffusion scale.
    key = getkey()
    mlp = eqx.nn.MLP(2, 2, 8, 1, activation=jnp.tanh, key=getkey())

    def loss(params):
        net, scale = params
        sde = sdekit.SDE(
            lambda t, y, a: net(y), lambda t, y, a: scale * jnp.tanh(y) + 0.1
        )
        sol = sdekit.solve(
            sde, jnp.ones((8, 2)), np.array([0.5, 1.0]), key=key, dt0=0.05, t0=0.0
        )
        return jnp.mean(sol.ys**2)

    params = (mlp, jnp.asarray(0.7))
    grads = eqx.filter_grad(loss)(params)
    flat, unravel = jax.flatten_util.ravel_pytree(
        eqx.filter(params, eqx.is_inexact_array)
    )
    gflat, _ = jax.flatten_util.ravel_pytree(eqx.filter(grads, eqx.is_inexact_array))
    static = eqx.filter(params, eqx.is_inexact_array, inverse=True)
    direction = jr.normal(getkey(), flat.shape)
    eps = 1e-6
    f = lambda x: loss(eqx.combine(unravel(x), static))  # noqa: E731
    fd = (f(flat + eps * direction) - f(flat - eps * direction)) / (2 * eps)
    np.testing.assert_allclose(jnp.vdot(gflat, direction), fd, rtol=1e-6)


def _ok_sde():
    return gbm(noise="diagonal")


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(ts=np.array([0.0, 0.5, 0.4])), "strictly increasing"),
        (dict(ts=np.array([0.0, 0.5, 0.5])), "strictly increasing"),
        (dict(ts=np.array([0.0, np.nan, 1.0])), "NaN"),
        (dict(y0=jnp.array([[1.0], [jnp.nan]])), "NaN"),
        (dict(dt0=0.0), "dt0"),
        (dict(dt0=-0.1), "dt0"),
        (dict(y0=jnp.ones(2)), "batched"),
        (dict(ts=np.array([0.0, 2.0]), t1=1.0), "after t1"),
        (
            dict(sde=sdekit.SDE(lambda t, y, a: jnp.ones(3), lambda t, y, a: y)),
            "drift must return",
        ),
        (
            dict(sde=sdekit.SDE(lambda t, y, a: y, lambda t, y, a: jnp.ones(3))),
            "diffusion must return",
        ),
        (dict(solver=dfx.SEA()), "additive"),
        (
            dict(stepsize_controller=dfx.PIDController(rtol=1e-3, atol=1e-3)),
            "brownian='virtual'",
        ),
        (
            dict(adjoint=sdekit.ReversibleAdjoint(), solver=dfx.ItoMilstein()),
            "ReversibleHeun",
        ),
    ],
)
def test_bad_input_raises_clear_error(getkey, kwargs, match):
    call = dict(sde=_ok_sde(), y0=jnp.ones((2, 1)), ts=np.array([0.0, 1.0]), dt0=0.1)
    call.update(kwargs)
    sde, y0, ts = call.pop("sde"), call.pop("y0"), call.pop("ts")
    with pytest.raises(ValueError, match=match):
        sdekit.solve(sde, y0, ts, key=getkey(), **call)


def test_bad_sde_definitions():
    with pytest.raises(ValueError, match="noise_structure"):
        sdekit.SDE(lambda t, y, a: y, lambda t, y, a: y, noise_structure="colored")
    with pytest.raises(ValueError, match="noise_dim"):
        sdekit.SDE(lambda t, y, a: y, lambda t, y, a: y, noise_structure="general")
    with pytest.raises(ValueError, match="calculus"):
        sdekit.SDE(lambda t, y, a: y, lambda t, y, a: y, calculus="ito-ish")


def test_reversible_adjoint_solution_law(getkey):
    # The reversible-Heun forward solve (noise regenerated from the key) has the GBM law:
    # log y(1) ~ N(μ - σ²/2, σ²) for the Itô SDE, converted to Stratonovich internally.
    n = 20_000
    sol = sdekit.solve(
        gbm(noise="diagonal"),
        jnp.ones((n, 1)),
        np.array([1.0]),
        key=getkey(),
        dt0=0.01,
        t0=0.0,
        adjoint=sdekit.ReversibleAdjoint(),
    )
    logy = np.log(np.asarray(sol.ys[:, 0, 0]))
    assert abs(logy.mean() - (MU - SIGMA**2 / 2)) < mean_tolerance(SIGMA, n) + 0.01
    assert abs(logy.var() - SIGMA**2) < variance_tolerance(SIGMA**2, n) + 0.01


# The stochastic Runge-Kutta methods for additive noise, on the grid path's Lévy areas.
# On the linear OU problem SRA1 and ShARK converge at order 2 (the terms that limit them
# to 1.5 vanish), so the strong orders are measured on a nonlinear drift with a large
# noise, against a fine solve by another order-1.5 method on the same paths.
def nonlinear_additive():
    return sdekit.SDE(
        lambda t, y, a: -3.0 * jnp.sin(y),
        lambda t, y, a: 2.0 * jnp.ones_like(y),
        additive=True,
    )


def fine_reference(sde, solver, fine):
    grid = jnp.linspace(0.0, 1.0, 2**fine + 1)

    def exact(path):
        sol = dfx.diffeqsolve(
            sde.terms(path, "stratonovich"),
            solver,
            0.0,
            1.0,
            None,
            jnp.ones(1),
            stepsize_controller=dfx.StepTo(ts=grid),
            max_steps=2**fine,
            saveat=dfx.SaveAt(t1=True),
        )
        return sol.ys[-1]

    return exact


@pytest.mark.slow
@pytest.mark.parametrize(
    "solver, reference, order",
    [
        (dfx.SEA(), dfx.ShARK(), 1.0),
        (dfx.SRA1(), dfx.ShARK(), 1.5),
        (dfx.ShARK(), dfx.SRA1(), 1.5),
    ],
)
def test_additive_noise_srk_strong_order(x64, getkey, solver, reference, order):
    assert solver.strong_order(None) == order  # diffrax's documented order
    sde = nonlinear_additive()
    slope, errors = strong_order(
        sde,
        solver,
        jnp.ones(1),
        fine_reference(sde, reference, 12),
        getkey(),
        levels=range(3, 8),
        fine=12,
        num_paths=200,
    )
    assert errors[-1] < errors[0]
    assert abs(slope - order) < 0.25, (type(solver).__name__, slope, errors)


@pytest.mark.parametrize("solver", [dfx.SEA(), dfx.SRA1(), dfx.ShARK()])
def test_additive_noise_srk_law_through_solve(getkey, solver):
    # Through solve (the batch as one state on the grid path with its Lévy areas): the
    # OU law at t = 1 with a step where these solvers' bias is small.
    n = 20_000
    sol = sdekit.solve(
        ou(), jnp.ones((n, 1)), np.array([1.0]), key=getkey(), dt0=0.02, t0=0.0,
        solver=solver,
    )  # fmt: skip
    y = np.asarray(sol.ys[:, 0, 0])
    var = OU_SIGMA**2 * (1 - np.exp(-2 * THETA)) / (2 * THETA)
    # The weak error at dt = 0.02 is largest for SEA (order 1): its mean decays as
    # (1 - θ dt)^n, 0.007 below e^{-θ}; the others are far closer.
    assert abs(y.mean() - np.exp(-THETA)) < mean_tolerance(np.sqrt(var), n) + 0.01
    assert abs(y.var() - var) < variance_tolerance(var, n) + 0.02 * var


# Underdamped Langevin with the quadratic potential f(x) = k x^2 / 2: a linear SDE in
# z = (x, v), dz = A z dt + B dW, whose solution on a path is known.
GAMMA, U, STIFFNESS = 2.0, 1.0, 1.5


def langevin():
    return sdekit.UnderdampedLangevinSDE(GAMMA, U, lambda x, args: STIFFNESS * x)


def langevin_matrices():
    A = np.array([[0.0, 1.0], [-U * STIFFNESS, -GAMMA]])
    B = np.array([[0.0], [np.sqrt(2 * GAMMA * U)]])
    return A, B


def langevin_exact(path):
    A, B = langevin_matrices()
    z = linear_sde_exact(jnp.asarray(A), jnp.asarray(B), jnp.array([1.0, 0.0]), path)
    return z[:1], z[1:]


@pytest.mark.slow
@pytest.mark.parametrize(
    "solver, order", [(dfx.ALIGN(0.01), 2.0), (dfx.ShOULD(0.01), 3.0)]
)
def test_underdamped_langevin_strong_order(x64, getkey, solver, order):
    assert solver.strong_order(None) == order
    y0 = (jnp.ones(1), jnp.zeros(1))
    slope, errors = strong_order(
        langevin(),
        solver,
        y0,
        langevin_exact,
        getkey(),
        levels=range(3, 8),
        fine=12,
        levy_area=dfx.SpaceTimeTimeLevyArea,
    )
    assert errors[-1] < errors[0]
    assert abs(slope - order) < 0.25, (type(solver).__name__, slope, errors)


def langevin_law(T):
    """Mean and covariance of z(T) from z(0) = (1, 0): e^{AT} z0 and, by Van Loan's
    block exponential, the integral of e^{As} B B^T e^{A^T s} over [0, T]."""
    A, B = langevin_matrices()
    n = A.shape[0]
    block = np.block([[-A, B @ B.T], [np.zeros((n, n)), A.T]]) * T
    E = scipy.linalg.expm(block)
    cov = E[n:, n:].T @ E[:n, n:]
    return scipy.linalg.expm(A * T) @ np.array([1.0, 0.0]), cov


@pytest.mark.parametrize("solver", [dfx.ALIGN(), dfx.ShOULD(), dfx.QUICSORT()])
def test_underdamped_langevin_law_through_solve(getkey, solver):
    # The batch as one state on the grid path with its Lévy areas: the law of (x, v)(1).
    n = 20_000
    sol = sdekit.solve(
        langevin(),
        (jnp.ones((n, 1)), jnp.zeros((n, 1))),
        np.array([0.5, 1.0]),
        key=getkey(),
        dt0=0.1,
        t0=0.0,
        solver=solver,
    )
    xs, vs = sol.ys
    assert xs.shape == vs.shape == (n, 2, 1)
    z = np.concatenate([np.asarray(xs[:, -1]), np.asarray(vs[:, -1])], axis=1)
    mean, cov = langevin_law(1.0)
    sd = np.sqrt(np.diag(cov))
    np.testing.assert_array_less(np.abs(z.mean(0) - mean), mean_tolerance(sd, n))
    var = z.var(0)
    np.testing.assert_array_less(
        np.abs(var - np.diag(cov)), [variance_tolerance(v, n) for v in np.diag(cov)]
    )
    corr = np.corrcoef(z.T)[0, 1]
    true_corr = cov[0, 1] / (sd[0] * sd[1])
    assert abs(corr - true_corr) < 4.5 * (1 - true_corr**2) / np.sqrt(n)


@pytest.mark.parametrize("solver", [dfx.SRA1(), dfx.ShOULD()])
def test_levy_area_solvers_gradients(x64, getkey, solver):
    # Reverse mode through diffrax's Lévy-area solvers on the grid path, against
    # central finite differences, for the problem's parameters and the initial state.
    key = getkey()
    n = 4
    langevin_solver = isinstance(solver, dfx.AbstractFosterLangevinSRK)

    def loss(params):
        a, b, y0 = params
        if langevin_solver:
            sde = sdekit.UnderdampedLangevinSDE(a, b, lambda x, args: jnp.sin(x) + x)
            init = (y0, jnp.zeros_like(y0))
        else:
            sde = sdekit.SDE(
                lambda t, y, args: -a * jnp.sin(y),
                lambda t, y, args: b * jnp.ones_like(y),
                additive=True,
            )
            init = y0
        sol = sdekit.solve(
            sde, init, np.array([0.5, 1.0]), key=key, dt0=0.1, t0=0.0, solver=solver
        )
        return sum(jnp.mean(y**2) for y in jax.tree_util.tree_leaves(sol.ys))

    params = (jnp.asarray(1.3), jnp.asarray(0.7), jnp.linspace(0.5, 1.5, 2 * n).reshape(n, 2))
    grads = jax.grad(loss)(params)
    flat, unravel = jax.flatten_util.ravel_pytree(params)
    gflat, _ = jax.flatten_util.ravel_pytree(grads)
    direction = jr.normal(getkey(), flat.shape)
    eps = 1e-6
    fd = (loss(unravel(flat + eps * direction)) - loss(unravel(flat - eps * direction))) / (
        2 * eps
    )
    assert float(jnp.abs(gflat).max()) > 0
    np.testing.assert_allclose(jnp.vdot(gflat, direction), fd, rtol=1e-6)


def test_every_sde_solver_is_classified():
    # diffrax's own base classes decide the calculus; ODE solvers are refused clearly.
    assert sdekit._solvers.solver_calculus(dfx.Euler()) == "ito"
    assert sdekit._solvers.solver_calculus(dfx.ItoMilstein()) == "ito"
    for solver in (dfx.Heun(), dfx.SRA1(), dfx.ALIGN(), dfx.ReversibleHeun()):
        assert sdekit._solvers.solver_calculus(solver) == "stratonovich"
    with pytest.raises(ValueError, match="not an SDE solver"):
        sdekit.solve(
            ou(), jnp.ones((2, 1)), np.array([0.0, 1.0]), key=jr.key(0), dt0=0.1,
            solver=dfx.Tsit5(),
        )  # fmt: skip


@pytest.mark.parametrize(
    "sde, y0, solver, match",
    [
        (ou(), jnp.ones((2, 1)), dfx.ALIGN(), "UnderdampedLangevinSDE"),
        (langevin(), jnp.ones((2, 1)), dfx.ALIGN(), r"pair \(x, v\)"),
        (
            sdekit.UnderdampedLangevinSDE(1.0, 1.0, lambda x, a: x[:1]),
            (jnp.ones((2, 3)), jnp.zeros((2, 3))),
            dfx.ALIGN(),
            "grad_f",
        ),
        (
            sdekit.UnderdampedLangevinSDE(jnp.ones(2), 1.0, lambda x, a: x),
            (jnp.ones((2, 3)), jnp.zeros((2, 3))),
            dfx.ALIGN(),
            "gamma",
        ),
    ],
)
def test_langevin_bad_input(sde, y0, solver, match):
    with pytest.raises(ValueError, match=match):
        sdekit.solve(
            sde, y0, np.array([0.0, 1.0]), key=jr.key(0), dt0=0.1, solver=solver
        )


class _ColouredNoise(sdekit.AbstractDrivingNoise):
    """Ornstein-Uhlenbeck (coloured) noise dξ = -λ ξ dt + dW driving dy = g ξ dt, as a
    Markov lift: a driving noise written outside the core plugs into solve(noise=)."""

    rate: float

    def lift(self, sde, y0, key, *, dt0, solver):
        del dt0, solver
        d = y0.shape[1]
        drift = lambda t, z, a: jnp.concatenate(  # noqa: E731
            [sde.drift(t, z[:d], a) + sde.diffusion(t, z[:d], a) * z[d:], -self.rate * z[d:]]
        )
        lifted = sdekit.SDE(
            drift,
            lambda t, z, a: jnp.concatenate([jnp.zeros(d), jnp.ones(d)]),
            additive=True,
        )
        # ξ(0) from its stationary law N(0, 1 / (2 λ)).
        xi0 = jr.normal(key, y0.shape) / np.sqrt(2 * self.rate)
        return lifted, jnp.concatenate([y0, xi0], axis=1)

    def observe(self, zs, y0):
        return zs[..., : y0.shape[1]]


def test_driving_noise_seam(getkey):
    # dy = ξ dt from y(0) = 0 with stationary OU ξ of rate λ: Var y(T) =
    # (λT - 1 + e^{-λT}) / λ^3 (the double integral of the covariance e^{-λ|s-u|}/(2λ)).
    n, lam, T = 20_000, 2.0, 1.0
    sde = sdekit.SDE(
        lambda t, y, a: jnp.zeros_like(y), lambda t, y, a: jnp.ones_like(y), additive=True
    )
    sol = sdekit.solve(
        sde, jnp.zeros((n, 1)), np.array([T]), key=getkey(), dt0=0.01, t0=0.0,
        noise=_ColouredNoise(lam),
    )  # fmt: skip
    assert sol.ys.shape == (n, 1, 1)
    var = (lam * T - 1 + np.exp(-lam * T)) / lam**3
    y = np.asarray(sol.ys[:, 0, 0])
    # Euler's bias on ξ's variance is about λ dt / 2 = 1%.
    assert abs(y.var() - var) < variance_tolerance(var, n) + 0.03 * var
    with pytest.raises(TypeError, match="AbstractDrivingNoise"):
        sdekit.solve(
            sde, jnp.zeros((2, 1)), np.array([T]), key=getkey(), dt0=0.1, noise="fbm"
        )


def test_adjoint_argument_is_checked(getkey):
    with pytest.raises(TypeError, match="adjoint"):
        sdekit.solve(
            ou(), jnp.ones((2, 1)), np.array([0.0, 1.0]), key=getkey(), dt0=0.1,
            adjoint="reversible",
        )  # fmt: skip
    # Any diffrax adjoint goes through: forward mode gives the reverse-mode gradient.
    def final(scale, adjoint):
        sde = sdekit.SDE(
            lambda t, y, a: -scale * y, lambda t, y, a: 0.3 * jnp.ones_like(y),
            additive=True,
        )  # fmt: skip
        sol = sdekit.solve(
            sde, jnp.ones((3, 1)), np.array([1.0]), key=jr.key(0), dt0=0.1, t0=0.0,
            adjoint=adjoint,
        )  # fmt: skip
        return jnp.sum(sol.ys)

    forward = jax.jacfwd(lambda s: final(s, dfx.ForwardMode()))(1.0)
    reverse = jax.grad(lambda s: final(s, None))(1.0)
    np.testing.assert_allclose(forward, reverse, rtol=1e-5)
