"""The step grid: a uniform grid with the observation times merged in."""

import math

import jax.numpy as jnp
from jaxtyping import Array, Float

from ._custom_types import RealScalarLike


def num_uniform_steps(t0: float, t1: float, dt0: float) -> int:
    """Number of uniform steps of size at most `dt0` covering `[t0, t1]`."""
    # The tolerance stops `(1 - 0) / 0.1 = 10.000000000000002` from adding a step.
    return max(1, math.ceil((t1 - t0) / dt0 - 1e-9))


def step_grid(
    t0: RealScalarLike, t1: RealScalarLike, num_steps: int, ts: Float[Array, " n"]
) -> Float[Array, " m"]:
    r"""The strictly increasing step grid of one path: the uniform grid of
    `num_steps` steps on $[t_0, t_1]$ with the save times `ts` merged in, so that a
    fixed-step solver lands exactly on every observation.

    Its length is always `num_steps + len(ts) + 1`, whatever the values of `ts`, so
    that paths with different observation times batch under `vmap`. Where two points
    coincide (an observation on a uniform point, at $t_0$ or $t_1$, or padding
    repeating the last observation) the duplicate is moved into the open interval to
    the next distinct point, which adds a short step and removes no point.

    **Arguments:**

    - `t0`, `t1`: the interval, `t0 < t1`.
    - `num_steps`: the number of uniform steps.
    - `ts`: non-decreasing save times in $[t_0, t_1]$.

    **Returns:** the grid, `grid[0] == t0`, `grid[-1] == t1`.
    """
    dtype = jnp.result_type(ts.dtype, jnp.float32)
    t0 = jnp.asarray(t0, dtype)
    t1 = jnp.asarray(t1, dtype)
    ts = ts.astype(dtype)
    uniform = t0 + (t1 - t0) * jnp.arange(num_steps + 1, dtype=dtype) / num_steps
    # Pin the ends exactly: `t0 + (t1 - t0) * 1` need not equal `t1` in floating point.
    uniform = uniform.at[0].set(t0).at[-1].set(t1)
    u = jnp.sort(jnp.concatenate([uniform, ts]))
    left = jnp.searchsorted(u, u, side="left")
    right = jnp.searchsorted(u, u, side="right")
    size = right - left  # size of each point's group of equal values
    rank = jnp.arange(u.shape[0]) - left  # 0 for the point that stays
    has_next = right < u.shape[0]
    nxt = u[jnp.minimum(right, u.shape[0] - 1)]
    prv = u[jnp.maximum(left - 1, 0)]
    # Duplicates move forward into (u, next) at fractions below 1/2, or, at the last
    # value, backward into (prev, u) at fractions above 1/2, so that points moved out
    # of neighbouring groups can never meet.
    frac = rank / (2 * size)
    moved = jnp.where(has_next, u + (nxt - u) * frac, prv + (u - prv) * (1 - frac))
    return jnp.sort(jnp.where(rank > 0, moved, u))
