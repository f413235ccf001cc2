"""The posterior over the parameters of an MA-fBM model of a series, by NUTS."""

import math
import time
from typing import Literal

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import numpyro
import numpyro.distributions as dist
from jaxtyping import ArrayLike
from numpyro.infer import init_to_value, MCMC, NUTS

from ._hurst import (
    _check_inputs,
    _log_vh,
    estimate_hurst,
    estimation_setup,
    EstimationSetup,
    HurstEstimate,
    Model,
)
from ._kalman import _gaussian_log_likelihood, _innovations


def fou_numpyro_model(
    times: ArrayLike,
    ys: ArrayLike,
    *,
    model: Model = "fou",
    obs_noise: bool = True,
    setup: EstimationSetup | None = None,
) -> None:
    r"""A numpyro model of a series $y_i = X(t_i) + \varepsilon_i$ with $X$ scaled fBM
    (`model="fbm"`) or a fractional OU process (`model="fou"`) driven by MA-fBM, and
    its exact Kalman likelihood ([`sdekit.fractional.fou_log_likelihood`][], with
    the estimation setup of [`sdekit.fractional.estimate_hurst`][]).

    Priors, relative to the data's scale $s$ (the standard deviation of its steps)
    so that they suit any units:

    - `hurst` $\sim \mathcal{U}(0, 1)$;
    - `log_step_std` $\sim \mathcal{N}(\log s, 2^2)$: the log standard deviation of
      one step of $\sigma B^H$ at the finest spacing, a scale nearly independent of
      $H$ a posteriori (unlike $\sigma$ itself, which NUTS would find correlated
      with $H$);
    - `noise_ratio` $\sim \mathrm{HalfNormal}(1)$ (if `obs_noise`): $r$ over that
      step standard deviation;
    - `fou` only: `theta_span` $\sim \mathrm{LogNormal}(0, 2^2)$, $\theta$ times
      the series' span, and `mu` $\sim \mathcal{N}(\bar y, (10\, \mathrm{sd}\, y)^2)$.

    Deterministic sites give `sigma` (data time units, $\mathrm{Var}\,B(1) = 1$),
    `obs_std` and `theta`. Run it with `numpyro.infer.MCMC(NUTS(fou_numpyro_model))`
    in float64 (`jax.enable_x64`), passing concrete NumPy `times` and `ys` (NaN:
    missing).
    """
    times = np.asarray(times, np.float64)
    ys = np.asarray(ys, np.float64)
    setup = setup or estimation_setup(times)
    observed = ys[~np.isnan(ys)]
    scale = float(np.std(np.diff(observed))) or 1.0
    hurst = numpyro.sample("hurst", dist.Uniform(0.0, 1.0))
    log_step_std = numpyro.sample("log_step_std", dist.Normal(math.log(scale), 2.0))
    step_std = jnp.exp(log_step_std)
    # sigma' in the rescaled time of the setup, in Daems et al.'s normalisation.
    sigma_unit = step_std * jnp.exp(
        -0.5 * _log_vh(hurst) - hurst * math.log(setup.spacing)
    )
    obs_std = 0.0
    if obs_noise:
        obs_std = numpyro.sample("noise_ratio", dist.HalfNormal(1.0)) * step_std
    if model == "fou":
        theta_span = numpyro.sample("theta_span", dist.LogNormal(0.0, 2.0))
        theta = theta_span / setup.span
        mu = numpyro.sample(
            "mu",
            dist.Normal(float(np.mean(observed)), 10 * float(np.std(observed)) or 1.0),
        )
        numpyro.deterministic("theta", theta * setup.scale)
    else:
        theta, mu = 0.0, 0.0
    noise = setup.noise(hurst)
    ratio2 = (obs_std / sigma_unit) ** 2
    variances, innovations, counted = _innovations(
        noise,
        theta,
        ratio2,
        ys,
        mu,
        jnp.asarray(setup.steps),
        jnp.asarray(setup.index),
        True,
    )
    numpyro.factor(
        "log_likelihood",
        _gaussian_log_likelihood(variances, innovations[:, 0], counted, sigma_unit**2),
    )
    numpyro.deterministic(
        "sigma",
        sigma_unit * setup.scale**hurst * jnp.exp(0.5 * _log_vh(hurst)),
    )
    numpyro.deterministic("obs_std", jnp.asarray(obs_std))


