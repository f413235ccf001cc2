"""Stochastic interpolants: boundary conditions, closed-form Gaussian fields, losses,
divergence estimators, likelihood, samplers and couplings."""

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
import scipy.stats
from helpers import mean_tolerance, variance_tolerance

import sdekit.interpolants as si
from sdekit.data import StandardGaussian


INTERPOLANTS = [
    si.LinearInterpolant(),
    si.LinearInterpolant(si.SqrtGamma(1.0)),
    si.TrigonometricInterpolant(si.SqrtGamma(0.5)),
    si.EncoderDecoderInterpolant(),
    si.VPInterpolant(),
]


@pytest.mark.parametrize("interpolant", INTERPOLANTS, ids=lambda i: repr(i)[:40])
def test_boundary_conditions(interpolant, getkey):
    x0, x1, z = (jr.normal(getkey(), (3,)) for _ in range(3))
    assert jnp.allclose(interpolant(0.0, x0, x1, z), x0, atol=1e-6)
    assert jnp.allclose(interpolant(1.0, x0, x1, z), x1, atol=1e-6)
    assert (
        abs(float(interpolant.gamma(0.0))) + abs(float(interpolant.gamma(1.0))) < 1e-6
    )


@pytest.mark.parametrize("interpolant", INTERPOLANTS, ids=lambda i: repr(i)[:40])
def test_derivatives_match_autodiff(interpolant):
    # Interior times, away from the kinks of the encoder-decoder at 1/2.
    for t in (0.1, 0.3, 0.7, 0.9):
        for f, df in [
            (interpolant.alpha, interpolant.alpha_dot),
            (interpolant.beta, interpolant.beta_dot),
            (interpolant.gamma, interpolant.gamma.derivative),
        ]:
            assert jnp.allclose(jax.grad(f)(t), df(t), rtol=1e-4, atol=1e-5)
        gamma = interpolant.gamma
        assert jnp.allclose(
            gamma(t) * jax.grad(gamma)(t), gamma.gamma_gamma_dot(t), atol=1e-5
        )


def test_gamma_gamma_dot_finite_at_the_ends():
    gamma = si.SqrtGamma(2.0)
    assert float(gamma.gamma_gamma_dot(0.0)) == pytest.approx(1.0)
    assert float(gamma.gamma_gamma_dot(1.0)) == pytest.approx(-1.0)
    assert not math.isfinite(float(gamma.derivative(0.0)))


def test_mirror_interpolant():
    mirror = si.MirrorInterpolant()
    x0, x1, z = jnp.ones(2), 2 * jnp.ones(2), 3 * jnp.ones(2)
    assert jnp.allclose(mirror(0.0, x0, x1, z), x1)
    assert jnp.allclose(mirror(1.0, x0, x1, z), x1)
    assert jnp.allclose(mirror(0.5, x0, x1, z), x1 + 0.5 * z)


class GaussianFields(eqx.Module):
    """The exact fields of N(0, I) -> N(m, c^2 I) with independent coupling, standing in
    for the network: x_t ~ N(beta m, v I), v = alpha^2 + beta^2 c^2 + gamma^2."""

    interpolant: si.AbstractInterpolant
    m: jax.Array
    c: float
    loss: str = eqx.field(static=True)
    latent: bool = eqx.field(static=True, default=True)
    num_classes: int = eqx.field(static=True, default=0)

    def moments(self, t):
        i = self.interpolant
        a, b, g = i.alpha(t), i.beta(t), i.gamma(t)
        v = a**2 + b**2 * self.c**2 + g**2
        v_dot = 2 * (a * i.alpha_dot(t) + b * i.beta_dot(t) * self.c**2)
        v_dot = v_dot + 2 * i.gamma.gamma_gamma_dot(t)
        return b * self.m, i.beta_dot(t) * self.m, v, v_dot

    def __call__(self, t, u, label=None):
        mean, mean_dot, v, v_dot = self.moments(t)
        b = mean_dot + v_dot / (2 * v) * (u - mean)
        if self.loss == "velocity":
            return b
        i = self.interpolant
        sigma2 = i.gamma(t) ** 2 + (i.alpha(t) ** 2 if self.latent else 0.0)
        if self.loss == "denoiser":
            return jnp.concatenate([b, sigma2 / v * (u - mean) / jnp.sqrt(sigma2)])
        return jnp.concatenate([b, -(u - mean) / v])


