"""The decoder's Transformer encoder layer (post-norm, as PyTorch's default)."""

import equinox as eqx
import jax
import jax.random as jr
from jaxtyping import Array, Float, PRNGKeyArray


class TransformerLayer(eqx.Module):
    """One Transformer encoder layer over a sequence of tokens: self-attention with no
    mask and no positional encoding (the tokens carry their time through the
    encoder's unidirectional GRU states), then a ReLU feed-forward block; each
    sub-block with dropout, a residual connection and layer normalisation after it
    (PyTorch's `nn.TransformerEncoderLayer` defaults, which the official LangevinFlow
    code uses).

    **Arguments:**

    - `size`: the token size (`d_model`).
    - `heads`: attention heads (must divide `size`).
    - `feedforward`: hidden width of the feed-forward block.
    - `dropout`: dropout probability in training.
    - `key`: initialisation key.
    """

    attention: eqx.nn.MultiheadAttention
    norm1: eqx.nn.LayerNorm
    norm2: eqx.nn.LayerNorm
    linear1: eqx.nn.Linear
    linear2: eqx.nn.Linear
    dropout: eqx.nn.Dropout

    def __init__(
        self,
        size: int,
        heads: int,
        feedforward: int,
        dropout: float,
        *,
        key: PRNGKeyArray,
    ):
        if size % heads:
            raise ValueError(
                f"The decoder's size ({size}) must be divisible by its number of "
                f"attention heads ({heads})."
            )
        k1, k2, k3 = jr.split(key, 3)
        self.attention = eqx.nn.MultiheadAttention(
            heads,
            size,
            use_query_bias=True,
            use_key_bias=True,
            use_value_bias=True,
            use_output_bias=True,
            key=k1,
        )
        self.norm1 = eqx.nn.LayerNorm(size)
        self.norm2 = eqx.nn.LayerNorm(size)
        self.linear1 = eqx.nn.Linear(size, feedforward, key=k2)
        self.linear2 = eqx.nn.Linear(feedforward, size, key=k3)
        self.dropout = eqx.nn.Dropout(dropout)

    def __call__(
        self, x: Float[Array, "seq size"], *, key: PRNGKeyArray | None = None
    ) -> Float[Array, "seq size"]:
        """One sequence; without a `key` (or in `eqx.nn.inference_mode`) no dropout."""
        keys = [None] * 3 if key is None else list(jr.split(key, 3))
        inference = True if key is None else None
        attended = self.attention(x, x, x)
        x = jax.vmap(self.norm1)(
            x + self.dropout(attended, key=keys[0], inference=inference)
        )
        hidden = jax.nn.relu(jax.vmap(self.linear1)(x))
        hidden = self.dropout(hidden, key=keys[1], inference=inference)
        out = jax.vmap(self.linear2)(hidden)
        return jax.vmap(self.norm2)(
            x + self.dropout(out, key=keys[2], inference=inference)
        )
