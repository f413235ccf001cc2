r"""Log-likelihood by the probability-flow ODE (the instantaneous change of variables,
Chen et al. 2018; arXiv 2303.08797, section 2.3):

$$\log \hat\rho_1(x) = \log \rho_0(X_0) - \int_0^1 \nabla\cdot b(t, X_t)\,dt,
\qquad \dot X_t = b(t, X_t),\ X_1 = x,$$

integrated backwards from $t = 1$ with the divergence exact ($d$ vector-Jacobian
products per point) or estimated by Hutchinson's $v^\top (\partial b / \partial x) v$
with Rademacher probes $v$ fixed for the solve (unbiased for the integral, but the
log is then a noisy estimate). Differentiable with respect to the model and the
points (diffrax's checkpointed adjoint).
"""

import diffrax as dfx
import jax
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray

from ._fields import check_labels
from ._model import InterpolantModel


def exact_divergence(f, u: Float[Array, " d"]) -> Float[Array, ""]:
    """$\\nabla \\cdot f(u)$ by $d$ vector-Jacobian products (the trace of the
    Jacobian, row by row)."""
    _, vjp = jax.vjp(f, u)
    rows = jax.vmap(vjp)(jnp.eye(u.shape[0], dtype=u.dtype))[0]
    return jnp.trace(rows)


def hutchinson_divergence(f, u: Float[Array, " d"], probes: Float[Array, "k d"]):
    """Hutchinson's estimate $\\frac1k \\sum_i v_i^\\top (\\partial f / \\partial u) v_i$
    of $\\nabla \\cdot f(u)$, one vector-Jacobian product per probe $v_i$."""
    _, vjp = jax.vjp(f, u)
    products = jax.vmap(vjp)(probes)[0]
    return jnp.mean(jnp.sum(products * probes, axis=1))


def log_likelihood(
    model: InterpolantModel,
    x: Float[ArrayLike, "n d"],
    *,
    labels: ArrayLike | None = None,
    hutchinson: bool = False,
    probes: int = 1,
    key: PRNGKeyArray | None = None,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    solver: dfx.AbstractSolver | None = None,
    max_steps: int = 4096,
) -> Float[Array, " n"]:
    """The model's log-density at the points `x` (data coordinates), by the
    probability-flow ODE from $t = 1$ back to 0.

    **Arguments:**

    - `model`: an [`sdekit.interpolants.InterpolantModel`][] whose base density has a
        `log_prob` (the standard Gaussian has).
    - `x`: points, shape `(n, d)`, finite.
    - `labels`: class labels for a conditional model ($\\log \\hat\\rho(x \\mid y)$).
    - `hutchinson`: estimate the divergence with `probes` Rademacher probes per point
        (drawn from `key`) instead of computing it exactly.
    - `rtol`, `atol`, `solver`, `max_steps`: the adaptive solve (default
        `diffrax.Tsit5()` with a `diffrax.PIDController`).

    **Returns:** the log-densities, shape `(n,)`, in nats, of the data coordinates.
    """
    x = jnp.asarray(x)
    if x.ndim != 2 or x.shape[1] != model.dim:
        raise ValueError(
            f"`x` must have shape (n, {model.dim}); got {x.shape}. For one point "
            "use x[None]."
        )
    n, d = x.shape
    labels = check_labels(model, labels, n, None)
    if hutchinson:
        if key is None:
            raise ValueError("Hutchinson's estimator needs a `key` for its probes.")
        v = jr.rademacher(key, (n, probes, d), dtype=x.dtype)
    else:
        v = None

    def one_point(t, u, label, probe):
        f = lambda u_: model.velocity(t, u_, label)  # noqa: E731
        if probe is None:
            div = exact_divergence(f, u)
        else:
            div = hutchinson_divergence(f, u, probe)
        return f(u), div

    def vector_field(t, state, args):
        u, _ = state
        if labels is None and v is None:
            return jax.vmap(lambda u_: one_point(t, u_, None, None))(u)
        if labels is None:
            return jax.vmap(lambda u_, p: one_point(t, u_, None, p))(u, v)
        if v is None:
            return jax.vmap(lambda u_, y: one_point(t, u_, y, None))(u, labels)
        return jax.vmap(lambda u_, y, p: one_point(t, u_, y, p))(u, labels, v)

    u1 = model.normalise(x)
    sol = dfx.diffeqsolve(
        dfx.ODETerm(vector_field),
        dfx.Tsit5() if solver is None else solver,
        1.0,
        0.0,
        None,
        (u1, jnp.zeros(n, u1.dtype)),
        stepsize_controller=dfx.PIDController(rtol=rtol, atol=atol),
        max_steps=max_steps,
        saveat=dfx.SaveAt(t1=True),
    )
    u0, integral = sol.ys[0][-1], sol.ys[1][-1]
    # `integral` ran from 1 to 0: it is minus the integral of the divergence.
    return model.base_log_prob(u0) + integral - model.log_scale()
