r"""Latent dynamics: the three stable neural SDEs of Oh, Lim & Kim (ICLR 2024,
arXiv 2402.14989, section 3) and the baselines they are compared with.

Every class here maps a batch of latent states `(batch, hidden)` and the batch's
[`sdekit.data.ControlPath`][] to a drift and a diagonal diffusion, so that the
encoder, the solve and the heads around them are shared and the models differ only
in their dynamics.
"""

import abc
from collections.abc import Callable
from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, Float, PRNGKeyArray

from ..data import ControlPath


Latent = Float[Array, "batch hidden"]


def _time_features(t) -> Float[Array, "2"]:
    # The paper's time embedding: (sin t, cos t) of the raw time.
    return jnp.stack([jnp.sin(t), jnp.cos(t)])


def _mlp(in_size, out_size, width, depth, key, final_activation=lambda x: x):
    return eqx.nn.MLP(
        in_size,
        out_size,
        width,
        depth,
        activation=jax.nn.relu,
        final_activation=final_activation,
        key=key,
    )


class _Mixer(eqx.Module):
    r"""$\bar z = W [E_x X(t); E_z z]$: the latent combined with the control path
    (the official code's concatenate-and-mix). Only the drift sees it."""

    embed_path: eqx.nn.Linear
    embed_latent: eqx.nn.Linear
    mix: eqx.nn.Linear

    def __init__(self, path_channels: int, hidden: int, *, key: PRNGKeyArray):
        k1, k2, k3 = jr.split(key, 3)
        self.embed_path = eqx.nn.Linear(path_channels, hidden, key=k1)
        self.embed_latent = eqx.nn.Linear(hidden, hidden, key=k2)
        self.mix = eqx.nn.Linear(2 * hidden, hidden, key=k3)

    def __call__(self, z, x):
        return self.mix(jnp.concatenate([self.embed_path(x), self.embed_latent(z)]))


class _TimeDiffusion(eqx.Module):
    r"""$\sigma(t; \theta)$ from $(\sin t, \cos t)$. In the code form it is
    $\tanh(\mathrm{sigmoid}(\vartheta)\, \mathrm{net}(t))$ with a learned scalar
    $\vartheta$ initialised at 1, the official code's stabiliser."""

    net: eqx.nn.MLP
    theta: Float[Array, ""] | None
    bounded: bool = eqx.field(static=True)

    def __init__(self, hidden, width, depth, bounded, *, key):
        self.net = _mlp(2, hidden, width, depth, key)
        self.theta = jnp.asarray(1.0) if bounded else None
        self.bounded = bounded

    def __call__(self, t) -> Float[Array, " hidden"]:
        out = self.net(_time_features(t))
        if self.bounded:
            assert self.theta is not None
            return jnp.tanh(jax.nn.sigmoid(self.theta) * out)
        return out


class AbstractDynamics(eqx.Module):
    """Latent dynamics driven by a control path.

    `initial`, `drift`, `diffusion` and `latent` work on a whole batch: `state` is
    what is integrated (the latent itself, or its logarithm for
    [`sdekit.stable.GSDE`][]), `initial` builds it from the path's first value and
    `latent` maps it back to $z$. The head of [`sdekit.stable.LatentModel`][] reads
    the state.
    """

    initial_map: eqx.AbstractVar[eqx.nn.Linear]
    # Whether the diffusion ignores the state (Ito = Stratonovich, Euler order 1).
    additive: eqx.AbstractClassVar[bool]
    # Whether there is any noise (False for the ODE and CDE baselines).
    stochastic: eqx.AbstractClassVar[bool]

    @abc.abstractmethod
    def initial(self, x0: Float[Array, "batch channels"]) -> Latent:
        """The initial state from the path's first value $X(t_0)$, for a batch."""

    @abc.abstractmethod
    def drift(self, t, state: Latent, path: ControlPath) -> Latent:
        """The drift of `state`, for a batch."""

    @abc.abstractmethod
    def diffusion(self, t, state: Latent) -> Latent:
        """The diagonal diffusion of `state`, for a batch."""

    @abc.abstractmethod
    def latent(self, state: Latent) -> Latent:
        """The latent $z$ from the integrated state."""