def exact_model(interpolant, m, c, loss="velocity", latent=True):
    model = si.InterpolantModel(
        interpolant,
        m.shape[0],
        key=jr.key(0),
        loss=loss,
        independent=latent,
        width=4,
        depth=1,
    )
    fields = GaussianFields(interpolant, m, c, loss, latent)
    return eqx.tree_at(lambda mo: mo.network, model, fields)


M = jnp.array([1.0, -2.0])
C = 0.5


@pytest.mark.parametrize(
    "interpolant", [INTERPOLANTS[1], INTERPOLANTS[3]], ids=["linear-sqrt", "encdec"]
)
def test_score_from_velocity(interpolant):
    # A velocity-only model with a Gaussian base gives the exact score.
    model = exact_model(interpolant, M, C)
    fields = model.network
    for t in (0.05, 0.3, 0.6, 0.95):
        u = jnp.array([0.3, -0.7])
        mean, _, v, _ = fields.moments(t)
        assert jnp.allclose(model.score(t, u), -(u - mean) / v, rtol=1e-4, atol=1e-5)


def test_score_needs_a_denoiser_without_gaussian_latent():
    model = exact_model(si.LinearInterpolant(si.SqrtGamma()), M, C, latent=False)
    assert not model.has_score()
    with pytest.raises(ValueError, match="denoiser"):
        model.score(0.5, jnp.zeros(2))


@pytest.mark.parametrize("loss", ["velocity", "denoiser", "score"])
def test_exact_fields_minimise_the_loss(loss, getkey):
    # The exact fields have a lower loss than perturbed ones (common random numbers).
    interpolant = si.LinearInterpolant(si.SqrtGamma(1.0))
    model = exact_model(interpolant, M, C, loss)
    batch = {"x": M[None] + C * jr.normal(getkey(), (4000, 2))}
    key = getkey()
    exact, _ = si.interpolant_loss(model, batch, key)
    for scale in (0.9, 1.1):
        worse = eqx.tree_at(lambda mo: mo.network.m, model, scale * M)
        assert si.interpolant_loss(worse, batch, key)[0] > exact


@pytest.mark.slow
def test_trained_velocity_is_close_to_the_exact_one(getkey):
    import optax

    from sdekit.train import fit

    interpolant = si.LinearInterpolant()
    data = {"x": np.asarray(M[None] + C * jr.normal(getkey(), (4096, 2)))}
    model = si.InterpolantModel(interpolant, 2, key=getkey(), width=64, depth=2)
    assert float(model.scale) == 1.0 and not jnp.any(model.shift)
    # 188 epochs of 16 steps (4096 points in batches of 256), an epoch per call. At
    # half as many steps the error was 0.10-0.12 of the velocity's scale for four
    # seeds, at this bound; here 0.04-0.06.
    trained = fit(
        model,
        si.interpolant_loss,
        data,
        key=getkey(),
        optimizer=optax.adam(optax.cosine_decay_schedule(3e-3, 188 * 16, 0.05)),
        epochs=188,
        batch_size=256,
        steps_per_call=16,
        progress=False,
    ).model
    exact = exact_model(interpolant, M, C)
    u = jr.normal(getkey(), (512, 2))
    errors, scales = [], []
    for t in (0.2, 0.5, 0.8):
        # Points from rho_t; the model has shift 0 and scale 1 (model = data coordinates).
        mean, _, v, _ = exact.network.moments(t)
        x_t = mean[None] + jnp.sqrt(v) * u
        b = jax.vmap(lambda x: trained.velocity(t, x))(x_t)
        truth = jax.vmap(lambda x: exact.velocity(t, x))(x_t)
        errors.append(float(jnp.sqrt(jnp.mean((b - truth) ** 2))))
        scales.append(float(jnp.sqrt(jnp.mean(truth**2))))
    assert max(e / s for e, s in zip(errors, scales)) < 0.1, (errors, scales)


