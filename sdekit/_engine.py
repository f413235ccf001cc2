"""The engines behind solve(): a batch of paths held as one state, or path by path."""

from typing import Any

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.tree_util as jtu
import numpy as np
from jaxtyping import Array, Bool, Float, PRNGKeyArray, PyTree

from ._adjoint import AbstractSDEAdjoint, Steps
from ._brownian import GridBrownianPath
from ._grid import step_grid
from ._sde import AbstractSDE
from ._solution import SDESolution
from ._solvers import levy_area_for, solver_calculus


class Plan(eqx.Module):
    """Everything the engines compile against (static under `filter_jit`)."""

    solver: dfx.AbstractSolver
    adjoint: AbstractSDEAdjoint
    brownian: str
    stepsize_controller: Any
    t0: float
    t1: float
    dt0: float
    num_steps: int
    max_steps: int | None

    def steps(self, grid: Float[Array | np.ndarray, " m"] | None) -> Steps:
        if grid is not None:
            steps = grid.shape[0] - 1
            return Steps(self.t0, self.t1, grid, None, dfx.StepTo(ts=grid), steps)
        controller = self.stepsize_controller or dfx.ConstantStepSize()
        steps = self.max_steps or 16 * self.num_steps
        return Steps(self.t0, self.t1, None, self.dt0, controller, steps)

    def brownian_path(
        self, grid, shape: tuple[int, ...], key: PRNGKeyArray, dtype
    ) -> dfx.AbstractBrownianPath:
        """The grid path on `grid` (`key` may be one key per row of a batch held as one
        state), or diffrax's virtual tree: either with the solver's Lévy area."""
        levy_area = levy_area_for(self.solver)
        if grid is not None:
            return GridBrownianPath(
                grid,
                shape,
                key,
                dtype=dtype,
                presample=self.adjoint.presample,
                levy_area=levy_area,
            )
        struct = jax.ShapeDtypeStruct(shape, dtype)
        return dfx.VirtualBrownianTree(
            self.t0,
            self.t1,
            tol=self.dt0 / 2,
            shape=struct,
            key=key,
            levy_area=levy_area,
        )


@eqx.filter_jit
def solve_batch(
    sde: AbstractSDE,
    y0: PyTree[Float[Array, "batch ..."]],
    ts: Float[Array, "batch n"],
    mask: Bool[Array, "batch n"],
    keys: PRNGKeyArray,
    grid: Float[Array | np.ndarray, " m"] | None,
    args: PyTree,
    plan: Plan,
) -> SDESolution:
    """Solve every path. With a shared step `grid` (shared save times on the grid
    path) the batch is integrated as one state: one time loop instead of `vmap` over
    per-path loops, whose batched control flow costs about half again as much per
    step (measured: docs/benchmarks.md); the noise is the same as path by path, one
    key per path. Otherwise each path is solved on its own, under `vmap`."""
    # One compiled program even when `solve` is called eagerly: op-by-op dispatch of
    # the set-up would otherwise compile dozens of small programs on the first call.
    batch = mask.shape[0]
    calculus = solver_calculus(plan.solver)
    if grid is not None:
        shape = sde.brownian_shape(jtu.tree_map(lambda y: y.shape[1:], y0))
        path = plan.brownian_path(grid, shape, keys, _dtype(y0))
        ys, stats, result = plan.adjoint.integrate(
            lambda p: sde.batched_terms(p, calculus),
            path,
            plan.solver,
            y0,
            ts[0],
            args,
            plan.steps(grid),
        )

        def per_path(x):
            return jnp.broadcast_to(x, (batch, *jnp.shape(x)))

        # diffrax stacks saves first: (n, batch, *state) -> (batch, n, *state).
        ys = jtu.tree_map(lambda y: jnp.moveaxis(y, 0, 1), ys)
        stats, result = jtu.tree_map(per_path, (stats, result))
        return SDESolution(ts=ts, ys=ys, mask=mask, stats=stats, result=result)

    def one_path(y0_i, ts_i, key_i):
        path_grid = None
        if plan.brownian == "grid":
            path_grid = step_grid(plan.t0, plan.t1, plan.num_steps, ts_i)
        shape = sde.brownian_shape(jtu.tree_map(jnp.shape, y0_i))
        path = plan.brownian_path(path_grid, shape, key_i, _dtype(y0_i))
        return plan.adjoint.integrate(
            lambda p: sde.terms(p, calculus),
            path,
            plan.solver,
            y0_i,
            ts_i,
            args,
            plan.steps(path_grid),
        )

    ys, stats, result = jax.vmap(one_path)(y0, ts, keys)
    return SDESolution(ts=ts, ys=ys, mask=mask, stats=stats, result=result)


def _dtype(y0: PyTree) -> Any:
    return jtu.tree_leaves(y0)[0].dtype