def _linear_initial(initial_map: eqx.nn.Linear, x0) -> Latent:
    # z0 = W X(t0) + b, the paper's initial map.
    return jax.vmap(initial_map)(x0)


def _bound(out: Latent, bounded: bool) -> Latent:
    # The official code's outer tanh on the drift (and the naive diffusion).
    return jnp.tanh(out) if bounded else out


def _drift_parts(path_channels, hidden, width, depth, with_time, keys):
    r"""The initial map, the path mixer and the drift network $\gamma$ (reading
    $(\bar z, \sin t, \cos t)$ when `with_time`), from three keys."""
    k0, k1, k2 = keys
    return (
        eqx.nn.Linear(path_channels, hidden, key=k0),
        _Mixer(path_channels, hidden, key=k1),
        _mlp(hidden + 2 * with_time, hidden, width, depth, k2),
    )


class AbstractMixedDrift(AbstractDynamics):
    r"""Dynamics whose drift is built from a network $\gamma$ of the mixed latent
    $\bar z = W [E_x X(t); E_z z]$ (and of time when `with_time`): every model here
    but the neural CDE."""

    mixer: eqx.AbstractVar[_Mixer]
    gamma: eqx.AbstractVar[eqx.nn.MLP]
    bounded: eqx.AbstractVar[bool]
    # Whether gamma also reads (sin t, cos t).
    with_time: eqx.AbstractClassVar[bool]

    def gamma_out(self, t, state, path) -> Latent:
        r"""$\gamma(t, \bar z)$ for a batch, before any bounding."""
        zbar = jax.vmap(self.mixer)(state, path.evaluate(t))
        if self.with_time:
            features = jnp.broadcast_to(_time_features(t), (state.shape[0], 2))
            zbar = jnp.concatenate([zbar, features], axis=-1)
        return jax.vmap(self.gamma)(zbar)


class LSDE(AbstractMixedDrift):
    r"""Langevin-type SDE (paper eq. 5):
    $\mathrm{d}z = \gamma(\bar z; \theta)\,\mathrm{d}t + \sigma(t; \theta)\,\mathrm{d}W$.

    Additive noise: the diffusion depends on time only. `bounded=True` is the
    official code's form (outer `tanh` on the drift, bounded diffusion).
    """

    initial_map: eqx.nn.Linear
    mixer: _Mixer
    gamma: eqx.nn.MLP
    sigma: _TimeDiffusion
    bounded: bool = eqx.field(static=True)
    additive: ClassVar[bool] = True
    stochastic: ClassVar[bool] = True
    # The paper's Langevin drift is autonomous.
    with_time: ClassVar[bool] = False

    def __init__(self, path_channels, hidden, width, depth, bounded=False, *, key):
        *keys, k3 = jr.split(key, 4)
        self.initial_map, self.mixer, self.gamma = _drift_parts(
            path_channels, hidden, width, depth, self.with_time, keys
        )
        self.sigma = _TimeDiffusion(hidden, width, depth, bounded, key=k3)
        self.bounded = bounded

    def initial(self, x0):
        return _linear_initial(self.initial_map, x0)

    def drift(self, t, state, path):
        return _bound(self.gamma_out(t, state, path), self.bounded)

    def diffusion(self, t, state):
        return jnp.broadcast_to(self.sigma(t), state.shape)

    def latent(self, state):
        return state