def test_hutchinson_divergence_is_unbiased_and_shrinks(getkey):
    w = jr.normal(getkey(), (5, 5))
    f = lambda u: jnp.tanh(w @ u) + u**2  # noqa: E731
    u = jr.normal(getkey(), (5,))
    exact = si.exact_divergence(f, u)
    assert jnp.allclose(exact, jnp.trace(jax.jacfwd(f)(u)), rtol=1e-5)
    spreads = []
    for k in (1, 16):
        probes = jr.rademacher(getkey(), (2000, k, 5), dtype=u.dtype)
        estimates = jax.jit(jax.vmap(lambda p: si.hutchinson_divergence(f, u, p)))(
            probes
        )
        sd = float(jnp.std(estimates))
        assert abs(float(jnp.mean(estimates)) - float(exact)) < mean_tolerance(sd, 2000)
        spreads.append(sd)
    # The variance of a mean of k probes is 1/k times one probe's.
    assert spreads[1] == pytest.approx(spreads[0] / 4, rel=0.2)


@pytest.mark.parametrize(
    "interpolant",
    [si.LinearInterpolant(), si.TrigonometricInterpolant(si.SqrtGamma(0.5))],
    ids=["linear", "trig-sqrt"],
)
def test_likelihood_of_the_exact_velocity_is_the_true_density(interpolant, getkey, x64):
    m = jnp.array([1.0, -2.0])
    model = exact_model(interpolant, m, C)
    x = m[None] + C * jr.normal(getkey(), (64, 2))
    logp = si.log_likelihood(model, x, rtol=1e-8, atol=1e-8)
    truth = scipy.stats.multivariate_normal(np.asarray(m), C**2).logpdf(np.asarray(x))
    assert np.allclose(np.asarray(logp), truth, atol=1e-5)
    hutch = si.log_likelihood(model, x, hutchinson=True, probes=1, key=getkey())
    # The exact fields' Jacobian is a multiple of the identity: Rademacher probes
    # then estimate the trace exactly.
    assert np.allclose(np.asarray(hutch), truth, atol=1e-4)


@pytest.mark.slow
def test_likelihood_is_differentiable(getkey, x64):
    model = si.InterpolantModel(
        si.LinearInterpolant(), 2, key=getkey(), width=8, depth=1
    )
    x = jr.normal(getkey(), (3, 2))

    def total(m, x):
        return jnp.sum(si.log_likelihood(m, x, rtol=1e-9, atol=1e-9))

    grad_x = jax.grad(total, argnums=1)(model, x)
    h = 1e-5
    for i, j in [(0, 0), (2, 1)]:
        e = jnp.zeros_like(x).at[i, j].set(h)
        fd = (total(model, x + e) - total(model, x - e)) / (2 * h)
        assert float(grad_x[i, j]) == pytest.approx(float(fd), rel=1e-4, abs=1e-6)
    grads = eqx.filter_grad(total)(model, x)
    weight = grads.network.mlp.layers[0].weight
    e = jnp.zeros_like(weight).at[0, 0].set(h)
    plus = eqx.tree_at(
        lambda m: m.network.mlp.layers[0].weight,
        model,
        model.network.mlp.layers[0].weight + e,
    )
    minus = eqx.tree_at(
        lambda m: m.network.mlp.layers[0].weight,
        model,
        model.network.mlp.layers[0].weight - e,
    )
    fd = (total(plus, x) - total(minus, x)) / (2 * h)
    assert float(weight[0, 0]) == pytest.approx(float(fd), rel=1e-4, abs=1e-6)


def _check_gaussian_sample(x, m, c):
    n = x.shape[0]
    for j in range(x.shape[1]):
        assert abs(float(x[:, j].mean()) - float(m[j])) < mean_tolerance(c, n)
        assert abs(float(x[:, j].var()) - c**2) < variance_tolerance(c**2, n)
        # Two-sample test against an independent reference sample.
        ref = np.random.default_rng(j).normal(float(m[j]), c, n)
        assert scipy.stats.ks_2samp(np.asarray(x[:, j]), ref).pvalue > 1e-4


