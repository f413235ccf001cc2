"""The exact likelihood of fractional Brownian motion observed with noise, from the
dense covariance of its increments."""

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Bool, Float


def fbm_increment_covariance(
    times: Float[ArrayLike, " m"], hurst: Float[ArrayLike, ""]
) -> Float[Array, "m-1 m-1"]:
    r"""The covariance of the increments $B(t_{i+1}) - B(t_i)$ of standard fBM
    ($\mathrm{Var}\,B(t) = t^{2H}$) between consecutive `times`:

    $$C_{ij} = \tfrac12\big(|t_{i+1} - t_j|^{2H} + |t_i - t_{j+1}|^{2H}
    - |t_{i+1} - t_{j+1}|^{2H} - |t_i - t_j|^{2H}\big),$$

    the fractional Gaussian noise's Toeplitz matrix on a regular grid.
    """
    times = jnp.asarray(times)
    return _increment_covariance(_log_distances(times), jnp.asarray(hurst, times.dtype))


def _log_distances(times) -> tuple[Array, Array]:
    # log|t_k - t_l| where positive (0 elsewhere), and where it is positive: the
    # powers are exp(2H log d), whose derivative in H is finite at d = 0 too.
    distance = jnp.abs(times[:, None] - times[None, :])
    positive = distance > 0
    return jnp.log(jnp.where(positive, distance, 1.0)), positive


def _increment_covariance(log_distances, hurst) -> Array:
    log_d, positive = log_distances
    # One power per pair of times; the increments' covariance combines four of them.
    power = jnp.where(positive, jnp.exp(2 * hurst * log_d), 0.0)
    return 0.5 * (power[1:, :-1] + power[:-1, 1:] - power[1:, 1:] - power[:-1, :-1])


def _noise_covariance(size: int, dtype) -> Array:
    # Independent noise e_i on the values is -e_i + e_{i+1} on the increments.
    eye = jnp.eye(size, dtype=dtype)
    return 2 * eye - jnp.eye(size, k=1, dtype=dtype) - jnp.eye(size, k=-1, dtype=dtype)


def _dense_profile(
    hurst: Float[Array, ""],
    noise_ratio2: Float[Array, ""],
    log_distances: tuple[Array, Array],
    increments: Float[Array, " N"],
    counted: Bool[Array, " N"],
) -> tuple[Array, Array]:
    """The log-likelihood of the `counted` increments maximised over the scale, and
    that scale (relative to the time unit of `log_distances`). Increments that are
    not counted (padding) get unit variance and value 0: they add nothing, so that
    series of different lengths share one compiled shape."""
    size = increments.shape[0]
    cov = _increment_covariance(log_distances, hurst)
    cov = cov + noise_ratio2 * _noise_covariance(size, cov.dtype)
    both = counted[:, None] & counted[None, :]
    cov = jnp.where(both, cov, jnp.eye(size, dtype=cov.dtype))
    factor = jnp.linalg.cholesky(cov)
    whitened = jax.scipy.linalg.solve_triangular(
        factor, jnp.where(counted, increments, 0.0), lower=True
    )
    count = jnp.sum(counted)
    sigma2 = jnp.sum(whitened**2) / count
    log_det = 2 * jnp.sum(jnp.log(jnp.diag(factor)))
    loglik = -0.5 * (count * jnp.log(2 * jnp.pi * sigma2) + log_det + count)
    return loglik, jnp.sqrt(sigma2)


def fbm_log_likelihood(
    times: Float[ArrayLike, " n"],
    ys: Float[ArrayLike, " n"],
    *,
    hurst: Float[ArrayLike, ""],
    sigma: Float[ArrayLike, ""] = 1.0,
    obs_std: Float[ArrayLike, ""] = 0.0,
) -> Float[Array, ""]:
    r"""The exact log-likelihood of observations $y_i = \sigma B^H(t_i) +
    \varepsilon_i$, $\varepsilon_i \sim \mathcal{N}(0, r^2)$, of scaled fractional
    Brownian motion (usual normalisation, $\mathrm{Var}\,B^H(t) = t^{2H}$) at
    arbitrary increasing times, from the dense covariance of the increments
    (from the covariance $\tfrac12(|s|^{2H} + |t|^{2H} - |t - s|^{2H})$ of $B^H(s)$ and $B^H(t)$) and its Cholesky factor, in
    $O(n^3)$ time.

    As for [`sdekit.fractional.fou_log_likelihood`][], the level is not assumed
    known (a flat prior on $X(t_1)$): the likelihood is $p(y_2, \dots, y_n \mid
    y_1)$, that of the increments. NaN observations are missing (left out). This is
    the likelihood that [`sdekit.fractional.estimate_hurst`][] maximises for
    series up to a few thousand points (`method="dense"`); the Kalman filter's is that
    of MA-fBM, its Markov approximation.

    **Arguments:**

    - `times`: strictly increasing observation times, `(n,)`.
    - `ys`: observations, `(n,)`, NaN where missing.
    - `hurst`: $H \in (0, 1)$.
    - `sigma`: the scale $\sigma > 0$.
    - `obs_std`: $r \ge 0$.

    **Returns:** the log-likelihood, a scalar. Differentiable in `hurst`, `sigma` and
    `obs_std` (use float64: the covariance is ill-conditioned for $H$ near 1).
    """
    times = np.asarray(times, np.float64)
    ys = np.asarray(ys, np.float64)
    if times.ndim != 1 or ys.shape != times.shape:
        raise ValueError(
            f"`times` and `ys` must be one-dimensional and of the same length, got "
            f"shapes {times.shape} and {ys.shape}."
        )
    seen = ~np.isnan(ys)
    if seen.sum() < 2:
        raise ValueError(
            "The series needs at least two observed (non-NaN) values: the first one "
            "only fixes the level."
        )
    times, ys = times[seen], ys[seen]
    dtype = jnp.result_type(float)
    increments = jnp.asarray(np.diff(ys), dtype)
    cov = fbm_increment_covariance(jnp.asarray(times, dtype), hurst)
    cov = sigma**2 * cov + obs_std**2 * _noise_covariance(increments.shape[0], dtype)
    factor = jnp.linalg.cholesky(cov)
    whitened = jax.scipy.linalg.solve_triangular(factor, increments, lower=True)
    count = increments.shape[0]
    return -0.5 * (
        count * jnp.log(2 * jnp.pi)
        + 2 * jnp.sum(jnp.log(jnp.diag(factor)))
        + jnp.sum(whitened**2)
    )
