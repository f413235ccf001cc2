"""Shared reference solutions and tolerances for the tests."""

import math

import diffrax as dfx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np

import sdekit


def mean_tolerance(std: float, n: int, z: float = 4.5) -> float:
    """Half-width of a z-sigma band for a Monte Carlo mean of `n` samples: a correct
    implementation fails with probability about 7e-6 (z = 4.5) per check."""
    return z * std / math.sqrt(n)


def variance_tolerance(
    var: float, n: int, kurtosis: float = 3.0, z: float = 4.5
) -> float:
    """z-sigma band for a sample variance: sd = var * sqrt((kurtosis - 1) / n)."""
    return z * var * math.sqrt((kurtosis - 1) / n)


def fine_path(
    key, num_paths: int, t1: float, levels: int, shape=(), levy_area=dfx.BrownianIncrement
):
    """`num_paths` grid Brownian paths on a dyadic grid of 2**levels steps on [0, t1]."""
    grid = jnp.linspace(0.0, t1, 2**levels + 1)
    keys = jr.split(key, num_paths)
    return grid, jax.vmap(
        lambda k: sdekit.GridBrownianPath(grid, shape, k, levy_area=levy_area)
    )(keys)


def strong_order(
    sde,
    solver,
    y0,
    exact,
    key,
    *,
    t1=1.0,
    levels=range(4, 9),
    fine=13,
    num_paths=400,
    levy_area=None,
):
    """Log-log slope of the mean absolute error at t1 against the step size, every step
    size using the same Brownian paths (coarse grids are subsets of the fine grid, and
    the path gives the exact increments and Lévy areas over their steps).

    `exact(path) -> y(t1)` gives the reference solution on one path; the state `y0`
    may be a tuple of arrays (the underdamped Langevin state). `levy_area`: what the
    fine path carries (default: what the solver needs)."""
    levy_area = levy_area or sdekit._solvers.levy_area_for(solver)
    y_shape = jax.tree_util.tree_map(jnp.shape, y0)
    grid, paths = fine_path(
        key, num_paths, t1, fine, shape=sde.brownian_shape(y_shape), levy_area=levy_area
    )
    calculus = sdekit._solvers.solver_calculus(solver)
    errors, steps = [], []
    for level in levels:
        coarse = grid[:: 2 ** (fine - level)]

        def one(path):
            sol = dfx.diffeqsolve(
                sde.terms(path, calculus),
                solver,
                0.0,
                t1,
                None,
                y0,
                stepsize_controller=dfx.StepTo(ts=coarse),
                max_steps=2**level,
                saveat=dfx.SaveAt(t1=True),
            )
            return _flat(jax.tree_util.tree_map(lambda y: y[-1], sol.ys))

        approx = jax.vmap(one)(paths)
        truth = jax.vmap(lambda p: _flat(exact(p)))(paths)
        errors.append(float(jnp.mean(jnp.abs(approx - truth))))
        steps.append(t1 / 2**level)
    slope = np.polyfit(np.log(steps), np.log(errors), 1)[0]
    return slope, errors


def _flat(y):
    return jnp.concatenate([jnp.ravel(leaf) for leaf in jax.tree_util.tree_leaves(y)])


def linear_sde_exact(A, B, z0, path):
    r"""$z(t_1)$ of the linear SDE $\mathrm{d}z = A z\,\mathrm{d}t + B\,\mathrm{d}W$
    on one fine grid path that carries space-time-time Lévy areas, to $O(h^3)$ per fine
    step $h$ (errors far below any coarse solver's at the fine levels used).

    Over a step $[s, u]$ with midpoint $c$, $\int_s^u e^{A(u-r)} B\,\mathrm{d}W_r$ is
    expanded as $e^{Ah/2} \sum_k (-A)^k B / k! \int (r-c)^k\,\mathrm{d}W_r$, whose
    first three moments are exact functions of the step's $(W, H, K)$:
    $\int \mathrm{d}W = W$, $\int (r-c)\,\mathrm{d}W = -hH$ and
    $\int (r-c)^2\,\mathrm{d}W = h^2 W / 12 + 2h^2 K$ (integration by parts and the
    definitions of $H$ and $K$)."""
    h = path.ts[1] - path.ts[0]
    w = jnp.diff(path.values, axis=0)
    hh, kk = path.areas
    full = jax.scipy.linalg.expm(A * h)
    half = jax.scipy.linalg.expm(A * h / 2)
    b1 = half @ B
    b2 = half @ A @ B
    b3 = half @ A @ A @ B / 2

    def step(z, inc):
        w_n, h_n, k_n = inc
        noise = b1 @ w_n + b2 @ (h * h_n) + b3 @ (h**2 * w_n / 12 + 2 * h**2 * k_n)
        return full @ z + noise, None

    z, _ = jax.lax.scan(step, z0, (w, hh, kk))
    return z
