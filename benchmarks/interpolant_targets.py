"""The stochastic-interpolant accuracy targets (issue 12), one study per subcommand;
each prints its figures and one JSON object on the last line.

    python benchmarks/interpolant_targets.py density [--dataset gaussian-mixture] [--seed 0]
    python benchmarks/interpolant_targets.py checkerboard [--steps 20000] [--plot FILE]
    python benchmarks/interpolant_targets.py fewstep [--steps 10000]
    python benchmarks/interpolant_targets.py digits [--steps 20000]

- density: `sdekit fit --model interpolant` with default settings on a 2-D density
  with known log-density; the held-out mean log-likelihood against the truth.
- checkerboard: one model trained with a denoiser (linear interpolant,
  gamma = sqrt(t(1-t))); samples by the ODE and by the SDE at several eps, scored by
  the energy distance and a kernel two-sample statistic against held-out data, and
  the |log rho - log rho_hat| map of the paper's figure.
- fewstep: 8 Gaussians -> moons with independent and OT coupling; W2 of one Euler
  step and of adaptive samples against held-out data (exact W2 by assignment).
- digits: scikit-learn's 8x8 digits; the Frechet distance of samples in the features
  of a classifier trained on the training split, against the real test digits, with a
  Gaussian fitted to the training digits as the baseline.
"""

import argparse
import json
import os
import sys
import tempfile
import time

import equinox as eqx
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax
import scipy.linalg
import scipy.optimize

import sdekit.interpolants as si
from sdekit.data import Checkerboard, eight_gaussians, load_digits, Moons


