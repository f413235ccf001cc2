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


def fine_path(key, num_paths: int, t1: float, levels: int, shape=()):
    """`num_paths` grid Brownian paths on a dyadic grid of 2**levels steps on [0, t1]."""
    grid = jnp.linspace(0.0, t1, 2**levels + 1)
    keys = jr.split(key, num_paths)
    return grid, jax.vmap(lambda k: sdekit.GridBrownianPath(grid, shape, k))(keys)


def strong_order(
    sde, solver, y0, exact, key, *, t1=1.0, levels=range(4, 9), fine=13, num_paths=400
):
    """Log-log slope of the mean absolute error at t1 against the step size, every step
    size using the same Brownian paths (coarse grids are subsets of the fine grid).

    `exact(path) -> y(t1)` gives the reference solution on one path."""
    grid, paths = fine_path(
        key, num_paths, t1, fine, shape=sde.brownian_shape(y0.shape)
    )
    calculus = sdekit._solve.solver_calculus(solver)
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
            return sol.ys[-1]

        approx = jax.vmap(one)(paths)
        truth = jax.vmap(exact)(paths)
        errors.append(float(jnp.mean(jnp.abs(approx - truth))))
        steps.append(t1 / 2**level)
    slope = np.polyfit(np.log(steps), np.log(errors), 1)[0]
    return slope, errors
