"""solve(): a batch of SDE paths over diffrax, one key and one set of save times each.

The checks live in `_checks.py`, what is known of diffrax's solvers in `_solvers.py`,
the engines in `_engine.py`, the adjoints in `_adjoint.py`; this module ties them.
"""

from collections.abc import Sequence
from typing import Literal

import diffrax as dfx
import equinox as eqx
import jax.random as jr
import jax.tree_util as jtu
from jaxtyping import ArrayLike, Float, PRNGKeyArray, PyTree

from ._adjoint import AbstractSDEAdjoint, as_sde_adjoint
from ._checks import (
    batched_initial_state,
    per_path_keys,
    save_times,
    shares_times,
)
from ._driving_noise import AbstractDrivingNoise
from ._engine import Plan, solve_batch
from ._grid import num_uniform_steps, step_grid
from ._sde import AbstractSDE
from ._solution import SDESolution
from ._solvers import batches_as_one_state, check_solver


def solve(
    sde: AbstractSDE,
    y0: Float[ArrayLike, "batch *state"],
    ts: Float[ArrayLike, "n"] | Float[ArrayLike, "batch n"] | Sequence[ArrayLike],
    *,
    key: PRNGKeyArray,
    dt0: float,
    t0: float | None = None,
    t1: float | None = None,
    solver: dfx.AbstractSolver | None = None,
    adjoint: dfx.AbstractAdjoint | AbstractSDEAdjoint | None = None,
    brownian: Literal["grid", "virtual"] = "grid",
    stepsize_controller: dfx.AbstractStepSizeController | None = None,
    args: PyTree = None,
    max_steps: int | None = None,
    noise: AbstractDrivingNoise | None = None,
) -> SDESolution:
    r"""Solve a batch of SDE paths, each with its own Brownian motion and save times.

    By default every path is integrated with fixed steps of size at most `dt0` on a
    grid that also contains its save times, over a [`sdekit.GridBrownianPath`][]
    sampled up front, and differentiated by backpropagating through diffrax (all
    steps kept, no recomputation). This is the fast path: about as fast as a
    hand-written `jax.lax.scan` (see the benchmarks page). The loop over paths is a
    `vmap` inside, so `solve` itself can be `jit`-ed, `vmap`-ed and differentiated.

    **Arguments:**

    - `sde`: the [`sdekit.SDE`][] (or [`sdekit.UnderdampedLangevinSDE`][]).
    - `y0`: initial states, shape `(batch, *state)`; for an underdamped Langevin
        SDE the pair `(x0, v0)`, each `(batch, *x_shape)`.
    - `ts`: save times: shared `(n,)`, per path `(batch, n)`, or a list of `batch`
        1-D arrays of different lengths (padded; see `SDESolution.mask`). Each path's
        times must be strictly increasing and lie in `[t0, t1]`.
    - `key`: one PRNG key (split per path) or `batch` keys.
    - `dt0`: the step size (the largest step on the grid), `> 0`.
    - `t0`, `t1`: the interval; default the first and last save time (over all paths).
        Must be Python numbers under `jit` if `ts` is traced.
    - `solver`: a diffrax SDE solver; default `Euler()` (Euler-Maruyama) for an Itô
        SDE, `Heun()` for a Stratonovich one, `ALIGN()` for an underdamped Langevin
        SDE. A solver of the other calculus is fine: the drift is converted (see
        [`sdekit.SDE.drift_in`][]). Solvers that need Lévy areas (`SEA`, `SRA1`,
        `ShARK`, `GeneralShARK`, `SPaRK`, `SlowRK`, `ALIGN`, `ShOULD`, `QUICSORT`) get
        them from the Brownian path, which generates the solver's
        `minimal_levy_area`. An ODE solver (`Tsit5`, ...) is refused.
    - `adjoint`: default `diffrax.RecursiveCheckpointAdjoint` keeping every step;
        [`sdekit.ReversibleAdjoint`][] for $O(1)$ memory in the number of steps.
    - `brownian`: `"grid"` (default) or `"virtual"` (diffrax's
        `VirtualBrownianTree` with tolerance `dt0 / 2`, for adaptive steps).
    - `stepsize_controller`: only with `brownian="virtual"`; default constant steps.
    - `args`: passed to drift and diffusion.
    - `max_steps`: only with `brownian="virtual"` (default 16 * the uniform count).
    - `noise`: what drives the SDE: `None` (default) for Brownian motion, or an
        [`sdekit.AbstractDrivingNoise`][] such as [`sdekit.noise.FractionalNoise`][]
        (Markov-approximate fractional Brownian motion in every noise channel; `y0`
        then has shape `(batch, d)`). The SDE is lifted to a Markov SDE driven by
        Brownian motion, solved, and its original state returned.

    **Returns:** an [`sdekit.SDESolution`][].
    """
    if noise is not None:
        return _solve_driven(
            noise, sde, y0, ts, key=key, dt0=dt0, solver=solver, t0=t0, t1=t1,
            adjoint=adjoint, brownian=brownian, stepsize_controller=stepsize_controller,
            args=args, max_steps=max_steps,
        )  # fmt: skip
    if not isinstance(sde, AbstractSDE):
        raise TypeError(
            "`sde` must be an sdekit.SDE or sdekit.UnderdampedLangevinSDE, got "
            f"{type(sde).__name__}."
        )
    if not isinstance(dt0, (int, float)) or not dt0 > 0:
        raise ValueError(f"`dt0` must be a positive number, got {dt0!r}.")
    if brownian not in ("grid", "virtual"):
        raise ValueError(f"`brownian` must be 'grid' or 'virtual', got {brownian!r}.")
    if brownian == "grid" and stepsize_controller is not None:
        raise ValueError(
            "The grid Brownian path needs fixed steps on its grid; for adaptive steps "
            "use `brownian='virtual'`."
        )
    y0, batch = batched_initial_state(y0)
    dtype = jtu.tree_leaves(y0)[0].dtype
    shared = shares_times(ts)
    ts, mask, ts_host, t0, t1 = save_times(ts, batch, t0, t1, dtype)
    sde.check_shapes(t0, jtu.tree_map(lambda leaf: leaf[0], y0), args)
    sde_adjoint = as_sde_adjoint(adjoint, brownian)
    solver = solver or sde_adjoint.default_solver(sde)
    check_solver(solver, sde)
    sde_adjoint.check(sde, solver, brownian, stepsize_controller)
    num_steps = num_uniform_steps(float(t0), float(t1), float(dt0))
    keys = per_path_keys(key, batch)
    grid = None
    if brownian == "grid" and shared and batches_as_one_state(solver):
        # One grid for the batch held as one state; built on the host when the times
        # are concrete: a constant, no run-time merge.
        grid = step_grid(t0, t1, num_steps, ts_host[0] if ts_host is not None else ts[0])
    plan = Plan(
        solver=solver,
        adjoint=sde_adjoint,
        brownian=brownian,
        stepsize_controller=stepsize_controller,
        t0=float(t0),
        t1=float(t1),
        dt0=float(dt0),
        num_steps=num_steps,
        max_steps=max_steps,
    )
    return solve_batch(sde, y0, ts, mask, keys, grid, args, plan)


def _solve_driven(noise, sde, y0, ts, *, key, dt0, solver, **kwargs) -> SDESolution:
    # Another noise source: solve its Markov lift, return the original state.
    if not isinstance(noise, AbstractDrivingNoise):
        raise TypeError(
            "`noise` must be None (Brownian motion) or an sdekit.AbstractDrivingNoise "
            f"such as sdekit.noise.FractionalNoise, got {type(noise).__name__}."
        )
    lift_key, path_key = jr.split(key)
    lifted, z0 = noise.lift(sde, y0, lift_key, dt0=dt0, solver=solver)
    sol = solve(lifted, z0, ts, key=path_key, dt0=dt0, solver=solver, **kwargs)
    return eqx.tree_at(lambda s: s.ys, sol, noise.observe(sol.ys, y0))
