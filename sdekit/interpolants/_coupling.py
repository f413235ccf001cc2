r"""Couplings of the base samples $x_0$ with the data $x_1$ in a minibatch.

Inside a jitted step every array has its global shape, so when the batch is sharded
over devices the coupling is computed on the whole (global) batch: XLA gathers what
the cost matrix needs. Minibatch optimal transport follows Tong et al., "Improving and
generalizing flow-based generative models with minibatch optimal transport"
(arXiv 2302.00482) and Pooladian et al. (arXiv 2304.14772).
"""

import abc
import functools
import os
from concurrent.futures import ThreadPoolExecutor
from typing import ClassVar, Literal

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax
from jaxtyping import Array, Float, Int, PRNGKeyArray


class AbstractCoupling(eqx.Module):
    """How the base samples of a minibatch are paired with its data points."""

    # Whether $x_0$ stays independent of $x_1$ (what converting a velocity into a
    # score needs).
    independent: eqx.AbstractClassVar[bool]

    @abc.abstractmethod
    def pairing(
        self, x0: Float[Array, "n d"], x1: Float[Array, "n d"], key: PRNGKeyArray
    ) -> Int[Array, " n"]:
        """Indices `i` such that `(x0[i[j]], x1[j])` are the pairs."""


class IndependentCoupling(AbstractCoupling):
    """$x_0$ and $x_1$ drawn independently: each data point keeps its base sample."""

    independent: ClassVar[bool] = True

    def pairing(self, x0, x1, key):
        return jnp.arange(x1.shape[0])


def _squared_distances(x0, x1):
    # |x0_i - x1_j|^2 without forming the (n, n, d) differences.
    sq0 = jnp.sum(x0**2, axis=1)
    sq1 = jnp.sum(x1**2, axis=1)
    return jnp.maximum(sq0[:, None] + sq1[None, :] - 2 * x0 @ x1.T, 0.0)


def _assignment(x0: np.ndarray, x1: np.ndarray) -> np.ndarray:
    """For each data point `x1[j]`, the index of its base sample in the exact
    assignment for the squared Euclidean cost (in float64, by differences rather than
    by expanding the square, which loses the small distances to round-off)."""
    from scipy.optimize import linear_sum_assignment
    from scipy.spatial.distance import cdist

    cost = cdist(np.asarray(x0, np.float64), np.asarray(x1, np.float64), "sqeuclidean")
    # Subtracting column then row minima changes every assignment's cost by the same
    # constant, so the optimum is the same; SciPy's augmenting paths start from these
    # duals and find it sooner (4.6 against 5.9 ms at batch 256 on 2-D data).
    cost -= cost.min(axis=0, keepdims=True)
    cost -= cost.min(axis=1, keepdims=True)
    rows, cols = linear_sum_assignment(cost)
    # rows come sorted; we want, for each column j, its row.
    out = np.empty_like(cols)
    out[cols] = rows
    return out.astype(np.int32)


@functools.cache
def _pool() -> ThreadPoolExecutor:
    # SciPy's assignment releases the GIL: one thread per core solves a vmapped
    # call's problems in parallel (3.1 against 5.7 ms each at batch 256 on 2 cores).
    return ThreadPoolExecutor(len(os.sched_getaffinity(0)), "sdekit-assignment")


def _host_assignments(x0: np.ndarray, x1: np.ndarray) -> np.ndarray:
    # Called unbatched, `(n, d)`, or under `jax.vmap` with the problems stacked on
    # leading axes, `(..., n, d)` (`vmap_method="expand_dims"`; a base sample shared
    # by every problem comes with size-1 axes).
    x0, x1 = np.asarray(x0), np.asarray(x1)
    if x0.ndim == 2 and x1.ndim == 2:
        return _assignment(x0, x1)
    lead = np.broadcast_shapes(x0.shape[:-2], x1.shape[:-2])
    x0 = np.broadcast_to(x0, lead + x0.shape[-2:]).reshape(-1, *x0.shape[-2:])
    x1 = np.broadcast_to(x1, lead + x1.shape[-2:]).reshape(-1, *x1.shape[-2:])
    out = list(_pool().map(_assignment, x0, x1))
    return np.stack(out).reshape(*lead, x1.shape[-2])