@pytest.mark.parametrize(
    "interpolant,loss,latent,sde",
    [
        (si.LinearInterpolant(), "velocity", True, False),
        (si.LinearInterpolant(), "velocity", True, True),
        (si.LinearInterpolant(si.SqrtGamma()), "denoiser", False, True),
        (si.EncoderDecoderInterpolant(), "score", True, True),
    ],
    ids=["ode", "sde-from-velocity", "sde-denoiser", "sde-encdec-score"],
)
def test_samplers_reproduce_the_target(interpolant, loss, latent, sde, getkey):
    model = exact_model(interpolant, M, C, loss, latent)
    n = 3000
    if sde:
        x = si.solve_sde(
            model, jr.normal(getkey(), (n, 2)), getkey(), eps=1.0, steps=200
        )
    else:
        x = si.probability_flow(model, jr.normal(getkey(), (n, 2)))
    _check_gaussian_sample(x, M, C)


def test_mirror_sampler_started_at_data_keeps_their_law(getkey):
    # N(M, C^2) -> itself through noise: the SDE from data points returns the data's law,
    # with new points (their correlation with the start is far from 1; 0.69 measured at
    # eps = 1 and n = 3000, standard error about 0.01). The ODE maps the Gaussian to
    # itself point by point, as its flow must.
    model = exact_model(si.MirrorInterpolant(), M, C, "denoiser", latent=False)
    n = 3000
    start = M[None] + C * jr.normal(getkey(), (n, 2))
    x = si.sample(model, getkey(), n, sde=True, eps=1.0, steps=200, start=start)
    _check_gaussian_sample(x, M, C)
    assert np.corrcoef(start[:, 0], x[:, 0])[0, 1] < 0.8
    same = si.sample(model, getkey(), n, start=start)
    np.testing.assert_allclose(same, start, atol=2e-2)
    with pytest.raises(ValueError, match="shape"):
        si.sample(model, getkey(), n, start=start[:10])


def test_backward_sde_reaches_the_base(getkey):
    model = exact_model(si.LinearInterpolant(), M, C)
    x1 = M[None] + C * jr.normal(getkey(), (3000, 2))
    u0 = si.solve_sde(model, x1, getkey(), direction="backward", steps=200)
    _check_gaussian_sample(u0, jnp.zeros(2), 1.0)


def test_guidance_and_labels_are_checked(getkey):
    model = exact_model(si.LinearInterpolant(), M, C)
    with pytest.raises(ValueError, match="without labels"):
        si.probability_flow(model, jnp.zeros((2, 2)), labels=1)
    with pytest.raises(ValueError, match="shape"):
        si.probability_flow(model, jnp.zeros((2, 3)))
    with pytest.raises(ValueError, match="shape"):
        si.log_likelihood(model, jnp.zeros(2))


def test_ot_coupling_is_a_permutation_and_lowers_the_cost(getkey):
    x0 = jr.normal(getkey(), (128, 2))
    x1 = 3 + 0.5 * jr.normal(getkey(), (128, 2))
    key = getkey()
    exact = np.asarray(jax.jit(si.OTCoupling("exact").pairing)(x0, x1, key))
    assert sorted(exact.tolist()) == list(range(128))
    base = float(si.transport_cost(x0, x1))
    best = float(si.transport_cost(x0, x1, exact))
    assert best < base
    # Optimal: no swap of two pairs lowers the cost.
    pairs = np.asarray(x0)[exact]
    x1n = np.asarray(x1)
    cost = ((pairs[:, None] - x1n[None]) ** 2).sum(-1)
    diag = np.diag(cost)
    swap = diag[:, None] + diag[None, :] - cost - cost.T
    assert swap.max() < 1e-4
    hungarian = jax.jit(si.OTCoupling("hungarian").pairing)(x0[:32], x1[:32], key)
    exact32 = si.OTCoupling("exact").pairing(x0[:32], x1[:32], key)
    assert float(si.transport_cost(x0[:32], x1[:32], hungarian)) == pytest.approx(
        float(si.transport_cost(x0[:32], x1[:32], exact32)), rel=1e-5
    )
    sinkhorn = si.OTCoupling("sinkhorn").pairing(x0, x1, key)
    assert float(si.transport_cost(x0, x1, sinkhorn)) < base - 0.5 * (base - best)