class LNSDE(AbstractMixedDrift):
    r"""Linear-noise SDE (paper eq. 6):
    $\mathrm{d}z = \gamma(t, \bar z; \theta)\,\mathrm{d}t + \sigma(t; \theta)\odot z\,\mathrm{d}W$.

    The diffusion is exactly linear in $z$ in both forms; `bounded=True` adds the
    official code's outer `tanh` on the drift and bounds $\sigma$.
    """

    initial_map: eqx.nn.Linear
    mixer: _Mixer
    gamma: eqx.nn.MLP
    sigma: _TimeDiffusion
    bounded: bool = eqx.field(static=True)
    additive: ClassVar[bool] = False
    stochastic: ClassVar[bool] = True
    with_time: ClassVar[bool] = True

    def __init__(self, path_channels, hidden, width, depth, bounded=False, *, key):
        *keys, k3 = jr.split(key, 4)
        self.initial_map, self.mixer, self.gamma = _drift_parts(
            path_channels, hidden, width, depth, self.with_time, keys
        )
        self.sigma = _TimeDiffusion(hidden, width, depth, bounded, key=k3)
        self.bounded = bounded

    def initial(self, x0):
        return _linear_initial(self.initial_map, x0)

    def drift(self, t, state, path):
        return _bound(self.gamma_out(t, state, path), self.bounded)

    def diffusion(self, t, state):
        return self.sigma(t)[None, :] * state

    def latent(self, state):
        return state


class GSDE(AbstractMixedDrift):
    r"""Geometric SDE (paper eq. 7):
    $\mathrm{d}z / z = \gamma(t, \bar z; \theta)\,\mathrm{d}t + \sigma(t; \theta)\,\mathrm{d}W$,

    integrated as $u = \log z$ with the Itô correction,
    $\mathrm{d}u = (\gamma - \sigma^2/2)\,\mathrm{d}t + \sigma\,\mathrm{d}W$, so
    $z = e^u$ stays positive for any step size (Euler-Maruyama on $z$ itself does
    not). The state starts at $z_0 = \mathrm{softplus}(W X(t_0) + b) + 10^{-4}$.
    The networks and the head read $\log z$ (so $\gamma$ is a function of $z$
    through $\log z$): $z$ ranges over orders of magnitude, and a network fed $z$
    itself would make the drift grow like $z$ and the solve explode.
    `bounded=True` is the official code's form: $\tanh$ on $\gamma$, damped by
    $\tanh(z)$, and a bounded $\sigma$.
    """

    initial_map: eqx.nn.Linear
    mixer: _Mixer
    gamma: eqx.nn.MLP
    sigma: _TimeDiffusion
    bounded: bool = eqx.field(static=True)
    # In log space the diffusion is sigma(t): additive.
    additive: ClassVar[bool] = True
    stochastic: ClassVar[bool] = True
    with_time: ClassVar[bool] = True

    def __init__(self, path_channels, hidden, width, depth, bounded=False, *, key):
        *keys, k3 = jr.split(key, 4)
        self.initial_map, self.mixer, self.gamma = _drift_parts(
            path_channels, hidden, width, depth, self.with_time, keys
        )
        self.sigma = _TimeDiffusion(hidden, width, depth, bounded, key=k3)
        self.bounded = bounded

    def initial(self, x0):
        z0 = jax.nn.softplus(jax.vmap(self.initial_map)(x0)) + 1e-4
        return jnp.log(z0)

    def relative_drift(self, t, state, path):
        r"""$\gamma(t, \bar z)$, the drift of $\mathrm{d}z / z$, from $\log z$."""
        out = self.gamma_out(t, state, path)
        return jnp.tanh(out) * jnp.tanh(jnp.exp(state)) if self.bounded else out

    def drift(self, t, state, path):
        sigma = self.sigma(t)
        return self.relative_drift(t, state, path) - 0.5 * sigma[None, :] ** 2

    def diffusion(self, t, state):
        return jnp.broadcast_to(self.sigma(t), state.shape)

    def latent(self, state):
        return jnp.exp(state)