def hurst_posterior(
    ys: ArrayLike,
    *,
    dt: float | None = None,
    times: ArrayLike | None = None,
    model: Model = "fbm",
    obs_noise: Literal["auto"] | bool = "auto",
    num_warmup: int = 300,
    num_samples: int = 300,
    num_chains: int = 1,
    seed: int = 0,
    num_components: int = 12,
) -> tuple[HurstEstimate, dict[str, np.ndarray]]:
    """The posterior of the Hurst index (and the other parameters) of a series by NUTS
    on [`sdekit.fractional.fou_numpyro_model`][], started at the maximum-likelihood
    estimate of [`sdekit.fractional.estimate_hurst`][] (which also decides, with
    `obs_noise="auto"`, whether the model has observation noise).

    **Returns:** `(estimate, samples)`: a [`sdekit.fractional.HurstEstimate`][] with
    `hurst`, `hurst_std` and `hurst_interval` the posterior mean, standard deviation
    and 95% equal-tailed interval (the other parameters: posterior means;
    `log_likelihood`: the maximum's), and the samples of every site. At 2000
    points with the default 300 + 300 steps it takes one to two minutes.
    """
    start = time.perf_counter()
    for name, value in (
        ("num_warmup", num_warmup),
        ("num_samples", num_samples),
        ("num_chains", num_chains),
    ):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"`{name}` must be a positive int, got {value!r}.")
    mle = estimate_hurst(
        ys,
        dt=dt,
        times=times,
        model=model,
        obs_noise=obs_noise,
        num_components=num_components,
    )
    ys_c, times_c, _ = _check_inputs(ys, dt, times, model, obs_noise)
    with_noise = mle.obs_std > 0 if obs_noise == "auto" else bool(obs_noise)
    with jax.enable_x64(True):
        setup = estimation_setup(times_c, num_components)
        h = min(max(mle.hurst, 0.01), 0.99)
        # The standard deviation of one step of sigma B^H at the finest spacing.
        step_std = mle.sigma * (setup.spacing / setup.scale) ** h
        init = {"hurst": h, "log_step_std": math.log(max(step_std, 1e-300))}
        if with_noise:
            init["noise_ratio"] = max(mle.obs_std / max(step_std, 1e-300), 1e-3)
        if model == "fou":
            assert mle.theta is not None and mle.mu is not None  # set for fou
            init["theta_span"] = max(mle.theta / setup.scale * setup.span, 1e-3)
            init["mu"] = mle.mu
        kernel = NUTS(
            fou_numpyro_model,
            init_strategy=init_to_value(values=init),
            target_accept_prob=0.8,
        )
        mcmc = MCMC(
            kernel,
            num_warmup=num_warmup,
            num_samples=num_samples,
            num_chains=num_chains,
            chain_method="sequential",
            progress_bar=False,
        )
        mcmc.run(
            jr.key(seed),
            times_c,
            ys_c,
            model=model,
            obs_noise=with_noise,
            setup=setup,
            extra_fields=("diverging",),
        )
        samples = {k: np.asarray(v) for k, v in mcmc.get_samples().items()}
        divergences = int(np.sum(np.asarray(mcmc.get_extra_fields()["diverging"])))
    hurst = samples["hurst"]
    lo, hi = np.quantile(hurst, [0.025, 0.975])
    estimate = HurstEstimate(
        hurst=float(np.mean(hurst)),
        hurst_std=float(np.std(hurst)),
        sigma=float(np.mean(samples["sigma"])),
        obs_std=float(np.mean(samples["obs_std"])),
        theta=float(np.mean(samples["theta"])) if model == "fou" else None,
        mu=float(np.mean(samples["mu"])) if model == "fou" else None,
        log_likelihood=mle.log_likelihood,
        model=model,
        num_observed=mle.num_observed,
        converged=mle.converged and divergences == 0,
        seconds=time.perf_counter() - start,
        hurst_interval=(float(lo), float(hi)),
        details={
            **mle.details,
            "method": "nuts",
            "mle_hurst": mle.hurst,
            "mle_hurst_std": mle.hurst_std,
            "num_samples": int(hurst.shape[0]),
            "divergences": divergences,
        },
    )
    return estimate, samples
