"""The seam between solve() and noise sources beyond Brownian motion."""

import abc

import diffrax as dfx
import equinox as eqx
from jaxtyping import Array, PRNGKeyArray, PyTree

from ._sde import AbstractSDE, SDE


class AbstractDrivingNoise(eqx.Module):
    r"""A noise source that drives an [`sdekit.SDE`][] in place of Brownian motion,
    through a Markov lift: the SDE driven by it is an SDE on a larger state (the
    original state and the noise's own components) driven by Brownian motion, which
    [`sdekit.solve`][] integrates like any other.

    `sdekit.solve(sde, y0, ts, ..., noise=noise)` lifts the SDE and its initial
    states with the first half of `jr.split(key)`, solves the lifted SDE with the
    second and returns [`sdekit.AbstractDrivingNoise.observe`][] of its paths. Every
    solver, Brownian path, adjoint and batching of the core applies unchanged.
    [`sdekit.noise.FractionalNoise`][] (Markov-approximate fractional Brownian motion)
    implements it; the core imports no noise source.
    """

    @abc.abstractmethod
    def lift(
        self,
        sde: SDE,
        y0: Array,
        key: PRNGKeyArray,
        *,
        dt0: float,
        solver: dfx.AbstractSolver | None,
    ) -> tuple[AbstractSDE, PyTree]:
        """The lifted SDE and its initial states for the batch of initial states `y0`
        (drawing the noise's own initial components from `key`). `dt0` and `solver`
        are those of the solve, for the noise to check (a step too large for its
        fastest component, say)."""

    @abc.abstractmethod
    def observe(self, zs: PyTree, y0: Array) -> Array:
        """The original state's part of the lifted paths `zs`, shaped like
        `(batch, n, *y0.shape[1:])`."""
