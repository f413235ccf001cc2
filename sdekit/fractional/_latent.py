"""A latent SDE driven by fractional noise, fitted by variational inference: a control
network steers the noise's components, and the KL comes from Girsanov's theorem."""

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, Float, PRNGKeyArray

from .._custom_types import MAfBMKind, MAfBMWeights
from .._kl import split_kl, with_pathwise_kl
from .._sde import SDE
from .._solve import solve
from ..noise import (
    augment,
    augmented_initial_state,
    check_step_size,
    FractionalNoise,
    split_components,
)


class _PriorDrift(eqx.Module):
    mlp: eqx.nn.MLP

    def __call__(self, t, x, args):
        t = jnp.asarray(t, x.dtype)
        return self.mlp(jnp.concatenate([t[None], x]))


class _Diffusion(eqx.Module):
    log_scale: Array

    def __call__(self, t, x, args):
        return jnp.exp(self.log_scale).astype(x.dtype) * jnp.ones_like(x)


def _context_at(t, ts, contexts):
    # The context of the next observation at or after t (the encoder runs backwards,
    # so it summarises everything from there on).
    index = jnp.clip(jnp.searchsorted(ts, t, side="left"), 0, ts.shape[0] - 1)
    return contexts[index]


class _PosteriorDrift(eqx.Module):
    prior: SDE
    control: eqx.nn.MLP

    def __call__(self, t, z, args):
        ts, contexts = args
        G = self.prior.diffusion_operator(t, z, args)
        context = _context_at(t, ts, contexts)
        t_ = jnp.asarray(t, z.dtype)
        u = self.control(jnp.concatenate([t_[None], z, context]))
        # Posterior = prior + G u: the control enters exactly where the noise does,
        # dY_jk = (-gamma_k Y_jk + u_j) dt + dW_j (Daems et al. 2024, section 4).
        return self.prior.drift(t, z, args) + G.mv(u)


