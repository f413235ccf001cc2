"""solve()'s input checks: save times, initial states and keys, before any work."""

from collections.abc import Sequence

import equinox as eqx
import jax
import jax.core
import jax.numpy as jnp
import jax.random as jr
import jax.tree_util as jtu
import numpy as np
from jaxtyping import Array, Bool, Float, PyTree


def is_concrete(x) -> bool:
    return not isinstance(x, jax.core.Tracer)


def shares_times(ts) -> bool:
    """Whether `ts` are save times shared by every path (one 1-D array)."""
    return not isinstance(ts, Sequence) and jnp.ndim(ts) == 1


def batched_times(
    ts, batch: int
) -> tuple[Float[Array | np.ndarray, "batch n"], Bool[Array | np.ndarray, "batch n"]]:
    """Broadcast shared times, or pad ragged ones by repeating each path's last time.
    Concrete times stay NumPy arrays (checked eagerly, constants under `jit`)."""
    if (
        isinstance(ts, Sequence)
        and not isinstance(ts, (str, bytes))
        and (len(ts) > 0 and jnp.ndim(ts[0]) == 1)
    ):
        if len(ts) != batch:
            raise ValueError(
                f"Got {len(ts)} arrays of save times for a batch of {batch} paths; "
                "pass one array per path."
            )
        lengths = [len(t) for t in ts]
        if min(lengths) < 1:
            raise ValueError("Every path needs at least one save time.")
        n = max(lengths)
        xp = jnp if any(isinstance(t, jax.core.Tracer) for t in ts) else np
        padded = xp.stack(
            [
                xp.concatenate(
                    [xp.asarray(t), xp.repeat(xp.asarray(t)[-1:], n - len(t))]
                )
                for t in ts
            ]
        )
        mask = np.arange(n)[None, :] < np.asarray(lengths)[:, None]
        return padded, mask
    # Keep concrete inputs as NumPy so that they can be checked eagerly even under jit.
    ts = ts if isinstance(ts, jax.Array) else np.asarray(ts)
    if ts.ndim == 1:
        ts = ts[None].repeat(batch, axis=0)
    elif ts.ndim != 2 or ts.shape[0] != batch:
        raise ValueError(
            "`ts` must be shared save times of shape (n,), per-path times of shape "
            f"(batch, n) = ({batch}, n), or a list of 1-D arrays; got shape {ts.shape}."
        )
    if ts.shape[1] < 1:
        raise ValueError("`ts` must hold at least one save time.")
    return ts, np.ones(ts.shape, dtype=bool)


def check_times(ts, mask, t0, t1) -> None:
    """Eager checks on concrete save times: finite, strictly increasing, in [t0, t1]."""
    ts_np, mask_np = np.asarray(ts), np.asarray(mask)
    if not np.all(np.isfinite(ts_np[mask_np])):
        raise ValueError(
            "`ts` contains NaN or infinite times; every save time must be finite."
        )
    steps = np.diff(ts_np, axis=1)
    valid = mask_np[:, 1:]
    if np.any(steps[valid] <= 0):
        bad = int(np.argwhere((steps <= 0) & valid)[0, 0])
        raise ValueError(
            f"Save times of path {bad} are not strictly increasing; sort them and "
            "drop duplicates."
        )
    if t0 is not None and np.any(ts_np[mask_np] < t0):
        raise ValueError(
            f"Save times before t0={t0}; every save time must lie in [t0, t1]."
        )
    if t1 is not None and np.any(ts_np[mask_np] > t1):
        raise ValueError(
            f"Save times after t1={t1}; every save time must lie in [t0, t1]."
        )


def save_times(ts, batch: int, t0, t1, dtype):
    """Checked save times of every path, in the state's precision: `(ts, mask,
    ts_host, t0, t1)` with `ts_host` the concrete times as NumPy (`None` when traced,
    then checked at run time), and `t0`, `t1` defaulting to the first and last time."""
    ts, mask = batched_times(ts, batch)
    if is_concrete(ts):
        check_times(ts, mask, t0, t1)
        ts_np = np.asarray(ts)
        t0 = float(ts_np[:, 0].min()) if t0 is None else t0
        t1 = float(ts_np.max()) if t1 is None else t1
    elif t0 is None or t1 is None:
        raise ValueError(
            "Pass `t0` and `t1` as numbers when `ts` is traced (under jit)."
        )
    else:
        ts = eqx.error_if(ts, ~jnp.isfinite(ts), "`ts` contains NaN or infinite times.")
        ts = eqx.error_if(
            ts,
            (jnp.diff(ts, axis=1) <= 0) & mask[:, 1:],
            "Save times must be strictly increasing for every path.",
        )
    if not float(t1) > float(t0):
        raise ValueError(f"Need t0 < t1, got t0={t0}, t1={t1}.")
    # Times in the state's precision (no float64 request when x64 is off); concrete
    # times stay on the host too, for building step grids as constants.
    time_dtype = jax.dtypes.canonicalize_dtype(np.result_type(ts.dtype, dtype))
    ts_host = np.asarray(ts, time_dtype) if is_concrete(ts) else None
    return jnp.asarray(ts, time_dtype), jnp.asarray(mask), ts_host, t0, t1


def batched_initial_state(y0: PyTree) -> tuple[PyTree, int]:
    """`y0` as floating arrays with a common leading batch axis, finite (checked
    eagerly when concrete, at run time when traced), and the batch size."""
    y0 = jtu.tree_map(_as_float_array, y0)
    leaves = jtu.tree_leaves(y0)
    if not leaves or any(leaf.ndim < 2 for leaf in leaves):
        shapes = [leaf.shape for leaf in leaves]
        raise ValueError(
            f"`y0` must be batched, shape (batch, *state), got shape(s) {shapes}; for "
            "one path use y0[None]."
        )
    batch = leaves[0].shape[0]
    if any(leaf.shape[0] != batch for leaf in leaves):
        raise ValueError(
            "Every array of `y0` needs the same leading batch size, got "
            f"{[leaf.shape[0] for leaf in leaves]}."
        )
    return jtu.tree_map(_check_finite, y0), batch


def _as_float_array(x) -> Array:
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        x = x.astype(jnp.result_type(float))
    return x


def _check_finite(y: Array) -> Array:
    if is_concrete(y):
        if not np.all(np.isfinite(np.asarray(y))):
            raise ValueError("`y0` contains NaN or infinite values.")
        return y
    return eqx.error_if(y, ~jnp.isfinite(y), "`y0` contains NaN or infinite values.")


def per_path_keys(key, batch: int):
    """One typed key per path, from one key or from `batch` keys (typed or raw)."""
    key = jnp.asarray(key) if not isinstance(key, jax.Array) else key
    if not jnp.issubdtype(key.dtype, jax.dtypes.prng_key) and key.shape[-1:] == (2,):
        key = jr.wrap_key_data(key)
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        if key.ndim == 0:
            return jr.split(key, batch)
        if key.shape == (batch,):
            return key
    raise ValueError(
        f"`key` must be one PRNG key or one per path ({batch}); got shape {key.shape}."
    )
