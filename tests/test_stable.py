"""sdekit.stable: the models' structure, GSDE positivity, the tasks as objects (one
masked MSE, predictions back in the data's units), the equinox pattern, small-data
refusals and warnings, a small fit, the checkpoint round trip and predict_job."""

import warnings

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

import sdekit.stable as st
from sdekit.data import drop_observations, TimeSeriesDataset


def _dynamics(cls, getkey, bounded=False, hidden=8):
    return cls(3, hidden, 16, 2, bounded, key=getkey())


def _set_last_layer(mlp, weight, bias):
    last = mlp.layers[-1]
    mlp = eqx.tree_at(
        lambda m: m.layers[-1].weight, mlp, jnp.full_like(last.weight, weight)
    )
    return eqx.tree_at(lambda m: m.layers[-1].bias, mlp, jnp.full_like(last.bias, bias))


@pytest.mark.parametrize("bounded", [False, True])
def test_lnsde_diffusion_is_linear_in_the_state(getkey, bounded):
    model = _dynamics(st.LNSDE, getkey, bounded)
    z1, z2 = jr.normal(getkey(), (2, 5, 8))
    a, b = 1.7, -0.4
    for t in (0.0, 0.3, 7.5):
        lhs = model.diffusion(t, a * z1 + b * z2)
        rhs = a * model.diffusion(t, z1) + b * model.diffusion(t, z2)
        assert np.allclose(lhs, rhs, atol=1e-5)
        # Linear, not affine: zero state, zero noise.
        assert np.allclose(model.diffusion(t, jnp.zeros_like(z1)), 0.0)
    assert not model.additive


def test_lsde_diffusion_ignores_the_state(getkey):
    model = _dynamics(st.LSDE, getkey)
    z1, z2 = jr.normal(getkey(), (2, 5, 8)) * jnp.array([1.0, 100.0])[:, None, None]
    assert np.array_equal(model.diffusion(1.3, z1), model.diffusion(1.3, z2))
    assert not np.allclose(model.diffusion(1.3, z1), model.diffusion(2.9, z1))
    assert model.additive


def test_naive_neural_sde_diffusion_depends_on_the_state(getkey):
    model = _dynamics(st.NeuralSDE, getkey)
    z1, z2 = jr.normal(getkey(), (2, 5, 8))
    assert not np.allclose(model.diffusion(0.5, z1), model.diffusion(0.5, z2))


def _model(name, getkey, horizon=10.0, steps=20, save_times=None, hidden=8, channels=1):
    return st.LatentModel(
        name,
        channels,
        2,
        hidden,
        1,
        [horizon] if save_times is None else save_times,
        horizon,
        steps,
        key=getkey(),
    )


def _inputs(batch, length=6, channels=1, horizon=10.0, seed=0):
    rng = np.random.default_rng(seed)
    values = rng.normal(size=(batch, length, channels)).astype(np.float32)
    values[rng.random(values.shape) < 0.3] = np.nan
    knots = np.broadcast_to(
        np.linspace(0, horizon, length, dtype=np.float32), (batch, length)
    )
    return jnp.asarray(knots), jnp.asarray(values)


@pytest.mark.parametrize(
    "bounded, horizon, steps, bias, sigma",
    [(False, 20.0, 10, 1.0, 1.0), (True, 100.0, 10, 3.0, 0.97)],
)
def test_gsde_stays_positive_over_long_horizons(
    getkey, bounded, horizon, steps, bias, sigma
):
    # Steps of 2 and 10 time units with a diffusion near 1. (The paper form's drift
    # network is unbounded, so over very long horizons its ODE part itself may
    # explode; the bounded form's cannot.)
    save = np.linspace(horizon / 10, horizon, 10)
    model = st.LatentModel(
        "gsde", 1, 2, 8, 1, save, horizon, steps, bounded, key=getkey()
    )
    net = _set_last_layer(model.dynamics.sigma.net, 0.0, bias)
    model = eqx.tree_at(lambda m: m.dynamics.sigma.net, model, net)
    assert np.isclose(model.dynamics.sigma(0.3)[0], sigma, atol=0.01)
    knots, values = _inputs(64, horizon=horizon)
    z = np.asarray(model.latents(knots, values, getkey()))
    assert z.shape == (64, 10, 8)
    assert np.all(z > 0) and np.all(np.isfinite(z))
    # The same noise with Euler-Maruyama on z itself, z_{k+1} = z_k (1 + sigma dW),
    # turns negative.
    dt = horizon / steps
    dw = np.sqrt(dt) * np.asarray(jr.normal(getkey(), (64 * 8, steps)))
    assert np.any(np.cumprod(1.0 + sigma * dw, axis=1) < 0)