class LatentFractionalSDE(eqx.Module):
    r"""A latent SDE driven by fractional noise, with a variational posterior
    (Daems et al. 2024, *Variational Inference for SDEs Driven by Fractional Noise*,
    section 4).

    Prior: $\mathrm{d}x = b_\phi(t, x)\,\mathrm{d}t + \operatorname{diag}(s)\,
    \mathrm{d}\hat B^H$ on $\mathbb{R}^d$, each coordinate driven by its own MA-fBM
    (one Hurst index $H$, learnable: `sigmoid(raw_hurst)`, initialised at 1/2),
    solved as the Markov system on $(x, Y)$ of [`sdekit.noise.augment`][];
    observations $y_i \sim \mathcal{N}(W x(t_i) + c, \operatorname{diag}(r)^2)$.
    Posterior: the same system with a control $u(t, x, Y, \text{context})$ added where
    the Brownian motions enter ($\mathrm{d}Y_{jk} = (-\gamma_k Y_{jk} + u_j)
    \mathrm{d}t + \mathrm{d}W_j$), so that the KL between the path measures is
    $\mathbb{E}\int \tfrac12 \lVert u \rVert^2 \mathrm{d}t$ by Girsanov's theorem,
    accumulated by [`sdekit.with_pathwise_kl`][]. The context comes from a GRU run
    backwards over the observations; $x(0)$ has a Gaussian posterior from the first
    context and a standard normal prior.

    Train it with [`sdekit.fractional.latent_fractional_loss`][] through
    [`sdekit.train.fit`][].

    **Arguments:**

    - `obs_dim`, `latent_dim`, `context_dim`, `hidden`: sizes.
    - `key`: a PRNG key for the initial weights.
    - `num_components`, `gamma_max`, `horizon`, `kind`, `weights`: the noise's
        configuration (see [`sdekit.noise.FractionalNoise`][]).
    - `hurst`: the initial $H$ (default 1/2).
    """

    encoder: eqx.nn.GRUCell
    context_head: eqx.nn.Linear
    init_head: eqx.nn.Linear
    prior_drift: eqx.nn.MLP
    control: eqx.nn.MLP
    decoder: eqx.nn.Linear
    log_diffusion: Array
    log_obs_std: Array
    raw_hurst: Array
    num_components: int = eqx.field(static=True)
    gamma_max: float = eqx.field(static=True)
    horizon: float = eqx.field(static=True)
    kind: MAfBMKind = eqx.field(static=True)
    weights: MAfBMWeights = eqx.field(static=True)

    def __init__(
        self,
        obs_dim: int,
        latent_dim: int,
        *,
        key: PRNGKeyArray,
        context_dim: int = 16,
        hidden: int = 32,
        num_components: int = 5,
        gamma_max: float = 20.0,
        horizon: float = 1.0,
        kind: MAfBMKind = "I",
        weights: MAfBMWeights = "optimal",
        hurst: float = 0.5,
    ):
        # Validates the noise configuration up front.
        FractionalNoise(hurst, num_components, gamma_max, horizon, kind, weights)
        keys = jr.split(key, 6)
        K = num_components
        self.encoder = eqx.nn.GRUCell(2 * obs_dim + 1, hidden, key=keys[0])
        self.context_head = eqx.nn.Linear(hidden, context_dim, key=keys[1])
        self.init_head = eqx.nn.Linear(context_dim, 2 * latent_dim, key=keys[2])
        self.prior_drift = eqx.nn.MLP(
            latent_dim + 1, latent_dim, hidden, 2, activation=jnp.tanh, key=keys[3]
        )
        control = eqx.nn.MLP(
            1 + latent_dim * (K + 1) + context_dim,
            latent_dim,
            hidden,
            2,
            activation=jnp.tanh,
            key=keys[4],
        )
        # Start from the prior: a zero control, zero KL.
        last = control.layers[-1]
        assert last.bias is not None  # eqx.nn.MLP's last layer has a bias by default
        self.control = eqx.tree_at(
            lambda m: (m.layers[-1].weight, m.layers[-1].bias),
            control,
            (jnp.zeros_like(last.weight), jnp.zeros_like(last.bias)),
        )
        self.decoder = eqx.nn.Linear(latent_dim, obs_dim, key=keys[5])
        self.log_diffusion = jnp.zeros((latent_dim,))
        self.log_obs_std = jnp.full((obs_dim,), math.log(0.1))
        self.raw_hurst = jnp.asarray(
            math.log(hurst / (1 - hurst)), dtype=jnp.result_type(float)
        )
        self.num_components = K
        self.gamma_max = float(gamma_max)
        self.horizon = float(horizon)
        self.kind = kind
        self.weights = weights

    @property
    def latent_dim(self) -> int:
        return self.log_diffusion.shape[0]

    @property
    def hurst(self) -> Array:
        """$H = \\mathrm{sigmoid}(\\text{raw\\_hurst})$."""
        return jax.nn.sigmoid(self.raw_hurst)

    def noise(self) -> FractionalNoise:
        """The [`sdekit.noise.FractionalNoise`][] at the current $H$."""
        return FractionalNoise(
            self.hurst,
            self.num_components,
            self.gamma_max,
            self.horizon,
            self.kind,
            self.weights,
        )

    def prior_sde(self) -> SDE:
        """The prior [`sdekit.SDE`][] on $x$, with Brownian noise (drive it with
        `noise()` through [`sdekit.noise.augment`][])."""
        return SDE(
            _PriorDrift(self.prior_drift),
            _Diffusion(self.log_diffusion),
            noise_structure="diagonal",
            additive=True,
        )

    def encode(
        self, ts: Float[Array, " n"], ys: Float[Array, "n obs"]
    ) -> Float[Array, "n context"]:
        """Contexts at the observation times, from a GRU run backwards over
        (values with NaN set to 0, observed mask, time step)."""
        observed = ~jnp.isnan(ys)
        steps = jnp.diff(ts, append=ts[-1:])
        inputs = jnp.concatenate(
            [jnp.where(observed, ys, 0.0), observed.astype(ys.dtype), steps[:, None]],
            axis=1,
        )

        def step(h, x):
            h = self.encoder(x, h)
            return h, h

        h0 = jnp.zeros((self.encoder.hidden_size,), ys.dtype)
        _, hs = jax.lax.scan(step, h0, inputs, reverse=True)
        return jax.vmap(self.context_head)(hs)

    def _posterior(self, noise):
        d = self.latent_dim
        prior = augment(self.prior_sde(), noise, state_size=d)
        posterior = SDE(
            _PosteriorDrift(prior, self.control),
            prior.diffusion,
            noise_structure="general",
            noise_dim=d,
            additive=True,
        )
        return prior, with_pathwise_kl(posterior, prior.drift)

    def posterior_paths(
        self,
        ts: Float[Array, " n"],
        ys: Float[Array, "n obs"],
        key: PRNGKeyArray,
        *,
        dt0: float,
        t0: float,
        t1: float,
        num_samples: int = 1,
    ) -> tuple[Float[Array, "samples n latent"], Float[Array, "samples"], Array]:
        """Posterior samples of the latent path at `ts` given one series `ys`.

        **Returns:** `(latents, kl, kl_init)`: latent paths, the pathwise KL over
        $[t_0, t_n]$ per sample, and the KL of $x(0)$.
        """
        noise = self.noise()
        check_step_size(noise, dt0)
        _, kl_sde = self._posterior(noise)
        contexts = self.encode(ts, ys)
        stats = self.init_head(contexts[0])
        d = self.latent_dim
        mean, log_std = stats[:d], stats[d:]
        init_key, y_key, path_key = jr.split(key, 3)
        normal = jr.normal(init_key, (num_samples, d), ys.dtype)
        x0 = mean[None, :] + jnp.exp(log_std)[None, :] * normal
        z0 = augmented_initial_state(self.prior_sde(), noise, x0, y_key)
        z0 = jnp.concatenate([z0, jnp.zeros((num_samples, 1), z0.dtype)], axis=1)
        sol = solve(
            kl_sde,
            z0,
            ts,
            key=path_key,
            dt0=dt0,
            t0=t0,
            t1=t1,
            args=(ts, contexts),
        )
        zs, kl = split_kl(sol.ys)
        latents, _ = split_components(zs, d, self.num_components)
        kl_init = 0.5 * jnp.sum(jnp.exp(2 * log_std) + mean**2 - 1 - 2 * log_std)
        return latents, kl[:, -1], kl_init

    def decode(self, latents: Float[Array, "... latent"]) -> Float[Array, "... obs"]:
        """The mean of the observations given latent states."""
        flat = latents.reshape(-1, latents.shape[-1])
        out = jax.vmap(self.decoder)(flat)
        return out.reshape(*latents.shape[:-1], -1)

    def sample_prior(
        self,
        ts: Float[Array, " n"],
        key: PRNGKeyArray,
        *,
        num_paths: int,
        dt0: float,
        t0: float | None = None,
    ) -> Float[Array, "paths n latent"]:
        """Latent paths from the prior ($x(0) \\sim \\mathcal{N}(0, I)$)."""
        noise = self.noise()
        check_step_size(noise, dt0)
        prior = augment(self.prior_sde(), noise, state_size=self.latent_dim)
        x_key, y_key, path_key = jr.split(key, 3)
        x0 = jr.normal(x_key, (num_paths, self.latent_dim))
        z0 = augmented_initial_state(self.prior_sde(), noise, x0, y_key)
        sol = solve(prior, z0, ts, key=path_key, dt0=dt0, t0=t0)
        return sol.ys[..., : self.latent_dim]


