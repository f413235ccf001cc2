r"""The losses of a stochastic interpolant (Albergo, Boffi, Vanden-Eijnden, arXiv
2303.08797, equations 2.13, 2.15 and 2.16, with the denoiser's sign as the paper
writes it).

For a pair $(x_0, x_1)$, latent noise $z$ and time $t$, write $x_t = m + n$ and
$\dot x_t = \dot m + \dot n$, where $n$ is the Gaussian part of $x_t$ with scale
$\sigma(t)$ (see [`sdekit.interpolants.InterpolantModel`][]). Then

- velocity: $L_b = E[\tfrac12 |b(t, x_t)|^2 - \dot x_t \cdot b(t, x_t)]$,
- denoiser: $L_\eta = E[\tfrac12 |\eta(t, x_t)|^2 - (n/\sigma) \cdot \eta(t, x_t)]$,
- score: $L_s = E[\tfrac12 |s(t, x_t)|^2 + (n/\sigma^2) \cdot s(t, x_t)]$,

each minimised by the conditional expectation it names. The $1/\sigma$ terms (and
$\dot\gamma z$ for $\gamma = \sqrt{a t(1-t)}$) are unbounded at the ends, so these
losses use antithetic pairs: every draw is evaluated at $m + n$ and $m - n$, which
has the same law, and the two halves' singular terms cancel to leading order.

**Time distribution.** $t \sim U[t_\text{clip}, 1 - t_\text{clip}]$ (default
$t_\text{clip} = 10^{-3}$): the targets above are finite there for every interpolant
in this package ($\dot\alpha$ of the VP interpolant is infinite at $t = 1$).
"""

import jax
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, PRNGKeyArray

from ._coupling import AbstractCoupling, IndependentCoupling
from ._interpolant import ZeroGamma
from ._model import InterpolantModel


def _split_noise(model: InterpolantModel, t, x0, x1, z):
    """`(m, n, m_dot, n_dot)` with `x_t = m + n` and the time derivative
    `m_dot + n_dot`, `n` the Gaussian part flipped by antithetic sampling."""
    interpolant = model.interpolant
    alpha, beta, gamma = interpolant.alpha(t), interpolant.beta(t), interpolant.gamma(t)
    alpha_dot, beta_dot = interpolant.alpha_dot(t), interpolant.beta_dot(t)
    gamma_dot = interpolant.gamma.derivative(t)
    n = gamma * z
    n_dot = gamma_dot * z
    if model.gaussian_latent:
        m, m_dot = beta * x1, beta_dot * x1
        n, n_dot = n + alpha * x0, n_dot + alpha_dot * x0
    else:
        m = alpha * x0 + beta * x1
        m_dot = alpha_dot * x0 + beta_dot * x1
    return m, n, m_dot, n_dot


def _one_loss(model, t, x0, x1, z, label, antithetic):
    m, n, m_dot, n_dot = _split_noise(model, t, x0, x1, z)
    sigma = model.noise_scale(t)
    signs = (1.0, -1.0) if antithetic else (1.0,)
    terms: dict[str, float | Array] = {"velocity": 0.0, "noise": 0.0}
    for sign in signs:
        x_t = m + sign * n
        out = model.network(t, x_t, label)
        b = out[: model.dim]
        terms["velocity"] += 0.5 * jnp.sum(b**2) - jnp.dot(m_dot + sign * n_dot, b)
        if model.loss == "denoiser":
            eta = out[model.dim :]
            terms["noise"] += 0.5 * jnp.sum(eta**2) - jnp.dot(sign * n / sigma, eta)
        elif model.loss == "score":
            s = out[model.dim :]
            terms["noise"] += 0.5 * jnp.sum(s**2) + jnp.dot(sign * n / sigma**2, s)
    return {name: value / len(signs) for name, value in terms.items()}


def _paired_base(model, x1, key, coupling):
    k_base, k_pair = jr.split(key)
    x0 = model.sample_base(k_base, x1.shape[0]).astype(x1.dtype)
    if isinstance(coupling, IndependentCoupling):
        return x0  # the identity pairing: no gather
    return x0[coupling.pairing(x0, x1, k_pair)]


