"""The fractional Ornstein-Uhlenbeck process, and user SDEs driven by fractional noise."""

import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray

from .._sde import SDE
from ..noise import FractionalNoise, solve_fractional
from ._kalman import fou_log_likelihood


class _FOUDrift(eqx.Module):
    theta: Float[ArrayLike, ""]
    mu: Float[ArrayLike, ""]

    def __call__(self, t, y, args):
        return self.theta * (self.mu - y)


class _ConstantDiffusion(eqx.Module):
    sigma: Float[ArrayLike, ""]

    def __call__(self, t, y, args):
        return self.sigma * jnp.ones_like(y)


class FractionalOU(eqx.Module):
    r"""The fractional Ornstein-Uhlenbeck process

    $$\mathrm{d}X = -\theta (X - \mu)\,\mathrm{d}t + \sigma\,\mathrm{d}\hat B^H,$$

    with $\hat B^H$ the MA-fBM `noise` ($\theta = 0$: scaled fractional Brownian
    motion). It can be simulated with any solver of the core
    ([`sdekit.fractional.FractionalOU.sample`][]) and, being linear-Gaussian with its
    noise's components, has an exact likelihood at arbitrary observation times
    ([`sdekit.fractional.FractionalOU.log_likelihood`][]).

    **Arguments:**

    - `theta`: mean-reversion rate $\theta \ge 0$.
    - `mu`: long-run level $\mu$.
    - `sigma`: diffusion scale $\sigma > 0$.
    - `noise`: the [`sdekit.noise.FractionalNoise`][] (carries $H$).
    """

    theta: Float[ArrayLike, ""]
    mu: Float[ArrayLike, ""]
    sigma: Float[ArrayLike, ""]
    noise: FractionalNoise

    def __check_init__(self):
        for name in ("theta", "sigma"):
            value = getattr(self, name)
            if isinstance(value, (int, float, np.ndarray, np.generic)):
                bad = np.any(np.asarray(value) < 0) or not np.all(
                    np.isfinite(np.asarray(value))
                )
                if bad:
                    raise ValueError(
                        f"`{name}` must be a finite number >= 0, got {value!r}."
                    )
        if not isinstance(self.noise, FractionalNoise):
            raise TypeError("`noise` must be an sdekit.noise.FractionalNoise.")

    def sde(self) -> SDE:
        """The [`sdekit.SDE`][] of the process on a state of shape `(1,)`, with the
        noise left Brownian: drive it with `noise` by
        [`sdekit.noise.solve_fractional`][] or [`sdekit.noise.augment`][]."""
        return SDE(
            _FOUDrift(self.theta, self.mu),
            _ConstantDiffusion(self.sigma),
            noise_structure="scalar",
            additive=True,
        )

    def sample(
        self,
        key: PRNGKeyArray,
        ts: Float[ArrayLike, " n"],
        x0: Float[ArrayLike, ""] | Float[ArrayLike, " paths"],
        *,
        num_paths: int = 1,
        dt0: float,
        t0: float = 0.0,
        **kwargs,
    ) -> Float[Array, "paths n"]:
        """Paths at times `ts` from $X(t_0) = $ `x0` (one value, or one per path),
        solved by [`sdekit.noise.solve_fractional`][] (Euler-Maruyama by default,
        `gamma_max * dt0 < 1/2`). Extra keyword arguments go to
        [`sdekit.solve`][].

        **Returns:** shape `(num_paths, n)`.
        """
        x0 = jnp.broadcast_to(jnp.asarray(x0, jnp.result_type(float)), (num_paths,))
        sol = solve_fractional(
            self.sde(),
            x0[:, None],
            ts,
            noise=self.noise,
            key=key,
            dt0=dt0,
            t0=t0,
            **kwargs,
        )
        return sol.ys[..., 0]

    def log_likelihood(
        self,
        times: Float[ArrayLike, " n"],
        ys: Float[ArrayLike, " n"],
        obs_std: Float[ArrayLike, ""] = 0.0,
    ) -> Float[Array, ""]:
        """The exact log-likelihood of observations `ys` (NaN: missing) at `times`
        with Gaussian observation noise of standard deviation `obs_std`; see
        [`sdekit.fractional.fou_log_likelihood`][]."""
        return fou_log_likelihood(
            times,
            ys,
            noise=self.noise,
            theta=self.theta,
            mu=self.mu,
            sigma=self.sigma,
            obs_std=obs_std,
        )
