"""Maximum likelihood for the fractional OU process with optax, through the exact
Kalman likelihood."""

import dataclasses
from collections.abc import Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import ArrayLike

from ._fou import FractionalOU
from ._kalman import _check_series, fou_log_likelihood


_PARAMETERS = ("hurst", "theta", "mu", "sigma", "obs_std")


@dataclasses.dataclass(frozen=True)
class MLEResult:
    """The result of [`sdekit.fractional.fit_fou_mle`][].

    **Fields:** `process` (the fitted [`sdekit.fractional.FractionalOU`][]),
    `obs_std`, `log_likelihood`, `history` (the negative log-likelihood per
    observation after each step), `converged`.
    """

    process: FractionalOU
    obs_std: float
    log_likelihood: float
    history: list[float]
    converged: bool


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
    optimizer: optax.GradientTransformationExtraArgs | None = None,
    max_steps: int = 100,
    tol: float = 1e-9,
    tail_noise: bool = False,
) -> MLEResult:
    r"""Maximum-likelihood estimates of the parameters of a
    [`sdekit.fractional.FractionalOU`][] observed with Gaussian noise, by optax on
    the exact Kalman likelihood ([`sdekit.fractional.fou_log_likelihood`][]) and its
    gradient.

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
    - `optimizer`: default `optax.lbfgs()` (with its zoom line search).
    - `max_steps`, `tol`: stop after `max_steps` steps or when the loss changes by
        less than `tol` per observation.
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
        if name in fit and not float(value) > 0:
            raise ValueError(
                f"`{name}` is fitted on the log scale, so its starting value must be "
                f"positive, got {float(value)!r}."
            )
    times, ys = _check_series(times, ys)
    count = max(int(np.sum(~np.isnan(ys))) - 1, 1)
    optimizer = optimizer or optax.lbfgs()
    with jax.enable_x64(True):
        # Parameters not fitted keep their values (a Python 0 for theta keeps the
        # closed-form transitions of fBM).
        process = init
        params = _to_unconstrained(process, obs_std, fit)

        def loss(params):
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

        state = optimizer.init(params)
        # Line searches (L-BFGS's) keep the last value and gradient in their state.
        if optax.tree_utils.tree_get(state, "value", None) is not None:
            from_state = optax.value_and_grad_from_state(loss)

            def value_and_grad(params, state):
                return from_state(params, state=state)
        else:

            def value_and_grad(params, state):
                return jax.value_and_grad(loss)(params)

        @jax.jit
        def step(params, state):
            value, grad = value_and_grad(params, state)
            updates, state = optimizer.update(
                grad, state, params, value=value, grad=grad, value_fn=loss
            )
            return optax.apply_updates(params, updates), state, value

        history, converged = [], False
        for _ in range(max_steps):
            params, state, value = step(params, state)
            history.append(float(value))
            if len(history) > 1 and abs(history[-2] - history[-1]) < tol:
                converged = True
                break
        final = float(loss(params))
        fitted, r = _from_unconstrained(params, process, obs_std)
        fitted = jax.tree_util.tree_map(
            lambda x: float(x) if isinstance(x, jax.Array) else x, fitted
        )
    return MLEResult(
        process=fitted,
        obs_std=float(r),
        log_likelihood=-final * count,
        history=history,
        converged=converged,
    )
