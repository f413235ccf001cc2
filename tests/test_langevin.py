"""Numerics of the latent Langevin flow: the potential, the integrators (Boltzmann
moments, energy conservation, reverse-mode gradients), the Girsanov KL of the forced
flow, and the sequential VAE's loss."""

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
from helpers import mean_tolerance, variance_tolerance
from jax.flatten_util import ravel_pytree

import sdekit
from sdekit.langevin import (
    CoupledOscillatorPotential,
    DiscreteLangevinMap,
    ForcedLangevinDynamics,
    GRUDynamics,
    kl_weight,
    LangevinDynamics,
    make_loss,
    optimizer,
    SequentialVAE,
)


def _coupled(groups, sites, key, scale=0.3, stiffness=3.0):
    potential = CoupledOscillatorPotential(groups, sites, stiffness=stiffness)
    weight = scale * jr.normal(key, potential.weight.shape)
    return eqx.tree_at(lambda p: p.weight, potential, weight)


def _hessian(potential):
    z = jnp.zeros(potential.size)
    return np.asarray(jax.hessian(potential)(z), np.float64)


def test_potential_is_the_stated_quadratic(getkey):
    potential = _coupled(2, 4, getkey())
    z = jr.normal(getkey(), (8,))
    w = np.asarray(potential.normalised_weight(), np.float64)
    grid = np.asarray(z, np.float64).reshape(2, 4)
    padded = np.pad(grid, ((0, 0), (1, 1)))
    coupling = np.zeros((2, 4))
    for g in range(2):
        for s in range(4):
            for h in range(2):
                for k in range(3):
                    coupling[g, s] += w[g, h, k] * padded[h, s + k]
    expected = 1.5 * np.sum(grid**2) + np.sum(grid * coupling)
    assert float(potential(z)) == pytest.approx(expected, rel=1e-5)
    # Normalised kernels have norm below one, whatever the raw weight.
    assert np.all(np.linalg.norm(w, axis=-1) < 1)


def test_zero_initialised_potential_has_finite_gradients():
    potential = CoupledOscillatorPotential(3, 5)
    z = jnp.linspace(-1.0, 1.0, 15)

    def energy_of(p):
        return p(z)

    grads = jax.grad(energy_of)(potential)
    assert np.all(np.isfinite(grads.weight))
    # At W = 0 the normalisation's Jacobian is the identity: dU/dW is z-products.
    assert np.any(np.asarray(grads.weight) != 0)
    assert np.all(np.isfinite(jax.grad(potential)(z)))


def _stationary_run(dynamics, num_paths, num_bins, key, start):
    initial = jnp.broadcast_to(start, (num_paths, start.shape[0]))
    features, kl = eqx.filter_jit(dynamics)(initial, None, num_bins, key)
    assert np.all(np.asarray(kl) == 0)
    return np.asarray(features[:, -1], np.float64)


# ShOULD compiles twice as long as ALIGN: its checks run with the slow tests.
SOLVERS = ["align", pytest.param("should", marks=pytest.mark.slow)]


