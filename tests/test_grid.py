import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sdekit import step_grid


def _random_save_times(rng, n, num_steps, pad):
    """Save times mixing random points, uniform-grid points and both ends, plus
    padding that repeats the last time; in float32, where near-ties are ulps apart."""
    raw = np.sort(rng.uniform(size=n))
    on_uniform = np.round(raw * num_steps) / num_steps
    ts = np.sort(np.where(rng.uniform(size=n) < 0.5, on_uniform, raw))
    return np.concatenate([ts, np.repeat(ts[-1:], pad)]).astype(np.float32)


def _check(grid, ts, num_steps):
    grid = np.asarray(grid)
    assert grid.shape == (num_steps + ts.shape[0] + 1,)
    assert grid[0] == 0.0 and grid[-1] == 1.0
    assert np.all(np.diff(grid) > 0)
    assert np.all(np.isin(ts, grid))
    # The uniform step bound holds on the merged grid.
    assert np.diff(grid).max() <= 1.0 / num_steps + 1e-6


@pytest.mark.parametrize("num_steps", [1, 7, 100])
def test_grid_contains_saves_and_is_strictly_increasing(num_steps):
    rng = np.random.default_rng(num_steps)
    for _ in range(200):
        ts = _random_save_times(
            rng, int(rng.integers(1, 12)), num_steps, int(rng.integers(0, 4))
        )
        _check(step_grid(0.0, 1.0, num_steps, ts), ts, num_steps)


def test_traced_grid_equals_host_grid():
    # The same merge traced under jit/vmap (per-path save times) as on the host.
    rng = np.random.default_rng(0)
    ts = np.stack([_random_save_times(rng, 6, 10, 2) for _ in range(64)])
    traced = jax.jit(jax.vmap(lambda t: step_grid(0.0, 1.0, 10, t)))(jnp.asarray(ts))
    for row, t in zip(np.asarray(traced), ts):
        _check(row, t, 10)
        np.testing.assert_allclose(row, step_grid(0.0, 1.0, 10, t), rtol=1e-6)
