"""The training objective: Poisson likelihood with coordinated dropout, plus the KL with
a ramped weight; and the optimiser that goes with it (Adam, reduce-on-plateau)."""

from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import optax
from jaxtyping import Array, Float, PRNGKeyArray

from ._model import SequentialVAE


def poisson_nll_terms(
    log_rates: Float[Array, "..."], counts: Float[Array, "..."]
) -> Float[Array, "..."]:
    r"""$e^{\ell} - y \ell$ per entry: the Poisson negative log-likelihood of counts
    $y$ under log-rates $\ell$, without the $\log y!$ term (constant in the model)."""
    return jnp.exp(log_rates) - counts * log_rates


def kl_weight(clock: Array, beta: float, ramp_steps: int) -> Array:
    """The KL weight after `clock` optimiser steps: rising linearly from 0 to `beta`
    over the first `ramp_steps` steps, then constant."""
    if ramp_steps <= 0:
        return jnp.asarray(beta, jnp.float32)
    return beta * jnp.clip(clock / ramp_steps, 0.0, 1.0)


def make_loss(
    *,
    num_heldin: int,
    observed_bins: int,
    keep: float = 0.5,
    beta: float = 1.0,
    ramp_steps: int = 0,
) -> Callable[[SequentialVAE, dict[str, Array], PRNGKeyArray], tuple[Array, dict]]:
    r"""The loss `loss_fn(model, batch, key) -> (loss, metrics)` for
    [`sdekit.train.fit`][], on batches `{"spikes": (batch, bins, neurons)}` whose
    first `num_heldin` neurons are held-in and first `observed_bins` bins observed.

    The negative ELBO per trial, divided by the number of bins x neurons:

    $$\mathcal{L} = \sum_{t, n} \omega_{tn}\big(e^{\ell_{tn}} - y_{tn}
    \ell_{tn}\big) + \beta_k\, \mathrm{KL},$$

    **coordinated dropout**: each training step keeps each held-in count of the
    observed window with probability `keep` as the encoder's input (the others read
    as 0) and scores only the dropped ones ($\omega = 1 / (1 - \text{keep})$ there, 0
    on the kept ones), so that the model cannot pass a count straight from its input
    to its output (the decoder reads the encoder's states); held-out neurons and
    forward bins, never input, are always scored ($\omega = 1$). The kept counts are
    not rescaled by $1 / \text{keep}$ as inverted dropout would: the encoder reads
    $\log(1 + y)$, so a count means the same in training and evaluation (see the
    documentation page for the comparison).
    The KL weight $\beta_k$ ramps up with the model's `clock`
    ([`sdekit.langevin.kl_weight`][]).

    The metrics are the NLL and KL per entry and the KL weight. The loss also
    reports its own value to the optimiser (see [`sdekit.langevin.optimizer`][]).
    """
    if not 0 < keep < 1:
        raise ValueError(
            f"The coordinated-dropout `keep` must be in (0, 1), got {keep}."
        )

    def loss_fn(model: SequentialVAE, batch: dict[str, Array], key: PRNGKeyArray):
        spikes = batch["spikes"]
        num_bins, num_neurons = spikes.shape[1], spikes.shape[2]
        k_mask, k_model = jr.split(key)
        heldin = spikes[:, :observed_bins, :num_heldin]
        kept = jr.bernoulli(k_mask, keep, heldin.shape).astype(spikes.dtype)
        log_rates, kl = model(heldin * kept, num_bins, key=k_model, train=True)
        weight = jnp.ones_like(spikes)
        weight = weight.at[:, :observed_bins, :num_heldin].set((1 - kept) / (1 - keep))
        entries = num_bins * num_neurons
        nll = jnp.sum(weight * poisson_nll_terms(log_rates, spikes), axis=(1, 2))
        clock = jax.lax.stop_gradient(model.clock)
        beta_k = kl_weight(clock, beta, ramp_steps)
        loss = jnp.mean(nll + beta_k * kl) / entries
        # Zero in value; its gradient with respect to the clock is the loss itself,
        # which is how the optimiser's reduce-on-plateau sees the loss (the trainer
        # hands the optimiser gradients, not values).
        loss = (
            loss
            + model.clock * jax.lax.stop_gradient(loss)
            - jax.lax.stop_gradient(model.clock * loss)
        )
        metrics = {
            "nll": jnp.mean(nll) / entries,
            "kl": jnp.mean(kl) / entries,
            "beta": beta_k,
        }
        return loss, metrics

    return loss_fn


def _is_model(x: Any) -> bool:
    return isinstance(x, SequentialVAE)


def _clocks(tree: Any) -> tuple[Array, ...]:
    """The clocks of every `SequentialVAE` in `tree` (a model, or several trained
    together)."""
    leaves = jax.tree_util.tree_leaves(tree, is_leaf=_is_model)
    return tuple(m.clock for m in leaves if _is_model(m))


def optimizer(
    learning_rate: float = 3e-3,
    *,
    weight_decay: float = 1e-5,
    steps_per_epoch: int = 1,
    patience: int = 10,
    factor: float = 0.5,
    min_learning_rate: float = 1e-5,
) -> optax.GradientTransformation:
    """Adam (decoupled weight decay) whose learning rate is multiplied by `factor` after
    `patience` epochs without a lower mean training loss (optax's
    `contrib.reduce_on_plateau` over `steps_per_epoch` accumulated losses), down to
    `min_learning_rate`. The official LangevinFlow settings are factor 0.95, patience
    10, minimum 1e-5 over 1000-6000 epochs; over the 100-200 epochs of a run sized for
    two CPU cores a 5% cut would hardly act, so the factor here is 0.5.

    It drives [`sdekit.langevin.SequentialVAE`][]s (one, or a PyTree of several
    trained together) trained with [`sdekit.langevin.make_loss`][]: a model's `clock`
    is not trained but advanced by one every step (the KL ramp reads it), and its
    gradient, which that loss makes equal to the loss, is the value the plateau
    watches (summed over the models).
    """
    if not learning_rate > 0:
        raise ValueError(f"The learning rate must be > 0, got {learning_rate!r}.")
    inner = optax.chain(
        optax.adamw(learning_rate, weight_decay=weight_decay),
        optax.contrib.reduce_on_plateau(
            factor=factor,
            patience=patience,
            accumulation_size=max(1, steps_per_epoch),
            min_scale=min(1.0, min_learning_rate / learning_rate),
        ),
    )

    def init(params):
        return inner.init(params)

    def update(updates, state, params=None):
        grads = updates  # the gradients, which become the updates below
        clocks = _clocks(grads)
        if not clocks:
            raise ValueError(
                "sdekit.langevin.optimizer drives SequentialVAE models (it advances "
                "their `clock`); the parameters hold none."
            )
        # Several models trained together: the plateau watches their summed loss.
        value = sum(clocks)
        grads = eqx.tree_at(_clocks, grads, tuple(jnp.zeros_like(c) for c in clocks))
        updates, state = inner.update(grads, state, params, value=value)
        updates = eqx.tree_at(_clocks, updates, tuple(jnp.ones_like(c) for c in clocks))
        return updates, state

    return optax.GradientTransformation(init, update)