def sinkhorn_plan(
    cost: Float[Array, "n m"], epsilon: float, iterations: int
) -> Float[Array, "n m"]:
    r"""The entropic optimal-transport plan between uniform weights for `cost`, by
    `iterations` log-domain Sinkhorn sweeps at regularisation `epsilon` (in units of
    the costs' standard deviation), ending on a column update so that every column sums to exactly
    $1/m$.

    **Returns:** the plan $P$, with rows summing to about $1/n$ and columns to $1/m$.
    """
    n, m = cost.shape
    # Relative to the spread of the costs, not their mean: a shift between the two
    # clouds adds a near-constant to every cost, which does not change the transport.
    scaled = cost / (epsilon * jnp.std(cost) + 1e-30)
    log_a = -jnp.log(n) * jnp.ones(n)
    log_b = -jnp.log(m) * jnp.ones(m)

    def sweep(g, _):
        f = log_a - jax.nn.logsumexp(g[None, :] - scaled, axis=1)
        g = log_b - jax.nn.logsumexp(f[:, None] - scaled, axis=0)
        return g, None

    g, _ = jax.lax.scan(sweep, jnp.zeros(m), None, length=iterations)
    f = log_a - jax.nn.logsumexp(g[None, :] - scaled, axis=1)
    g = log_b - jax.nn.logsumexp(f[:, None] - scaled, axis=0)
    return jnp.exp(f[:, None] + g[None, :] - scaled)


class OTCoupling(AbstractCoupling):
    r"""Minibatch optimal transport for the squared Euclidean cost.

    **Arguments:**

    - `method`:
        - `"exact"` (default): the exact assignment (a permutation) by SciPy's
            `linear_sum_assignment` on the host, through `jax.pure_callback`; under
            `jax.vmap` the batches' problems are solved together, one thread per
            core.
        - `"sinkhorn"`: entropic OT in JAX (fixed sweeps, inside the compiled step);
            each data point $x_1^j$ then draws its partner from column $j$ of the
            plan, so a base sample may be drawn more than once in a batch (as
            torchcfm's exact OT does).
        - `"hungarian"`: the exact assignment by `optax.assignment.hungarian_algorithm`,
            inside the compiled step (slow: its loop is sequential).
    - `epsilon`: the Sinkhorn regularisation, relative to the standard deviation of the
        batch's costs.
    - `iterations`: Sinkhorn sweeps.

    The measured costs of each method by batch size are on the docs page
    (`benchmarks/interpolant_speed.py --couplings`).
    """

    method: Literal["sinkhorn", "exact", "hungarian"] = eqx.field(
        static=True, default="exact"
    )
    epsilon: float = eqx.field(static=True, default=0.05)
    iterations: int = eqx.field(static=True, default=100)
    independent: ClassVar[bool] = False

    def __check_init__(self):
        if self.method not in ("sinkhorn", "exact", "hungarian"):
            raise ValueError(
                f"Unknown OT method {self.method!r}; choose sinkhorn, exact or "
                "hungarian."
            )
        if not self.epsilon > 0 or self.iterations < 1:
            raise ValueError("`epsilon` must be > 0 and `iterations` >= 1.")

    def pairing(self, x0, x1, key):
        x0 = jax.lax.stop_gradient(x0.reshape(x0.shape[0], -1))
        x1 = jax.lax.stop_gradient(x1.reshape(x1.shape[0], -1))
        n = x1.shape[0]
        if self.method == "exact":
            return jax.pure_callback(
                _host_assignments,
                jax.ShapeDtypeStruct((n,), jnp.int32),
                x0,
                x1,
                vmap_method="expand_dims",
            )
        cost = _squared_distances(x0, x1)
        if self.method == "hungarian":
            rows, cols = optax.assignment.hungarian_algorithm(cost)
            return jnp.zeros(n, jnp.int32).at[cols].set(rows.astype(jnp.int32))
        plan = sinkhorn_plan(cost, self.epsilon, self.iterations)
        return jr.categorical(key, jnp.log(plan.T + 1e-30), axis=1)


def transport_cost(x0: Array, x1: Array, pairing: Array | None = None) -> Array:
    """Mean squared distance of the pairs `(x0[pairing[j]], x1[j])`."""
    if pairing is not None:
        x0 = x0[pairing]
    return jnp.mean(jnp.sum((x0 - x1).reshape(x1.shape[0], -1) ** 2, axis=1))
