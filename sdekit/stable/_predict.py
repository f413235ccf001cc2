"""Predictions for a whole split, averaged over Brownian samples, and its metrics."""

import equinox as eqx
import jax.numpy as jnp
import jax.random as jr
import numpy as np

from ._task import AbstractTask, as_task


@eqx.filter_jit
def _predict_chunk(model, chunk, key, num_samples):
    batch = chunk["knots"].shape[0]

    def tile(x):
        return jnp.concatenate([x] * num_samples, axis=0)

    outputs = model(tile(chunk["knots"]), tile(chunk["values"]), key)
    return outputs.reshape(num_samples, batch, *outputs.shape[1:])


def predict(
    model,
    data: dict,
    key,
    task: AbstractTask | str,
    num_samples: int = 1,
    chunk: int = 256,
) -> np.ndarray:
    """The model's predictions for a whole split (its `knots` and `values`), the
    task's readout ([`sdekit.stable.AbstractTask.readout`][]) averaged over
    `num_samples` Brownian samples per series: class probabilities `(n, classes)`
    for classification, targets `(n,)` for regression, values `(n, times, channels)`
    otherwise, in normalised units. Deterministic given `key`; the split is processed
    in chunks of equal size (the last padded), so it compiles once."""
    task = as_task(task)
    n = data["knots"].shape[0]
    size = min(n, chunk)
    results = []
    for index, start in enumerate(range(0, n, size)):
        rows = np.arange(start, start + size) % n

        def take(x):
            return jnp.asarray(np.asarray(x)[rows])

        part = {"knots": take(data["knots"]), "values": take(data["values"])}
        out = task.readout(
            _predict_chunk(model, part, jr.fold_in(key, index), num_samples)
        )
        results.append(np.asarray(out.mean(axis=0))[: min(size, n - start)])
    return np.concatenate(results, axis=0)


def metrics(
    model, data: dict, key, task: AbstractTask | str, num_samples: int = 1
) -> dict[str, float]:
    """The task's metrics of a split ([`sdekit.stable.AbstractTask.metrics`][]):
    `accuracy` and `loss` (cross-entropy of the averaged probabilities) for
    classification, `mse` (in units of the training standard deviation) otherwise."""
    task = as_task(task)
    return task.metrics(predict(model, data, key, task, num_samples), data)
