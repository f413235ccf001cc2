"""solve(): a batch of SDE paths over diffrax, one key and one set of save times each."""

from collections.abc import Sequence
from typing import Any, Literal, TYPE_CHECKING

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import jax.tree_util as jtu
import numpy as np
from jaxtyping import Array, ArrayLike, Bool, Float, PRNGKeyArray, PyTree

from ._adjoint import reversible_heun_solve, ReversibleAdjoint
from ._brownian import GridBrownianPath, levy_area_for
from ._custom_types import Calculus
from ._grid import num_uniform_steps, step_grid
from ._sde import AbstractSDE, SDE
from ._underdamped_langevin import UnderdampedLangevinSDE


if TYPE_CHECKING:
    from .noise import FractionalNoise


# Solvers that differentiate the diffusion (Milstein's correction term).
_NEEDS_JACOBIAN = (dfx.ItoMilstein, dfx.StratonovichMilstein)


class SDESolution(eqx.Module):
    """The output of [`sdekit.solve`][].

    **Attributes:**

    - `ts`: save times, shape `(batch, n)`; padded entries repeat a path's last time.
    - `ys`: the paths at `ts`, shape `(batch, n, *state)` (for a tuple state such as
        the underdamped Langevin `(x, v)`, a tuple of such arrays).
    - `mask`: `(batch, n)` booleans, `False` on padding (paths with fewer times).
    - `stats`: diffrax's solver statistics per path (`num_steps`,
        `num_accepted_steps`, `num_rejected_steps`, `max_steps`), each `(batch,)`.
    - `result`: diffrax's `RESULTS` per path.
    """

    ts: Float[Array, "batch n"]
    ys: PyTree[Float[Array, "batch n ?*state"]]
    mask: Bool[Array, "batch n"]
    stats: dict[str, Array]
    result: dfx.RESULTS


def solver_calculus(solver: dfx.AbstractSolver) -> Calculus:
    """The calculus a diffrax solver's SDE solutions converge in, from diffrax's own
    classification (`AbstractItoSolver`, `AbstractStratonovichSolver`); a solver that
    is neither (an ODE solver such as `Tsit5`) raises a `ValueError`."""
    if isinstance(solver, dfx.AbstractItoSolver):
        return "ito"
    if isinstance(solver, dfx.AbstractStratonovichSolver):
        return "stratonovich"
    raise ValueError(
        f"{type(solver).__name__} is not an SDE solver (diffrax classes it as neither "
        "Itô nor Stratonovich), so its SDE solutions are undefined. Pick an SDE "
        "solver: Euler, Heun, EulerHeun, Midpoint, ReversibleHeun, ItoMilstein, "
        "StratonovichMilstein, SEA, SRA1, ShARK, GeneralShARK, SPaRK, SlowRK, or "
        "ALIGN, ShOULD, QUICSORT for an UnderdampedLangevinSDE."
    )


def _is_concrete(x) -> bool:
    return not isinstance(x, jax.core.Tracer)


def _as_batched_times(
    ts, batch: int
) -> tuple[Float[Array, "batch n"], Bool[Array, "batch n"]]:
    """Broadcast shared times, or pad ragged ones by repeating each path's last time."""
    if (
        isinstance(ts, Sequence)
        and not isinstance(ts, (str, bytes))
        and (len(ts) > 0 and jnp.ndim(ts[0]) == 1)
    ):
        if len(ts) != batch:
            raise ValueError(
                f"Got {len(ts)} arrays of save times for a batch of {batch} paths; "
                "pass one array per path."
            )
        lengths = [len(t) for t in ts]
        if min(lengths) < 1:
            raise ValueError("Every path needs at least one save time.")
        n = max(lengths)
        xp = jnp if any(isinstance(t, jax.core.Tracer) for t in ts) else np
        padded = xp.stack(
            [
                xp.concatenate(
                    [xp.asarray(t), xp.repeat(xp.asarray(t)[-1:], n - len(t))]
                )
                for t in ts
            ]
        )
        mask = np.arange(n)[None, :] < np.asarray(lengths)[:, None]
        return padded, mask
    # Keep concrete inputs as NumPy so that they can be checked eagerly even under jit.
    ts = ts if isinstance(ts, jax.Array) else np.asarray(ts)
    if ts.ndim == 1:
        ts = ts[None].repeat(batch, axis=0)
    elif ts.ndim != 2 or ts.shape[0] != batch:
        raise ValueError(
            "`ts` must be shared save times of shape (n,), per-path times of shape "
            f"(batch, n) = ({batch}, n), or a list of 1-D arrays; got shape {ts.shape}."
        )
    if ts.shape[1] < 1:
        raise ValueError("`ts` must hold at least one save time.")
    return ts, np.ones(ts.shape, dtype=bool)


