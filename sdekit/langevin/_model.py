"""The sequential VAE around the latent dynamics: GRU encoder, Gaussian posterior over
the initial state, the dynamics, a Transformer decoder and a Poisson readout."""

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, Float, PRNGKeyArray

from ._decoder import TransformerLayer
from ._dynamics import AbstractLatentDynamics


class SequentialVAE(eqx.Module):
    r"""A sequential variational autoencoder for spike counts (LangevinFlow's
    architecture, with the latent dynamics as a part).

    1. **Encoder.** A unidirectional GRU reads the held-in neurons' counts of the
        observed bins ($\log(1 + y)$), giving states $h_1, \dots, h_T$; past the
        observed window (the forward-prediction bins) it reads zeros.
    2. **Posterior.** A linear map of $h$ at the last observed bin gives the mean and
        log-variance of a diagonal Gaussian $q(s_0)$ over the dynamics' initial state
        $s_0$ (for a Langevin latent $s_0 = (z_0, v_0)$), with its KL to
        $\mathcal{N}(0, I)$.
    3. **Dynamics.** An [`sdekit.langevin.AbstractLatentDynamics`][] evolves $s_0$
        over the bins (adding a pathwise KL when it takes an inferred force: the force
        is then read from the forward GRU states and those of a backward GRU).
    4. **Decoder.** One [`sdekit.langevin.TransformerLayer`][] over the tokens
        $W_{\text{in}} [s_t, h_t]$, then a linear readout to the log-rates of all
        neurons, held-in and held-out.

    **Arguments:**

    - `dynamics`: the latent dynamics.
    - `num_heldin`, `num_neurons`: neurons read by the encoder / predicted.
    - `hidden`: the encoder GRU's size.
    - `size`, `heads`, `feedforward`, `dropout`: the decoder's token size, attention
        heads, feed-forward width and dropout.
    - `key`: initialisation key.
    """

    encoder: eqx.nn.GRUCell
    backward_encoder: eqx.nn.GRUCell | None
    posterior: eqx.nn.Linear
    force: eqx.nn.Linear | None
    dynamics: AbstractLatentDynamics
    readin: eqx.nn.Linear
    decoder: TransformerLayer
    readout: eqx.nn.Linear
    # The number of optimiser steps taken: advanced by the optimiser (see
    # `sdekit.langevin.optimizer`), read by the loss for the KL weight's ramp.
    clock: Float[Array, ""]
    num_heldin: int = eqx.field(static=True)
    num_neurons: int = eqx.field(static=True)

    def __init__(
        self,
        dynamics: AbstractLatentDynamics,
        *,
        num_heldin: int,
        num_neurons: int,
        hidden: int = 64,
        size: int = 64,
        heads: int = 2,
        feedforward: int = 128,
        dropout: float = 0.05,
        key: PRNGKeyArray,
    ):
        if not 0 < num_heldin <= num_neurons:
            raise ValueError(
                f"Need 0 < num_heldin <= num_neurons, got {num_heldin} and "
                f"{num_neurons}."
            )
        keys = jr.split(key, 7)
        self.encoder = eqx.nn.GRUCell(num_heldin, hidden, key=keys[0])
        self.posterior = eqx.nn.Linear(hidden, 2 * dynamics.initial_size, key=keys[1])
        # Start the posterior near the prior: small means, unit variances.
        self.posterior = eqx.tree_at(
            lambda layer: (layer.weight, layer.bias),
            self.posterior,
            (0.1 * self.posterior.weight, jnp.zeros(2 * dynamics.initial_size)),
        )
        if dynamics.force_size > 0:
            self.backward_encoder = eqx.nn.GRUCell(num_heldin, hidden, key=keys[2])
            force = eqx.nn.Linear(2 * hidden, dynamics.force_size, key=keys[3])
            # No force at first: training starts from the prior's dynamics.
            self.force = eqx.tree_at(
                lambda layer: (layer.weight, layer.bias),
                force,
                (jnp.zeros_like(force.weight), jnp.zeros(dynamics.force_size)),
            )
        else:
            self.backward_encoder = None
            self.force = None
        self.dynamics = dynamics
        self.readin = eqx.nn.Linear(dynamics.feature_size + hidden, size, key=keys[4])
        self.decoder = TransformerLayer(size, heads, feedforward, dropout, key=keys[5])
        self.readout = eqx.nn.Linear(size, num_neurons, key=keys[6])
        self.clock = jnp.zeros((), jnp.float32)
        self.num_heldin = num_heldin
        self.num_neurons = num_neurons

    def encode(
        self, heldin: Float[Array, "batch observed heldin"], num_bins: int
    ) -> tuple[Float[Array, "batch bins hidden"], Float[Array, "batch hidden"]]:
        """The encoder's states over all `num_bins` bins (zeros read past the observed
        ones) and its state at the last observed bin."""
        observed = heldin.shape[1]
        inputs = jnp.log1p(heldin)
        if num_bins > observed:
            pad = jnp.zeros((heldin.shape[0], num_bins - observed, heldin.shape[2]))
            inputs = jnp.concatenate([inputs, pad.astype(inputs.dtype)], axis=1)
        states = _run_gru(self.encoder, inputs)
        return states, states[:, observed - 1]

    def infer_force(
        self,
        heldin: Float[Array, "batch observed heldin"],
        states: Float[Array, "batch bins hidden"],
        num_bins: int,
    ) -> Float[Array, "batch bins force"] | None:
        """The force on the latent's velocity in each bin, inferred from the forward
        encoder's `states` (of [`encode`][sdekit.langevin.SequentialVAE.encode]) and a
        backward GRU over `heldin`; `None` for dynamics without a force."""
        if self.force is None:
            return None
        assert self.backward_encoder is not None
        inputs = jnp.log1p(heldin)
        backward = _run_gru(self.backward_encoder, inputs[:, ::-1])[:, ::-1]
        if num_bins > heldin.shape[1]:
            # Past the observed bins the backward GRU has nothing to read.
            pad = jnp.zeros(
                (heldin.shape[0], num_bins - heldin.shape[1], backward.shape[2])
            )
            backward = jnp.concatenate([backward, pad.astype(backward.dtype)], 1)
        both = jnp.concatenate([states, backward], axis=-1)
        return jax.vmap(jax.vmap(self.force))(both)

    def __call__(
        self,
        heldin: Float[Array, "batch observed heldin"],
        num_bins: int,
        *,
        key: PRNGKeyArray,
        train: bool = False,
    ) -> tuple[Float[Array, "batch bins neurons"], Float[Array, " batch"]]:
        """One stochastic pass over a batch of trials.

        **Arguments:**

        - `heldin`: the held-in neurons' counts in the observed bins (already masked
            by coordinated dropout in training).
        - `num_bins`: bins to predict, the observed ones first (more than observed:
            forward prediction).
        - `key`: draws the initial state, the dynamics' noise and dropout.
        - `train`: apply the decoder's dropout.

        **Returns:** `(log_rates, kl)`: log-rates `(batch, num_bins, neurons)` and the
        KL of the posterior to the prior per trial, `(batch,)`.
        """
        if heldin.ndim != 3 or heldin.shape[2] != self.num_heldin:
            raise ValueError(
                f"Expected held-in counts of shape (batch, bins, {self.num_heldin}), "
                f"got {heldin.shape}."
            )
        k_initial, k_dynamics, k_dropout = jr.split(key, 3)
        states, last = self.encode(heldin, num_bins)
        stats = jax.vmap(self.posterior)(last)
        mean, log_var = jnp.split(stats, 2, axis=-1)
        noise = jr.normal(k_initial, mean.shape, mean.dtype)
        initial = mean + jnp.exp(0.5 * log_var) * noise
        kl = 0.5 * jnp.sum(mean**2 + jnp.exp(log_var) - 1.0 - log_var, axis=-1)
        force = self.infer_force(heldin, states, num_bins)
        features, path_kl = self.dynamics(initial, force, num_bins, k_dynamics)
        tokens = jax.vmap(jax.vmap(self.readin))(
            jnp.concatenate([features, states], axis=-1)
        )
        keys = jr.split(k_dropout, tokens.shape[0]) if train else None
        if keys is None:
            decoded = jax.vmap(lambda x: self.decoder(x))(tokens)
        else:
            decoded = jax.vmap(lambda x, k: self.decoder(x, key=k))(tokens, keys)
        log_rates = jax.vmap(jax.vmap(self.readout))(decoded)
        return log_rates, kl + path_kl


def _run_gru(cell: eqx.nn.GRUCell, inputs: Float[Array, "batch bins n"]) -> Array:
    batch = inputs.shape[0]
    step = jax.vmap(cell)

    def update(h, x):
        h = step(x, h)
        return h, h

    h0 = jnp.zeros((batch, cell.hidden_size), inputs.dtype)
    _, states = jax.lax.scan(update, h0, jnp.moveaxis(inputs, 1, 0))
    return jnp.moveaxis(states, 0, 1)
