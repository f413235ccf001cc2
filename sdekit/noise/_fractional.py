"""The MA-fBM noise source: configuration, weights, covariances and exact sampling."""

import math

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray

from .._custom_types import MAfBMKind, MAfBMWeights
from .._driving_noise import AbstractDrivingNoise
from .._sde import SDE
from ._augment import augment, augmented_initial_state, check_step_size
from ._mafbm import (
    check_hurst,
    check_kind,
    check_weights,
    exact_covariance,
    mafbm_covariance,
    mafbm_omega,
    mafbm_speeds,
    tail_variance,
)


def stationary_covariance(gammas: ArrayLike) -> np.ndarray:
    r"""$S_{ij} = 1/(\gamma_i + \gamma_j)$, the stationary covariance of the $K$
    Ornstein-Uhlenbeck components driven by one Brownian motion (float64 NumPy)."""
    g = np.asarray(gammas, np.float64)
    return 1.0 / (g[:, None] + g[None, :])


def psd_sqrt(cov: np.ndarray) -> np.ndarray:
    """A square root $L L^\\top = $ `cov` of a positive semi-definite matrix, by its
    eigendecomposition (S is Cauchy-like, so far too ill-conditioned for a Cholesky
    factorisation at large K; roundoff-negative eigenvalues are set to zero)."""
    vals, vecs = np.linalg.eigh(np.asarray(cov, np.float64))
    return vecs * np.sqrt(np.clip(vals, 0.0, None))