def test_gsde_ito_correction_keeps_the_mean(getkey):
    # With gamma = 0, dz = sigma z dW is a martingale: E z(T) = z(0). Integrating log z
    # without the -sigma^2/2 correction would give E z(T) = z(0) exp(sigma^2 T / 2).
    sigma, horizon = 0.5, 4.0
    model = _model("gsde", getkey, horizon, 40)
    dyn = model.dynamics
    dyn = eqx.tree_at(lambda d: d.gamma, dyn, _set_last_layer(dyn.gamma, 0.0, 0.0))
    dyn = eqx.tree_at(
        lambda d: d.sigma.net, dyn, _set_last_layer(dyn.sigma.net, 0.0, sigma)
    )
    model = eqx.tree_at(lambda m: m.dynamics, model, dyn)
    knots, values = _inputs(2000, horizon=horizon)
    values = jnp.zeros_like(values)
    z0 = jnp.exp(dyn.initial(jnp.zeros((1, 2))))[0]
    zt = model.latents(knots, values, getkey())[:, -1]
    ratio = np.asarray(zt) / np.asarray(z0)[None, :]
    # 16000 lognormal samples with log-variance sigma^2 T = 1: standard error ~ 0.01.
    assert abs(ratio.mean() - 1.0) < 0.05
    assert abs(np.log(ratio).mean() + 0.5 * sigma**2 * horizon) < 0.05


@pytest.mark.parametrize("name", list(st.MODELS))
def test_every_model_runs_jits_and_differentiates(getkey, name):
    model = _model(name, getkey, steps=8, channels=2)
    knots, values = _inputs(4, channels=2)
    loss_fn = st.make_loss("classification", augment=0.2)
    batch = {"knots": knots, "values": values, "label": jnp.array([0, 1, 0, 1])}

    @eqx.filter_jit
    def run(model, key1, key2):
        (loss, aux), grads = eqx.filter_value_and_grad(loss_fn, has_aux=True)(
            model, batch, key1
        )
        return loss, aux, grads, model(knots, values, key1), model(knots, values, key2)

    loss, aux, grads, out1, out2 = run(model, getkey(), getkey())
    assert out1.shape == (4, 1, 2)
    assert np.isfinite(loss) and 0 <= aux["accuracy"] <= 1
    leaves = jax.tree_util.tree_leaves(eqx.filter(grads, eqx.is_inexact_array))
    assert all(np.all(np.isfinite(np.asarray(g))) for g in leaves)
    assert any(np.any(np.asarray(g) != 0) for g in leaves)
    # Deterministic models ignore the key; stochastic ones do not.
    assert np.allclose(out1, out2) == (not model.dynamics.stochastic)


def test_unknown_model_and_task(getkey):
    with pytest.raises(ValueError, match="Unknown model 'lstm'"):
        _model("lstm", getkey)
    with pytest.raises(ValueError, match="Unknown task"):
        st.make_loss("segmentation")


# ---------------------------------------------------------------- tasks


def _waves(n=40, length=30, seed=0):
    rng = np.random.default_rng(seed)
    t = np.linspace(0, 1, length)
    phase = rng.uniform(0, 2 * np.pi, (n, 1))
    values = np.sin(4 * np.pi * t + phase)[..., None] + 0.05 * rng.normal(
        size=(n, length, 1)
    )
    return TimeSeriesDataset(values, t, name="waves")


def test_interpolation_holds_out_observed_points():
    train, test = _waves(), _waves(seed=1)
    data = st.prepare_data(
        train, test, task=st.Interpolation(holdout=0.3), missing=0.3, seed=0
    )
    for split in (data.train, data.valid, data.test):
        inputs, mask = ~np.isnan(split["values"]), split["target_mask"] > 0
        assert not np.any(inputs & mask)  # a held-out point is never an input
        assert 0.2 < mask.sum() / (mask.sum() + inputs.sum()) < 0.35
    assert np.allclose(data.save_times, data.train["knots"][0])


def test_forecasting_targets_follow_the_window():
    data = st.prepare_data(
        _waves(),
        _waves(seed=1),
        task=st.Forecasting(input_fraction=0.6),
        missing=0.0,
        seed=0,
    )
    length = data.train["knots"].shape[1]
    assert length == 18 and len(data.save_times) == 30
    mask = data.test["target_mask"]
    assert not mask[:, :length].any() and mask[:, length:].all()