def pair_minibatch(
    model: InterpolantModel,
    batch: dict[str, Array],
    key: PRNGKeyArray,
    *,
    coupling: AbstractCoupling,
) -> dict[str, Array]:
    """The minibatch with its base samples drawn and paired with its data by
    `coupling`, as `batch["x0"]` (model coordinates), which
    [`sdekit.interpolants.interpolant_loss`][] then uses instead of drawing its own.

    It is the `prepare_fn` of [`sdekit.train.fit`][] for an OT coupling: the trainer
    runs it on all the minibatches of a compiled call at once, so that the exact
    assignments of a call are solved together on the host, one thread per core.
    """
    x1 = model.normalise(batch["x"])
    return {**batch, "x0": _paired_base(model, x1, key, coupling)}


def interpolant_loss(
    model: InterpolantModel,
    batch: dict[str, Array],
    key: PRNGKeyArray,
    *,
    coupling: AbstractCoupling = IndependentCoupling(),
    t_clip: float = 1e-3,
    label_dropout: float = 0.1,
) -> tuple[Array, dict[str, Array]]:
    """The interpolant's loss on a minibatch, in the form
    [`sdekit.train.fit`][] takes: `(loss, metrics)`.

    **Arguments:**

    - `model`: an [`sdekit.interpolants.InterpolantModel`][].
    - `batch`: `{"x": data (n, d)}` in data coordinates, with `"label"` (n,) for a
        conditional model, and optionally `"x0"`: base samples already paired with the
        data (model coordinates, see [`sdekit.interpolants.pair_minibatch`][]), which
        then replace the draw and the coupling.
    - `key`: draws the base samples, the coupling (without `"x0"`), the times and the
        latent noise.
    - `coupling`: how base samples are paired with the data (default independent).
    - `t_clip`: times are uniform on `[t_clip, 1 - t_clip]`.
    - `label_dropout`: for a conditional model, the probability of replacing a label
        by "no label", which trains the unconditional field that classifier-free
        guidance needs.

    **Returns:** the mean loss (velocity loss plus the denoiser's or score's), and
    the metrics `velocity_loss` and, where trained, `noise_loss`.
    """
    if model.gaussian_latent and not coupling.independent:
        raise ValueError(
            "The model was built for an independent coupling (its score follows from "
            "the velocity only then); build it with independent=False for an OT "
            "coupling."
        )
    x1 = model.normalise(batch["x"])
    n = x1.shape[0]
    k_base, k_t, k_z, k_label = jr.split(key, 4)
    if "x0" in batch:
        x0 = jax.lax.stop_gradient(batch["x0"]).astype(x1.dtype)
    else:
        x0 = _paired_base(model, x1, k_base, coupling)
    t = jr.uniform(k_t, (n,), x1.dtype, t_clip, 1 - t_clip)
    if isinstance(model.interpolant.gamma, ZeroGamma):
        # No latent noise: skip drawing it (a tenth of a step's time for a small MLP).
        z = jnp.zeros_like(x1)
    else:
        z = jr.normal(k_z, x1.shape, x1.dtype)
    labels = batch.get("label")
    if model.num_classes:
        if labels is None:
            raise ValueError("A conditional model needs labels: batch['label'].")
        drop = jr.bernoulli(k_label, label_dropout, (n,))
        labels = jnp.where(drop, model.num_classes, labels)
    else:
        labels = jnp.zeros(n, jnp.int32)
    antithetic = model.loss == "score" or model.interpolant.gamma.singular
    conditional = bool(model.num_classes)
    terms = jax.vmap(
        lambda t_, a, b, c, y: _one_loss(
            model, t_, a, b, c, y if conditional else None, antithetic
        )
    )(t, x0, x1, z, labels)
    velocity = jnp.mean(terms["velocity"])
    metrics = {"velocity_loss": velocity}
    loss = velocity
    if model.loss != "velocity":
        noise = jnp.mean(terms["noise"])
        metrics["noise_loss"] = noise
        loss = loss + noise
    return loss, metrics