def _check_times(ts, mask, t0, t1) -> None:
    """Eager checks on concrete save times: finite, strictly increasing, in [t0, t1]."""
    ts_np, mask_np = np.asarray(ts), np.asarray(mask)
    if not np.all(np.isfinite(ts_np[mask_np])):
        raise ValueError(
            "`ts` contains NaN or infinite times; every save time must be finite."
        )
    steps = np.diff(ts_np, axis=1)
    valid = mask_np[:, 1:]
    if np.any(steps[valid] <= 0):
        bad = int(np.argwhere((steps <= 0) & valid)[0, 0])
        raise ValueError(
            f"Save times of path {bad} are not strictly increasing; sort them and "
            "drop duplicates."
        )
    if t0 is not None and np.any(ts_np[mask_np] < t0):
        raise ValueError(
            f"Save times before t0={t0}; every save time must lie in [t0, t1]."
        )
    if t1 is not None and np.any(ts_np[mask_np] > t1):
        raise ValueError(
            f"Save times after t1={t1}; every save time must lie in [t0, t1]."
        )


def _per_path_keys(key, batch: int):
    """One typed key per path, from one key or from `batch` keys (typed or raw)."""
    key = jnp.asarray(key) if not isinstance(key, jax.Array) else key
    if not jnp.issubdtype(key.dtype, jax.dtypes.prng_key) and key.shape[-1:] == (2,):
        key = jr.wrap_key_data(key)
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        if key.ndim == 0:
            return jr.split(key, batch)
        if key.shape == (batch,):
            return key
    raise ValueError(
        f"`key` must be one PRNG key or one per path ({batch}); got shape {key.shape}."
    )


