"""The latent dynamics of the sequential VAE: the underdamped Langevin flow (diffrax's
ALIGN or ShOULD on sdekit's grid Brownian path), the same flow pushed by a force
inferred per bin (with its Girsanov KL), the official code's discrete map, and the
deterministic GRU generator of the baseline."""

import abc
import math

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray

from .._brownian import GridBrownianPath
from ._potential import CoupledOscillatorPotential


SOLVERS = ("align", "should")


class AbstractLatentDynamics(eqx.Module):
    """How the latent state evolves over a trial's bins, from an initial state drawn
    from the posterior.

    A dynamics maps `initial` states, `(batch, initial_size)`, to the per-bin
    `features` that the decoder reads, `(batch, num_bins, feature_size)`, and the
    pathwise KL that the evolution itself adds to the ELBO, `(batch,)` (zero unless
    the posterior can push the latent away from its prior dynamics). A dynamics with
    `force_size > 0` also takes a per-bin force inferred by the encoder.
    """

    @property
    @abc.abstractmethod
    def initial_size(self) -> int:
        """The size of the initial state that the posterior describes."""

    @property
    @abc.abstractmethod
    def feature_size(self) -> int:
        """The size of the per-bin state that the decoder reads."""

    @property
    @abc.abstractmethod
    def force_size(self) -> int:
        """The size of the per-bin force the encoder infers (0: none)."""

    @abc.abstractmethod
    def __call__(
        self,
        initial: Float[Array, "batch initial"],
        force: Float[Array, "batch bins force"] | None,
        num_bins: int,
        key: PRNGKeyArray,
    ) -> tuple[Float[Array, "batch bins features"], Float[Array, " batch"]]:
        """**Returns:** `(features, path_kl)`."""


def _positive(init: float, size: int) -> Array:
    return jnp.full((size,), math.log(init), jnp.float32)


class LangevinDynamics(AbstractLatentDynamics):
    r"""Underdamped Langevin dynamics of position $z$ and velocity $v$ in the
    potential $U$ of [`sdekit.langevin.CoupledOscillatorPotential`][]:

    $$\mathrm{d}z = v\,\mathrm{d}t, \qquad
    \mathrm{d}v = \big(-\nabla U(z) - \gamma v\big)\,\mathrm{d}t
    + \sqrt{2 \gamma T}\,\mathrm{d}W,$$

    with learnt friction $\gamma > 0$ and temperature $T > 0$ per latent component.
    Bin $k$ of a trial is model time $k\,\Delta$ (`bin_time`). The SDE is integrated
    by diffrax's `ALIGN` (strong order 2, one gradient of $U$ per step, needs the
    space-time Lévy area) or `ShOULD` (order 3 in the smooth regime, two gradients,
    needs the space-time-time Lévy area) on `steps_per_bin` fixed steps per bin over
    a [`sdekit.GridBrownianPath`][] carrying those Lévy areas, the batch of trials as
    one state, by the solver's own `step` in a `jax.lax.scan`, and differentiated by
    backpropagation through the scan (every step kept). diffrax's form
    $\mathrm{d}v = -\gamma v\,\mathrm{d}t - u \nabla f\,\mathrm{d}t +
    \sqrt{2\gamma u}\,\mathrm{d}W$ is met with $u = T$ and $\nabla f = \nabla U / T$.

    The features are $(z, v)$ at each bin; the path adds no KL (the posterior acts
    only on the initial state).

    **Arguments:**

    - `potential`: the potential $U$; its size is the latent dimension $d$.
    - `bin_time`: model time per bin $\Delta$.
    - `steps_per_bin`: solver steps per bin.
    - `solver`: `"align"` (default) or `"should"`.
    - `friction`, `temperature`: initial $\gamma$ and $T$.
    """

    potential: CoupledOscillatorPotential
    log_friction: Float[Array, " size"]
    log_temperature: Float[Array, " size"]
    bin_time: float = eqx.field(static=True)
    steps_per_bin: int = eqx.field(static=True)
    solver: str = eqx.field(static=True)

    def __init__(
        self,
        potential: CoupledOscillatorPotential,
        *,
        bin_time: float = 0.1,
        steps_per_bin: int = 1,
        solver: str = "align",
        friction: float = 1.0,
        temperature: float = 1.0,
    ):
        if solver not in SOLVERS:
            raise ValueError(f"`solver` must be one of {SOLVERS}, got {solver!r}.")
        _check_steps(bin_time, steps_per_bin)
        self.potential = potential
        self.log_friction = _positive(friction, potential.size)
        self.log_temperature = _positive(temperature, potential.size)
        self.bin_time = float(bin_time)
        self.steps_per_bin = int(steps_per_bin)
        self.solver = solver

    @property
    def initial_size(self) -> int:
        return 2 * self.potential.size

    @property
    def feature_size(self) -> int:
        return 2 * self.potential.size

    @property
    def force_size(self) -> int:
        return 0

    @property
    def friction(self) -> Float[Array, " size"]:
        return jnp.exp(self.log_friction)

    @property
    def temperature(self) -> Float[Array, " size"]:
        return jnp.exp(self.log_temperature)

    def __call__(self, initial, force, num_bins, key):
        del force
        features = _integrate(self, initial, None, num_bins, key)
        return features, jnp.zeros((initial.shape[0],), features.dtype)