@pytest.mark.parametrize("solver", SOLVERS)
def test_integrator_samples_the_boltzmann_distribution(solver, getkey):
    # U = z^T A z / 2 at temperature T: z ~ N(0, T A^-1), v ~ N(0, T), independent.
    potential = _coupled(2, 3, getkey())
    hessian = _hessian(potential)
    assert np.all(np.linalg.eigvalsh(hessian) > 0.5)
    temperature = 0.7
    dynamics = LangevinDynamics(
        potential,
        bin_time=0.25,
        steps_per_bin=2,
        solver=solver,
        temperature=temperature,
    )
    d, num_paths = potential.size, 3000
    # From far out, 40 time units with friction 1: e^{-20} of the start remains.
    start = jnp.concatenate([2 * jnp.ones(d), jnp.zeros(d)])
    states = _stationary_run(dynamics, num_paths, 161, getkey(), start)
    z, v = states[:, :d], states[:, d:]
    cov_z = temperature * np.linalg.inv(hessian)
    for i in range(d):
        sd = np.sqrt(cov_z[i, i])
        assert abs(z[:, i].mean()) < mean_tolerance(sd, num_paths)
        assert abs(v[:, i].mean()) < mean_tolerance(np.sqrt(temperature), num_paths)
        # Step-size bias of these order-2+ schemes at h = 0.125 is well below 1%.
        assert (
            abs(z[:, i].var() - cov_z[i, i])
            < variance_tolerance(cov_z[i, i], num_paths) + 0.01 * cov_z[i, i]
        )
        assert (
            abs(v[:, i].var() - temperature)
            < variance_tolerance(temperature, num_paths) + 0.01 * temperature
        )
    # The coupling shows in the covariance across sites.
    i, j = np.unravel_index(np.argmax(np.abs(cov_z - np.diag(np.diag(cov_z)))), (d, d))
    sample = np.cov(z[:, i], z[:, j])[0, 1]
    sd = np.sqrt(cov_z[i, i] * cov_z[j, j] + cov_z[i, j] ** 2)
    assert abs(sample - cov_z[i, j]) < mean_tolerance(sd, num_paths) + 0.01 * sd


def _hamiltonian_error(potential, bin_time, key):
    # Friction and temperature ~ 0: Hamiltonian dynamics, H = U(z) + |v|^2 / 2.
    dynamics = LangevinDynamics(potential, bin_time=bin_time)
    dynamics = eqx.tree_at(
        lambda m: (m.log_friction, m.log_temperature),
        dynamics,
        (jnp.full(potential.size, -60.0), jnp.full(potential.size, -60.0)),
    )
    d = potential.size
    start = jr.normal(key, (4, 2 * d))
    num_bins = int(round(4.0 / bin_time)) + 1
    features, _ = eqx.filter_jit(dynamics)(start, None, num_bins, jr.key(0))
    z, v = features[..., :d], features[..., d:]
    energy = jax.vmap(jax.vmap(potential))(z) + 0.5 * jnp.sum(v**2, axis=-1)
    # Relative to each path's own energy scale, which the random potential and start set.
    drift = jnp.abs(energy - energy[:, :1]) / jnp.abs(energy[:, :1])
    return float(jnp.max(drift))


def test_without_noise_and_friction_energy_is_conserved_to_order_two(x64, getkey):
    potential = _coupled(2, 3, getkey())
    potential = jax.tree_util.tree_map(
        lambda x: x.astype(jnp.float64) if eqx.is_inexact_array(x) else x, potential
    )
    key = getkey()
    steps = [0.1, 0.05]
    errors = [_hamiltonian_error(potential, h, key) for h in steps]
    slope = np.log(errors[0] / errors[1]) / np.log(2)
    assert 1.7 < slope < 2.3, (slope, errors)
    # Over 80 bins of 0.05 the energy drifts by well under a percent of itself.
    assert errors[-1] < 5e-3, errors


@pytest.mark.parametrize("solver", SOLVERS)
def test_reverse_mode_gradients_match_finite_differences(solver, x64, getkey):
    potential = _coupled(2, 2, getkey(), stiffness=2.0)
    dynamics = LangevinDynamics(potential, bin_time=0.2, solver=solver)
    dynamics = jax.tree_util.tree_map(
        lambda x: x.astype(jnp.float64) if eqx.is_inexact_array(x) else x, dynamics
    )
    initial = jr.normal(getkey(), (3, 8), jnp.float64)
    key = getkey()
    probe = jr.normal(getkey(), (3, 6, 8), jnp.float64)

    def objective(params):
        model = eqx.combine(params, static)
        features, _ = model(initial, None, 6, key)
        return jnp.sum(jnp.sin(features) * probe)

    params, static = eqx.partition(dynamics, eqx.is_inexact_array)
    objective = eqx.filter_jit(objective)
    grads = eqx.filter_jit(jax.grad(objective))(params)
    flat, unravel = ravel_pytree(params)
    flat_grads, _ = ravel_pytree(grads)
    directions = jr.normal(getkey(), (3, flat.shape[0]), jnp.float64)
    eps = 1e-5
    for direction in directions:
        upper = objective(unravel(flat + eps * direction))
        lower = objective(unravel(flat - eps * direction))
        numeric = (upper - lower) / (2 * eps)
        assert float(jnp.dot(flat_grads, direction)) == pytest.approx(
            float(numeric), rel=1e-5, abs=1e-7
        )


