"""How solve() integrates and differentiates: a seam with diffrax's adjoints and the
reversible adjoint as its implementations."""

import abc
from collections.abc import Callable
from typing import Any

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.tree_util as jtu
import numpy as np
from jaxtyping import Array, Float, PyTree

from ._brownian import GridBrownianPath
from ._reversible import reversible_heun_solve
from ._sde import AbstractSDE, SDE


class Steps(eqx.Module):
    """The time stepping of one solve: fixed steps on a `grid` (the grid Brownian
    path), or steps from `t0` of size `dt0` under a `controller` (the virtual tree)."""

    t0: float
    t1: float
    grid: Float[Array | np.ndarray, " m"] | None
    dt0: float | None
    controller: dfx.AbstractStepSizeController
    max_steps: int


class AbstractSDEAdjoint(eqx.Module):
    """How [`sdekit.solve`][] integrates one solve and differentiates it: the seam
    between `solve`'s engines and the adjoint. A diffrax adjoint passed to `solve` is
    wrapped in `DiffraxAdjoint`; [`sdekit.ReversibleAdjoint`][] is the other
    implementation."""

    @property
    @abc.abstractmethod
    def presample(self) -> bool:
        """Whether the grid Brownian path stores its noise (`False`: each increment is
        drawn again from the key when asked for)."""

    @abc.abstractmethod
    def default_solver(self, sde: AbstractSDE) -> dfx.AbstractSolver:
        """The solver used when `solve` is given none."""

    @abc.abstractmethod
    def check(
        self,
        sde: AbstractSDE,
        solver: dfx.AbstractSolver,
        brownian: str,
        stepsize_controller: dfx.AbstractStepSizeController | None,
    ) -> None:
        """Raise a `ValueError` when this adjoint cannot differentiate such a solve."""

    @abc.abstractmethod
    def integrate(
        self,
        make_terms: Callable[[dfx.AbstractBrownianPath], dfx.AbstractTerm],
        path: dfx.AbstractBrownianPath,
        solver: dfx.AbstractSolver,
        y0: PyTree,
        ts: Float[Array, " n"],
        args: PyTree,
        steps: Steps,
    ) -> tuple[PyTree, dict[str, Array], dfx.RESULTS]:
        """Solve `make_terms(path)` from `y0`, saving at `ts`: `(ys, stats, result)` as
        diffrax gives them (saves first: `ys` of shape `(n, *state)`)."""


class DiffraxAdjoint(AbstractSDEAdjoint):
    """One `diffrax.diffeqsolve` with a diffrax adjoint. `adjoint=None` picks the
    default: on the step grid, backpropagation through every step kept
    (`RecursiveCheckpointAdjoint(checkpoints=num_steps)`, no recomputation, what a
    hand-written scan does); on the virtual tree, diffrax's own default."""

    adjoint: dfx.AbstractAdjoint | None = None

    @property
    def presample(self) -> bool:
        return True

    def default_solver(self, sde: AbstractSDE) -> dfx.AbstractSolver:
        return sde.default_solver()

    def check(self, sde, solver, brownian, stepsize_controller) -> None:
        del sde, solver, brownian, stepsize_controller

    def integrate(self, make_terms, path, solver, y0, ts, args, steps: Steps):
        adjoint = self.adjoint
        if adjoint is None and steps.grid is not None:
            adjoint = dfx.RecursiveCheckpointAdjoint(checkpoints=steps.max_steps)
        sol = dfx.diffeqsolve(
            make_terms(path),
            solver,
            steps.t0,
            steps.t1,
            steps.dt0,
            y0,
            args=args,
            saveat=dfx.SaveAt(ts=ts),
            stepsize_controller=steps.controller,
            adjoint=adjoint or dfx.RecursiveCheckpointAdjoint(),
            max_steps=steps.max_steps,
        )
        return sol.ys, sol.stats, sol.result


class ScanAdjoint(AbstractSDEAdjoint):
    """Fixed steps on the step grid as one `jax.lax.scan` of the solver's own `step`,
    differentiated by backpropagation through the scan: what a hand-written loop
    does, for any diffrax solver, with exact gradients. Each step's Brownian
    increment (and Lévy areas) is drawn up front, vectorised, and handed to its step
    directly, with no lookup by time inside the loop. The default of
    [`sdekit.solve`][] on the grid Brownian path.

    **Arguments:**

    - `remat`: if `True` (default) each step is wrapped in `jax.checkpoint`: only the
        states are stored and the backward pass recomputes every step from its input.
        On CPUs this was faster than storing every step's intermediates at every
        problem size measured but the smallest (docs/benchmarks.md), and it needs far
        less memory. `False` stores them (what plain backpropagation through a scan
        does).
    """

    remat: bool = eqx.field(static=True, default=True)

    @property
    def presample(self) -> bool:
        # The increments are drawn into the scan's inputs, not into a stored path.
        return False

    def default_solver(self, sde: AbstractSDE) -> dfx.AbstractSolver:
        return sde.default_solver()

    def check(self, sde, solver, brownian, stepsize_controller) -> None:
        del sde, solver
        if brownian != "grid" or stepsize_controller is not None:
            raise ValueError(
                "`ScanAdjoint` needs fixed steps on the grid Brownian path."
            )

    def integrate(self, make_terms, path, solver, y0, ts, args, steps: Steps):
        grid = steps.grid
        assert grid is not None and isinstance(path, GridBrownianPath)
        count = grid.shape[0] - 1
        noise = path.increments()

        def terms_of(increment):
            # By keyword: type checkers count diffrax's abstract `levy_area` as the
            # first field, where at run time it is the second.
            return make_terms(_StepNoise(noise=increment, levy_area=path.levy_area))

        first = jtu.tree_map(lambda x: x[0], noise)
        state = solver.init(terms_of(first), grid[0], grid[1], y0, args)

        def step(carry, inputs):
            y, state = carry
            t0, t1, increment = inputs
            y1, _, _, state1, _ = solver.step(
                terms_of(increment), t0, t1, y, args, state, False
            )
            return (y1, state1), y1

        if self.remat:
            step = jax.checkpoint(step)
        _, ys = jax.lax.scan(step, (y0, state), (grid[:-1], grid[1:], noise))
        # Every step's state is an output (the scan stores them for the backward pass
        # anyway); the saves are gathered from it, one index per save time.
        save_index = jnp.searchsorted(grid, ts, side="left")
        ys = jtu.tree_map(
            lambda first, rest: jnp.concatenate([first[None], rest])[save_index], y0, ys
        )
        return ys, _fixed_step_stats(count), dfx.RESULTS.successful


