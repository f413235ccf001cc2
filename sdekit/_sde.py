"""The SDE: drift, diffusion (a lineax operator), noise structure and calculus; and the
abstract problem that [`sdekit.solve`][] integrates."""

import abc
import math
import warnings
from collections.abc import Callable
from typing import Any

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
import lineax as lx
from jaxtyping import PyTree

from ._custom_types import Calculus, NoiseStructure, RealScalarLike, State
from ._tensor_operator import TensorOperator


_STRUCTURES = ("diagonal", "scalar", "general")
_CALCULI = ("ito", "stratonovich")
# What `diffusion` returns for each structure, for error messages.
_RETURNS = {
    "diagonal": "an array shaped like the state",
    "scalar": "an array shaped like the state",
    "general": "a (*state, noise_dim) array or a lineax operator",
}


class AbstractSDE(eqx.Module):
    """What [`sdekit.solve`][] needs of a stochastic differential equation: diffrax
    terms for one path and for a batch of paths held as one state, the shape of the
    Brownian motion, shape checks and a default solver. [`sdekit.SDE`][] (drift and
    diffusion) and [`sdekit.UnderdampedLangevinSDE`][] implement it; a problem with
    other diffrax terms plugs into `solve`, its engines and its Brownian paths by
    implementing these methods.

    The state of one path is an array, or a tuple of arrays of one shape (the
    underdamped Langevin state $(x, v)$); `solve` adds a leading batch axis to each.
    """

    # Whether the diffusion is independent of the state (the solvers that are only
    # correct for additive noise, such as diffrax.SEA, SRA1 and ShARK, check it).
    additive: eqx.AbstractVar[bool]

    @abc.abstractmethod
    def brownian_shape(self, y_shape: Any) -> tuple[int, ...]:
        """The shape of the Brownian motion driving one path whose state has shape
        `y_shape` (for a tuple state, the tuple of its arrays' shapes)."""

    @abc.abstractmethod
    def terms(
        self, brownian_path: dfx.AbstractBrownianPath, calculus: Calculus | None = None
    ) -> dfx.AbstractTerm:
        """diffrax terms for one path, driven by `brownian_path`, for a solver of the
        given calculus (default: the problem's own)."""

    @abc.abstractmethod
    def batched_terms(
        self, brownian_path: dfx.AbstractBrownianPath, calculus: Calculus | None = None
    ) -> dfx.AbstractTerm:
        """diffrax terms for a batch of paths held as one state (each array with a
        leading batch axis), driven by `brownian_path` of shape
        `(batch, *brownian_shape)` whose rows are the paths' own Brownian motions."""

    @abc.abstractmethod
    def check_shapes(self, t0: RealScalarLike, y: Any, args: PyTree) -> None:
        """Raise a `ValueError` (at trace time) when the problem's functions do not
        return what one path's state `y` needs."""

    @abc.abstractmethod
    def default_solver(self) -> dfx.AbstractSolver:
        """The solver [`sdekit.solve`][] uses when none is given."""