def _check_steps(bin_time, steps_per_bin):
    if not bin_time > 0:
        raise ValueError(f"`bin_time` must be > 0, got {bin_time!r}.")
    if not isinstance(steps_per_bin, int) or steps_per_bin < 1:
        raise ValueError(
            f"`steps_per_bin` must be a positive integer, got {steps_per_bin!r}."
        )


def _uniform_grid(num_bins: int, bin_time: float, steps_per_bin: int) -> np.ndarray:
    # A host constant: bins at k * bin_time, with steps_per_bin equal steps in each.
    steps = max(1, (num_bins - 1) * steps_per_bin)
    end = bin_time * max(1, num_bins - 1)
    return np.linspace(0.0, end, steps + 1).astype(np.float32)


class ForcedLangevinDynamics(AbstractLatentDynamics):
    r"""The Langevin dynamics of [`sdekit.langevin.LangevinDynamics`][] pushed by a
    force $w(t)$ that the encoder infers from the spikes, constant over each bin:

    $$\mathrm{d}z = v\,\mathrm{d}t, \qquad
    \mathrm{d}v = \big(-\nabla U(z) - \gamma v + w(t)\big)\,\mathrm{d}t
    + \sqrt{2 \gamma T}\,\mathrm{d}W.$$

    This is the posterior SDE of a continuous-time ELBO whose prior is the unforced
    Langevin SDE. Both share their diffusion, so by Girsanov's theorem the KL between
    the path measures is $\mathbb{E} \int \tfrac12 \lVert w / \sqrt{2 \gamma T}
    \rVert^2 \mathrm{d}t$ (the noise acts on $v$ only). The force depends on the
    spikes, not on the latent path, so the expectation is the integrand itself, and
    for a force constant over bins the integral is the sum
    $\sum_k \tfrac{\Delta}{2} \sum_i w_{k,i}^2 / (2 \gamma_i T_i)$: exactly what
    [`sdekit.with_pathwise_kl`][] accumulates along a solve (a test checks the two
    agree), without a KL channel in the solver's state.

    Within a bin the force is a constant, so the SDE is again of diffrax's
    underdamped Langevin form, with $\nabla f = (\nabla U - w_k) / T$: it runs on
    the same `ALIGN` or `ShOULD` as the unforced flow, one `lax.scan` over the steps
    of a [`sdekit.GridBrownianPath`][], the bin's force passed to the solver as its
    `args`. These solvers reuse the last gradient evaluation of a step as the first of
    the next (first same as last); at each bin's first step the solver is told of the
    jump (`made_jump=True`), so that it evaluates the gradient with the new force.

    **Arguments:** as [`sdekit.langevin.LangevinDynamics`][].
    """

    potential: CoupledOscillatorPotential
    log_friction: Float[Array, " size"]
    log_temperature: Float[Array, " size"]
    bin_time: float = eqx.field(static=True)
    steps_per_bin: int = eqx.field(static=True)
    solver: str = eqx.field(static=True)

    def __init__(
        self,
        potential: CoupledOscillatorPotential,
        *,
        bin_time: float = 0.1,
        steps_per_bin: int = 1,
        solver: str = "align",
        friction: float = 1.0,
        temperature: float = 1.0,
    ):
        if solver not in SOLVERS:
            raise ValueError(f"`solver` must be one of {SOLVERS}, got {solver!r}.")
        _check_steps(bin_time, steps_per_bin)
        self.potential = potential
        self.log_friction = _positive(friction, potential.size)
        self.log_temperature = _positive(temperature, potential.size)
        self.bin_time = float(bin_time)
        self.steps_per_bin = int(steps_per_bin)
        self.solver = solver

    @property
    def initial_size(self) -> int:
        return 2 * self.potential.size

    @property
    def feature_size(self) -> int:
        return 2 * self.potential.size

    @property
    def force_size(self) -> int:
        return self.potential.size

    def path_kl(self, force: Float[Array, "batch bins size"]) -> Float[Array, " batch"]:
        """The Girsanov KL of the path pushed by `force` against the unforced prior,
        over bins `0, ..., bins - 1` (the last bin's force acts after the window)."""
        variance = 2 * jnp.exp(self.log_friction + self.log_temperature)
        used = force[:, :-1]
        return 0.5 * self.bin_time * jnp.sum(used**2 / variance[None, None], (1, 2))

    def __call__(self, initial, force, num_bins, key):
        assert force is not None
        return _integrate(self, initial, force, num_bins, key), self.path_kl(force)


