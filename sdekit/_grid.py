"""The step grid: a uniform grid with the observation times merged in."""

import math

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from ._custom_types import RealScalarLike


def num_uniform_steps(t0: float, t1: float, dt0: float) -> int:
    """Number of uniform steps of size at most `dt0` covering `[t0, t1]`."""
    # The tolerance stops `(1 - 0) / 0.1 = 10.000000000000002` from adding a step.
    return max(1, math.ceil((t1 - t0) / dt0 - 1e-9))


def step_grid(
    t0: RealScalarLike,
    t1: RealScalarLike,
    num_steps: int,
    ts: Float[Array | np.ndarray, " n"],
) -> Float[Array | np.ndarray, " m"]:
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
    - `ts`: non-decreasing save times in $[t_0, t_1]$: a NumPy array (the grid is then
        built in NumPy, a constant under `jit`) or a JAX array.

    **Returns:** the grid (same array kind as `ts`), `grid[0] == t0`, `grid[-1] == t1`.
    """
    # Concrete save times (NumPy) give the grid as a compile-time constant: nothing of
    # the merge below is computed, or held in memory, at run time.
    xp = np if isinstance(ts, np.ndarray) else jnp
    dtype = jax.dtypes.canonicalize_dtype(np.result_type(ts.dtype, np.float32))
    t0 = xp.asarray(t0, dtype)
    t1 = xp.asarray(t1, dtype)
    ts = ts.astype(dtype)
    inner = t0 + (t1 - t0) * xp.arange(1, num_steps, dtype=dtype) / num_steps
    # Pin the ends exactly: `t0 + (t1 - t0) * 1` need not equal `t1` in floating point.
    uniform = xp.concatenate([t0[None], inner, t1[None]])
    # A uniform point within a few ulps of a save time (0.9 against 0.90000004 in
    # float32) is snapped onto it, so that the tie is exact and resolved below
    # rather than leaving a step too short to represent.
    scale = xp.maximum(xp.maximum(xp.abs(t0), xp.abs(t1)), t1 - t0)
    tol = 16 * np.finfo(dtype).eps * scale
    obs = xp.sort(ts)
    if obs.shape[0] > 1:
        j = xp.clip(xp.searchsorted(obs, uniform), 1, obs.shape[0] - 1)
        candidates = [obs[j - 1], obs[j]]
    else:
        candidates = [obs[0]]
    for c in candidates:
        uniform = xp.where(xp.abs(uniform - c) < tol, c, uniform)
    u = xp.sort(xp.concatenate([uniform, ts]))
    left = xp.searchsorted(u, u, side="left")
    right = xp.searchsorted(u, u, side="right")
    size = right - left  # size of each point's group of equal values
    rank = xp.arange(u.shape[0]) - left  # 0 for the point that stays
    has_next = right < u.shape[0]
    nxt = u[xp.minimum(right, u.shape[0] - 1)]
    prv = u[xp.maximum(left - 1, 0)]
    # Duplicates move forward into (u, next) at fractions below 1/2, or, at the last
    # value, backward into (prev, u) at fractions above 1/2, so that points moved out
    # of neighbouring groups can never meet.
    frac = (rank / (2 * size)).astype(dtype)
    moved = xp.where(has_next, u + (nxt - u) * frac, prv + (u - prv) * (1 - frac))
    return xp.sort(xp.where(rank > 0, moved, u)).astype(dtype)