class SDE(AbstractSDE):
    r"""A stochastic differential equation

    $$\mathrm{d}y(t) = f(t, y(t))\,\mathrm{d}t + g(t, y(t))\,\mathrm{d}W(t)$$

    for one path $y(t) \in \mathbb{R}^d$. Batching over paths is done by
    [`sdekit.solve`][], so `drift` and `diffusion` see a single state.

    The noise structure says what `diffusion` returns and how many Brownian motions
    drive the system:

    - `"diagonal"`: an array shaped like `y`; one independent Brownian motion per
      component, $g\,\mathrm{d}W$ taken elementwise.
    - `"scalar"`: an array shaped like `y`; a single Brownian motion shared by all
      components.
    - `"general"`: a `(*y.shape, noise_dim)` array (a `(d, noise_dim)` matrix) or any
      [`lineax.AbstractLinearOperator`](https://docs.kidger.site/lineax/) mapping
      $\mathbb{R}^m \to \mathbb{R}^d$; `noise_dim` Brownian motions.

    Under every structure `diffusion` may also return a lineax operator from the
    Brownian motion's shape to the state's. Everything downstream (the solvers, the
    Itô-Stratonovich conversion, the pathwise KL, fractional noise) sees the
    diffusion only as that operator, [`sdekit.SDE.diffusion_operator`][]: the
    structure is read in that one place and in [`sdekit.SDE.brownian_shape`][].

    `additive=True` declares that `diffusion` does not depend on `y`, so that Itô
    and Stratonovich coincide and solvers reach their additive-noise order
    (Euler-Maruyama: strong order 1).

    **Arguments:**

    - `drift`: callable `(t, y, args) -> dy/dt`, shaped like `y`. Any Equinox
        module (e.g. an `eqx.nn.MLP` wrapped to take `t`) works.
    - `diffusion`: callable `(t, y, args) -> g`, see above.
    - `noise_structure`: `"diagonal"` (default), `"scalar"` or `"general"`. (Until
        0.1 this was called `noise`, which still works with a `DeprecationWarning`;
        `noise` now names what drives an SDE, as in `sdekit.solve(..., noise=...)`.)
    - `noise_dim`: number of Brownian motions, required for `"general"`.
    - `calculus`: `"ito"` (default) or `"stratonovich"`: the calculus in which
        `drift` is written. Solving with a solver of the other calculus converts the
        drift automatically (see [`sdekit.SDE.drift_in`][]).
    - `additive`: whether the noise is additive (state-independent).
    """

    drift: Callable[..., Any]
    diffusion: Callable[..., Any]
    noise_structure: NoiseStructure = eqx.field(static=True)
    noise_dim: int | None = eqx.field(static=True)
    calculus: Calculus = eqx.field(static=True)
    additive: bool = eqx.field(static=True)

    def __init__(
        self,
        drift: Callable[..., Any],
        diffusion: Callable[..., Any],
        noise_structure: NoiseStructure | None = None,
        noise_dim: int | None = None,
        calculus: Calculus = "ito",
        additive: bool = False,
        *,
        noise: NoiseStructure | None = None,
    ):
        if noise is not None:
            if noise_structure is not None:
                raise TypeError("Pass `noise_structure` only (`noise` is its old name).")
            warnings.warn(
                "`SDE(..., noise=...)` is deprecated: the noise structure is now "
                "`noise_structure=` (`noise` names what drives an SDE, as in "
                "`sdekit.solve(..., noise=FractionalNoise(...))`).",
                DeprecationWarning,
                # Past equinox's construction machinery to the caller's line.
                stacklevel=4,
            )
            noise_structure = noise
        self.drift = drift
        self.diffusion = diffusion
        self.noise_structure = noise_structure or "diagonal"
        self.noise_dim = noise_dim
        self.calculus = calculus
        self.additive = additive

    def __check_init__(self):
        if self.noise_structure not in _STRUCTURES:
            raise ValueError(
                f"`noise_structure` must be one of {_STRUCTURES}, got "
                f"{self.noise_structure!r}."
            )
        if self.calculus not in _CALCULI:
            raise ValueError(
                f"`calculus` must be 'ito' or 'stratonovich', got {self.calculus!r}."
            )
        if self.noise_structure == "general":
            if not isinstance(self.noise_dim, int) or self.noise_dim < 1:
                raise ValueError(
                    "`noise_structure='general'` needs `noise_dim`, the number of "
                    f"Brownian motions, as a positive int; got {self.noise_dim!r}."
                )
        elif self.noise_dim is not None:
            raise ValueError(
                "`noise_dim` is only used with `noise_structure='general'`; for "
                f"{self.noise_structure!r} noise it is implied, so leave it as None."
            )
        if not callable(self.drift) or not callable(self.diffusion):
            raise TypeError("`drift` and `diffusion` must be callables (t, y, args).")

    @property
    def noise(self) -> NoiseStructure:
        """Deprecated: the old name of `noise_structure`."""
        warnings.warn(
            "`SDE.noise` is deprecated: use `SDE.noise_structure`.",
            DeprecationWarning,
            stacklevel=2,
        )
        return self.noise_structure

    def brownian_shape(self, y_shape: tuple[int, ...]) -> tuple[int, ...]:
        """The shape of the Brownian motion driving one path with state shape `y_shape`:
        the state's (diagonal), `()` (scalar) or `(noise_dim,)` (general)."""
        if self.noise_structure == "diagonal":
            return tuple(y_shape)
        if self.noise_structure == "scalar":
            return ()
        assert self.noise_dim is not None
        return (self.noise_dim,)

    def diffusion_operator(
        self, t: RealScalarLike, y: State, args: PyTree
    ) -> lx.AbstractLinearOperator:
        r"""The diffusion as a lineax operator from the Brownian motion's shape to the
        state's, what diffrax's `ControlTerm` applies to $\mathrm{d}W$: a
        `DiagonalLinearOperator` for diagonal noise, the column $g$ as an operator on
        scalars for scalar noise, a `MatrixLinearOperator` (or the operator returned)
        for general noise. Raises a `ValueError` at trace time when the diffusion does
        not fit the state and the structure."""
        g = self.diffusion(t, y, args)
        if isinstance(g, lx.AbstractLinearOperator):
            op = g
        elif self.noise_structure == "diagonal":
            op = lx.DiagonalLinearOperator(g)
        elif self.noise_structure == "scalar":
            # The column g times a scalar increment.
            op = TensorOperator(jnp.asarray(g), jnp.ndim(g))
        elif jnp.ndim(g) == 2:
            op = lx.MatrixLinearOperator(g)
        else:
            # A state of any shape: g of shape (*state, noise_dim).
            op = TensorOperator(jnp.asarray(g), jnp.ndim(g) - 1)
        bshape = self.brownian_shape(y.shape)
        into, out = op.in_structure().shape, op.out_structure().shape
        if out != y.shape or into != bshape:
            got = (
                f"an operator from {into} to {out}"
                if isinstance(g, lx.AbstractLinearOperator)
                else f"shape {jnp.shape(g)}"
            )
            raise ValueError(
                f"With noise_structure={self.noise_structure!r} the diffusion must "
                f"return {_RETURNS[self.noise_structure]}, for the state's shape "
                f"{y.shape} and Brownian motion of shape {bshape}; got {got}."
            )
        return op

    def ito_correction(self, t: RealScalarLike, y: State, args: PyTree) -> State:
        r"""$\tfrac12 \sum_{j} (\partial_y g_{\cdot j})\, g_{\cdot j}$, the term that
        separates the Itô and Stratonovich drifts:
        $f_{\mathrm{Strat}} = f_{\mathrm{Itô}} - \text{ito\_correction}$.

        Zero for additive noise. Otherwise one Jacobian-vector product of the diffusion
        per Brownian motion $j$, along its own column $g_{\cdot j}$ (the operator
        applied to the $j$-th unit vector): for diagonal noise that is the diagonal of
        the diffusion's Jacobian, for scalar noise a single product.
        """
        if self.additive:
            return jnp.zeros_like(y)

        def column(y_, unit):
            return self.diffusion_operator(t, y_, args).mv(unit)

        def term(unit):
            return jax.jvp(lambda y_: column(y_, unit), (y,), (column(y, unit),))[1]

        shape = self.brownian_shape(y.shape)
        size = math.prod(shape)
        units = jnp.eye(size, dtype=y.dtype).reshape(size, *shape)
        return 0.5 * jnp.sum(jax.vmap(term)(units), axis=0)

    def drift_in(self, calculus: Calculus) -> Callable[..., Any]:
        """The drift written in `calculus`, converting with
        [`sdekit.SDE.ito_correction`][] when it differs from the SDE's own."""
        if calculus == self.calculus or self.additive:
            return self.drift
        return _ConvertedDrift(self, -1.0 if calculus == "stratonovich" else 1.0)

    def terms(
        self, brownian_path: dfx.AbstractBrownianPath, calculus: Calculus | None = None
    ) -> dfx.MultiTerm:
        """diffrax terms for a solver of the given calculus (default: the SDE's own)."""
        drift = self.drift_in(calculus or self.calculus)
        return dfx.MultiTerm(
            dfx.ODETerm(drift), dfx.ControlTerm(self.diffusion_operator, brownian_path)
        )

    def batched_terms(
        self, brownian_path: dfx.AbstractBrownianPath, calculus: Calculus | None = None
    ) -> dfx.MultiTerm:
        """diffrax terms for a batch of paths held as one state `(batch, *state)`:
        the drift (converted per path) and the diffusion operator mapped over the
        paths, each applied to its own path's Brownian motion."""
        drift = self.drift_in(calculus or self.calculus)
        return dfx.MultiTerm(
            dfx.ODETerm(_BatchedDrift(drift)),
            _BatchedDiffusionTerm(self, brownian_path),
        )

    def check_shapes(self, t0: RealScalarLike, y: State, args: PyTree) -> None:
        """Trace-time checks that drift and diffusion fit one path's state `y`."""
        drift = jax.eval_shape(self.drift, t0, y, args)
        if getattr(drift, "shape", None) != y.shape:
            raise ValueError(
                f"The drift must return an array shaped like the state {y.shape}, got "
                f"{getattr(drift, 'shape', type(drift))}. Check the drift's output size."
            )
        # Building the operator checks its shapes (see diffusion_operator).
        noise = jnp.zeros(self.brownian_shape(y.shape), y.dtype)
        jax.eval_shape(lambda y_: self.diffusion_operator(t0, y_, args).mv(noise), y)

    def default_solver(self) -> dfx.AbstractSolver:
        """`diffrax.Euler()` (Euler-Maruyama) for an Itô SDE, `diffrax.Heun()` for a
        Stratonovich one."""
        return dfx.Heun() if self.calculus == "stratonovich" else dfx.Euler()