def test_exact_ot_under_vmap_solves_each_problem(getkey):
    # Under vmap the problems reach the host together (solved on a thread pool);
    # each answer must be that problem's own optimal assignment.
    x0 = jr.normal(getkey(), (5, 64, 3))
    x1 = 2 + jr.normal(getkey(), (5, 64, 3))
    pairing = si.OTCoupling("exact").pairing
    batched = jax.jit(jax.vmap(pairing, in_axes=(0, 0, None)))(x0, x1, getkey())
    for i in range(5):
        alone = pairing(x0[i], x1[i], getkey())
        assert float(si.transport_cost(x0[i], x1[i], batched[i])) == pytest.approx(
            float(si.transport_cost(x0[i], x1[i], alone)), rel=1e-6
        )
        assert sorted(np.asarray(batched[i]).tolist()) == list(range(64))
    # One base sample shared by every problem (an unbatched argument).
    shared = jax.vmap(pairing, in_axes=(None, 0, None))(x0[0], x1, getkey())
    for i in range(5):
        alone = pairing(x0[0], x1[i], getkey())
        np.testing.assert_array_equal(shared[i], alone)


def test_paired_minibatch_is_what_the_loss_would_draw(getkey):
    model = si.InterpolantModel(
        si.LinearInterpolant(), 2, key=getkey(), independent=False, width=16, depth=1
    )
    x = 3 + jr.normal(getkey(), (64, 2))
    key = getkey()
    coupling = si.OTCoupling()
    paired = si.pair_minibatch(model, {"x": x}, key, coupling=coupling)
    assert paired["x0"].shape == x.shape
    # A permutation of the base draw that lowers the transport cost.
    draw = model.sample_base(jr.split(key)[0], 64)
    np.testing.assert_allclose(
        np.sort(np.asarray(paired["x0"]), axis=0), np.sort(np.asarray(draw), axis=0)
    )
    u = model.normalise(x)
    assert float(si.transport_cost(paired["x0"], u)) < float(si.transport_cost(draw, u))
    # Given "x0", the loss uses it: the same loss as drawing and pairing inside.
    inside = si.interpolant_loss(model, {"x": x}, key, coupling=coupling)[0]
    given = si.interpolant_loss(
        model,
        si.pair_minibatch(model, {"x": x}, jr.split(key, 4)[0], coupling=coupling),
        key,
        coupling=coupling,
    )[0]
    assert float(given) == pytest.approx(float(inside), rel=1e-6)
    # ... and not a draw of its own: other base samples give another loss.
    other = si.interpolant_loss(model, {"x": x, "x0": draw}, key, coupling=coupling)[0]
    assert abs(float(other) - float(inside)) > 1e-3


def test_sinkhorn_plan_marginals(getkey):
    x0, x1 = jr.normal(getkey(), (30, 2)), jr.normal(getkey(), (30, 2))
    cost = jnp.sum((x0[:, None] - x1[None]) ** 2, -1)
    plan = jax.jit(si.sinkhorn_plan, static_argnums=(1, 2))(cost, 0.1, 100)
    assert jnp.allclose(plan.sum(0), 1 / 30, atol=1e-6)
    assert jnp.allclose(plan.sum(1), 1 / 30, atol=1e-4)


def test_bad_inputs():
    with pytest.raises(ValueError, match="interpolant"):
        si.make_interpolant("straight")
    with pytest.raises(ValueError, match="gamma"):
        si.make_interpolant("linear", "cubic")
    with pytest.raises(ValueError, match="one-sided"):
        si.make_interpolant("vp", "sqrt")
    with pytest.raises(ValueError, match="OT method"):
        si.OTCoupling("auction")
    with pytest.raises(ValueError, match="loss"):
        si.InterpolantModel(si.LinearInterpolant(), 2, key=jr.key(0), loss="mse")
    with pytest.raises(ValueError, match="dimension"):
        si.InterpolantModel(
            si.LinearInterpolant(), 2, key=jr.key(0), base=StandardGaussian(3)
        )
    model = exact_model(si.LinearInterpolant(), M, C)
    with pytest.raises(ValueError, match="eps"):
        si.solve_sde(model, jnp.zeros((2, 2)), jr.key(0), eps=-1.0)
    with pytest.raises(ValueError, match="positive"):
        si.sample(model, jr.key(0), 0)