def solve(
    sde: SDE,
    y0: Float[ArrayLike, "batch *state"],
    ts: Float[ArrayLike, "n"] | Float[ArrayLike, "batch n"] | Sequence[ArrayLike],
    *,
    key: PRNGKeyArray,
    dt0: float,
    t0: float | None = None,
    t1: float | None = None,
    solver: dfx.AbstractSolver | None = None,
    adjoint: dfx.AbstractAdjoint | ReversibleAdjoint | None = None,
    brownian: Literal["grid", "virtual"] = "grid",
    stepsize_controller: dfx.AbstractStepSizeController | None = None,
    args: PyTree = None,
    max_steps: int | None = None,
    noise: "FractionalNoise | None" = None,
) -> SDESolution:
    r"""Solve a batch of SDE paths, each with its own Brownian motion and save times.

    By default every path is integrated with fixed steps of size at most `dt0` on a
    grid that also contains its save times, over a [`sdekit.GridBrownianPath`][]
    sampled up front, and differentiated by backpropagating through diffrax (all
    steps kept, no recomputation). This is the fast path: about as fast as a
    hand-written `jax.lax.scan` (see the benchmarks page). The loop over paths is a
    `vmap` inside, so `solve` itself can be `jit`-ed, `vmap`-ed and differentiated.

    **Arguments:**

    - `sde`: the [`sdekit.SDE`][] (or [`sdekit.UnderdampedLangevinSDE`][]).
    - `y0`: initial states, shape `(batch, *state)`; for an underdamped Langevin
        SDE the pair `(x0, v0)`, each `(batch, *x_shape)`.
    - `ts`: save times: shared `(n,)`, per path `(batch, n)`, or a list of `batch`
        1-D arrays of different lengths (padded; see `SDESolution.mask`). Each path's
        times must be strictly increasing and lie in `[t0, t1]`.
    - `key`: one PRNG key (split per path) or `batch` keys.
    - `dt0`: the step size (the largest step on the grid), `> 0`.
    - `t0`, `t1`: the interval; default the first and last save time (over all paths).
        Must be Python numbers under `jit` if `ts` is traced.
    - `solver`: a diffrax SDE solver; default `Euler()` (Euler-Maruyama) for an Itô
        SDE, `Heun()` for a Stratonovich one, `ALIGN()` for an underdamped Langevin
        SDE. A solver of the other calculus is fine: the drift is converted (see
        [`sdekit.SDE.drift_in`][]). Solvers that need Lévy areas (`SEA`, `SRA1`,
        `ShARK`, `GeneralShARK`, `SPaRK`, `SlowRK`, `ALIGN`, `ShOULD`, `QUICSORT`) get
        them from the Brownian path, which generates the solver's
        `minimal_levy_area`. An ODE solver (`Tsit5`, ...) is refused.
    - `adjoint`: default `diffrax.RecursiveCheckpointAdjoint` keeping every step;
        [`sdekit.ReversibleAdjoint`][] for $O(1)$ memory in the number of steps.
    - `brownian`: `"grid"` (default) or `"virtual"` (diffrax's
        `VirtualBrownianTree` with tolerance `dt0 / 2`, for adaptive steps).
    - `stepsize_controller`: only with `brownian="virtual"`; default constant steps.
    - `args`: passed to drift and diffusion.
    - `max_steps`: only with `brownian="virtual"` (default 16 * the uniform count).
    - `noise`: what drives the SDE: `None` (default) for Brownian motion, or a
        [`sdekit.noise.FractionalNoise`][] to drive every noise channel with
        Markov-approximate fractional Brownian motion instead (the same as
        [`sdekit.noise.solve_fractional`][]; `y0` then has shape `(batch, d)`).

    **Returns:** an [`sdekit.SDESolution`][].
    """
    if noise is not None:
        # Swapping the noise: the fractional path augments the SDE with the noise's
        # Ornstein-Uhlenbeck components and comes back here with noise=None.
        from .noise import FractionalNoise, solve_fractional

        if not isinstance(noise, FractionalNoise):
            raise TypeError(
                "`noise` must be None (Brownian motion) or a "
                f"sdekit.noise.FractionalNoise, got {type(noise).__name__}."
            )
        return solve_fractional(
            sde,
            y0,
            ts,
            noise=noise,
            key=key,
            dt0=dt0,
            t0=t0,
            t1=t1,
            solver=solver,
            adjoint=adjoint,
            brownian=brownian,
            stepsize_controller=stepsize_controller,
            args=args,
            max_steps=max_steps,
        )
    if not isinstance(sde, AbstractSDE):
        raise TypeError(
            "`sde` must be an sdekit.SDE or sdekit.UnderdampedLangevinSDE, got "
            f"{type(sde).__name__}."
        )
    if not isinstance(dt0, (int, float)) or not dt0 > 0:
        raise ValueError(f"`dt0` must be a positive number, got {dt0!r}.")
    if brownian not in ("grid", "virtual"):
        raise ValueError(f"`brownian` must be 'grid' or 'virtual', got {brownian!r}.")
    y0 = jtu.tree_map(_as_float_array, y0)
    leaves = jtu.tree_leaves(y0)
    if not leaves or any(leaf.ndim < 2 for leaf in leaves):
        shapes = [leaf.shape for leaf in leaves]
        raise ValueError(
            f"`y0` must be batched, shape (batch, *state), got shape(s) {shapes}; for "
            "one path use y0[None]."
        )
    batch = leaves[0].shape[0]
    if any(leaf.shape[0] != batch for leaf in leaves):
        raise ValueError(
            "Every array of `y0` needs the same leading batch size, got "
            f"{[leaf.shape[0] for leaf in leaves]}."
        )
    dtype = leaves[0].dtype
    shared_times = not isinstance(ts, Sequence) and jnp.ndim(ts) == 1
    ts, mask = _as_batched_times(ts, batch)
    if _is_concrete(ts):
        _check_times(ts, mask, t0, t1)
        ts_np = np.asarray(ts)
        t0 = float(ts_np[:, 0].min()) if t0 is None else t0
        t1 = float(ts_np.max()) if t1 is None else t1
    elif t0 is None or t1 is None:
        raise ValueError(
            "Pass `t0` and `t1` as numbers when `ts` is traced (under jit)."
        )
    else:
        ts = eqx.error_if(ts, ~jnp.isfinite(ts), "`ts` contains NaN or infinite times.")
        ts = eqx.error_if(
            ts,
            (jnp.diff(ts, axis=1) <= 0) & mask[:, 1:],
            "Save times must be strictly increasing for every path.",
        )
    if not float(t1) > float(t0):
        raise ValueError(f"Need t0 < t1, got t0={t0}, t1={t1}.")
    y0 = jtu.tree_map(_check_finite, y0)
    sde.check_shapes(t0, jtu.tree_map(lambda leaf: leaf[0], y0), args)
    # Concrete times stay available on the host for building grids as constants.
    time_dtype = jax.dtypes.canonicalize_dtype(np.result_type(ts.dtype, dtype))
    ts_host = np.asarray(ts, time_dtype) if _is_concrete(ts) else None
    # Times in the state's precision (no float64 request when x64 is off).
    ts = jnp.asarray(ts, time_dtype)
    mask = jnp.asarray(mask)

    reversible = isinstance(adjoint, ReversibleAdjoint)
    if solver is None and reversible:
        solver = dfx.ReversibleHeun()
    elif solver is None:
        solver = sde.default_solver()
    if not isinstance(solver, dfx.AbstractSolver):
        raise TypeError(f"`solver` must be a diffrax solver, got {type(solver).__name__}.")
    solver_calculus(solver)  # an SDE solver, or a clear error
    if reversible:
        if not isinstance(solver, dfx.ReversibleHeun):
            raise ValueError(
                "`ReversibleAdjoint` runs the reversible Heun method; pass "
                "`solver=diffrax.ReversibleHeun()` or leave `solver` unset."
            )
        if brownian != "grid" or stepsize_controller is not None:
            raise ValueError(
                "`ReversibleAdjoint` needs fixed steps on the grid Brownian path."
            )
        if not isinstance(sde, SDE):
            raise ValueError(
                "`ReversibleAdjoint` needs an sdekit.SDE (an array state); use the "
                "default adjoint for other problems."
            )
    if isinstance(solver, dfx.AbstractFosterLangevinSRK) and not isinstance(
        sde, UnderdampedLangevinSDE
    ):
        raise ValueError(
            f"{type(solver).__name__} integrates the underdamped Langevin diffusion "
            "only: pass an sdekit.UnderdampedLangevinSDE, or pick another solver."
        )
    if (
        isinstance(solver, dfx.AbstractSRK)
        and solver.tableau.is_additive_noise()
        and not sde.additive
    ):
        raise ValueError(
            f"{type(solver).__name__} is only correct for additive noise; declare "
            "`SDE(..., additive=True)` if the diffusion does not depend on y, or pick "
            "another solver."
        )
    if brownian == "grid" and stepsize_controller is not None:
        raise ValueError(
            "The grid Brownian path needs fixed steps on its grid; for adaptive steps "
            "use `brownian='virtual'`."
        )
    num_steps = num_uniform_steps(float(t0), float(t1), float(dt0))
    keys = _per_path_keys(key, batch)
    # Milstein needs the diffusion's Jacobian: over a batch held as one state that is
    # a (batch * d)^2 matrix, so those solvers always go path by path.
    one_state = (
        brownian == "grid" and shared_times and not isinstance(solver, _NEEDS_JACOBIAN)
    )
    grid = None
    if one_state:
        # Built on the host when the times are concrete: a constant, no run-time merge.
        grid = step_grid(
            t0, t1, num_steps, ts_host[0] if ts_host is not None else ts[0]
        )
    options = _Options(
        solver=solver,
        adjoint=adjoint,
        brownian=brownian,
        stepsize_controller=stepsize_controller,
        t0=float(t0),
        t1=float(t1),
        dt0=float(dt0),
        num_steps=num_steps,
        max_steps=max_steps,
    )
    return _solve(sde, y0, ts, mask, keys, grid, args, options)


