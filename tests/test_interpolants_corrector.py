"""The Feynman-Kac corrector against Gaussian targets with known annealed and product
laws."""

import jax.numpy as jnp
import numpy as np
import pytest
from helpers import mean_tolerance, variance_tolerance
from test_interpolants import exact_model

import sdekit.interpolants as si


def _check(x, mean, var, n_eff):
    for j in range(x.shape[1]):
        sd = float(np.sqrt(var[j]))
        assert abs(float(x[:, j].mean()) - mean[j]) < mean_tolerance(sd, n_eff)
        assert abs(float(x[:, j].var()) - var[j]) < variance_tolerance(var[j], n_eff)


def test_annealed_gaussian(getkey):
    # rho = N(m, c^2 I); rho^beta is N(m, c^2 / beta I).
    m, c, beta = jnp.array([1.0, -1.0]), 0.8, 2.5
    model = exact_model(si.LinearInterpolant(), m, c)
    # A constant diffusion: the target is smooth, and particles resampled where the
    # diffusion vanishes would not diversify again.
    constant = lambda t: 1.0 + 0.0 * t  # noqa: E731
    x, ess = si.feynman_kac_sample(
        [model], [beta], getkey(), 3000, steps=200, eps=constant
    )
    assert ess.shape == (200,)
    # Resampling correlates particles: judge the moments at half the particles.
    _check(np.asarray(x), np.asarray(m), np.full(2, c**2 / beta), 1500)
    # Without correction (beta = 1 proposal) the variance would be c^2: far outside.
    assert abs(float(x[:, 0].var()) - c**2) > variance_tolerance(c**2 / beta, 1500)


def test_product_of_two_models(getkey):
    m1, c1 = jnp.array([1.0, 0.0]), 0.6
    m2, c2 = jnp.array([-0.5, 1.0]), 0.9
    models = [exact_model(si.LinearInterpolant(), m, c) for m, c in ((m1, c1), (m2, c2))]
    constant = lambda t: 1.0 + 0.0 * t  # noqa: E731
    x, _ = si.feynman_kac_sample(
        models, [1.0, 1.0], getkey(), 3000, steps=200, eps=constant
    )
    precision = 1 / c1**2 + 1 / c2**2
    mean = (np.asarray(m1) / c1**2 + np.asarray(m2) / c2**2) / precision
    _check(np.asarray(x), mean, np.full(2, 1 / precision), 1500)


def test_resampling_and_checks(getkey):
    log_w = jnp.log(jnp.array([0.7, 0.1, 0.1, 0.1]))
    index = np.asarray(si.systematic_resample(getkey(), log_w))
    assert np.sum(index == 0) in (2, 3)
    assert float(si.effective_sample_size(jnp.zeros(10))) == pytest.approx(10.0)
    model = exact_model(si.LinearInterpolant(), jnp.zeros(2), 1.0)
    with pytest.raises(ValueError, match="exponent"):
        si.feynman_kac_sample([model], [1.0, 2.0], getkey(), 10)
    with pytest.raises(ValueError, match="positive"):
        si.feynman_kac_sample([model], [-1.0], getkey(), 10)
    ot = exact_model(si.LinearInterpolant(), jnp.zeros(2), 1.0, latent=False)
    with pytest.raises(ValueError, match="Gaussian base"):
        si.feynman_kac_sample([ot], [1.0], getkey(), 10)