def test_forced_flow_kl_is_the_girsanov_closed_form(x64, getkey):
    # A constant force w: KL = T_end * sum_i w_i^2 / (2 * 2 gamma_i T_i) exactly; and a
    # force that changes by bin gives what `sdekit.with_pathwise_kl` accumulates along
    # an Euler solve of the posterior SDE against the prior.
    potential = _coupled(1, 3, getkey())
    friction, temperature = 0.5, 2.0
    dynamics = ForcedLangevinDynamics(
        potential, bin_time=0.1, friction=friction, temperature=temperature
    )
    num_bins, batch = 11, 2
    w = jnp.array([0.3, -1.0, 0.5])
    force = jnp.broadcast_to(w, (batch, num_bins, 3))
    features, kl = eqx.filter_jit(dynamics)(
        jr.normal(getkey(), (batch, 6)), force, num_bins, getkey()
    )
    assert features.shape == (batch, num_bins, 6)
    expected = 1.0 * float(jnp.sum(w**2)) / (2 * 2 * friction * temperature)
    np.testing.assert_allclose(np.asarray(kl), expected, rtol=1e-5)

    force = jr.normal(getkey(), (1, num_bins, 3), jnp.float64)
    sigma = np.sqrt(2 * friction * temperature)

    def drift(t, y, args):
        k = jnp.clip(jnp.floor(t / 0.1 + 1e-6).astype(int), 0, num_bins - 1)
        z, v = y[:3], y[3:]
        return jnp.concatenate([v, -potential.gradient(z) - friction * v + force[0, k]])

    def prior(t, y, args):
        z, v = y[:3], y[3:]
        return jnp.concatenate([v, -potential.gradient(z) - friction * v])

    def diffusion(t, y, args):
        return jnp.concatenate([jnp.zeros((3, 3)), sigma * jnp.eye(3)])

    def sde_of(f):
        return sdekit.SDE(
            f, diffusion, noise_structure="general", noise_dim=3, additive=True
        )

    sde = sdekit.with_pathwise_kl(sde_of(drift), prior)
    start = jnp.zeros((1, 7), jnp.float64)
    solution = sdekit.solve(
        sde, start, jnp.array([0.0, 1.0]), key=getkey(), dt0=0.05, t0=0.0, t1=1.0,
        solver=dfx.Euler(),
    )  # fmt: skip
    _, accumulated = sdekit.split_kl(solution.ys[0])
    dynamics64 = jax.tree_util.tree_map(
        lambda x: x.astype(jnp.float64) if eqx.is_inexact_array(x) else x, dynamics
    )
    np.testing.assert_allclose(
        float(accumulated[-1]), float(dynamics64.path_kl(force)[0]), rtol=1e-10
    )


def test_forced_flow_without_force_is_the_langevin_flow(getkey):
    # Zero force, same key: the same grid path and the same solver, so the same paths.
    potential = _coupled(2, 2, getkey())
    kwargs = dict(bin_time=0.2, steps_per_bin=2, friction=0.7, temperature=0.4)
    initial = jr.normal(getkey(), (5, 8))
    key = getkey()
    forced, kl = eqx.filter_jit(ForcedLangevinDynamics(potential, **kwargs))(
        initial, jnp.zeros((5, 7, 4)), 7, key
    )
    plain, _ = eqx.filter_jit(LangevinDynamics(potential, **kwargs))(
        initial, None, 7, key
    )
    assert np.all(np.asarray(kl) == 0)
    np.testing.assert_allclose(forced, plain, rtol=1e-5, atol=1e-6)


