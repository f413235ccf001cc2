"""Pathwise KL between a posterior and a prior SDE sharing their diffusion (Girsanov)."""

import math
from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax.numpy as jnp
import lineax as lx
from jaxtyping import Array, Float, PyTree, Scalar

from ._custom_types import RealScalarLike
from ._sde import SDE
from ._tensor_operator import TensorOperator


def girsanov_integrand(
    posterior: SDE,
    prior_drift: Callable[..., Any],
    t: RealScalarLike,
    y: Float[Array, " d"],
    args: PyTree = None,
) -> Scalar:
    r"""$\tfrac12 \lVert u \rVert^2$ where $g(t, y)\, u = f_q(t, y) - f_p(t, y)$.

    By Girsanov's theorem, for a posterior $\mathrm{d}y = f_q\,\mathrm{d}t +
    g\,\mathrm{d}W$ and a prior $\mathrm{d}y = f_p\,\mathrm{d}t + g\,\mathrm{d}W$
    with the same diffusion, the KL divergence between their path measures is
    $\mathrm{KL}(Q \Vert P) = \mathbb{E}_Q \int_0^T \tfrac12 \lVert u \rVert^2
    \mathrm{d}t$ (Li et al. 2020, *Scalable Gradients for SDEs*, eq. 9). The drift
    difference is the same in Itô and Stratonovich form, so the calculus does not
    matter here.

    $u$ solves $g u = f_q - f_p$ with the diffusion as a lineax operator
    ([`sdekit.SDE.diffusion_operator`][]), by lineax's automatic solver: elementwise
    division for diagonal noise, least squares otherwise (so $g$ need not be square;
    for scalar noise that is the projection onto the single column). Where $g$ cannot
    produce the drift difference the KL is infinite; least squares reports the finite
    part, so keep the drift difference in the range of $g$ (true whenever $g$ has full
    row rank).
    """
    diff = posterior.drift(t, y, args) - prior_drift(t, y, args)
    g = posterior.diffusion_operator(t, y, args)
    u = lx.linear_solve(g, diff, solver=lx.AutoLinearSolver(well_posed=None)).value
    return 0.5 * jnp.sum(u**2)


class _KLDrift(eqx.Module):
    posterior: SDE
    prior_drift: Callable[..., Any]

    def __call__(self, t, z, args):
        y = z[:-1]
        dkl = girsanov_integrand(self.posterior, self.prior_drift, t, y, args)
        return jnp.concatenate([self.posterior.drift(t, y, args), dkl[None]])


class _KLDiffusion(eqx.Module):
    posterior: SDE

    def __call__(self, t, z, args):
        g = self.posterior.diffusion_operator(t, z[:-1], args)
        # The augmented SDE keeps the posterior's noise structure, so its Brownian
        # motion holds the posterior's as its leading components (for diagonal noise
        # one more, the KL coordinate's own, which is unused). The KL coordinate gets
        # no noise: a zero row.
        shape = self.posterior.brownian_shape(z.shape)
        if lx.is_diagonal(g) and shape == z.shape:
            diagonal = lx.diagonal(g)
            return lx.DiagonalLinearOperator(
                jnp.concatenate([diagonal, jnp.zeros((1,), diagonal.dtype)])
            )
        size = math.prod(g.in_structure().shape)
        columns = jnp.zeros((z.shape[0], math.prod(shape)), z.dtype)
        columns = columns.at[:-1, :size].set(g.as_matrix())
        return TensorOperator(columns.reshape(z.shape[0], *shape), 1)


def with_pathwise_kl(posterior: SDE, prior_drift: Callable[..., Any]) -> SDE:
    r"""The posterior SDE augmented with its running KL to a prior.

    The returned SDE has state $(y, k)$ of length $d + 1$: $y$ follows the posterior
    and $\mathrm{d}k = \tfrac12 \lVert u \rVert^2 \mathrm{d}t$ (see
    [`sdekit.girsanov_integrand`][]), so that solving from $k(t_0) = 0$ gives, at
    each save time, the pathwise KL accumulated so far; its mean over paths
    estimates $\mathrm{KL}(Q \Vert P)$ on $[t_0, t]$. This is what torchsde's
    `logqp=True` computes. Use [`sdekit.split_kl`][] on the solution.

    **Arguments:**

    - `posterior`: the posterior [`sdekit.SDE`][]; its state must be 1-D.
    - `prior_drift`: callable `(t, y, args) -> f_p`; the prior shares the posterior's
        diffusion.

    **Returns:** an [`sdekit.SDE`][] on the augmented state.
    """
    if not isinstance(posterior, SDE):
        raise TypeError("`posterior` must be an sdekit.SDE.")
    if not callable(prior_drift):
        raise TypeError("`prior_drift` must be a callable (t, y, args).")
    return SDE(
        _KLDrift(posterior, prior_drift),
        _KLDiffusion(posterior),
        noise_structure=posterior.noise_structure,
        noise_dim=posterior.noise_dim,
        calculus=posterior.calculus,
        additive=posterior.additive,
    )


def split_kl(ys: Float[Array, "... d_plus_1"]) -> tuple[Array, Array]:
    """Split states of [`sdekit.with_pathwise_kl`][] into `(y, kl)`."""
    return ys[..., :-1], ys[..., -1]