def _integrate(
    dynamics: "LangevinDynamics | ForcedLangevinDynamics",
    initial: Float[Array, "batch initial"],
    force: Float[Array, "batch bins size"] | None,
    num_bins: int,
    key: PRNGKeyArray,
) -> Float[Array, "batch bins features"]:
    """(z, v) at every bin: diffrax's ALIGN or ShOULD, `steps_per_bin` steps per bin
    over a grid Brownian path with the solver's Lévy area, the batch of trials as one
    state, the solver's own `step` in a `lax.scan` (every step kept for the backward
    pass; faster than the same steps through `diffeqsolve`, docs/benchmarks.md,
    "Latent Langevin flows"). With a `force`, bin k's force is the solver's `args`
    over the bin's steps, and the solver is told of a jump at the bin's first step:
    these solvers reuse a step's last gradient as the next step's first (FSAL), which
    would otherwise hold the previous bin's force."""
    batch, d = initial.shape[0], dynamics.potential.size
    dtype = initial.dtype
    grid = _uniform_grid(num_bins, dynamics.bin_time, dynamics.steps_per_bin)
    if dynamics.solver == "align":
        solver, levy_area = dfx.ALIGN(), dfx.SpaceTimeLevyArea
    else:
        solver, levy_area = dfx.ShOULD(), dfx.SpaceTimeTimeLevyArea
    path = GridBrownianPath(
        jnp.asarray(grid), (d,), jr.split(key, batch), dtype=dtype,
        levy_area=levy_area,
    )  # fmt: skip
    gamma = jnp.broadcast_to(jnp.exp(dynamics.log_friction), (batch, d))
    temperature = jnp.broadcast_to(jnp.exp(dynamics.log_temperature), (batch, d))
    terms = dfx.MultiTerm(
        dfx.UnderdampedLangevinDriftTerm(
            gamma, temperature, _ScaledGradient(dynamics.potential, temperature)
        ),
        dfx.UnderdampedLangevinDiffusionTerm(gamma, temperature, path),
    )
    # Step s runs over [grid[s], grid[s + 1]], in bin s // steps_per_bin; a trial of
    # one bin still takes one step (its only state is the initial one).
    steps = len(grid) - 1
    index = np.arange(steps)
    if force is None:
        # No force: the solver's `args` are None (an empty leaf of the scan's inputs).
        forces, first, jumps = None, None, jnp.zeros((steps,), bool)
    else:
        step_bin = np.minimum(index // dynamics.steps_per_bin, num_bins - 1)
        forces = jnp.moveaxis(force, 1, 0)[step_bin]
        first = forces[0]
        jumps = jnp.asarray(index % dynamics.steps_per_bin == 0)
    ts = jnp.asarray(grid, dtype)
    y0 = (initial[:, :d], initial[:, d:])
    state0 = solver.init(terms, ts[0], ts[1], y0, first)

    def step(carry, inputs):
        y, state = carry
        t0, t1, w, jump = inputs
        y, _, _, state, _ = solver.step(terms, t0, t1, y, w, state, jump)
        return (y, state), jnp.concatenate(y, axis=-1)

    _, ys = jax.lax.scan(step, (y0, state0), (ts[:-1], ts[1:], forces, jumps))
    # The state at the end of each bin's last step is the next bin's.
    at_bins = ys[dynamics.steps_per_bin - 1 :: dynamics.steps_per_bin][: num_bins - 1]
    features = jnp.concatenate([initial[None], at_bins], axis=0)
    return jnp.moveaxis(features, 0, 1)


class _ScaledGradient(eqx.Module):
    # diffrax multiplies grad_f by u = T: hand it (grad U - w) / T so that the force
    # is exactly -grad U + w whatever the temperature (w, the bin's force, comes as
    # the solver's `args`; None without one).
    potential: CoupledOscillatorPotential
    temperature: Float[Array, "batch size"]

    def __call__(self, z, force):
        gradient = jax.vmap(self.potential.gradient)(z)
        if force is not None:
            gradient = gradient - force
        return gradient / self.temperature


class DiscreteLangevinMap(AbstractLatentDynamics):
    r"""The official LangevinFlow code's update from one bin to the next:

    $$z_{k+1} = z_k + \epsilon v_k, \quad \tilde v = v_k - \epsilon \nabla U(z_k),
    \quad v_{k+1} = (1 - g)\,\tilde v + \sqrt{2 g}\,\xi_k, \quad \xi_k \sim
    \mathcal{N}(0, I),$$

    with $\epsilon = 0.01$ and $g = 0.55$ fixed. It is not Euler-Maruyama of the
    Langevin SDE (friction and noise are not scaled by the step: friction
    $g / \epsilon = 55$ and velocity noise of variance $2g$ each bin), so $v$ is
    close to white noise and $z$ moves by about $\epsilon$ per bin. Offered to
    reproduce that code (`--dynamics discrete`).

    **Arguments:**

    - `potential`: the potential $U$.
    - `step`: $\epsilon$.
    - `damping`: $g \in (0, 1]$.
    """

    potential: CoupledOscillatorPotential
    step: float = eqx.field(static=True)
    damping: float = eqx.field(static=True)

    def __init__(
        self,
        potential: CoupledOscillatorPotential,
        *,
        step: float = 0.01,
        damping: float = 0.55,
    ):
        if not 0 < damping <= 1:
            raise ValueError(f"`damping` must be in (0, 1], got {damping!r}.")
        if not step > 0:
            raise ValueError(f"`step` must be > 0, got {step!r}.")
        self.potential = potential
        self.step = float(step)
        self.damping = float(damping)

    @property
    def initial_size(self) -> int:
        return 2 * self.potential.size

    @property
    def feature_size(self) -> int:
        return 2 * self.potential.size

    @property
    def force_size(self) -> int:
        return 0

    def __call__(self, initial, force, num_bins, key):
        del force
        d = self.potential.size
        g = self.damping
        gradient = jax.vmap(self.potential.gradient)

        def update(state, noise):
            z, v = state
            z_next = z + self.step * v
            v_tilde = v - self.step * gradient(z)
            v_next = (1 - g) * v_tilde + math.sqrt(2 * g) * noise
            return (z_next, v_next), jnp.concatenate([z_next, v_next], axis=-1)

        noise = jr.normal(key, (num_bins - 1, initial.shape[0], d), initial.dtype)
        _, rest = jax.lax.scan(update, (initial[:, :d], initial[:, d:]), noise)
        features = jnp.concatenate([initial[None], rest], axis=0)
        return jnp.moveaxis(features, 0, 1), jnp.zeros((initial.shape[0],))


class GRUDynamics(AbstractLatentDynamics):
    r"""A deterministic generator, as LFADS's without inputs: $g_{k+1} =
    \mathrm{GRU}(0, g_k)$ from the posterior's initial state $g_0$. The baseline
    that measures what the Langevin latent adds (same encoder, decoder and ELBO).

    **Arguments:**

    - `size`: the generator's state size (the features are the state).
    - `key`: initialisation key.
    """

    cell: eqx.nn.GRUCell
    size: int = eqx.field(static=True)

    def __init__(self, size: int, *, key: PRNGKeyArray):
        self.cell = eqx.nn.GRUCell(1, size, key=key)
        self.size = size

    @property
    def initial_size(self) -> int:
        return self.size

    @property
    def feature_size(self) -> int:
        return self.size

    @property
    def force_size(self) -> int:
        return 0

    def __call__(self, initial, force, num_bins, key):
        del force, key
        cell = jax.vmap(self.cell)
        zero = jnp.zeros((initial.shape[0], 1), initial.dtype)

        def update(g, _):
            g = cell(zero, g)
            return g, g

        _, rest = jax.lax.scan(update, initial, None, length=num_bins - 1)
        features = jnp.concatenate([initial[None], rest], axis=0)
        return jnp.moveaxis(features, 0, 1), jnp.zeros((initial.shape[0],))
