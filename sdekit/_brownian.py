"""A Brownian path sampled up front on the step grid, with its Lévy areas."""

import math
from typing import Any

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, ArrayLike, Float, Int, PRNGKeyArray

from ._custom_types import LevyArea, RealScalarLike


# The Lévy areas a path can carry, each with the standard deviations of its normalised
# parts over an interval of length 1: W ~ N(0, 1), and, independent of W and of each
# other over the same interval, H ~ N(0, 1/12) and K ~ N(0, 1/720) (Foster 2020,
# *Numerical approximations for SDEs*, thesis, Theorem 6.1.6; the normalisation of
# diffrax's `SpaceTimeLevyArea` / `SpaceTimeTimeLevyArea`: all three scale with sqrt(dt)).
_PARTS: dict[type, tuple[float, ...]] = {
    dfx.BrownianIncrement: (1.0,),
    dfx.SpaceTimeLevyArea: (1.0, 1 / math.sqrt(12)),
    dfx.SpaceTimeTimeLevyArea: (1.0, 1 / math.sqrt(12), 1 / math.sqrt(720)),
}


class GridBrownianPath(dfx.AbstractBrownianPath):
    r"""Brownian motion sampled on a fixed grid of times, up front, with its space-time
    (and space-time-time) Lévy areas where a solver asks for them.

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

    **Lévy areas.** High-order solvers (`diffrax.SEA`, `SRA1`, `ShARK`, `ALIGN`,
    `ShOULD`, `QUICSORT`) also need, per step $[s, t]$ of length $h$, the space-time
    Lévy area $H_{s,t} = \frac1h \int_s^t \big(W_{s,r} - \frac{r-s}{h} W_{s,t}\big)\,
    \mathrm{d}r$ and the space-time-time Lévy area $K_{s,t} = \frac1{h^2} \int_s^t
    \big(W_{s,r} - \frac{r-s}{h} W_{s,t}\big)\big(\frac{s+t}2 - r\big)\,\mathrm{d}r$.
    Over one interval $W$, $H$ and $K$ are independent Gaussians with variances $h$,
    $h/12$ and $h/720$ (Foster 2020, Theorem 6.1.6), so they are drawn per grid
    interval beside the increment. `evaluate(s, t, use_levy=True)` returns diffrax's
    `SpaceTimeLevyArea(dt, W, H)` (or `SpaceTimeTimeLevyArea(dt, W, H, K)`): exactly
    the stored draws over one grid interval, and their exact combination over several
    consecutive ones (computed from running time integrals of $W$, so in float32 the
    combined $K$ carries a rounding error of about $10^{-7} (t - t_0)^2 \max|W|$).
    Off the grid the areas are not defined (the path is not Brownian there) and come
    back as NaN.

    **Arguments:**

    - `ts`: the strictly increasing grid of times, shape `(m,)`.
    - `shape`: the shape of the Brownian motion (e.g. `(d,)`, or `()` for a scalar one).
    - `key`: a JAX random key; or a 1-D array of `b` typed keys (`jr.split(key, b)`)
        for `b` independent motions in one path of shape `(b, *shape)`, each sampled
        exactly as `GridBrownianPath(ts, shape, key_i)` would (so a batch solved as
        one state draws the same noise as the same batch solved path by path).
    - `dtype`: floating dtype of the samples (default: that of `ts`).
    - `presample`: if `True` (default) draw and store the whole path now. If `False`
        store only the key and draw each grid interval's increment (and areas) when it
        is asked for, from `fold_in(key, n)` exactly as the stored path would: memory
        independent of the number of steps, but only single grid intervals can be
        evaluated (what a fixed-step solver on the grid asks for).
    - `levy_area`: `diffrax.BrownianIncrement` (default: the increment only),
        `diffrax.SpaceTimeLevyArea` (also $H$) or `diffrax.SpaceTimeTimeLevyArea` (also
        $H$ and $K$). As for diffrax's own paths, the choice changes the draws: the
        same key gives a different $W$ for a different `levy_area`.
    """

    ts: Float[Array, " m"]
    key: PRNGKeyArray
    values: Float[Array, "m *shape"] | None
    # Per grid interval: the Lévy areas (H, K), shape (m - 1, *shape) each.
    areas: tuple[Float[Array, "m-1 *shape"], ...] | None
    # At grid points: the running integrals of W from ts[0], shape (m, *shape) each:
    # I(t) = ∫ W dr and, with K, J(t) = ∫ (r - ts[0]) W dr. They give the exact areas
    # over several grid intervals.
    integrals: tuple[Float[Array, "m *shape"], ...] | None
    shape: tuple[int, ...] = eqx.field(static=True)
    dtype: Any = eqx.field(static=True)
    levy_area: LevyArea = eqx.field(static=True, default=dfx.BrownianIncrement)

    def __init__(
        self,
        ts: Float[Array, " m"],
        shape: tuple[int, ...],
        key: PRNGKeyArray,
        dtype=None,
        presample: bool = True,
        levy_area: LevyArea = dfx.BrownianIncrement,
    ):
        ts = jnp.asarray(ts)
        if ts.ndim != 1 or ts.shape[0] < 2:
            raise ValueError(
                f"`ts` must be a 1-D grid of at least two times, got shape {ts.shape}."
            )
        if levy_area not in _PARTS:
            raise ValueError(
                "`levy_area` must be diffrax.BrownianIncrement, diffrax.SpaceTimeLevyArea "
                f"or diffrax.SpaceTimeTimeLevyArea, got {levy_area!r}."
            )
        self.ts = ts
        self.key = key
        self.shape = tuple(shape)
        self.dtype = ts.dtype if dtype is None else dtype
        self.levy_area = levy_area
        if not presample:
            self.values = self.areas = self.integrals = None
            return
        parts = self._draw(jnp.arange(ts.shape[0] - 1))
        w = parts[0]
        zero = jnp.zeros((1, *w.shape[1:]), self.dtype)
        self.values = jnp.concatenate([zero, jnp.cumsum(w, axis=0)])
        if len(parts) == 1:
            self.areas = self.integrals = None
            return
        self.areas = tuple(parts[1:])
        self.integrals = self._running_integrals(parts)

    def _draw(self, ns: Int[Array, " k"]) -> tuple[Array, ...]:
        """W, then H and K where asked for, over the grid intervals `ns`, each from
        `fold_in(key, n)`; every part of shape `(k, *noise)`."""
        scales = _PARTS[self.levy_area]
        count = len(scales)
        keys = self.key if jnp.ndim(self.key) == 1 else self.key[None]
        # One flat batch of keys, then one batch of draws: the same numbers as
        # fold_in and normal mapped over intervals and paths in turn, in about half
        # the time on CPUs (nested maps of the generator lower less well).
        interval_keys = jax.vmap(lambda n: jax.vmap(lambda k: jr.fold_in(k, n))(keys))(
            ns
        )

        def sample(k):
            if count == 1:
                # The increment alone keeps the draw it always had.
                return jr.normal(k, self.shape, self.dtype)[None]
            return jr.normal(k, (count, *self.shape), self.dtype)

        z = jax.vmap(sample)(interval_keys.reshape(-1))
        z = z.reshape(ns.shape[0], keys.shape[0], count, *self.shape)
        if jnp.ndim(self.key) != 1:
            z = z[:, 0]
        dt = (self.ts[ns + 1] - self.ts[ns]).astype(self.dtype)
        scale = jnp.sqrt(dt)[:, None] * jnp.asarray(scales, self.dtype)[None, :]
        z = jnp.moveaxis(z, -len(self.shape) - 1, 0)  # the parts first
        z = z * scale.T.reshape(count, ns.shape[0], *([1] * (z.ndim - 2)))
        # A sample path has no meaningful derivative: keep gradients off the noise.
        return tuple(jax.lax.stop_gradient(z))

    def _running_integrals(self, parts: tuple[Array, ...]) -> tuple[Array, ...]:
        # Over interval n = [s, u] (times from ts[0], h = u - s), with W_s the path at s:
        #   ∫_s^u W dr         = h (W_s + ΔW / 2 + H)                         (from H's definition)
        #   ∫_s^u (r - ts[0]) W dr = c ∫_s^u W dr + h² ΔW / 12 - h² K,  c = (s + u) / 2
        # (K's definition, using ∫ (c - r) dr = 0 and ∫ (r - s)(c - r) dr = -h³ / 12).
        assert self.values is not None
        w, hh = parts[0], parts[1]
        rel = (self.ts - self.ts[0]).astype(self.dtype)
        h, mid = _expand(jnp.diff(rel), w), _expand(0.5 * (rel[1:] + rel[:-1]), w)
        d_i = h * (self.values[:-1] + 0.5 * w + hh)
        zero = jnp.zeros((1, *w.shape[1:]), self.dtype)
        running = [jnp.concatenate([zero, jnp.cumsum(d_i, axis=0)])]
        if len(parts) == 3:
            d_j = mid * d_i + h**2 * (w / 12 - parts[2])
            running.append(jnp.concatenate([zero, jnp.cumsum(d_j, axis=0)]))
        return tuple(running)

    def increment(
        self, n: Int[ArrayLike, ""], use_levy: bool = False
    ) -> Float[Array, "*shape"] | dfx.AbstractBrownianIncrement:
        """The increment over the grid interval `[ts[n], ts[n + 1]]` (with
        `use_levy=True`: diffrax's increment object with the Lévy areas), drawn from
        `fold_in(key, n)`: computable on its own, in any order, without the stored
        path. (This is what lets the reversible adjoint regenerate the noise
        backwards in constant memory.)"""
        n = jnp.asarray(n)
        parts = tuple(part[0] for part in self._draw(n[None]))
        if not use_levy:
            return parts[0]
        return self._levy(self.ts[n + 1] - self.ts[n], parts)

    def increments(self) -> dfx.AbstractBrownianIncrement:
        """Every grid interval's increment and Lévy areas at once, as diffrax's
        increment object whose arrays have a leading axis over the `m - 1` intervals:
        the numbers [`sdekit.GridBrownianPath.increment`][] draws one by one.
        ([`sdekit.solve`][]'s default engine hands them to its steps directly.)"""
        ns = jnp.arange(self.ts.shape[0] - 1)
        return self._levy(jnp.diff(self.ts), self._draw(ns))

    def _levy(self, dt, parts) -> dfx.AbstractBrownianIncrement:
        return self.levy_area(dt, *parts)

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

    def _grid_point(self, t: RealScalarLike) -> tuple[Array, Array]:
        # The index of t in the grid, and whether t is a grid point at all.
        t = jax.lax.stop_gradient(jnp.asarray(t, self.ts.dtype))
        i = jnp.clip(jnp.searchsorted(self.ts, t, side="left"), 0, self.ts.shape[0] - 1)
        return i, self.ts[i] == t

    def _areas(self, s: RealScalarLike, t: RealScalarLike) -> tuple[Array, ...]:
        """The Lévy areas (H, and K where stored) over [s, t]: the stored draws over
        one grid interval, their exact combination over several, NaN off the grid."""
        assert self.values is not None
        assert self.areas is not None and self.integrals is not None
        i, s_on = self._grid_point(s)
        j, t_on = self._grid_point(t)
        rel = (self.ts - self.ts[0]).astype(self.dtype)
        h = rel[j] - rel[i]
        safe_h = jnp.where(h > 0, h, 1.0)
        # Over [ts[i], ts[j]] from the running integrals (see _running_integrals):
        # H = barH / h, K = barK / h² with barH = ΔI - h (W_s + W_t) / 2 and
        # barK = c ΔI - ΔJ + h² ΔW / 12, c the midpoint.
        w_s, w_t = self.values[i], self.values[j]
        d_i = self.integrals[0][j] - self.integrals[0][i]
        joined = [(d_i - 0.5 * h * (w_s + w_t)) / safe_h]
        if len(self.areas) == 2:
            mid = 0.5 * (rel[i] + rel[j])
            d_j = self.integrals[1][j] - self.integrals[1][i]
            joined.append((mid * d_i - d_j + h**2 / 12 * (w_t - w_s)) / safe_h**2)
        # One grid interval (what a solver stepping on the grid asks for): the draws
        # themselves, free of the rounding of the running integrals.
        single = j == i + 1
        n = jnp.minimum(i, self.ts.shape[0] - 2)
        valid = s_on & t_on & (j >= i)
        return tuple(
            jnp.where(valid, jnp.where(single, own[n], combined), jnp.nan)
            for own, combined in zip(self.areas, joined)
        )

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
            return self.increment(self._index(t0), use_levy=use_levy)
        if t1 is None:
            t0, t1 = self.ts[0], t0
        w = self._value(t1) - self._value(t0)
        if not use_levy:
            return w
        if self.areas is None:
            return self._levy(t1 - t0, (w,))
        return self._levy(t1 - t0, (w, *self._areas(t0, t1)))


def _expand(x: Array, like: Array) -> Array:
    # (m - 1,) per-interval scalars against (m - 1, *noise) arrays.
    return x.reshape(-1, *([1] * (like.ndim - 1)))