def latent_fractional_loss(
    model: LatentFractionalSDE,
    batch: tuple[Float[Array, "batch n"], Float[Array, "batch n obs"]],
    key: PRNGKeyArray,
    *,
    dt0: float,
    t0: float,
    t1: float,
    kl_weight: float = 1.0,
) -> tuple[Array, dict[str, Array]]:
    r"""The negative evidence lower bound per observed value of a batch of series,
    for [`sdekit.train.fit`][]:

    $$-\frac{1}{N}\sum_{\text{series}} \Big(\mathbb{E}_q \sum_i \log p(y_i \mid
    x(t_i)) - \mathrm{KL}_{\text{path}} - \mathrm{KL}(q(x_0) \Vert p(x_0))\Big)$$

    with one posterior sample per series and $N$ the number of observed values.

    **Arguments:**

    - `model`: the [`sdekit.fractional.LatentFractionalSDE`][].
    - `batch`: `(ts, ys)`: times `(batch, n)` (strictly increasing per series, in
        $[t_0, t_1]$) and values `(batch, n, obs_dim)`, NaN where missing.
    - `key`: a PRNG key.
    - `dt0`, `t0`, `t1`: the solver's step and interval, as Python numbers
        (`gamma_max * dt0 < 1/2`). Bind them with `functools.partial`.
    - `kl_weight`: a weight on the KL terms (1: the ELBO; less to anneal).

    **Returns:** `(loss, metrics)` with metrics `nll`, `kl` (per observed value) and
    `hurst`.
    """
    ts, ys = batch
    keys = jr.split(key, ts.shape[0])

    def one(ts_i, ys_i, key_i):
        latents, kl, kl_init = model.posterior_paths(
            ts_i, ys_i, key_i, dt0=dt0, t0=t0, t1=t1
        )
        mean = model.decode(latents[0])
        std = jnp.exp(model.log_obs_std).astype(ys_i.dtype)[None, :]
        observed = ~jnp.isnan(ys_i)
        z = (jnp.where(observed, ys_i, 0.0) - mean) / std
        logp = -0.5 * (z**2 + 2 * jnp.log(std) + math.log(2 * math.pi))
        return (
            -jnp.sum(jnp.where(observed, logp, 0.0)),
            kl[0] + kl_init,
            jnp.sum(observed),
        )

    nll, kl, count = jax.vmap(one)(ts, ys, keys)
    total = jnp.maximum(jnp.sum(count), 1)
    loss = (jnp.sum(nll) + kl_weight * jnp.sum(kl)) / total
    metrics = {
        "nll": jnp.sum(nll) / total,
        "kl": jnp.sum(kl) / total,
        "hurst": model.hurst,
    }
    return loss, metrics
