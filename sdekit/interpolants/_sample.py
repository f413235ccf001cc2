r"""Sampling a stochastic interpolant: the probability-flow ODE $\dot X = b(t, X)$ and
the forward / backward SDEs $dX = (b \pm \epsilon s)\,dt + \sqrt{2\epsilon}\,dW$
(arXiv 2303.08797, section 2.3), on diffrax.

A batch is solved as one state: one diffrax loop over an `(n, d)` array, the fields
mapped over points inside the vector field.
"""

from collections.abc import Callable

import diffrax as dfx
import jax.numpy as jnp
import jax.random as jr
import lineax as lx
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray

from .._brownian import GridBrownianPath
from ._fields import check_labels, scaled_score_field, velocity_field
from ._model import InterpolantModel


def _check_points(u, dim: int, name: str):
    u = jnp.asarray(u)
    if u.ndim != 2 or u.shape[1] != dim:
        raise ValueError(
            f"`{name}` must have shape (n, {dim}) (a batch of points); got {u.shape}. "
            "For one point use x[None]."
        )
    return u


def probability_flow(
    model: InterpolantModel,
    u0: Float[ArrayLike, "n d"],
    *,
    t0: float = 0.0,
    t1: float = 1.0,
    labels: ArrayLike | None = None,
    guidance: float | None = None,
    steps: int | None = None,
    rtol: float = 1e-4,
    atol: float = 1e-4,
    solver: dfx.AbstractSolver | None = None,
    max_steps: int = 4096,
) -> Float[Array, "n d"]:
    r"""Integrate the probability-flow ODE $\dot u = b(t, u)$ from `t0` to `t1` (in
    either direction), in model coordinates.

    **Arguments:**

    - `model`: an [`sdekit.interpolants.InterpolantModel`][].
    - `u0`: points at `t0`, shape `(n, d)`.
    - `t0`, `t1`: the times to integrate between.
    - `labels`, `guidance`: class labels `(n,)` (or one for all) for a conditional
        model, and the classifier-free guidance weight $w$:
        $b_w = b(\cdot, \varnothing) + w\,(b(\cdot, y) - b(\cdot, \varnothing))$
        (default 1: plain conditional).
    - `steps`: `None` (default) for adaptive steps (`solver`, default
        `diffrax.Tsit5()`, with `diffrax.PIDController(rtol, atol)`); an integer for
        that many Euler steps (few-step sampling).
    - `max_steps`: the adaptive solver's step budget.

    **Returns:** the points at `t1`, shape `(n, d)`.
    """
    u0 = _check_points(u0, model.dim, "u0")
    labels = check_labels(model, labels, u0.shape[0], guidance)
    field = velocity_field(model, labels, guidance)
    term = dfx.ODETerm(lambda t, u, args: field(t, u))
    if steps is not None:
        if steps < 1:
            raise ValueError(f"`steps` must be a positive integer, got {steps}.")
        solver, controller = dfx.Euler(), dfx.ConstantStepSize()
        dt0, max_steps = (t1 - t0) / steps, steps
    else:
        solver = dfx.Tsit5() if solver is None else solver
        controller = dfx.PIDController(rtol=rtol, atol=atol)
        dt0 = None
    sol = dfx.diffeqsolve(
        term,
        solver,
        t0,
        t1,
        dt0,
        u0,
        stepsize_controller=controller,
        max_steps=max_steps,
        saveat=dfx.SaveAt(t1=True),
    )
    assert sol.ys is not None  # saved at t1
    return sol.ys[-1]


def _eps_schedule(
    model: InterpolantModel, eps: float | Callable[[Array], Array]
) -> Callable[[Array], Array]:
    if callable(eps):
        return eps
    eps = float(eps)
    if not eps >= 0:
        raise ValueError(f"`eps` must be >= 0, got {eps}.")
    return lambda t: eps * model.noise_scale(t) ** 2