class NeuralSDE(AbstractMixedDrift):
    r"""The naive neural SDE baseline:
    $\mathrm{d}z = \gamma(t, \bar z)\,\mathrm{d}t + \sigma(t, z)\,\mathrm{d}W$ with a
    free diffusion network (no structure, so no stability guarantee)."""

    initial_map: eqx.nn.Linear
    mixer: _Mixer
    gamma: eqx.nn.MLP
    sigma: eqx.nn.MLP
    bounded: bool = eqx.field(static=True)
    additive: ClassVar[bool] = False
    stochastic: ClassVar[bool] = True
    with_time: ClassVar[bool] = True

    def __init__(self, path_channels, hidden, width, depth, bounded=False, *, key):
        *keys, k3 = jr.split(key, 4)
        self.initial_map, self.mixer, self.gamma = _drift_parts(
            path_channels, hidden, width, depth, self.with_time, keys
        )
        self.sigma = _mlp(hidden + 2, hidden, width, depth, k3)
        self.bounded = bounded

    def initial(self, x0):
        return _linear_initial(self.initial_map, x0)

    def drift(self, t, state, path):
        return _bound(self.gamma_out(t, state, path), self.bounded)

    def diffusion(self, t, state):
        features = jnp.broadcast_to(_time_features(t), (state.shape[0], 2))
        out = jax.vmap(self.sigma)(jnp.concatenate([state, features], axis=-1))
        return _bound(out, self.bounded)

    def latent(self, state):
        return state


class NeuralODE(AbstractMixedDrift):
    r"""The neural ODE baseline: the drift of [`sdekit.stable.LNSDE`][],
    $\mathrm{d}z = \gamma(t, \bar z)\,\mathrm{d}t$, with no noise."""

    initial_map: eqx.nn.Linear
    mixer: _Mixer
    gamma: eqx.nn.MLP
    bounded: bool = eqx.field(static=True)
    additive: ClassVar[bool] = True
    stochastic: ClassVar[bool] = False
    with_time: ClassVar[bool] = True

    def __init__(self, path_channels, hidden, width, depth, bounded=False, *, key):
        keys = jr.split(key, 3)
        self.initial_map, self.mixer, self.gamma = _drift_parts(
            path_channels, hidden, width, depth, self.with_time, keys
        )
        self.bounded = bounded

    def initial(self, x0):
        return _linear_initial(self.initial_map, x0)

    def drift(self, t, state, path):
        return _bound(self.gamma_out(t, state, path), self.bounded)

    def diffusion(self, t, state):
        return jnp.zeros_like(state)

    def latent(self, state):
        return state


class NeuralCDE(AbstractDynamics):
    r"""The neural CDE baseline (Kidger et al. 2020):
    $\mathrm{d}z = f(z)\,\mathrm{d}X(t)$ over the Hermite cubic path, i.e. the drift
    $f(z)\, \dot X(t)$ with $f$ an MLP into $(\text{hidden}, \text{channels})$
    matrices and a final `tanh`, as in diffrax's and torchcde's examples.
    (`bounded` is accepted for a uniform constructor and ignored.)"""

    initial_map: eqx.nn.Linear
    field: eqx.nn.MLP
    path_channels: int = eqx.field(static=True)
    additive: ClassVar[bool] = True
    stochastic: ClassVar[bool] = False

    def __init__(self, path_channels, hidden, width, depth, bounded=False, *, key):
        del bounded
        k0, k1 = jr.split(key)
        self.initial_map = eqx.nn.Linear(path_channels, hidden, key=k0)
        self.field = _mlp(hidden, hidden * path_channels, width, depth, k1, jnp.tanh)
        self.path_channels = path_channels

    def initial(self, x0):
        return _linear_initial(self.initial_map, x0)

    def drift(self, t, state, path):
        matrices = jax.vmap(self.field)(state).reshape(
            state.shape[0], state.shape[1], self.path_channels
        )
        return jnp.einsum("bhc,bc->bh", matrices, path.derivative(t))

    def diffusion(self, t, state):
        return jnp.zeros_like(state)

    def latent(self, state):
        return state


# The constructors by `--model` name (all take `(path_channels, hidden, width, depth,
# bounded, *, key)`).
MODELS: dict[str, Callable[..., AbstractDynamics]] = {
    "lsde": LSDE,
    "lnsde": LNSDE,
    "gsde": GSDE,
    "neural-ode": NeuralODE,
    "neural-sde": NeuralSDE,
    "neural-cde": NeuralCDE,
}