@pytest.mark.parametrize(
    "task", [st.Interpolation(), st.Forecasting(input_fraction=0.6)]
)
def test_skip_starts_from_the_naive_prediction(getkey, task):
    # With the head zeroed, a skip model predicts linear interpolation of its inputs at
    # the held-out times, and the last input beyond a forecasting window.
    data = st.prepare_data(_waves(), _waves(seed=1), task=task, missing=0.3, seed=0)
    split = data.test
    model = st.LatentModel(
        "lnsde", 1, 1, 8, 1, data.save_times, 10.0, 32, skip=True, key=getkey()
    )
    model = eqx.tree_at(
        lambda m: (m.head.weight, m.head.bias),
        model,
        (jnp.zeros_like(model.head.weight), jnp.zeros_like(model.head.bias)),
    )
    knots, values = jnp.asarray(split["knots"]), jnp.asarray(split["values"])
    out = np.asarray(model(knots, values, getkey()))[..., 0]
    k, v = np.asarray(split["knots"][0]), np.asarray(split["values"])[..., 0]
    expected = np.stack(
        [np.interp(data.save_times, k[~np.isnan(r)], r[~np.isnan(r)]) for r in v]
    )
    np.testing.assert_allclose(out, expected, atol=1e-5)
    np.testing.assert_allclose(out, np.asarray(model.baseline(knots, values))[..., 0])
    with pytest.raises(ValueError, match="output_size == input_channels"):
        st.LatentModel("lnsde", 1, 3, 8, 1, (10.0,), 10.0, 32, skip=True, key=getkey())


# ---------------------------------------------------------------- a small fit