class _ConvertedDrift(eqx.Module):
    # A module, not a closure, so that the SDE's parameters stay visible as leaves to
    # JAX transformations (the reversible adjoint differentiates through them).
    sde: SDE
    sign: float = eqx.field(static=True)

    def __call__(self, t, y, args):
        return self.sde.drift(t, y, args) + self.sign * self.sde.ito_correction(
            t, y, args
        )


class _BatchedDrift(eqx.Module):
    drift: Callable[..., Any]

    def __call__(self, t, y, args):
        return jax.vmap(self.drift, in_axes=(None, 0, None))(t, y, args)


class _BatchedDiffusionTerm(dfx.AbstractTerm):
    """diffrax's `ControlTerm` for a batch held as one state: the vector field is one
    path's diffusion operator per row (a batched operator, only arrays inside, so
    that solvers may keep it in their state), each applied to its own path's
    Brownian motion (the rows of dW), whatever the structure."""

    sde: SDE
    control: dfx.AbstractBrownianPath

    def vf(self, t, y, args):
        return eqx.filter_vmap(self.sde.diffusion_operator, in_axes=(None, 0, None))(
            t, y, args
        )

    def contr(self, t0, t1, **kwargs):
        return self.control.evaluate(t0, t1, **kwargs)

    def prod(self, vf, control):
        return eqx.filter_vmap(lambda op, w: op.mv(w))(vf, control)