def _linear_forced_path(kappa, gamma, bin_time, force, y0):
    # Noise-free z' = v, v' = -kappa z - gamma v + w_k, exactly over each bin by the
    # matrix exponential of the augmented system [y; 1].
    import scipy.linalg

    out = [np.asarray(y0, np.float64)]
    for w in force[:-1]:
        a = np.array([[0.0, 1.0, 0.0], [-kappa, -gamma, w], [0.0, 0.0, 0.0]])
        out.append((scipy.linalg.expm(a * bin_time) @ np.append(out[-1], 1.0))[:2])
    return np.stack(out)


def test_forced_flow_converges_at_order_two_through_force_changes(x64, getkey):
    # A force that jumps at every bin, no noise (T ~ 0): against the exact path, the
    # error falls fourfold when the steps halve. A first-order error at every jump
    # (the solver reusing a gradient of the old force) would only halve it.
    kappa, gamma, bin_time, num_bins = 2.0, 0.5, 0.2, 16
    potential = CoupledOscillatorPotential(1, 1, stiffness=kappa)
    force = np.asarray(jr.normal(getkey(), (num_bins,)), np.float64) * 2.0
    y0 = np.array([0.5, -0.3])
    exact = _linear_forced_path(kappa, gamma, bin_time, force, y0)
    errors = []
    for steps_per_bin in (1, 2, 4):
        dynamics = ForcedLangevinDynamics(
            potential, bin_time=bin_time, steps_per_bin=steps_per_bin, friction=gamma
        )
        dynamics = eqx.tree_at(
            lambda m: m.log_temperature, dynamics, jnp.full(1, -60.0, jnp.float64)
        )
        dynamics = jax.tree_util.tree_map(
            lambda x: x.astype(jnp.float64) if eqx.is_inexact_array(x) else x,
            dynamics,
        )
        features, _ = eqx.filter_jit(dynamics)(
            jnp.asarray(y0)[None], jnp.asarray(force)[None, :, None], num_bins, jr.key(0)
        )
        errors.append(float(np.max(np.abs(np.asarray(features[0]) - exact))))
    rates = np.log2(np.array(errors[:-1]) / np.array(errors[1:]))
    assert np.all(rates > 1.7), (errors, rates)


def test_forced_flow_with_a_constant_force_samples_the_shifted_boltzmann_law(getkey):
    # U = kappa z^2 / 2 and a constant force w: z ~ N(w / kappa, T / kappa), v ~ N(0, T).
    kappa, temperature, w, num_paths = 2.0, 0.5, 1.5, 3000
    potential = CoupledOscillatorPotential(1, 1, stiffness=kappa)
    dynamics = ForcedLangevinDynamics(
        potential, bin_time=0.25, steps_per_bin=2, temperature=temperature
    )
    num_bins = 161  # 40 time units with friction 1
    force = jnp.full((num_paths, num_bins, 1), w)
    features, _ = eqx.filter_jit(dynamics)(
        jnp.zeros((num_paths, 2)), force, num_bins, getkey()
    )
    z, v = np.asarray(features[:, -1, 0], np.float64), np.asarray(features[:, -1, 1])
    var_z = temperature / kappa
    assert abs(z.mean() - w / kappa) < mean_tolerance(np.sqrt(var_z), num_paths)
    assert abs(v.mean()) < mean_tolerance(np.sqrt(temperature), num_paths)
    assert abs(z.var() - var_z) < variance_tolerance(var_z, num_paths) + 0.01 * var_z
    assert (
        abs(v.var() - temperature)
        < variance_tolerance(temperature, num_paths) + 0.01 * temperature
    )