def _train(model, data, *, coupling, steps, batch_size, lr, key, steps_per_call=500):
    """Train `model` on `data` (dict) by `sdekit.train.fit`, `steps_per_call` steps per
    compiled call, for `steps` steps rounded up to whole epochs; returns the model."""
    from sdekit.train import fit

    def loss_fn(m, batch, k):
        return si.interpolant_loss(m, batch, k, coupling=coupling)

    steps_per_epoch = max(1, len(data["x"]) // batch_size)
    epochs = -(-steps // steps_per_epoch)
    result = fit(
        model,
        loss_fn,
        data,
        key=key,
        optimizer=optax.adam(
            optax.cosine_decay_schedule(lr, epochs * steps_per_epoch, 0.01)
        ),
        epochs=epochs,
        batch_size=batch_size,
        steps_per_call=steps_per_call,
        progress=False,
    )
    return result.model


def density(args):
    from sdekit.interpolants import fit_job, FitConfig

    config = FitConfig(dataset=args.dataset, seed=args.seed, **_overrides(args))
    with tempfile.TemporaryDirectory() as out:
        report = fit_job(config, os.path.join(out, "run"), progress=False)
    report.pop("checkpoint")
    return report


def _overrides(args):
    return {k: v for k, v in (("steps", args.steps),) if v is not None}


def _energy_distance(x, y, n=3000):
    x, y = np.asarray(x[:n], np.float64), np.asarray(y[:n], np.float64)

    def mean_dist(a, b):
        return np.mean(np.sqrt(((a[:, None] - b[None]) ** 2).sum(-1)))

    return 2 * mean_dist(x, y) - mean_dist(x, x) - mean_dist(y, y)


def checkerboard(args):
    key = jr.key(args.seed)
    target = Checkerboard()
    k_data, k_test, k_model, k_train, k_ode, k_sde, k_eval = jr.split(key, 7)
    train = {"x": target.sample(k_data, 50000)}
    test = np.asarray(target.sample(k_test, 4000))
    shift, scale = si.data_scaling(train["x"])
    model = si.InterpolantModel(
        si.LinearInterpolant(si.SqrtGamma(1.0)),
        2,
        key=k_model,
        loss="denoiser",
        shift=shift,
        scale=scale,
        width=256,
        depth=3,
    )
    start = time.perf_counter()
    model = _train(
        model,
        train,
        coupling=si.IndependentCoupling(),
        steps=args.steps,
        batch_size=512,
        lr=2e-3,
        key=k_train,
    )
    train_seconds = time.perf_counter() - start
    # Python numbers and booleans are static under `eqx.filter_jit`.
    draw = eqx.filter_jit(
        lambda m, k, sde, eps: si.sample(m, k, 4000, sde=sde, eps=eps)
    )
    ode = np.asarray(draw(model, k_ode, False, 0.0))
    results = {"ode": _energy_distance(ode, test)}
    samples = {"ODE": ode}
    for eps in (0.5, 1.0, 2.0, 4.0):
        x = np.asarray(draw(model, k_sde, True, eps))
        results[f"sde_eps{eps:g}"] = _energy_distance(x, test)
        if eps == 1.0:
            samples["SDE (eps 1)"] = x
    # The noise floor: two independent samples of the truth.
    results["truth_vs_truth"] = _energy_distance(
        np.asarray(target.sample(k_eval, 4000)), test
    )
    out = {
        "train_seconds": round(train_seconds, 1),
        "steps": args.steps,
        "energy_distance": results,
    }
    if args.plot:
        out.update(_checkerboard_plot(model, target, samples, args.plot))
    return out


def _checkerboard_plot(model, target, samples, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grid = np.linspace(-2.5, 2.5, 100)
    xx, yy = np.meshgrid(grid, grid)
    points = jnp.asarray(np.stack([xx.ravel(), yy.ravel()], 1), jnp.float32)
    logp = np.concatenate(
        [
            np.asarray(eqx.filter_jit(si.log_likelihood)(model, points[i : i + 2000]))
            for i in range(0, len(points), 2000)
        ]
    ).reshape(xx.shape)
    truth = np.asarray(target.log_prob(points)).reshape(xx.shape)
    # |log rho - log rho_hat| on the support (log rho = -inf off it).
    error = np.where(np.isfinite(truth), np.abs(truth - logp), np.nan)
    fig, axes = plt.subplots(1, 3, figsize=(13, 4.2))
    for ax, (name, x) in zip(axes[:2], samples.items()):
        ax.hist2d(x[:, 0], x[:, 1], bins=80, range=[[-2.5, 2.5], [-2.5, 2.5]])
        ax.set_title(f"{name} samples")
        ax.set_aspect("equal")
    im = axes[2].imshow(
        error, origin="lower", extent=(-2.5, 2.5, -2.5, 2.5), vmin=0, vmax=2
    )
    axes[2].set_title(r"$|\log\rho_1 - \log\hat\rho_1|$ (ODE likelihood)")
    fig.colorbar(im, ax=axes[2])
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    inside = error[np.isfinite(error)]
    return {"mean_abs_log_error_on_support": float(np.mean(inside))}


def _w2(x, y):
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    cost = ((x[:, None] - y[None]) ** 2).sum(-1)
    rows, cols = scipy.optimize.linear_sum_assignment(cost)
    return float(np.sqrt(cost[rows, cols].mean()))


def fewstep(args):
    source, target = eight_gaussians(), Moons()
    key = jr.key(args.seed)
    out = {}
    for name, coupling in (
        ("independent", si.IndependentCoupling()),
        ("ot", si.OTCoupling("exact")),
    ):
        k_data, k_model, k_train, k_eval = jr.split(jr.fold_in(key, len(out)), 4)
        model = si.InterpolantModel(
            si.LinearInterpolant(),
            2,
            key=k_model,
            base=source,
            independent=coupling.independent,
            width=256,
            depth=3,
        )
        model = _train(
            model,
            {"x": target.sample(k_data, 50000)},
            coupling=coupling,
            steps=args.steps,
            batch_size=256,
            lr=2e-3,
            key=k_train,
        )
        runs = {"euler1": [], "adaptive": []}
        for r in range(args.runs):
            k0, k1 = jr.split(jr.fold_in(k_eval, r))
            x0 = source.sample(k0, 1000)
            held_out = target.sample(k1, 1000)
            one = si.probability_flow(model, x0, steps=1)
            adaptive = si.probability_flow(model, x0)
            runs["euler1"].append(_w2(one, held_out))
            runs["adaptive"].append(_w2(adaptive, held_out))
        out[name] = {
            k: {"mean": float(np.mean(v)), "sd": float(np.std(v))}
            for k, v in runs.items()
        }
    return out


def _frechet(a, b):
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root = scipy.linalg.sqrtm(cov_a @ cov_b).real
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a + cov_b - 2 * root))


def digits(args):
    from sklearn.neural_network import MLPClassifier

    x_train, y_train, x_test, y_test = load_digits()
    classifier = MLPClassifier((128, 64), max_iter=600, random_state=0).fit(
        x_train, y_train
    )

    def features(x):
        # The last hidden layer's activations (ReLU).
        h = np.asarray(x, np.float64)
        for w, b in zip(classifier.coefs_[:-1], classifier.intercepts_[:-1]):
            h = np.maximum(h @ w + b, 0)
        return h

    key = jr.key(args.seed)
    shift, scale = si.data_scaling(jnp.asarray(x_train))
    model = si.InterpolantModel(
        si.LinearInterpolant(),
        64,
        key=key,
        shift=shift,
        scale=scale,
        width=512,
        depth=3,
    )
    model = _train(
        model,
        {"x": jnp.asarray(x_train)},
        coupling=si.IndependentCoupling(),
        steps=args.steps,
        batch_size=256,
        lr=1e-3,
        key=jr.fold_in(key, 1),
    )
    samples = np.asarray(
        eqx.filter_jit(si.sample)(model, jr.fold_in(key, 2), len(x_test))
    )
    mean, cov = x_train.mean(0), np.cov(x_train, rowvar=False)
    gaussian = np.random.default_rng(0).multivariate_normal(mean, cov, len(x_test))
    real = features(x_test)
    return {
        "classifier_test_accuracy": float(classifier.score(x_test, y_test)),
        "fd_interpolant": _frechet(features(np.clip(samples, 0, 1)), real),
        "fd_gaussian": _frechet(features(gaussian), real),
        "fd_train_vs_test": _frechet(features(x_train), real),
        "steps": args.steps,
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "study", choices=["density", "checkerboard", "fewstep", "digits"]
    )
    parser.add_argument("--dataset", default="gaussian-mixture")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--plot", default=None)
    args = parser.parse_args(argv)
    start = time.perf_counter()
    if args.study == "density":
        result = density(args)
    else:
        defaults = {"checkerboard": 20000, "fewstep": 10000, "digits": 20000}
        args.steps = args.steps or defaults[args.study]
        result = {"checkerboard": checkerboard, "fewstep": fewstep, "digits": digits}[
            args.study
        ](args)
    result = {
        "study": args.study,
        **result,
        "wall_seconds": round(time.perf_counter() - start, 1),
    }
    for name, value in result.items():
        print(f"{name}: {value}")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
