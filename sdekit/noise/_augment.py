"""Any sdekit SDE driven by MA-fBM instead of Brownian motion, as a Markov SDE on the
state and the noise's Ornstein-Uhlenbeck components."""

import math
from collections.abc import Sequence
from typing import Any, Protocol

import diffrax as dfx
import equinox as eqx
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray

from .._driving_noise import AbstractDrivingNoise
from .._sde import SDE
from .._solution import SDESolution
from .._solve import solve
from .._tensor_operator import TensorOperator


class _FractionalLike(Protocol):
    """What the functions below read of their `noise`, an
    `sdekit.noise.FractionalNoise`, named by its members for the type checker (see
    `_check_fractional` for why not by its class)."""

    @property
    def num_components(self) -> int: ...

    # Any, not float: pyright matches an equinox field with a converter (as
    # FractionalNoise's) against a protocol by its descriptor, not by the float it
    # reads as.
    @property
    def gamma_max(self) -> Any: ...

    @property
    def speeds(self) -> np.ndarray: ...

    def omega(self) -> Float[Array, " K"]: ...

    def initial_components(
        self, key: PRNGKeyArray, shape: tuple[int, ...] = (), dtype=None
    ) -> Float[Array, "*shape K"]: ...


def _check_fractional(noise) -> None:
    # FractionalNoise builds its Markov lift from this module, so this module knows it
    # by its methods only (importing it here would make an import circle).
    if not (isinstance(noise, AbstractDrivingNoise) and hasattr(noise, "omega")):
        raise TypeError(
            "`noise` must be an sdekit.noise.FractionalNoise, got "
            f"{type(noise).__name__}."
        )


# Daems et al. 2024, section 4: explicit schemes need gamma_max * dt below this.
MAX_EXPLICIT_GAMMA_DT = 0.5


def num_channels(sde: SDE, state_size: int) -> int:
    """The number of independent noise channels of `sde` for a state of `state_size`
    components: its number of Brownian motions (one per component for diagonal noise,
    one for scalar noise, `noise_dim` for general noise). Each channel is one
    fractional noise with its own $K$ components."""
    return math.prod(sde.brownian_shape((state_size,)))


class _AugmentedDrift(eqx.Module):
    sde: SDE
    omega: Array
    gammas: tuple[float, ...] = eqx.field(static=True)
    channels: int = eqx.field(static=True)

    def __call__(self, t, z, args):
        K = len(self.gammas)
        d = z.shape[0] - self.channels * K
        x, y = z[:d], z[d:].reshape(self.channels, K)
        gammas = jnp.asarray(self.gammas, z.dtype)
        omega = self.omega.astype(z.dtype)
        # dB = -sum_k omega_k gamma_k Y_k dt + omega_bar dW, per channel: the drift
        # gains g applied to the first part.
        v = y @ (omega * gammas)
        g = self.sde.diffusion_operator(t, x, args)
        dx = self.sde.drift(t, x, args) - g.mv(v.reshape(g.in_structure().shape))
        return jnp.concatenate([dx, (-gammas[None, :] * y).reshape(-1)])


class _AugmentedDiffusion(eqx.Module):
    sde: SDE
    omega: Array
    num_components: int = eqx.field(static=True)
    channels: int = eqx.field(static=True)
    # The lifted SDE's Brownian shape: () for scalar noise, else (channels,).
    shape: tuple[int, ...] = eqx.field(static=True)

    def __call__(self, t, z, args):
        K = self.num_components
        d = z.shape[0] - self.channels * K
        omega_bar = jnp.sum(self.omega).astype(z.dtype)
        g = self.sde.diffusion_operator(t, z[:d], args)
        m = self.channels
        # The state gets omega_bar g dW; each channel's K components get that
        # channel's dW. As one matrix on the m Brownian motions (a plain array, so
        # that any solver may differentiate it).
        top = omega_bar * g.as_matrix()
        bottom = jnp.kron(jnp.eye(m, dtype=z.dtype), jnp.ones((K, 1), z.dtype))
        columns = jnp.concatenate([top, bottom]).reshape(z.shape[0], *self.shape)
        return TensorOperator(columns, 1)


