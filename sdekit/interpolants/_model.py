r"""The learned fields of a stochastic interpolant: the velocity $b$ and, where trained,
the denoiser $\eta$ or the score $s$, with the interpolant, base density and data
scaling they belong to."""

from typing import Literal

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray

from ..data._densities import AbstractDensity, StandardGaussian
from ._interpolant import AbstractInterpolant


ACTIVATIONS = {
    "silu": jax.nn.silu,
    "selu": jax.nn.selu,
    "relu": jax.nn.relu,
    "gelu": jax.nn.gelu,
    "tanh": jnp.tanh,
}
Loss = Literal["velocity", "denoiser", "score"]
LOSSES = ("velocity", "denoiser", "score")


class TimeMLP(eqx.Module):
    """An MLP of `(t, x, label)`: the time enters as $t$ and `time_features` pairs
    $(\\sin 2\\pi k t, \\cos 2\\pi k t)$, a label (if any) as a one-hot vector whose last
    slot is "no label" (for classifier-free guidance).

    **Arguments:**

    - `dim`: the data dimension $d$.
    - `out`: the output size.
    - `width`, `depth`: hidden width and number of hidden layers.
    - `activation`: a name in `silu`, `selu`, `relu`, `gelu`, `tanh`.
    - `time_features`: the number of Fourier pairs of $t$.
    - `num_classes`: labels `0..num_classes-1` (0: unconditional).
    - `key`: initialisation key.
    """

    mlp: eqx.nn.MLP
    time_features: int = eqx.field(static=True)
    num_classes: int = eqx.field(static=True)

    def __init__(
        self,
        dim: int,
        out: int,
        width: int,
        depth: int,
        activation: str,
        time_features: int,
        num_classes: int,
        *,
        key: PRNGKeyArray,
    ):
        if activation not in ACTIVATIONS:
            raise ValueError(
                f"Unknown activation {activation!r}; choose one of "
                f"{', '.join(ACTIVATIONS)}."
            )
        self.time_features = time_features
        self.num_classes = num_classes
        labels = num_classes + 1 if num_classes else 0
        self.mlp = eqx.nn.MLP(
            dim + 1 + 2 * time_features + labels,
            out,
            width,
            depth,
            activation=ACTIVATIONS[activation],
            key=key,
        )

    def __call__(self, t, x, label=None):
        t = jnp.asarray(t, x.dtype)
        parts = [x, t[None]]
        if self.time_features:
            k = jnp.arange(1, self.time_features + 1, dtype=x.dtype)
            parts += [jnp.sin(2 * jnp.pi * k * t), jnp.cos(2 * jnp.pi * k * t)]
        if self.num_classes:
            null = self.num_classes
            label = null if label is None else label
            parts.append(jax.nn.one_hot(label, self.num_classes + 1, dtype=x.dtype))
        return self.mlp(jnp.concatenate(parts))


