"""The underdamped Langevin SDE, on diffrax's Langevin terms, as a problem for solve()."""

from collections.abc import Callable
from typing import Any

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float, PyTree

from ._custom_types import Calculus, RealScalarLike
from ._sde import AbstractSDE


class UnderdampedLangevinSDE(AbstractSDE):
    r"""The underdamped Langevin diffusion

    $$\mathrm{d}x = v\,\mathrm{d}t, \qquad
    \mathrm{d}v = -\gamma\, v\,\mathrm{d}t - u\,\nabla f(x)\,\mathrm{d}t
    + \sqrt{2\gamma u}\,\mathrm{d}W,$$

    for one path with position $x$ and velocity $v$ of the same shape, friction
    $\gamma$ and inverse mass (or temperature) $u$: diffrax's
    `UnderdampedLangevinDriftTerm` and `UnderdampedLangevinDiffusionTerm`, so that
    [`sdekit.solve`][] can integrate it with diffrax's Langevin solvers `ALIGN`
    (strong order 2), `ShOULD` and `QUICSORT` (order 3) on its fast grid path, as
    well as with the general SDE solvers. For the potential $U$ at temperature $T$,
    $\mathrm{d}v = (-\nabla U - \gamma v)\,\mathrm{d}t + \sqrt{2\gamma T}\,\mathrm{d}W$,
    take `u = T` and `grad_f = grad U / T`.

    The state of a path is the tuple `(x, v)`: `solve` takes `y0 = (x0, v0)` with
    each of shape `(batch, *x_shape)` and returns `ys = (xs, vs)`, each
    `(batch, n, *x_shape)`. One Brownian motion drives each velocity component.
    The noise is additive, so Itô and Stratonovich solutions coincide.

    **Arguments:**

    - `gamma`: the friction $\gamma > 0$: a scalar or an array broadcastable to $x$.
    - `u`: $u > 0$: a scalar or an array broadcastable to $x$.
    - `grad_f`: callable `(x, args) -> grad f(x)`, shaped like `x` (diffrax's
        signature: no time argument). An Equinox module keeps its parameters
        trainable.
    """

    gamma: Float[ArrayLike, "..."]
    u: Float[ArrayLike, "..."]
    grad_f: Callable[..., Any]

    def __check_init__(self):
        if not callable(self.grad_f):
            raise TypeError("`grad_f` must be a callable (x, args) -> grad f(x).")

    @property
    def additive(self) -> bool:
        return True

    def brownian_shape(self, y_shape: Any) -> tuple[int, ...]:
        """The shape of $x$: one Brownian motion per velocity component."""
        x_shape, _ = y_shape
        return tuple(x_shape)

    def terms(
        self, brownian_path: dfx.AbstractBrownianPath, calculus: Calculus | None = None
    ) -> dfx.MultiTerm:
        """diffrax's Langevin drift and diffusion terms for one path (the calculus
        does not matter: the noise is additive)."""
        del calculus
        return dfx.MultiTerm(
            dfx.UnderdampedLangevinDriftTerm(self.gamma, self.u, self.grad_f),
            dfx.UnderdampedLangevinDiffusionTerm(self.gamma, self.u, brownian_path),
        )

    def batched_terms(
        self, brownian_path: dfx.AbstractBrownianPath, calculus: Calculus | None = None
    ) -> dfx.MultiTerm:
        """The same terms for a batch held as one state `(x, v)`, each
        `(batch, *x_shape)`: `grad_f` mapped over the paths; $\\gamma$ and $u$ are
        broadcast against the batch by diffrax's terms."""
        del calculus
        grad_f = _BatchedGradient(self.grad_f)
        return dfx.MultiTerm(
            dfx.UnderdampedLangevinDriftTerm(self.gamma, self.u, grad_f),
            dfx.UnderdampedLangevinDiffusionTerm(self.gamma, self.u, brownian_path),
        )

    def check_shapes(self, t0: RealScalarLike, y: Any, args: PyTree) -> None:
        """`y` must be `(x, v)` with arrays of one shape, `grad_f(x, args)` shaped like
        `x`, and `gamma`, `u` broadcastable to it."""
        del t0
        if not (isinstance(y, tuple) and len(y) == 2):
            raise ValueError(
                "An UnderdampedLangevinSDE's state is the pair (x, v): pass "
                "y0=(x0, v0), each of shape (batch, *x_shape)."
            )
        x, v = y
        if getattr(x, "shape", None) != getattr(v, "shape", None):
            raise ValueError(
                f"Position and velocity must have the same shape, got x of shape "
                f"{getattr(x, 'shape', None)} and v of shape {getattr(v, 'shape', None)}."
            )
        grad = jax.eval_shape(self.grad_f, x, args)
        if getattr(grad, "shape", None) != x.shape:
            raise ValueError(
                f"`grad_f(x, args)` must return an array shaped like x {x.shape}, got "
                f"{getattr(grad, 'shape', type(grad))}."
            )
        for name in ("gamma", "u"):
            shape = jnp.shape(getattr(self, name))
            try:
                broadcast = jnp.broadcast_shapes(shape, x.shape)
            except ValueError:
                broadcast = None
            if broadcast != x.shape:
                raise ValueError(
                    f"`{name}` of shape {shape} does not broadcast to the position's "
                    f"shape {x.shape}; pass a scalar or an array shaped like x."
                )

    def default_solver(self) -> dfx.AbstractSolver:
        """`diffrax.ALIGN()`: strong order 2, one gradient of $f$ per step."""
        return dfx.ALIGN()


class _BatchedGradient(eqx.Module):
    # A module, not a closure, so that grad_f's parameters stay leaves for JAX.
    grad_f: Callable[..., Any]

    def __call__(self, x: Array, args: PyTree) -> Array:
        return jax.vmap(self.grad_f, in_axes=(0, None))(x, args)
