"""The batched fields the samplers integrate: velocity and scaled score of a model,
with classifier-free guidance."""

import jax
import jax.numpy as jnp
from jaxtyping import Array

from ._model import InterpolantModel


def _guided(field, labels, guidance):
    # field(t, u, label) for one point -> the batched, guided field of (t, u_batch).
    def one(t, u, label):
        if label is None:
            return field(t, u, None)
        if guidance is None or guidance == 1.0:
            return field(t, u, label)
        free = field(t, u, None)
        return free + guidance * (field(t, u, label) - free)

    def batched(t, u):
        if labels is None:
            return jax.vmap(lambda u_: one(t, u_, None))(u)
        return jax.vmap(lambda u_, y: one(t, u_, y))(u, labels)

    return batched


def check_labels(model: InterpolantModel, labels, n: int, guidance) -> Array | None:
    """Labels as an int array of length `n` (or `None`), checked against the model."""
    if labels is None:
        if guidance is not None:
            raise ValueError("`guidance` needs `labels` (which classes to guide to).")
        return None
    if not model.num_classes:
        raise ValueError(
            "This model was trained without labels; sample it without labels."
        )
    labels = jnp.broadcast_to(jnp.asarray(labels, jnp.int32), (n,))
    return labels


def velocity_field(model: InterpolantModel, labels=None, guidance=None):
    """`(t, u) -> b(t, u)` for a batch `u` of shape `(n, d)` in model coordinates."""
    return _guided(model.velocity, labels, guidance)


def scaled_score_field(model: InterpolantModel, labels=None, guidance=None):
    r"""`(t, u) -> \sigma(t)^2 s(t, u)`, finite where $\sigma \to 0$ for every kind of
    model: $-\sigma\eta$ for a denoiser, $-E[n|u]$ for a velocity."""

    def one(t, u, label):
        sigma = model.noise_scale(t)
        return sigma**2 * model.score(t, u, label)

    return _guided(one, labels, guidance)
