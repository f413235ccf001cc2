"""Many optimiser steps per host call, inside the shared trainer.

Dispatching one small jitted step from Python costs more than the step itself: for
the 3x64 MLP at batch 256, 0.65-0.9 ms per step inside one `lax.scan` against 9-15
ms per step called one at a time (docs/benchmarks.md, "Stochastic interpolants").
[`sdekit.train.fit`][] takes one
optimiser step per call, so the interpolants hand it an optimiser that takes many:
[`sdekit.interpolants.scan_steps`][] wraps an optax optimiser so that each update
applies the trainer's gradient and then `steps - 1` more steps on minibatches drawn
inside one compiled `lax.scan`. With the whole training set as the trainer's batch,
one trainer epoch is one compiled chunk of `steps` steps, and checkpoints, resume,
progress and Ctrl-C are the trainer's.
"""

from collections.abc import Callable
from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import jax.tree_util as jtu
import optax
from jaxtyping import Array, PRNGKeyArray, PyTree


class ScanStepsState(NamedTuple):
    """The wrapped optimiser's state and the number of updates (chunks) so far."""

    inner: optax.OptState
    chunk: Array


def minibatch(data: PyTree, key: PRNGKeyArray, batch_size: int) -> PyTree:
    """`batch_size` examples of `data` drawn uniformly with replacement."""
    (n,) = {x.shape[0] for x in jtu.tree_leaves(data)}
    index = jr.randint(key, (batch_size,), 0, n)
    return jtu.tree_map(lambda x: x[index], data)


def scan_steps(
    optimizer: optax.GradientTransformation,
    loss_fn: Callable[[Any, PyTree, PRNGKeyArray], tuple[Array, dict]],
    like_model: Any,
    data: PyTree,
    *,
    key: PRNGKeyArray,
    steps: int,
    batch_size: int,
) -> optax.GradientTransformation:
    """An optax transformation whose update takes `steps` steps of `optimizer`: first
    with the gradient it is given, then `steps - 1` steps on minibatches of `data`
    drawn inside one `jax.lax.scan`.

    **Arguments:**

    - `optimizer`: the optimiser taking each step (its schedules count every step).
    - `loss_fn`: `loss_fn(model, batch, key) -> (loss, metrics)`.
    - `like_model`: a model of the trained structure (its non-array parts are reused).
    - `data`: the training data, a PyTree of arrays with a leading example axis.
    - `key`: the key of the inner minibatches and losses (folded with the chunk and
        step numbers, so a resumed run takes the same steps).
    - `steps`: optimiser steps per update, at least 1.
    - `batch_size`: examples per inner minibatch.

    **Returns:** an `optax.GradientTransformation` to pass as
    `sdekit.train.fit(optimizer=...)`.
    """
    if steps < 1:
        raise ValueError(f"`steps` must be >= 1, got {steps}.")
    static = eqx.filter(like_model, eqx.is_inexact_array, inverse=True)

    def init(params):
        return ScanStepsState(optimizer.init(params), jnp.zeros((), jnp.int32))

    def update(grads, state, params=None):
        updates, inner = optimizer.update(grads, state.inner, params)
        first = eqx.apply_updates(params, updates)
        chunk_key = jr.fold_in(key, state.chunk)

        def step(carry, i):
            p, s = carry
            k_batch, k_loss = jr.split(jr.fold_in(chunk_key, i))
            batch = minibatch(data, k_batch, batch_size)
            (_, _), g = eqx.filter_value_and_grad(loss_fn, has_aux=True)(
                eqx.combine(p, static), batch, k_loss
            )
            u, s = optimizer.update(g, s, p)
            return (eqx.apply_updates(p, u), s), None

        (last, inner), _ = jax.lax.scan(step, (first, inner), jnp.arange(steps - 1))
        # The trainer adds the update to its parameters: hand it the whole chunk's move.
        total = jtu.tree_map(lambda a, b: a - b, last, params)
        return total, ScanStepsState(inner, state.chunk + 1)

    return optax.GradientTransformation(init, update)


def minibatch_loss(
    loss_fn: Callable[[Any, PyTree, PRNGKeyArray], tuple[Array, dict]], batch_size: int
) -> Callable[[Any, PyTree, PRNGKeyArray], tuple[Array, dict]]:
    """`loss_fn` evaluated on `batch_size` examples drawn (with replacement) from the
    batch it is given: the loss to hand [`sdekit.train.fit`][] beside
    [`sdekit.interpolants.scan_steps`][], whose trainer batch is the whole training
    set. (Without it the chunk's first step would see the whole set: an OT coupling
    of thousands of points.)"""

    def loss(model, data, key):
        k_batch, k_loss = jr.split(key)
        return loss_fn(model, minibatch(data, k_batch, batch_size), k_loss)

    return loss