def augment(sde: SDE, noise: _FractionalLike, state_size: int | None = None) -> SDE:
    r"""The Markov SDE of `sde` driven by the fractional noise `noise` instead of
    Brownian motion (Daems et al. 2024, equation 11).

    For $\mathrm{d}X = b(t, X)\,\mathrm{d}t + g(t, X)\,\mathrm{d}\hat B$, with each of
    the $m$ channels of $\hat B$ an independent MA-fBM with components $Y_{j1},
    \dots, Y_{jK}$ driven by its own Brownian motion $W_j$, the pair $(X, Y)$ solves

    $$\mathrm{d}X = \Big[b - g \sum_k \omega_k \gamma_k Y_{\cdot k}\Big]\mathrm{d}t
    + \bar\omega\, g\,\mathrm{d}W, \qquad \mathrm{d}Y_{jk} = -\gamma_k Y_{jk}\,
    \mathrm{d}t + \mathrm{d}W_j,$$

    driven by the same $m$ Brownian motions as `sde`. The returned SDE has the flat
    state $z = (X, Y_{11}, \dots, Y_{1K}, \dots, Y_{mK})$ of size $d + mK$ (see
    [`sdekit.noise.split_components`][]) and solves with [`sdekit.solve`][] like any
    other: every solver, Brownian path, adjoint and batching of the core applies.
    Start it from [`sdekit.noise.augmented_initial_state`][], which draws $Y(0)$ from
    the stationary law for type I; [`sdekit.noise.solve_fractional`][] does both.

    The weights are computed once, here: build the augmented SDE inside the loss
    when $H$ is learnable, so that the gradient reaches $H$ through $\omega(H)$.

    The noise structure carries over: scalar noise stays scalar; diagonal noise
    ($m = d$) and general noise ($m$ = `noise_dim`) become general noise with $m$
    Brownian motions (the lifted diffusion is a lineax operator from them). The calculus and additivity carry over too (the components
    are additive, and $\hat B$ is a semimartingale, so Itô and Stratonovich
    integrals against it are those against $\mathrm{d}Y$).

    **Arguments:**

    - `sde`: an [`sdekit.SDE`][] with a one-dimensional state.
    - `noise`: the [`sdekit.noise.FractionalNoise`][] of every channel.
    - `state_size`: $d$, needed when the number of channels depends on it
        (diagonal noise: $m = d$).

    **Returns:** an [`sdekit.SDE`][] on the augmented state.
    """
    if not isinstance(sde, SDE):
        raise TypeError(f"`sde` must be an sdekit.SDE, got {type(sde).__name__}.")
    _check_fractional(noise)
    omega = noise.omega()
    gammas = tuple(float(g) for g in noise.speeds)
    K = noise.num_components
    if state_size is None:
        # Scalar and general noise have as many channels whatever the state's size.
        if sde.brownian_shape((1,)) != sde.brownian_shape((2,)):
            raise ValueError(
                "Augmenting an SDE whose number of Brownian motions depends on its "
                "state (diagonal noise) needs `state_size`, the size d of its state: "
                "each of its d noise channels gets its own components."
            )
        state_size = 1
    m = num_channels(sde, state_size)
    scalar = sde.brownian_shape((state_size,)) == ()
    return SDE(
        _AugmentedDrift(sde, omega, gammas, m),
        _AugmentedDiffusion(sde, omega, K, m, () if scalar else (m,)),
        noise_structure="scalar" if scalar else "general",
        noise_dim=None if scalar else m,
        calculus=sde.calculus,
        additive=sde.additive,
    )


def augmented_initial_state(
    sde: SDE,
    noise: _FractionalLike,
    y0: Float[ArrayLike, "batch d"],
    key: PRNGKeyArray,
) -> Float[Array, "batch d+m*K"]:
    """Initial states $(X(0), Y(0))$ of [`sdekit.noise.augment`][]`(sde, noise)` for
    a batch of initial states `y0`: $Y(0)$ stationary for type I (one draw per path
    and channel, from `key`), zero for type II."""
    y0 = jnp.asarray(y0)
    if y0.ndim != 2:
        raise ValueError(
            f"`y0` must have shape (batch, d) (a batch of one-dimensional states), got "
            f"shape {y0.shape}."
        )
    if not jnp.issubdtype(y0.dtype, jnp.floating):
        y0 = y0.astype(jnp.result_type(float))
    batch, d = y0.shape
    m = num_channels(sde, d)
    y = noise.initial_components(key, (batch, m), y0.dtype)
    return jnp.concatenate([y0, y.reshape(batch, m * noise.num_components)], axis=1)


