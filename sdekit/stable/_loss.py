"""The training loss: one Brownian sample per series, with observation dropout."""

import jax.numpy as jnp
import jax.random as jr

from ._task import AbstractTask, as_task


def make_loss(task: AbstractTask | str, augment: float = 0.0):
    """`loss_fn(model, batch, key) -> (loss, metrics)` for [`sdekit.train.fit`][]:
    the task's loss ([`sdekit.stable.AbstractTask.loss`][]) of the model's outputs
    for one sample of the Brownian motion per series.

    With `augment > 0` every step first drops each remaining input observation with
    probability `augment` (fresh per step; "observation dropout"): the model is
    trained on many maskings of each series, as it will meet new ones at test time.

    **Arguments:**

    - `task`: a task or its name.
    - `augment`: the dropout probability, in $[0, 1)$.
    """
    task = as_task(task)
    if not 0.0 <= augment < 1.0:
        raise ValueError(f"`augment` must be in [0, 1), got {augment!r}.")

    def loss_fn(model, batch, key):
        values = batch["values"]
        if augment > 0:
            key, drop_key = jr.split(key)
            drop = jr.bernoulli(drop_key, augment, values.shape)
            values = jnp.where(drop, jnp.nan, values)
        return task.loss(model(batch["knots"], values, key), batch)

    return loss_fn