def _as_float_array(x) -> Array:
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        x = x.astype(jnp.result_type(float))
    return x


def _check_finite(y: Array) -> Array:
    if _is_concrete(y):
        if not np.all(np.isfinite(np.asarray(y))):
            raise ValueError("`y0` contains NaN or infinite values.")
        return y
    return eqx.error_if(y, ~jnp.isfinite(y), "`y0` contains NaN or infinite values.")


class _Options(eqx.Module):
    """Everything `_solve` compiles against (static under `filter_jit`)."""

    solver: dfx.AbstractSolver
    adjoint: Any
    brownian: str
    stepsize_controller: Any
    t0: float
    t1: float
    dt0: float
    num_steps: int
    max_steps: int | None


def _state_shape(y0) -> Any:
    # One path's state shape: a tuple of ints, or one per array of a tuple state.
    return jtu.tree_map(lambda leaf: leaf.shape, y0)


def _dtype(y0):
    return jtu.tree_leaves(y0)[0].dtype


@eqx.filter_jit
def _solve(sde, y0, ts, mask, keys, grid, args, options: _Options) -> SDESolution:
    # One compiled program even when `solve` is called eagerly: op-by-op dispatch of
    # the set-up would otherwise compile dozens of small programs on the first call.
    batch = jtu.tree_leaves(y0)[0].shape[0]
    calculus = solver_calculus(options.solver)
    if grid is not None:
        ys, stats, result = _solve_as_one_state(
            sde, calculus, y0, ts[0], keys, grid, args, options
        )

        def broadcast(x):
            return jnp.broadcast_to(x, (batch, *jnp.shape(x)))

        return SDESolution(
            ts=ts,
            ys=ys,
            mask=mask,
            stats=jtu.tree_map(broadcast, stats),
            result=jtu.tree_map(broadcast, result),
        )

    def one_path(y0_i, ts_i, key_i):
        return _solve_one_path(sde, calculus, y0_i, ts_i, key_i, args, options)

    ys, stats, result = jax.vmap(one_path)(y0, ts, keys)
    return SDESolution(ts=ts, ys=ys, mask=mask, stats=stats, result=result)


