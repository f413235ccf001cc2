r"""Couplings of the base samples $x_0$ with the data $x_1$ in a minibatch.

Inside a jitted step every array has its global shape, so when the batch is sharded
over devices the coupling is computed on the whole (global) batch: XLA gathers what
the cost matrix needs. Minibatch optimal transport follows Tong et al., "Improving and
generalizing flow-based generative models with minibatch optimal transport"
(arXiv 2302.00482) and Pooladian et al. (arXiv 2304.14772).
"""

import abc
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


def _host_assignment(cost: np.ndarray) -> np.ndarray:
    from scipy.optimize import linear_sum_assignment

    rows, cols = linear_sum_assignment(np.asarray(cost, np.float64))
    # rows come sorted; we want, for each column j, its row.
    out = np.empty_like(cols)
    out[cols] = rows
    return out.astype(np.int32)


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
            `linear_sum_assignment` on the host, through `jax.pure_callback`.
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
        cost = _squared_distances(x0, x1)
        n = x1.shape[0]
        if self.method == "exact":
            return jax.pure_callback(
                _host_assignment,
                jax.ShapeDtypeStruct((n,), jnp.int32),
                cost,
                vmap_method="sequential",
            )
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
