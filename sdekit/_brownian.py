"""A Brownian path sampled up front on the step grid."""

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, Float, PRNGKeyArray

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
    """

    ts: Float[Array, " m"]
    values: Float[Array, "m *shape"]
    levy_area: type[dfx.BrownianIncrement] = eqx.field(
        static=True, default=dfx.BrownianIncrement
    )

    def __init__(
        self,
        ts: Float[Array, " m"],
        shape: tuple[int, ...],
        key: PRNGKeyArray,
        dtype=None,
    ):
        ts = jnp.asarray(ts)
        if ts.ndim != 1 or ts.shape[0] < 2:
            raise ValueError(
                f"`ts` must be a 1-D grid of at least two times, got shape {ts.shape}."
            )
        dtype = ts.dtype if dtype is None else dtype
        dt = jnp.diff(ts).astype(dtype)

        def sample(k):
            return jr.normal(k, (ts.shape[0] - 1, *shape), dtype)

        if jnp.ndim(key) == 1:
            # One motion per key, stacked behind the time axis: (m - 1, b, *shape).
            noise = jnp.moveaxis(jax.vmap(sample)(key), 0, 1)
        else:
            noise = sample(key)
        scale = jnp.sqrt(dt).reshape(-1, *([1] * (noise.ndim - 1)))
        increments = noise * scale
        zero = jnp.zeros((1, *noise.shape[1:]), dtype)
        self.ts = ts
        # A sample path has no meaningful derivative: keep gradients off the noise.
        self.values = jax.lax.stop_gradient(
            jnp.concatenate([zero, jnp.cumsum(increments, axis=0)])
        )
        self.levy_area = dfx.BrownianIncrement

    @property
    def t0(self):
        return self.ts[0]

    @property
    def t1(self):
        return self.ts[-1]

    def _value(self, t: RealScalarLike) -> Array:
        t = jax.lax.stop_gradient(jnp.asarray(t, self.ts.dtype))
        last = self.ts.shape[0] - 2
        i = jnp.clip(jnp.searchsorted(self.ts, t, side="right") - 1, 0, last)
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
        if t1 is None:
            out = self._value(t0)
            dt = t0
        else:
            out = self._value(t1) - self._value(t0)
            dt = t1 - t0
        if use_levy:
            return dfx.BrownianIncrement(dt=dt, W=out)
        return out
