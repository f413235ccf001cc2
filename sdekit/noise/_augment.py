"""Any sdekit SDE driven by MA-fBM instead of Brownian motion, as a Markov SDE on the
state and the noise's Ornstein-Uhlenbeck components."""

from collections.abc import Sequence
from typing import Any

import diffrax as dfx
import equinox as eqx
import jax.numpy as jnp
import jax.random as jr
import lineax as lx
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray

from .._sde import SDE
from .._solve import SDESolution, solve
from ._fractional import FractionalNoise


# Daems et al. 2024, section 4: explicit schemes need gamma_max * dt below this.
MAX_EXPLICIT_GAMMA_DT = 0.5


def num_channels(sde: SDE, state_size: int) -> int:
    """The number of independent noise channels of `sde` for a state of `state_size`
    components: one per component (diagonal), one (scalar) or `noise_dim` (general).
    Each channel is one fractional noise with its own $K$ components."""
    if sde.noise == "diagonal":
        return state_size
    if sde.noise == "scalar":
        return 1
    assert sde.noise_dim is not None
    return sde.noise_dim


def _split(z, state_size: int, num_components: int):
    x = z[:state_size]
    y = z[state_size:].reshape(-1, num_components)
    return x, y


def _apply_diffusion(sde: SDE, g, v):
    # g dB for the noise structure: elementwise, one shared channel, or a matrix.
    if sde.noise == "diagonal":
        return g * v
    if sde.noise == "scalar":
        return g * v[0]
    if isinstance(g, lx.AbstractLinearOperator):
        return g.mv(v)
    return g @ v


def _state_size(sde: SDE, z_size: int, K: int) -> int:
    if sde.noise == "diagonal":
        return z_size // (K + 1)
    if sde.noise == "scalar":
        return z_size - K
    assert sde.noise_dim is not None
    return z_size - sde.noise_dim * K


class _AugmentedDrift(eqx.Module):
    sde: SDE
    omega: Array
    gammas: tuple[float, ...] = eqx.field(static=True)

    def __call__(self, t, z, args):
        K = len(self.gammas)
        d = _state_size(self.sde, z.shape[0], K)
        x, y = _split(z, d, K)
        gammas = jnp.asarray(self.gammas, z.dtype)
        omega = self.omega.astype(z.dtype)
        # dB = -sum_k omega_k gamma_k Y_k dt + omega_bar dW, per channel.
        v = y @ (omega * gammas)
        g = self.sde.diffusion(t, x, args)
        dx = self.sde.drift(t, x, args) - _apply_diffusion(self.sde, g, v)
        return jnp.concatenate([dx, (-gammas[None, :] * y).reshape(-1)])


class _AugmentedDiffusion(eqx.Module):
    sde: SDE
    omega: Array
    num_components: int = eqx.field(static=True)

    def __call__(self, t, z, args):
        K = self.num_components
        d = _state_size(self.sde, z.shape[0], K)
        x = z[:d]
        omega_bar = jnp.sum(self.omega).astype(z.dtype)
        g = self.sde.diffusion(t, x, args)
        if self.sde.noise == "scalar":
            return jnp.concatenate([g * omega_bar, jnp.ones((K,), z.dtype)])
        if self.sde.noise == "diagonal":
            top = jnp.diag(g * omega_bar)
        elif isinstance(g, lx.AbstractLinearOperator):
            top = g.as_matrix() * omega_bar
        else:
            top = g * omega_bar
        m = top.shape[1]
        # Each channel's K components are driven by that channel's Brownian motion.
        bottom = jnp.kron(jnp.eye(m, dtype=z.dtype), jnp.ones((K, 1), z.dtype))
        return jnp.concatenate([top, bottom])


def augment(sde: SDE, noise: FractionalNoise, state_size: int | None = None) -> SDE:
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
    Brownian motions. The calculus and additivity carry over too (the components
    are additive, and $\hat B$ is a semimartingale, so Itô and Stratonovich
    integrals against it are those against $\mathrm{d}Y$).

    **Arguments:**

    - `sde`: an [`sdekit.SDE`][] with a one-dimensional state.
    - `noise`: the [`sdekit.noise.FractionalNoise`][] of every channel.
    - `state_size`: $d$, needed for diagonal noise only (its $m = d$ channels).

    **Returns:** an [`sdekit.SDE`][] on the augmented state.
    """
    if not isinstance(sde, SDE):
        raise TypeError(f"`sde` must be an sdekit.SDE, got {type(sde).__name__}.")
    if not isinstance(noise, FractionalNoise):
        raise TypeError(
            f"`noise` must be an sdekit.noise.FractionalNoise, got "
            f"{type(noise).__name__}."
        )
    omega = noise.omega()
    gammas = tuple(float(g) for g in noise.speeds)
    K = noise.num_components
    if sde.noise == "scalar":
        noise_kwargs: dict[str, Any] = dict(noise="scalar")
    else:
        if sde.noise == "diagonal" and state_size is None:
            raise ValueError(
                "Augmenting an SDE with diagonal noise needs `state_size`, the size d "
                "of its state: each of its d noise channels gets its own components."
            )
        m = num_channels(sde, state_size or 0)
        noise_kwargs = dict(noise="general", noise_dim=m)
    return SDE(
        _AugmentedDrift(sde, omega, gammas),
        _AugmentedDiffusion(sde, omega, K),
        calculus=sde.calculus,
        additive=sde.additive,
        **noise_kwargs,
    )


def augmented_initial_state(
    sde: SDE,
    noise: FractionalNoise,
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
    noise: FractionalNoise, dt0: float, solver: dfx.AbstractSolver | None = None
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
    noise: FractionalNoise,
    key: PRNGKeyArray,
    dt0: float,
    solver: dfx.AbstractSolver | None = None,
    return_components: bool = False,
    **kwargs,
) -> SDESolution:
    r"""Solve a batch of paths of `sde` driven by the fractional noise `noise`.

    Augments the SDE ([`sdekit.noise.augment`][]), draws the components' initial
    state, checks the step size against $\gamma_{\max}$ and calls
    [`sdekit.solve`][], whose keyword arguments (`t0`, `t1`, `adjoint`, `brownian`,
    `args`, ...) pass through.

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
    check_step_size(noise, dt0, solver)
    y0 = jnp.asarray(y0)
    if y0.ndim != 2:
        raise ValueError(
            f"`y0` must have shape (batch, d), got shape {y0.shape}; for one path "
            "use y0[None]."
        )
    init_key, path_key = jr.split(key)
    augmented = augment(sde, noise, state_size=y0.shape[1])
    z0 = augmented_initial_state(sde, noise, y0, init_key)
    sol = solve(augmented, z0, ts, key=path_key, dt0=dt0, solver=solver, **kwargs)
    if return_components:
        return sol
    return eqx.tree_at(lambda s: s.ys, sol, sol.ys[..., : y0.shape[1]])