def split_components(
    zs: Float[Array, "... d+m*K"], state_size: int, num_components: int
) -> tuple[Float[Array, "... d"], Float[Array, "... m K"]]:
    """Split augmented states into the original state `(..., d)` and the noise
    components `(..., m, K)`."""
    x = zs[..., :state_size]
    y = zs[..., state_size:]
    return x, y.reshape(*y.shape[:-1], -1, num_components)


def check_step_size(
    noise: _FractionalLike, dt0: float, solver: dfx.AbstractSolver | None = None
) -> None:
    r"""Raise a `ValueError` when an explicit solver's step is too large for the
    fastest component: $\gamma_{\max}\,\Delta t$ must stay below 1/2 (Daems et al.
    2024). Implicit solvers are not checked."""
    if isinstance(solver, dfx.AbstractImplicitSolver):
        return
    product = noise.gamma_max * float(dt0)
    if not product < MAX_EXPLICIT_GAMMA_DT:
        name = type(solver).__name__ if solver is not None else "Euler"
        raise ValueError(
            f"gamma_max * dt0 = {noise.gamma_max:g} * {float(dt0):g} = {product:g} is "
            f"too large for the explicit solver {name}: the fastest noise component "
            f"needs gamma_max * dt0 < {MAX_EXPLICIT_GAMMA_DT}. Take dt0 < "
            f"{MAX_EXPLICIT_GAMMA_DT / noise.gamma_max:g}, or a smaller gamma_max."
        )


def solve_fractional(
    sde: SDE,
    y0: Float[ArrayLike, "batch d"],
    ts: Float[ArrayLike, " n"] | Float[ArrayLike, "batch n"] | Sequence[ArrayLike],
    *,
    noise: AbstractDrivingNoise,
    key: PRNGKeyArray,
    dt0: float,
    solver: dfx.AbstractSolver | None = None,
    return_components: bool = False,
    **kwargs,
) -> SDESolution:
    r"""Solve a batch of paths of `sde` driven by the fractional noise `noise`.

    The same as `sdekit.solve(sde, y0, ts, noise=noise, ...)`: augments the SDE
    ([`sdekit.noise.augment`][]), draws the components' initial state, checks the
    step size against $\gamma_{\max}$ and solves; [`sdekit.solve`][]'s keyword
    arguments (`t0`, `t1`, `adjoint`, `brownian`, `args`, ...) pass through. Here the
    noise components can also be returned.

    **Arguments:**

    - `sde`: an [`sdekit.SDE`][] with a one-dimensional state.
    - `y0`: initial states `(batch, d)`.
    - `ts`: save times, as for [`sdekit.solve`][].
    - `noise`: the [`sdekit.noise.FractionalNoise`][] of every channel.
    - `key`: a PRNG key (the components' initial draw and the Brownian motions).
    - `dt0`: the step size; $\gamma_{\max}$ `dt0` $< 1/2$ for explicit solvers.
    - `solver`: a diffrax solver (default as [`sdekit.solve`][]).
    - `return_components`: if `True`, `ys` holds the augmented state
        `(batch, n, d + m K)` (split it with [`sdekit.noise.split_components`][]);
        otherwise only the original state `(batch, n, d)`.

    **Returns:** an [`sdekit.SDESolution`][].
    """
    _check_fractional(noise)
    if return_components:
        init_key, path_key = jr.split(key)
        lifted, z0 = noise.lift(sde, jnp.asarray(y0), init_key, dt0=dt0, solver=solver)
        return solve(lifted, z0, ts, key=path_key, dt0=dt0, solver=solver, **kwargs)
    return solve(sde, y0, ts, noise=noise, key=key, dt0=dt0, solver=solver, **kwargs)