class InterpolantModel(eqx.Module):
    r"""A trained (or untrained) stochastic interpolant between a base density and the
    data, in the model's coordinates $u = (x - \text{shift}) / \text{scale}$.

    The network outputs the velocity $b(t, u)$ and, with `loss="denoiser"` or
    `"score"`, a second head: the denoiser $\eta(t, u) = E[n / \sigma \mid x_t = u]$ or
    the score $s(t, u) = \nabla \log \rho_t(u)$. Here $n$ is the Gaussian part of
    $x_t$ and $\sigma(t)$ its scale: with a standard Gaussian base coupled
    independently, $n = \alpha x_0 + \gamma z$ and $\sigma^2 = \alpha^2 + \gamma^2$
    (the one-sided case of the paper, section 3.4, when $\gamma = 0$); otherwise
    $n = \gamma z$, $\sigma = \gamma$ (the paper's $\eta_z$). Then $s = -\eta/\sigma$.

    **Arguments:**

    - `interpolant`: an [`sdekit.interpolants.AbstractInterpolant`][].
    - `dim`: the data dimension.
    - `key`: initialisation key.
    - `base`: the density of $x_0$ in model coordinates (default standard Gaussian).
    - `loss`: `"velocity"`, `"denoiser"` or `"score"`: which fields the network has.
    - `independent`: whether $x_0$ is coupled independently of $x_1$ (an OT coupling
        is not).
    - `shift`, `scale`: the data's affine scaling (default 0 and 1).
    - `width`, `depth`, `activation`, `time_features`, `num_classes`: the network, see
        [`sdekit.interpolants.TimeMLP`][].
    """

    interpolant: AbstractInterpolant
    base: AbstractDensity
    network: TimeMLP
    shift: Float[Array, " d"]
    scale: Float[Array, ""]
    loss: str = eqx.field(static=True)
    gaussian_latent: bool = eqx.field(static=True)

    def __init__(
        self,
        interpolant: AbstractInterpolant,
        dim: int,
        *,
        key: PRNGKeyArray,
        base: AbstractDensity | None = None,
        loss: Loss = "velocity",
        independent: bool = True,
        shift: ArrayLike | None = None,
        scale: ArrayLike = 1.0,
        width: int = 256,
        depth: int = 3,
        activation: str = "silu",
        time_features: int = 0,
        num_classes: int = 0,
    ):
        if loss not in LOSSES:
            raise ValueError(f"Unknown loss {loss!r}; choose one of {', '.join(LOSSES)}.")
        self.interpolant = interpolant
        self.base = StandardGaussian(dim) if base is None else base
        if self.base.dim != dim:
            raise ValueError(
                f"The base density has dimension {self.base.dim}, the data {dim}."
            )
        heads = 1 if loss == "velocity" else 2
        self.network = TimeMLP(
            dim,
            heads * dim,
            width,
            depth,
            activation,
            time_features,
            num_classes,
            key=key,
        )
        self.shift = jnp.zeros(dim) if shift is None else jnp.asarray(shift, float)
        self.scale = jnp.asarray(scale, float)
        self.loss = loss
        # The base is part of the Gaussian latent only where it enters x_t: not for the
        # mirror interpolant (alpha = 0), whose noise scale is gamma alone and vanishes
        # at t = 0, where its samplers must not start the SDE.
        self.gaussian_latent = (
            isinstance(self.base, StandardGaussian)
            and independent
            and float(interpolant.alpha(0.0)) != 0.0
        )

    @property
    def dim(self) -> int:
        return self.shift.shape[0]

    @property
    def num_classes(self) -> int:
        return self.network.num_classes

    def noise_scale(self, t) -> Array:
        r"""$\sigma(t)$, the scale of the Gaussian part of $x_t$ (see above)."""
        gamma = self.interpolant.gamma(t)
        if self.gaussian_latent:
            return jnp.sqrt(self.interpolant.alpha(t) ** 2 + gamma**2)
        return gamma

    def _sigma_sigma_dot(self, t) -> Array:
        out = self.interpolant.gamma.gamma_gamma_dot(t)
        if self.gaussian_latent:
            out = out + self.interpolant.alpha(t) * self.interpolant.alpha_dot(t)
        return out

    def velocity(self, t, u: Float[Array, " d"], label=None) -> Float[Array, " d"]:
        r"""The velocity $b(t, u)$ of the probability-flow ODE $\dot u = b$."""
        return self.network(t, u, label)[: self.dim]

    def has_score(self) -> bool:
        """Whether [`sdekit.interpolants.InterpolantModel.score`][] is available: a
        denoiser or score head, or a velocity with a Gaussian base coupled
        independently (then the score follows from $b$)."""
        return self.loss != "velocity" or self.gaussian_latent

    def score(self, t, u: Float[Array, " d"], label=None) -> Float[Array, " d"]:
        r"""The score $s(t, u) = \nabla_u \log \rho_t(u)$.

        From a velocity alone (Gaussian base, independent coupling): with
        $x_t = \beta x_1 + n$, $b = \dot\beta E[x_1|u] + (\sigma\dot\sigma/\sigma^2)
        E[n|u]$ and $u = \beta E[x_1|u] + E[n|u]$ give
        $E[n|u] = (\beta b - \dot\beta u) / (\beta\sigma\dot\sigma/\sigma^2 - \dot\beta)$,
        and $s = -E[n|u]/\sigma^2$.
        """
        out = self.network(t, u, label)
        sigma = self.noise_scale(t)
        if self.loss == "score":
            return out[self.dim :]
        if self.loss == "denoiser":
            return -out[self.dim :] / sigma
        if not self.gaussian_latent:
            raise ValueError(
                "This model has no score: a velocity alone gives the score only with "
                "a standard Gaussian base coupled independently. Train with "
                "loss='denoiser' (--loss denoiser) or 'score'."
            )
        b = out[: self.dim]
        beta, beta_dot = self.interpolant.beta(t), self.interpolant.beta_dot(t)
        c = self._sigma_sigma_dot(t) / sigma**2
        denominator = beta * c - beta_dot
        # Where the data's weight and its derivative vanish (the encoder-decoder before
        # t = 1/2), x_t is all noise: E[n|u] = u.
        all_noise = denominator == 0
        safe = jnp.where(all_noise, 1.0, denominator)
        mean_noise = jnp.where(all_noise, u, (beta * b - beta_dot * u) / safe)
        return -mean_noise / sigma**2

    # The scaling and the base are data, not parameters: the trainer updates every
    # floating-point leaf, so gradients are stopped where they are read.
    def normalise(self, x: Array) -> Array:
        """Data coordinates to model coordinates."""
        shift, scale = jax.lax.stop_gradient((self.shift, self.scale))
        return (x - jnp.broadcast_to(shift, x.shape)) / scale

    def denormalise(self, u: Array) -> Array:
        """Model coordinates to data coordinates."""
        shift, scale = jax.lax.stop_gradient((self.shift, self.scale))
        return jnp.broadcast_to(shift, u.shape) + scale * u

    def log_scale(self) -> Array:
        """$\\log|\\det|$ of the map from model to data coordinates."""
        return self.dim * jnp.log(jax.lax.stop_gradient(self.scale))

    def sample_base(self, key: PRNGKeyArray, n: int) -> Array:
        """`n` samples of the base density, in model coordinates."""
        return jax.lax.stop_gradient(self.base).sample(key, n)

    def base_log_prob(self, u: Array) -> Array:
        """The base log-density at `u` (model coordinates)."""
        return jax.lax.stop_gradient(self.base).log_prob(u)


def data_scaling(x: Array) -> tuple[Array, Array]:
    """`(shift, scale)`: the per-feature mean and one overall standard deviation (one
    scale for all features, so that a constant feature, e.g. an image's border pixel,
    does not blow up)."""
    shift = jnp.mean(x, axis=0)
    scale = jnp.sqrt(jnp.mean((x - shift[None]) ** 2))
    return shift, jnp.where(scale > 0, scale, 1.0)