class FractionalNoise(AbstractDrivingNoise):
    r"""Markov-approximate fractional Brownian motion (MA-fBM), the noise source that
    makes an SDE fractional (Daems et al. 2024, *Variational Inference for SDEs
    Driven by Fractional Noise*, ICLR, section 3).

    $K$ Ornstein-Uhlenbeck processes driven by one Brownian motion,
    $\mathrm{d}Y_k = -\gamma_k Y_k\,\mathrm{d}t + \mathrm{d}W$, on the geometric grid
    of speeds $\gamma_k$ from $1/\gamma_{\max}$ to $\gamma_{\max}$, are combined with
    the optimal weights $\omega(H)$ into

    - type I (Mandelbrot-van Ness; stationary increments, the usual fBM up to the
      factor $V_H$): $\hat B(t) = \sum_k \omega_k (Y_k(t) - Y_k(0))$ with $Y(0)$
      drawn from the stationary law $\mathcal{N}(0, S)$, $S_{ij} = 1/(\gamma_i +
      \gamma_j)$;
    - type II (Riemann-Liouville; starts at rest, no stationary increments):
      $\hat B(t) = \sum_k \omega_k Y_k(t)$ with $Y(0) = 0$.

    $\hat B$ is a semimartingale: $\mathrm{d}\hat B = -\sum_k \omega_k \gamma_k Y_k
    \,\mathrm{d}t + \bar\omega\,\mathrm{d}W$ with $\bar\omega = \sum_k \omega_k$,
    which is what lets [`sdekit.noise.augment`][] turn any SDE driven by it into a
    Markov SDE on the state and the $K$ components. It is an
    [`sdekit.AbstractDrivingNoise`][]: `sdekit.solve(sde, ..., noise=FractionalNoise(H))`
    drives any SDE with it.

    **Arguments:**

    - `hurst`: $H \in (0, 1)$: a number, or a JAX scalar (e.g. `jax.nn.sigmoid` of a
        trainable parameter, for learnable $H$).
    - `num_components`: $K \ge 2$ (default 5).
    - `gamma_max`: the largest speed (default 20). Time scales from about
        $1/\gamma_{\max}$ to $\gamma_{\max}$ are represented; explicit solvers need
        $\gamma_{\max}\,\Delta t < 1/2$.
    - `horizon`: $T$, the interval $[0, T]$ on which $\omega$ minimises the
        integrated squared error (default 1).
    - `kind`: `"I"` (default) or `"II"`.
    - `weights`: `"optimal"` (default; Daems et al.'s least-squares weights for the
        path on $[0, T]$) or `"spectral"` (sdekit's least-squares fit of the
        transfer function, uniform in relative error over the speeds' band; see
        [`sdekit.noise.spectral_system`][]). The spectral weights are far more
        accurate at short time scales and for $H > 1/2$; they are what sdekit's
        Hurst estimation uses.
    """

    hurst: Float[ArrayLike, ""]
    num_components: int = eqx.field(static=True, default=5)
    gamma_max: float = eqx.field(static=True, default=20.0, converter=float)
    horizon: float = eqx.field(static=True, default=1.0, converter=float)
    kind: MAfBMKind = eqx.field(static=True, default="I")
    weights: MAfBMWeights = eqx.field(static=True, default="optimal")

    def __check_init__(self):
        check_hurst(self.hurst)
        check_kind(self.kind)
        check_weights(self.weights)
        mafbm_speeds(self.num_components, self.gamma_max)  # checks K and gamma_max
        if not (math.isfinite(self.horizon) and self.horizon > 0):
            raise ValueError(
                f"`horizon` must be a positive number (the length T of the interval "
                f"on which omega is optimal), got {self.horizon!r}."
            )

    @property
    def speeds(self) -> np.ndarray:
        """The speeds $\\gamma_k$, a float64 NumPy array of shape `(K,)`."""
        return mafbm_speeds(self.num_components, self.gamma_max)

    def omega(self) -> Float[Array, " K"]:
        """The weights $\\omega(H)$ (see [`sdekit.noise.mafbm_omega`][])."""
        return mafbm_omega(
            self.hurst, self.speeds, self.horizon, self.kind, self.weights
        )

    def lift(
        self,
        sde: SDE,
        y0: Array,
        key: PRNGKeyArray,
        *,
        dt0: float,
        solver: dfx.AbstractSolver | None,
    ) -> tuple[SDE, Array]:
        """The Markov SDE of `sde` driven by this noise ([`sdekit.noise.augment`][])
        and its initial states ([`sdekit.noise.augmented_initial_state`][]), after
        checking the step size ([`sdekit.noise.check_step_size`][])."""
        check_step_size(self, dt0, solver)
        y0 = jnp.asarray(y0)
        if y0.ndim != 2:
            raise ValueError(
                f"`y0` must have shape (batch, d), got shape {y0.shape}; for one path "
                "use y0[None]."
            )
        lifted = augment(sde, self, state_size=y0.shape[1])
        return lifted, augmented_initial_state(sde, self, y0, key)

    def observe(self, zs: Array, y0: Array) -> Array:
        """The state's part of augmented paths: their first `d` components."""
        return zs[..., : jnp.shape(y0)[-1]]

    def tail_variance(self) -> Float[Array, ""]:
        """The variance of the fine-scale part of fBM that the approximation
        leaves out (see [`sdekit.noise.tail_variance`][])."""
        return tail_variance(self.hurst, self.omega(), self.speeds)

    def covariance(
        self, ts: Float[ArrayLike, " n"], ss: Float[ArrayLike, " m"] | None = None
    ) -> Float[Array, "n m"]:
        """The covariance of the approximation, $\\mathbb{E}[\\hat B(t) \\hat B(s)]$,
        in closed form (times $\\ge 0$)."""
        return mafbm_covariance(self.omega(), self.speeds, ts, ss, self.kind)

    def exact_covariance(
        self, ts: Float[ArrayLike, " n"], ss: Float[ArrayLike, " m"] | None = None
    ) -> Float[Array, "n m"]:
        """The covariance of the fBM being approximated (see
        [`sdekit.noise.exact_covariance`][]); use float64."""
        return exact_covariance(self.hurst, ts, ss, self.kind)

    def initial_components(
        self, key: PRNGKeyArray, shape: tuple[int, ...] = (), dtype=None
    ) -> Float[Array, "*shape K"]:
        """$Y(0)$ for independent noise channels of the given shape: stationary
        $\\mathcal{N}(0, S)$ draws for type I, zeros for type II."""
        dtype = dtype or jnp.result_type(float)
        K = self.num_components
        if self.kind == "II":
            return jnp.zeros((*shape, K), dtype)
        root = jnp.asarray(psd_sqrt(stationary_covariance(self.speeds)), dtype)
        z = jr.normal(key, (*shape, K), dtype)
        return z @ root.T

    def sample(
        self,
        key: PRNGKeyArray,
        ts: Float[ArrayLike, " n"],
        num_paths: int | None = None,
    ) -> Float[Array, "*paths n"]:
        r"""Paths of $\hat B$ at times `ts`, simulated exactly (no time step): the
        components are a linear Gaussian system whose transition over $\Delta$ is
        $Y \mapsto e^{-\gamma \Delta} Y + \xi$, $\xi \sim \mathcal{N}(0, S \odot
        (1 - e^{-(\gamma_i + \gamma_j)\Delta}))$.

        **Arguments:**

        - `key`: a PRNG key.
        - `ts`: non-decreasing times $\ge 0$; $\hat B(0) = 0$.
        - `num_paths`: if given, that many independent paths.

        **Returns:** shape `(n,)`, or `(num_paths, n)`.
        """
        if num_paths is not None:
            keys = jr.split(key, num_paths)
            return jax.vmap(lambda k: self.sample(k, ts))(keys)
        omega = self.omega()
        dtype = omega.dtype
        ts = jnp.asarray(ts, dtype)
        gammas = jnp.asarray(self.speeds, dtype)
        S = jnp.asarray(stationary_covariance(self.speeds), dtype)
        steps = jnp.diff(jnp.concatenate([jnp.zeros((1,), dtype), ts]))
        init_key, step_key = jr.split(key)
        y0 = self.initial_components(init_key, (), dtype)

        def noise_root(dt):
            cov = S * -jnp.expm1(-(gammas[:, None] + gammas[None, :]) * dt)
            vals, vecs = jnp.linalg.eigh(cov)
            return vecs * jnp.sqrt(jnp.clip(vals, 0.0, None))[None, :]

        roots = jax.vmap(noise_root)(steps)
        normals = jr.normal(step_key, (ts.shape[0], self.num_components), dtype)

        def step(y, inputs):
            dt, root, z = inputs
            y = jnp.exp(-gammas * dt) * y + root @ z
            return y, y

        _, ys = jax.lax.scan(step, y0, (steps, roots, normals))
        offset = omega @ y0 if self.kind == "I" else 0.0
        return ys @ omega - offset