class _StepNoise(dfx.AbstractBrownianPath):
    # The Brownian motion over one step, already drawn: whatever interval the solver
    # asks for (it asks for its step), this increment.
    noise: dfx.AbstractBrownianIncrement
    levy_area: Any = eqx.field(static=True)

    @property
    def t0(self):
        return None

    @property
    def t1(self):
        return None

    def evaluate(self, t0, t1=None, left=True, use_levy=False):
        del t0, t1, left
        return self.noise if use_levy else self.noise.W


class ReversibleAdjoint(AbstractSDEAdjoint):
    r"""Backpropagate through the reversible Heun method in $O(1)$ memory.

    The reversible Heun method ([Kidger et al. 2021, *Efficient and Accurate
    Gradients for Neural SDEs*](https://arxiv.org/abs/2105.13493), Algorithm 1) keeps
    an auxiliary state $\hat y$ and is *algebraically* reversible: from
    $(y_{n+1}, \hat y_{n+1})$ and the Brownian increment the previous state is
    recovered exactly,

    $$\hat y_n = 2 y_{n+1} - \hat y_{n+1} - f(\hat y_{n+1})\Delta t - g(\hat y_{n+1})\Delta W,$$

    $$y_n = y_{n+1} - \tfrac12\big(f(\hat y_n) + f(\hat y_{n+1})\big)\Delta t
        - \tfrac12\big(g(\hat y_n) + g(\hat y_{n+1})\big)\Delta W.$$

    So the backward pass rebuilds each step's input from its output instead of storing
    it, and differentiates that one step. Memory is independent of the number of steps
    (only the saved outputs are stored), the cost is about one extra vector-field
    evaluation per step, and the gradients are those of the discretised forward
    solve up to floating-point round-off (diffrax has no such adjoint: diffrax#300).

    Use it with [`sdekit.solve`][]: `solve(..., adjoint=sdekit.ReversibleAdjoint())`.
    It needs fixed steps on the grid Brownian path (whose increments it draws again
    from the key, backwards) and an [`sdekit.SDE`][], and uses diffrax's
    `ReversibleHeun` solver, which converges to the Stratonovich solution; an Itô SDE
    is converted automatically (see [`sdekit.SDE.ito_correction`][]).
    """

    @property
    def presample(self) -> bool:
        return False

    def default_solver(self, sde: AbstractSDE) -> dfx.AbstractSolver:
        return dfx.ReversibleHeun()

    def check(self, sde, solver, brownian, stepsize_controller) -> None:
        if not isinstance(solver, dfx.ReversibleHeun):
            raise ValueError(
                "`ReversibleAdjoint` runs the reversible Heun method; pass "
                "`solver=diffrax.ReversibleHeun()` or leave `solver` unset."
            )
        if brownian != "grid" or stepsize_controller is not None:
            raise ValueError(
                "`ReversibleAdjoint` needs fixed steps on the grid Brownian path."
            )
        if not isinstance(sde, SDE):
            raise ValueError(
                "`ReversibleAdjoint` needs an sdekit.SDE (an array state); use the "
                "default adjoint for other problems."
            )

    def integrate(self, make_terms, path, solver, y0, ts, args, steps: Steps):
        del solver  # checked: ReversibleHeun
        assert steps.grid is not None
        save_index = jnp.searchsorted(steps.grid, ts, side="left")
        ys = reversible_heun_solve(make_terms(path), steps.grid, y0, args, save_index)
        return ys, _fixed_step_stats(steps.max_steps), dfx.RESULTS.successful


def _fixed_step_stats(steps: int) -> dict[str, Array]:
    n = jnp.asarray(steps)
    return dict(
        num_steps=n,
        num_accepted_steps=n,
        num_rejected_steps=jnp.asarray(0),
        max_steps=n,
    )


def as_sde_adjoint(adjoint: Any, brownian: str) -> AbstractSDEAdjoint:
    """`solve`'s `adjoint` argument as the seam's object: `None` is the scan of
    remat-ed steps on the grid path, diffrax's default on the virtual tree."""
    if adjoint is None and brownian == "grid":
        return ScanAdjoint()
    if adjoint is None or isinstance(adjoint, dfx.AbstractAdjoint):
        return DiffraxAdjoint(adjoint)
    if isinstance(adjoint, AbstractSDEAdjoint):
        return adjoint
    raise TypeError(
        "`adjoint` must be None, a diffrax adjoint or sdekit.ReversibleAdjoint(), got "
        f"{type(adjoint).__name__}."
    )
