"""The SDE: drift, diffusion, noise structure and calculus, as one Equinox module;
and the abstract problem that [`sdekit.solve`][] integrates."""

import abc
from collections.abc import Callable
from typing import Any

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
import lineax as lx
from jaxtyping import PyTree

from ._custom_types import Calculus, NoiseStructure, RealScalarLike, State


_NOISES = ("diagonal", "scalar", "general")
_CALCULI = ("ito", "stratonovich")


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
    - `"general"`: a `(d, noise_dim)` matrix or any
      [`lineax.AbstractLinearOperator`](https://docs.kidger.site/lineax/) mapping
      $\mathbb{R}^m \to \mathbb{R}^d$; `noise_dim` Brownian motions.

    `additive=True` declares that `diffusion` does not depend on `y`, so that Itô
    and Stratonovich coincide and solvers reach their additive-noise order
    (Euler-Maruyama: strong order 1).

    **Arguments:**

    - `drift`: callable `(t, y, args) -> dy/dt`, shaped like `y`. Any Equinox
        module (e.g. an `eqx.nn.MLP` wrapped to take `t`) works.
    - `diffusion`: callable `(t, y, args) -> g`, see above.
    - `noise`: `"diagonal"` (default), `"scalar"` or `"general"`.
    - `noise_dim`: number of Brownian motions, required for `noise="general"`.
    - `calculus`: `"ito"` (default) or `"stratonovich"`: the calculus in which
        `drift` is written. Solving with a solver of the other calculus converts the
        drift automatically (see [`sdekit.SDE.drift_in`][]).
    - `additive`: whether the noise is additive (state-independent).
    """

    drift: Callable[..., Any]
    diffusion: Callable[..., Any]
    noise: NoiseStructure = eqx.field(static=True, default="diagonal")
    noise_dim: int | None = eqx.field(static=True, default=None)
    calculus: Calculus = eqx.field(static=True, default="ito")
    additive: bool = eqx.field(static=True, default=False)

    def __check_init__(self):
        if self.noise not in _NOISES:
            raise ValueError(f"`noise` must be one of {_NOISES}, got {self.noise!r}.")
        if self.calculus not in _CALCULI:
            raise ValueError(
                f"`calculus` must be 'ito' or 'stratonovich', got {self.calculus!r}."
            )
        if self.noise == "general":
            if not isinstance(self.noise_dim, int) or self.noise_dim < 1:
                raise ValueError(
                    "`noise='general'` needs `noise_dim`, the number of Brownian "
                    f"motions, as a positive int; got {self.noise_dim!r}."
                )
        elif self.noise_dim is not None:
            raise ValueError(
                f"`noise_dim` is only used with `noise='general'`; for "
                f"noise={self.noise!r} it is implied, so leave it as None."
            )
        if not callable(self.drift) or not callable(self.diffusion):
            raise TypeError("`drift` and `diffusion` must be callables (t, y, args).")

    def brownian_shape(self, y_shape: tuple[int, ...]) -> tuple[int, ...]:
        """The shape of the Brownian motion driving one path with state shape `y_shape`."""
        if self.noise == "diagonal":
            return y_shape
        if self.noise == "scalar":
            return ()
        assert self.noise_dim is not None
        return (self.noise_dim,)

    def diffusion_operator(
        self, t: RealScalarLike, y: State, args: PyTree
    ) -> lx.AbstractLinearOperator | jax.Array:
        """The diffusion as the object diffrax's `ControlTerm` multiplies with
        $\\mathrm{d}W$: a lineax operator for diagonal and general noise, the
        column $g$ itself for scalar noise (multiplied by a scalar increment)."""
        g = self.diffusion(t, y, args)
        if self.noise == "diagonal":
            return lx.DiagonalLinearOperator(g)
        if self.noise == "general" and not isinstance(g, lx.AbstractLinearOperator):
            return lx.MatrixLinearOperator(g)
        return g

    def ito_correction(self, t: RealScalarLike, y: State, args: PyTree) -> State:
        r"""$\tfrac12 \sum_{j} (\partial_y g_{\cdot j})\, g_{\cdot j}$, the term that
        separates the Itô and Stratonovich drifts:
        $f_{\mathrm{Strat}} = f_{\mathrm{Itô}} - \text{ito\_correction}$.

        Zero for additive noise. For diagonal noise this needs the diagonal of the
        diffusion's Jacobian (one forward-mode pass per state component); for scalar
        noise one Jacobian-vector product; for general noise one per Brownian motion.
        """
        if self.additive:
            return jnp.zeros_like(y)

        def g(y_):
            return self.diffusion(t, y_, args)

        if self.noise == "scalar":
            g0, dg = jax.jvp(g, (y,), (g(y),))
            return 0.5 * dg
        if self.noise == "diagonal":
            g0 = g(y)
            flat = y.reshape(-1)
            jac = jax.jacfwd(lambda f: g(f.reshape(y.shape)).reshape(-1))(flat)
            return 0.5 * (jnp.diagonal(jac) * g0.reshape(-1)).reshape(y.shape)

        def matrix(y_):
            op = self.diffusion_operator(t, y_, args)
            assert isinstance(op, lx.AbstractLinearOperator)
            return op.as_matrix()

        G = matrix(y)

        def column_term(j):
            return jax.jvp(lambda y_: matrix(y_)[:, j], (y,), (G[:, j],))[1]

        return 0.5 * jnp.sum(jax.vmap(column_term)(jnp.arange(G.shape[1])), axis=0)

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
        the drift (converted per path) and the diffusion mapped over the paths."""
        drift = self.drift_in(calculus or self.calculus)
        return dfx.MultiTerm(
            dfx.ODETerm(_BatchedDrift(drift)),
            dfx.ControlTerm(_BatchedDiffusion(self), brownian_path),
        )

    def check_shapes(self, t0: RealScalarLike, y: State, args: PyTree) -> None:
        """Trace-time checks that drift and diffusion return what the noise structure
        says, for one path's state `y`."""
        drift = jax.eval_shape(self.drift, t0, y, args)
        if getattr(drift, "shape", None) != y.shape:
            raise ValueError(
                f"The drift must return an array shaped like the state {y.shape}, got "
                f"{getattr(drift, 'shape', type(drift))}. Check the drift's output size."
            )
        diff = jax.eval_shape(self.diffusion, t0, y, args)
        if self.noise in ("diagonal", "scalar"):
            if getattr(diff, "shape", None) != y.shape:
                raise ValueError(
                    f"With noise={self.noise!r} the diffusion must return an array "
                    f"shaped like the state {y.shape}, got "
                    f"{getattr(diff, 'shape', type(diff))}."
                )
        elif isinstance(diff, lx.AbstractLinearOperator):
            want = (y.shape, (self.noise_dim,))
            got = (diff.out_structure().shape, diff.in_structure().shape)
            if got != want:
                raise ValueError(
                    f"The diffusion operator must map noise of shape {want[1]} to the "
                    f"state's shape {want[0]}, but maps {got[1]} to {got[0]}."
                )
        elif getattr(diff, "shape", None) != (*y.shape, self.noise_dim):
            raise ValueError(
                "With noise='general' the diffusion must return a matrix of shape "
                f"{(*y.shape, self.noise_dim)} (state, noise_dim), got "
                f"{getattr(diff, 'shape', type(diff))}."
            )

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


class _BatchedDiffusion(eqx.Module):
    sde: SDE

    def __call__(self, t, y, args):
        g = jax.vmap(self.sde.diffusion, in_axes=(None, 0, None))(t, y, args)
        if self.sde.noise == "diagonal":
            return lx.DiagonalLinearOperator(g)
        batch = y.shape[0]
        if self.sde.noise == "scalar":
            # One scalar motion per path: dW has shape (batch,).
            def mv(dw):
                return g * dw.reshape(batch, *([1] * (g.ndim - 1)))

            structure = jax.ShapeDtypeStruct((batch,), y.dtype)
        else:

            def mv(dw):
                if isinstance(g, lx.AbstractLinearOperator):
                    return jax.vmap(lambda op, w: op.mv(w))(g, dw)
                return jnp.einsum("b...m,bm->b...", g, dw)

            structure = jax.ShapeDtypeStruct((batch, self.sde.noise_dim), y.dtype)
        return lx.FunctionLinearOperator(mv, structure)