def _solve_one_path(sde, calculus, y0, ts, key, args, o: _Options):
    bshape = sde.brownian_shape(_state_shape(y0))
    levy_area = levy_area_for(o.solver)
    reversible = isinstance(o.adjoint, ReversibleAdjoint)
    if o.brownian == "grid":
        grid = step_grid(o.t0, o.t1, o.num_steps, ts)
        # The reversible adjoint regenerates increments from the key: no stored path.
        path = GridBrownianPath(
            grid,
            bshape,
            key,
            dtype=_dtype(y0),
            presample=not reversible,
            levy_area=levy_area,
        )
        terms = sde.terms(path, calculus)
        if reversible:
            save_index = jnp.searchsorted(grid, ts, side="left")
            ys = reversible_heun_solve(terms, grid, y0, args, save_index)
            return ys, _fixed_step_stats(grid.shape[0] - 1), dfx.RESULTS.successful
        controller = dfx.StepTo(ts=grid)
        steps = grid.shape[0] - 1
        dt = None
        # Keeping every step is what a hand-written scan does: no recomputation.
        default_adjoint = dfx.RecursiveCheckpointAdjoint(checkpoints=steps)
    else:
        shape = jax.ShapeDtypeStruct(bshape, _dtype(y0))
        path = dfx.VirtualBrownianTree(
            o.t0, o.t1, tol=o.dt0 / 2, shape=shape, key=key, levy_area=levy_area
        )
        terms = sde.terms(path, calculus)
        controller = o.stepsize_controller or dfx.ConstantStepSize()
        steps = o.max_steps or 16 * o.num_steps
        dt = o.dt0
        default_adjoint = dfx.RecursiveCheckpointAdjoint()
    sol = dfx.diffeqsolve(
        terms,
        o.solver,
        o.t0,
        o.t1,
        dt,
        y0,
        args=args,
        saveat=dfx.SaveAt(ts=ts),
        stepsize_controller=controller,
        adjoint=o.adjoint or default_adjoint,
        max_steps=steps,
    )
    return sol.ys, sol.stats, sol.result


def _solve_as_one_state(sde, calculus, y0, ts, keys, grid, args, o: _Options):
    """All paths share their save times, so they share one step grid: integrate the
    batch as a single state. One time loop instead of `vmap` over per-path loops,
    whose batched control flow costs about half again as much per step (measured:
    docs/benchmarks.md). The noise is the same as path by path: one key per path."""
    reversible = isinstance(o.adjoint, ReversibleAdjoint)
    one_path_shape = jtu.tree_map(lambda leaf: leaf.shape[1:], y0)
    path = GridBrownianPath(
        grid,
        sde.brownian_shape(one_path_shape),
        keys,
        dtype=_dtype(y0),
        presample=not reversible,
        levy_area=levy_area_for(o.solver),
    )
    terms = sde.batched_terms(path, calculus)
    steps = grid.shape[0] - 1
    if reversible:
        save_index = jnp.searchsorted(grid, ts, side="left")
        ys = reversible_heun_solve(terms, grid, y0, args, save_index)
        stats = _fixed_step_stats(steps)
        result = dfx.RESULTS.successful
    else:
        sol = dfx.diffeqsolve(
            terms,
            o.solver,
            o.t0,
            o.t1,
            None,
            y0,
            args=args,
            saveat=dfx.SaveAt(ts=ts),
            stepsize_controller=dfx.StepTo(ts=grid),
            adjoint=o.adjoint or dfx.RecursiveCheckpointAdjoint(checkpoints=steps),
            max_steps=steps,
        )
        ys, stats, result = sol.ys, sol.stats, sol.result
    # diffrax stacks saves first: (n, batch, *state) -> (batch, n, *state).
    return jtu.tree_map(lambda y: jnp.moveaxis(y, 0, 1), ys), stats, result


def _fixed_step_stats(steps: int) -> dict[str, Array]:
    n = jnp.asarray(steps)
    return dict(
        num_steps=n,
        num_accepted_steps=n,
        num_rejected_steps=jnp.asarray(0),
        max_steps=n,
    )
