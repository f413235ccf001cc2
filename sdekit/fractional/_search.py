"""Maximum likelihood over a handful of parameters: the best point of a grid, then
optimistix's BFGS with exact JAX derivatives, then the curvature at the optimum (for
standard errors). Two compiled functions per likelihood and data shape."""

import abc
import functools
from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optimistix as optx
from jaxtyping import Array, Bool, Float, PyTree

from .._export_cache import exported_call


class AbstractNegLogLikelihood(eqx.Module):
    """A negative log-likelihood in unconstrained search coordinates. Its fields are
    static configuration (hashable: they select the compiled code); everything that
    varies between series is in `data`, as arrays, so that series of one shape
    share one compilation (and one entry of JAX's persistent compilation cache)."""

    @abc.abstractmethod
    def __call__(self, x: Float[Array, " p"], data: PyTree[Array]) -> tuple[Array, PyTree]:
        """`(negative log-likelihood, aux)` at `x`."""


def _values(objective, points, data):
    return exported_call(
        "search-values", objective, functools.partial(_values_impl, objective), points, data
    )


def _values_impl(objective, points, data):
    values, aux = jax.vmap(lambda x: objective(x, data))(points)
    return jnp.where(jnp.isnan(values), jnp.inf, values), aux


def _minimise(objective, start, lower, upper, active, data, count, rtol, atol):
    # Compiled with the objective and tolerances static; the command's repeated
    # calls load it from disk (`sdekit._export_cache`): tracing this BFGS search is
    # most of a warm `sdekit hurst`.
    return exported_call(
        "search-minimise",
        (objective, rtol, atol),
        functools.partial(_minimise_impl, objective, rtol=rtol, atol=atol),
        start,
        lower,
        upper,
        active,
        data,
        count,
    )


def _minimise_impl(objective, start, lower, upper, active, data, count, *, rtol, atol):
    # The box is kept by optimising z with x = l + (u - l) sigmoid(z). The loss is
    # per observation, so that its curvature is of order one and BFGS's first step
    # (from the identity) is of the right length.
    width = upper - lower
    inside = jnp.clip((start - lower) / width, 1e-9, 1 - 1e-9)

    def in_box(z):
        return jnp.where(active, lower + width * jax.nn.sigmoid(z), start)

    def loss(z, _):
        return objective(in_box(z), data)[0] / count

    solution = optx.minimise(
        loss,
        optx.BFGS(rtol=rtol, atol=atol),
        jnp.log(inside) - jnp.log1p(-inside),
        max_steps=_MAX_STEPS,
        throw=False,
    )
    converged = solution.result == optx.RESULTS.successful
    return in_box(solution.value), solution.stats["num_steps"], converged


_MAX_STEPS = 100
# Central differences of the likelihood for its curvature: the step in the search
# coordinates (logits and logarithms) balances truncation (step^2) and roundoff.
_CURVATURE_STEP = 1e-3


def _stencil(x, active, step):
    # x, x +- h e_i, x +- h e_i +- h e_j (i < j), over the active coordinates.
    dims = np.flatnonzero(active)
    eye = np.eye(len(x)) * step
    points = [x]
    for i in dims:
        points += [x + eye[i], x - eye[i]]
    for a, i in enumerate(dims):
        for j in dims[a + 1 :]:
            points += [
                x + eye[i] + eye[j],
                x + eye[i] - eye[j],
                x - eye[i] + eye[j],
                x - eye[i] - eye[j],
            ]
    return np.array(points)


def _curvature(values, p, step):
    # The Hessian from the values at `_stencil`'s points.
    f0 = values[0]
    plus, minus = values[1 : 2 * p + 1 : 2], values[2 : 2 * p + 1 : 2]
    hessian = np.diag((plus - 2 * f0 + minus) / step**2)
    k = 2 * p + 1
    for i in range(p):
        for j in range(i + 1, p):
            pp, pm, mp, mm = values[k : k + 4]
            hessian[i, j] = hessian[j, i] = (pp - pm - mp + mm) / (4 * step**2)
            k += 4
    return hessian


class SearchResult(NamedTuple):
    x: np.ndarray  # the optimum, (p,)
    value: float  # the negative log-likelihood there
    aux: PyTree  # the likelihood's aux output there
    hessian: np.ndarray  # over the active coordinates
    converged: bool  # the optimiser met its tolerance
    steps: int  # the optimiser's steps


def search(
    objective: AbstractNegLogLikelihood,
    grid: Float[np.ndarray, "g p"],
    lower: Float[np.ndarray, " p"],
    upper: Float[np.ndarray, " p"],
    active: Bool[np.ndarray, " p"],
    data: PyTree[Array],
    count: int,
    *,
    rtol: float = 1e-6,
    atol: float = 1e-6,
) -> SearchResult:
    """Minimise `objective` over the box `[lower, upper]` in the `active`
    coordinates (the others stay at the best grid point's values), from the best
    point of `grid`.

    The minimisation is optimistix's BFGS on exact gradients (reverse-mode JAX), on
    the loss per observation (`count` of them), to `rtol`, `atol` on both the
    coordinates and that loss (optimistix's Cauchy criterion; 1e-6 moves the
    estimates by less than 1e-6 and saves steps where the likelihood is flat, as
    in the noise level of a series without noise). The curvature at the optimum, for
    standard errors, is from central differences of the likelihood at a stencil of
    points evaluated by the same compiled function as the grid (an exact Hessian,
    `jax.hessian`, would compile a third function, the slowest of the three: see
    docs/developer-notes.md), so the stencil must have no more points than the grid.
    """
    grid = np.asarray(grid, np.float64)
    values, _ = _values(objective, grid, data)
    values = np.asarray(values)
    start = grid[int(np.argmin(values))]
    x, steps, converged = _minimise(
        objective,
        start,
        np.asarray(lower, np.float64),
        np.asarray(upper, np.float64),
        np.asarray(active),
        data,
        np.asarray(float(count)),
        rtol,
        atol,
    )
    result = _result_at(objective, np.asarray(x), active, data, len(grid))
    result = result._replace(converged=bool(converged), steps=int(steps))
    # The optimiser only ever accepts decreases; this guards a failed solve.
    if not result.value <= values.min():
        result = _result_at(objective, start, active, data, len(grid))
        result = result._replace(steps=int(steps))
    return result


def _result_at(objective, x, active, data, size):
    # The value and curvature at x, by the grid's compiled function (the stencil is
    # padded to the grid's size with copies of x).
    stencil = _stencil(x, active, _CURVATURE_STEP)
    padded = np.concatenate([stencil, np.repeat(x[None], size - len(stencil), 0)])
    values, aux = _values(objective, padded, data)
    values = np.asarray(values)
    return SearchResult(
        x=x,
        value=float(values[0]),
        aux=jax.tree_util.tree_map(lambda a: np.asarray(a)[0], aux),
        hessian=_curvature(values[: len(stencil)], int(active.sum()), _CURVATURE_STEP),
        converged=False,
        steps=0,
    )
