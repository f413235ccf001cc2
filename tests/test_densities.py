"""The 2-D densities with known log-density: normalised, and their samplers draw from
them; scikit-learn's digits split."""

import jax.numpy as jnp
import numpy as np
import pytest
from helpers import mean_tolerance

from sdekit.data import load_digits, TOY_DENSITIES, toy_density


def _grid(half_width=6.0, h=0.05):
    # Cell midpoints; h divides the checkerboard's unit squares, so its integral is exact.
    g = np.arange(-half_width + h / 2, half_width, h)
    xx, yy = np.meshgrid(g, g)
    return jnp.asarray(np.stack([xx.ravel(), yy.ravel()], 1), jnp.float32), h**2


@pytest.mark.parametrize("name", TOY_DENSITIES)
def test_density_is_normalised_and_matches_its_sampler(name, getkey):
    density = toy_density(name)
    points, cell = _grid()
    # In chunks: the moons' log-density holds a (points, nodes) array.
    log_p = np.concatenate(
        [np.asarray(density.log_prob(points[i : i + 5000])) for i in range(0, len(points), 5000)]
    )
    p = np.exp(log_p.astype(np.float64))
    # The midpoint rule on a 0.05 grid.
    assert p.sum() * cell == pytest.approx(1.0, abs=1e-2)
    # The sampler's mean and second moment against the density's, by the same sum.
    x = np.asarray(density.sample(getkey(), 20000), np.float64)
    pts = np.asarray(points, np.float64)
    for f in (lambda z: z[:, 0], lambda z: z[:, 1], lambda z: (z**2).sum(1)):
        expected = (f(pts) * p).sum() * cell
        sd = float(np.std(f(x)))
        assert abs(f(x).mean() - expected) < mean_tolerance(sd, 20000) + 0.01 * abs(expected)


def test_unknown_density():
    with pytest.raises(ValueError, match="Unknown density"):
        toy_density("spiral")


def test_digits_split():
    x_train, y_train, x_test, y_test = load_digits()
    assert x_train.shape[1] == x_test.shape[1] == 64
    assert len(x_train) + len(x_test) == 1797
    assert 0 <= x_train.min() and x_train.max() <= 1
    assert set(np.unique(y_test)) == set(range(10))
    again = load_digits()[0]
    assert np.array_equal(again, x_train)