def toy_classification_file(path, n=120, length=24, seed=0):
    """Two classes by the sign of a trend, with noise and a distractor channel."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 2
    t = np.linspace(0, 1, length)
    trend = (2 * labels - 1)[:, None] * 1.5 * t[None]
    values = np.stack(
        [trend + 0.4 * rng.normal(size=(n, length)), rng.normal(size=(n, length))], -1
    )
    split = np.where(np.arange(n) < 80, "train", "test")
    np.savez(
        path,
        values=values,
        labels=np.array(["down", "up"])[labels],
        split=split,
        times=t,
    )
    return str(path)


SMALL = dict(
    epochs=30, patience=None, hidden=16, depth=1, steps=12, lr=1e-2, eval_samples=1
)


@pytest.fixture(scope="module")
def small_fit(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fit")
    config = st.FitConfig(
        model="lnsde",
        dataset=None,
        data=toy_classification_file(tmp / "toy.npz"),
        missing=0.5,
        **SMALL,
    )
    return config, st.fit_job(config, tmp / "run", progress=False)


def test_small_fit_learns_a_separable_problem(small_fit):
    _, report = small_fit
    assert report["task"] == "classification" and report["epochs"] == 30
    # Chance is 0.5; the trend survives 50% missingness.
    assert report["test_accuracy"] >= 0.85
    assert report["valid"]["accuracy"] >= 0.7


def test_checkpoint_round_trip_reproduces_the_metrics(small_fit):
    config, report = small_fit
    again = st.evaluate_job(report["checkpoint"])
    assert again["test_accuracy"] == report["test_accuracy"]
    assert again["test_loss"] == report["test_loss"]
    # A freshly initialised model does not reproduce them (the weights were loaded).
    data = st.load_job_data(config)
    fresh = st.build_model(config, data)
    fresh_acc = st.metrics(fresh, data.test, jr.key(0), "classification")["accuracy"]
    assert fresh_acc < report["test_accuracy"]


def test_evaluate_rejects_a_non_checkpoint(tmp_path):
    with pytest.raises(ValueError, match="not an sdekit checkpoint"):
        st.evaluate_job(tmp_path)


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(model="rnn"), "Unknown model"),
        (dict(missing=1.0), r"\[0, 1\)"),
        (dict(missing=-0.2), r"\[0, 1\)"),
        (dict(task="clustering"), "Unknown task"),
        (dict(hidden=0), "hidden"),
        (dict(lr=-1.0), "lr"),
        (dict(dataset=None), "exactly one"),
    ],
)
def test_bad_configs(change, message):
    with pytest.raises(ValueError, match=message):
        st.FitConfig(**change).checked()


def toy_regression_file(path, n=120, length=24, seed=0):
    """The target is the slope of a noisy line."""
    rng = np.random.default_rng(seed)
    slope = rng.uniform(-1.0, 1.0, n)
    t = np.linspace(0, 1, length)
    values = 3.0 + slope[:, None] * 2.0 * t + 0.2 * rng.normal(size=(n, length))
    split = np.where(np.arange(n) < 80, "train", "test")
    np.savez(path, values=values, labels=slope, split=split, times=t)
    return str(path), slope[80:]


def test_small_regression_fit_beats_the_training_mean(tmp_path):
    path, test_slope = toy_regression_file(tmp_path / "toy.npz")
    config = st.FitConfig(model="lsde", dataset=None, data=path, missing=0.3, **SMALL)
    report = st.fit_job(config, tmp_path / "run", progress=False)
    assert report["task"] == "regression"
    # naive_mse is the training mean's test MSE on the standardised targets.
    normaliser = st.load_job_data(config).normaliser
    scaled = (test_slope - normaliser.target_mean) / normaliser.target_scale
    assert report["naive_mse"] == pytest.approx(np.mean(scaled**2), rel=1e-5)
    assert report["naive_mse"] > 0.5
    # The slope is readable through 30% missingness: well below the mean's error.
    assert report["test_mse"] < 0.3 * report["naive_mse"]
    # `sdekit predict` on the test series, masked as in the run, gives targets in the
    # data's units whose standardised error is the test MSE.
    raw = np.load(path)
    rows = raw["split"] == "test"
    test = TimeSeriesDataset(raw["values"][rows][..., None], raw["times"])
    masked = drop_observations(test, 0.3, seed=0, stream=1)
    np.save(tmp_path / "new.npy", masked.values)
    answer = st.predict_job(
        report["checkpoint"], tmp_path / "new.npy", tmp_path / "slopes.npy"
    )
    slopes = np.load(tmp_path / "slopes.npy")
    assert slopes.shape == (40,) and answer["shape"] == [40]
    assert answer["task"] == "regression" and "predicted" not in answer
    standardised = (slopes - normaliser.target_mean) / normaliser.target_scale
    assert np.mean((standardised - scaled) ** 2) == pytest.approx(
        report["test_mse"], rel=1e-4
    )


# ---------------------------------------------------------------- the equinox pattern


def _stable_modules():
    import inspect

    classes = {
        cls
        for module in (st._dynamics, st._model, st._task)
        for _, cls in inspect.getmembers(module, inspect.isclass)
        if issubclass(cls, eqx.Module) and cls.__module__.startswith("sdekit.stable")
    }
    return sorted(classes, key=lambda c: c.__name__)


def _is_abstract_method(cls, name):
    return getattr(getattr(cls, name, None), "__isabstractmethod__", False)


def test_classes_are_abstract_or_final_and_override_nothing_concrete():
    classes = _stable_modules()
    assert {"LSDE", "GSDE", "Classification", "Forecasting"} <= {
        c.__name__ for c in classes
    }
    for cls in classes:
        subclasses = [c for c in classes if c is not cls and issubclass(c, cls)]
        if cls.__name__.startswith("Abstract"):
            assert subclasses, f"{cls.__name__} is abstract but has no subclass"
        else:
            # Final: nothing in the family subclasses it, and it can be instantiated
            # (no abstract method or class variable left).
            assert not subclasses, f"{cls.__name__} is subclassed but not abstract"
            assert not getattr(cls, "__abstractmethods__", ()), cls.__name__
            assert not getattr(cls, "__abstractclassvars__", ()), cls.__name__
            assert not getattr(cls, "__abstractvars__", ()), cls.__name__
        for base in cls.__mro__[1:]:
            if not base.__module__.startswith("sdekit.stable"):
                continue
            for name, value in vars(cls).items():
                if callable(value) and name in vars(base) and name != "__init__":
                    assert _is_abstract_method(base, name), (
                        f"{cls.__name__}.{name} overrides a concrete method of "
                        f"{base.__name__}"
                    )


# ---------------------------------------------------------------- tasks as objects


def test_masked_mse_one_formula_for_numpy_jax_loss_and_metric():
    rng = np.random.default_rng(3)
    pred, targets = rng.normal(size=(2, 7, 5, 2)).astype(np.float32)
    mask = (rng.random((7, 5, 2)) < 0.4).astype(np.float32)
    expected = np.sum(mask * (pred - targets) ** 2, dtype=np.float64) / mask.sum()
    assert float(st.masked_mse(pred, targets, mask)) == pytest.approx(expected, 1e-6)
    assert float(
        st.masked_mse(jnp.asarray(pred), jnp.asarray(targets), jnp.asarray(mask))
    ) == pytest.approx(expected, 1e-6)
    assert float(st.masked_mse(pred, targets, 0 * mask)) == 0.0
    # The training loss and the reported metric are the same number.
    batch = {"targets": targets, "target_mask": mask}
    for task in (st.Interpolation(), st.Forecasting()):
        loss, aux = task.loss(jnp.asarray(pred), batch)
        assert float(loss) == pytest.approx(expected, 1e-6)
        assert task.metrics(pred, batch)["mse"] == pytest.approx(expected, 1e-6)


def test_tasks_by_name_and_their_bad_settings():
    assert [st.as_task(name).name for name in st.TASKS] == list(st.TASKS)
    task = st.Forecasting(input_fraction=0.6)
    assert st.as_task(task) is task
    with pytest.raises(ValueError, match="Unknown task 'ranking'"):
        st.as_task("ranking")
    with pytest.raises(ValueError, match="holdout"):
        st.Interpolation(holdout=1.0)
    with pytest.raises(ValueError, match="input_fraction"):
        st.Forecasting(input_fraction=0.0)


@pytest.mark.parametrize("task", [st.Interpolation(), st.Forecasting()])
def test_predictions_map_back_to_the_data_units(task):
    # Feed the model inputs back as "predictions": mapped back to the user's units they
    # must be the raw observations (centring and normalisation undone exactly).
    data = st.prepare_data(_waves(), _waves(seed=1), task=task, missing=0.3, seed=0)
    raw = 5.0 + 3.0 * _waves(n=6, seed=2).values
    normalised = data.normaliser.apply(TimeSeriesDataset(raw, data.times)).values
    inputs, offset = task.inputs(normalised, data.knots)
    length = inputs["knots"].shape[1]
    assert np.allclose(inputs["knots"][0], data.knots[:length])
    back = task.to_user_units(inputs["values"], data.normaliser, offset)
    np.testing.assert_allclose(back, raw[:, :length], rtol=1e-5)
    # The inputs are centred: each series' observed mean is 0 per channel.
    assert np.allclose(np.nanmean(inputs["values"], axis=1), 0.0, atol=1e-5)


def test_regression_predictions_map_back_to_the_targets():
    train = _waves().replace(labels=np.linspace(2.0, 8.0, 40))
    data = st.prepare_data(train, train, task="regression", missing=0.0, seed=0)
    standardised = np.asarray(data.test["target"])
    back = data.task.to_user_units(standardised, data.normaliser, None)
    np.testing.assert_allclose(back, train.labels, rtol=1e-5)


# ---------------------------------------------------------------- small data


def _labelled(n, classes=2):
    data = _waves(n=n)
    return data.replace(
        labels=np.arange(n) % classes, classes=tuple("abcdefg"[:classes])
    )


def test_too_small_training_sets_are_refused_before_any_work():
    with pytest.raises(ValueError, match="has 2 training series; at least 3"):
        st.prepare_data(_waves(n=2), _waves(), task="forecasting", missing=0, seed=0)
    one_class = _labelled(12).replace(labels=np.zeros(12, int))
    with pytest.raises(ValueError, match="at least 2 classes"):
        st.prepare_data(
            one_class, _labelled(12), task="classification", missing=0, seed=0
        )


def test_small_training_sets_warn_naming_the_number():
    with pytest.warns(st.SmallDataWarning, match="only 5 training series") as caught:
        data = st.prepare_data(
            _waves(n=5), _waves(), task="interpolation", missing=0, seed=0
        )
    assert len(caught) == 1 and data.warnings == (str(caught[0].message),)
    # Fewer than 2 series of a class (here 'c' has 1 of 13), and a small test split.
    train = _labelled(13, classes=3).replace(labels=np.r_[np.arange(12) % 2, 2])
    with pytest.warns(st.SmallDataWarning) as caught:
        data = st.prepare_data(
            train, _labelled(6), task="classification", missing=0, seed=0
        )
    messages = [str(w.message) for w in caught]
    assert any("class 'c': 1" in m for m in messages), messages
    assert any("only 6 test series" in m for m in messages), messages
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # 40 and 40 series: nothing to say
        assert st.prepare_data(
            _labelled(40), _labelled(40), task="classification", missing=0, seed=0
        ).warnings == ()
