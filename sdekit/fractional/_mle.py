"""Maximum likelihood for the fractional OU process by optimistix (BFGS, or any optax
optimiser), through the exact Kalman likelihood and its exact gradient."""

import dataclasses
from collections.abc import Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import optimistix as optx
from jaxtyping import ArrayLike

from ._fou import FractionalOU
from ._kalman import _check_series, fou_log_likelihood


_PARAMETERS = ("hurst", "theta", "mu", "sigma", "obs_std")


@dataclasses.dataclass(frozen=True)
class MLEResult:
    """The result of [`sdekit.fractional.fit_fou_mle`][].

    **Fields:** `process` (the fitted [`sdekit.fractional.FractionalOU`][]),
    `obs_std`, `log_likelihood`, `history` (the negative log-likelihood per
    observation at the start and at the end: the whole minimisation is one compiled
    call), `converged` (the solver met its tolerance), `num_steps`.
    """

    process: FractionalOU
    obs_std: float
    log_likelihood: float
    history: list[float]
    converged: bool
    num_steps: int = 0


def _to_unconstrained(process, obs_std, fit):
    values = {
        "hurst": jnp.log(process.noise.hurst / (1 - process.noise.hurst)),
        "theta": jnp.log(process.theta),
        "mu": jnp.asarray(process.mu),
        "sigma": jnp.log(process.sigma),
        "obs_std": jnp.log(obs_std),
    }
    return {name: jnp.asarray(values[name], jnp.float64) for name in fit}


def _from_unconstrained(params, process, obs_std):
    def get(name, transform, default):
        return transform(params[name]) if name in params else default

    hurst = get("hurst", jax.nn.sigmoid, process.noise.hurst)
    noise = eqx.tree_at(lambda n: n.hurst, process.noise, hurst)
    fitted = FractionalOU(
        theta=get("theta", jnp.exp, process.theta),
        mu=get("mu", lambda x: x, process.mu),
        sigma=get("sigma", jnp.exp, process.sigma),
        noise=noise,
    )
    return fitted, get("obs_std", jnp.exp, obs_std)


def fit_fou_mle(
    times: ArrayLike,
    ys: ArrayLike,
    init: FractionalOU,
    *,
    obs_std: float = 0.1,
    fit: Sequence[str] = _PARAMETERS,
    optimizer: optx.AbstractMinimiser | optax.GradientTransformation | None = None,
    max_steps: int = 100,
    tol: float = 1e-9,
    tail_noise: bool = False,
) -> MLEResult:
    r"""Maximum-likelihood estimates of the parameters of a
    [`sdekit.fractional.FractionalOU`][] observed with Gaussian noise: optimistix
    minimises the exact Kalman likelihood
    ([`sdekit.fractional.fou_log_likelihood`][]) with its exact gradient, the whole
    minimisation in one compiled call.

    The parameters in `fit` are optimised in unconstrained coordinates (logit $H$,
    $\log\theta$, $\mu$, $\log\sigma$, $\log r$); the others keep their values in
    `init`. Runs in float64 (inside `jax.enable_x64`).

    **Arguments:**

    - `times`, `ys`: the observations (NaN: missing), concrete arrays.
    - `init`: the starting process, which also fixes the noise's configuration
        ($K$, $\gamma_{\max}$, horizon, type, weights). Its `theta` and `obs_std`
        must be positive if they are fitted.
    - `obs_std`: the starting (or, if not fitted, fixed) observation noise.
    - `fit`: the names of the parameters to fit, among `"hurst"`, `"theta"`,
        `"mu"`, `"sigma"`, `"obs_std"`.
    - `optimizer`: an optimistix minimiser, or an optax optimiser (run by
        `optimistix.OptaxMinimiser`); default `optimistix.BFGS`.
    - `max_steps`: the most steps the solver may take.
    - `tol`: the solver's relative and absolute tolerance on the parameters and on
        the loss per observation (`rtol = atol = tol`; optimistix's Cauchy
        criterion).
    - `tail_noise`: see [`sdekit.fractional.fou_log_likelihood`][].

    **Returns:** an [`sdekit.fractional.MLEResult`][].
    """
    fit = tuple(fit)
    unknown = set(fit) - set(_PARAMETERS)
    if unknown:
        raise ValueError(
            f"Unknown parameters {sorted(unknown)} in `fit`; choose among {_PARAMETERS}."
        )
    for name, value in (("theta", init.theta), ("obs_std", obs_std)):
        # Through NumPy: float() of an ArrayLike does not type-check (it may be complex).
        if name in fit and not float(np.asarray(value)) > 0:
            raise ValueError(
                f"`{name}` is fitted on the log scale, so its starting value must be "
                f"positive, got {float(np.asarray(value))!r}."
            )
    times, ys = _check_series(times, ys)
    count = max(int(np.sum(~np.isnan(ys))) - 1, 1)
    if optimizer is None:
        solver = optx.BFGS(rtol=tol, atol=tol)
    elif isinstance(optimizer, optx.AbstractMinimiser):
        solver = optimizer
    else:
        solver = optx.OptaxMinimiser(optimizer, rtol=tol, atol=tol)
    with jax.enable_x64(True):
        # Parameters not fitted keep their values (a Python 0 for theta keeps the
        # closed-form transitions of fBM).
        process = init
        params = _to_unconstrained(process, obs_std, fit)

        def loss(params, _):
            fitted, r = _from_unconstrained(params, process, obs_std)
            return (
                -fou_log_likelihood(
                    times,
                    ys,
                    noise=fitted.noise,
                    theta=fitted.theta,
                    mu=fitted.mu,
                    sigma=fitted.sigma,
                    obs_std=r,
                    tail_noise=tail_noise,
                )
                / count
            )

        @eqx.filter_jit
        def minimise(params):
            solution = optx.minimise(
                loss, solver, params, max_steps=max_steps, throw=False
            )
            return (
                solution.value,
                loss(params, None),
                loss(solution.value, None),
                solution.result == optx.RESULTS.successful,
                solution.stats["num_steps"],
            )

        params, first, final, converged, num_steps = minimise(params)
        fitted, r = _from_unconstrained(params, process, obs_std)
        fitted = jax.tree_util.tree_map(
            lambda x: float(x) if isinstance(x, jax.Array) else x, fitted
        )
    return MLEResult(
        process=fitted,
        obs_std=float(r),
        log_likelihood=-float(final) * count,
        history=[float(first), float(final)],
        converged=bool(converged),
        num_steps=int(num_steps),
    )
