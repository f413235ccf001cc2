"""How solve() integrates and differentiates: a seam with diffrax's adjoints and the
reversible adjoint as its implementations."""

import abc
from collections.abc import Callable
from typing import Any

import diffrax as dfx
import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Float, PyTree

from ._reversible import reversible_heun_solve
from ._sde import AbstractSDE, SDE


class Steps(eqx.Module):
    """The time stepping of one solve: fixed steps on a `grid` (the grid Brownian
    path), or steps from `t0` of size `dt0` under a `controller` (the virtual tree)."""

    t0: float
    t1: float
    grid: Float[Array, " m"] | None
    dt0: float | None
    controller: dfx.AbstractStepSizeController
    max_steps: int


class AbstractSDEAdjoint(eqx.Module):
    """How [`sdekit.solve`][] integrates one solve and differentiates it: the seam
    between `solve`'s engines and the adjoint. A diffrax adjoint passed to `solve` is
    wrapped in `DiffraxAdjoint`; [`sdekit.ReversibleAdjoint`][] is the other
    implementation."""

    # Whether the grid Brownian path stores its noise (False: each increment is drawn
    # again from the key when asked for).
    presample: eqx.AbstractVar[bool]

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
    """`solve`'s `adjoint` argument as the seam's object."""
    del brownian
    if adjoint is None or isinstance(adjoint, dfx.AbstractAdjoint):
        return DiffraxAdjoint(adjoint)
    if isinstance(adjoint, AbstractSDEAdjoint):
        return adjoint
    raise TypeError(
        "`adjoint` must be None, a diffrax adjoint or sdekit.ReversibleAdjoint(), got "
        f"{type(adjoint).__name__}."
    )
