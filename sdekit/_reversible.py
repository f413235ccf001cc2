"""The reversible Heun loop: exact gradients of reversible Heun in O(1) memory."""

import diffrax as dfx
import equinox as eqx
import jax.lax as lax
import jax.numpy as jnp
import jax.tree_util as jtu
import numpy as np
from jaxtyping import Array, Float, Int, PyTree


def _step(solver, terms, t0, t1, y, args, state):
    y1, _, _, state1, _ = solver.step(terms, t0, t1, y, args, state, False)
    return y1, state1


def _add(a, b):
    return jtu.tree_map(
        lambda x, y: x if y is None else (y if x is None else x + y),
        a,
        b,
        is_leaf=lambda x: x is None,
    )


def _saved_cotangent(ys_bar, save_index, n):
    """The sum of the cotangents of every save that sits at grid index `n`."""
    hit = (save_index == n).astype(ys_bar.dtype)
    return jnp.tensordot(hit, ys_bar, axes=1)


@eqx.filter_custom_vjp
def _reversible_heun(vjp_arg, solver, grid, save_index):
    ys, _ = _forward(vjp_arg, solver, grid, save_index)
    return ys


def _forward(vjp_arg, solver, grid, save_index):
    terms, y0, args = vjp_arg
    state0 = solver.init(terms, grid[0], grid[1], y0, args)
    ys = jnp.zeros((save_index.shape[0], *y0.shape), y0.dtype)
    ys = _write(ys, save_index, 0, y0)

    def body(carry, _):
        n, y, state, ys = carry
        y1, state1 = _step(solver, terms, grid[n], grid[n + 1], y, args, state)
        return (n + 1, y1, state1, _write(ys, save_index, n + 1, y1)), None

    # The step counter rides in the carry: no (num_steps,) array of indices is stored.
    num_steps = grid.shape[0] - 1
    (_, y_final, state_final, ys), _ = lax.scan(
        body, (jnp.asarray(0), y0, state0, ys), None, length=num_steps
    )
    return ys, (y_final, state_final)


def _write(ys, save_index, n, y):
    hit = (save_index == n).reshape(-1, *([1] * y.ndim))
    return jnp.where(hit, y[None], ys)


@_reversible_heun.def_fwd
def _reversible_heun_fwd(perturbed, vjp_arg, solver, grid, save_index):
    del perturbed
    return _forward(vjp_arg, solver, grid, save_index)


@_reversible_heun.def_bwd
def _reversible_heun_bwd(
    residuals, ys_bar, perturbed, vjp_arg, solver, grid, save_index
):
    del perturbed
    terms, y0, args = vjp_arg
    y_final, state_final = residuals
    num_steps = grid.shape[0] - 1
    if ys_bar is None:
        ys_bar = jnp.zeros((save_index.shape[0], *y0.shape), y0.dtype)
    diff_params = eqx.filter((terms, args), eqx.is_inexact_array)
    zero_params = jtu.tree_map(jnp.zeros_like, diff_params)
    zero_state = jtu.tree_map(jnp.zeros_like, state_final)
    y_bar_final = _saved_cotangent(ys_bar, save_index, num_steps)

    def body(carry, _):
        n, y1, state1, y_bar1, state_bar1, params_bar = carry
        n = n - 1
        t0, t1 = grid[n], grid[n + 1]
        yhat1, vf1 = state1
        control = terms.contr(t0, t1)
        # Rebuild the step's input from its output (the algebraic inverse).
        yhat0 = 2 * y1 - yhat1 - terms.prod(vf1, control)
        vf0 = terms.vf(t0, yhat0, args)
        y0_ = y1 - 0.5 * (terms.prod(vf0, control) + terms.prod(vf1, control))
        state0 = (yhat0, vf0)

        def step(params, y, state):
            terms_, args_ = eqx.combine(params, nondiff)
            return _step(solver, terms_, t0, t1, y, args_, state)

        _, vjp = eqx.filter_vjp(step, diff_params, y0_, state0)
        p_bar, y_bar0, state_bar0 = vjp((y_bar1, state_bar1))
        y_bar0 = y_bar0 + _saved_cotangent(ys_bar, save_index, n)
        return (n, y0_, state0, y_bar0, state_bar0, _add(params_bar, p_bar)), None

    nondiff = eqx.filter((terms, args), eqx.is_inexact_array, inverse=True)
    init = (
        jnp.asarray(num_steps),
        y_final,
        state_final,
        y_bar_final,
        zero_state,
        zero_params,
    )
    (_, y0_, state0, y_bar0, state_bar0, params_bar), _ = lax.scan(
        body, init, None, length=num_steps
    )

    # The initial auxiliary state is a function of y0 too: (yhat0, vf0) = (y0, f(y0)).
    def init_state(params, y):
        terms_, args_ = eqx.combine(params, nondiff)
        return solver.init(terms_, grid[0], grid[1], y, args_)

    _, vjp = eqx.filter_vjp(init_state, diff_params, y0)
    p_bar, y_bar_init = vjp(state_bar0)
    params_bar = _add(params_bar, p_bar)
    terms_bar, args_bar = params_bar
    return terms_bar, y_bar0 + y_bar_init, args_bar


def reversible_heun_solve(
    terms: dfx.AbstractTerm,
    grid: Float[Array | np.ndarray, " m"],
    y0: Float[Array, "*state"],
    args: PyTree,
    save_index: Int[Array, " n"],
) -> Float[Array, "n *state"]:
    """Solve one path with reversible Heun on `grid`, returning the states at the
    grid indices `save_index`, differentiable in $O(1)$ memory."""
    grid, save_index = jnp.asarray(grid), jnp.asarray(save_index)
    return _reversible_heun((terms, y0, args), dfx.ReversibleHeun(), grid, save_index)
