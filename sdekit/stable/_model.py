"""The model around the dynamics: initial state from the path, the solve, a head."""

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray

from .._sde import SDE
from .._solve import solve
from ..data import ControlPath
from ._dynamics import AbstractDynamics, MODELS


class _Drift(eqx.Module):
    dynamics: AbstractDynamics

    def __call__(self, t, state, path):
        return self.dynamics.drift(t, state, path)


class _Diffusion(eqx.Module):
    dynamics: AbstractDynamics

    def __call__(self, t, state, path):
        return self.dynamics.diffusion(t, state)


class LatentModel(eqx.Module):
    r"""A latent differential equation model of irregular time series.

    The batch's control path $X$ (see [`sdekit.data.ControlPath`][]) sets the initial
    latent $z_0 = \ell(X(t_0))$ and drives the `dynamics` over $[0, \text{horizon}]$,
    solved by Euler-Maruyama (Itô) with `num_steps` fixed steps, backpropagating
    through the solver. A linear `head` reads the integrated state (the latent, or
    $\log z$ for [`sdekit.stable.GSDE`][]): at the final time for classification and
    regression, at every `save_times` for interpolation and forecasting. With
    `skip`, the head's output is a correction added to the control path's own value
    at each save time: the linear interpolation of the observations (interpolation)
    or the last observation (forecasting), so that the model starts from the naive
    prediction and learns what it misses.

    The whole batch is integrated as one state (the series share their knots), so
    one time loop serves every series, and each series' own observations reach the
    drift through its path coefficients.

    **Arguments:**

    - `model`: one of `"lsde"`, `"lnsde"`, `"gsde"`, `"neural-ode"`, `"neural-sde"`,
        `"neural-cde"`.
    - `input_channels`: channels of the observations.
    - `output_size`: classes, or outputs of the head.
    - `hidden`: latent size, also the width of every network.
    - `depth`: hidden layers of every network.
    - `save_times`: model times at which the head reads the latent (the last one
        equals `horizon` for classification and regression).
    - `horizon`: the length of the latent time interval.
    - `num_steps`: solver steps over the horizon.
    - `bounded`: the official code's tanh-bounded form instead of the paper's.
    - `intensity`: add observation-intensity channels to the control path.
    - `skip`: add the path's observation channels at `save_times` to the head's
        output (needs `output_size == input_channels`).
    - `key`: initialisation key.
    """

    dynamics: AbstractDynamics
    head: eqx.nn.Linear
    save_times: tuple[float, ...] = eqx.field(static=True)
    horizon: float = eqx.field(static=True)
    num_steps: int = eqx.field(static=True)
    intensity: bool = eqx.field(static=True)
    skip: bool = eqx.field(static=True)

    def __init__(
        self,
        model: str,
        input_channels: int,
        output_size: int,
        hidden: int,
        depth: int,
        save_times,
        horizon: float,
        num_steps: int,
        bounded: bool = False,
        intensity: bool = False,
        skip: bool = False,
        *,
        key: PRNGKeyArray,
    ):
        if model not in MODELS:
            raise ValueError(
                f"Unknown model {model!r}; choose one of {', '.join(MODELS)}."
            )
        if skip and output_size != input_channels:
            raise ValueError(
                "`skip` adds the observations to the outputs, so it needs "
                f"output_size == input_channels; got {output_size} and {input_channels}."
            )
        k1, k2 = jr.split(key)
        path_channels = 1 + input_channels * (2 if intensity else 1)
        self.dynamics = MODELS[model](
            path_channels, hidden, hidden, depth, bounded, key=k1
        )
        self.head = eqx.nn.Linear(hidden, output_size, key=k2)
        self.save_times = tuple(float(t) for t in save_times)
        self.horizon = float(horizon)
        self.num_steps = int(num_steps)
        self.intensity = bool(intensity)
        self.skip = bool(skip)

    def _times(self, save_times) -> np.ndarray:
        if save_times is None:
            return np.asarray(self.save_times)
        times = np.asarray(save_times, dtype=float).reshape(-1)
        if times.size == 0 or times.min() < 0 or times.max() > self.horizon:
            raise ValueError(f"Save times must lie in [0, {self.horizon}].")
        return times

    def states(
        self, knots, values, key: PRNGKeyArray, save_times=None
    ) -> Float[Array, "batch times hidden"]:
        """The integrated state for a batch of series (the latent itself, or its
        logarithm for [`sdekit.stable.GSDE`][]).

        **Arguments:**

        - `knots`: `(batch, length)` observation times in model time (the rows are
            equal: the batch shares its times).
        - `values`: `(batch, length, channels)` observations, NaN where missing.
        - `key`: the Brownian motions' key.
        - `save_times`: model times in $[0, \\text{horizon}]$ at which to return the
            state, e.g. a fine grid to plot latent paths (default: the model's own
            `save_times`).
        """
        path = ControlPath(knots[0], values, self.intensity)
        state0 = self.dynamics.initial(path.evaluate(knots[0, 0]))
        sde = SDE(
            _Drift(self.dynamics),
            _Diffusion(self.dynamics),
            additive=self.dynamics.additive,
        )
        # One "path" whose state is the whole batch: the drift sees every series'
        # control path through `args`.
        solution = solve(
            sde,
            state0[None],
            self._times(save_times),
            key=key,
            dt0=self.horizon / self.num_steps,
            t0=0.0,
            t1=self.horizon,
            args=path,
        )
        return jnp.moveaxis(solution.ys[0], 0, 1)

    def latents(
        self, knots, values, key: PRNGKeyArray, save_times=None
    ) -> Float[Array, "batch times hidden"]:
        """The latent $z$ (arguments as [`sdekit.stable.LatentModel.states`][])."""
        return self.dynamics.latent(self.states(knots, values, key, save_times))

    def __call__(
        self, knots, values, key: PRNGKeyArray, save_times=None
    ) -> Float[Array, "batch times out"]:
        """The head's outputs, `(batch, times, output_size)` (arguments as
        [`sdekit.stable.LatentModel.states`][])."""
        states = self.states(knots, values, key, save_times)
        outputs = jax.vmap(jax.vmap(self.head))(states)
        if self.skip:
            outputs = outputs + self.baseline(knots, values, save_times)
        return outputs

    def baseline(
        self, knots, values, save_times=None
    ) -> Float[Array, "batch times channels"]:
        """The control path's observation channels: the naive prediction that `skip`
        adds the head's correction to (arguments as
        [`sdekit.stable.LatentModel.states`][])."""
        path = ControlPath(knots[0], values, self.intensity)
        times = self._times(save_times)
        at_times = jax.vmap(path.evaluate)(jnp.asarray(times, values.dtype))
        # Path channels: time, the observations, [intensities].
        return jnp.moveaxis(at_times, 0, 1)[..., 1 : 1 + values.shape[-1]]