def test_discrete_map_is_the_official_update(getkey):
    potential = _coupled(1, 3, getkey())
    dynamics = DiscreteLangevinMap(potential)
    initial = jr.normal(getkey(), (2, 6))
    key = getkey()
    features, _ = eqx.filter_jit(dynamics)(initial, None, 3, key)
    noise = jr.normal(key, (2, 2, 3))
    z, v = initial[:, :3], initial[:, 3:]
    for k in range(2):
        grad = jax.vmap(potential.gradient)(z)
        z, v = z + 0.01 * v, 0.45 * (v - 0.01 * grad) + np.sqrt(1.1) * noise[k]
        np.testing.assert_allclose(features[:, k + 1, :3], z, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(features[:, k + 1, 3:], v, rtol=1e-5, atol=1e-6)


def _tiny_model(dynamics, key):
    return SequentialVAE(
        dynamics, num_heldin=4, num_neurons=6, hidden=8, size=8, feedforward=8, key=key
    )


@pytest.mark.parametrize(
    "kind",
    [
        "align",
        "forced",
        # Also covered by the job tests (the GRU baseline) and the map's own test.
        pytest.param("discrete", marks=pytest.mark.slow),
        pytest.param("gru", marks=pytest.mark.slow),
    ],
)
def test_loss_and_gradients_are_finite_at_initialisation(kind, getkey):
    potential = CoupledOscillatorPotential(2, 2)
    dynamics = {
        "align": lambda: LangevinDynamics(potential),
        "forced": lambda: ForcedLangevinDynamics(potential, steps_per_bin=1),
        "discrete": lambda: DiscreteLangevinMap(potential),
        "gru": lambda: GRUDynamics(8, key=getkey()),
    }[kind]()
    model = _tiny_model(dynamics, getkey())
    spikes = jr.poisson(getkey(), 1.0, (3, 7, 6)).astype(jnp.float32)
    loss_fn = make_loss(num_heldin=4, observed_bins=5, ramp_steps=10)
    (loss, metrics), grads = eqx.filter_jit(
        eqx.filter_value_and_grad(loss_fn, has_aux=True)
    )(model, {"spikes": spikes}, getkey())
    assert np.isfinite(float(loss))
    for leaf in jax.tree_util.tree_leaves(eqx.filter(grads, eqx.is_inexact_array)):
        assert np.all(np.isfinite(leaf))
    # The clock's gradient carries the loss to the optimiser, and the ramp starts at 0.
    assert float(grads.clock) == pytest.approx(float(loss), rel=1e-6)
    assert float(metrics["beta"]) == 0.0
    log_rates, _ = eqx.filter_jit(model)(spikes[:, :5, :4], 7, key=getkey())
    assert log_rates.shape == (3, 7, 6)


def test_optimizer_advances_the_clock_and_ramps_the_kl_weight(getkey):
    model = _tiny_model(GRUDynamics(8, key=getkey()), getkey())
    spikes = jr.poisson(getkey(), 1.0, (3, 7, 6)).astype(jnp.float32)
    loss_fn = make_loss(num_heldin=4, observed_bins=7, ramp_steps=4, beta=0.5)
    opt = optimizer(1e-3, steps_per_epoch=1)
    state = opt.init(eqx.filter(model, eqx.is_inexact_array))

    @eqx.filter_jit
    def step(model, state, key):
        (_, metrics), grads = eqx.filter_value_and_grad(loss_fn, has_aux=True)(
            model, {"spikes": spikes}, key
        )
        updates, state = opt.update(
            grads, state, eqx.filter(model, eqx.is_inexact_array)
        )
        return eqx.apply_updates(model, updates), state, metrics["beta"]

    betas = []
    key = getkey()
    for i in range(6):
        model, state, beta = step(model, state, jr.fold_in(key, i))
        betas.append(float(beta))
    assert float(model.clock) == 6.0
    np.testing.assert_allclose(betas, [0.0, 0.125, 0.25, 0.375, 0.5, 0.5])
    assert float(kl_weight(jnp.asarray(100.0), 0.5, 0)) == 0.5