def solve_sde(
    model: InterpolantModel,
    u0: Float[ArrayLike, "n d"],
    key: PRNGKeyArray,
    *,
    eps: float | Callable = 1.0,
    direction: str = "forward",
    steps: int = 500,
    t_end: float = 1e-3,
    labels: ArrayLike | None = None,
    guidance: float | None = None,
) -> Float[Array, "n d"]:
    r"""Integrate the forward SDE $dX = (b + \epsilon s)\,dt + \sqrt{2\epsilon}\,dW$
    from $t = 0$ to 1, or the backward SDE $dX = (b - \epsilon s)\,dt +
    \sqrt{2\epsilon}\,dW$ from 1 to 0 (`direction="backward"`), by Euler-Maruyama on
    `steps` equal steps in model coordinates. Both have the interpolant's marginals
    $\rho_t$ for every $\epsilon(t) \ge 0$.

    **Diffusion coefficient.** A number `eps` means $\epsilon(t) = \text{eps}\cdot
    \sigma(t)^2$, the noise scale of the model (see
    [`sdekit.interpolants.InterpolantModel`][]): then $\epsilon s$ stays finite where
    $\sigma \to 0$ and uniform steps stay stable up to the ends. A callable
    `eps(t)` gives any other $\epsilon(t)$.

    **Ends.** The SDE is run on $[t_\text{lo}, 1 - t_\text{end}]$ where $t_\text{lo}$
    is 0 when the base is Gaussian (its score is known there) and `t_end` otherwise;
    the last stretch to the far end is one Euler step of the probability-flow ODE
    (the denoising step: the noise there is of scale $\sigma(1 - t_\text{end})$).

    **Returns:** the points at the far end (`t = 1` forward, `0` backward).
    """
    u0 = _check_points(u0, model.dim, "u0")
    if direction not in ("forward", "backward"):
        raise ValueError(
            f"`direction` must be 'forward' or 'backward', got {direction!r}."
        )
    if not model.has_score():
        model.score(0.5, u0[0])  # raises the explanatory error
    if not (isinstance(steps, int) and steps >= 1):
        raise ValueError(f"`steps` must be a positive integer, got {steps!r}.")
    n, d = u0.shape
    labels = check_labels(model, labels, n, guidance)
    epsilon = _eps_schedule(model, eps)
    b = velocity_field(model, labels, guidance)
    scaled_score = scaled_score_field(model, labels, guidance)
    sign = 1.0 if direction == "forward" else -1.0

    def drift_in_t(t, u):
        sigma2 = model.noise_scale(t) ** 2
        return b(t, u) + sign * epsilon(t) / sigma2 * scaled_score(t, u)

    t_lo = 0.0 if model.gaussian_latent else t_end
    t_hi = 1.0 - t_end
    # Integrate in s = t (forward) or s = 1 - t (backward): always forwards in s.
    if direction == "forward":
        start, stop, to_t, dt_ds = t_lo, t_hi, (lambda s: s), 1.0
    else:
        start, stop, to_t, dt_ds = 1.0 - t_hi, 1.0 - t_lo, (lambda s: 1.0 - s), -1.0

    def drift(s, y, args):
        return dt_ds * drift_in_t(to_t(s), y.reshape(n, d)).reshape(-1)

    def diffusion(s, y, args):
        scale = jnp.sqrt(2 * epsilon(to_t(s)))
        return lx.DiagonalLinearOperator(jnp.full(y.shape, scale, y.dtype))

    grid = jnp.linspace(start, stop, steps + 1, dtype=u0.dtype)
    path = GridBrownianPath(grid, (n * d,), key, presample=False)
    terms = dfx.MultiTerm(dfx.ODETerm(drift), dfx.ControlTerm(diffusion, path))
    sol = dfx.diffeqsolve(
        terms,
        dfx.Euler(),
        start,
        stop,
        None,
        u0.reshape(-1),
        stepsize_controller=dfx.StepTo(ts=grid),
        max_steps=steps,
        saveat=dfx.SaveAt(t1=True),
    )
    assert sol.ys is not None  # saved at t1
    u = sol.ys[-1].reshape(n, d)
    # The denoising step over the last stretch, by the ODE.
    if direction == "forward":
        return u + (1.0 - t_hi) * b(t_hi, u)
    if t_lo > 0:
        return u - t_lo * b(t_lo, u)
    return u


def sample(
    model: InterpolantModel,
    key: PRNGKeyArray,
    n: int,
    *,
    sde: bool = False,
    eps: float | Callable = 1.0,
    steps: int | None = None,
    labels: ArrayLike | None = None,
    guidance: float | None = None,
    rtol: float = 1e-4,
    atol: float = 1e-4,
    start: ArrayLike | None = None,
) -> Float[Array, "n d"]:
    """`n` samples of the model's data distribution, in data coordinates: base samples
    carried to $t = 1$ by the probability-flow ODE (default; `steps=None` adaptive,
    else Euler steps) or by the forward SDE (`sde=True`, `eps`, `steps` default 500).
    See [`sdekit.interpolants.probability_flow`][] and
    [`sdekit.interpolants.solve_sde`][].

    `start`, shape `(n, d)` in data coordinates, replaces the base samples: the points
    the samplers start from. The [mirror interpolant][sdekit.interpolants.MirrorInterpolant]
    needs it (its $x_0$ is a data point; give data points, and `sde=True` for new
    samples: its probability flow maps the data distribution to itself).

    **Returns:** the samples, shape `(n, d)`.
    """
    if not (isinstance(n, int) and n >= 1):
        raise ValueError(
            f"The number of samples must be a positive integer, got {n!r}."
        )
    k_base, k_sde = jr.split(key)
    if start is None:
        u0 = model.sample_base(k_base, n)
    else:
        start = jnp.asarray(start)
        if start.shape != (n, model.dim):
            raise ValueError(
                f"`start` must have shape ({n}, {model.dim}) (n points of the model's "
                f"dimension), got {start.shape}."
            )
        u0 = model.normalise(start)
    if sde:
        u1 = solve_sde(
            model,
            u0,
            k_sde,
            eps=eps,
            steps=500 if steps is None else steps,
            labels=labels,
            guidance=guidance,
        )
    else:
        u1 = probability_flow(
            model,
            u0,
            labels=labels,
            guidance=guidance,
            steps=steps,
            rtol=rtol,
            atol=atol,
        )
    return model.denormalise(u1)
