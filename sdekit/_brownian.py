"""A Brownian path sampled up front on the step grid."""

from typing import Any

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, ArrayLike, Float, Int, PRNGKeyArray

from ._custom_types import RealScalarLike


class GridBrownianPath(dfx.AbstractBrownianPath):
    r"""Brownian motion sampled on a fixed grid of times, up front.

    The increments $W(t_{i+1}) - W(t_i) \sim \mathcal{N}(0, t_{i+1} - t_i)$ are drawn
    once from `key` when the path is built and stored, so evaluating an increment
    between grid points is a lookup: no random-number generation inside the solver
    loop, nothing to recompute on the backward pass, and the same path on every call
    (so reverse-mode autodiff through diffrax's checkpointed adjoint is exact).

    This is what makes [`sdekit.solve`][]'s default as fast as a hand-written
    `jax.lax.scan`. It suits fixed-step solvers whose steps are grid intervals
    (`diffrax.StepTo(ts=grid)`). Between grid points it interpolates linearly, which
    is not Brownian motion: for adaptive step sizes use
    `diffrax.VirtualBrownianTree` instead (`solve(..., brownian="virtual")`).

    **Arguments:**

    - `ts`: the strictly increasing grid of times, shape `(m,)`.
    - `shape`: the shape of the Brownian motion (e.g. `(d,)`, or `()` for a scalar one).
    - `key`: a JAX random key; or a 1-D array of `b` typed keys (`jr.split(key, b)`)
        for `b` independent motions in one path of shape `(b, *shape)`, each sampled
        exactly as `GridBrownianPath(ts, shape, key_i)` would (so a batch solved as
        one state draws the same noise as the same batch solved path by path).
    - `dtype`: floating dtype of the samples (default: that of `ts`).
    - `presample`: if `True` (default) draw and store the whole path now. If `False`
        store only the key and draw each grid increment when it is asked for: memory
        independent of the number of steps, but only increments over single grid
        intervals can be evaluated (what a fixed-step solver on the grid asks for).
    """

    ts: Float[Array, " m"]
    key: PRNGKeyArray
    values: Float[Array, "m *shape"] | None
    shape: tuple[int, ...] = eqx.field(static=True)
    dtype: Any = eqx.field(static=True)
    levy_area: type[dfx.BrownianIncrement] = eqx.field(
        static=True, default=dfx.BrownianIncrement
    )

    def __init__(
        self,
        ts: Float[Array, " m"],
        shape: tuple[int, ...],
        key: PRNGKeyArray,
        dtype=None,
        presample: bool = True,
    ):
        ts = jnp.asarray(ts)
        if ts.ndim != 1 or ts.shape[0] < 2:
            raise ValueError(
                f"`ts` must be a 1-D grid of at least two times, got shape {ts.shape}."
            )
        self.ts = ts
        self.key = key
        self.shape = tuple(shape)
        self.dtype = ts.dtype if dtype is None else dtype
        self.levy_area = dfx.BrownianIncrement
        if presample:
            increments = jax.vmap(self.increment)(jnp.arange(ts.shape[0] - 1))
            zero = jnp.zeros((1, *increments.shape[1:]), self.dtype)
            self.values = jnp.concatenate([zero, jnp.cumsum(increments, axis=0)])
        else:
            self.values = None

    def increment(self, n: Int[ArrayLike, ""]) -> Float[Array, "*shape"]:
        """The increment over the grid interval `[ts[n], ts[n + 1]]`, drawn from
        `fold_in(key, n)`: computable on its own, in any order, without the stored
        path. (This is what lets the reversible adjoint regenerate the noise
        backwards in constant memory.)"""

        def sample(k):
            return jr.normal(jr.fold_in(k, n), self.shape, self.dtype)

        if jnp.ndim(self.key) == 1:
            noise = jax.vmap(sample)(self.key)
        else:
            noise = sample(self.key)
        dt = (self.ts[n + 1] - self.ts[n]).astype(self.dtype)
        # A sample path has no meaningful derivative: keep gradients off the noise.
        return jax.lax.stop_gradient(noise * jnp.sqrt(dt))

    @property
    def t0(self):
        return self.ts[0]

    @property
    def t1(self):
        return self.ts[-1]

    def _index(self, t: RealScalarLike) -> Array:
        t = jax.lax.stop_gradient(jnp.asarray(t, self.ts.dtype))
        last = self.ts.shape[0] - 2
        return jnp.clip(jnp.searchsorted(self.ts, t, side="right") - 1, 0, last)

    def _value(self, t: RealScalarLike) -> Array:
        assert self.values is not None
        t = jax.lax.stop_gradient(jnp.asarray(t, self.ts.dtype))
        i = self._index(t)
        lo, hi = self.ts[i], self.ts[i + 1]
        frac = jnp.clip((t - lo) / (hi - lo), 0.0, 1.0).astype(self.values.dtype)
        # On a grid point frac is exactly 0 and this is the stored value exactly.
        return self.values[i] + frac * (self.values[i + 1] - self.values[i])

    def evaluate(
        self,
        t0: RealScalarLike,
        t1: RealScalarLike | None = None,
        left: bool = True,
        use_levy: bool = False,
    ):
        del left
        if self.values is None:
            if t1 is None:
                raise ValueError(
                    "A `GridBrownianPath(..., presample=False)` only gives increments "
                    "over one grid interval, `evaluate(ts[n], ts[n + 1])`."
                )
            n = self._index(t0)
            out = self.increment(n)
            dt = t1 - t0
        elif t1 is None:
            out = self._value(t0)
            dt = t0
        else:
            out = self._value(t1) - self._value(t0)
            dt = t1 - t0
        if use_levy:
            return dfx.BrownianIncrement(dt=dt, W=out)
        return out
