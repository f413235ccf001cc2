"""Latent Langevin flows on the Lorenz spiking set: the model against its baselines over
seeds, and the training throughput of three integrations of the same latent dynamics.
Prints tables and one JSON object on the last line.

    python benchmarks/langevin_flow.py                  # both parts, 3 seeds
    python benchmarks/langevin_flow.py --seeds 0 --steps 1000   # a reduced table
    python benchmarks/langevin_flow.py --skip-table     # throughput only
    python benchmarks/langevin_flow.py --plot runs/langevin-flow-lorenz-seed0 latents.png

**Table.** `sdekit.langevin.fit_job` with its defaults (what `sdekit fit --model
langevin-flow --dataset lorenz` runs) per seed: co-bps and rate R^2 on the test trials
of the Langevin flow, the deterministic-latent baseline (the same sequential VAE with
a GRU generator, trained alongside) and the smoothing baseline; the true rates' co-bps
as the ceiling. Mean and standard deviation over seeds.

**Throughput.** Trials per second of one training step (loss, gradient, on batches of
64 Lorenz trials) of the same `SequentialVAE` whose latent is integrated by (1) diffrax's
ALIGN over sdekit's grid Brownian path (the default), (2) the official code's discrete
map, (3) a hand-written `jax.lax.scan` of the ALIGN step (the same arithmetic on the
same increments and Lévy areas, drawn up front from the same grid path; the script
checks that its latent paths equal diffrax's to float32 rounding). Medians of
`--repeats` timings after a compile; all three in one process, so their ratios are
comparable under any load.
"""

import argparse
import json
import math
import os
import statistics
import sys
import tempfile
import time


def _align_scan_dynamics():
    """A `LangevinDynamics` whose solve is a hand-written lax.scan of ALIGN's step."""
    import diffrax as dfx
    import equinox as eqx
    import jax
    import jax.numpy as jnp
    import jax.random as jr
    import numpy as np

    from sdekit import GridBrownianPath
    from sdekit.langevin import AbstractLatentDynamics, CoupledOscillatorPotential

    class ScanALIGN(AbstractLatentDynamics):
        potential: CoupledOscillatorPotential
        log_friction: jax.Array
        log_temperature: jax.Array
        bin_time: float = eqx.field(static=True)

        @property
        def initial_size(self):
            return 2 * self.potential.size

        @property
        def feature_size(self):
            return 2 * self.potential.size

        @property
        def force_size(self):
            return 0

        def __call__(self, initial, force, num_bins, key):
            del force
            batch, d = initial.shape[0], self.potential.size
            h = self.bin_time
            gamma = jnp.exp(self.log_friction)
            u = jnp.exp(self.log_temperature)
            # ALIGN's coefficients (Foster, Lyons and Oberhauser 2021, the shifted ODE
            # / Strang splitting). In closed form they cancel badly for small
            # gamma * h in float32 (chh is off by 2e-4 relatively at gamma * h = 0.1),
            # so below 0.1 their Taylor series in h are used, as diffrax does.
            small = gamma * h < 0.1
            # The closed forms on a safe friction where the series are used, so
            # that the unused branch stays finite (and so do its gradients).
            g = jnp.where(small, 1.0, gamma)
            al = g * h
            e = jnp.exp(-al)
            closed = {
                "beta": e,
                "a1": (1 - e) / g,
                "b1": (e + al - 1) / (g * al),
                "aa": (1 - e) / (g * h),
                "chh": 6 * (e * (al + 2) + al - 2) / (al**2 * g),
            }

            def poly(*coefficients):  # in h, highest power first (Horner)
                total = jnp.zeros_like(gamma)
                for coefficient in coefficients:
                    total = total * h + coefficient
                return total

            c, c2, c3, c4, c5 = gamma, gamma**2, gamma**3, gamma**4, gamma**5
            series = {
                "beta": poly(-c5 / 120, c4 / 24, -c3 / 6, c2 / 2, -c, 1.0),
                "a1": poly(c4 / 120, -c3 / 24, c2 / 6, -c / 2, 1.0, 0.0),
                "b1": poly(c4 / 720, -c3 / 120, c2 / 24, -c / 6, 0.5, 0.0),
                "aa": poly(-c5 / 720, c4 / 120, -c3 / 24, c2 / 6, -c / 2, 1.0),
                "chh": poly(c4 / 168, -c3 / 30, 3 * c2 / 20, -c / 2, 1.0, 0.0),
            }
            beta, a1, b1, aa, chh = (
                jnp.where(small, series[k], closed[k])
                for k in ("beta", "a1", "b1", "aa", "chh")
            )
            rho = jnp.sqrt(2 * gamma * u)

            def grad_f(x):
                return jax.vmap(self.potential.gradient)(x) / u

            # The same noise as LangevinDynamics draws from the same key: one grid
            # path of the bins, one motion per trial, all increments and space-time
            # Lévy areas drawn up front, shape (bins - 1, batch, d).
            grid = np.linspace(0.0, h * (num_bins - 1), num_bins).astype(np.float32)
            path = GridBrownianPath(
                jnp.asarray(grid), (d,), jr.split(key, batch),
                dtype=initial.dtype, levy_area=dfx.SpaceTimeLevyArea,
            )  # fmt: skip
            increments = path.increments()
            w, hh = increments.W, increments.H

            def step(carry, noise):
                x0, v0, f0 = carry
                dw, dh = noise
                x1 = x0 + a1 * v0 - b1 * u * h * f0 + rho * (b1 * dw + chh * dh)
                f1 = grad_f(x1)
                v1 = (
                    beta * v0
                    - u * ((a1 - b1) * f0 + b1 * f1)
                    + rho * (aa * dw - gamma * chh * dh)
                )
                return (x1, v1, f1), jnp.concatenate([x1, v1], axis=-1)

            x0, v0 = initial[:, :d], initial[:, d:]
            _, rest = jax.lax.scan(step, (x0, v0, grad_f(x0)), (w, hh))
            features = jnp.concatenate([initial[None], rest], axis=0)
            return jnp.moveaxis(features, 0, 1), jnp.zeros((batch,))

    return ScanALIGN


def throughput(repeats: int, steps: int, batch: int, seed: int) -> dict:
    import equinox as eqx
    import jax
    import jax.random as jr
    import numpy as np

    from sdekit.data import lorenz_spikes
    from sdekit.langevin import (
        CoupledOscillatorPotential,
        DiscreteLangevinMap,
        FitConfig,
        ForcedLangevinDynamics,
        LangevinDynamics,
        make_loss,
        SequentialVAE,
    )

    config = FitConfig()
    sizes = config.sizes
    data = lorenz_spikes(seed=seed)
    spikes = np.asarray(data.train.spikes[:batch], np.float32)
    potential = CoupledOscillatorPotential(sizes["groups"], sizes["sites"])
    align = LangevinDynamics(potential, bin_time=config.bin_time)
    variants = {
        "align_grid": align,
        "discrete_map": DiscreteLangevinMap(potential),
        "align_lax_scan": _align_scan_dynamics()(
            potential, align.log_friction, align.log_temperature, config.bin_time
        ),
        # `--inferred-input`: the same ALIGN with a per-bin force from a second GRU.
        "align_forced": ForcedLangevinDynamics(potential, bin_time=config.bin_time),
    }
    loss_fn = make_loss(num_heldin=data.num_heldin, observed_bins=data.observed_bins)
    out = {
        "scan_vs_diffrax_max_rel": _scan_agreement(align, variants["align_lax_scan"])
    }
    for name, dynamics in variants.items():
        model = SequentialVAE(
            dynamics,
            num_heldin=data.num_heldin,
            num_neurons=data.num_neurons,
            hidden=sizes["hidden"],
            size=sizes["size"],
            heads=sizes["heads"],
            feedforward=sizes["feedforward"],
            key=jr.key(seed),
        )
        grad = eqx.filter_jit(eqx.filter_value_and_grad(loss_fn, has_aux=True))
        batch_data = {"spikes": spikes}
        start = time.perf_counter()
        jax.block_until_ready(grad(model, batch_data, jr.key(0)))
        compile_s = time.perf_counter() - start
        times = []
        for r in range(repeats):
            start = time.perf_counter()
            for i in range(steps):
                result = grad(model, batch_data, jr.fold_in(jr.key(r), i))
            jax.block_until_ready(result)
            times.append((time.perf_counter() - start) / steps)
        per_step = statistics.median(times)
        out[name] = {
            "ms_per_step": 1e3 * per_step,
            "trials_per_s": batch / per_step,
            "compile_s": compile_s,
        }
    base = out["align_grid"]["trials_per_s"]
    for name in variants:
        out[name]["x_align_grid"] = out[name]["trials_per_s"] / base
    return out


def _scan_agreement(align, scan) -> float:
    """The largest difference between the (z, v) paths of diffrax's ALIGN and the
    hand-written scan, relative to the largest value, from the same initial states
    and key (so the same increments and Lévy areas), in a potential with random
    couplings: the scan is the same arithmetic, so only the throughput differs
    (float32 rounding apart)."""
    import equinox as eqx
    import jax.numpy as jnp
    import jax.random as jr

    k_weight, k_initial, k_noise = jr.split(jr.key(7), 3)
    weight = jr.normal(k_weight, align.potential.weight.shape)
    align, scan = (
        eqx.tree_at(lambda m: m.potential.weight, m, weight) for m in (align, scan)
    )
    initial = jr.normal(k_initial, (16, align.initial_size))
    a, _ = eqx.filter_jit(align)(initial, None, 50, k_noise)
    b, _ = eqx.filter_jit(scan)(initial, None, 50, k_noise)
    return float(jnp.max(jnp.abs(a - b)) / jnp.max(jnp.abs(a)))


def table(seeds, steps, out_dir, inferred_input: bool | None = None) -> dict:
    import numpy as np

    from sdekit.data import lorenz_spikes
    from sdekit.langevin import co_bps, fit_job, FitConfig

    rows = []
    for seed in seeds:
        config = FitConfig(seed=seed, steps=steps, inferred_input=inferred_input)
        report = fit_job(
            config,
            os.path.join(out_dir, f"lorenz-seed{seed}"),
            progress=False,
            overwrite=True,
        )
        data = lorenz_spikes(seed=seed)
        k = data.num_heldin
        truth = co_bps(data.test.rates[:, :, k:], data.test.spikes[:, :, k:])
        rows.append(
            {
                "seed": seed,
                "flow": {m: report[m] for m in ("co_bps", "rate_r2")},
                "deterministic": {
                    m: report["baselines"]["deterministic"][m]
                    for m in ("co_bps", "rate_r2")
                },
                "smoothing": {
                    m: report["baselines"]["smoothing"][m]
                    for m in ("co_bps", "rate_r2")
                },
                "true_rates": {"co_bps": truth, "rate_r2": 1.0},
                "seconds": report["seconds"],
                "train_seconds": report["train_seconds"],
                "epochs": report["epochs"],
            }
        )
    summary = {}
    for name in ("flow", "deterministic", "smoothing", "true_rates"):
        summary[name] = {}
        for metric in ("co_bps", "rate_r2"):
            values = [row[name][metric] for row in rows]
            summary[name][metric] = {
                "mean": float(np.mean(values)),
                "sd": float(np.std(values, ddof=1)) if len(values) > 1 else None,
            }
    # The flow against the baseline trained beside it on the same batches: per seed,
    # then mean and sd over seeds.
    paired = {}
    for metric in ("co_bps", "rate_r2"):
        diffs = [row["flow"][metric] - row["deterministic"][metric] for row in rows]
        paired[metric] = {
            "per_seed": diffs,
            "mean": float(np.mean(diffs)),
            "sd": float(np.std(diffs, ddof=1)) if len(diffs) > 1 else None,
        }
    summary["flow_minus_deterministic"] = paired
    return {"rows": rows, "summary": summary, "steps": steps}


def plot_latents(checkpoint: str, png: str) -> dict:
    """Inferred against true Lorenz latents of a checkpoint's models: the latent path
    from the posterior mean initial state (the mean of 8 noise draws; pushed by the
    inferred force where the flow has one), mapped
    affinely to the Lorenz state by least squares on the training trials, compared
    on the test trials (R^2 over all test bins, pooled over the three coordinates):
    for the flow's positions z (plotted, three test trials of distinct conditions),
    its (z, v), and the deterministic baseline's generator state."""
    import equinox as eqx
    import jax
    import jax.numpy as jnp
    import jax.random as jr
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from sdekit.langevin import load_job_models

    models, config, data = load_job_models(checkpoint)

    @eqx.filter_jit
    def features(model, heldin, key):
        states, last = model.encode(heldin, heldin.shape[1])
        mean = jnp.split(jax.vmap(model.posterior)(last), 2, axis=-1)[0]
        # The inferred force, for a flow that has one (`--inferred-input`).
        force = model.infer_force(heldin, states, heldin.shape[1])

        def one(k):
            return model.dynamics(mean, force, heldin.shape[1], k)[0]

        return jnp.mean(jax.vmap(one)(jr.split(key, 8)), axis=0)

    def latent(model, trials, key):
        heldin = data.heldin(trials).astype(np.float32)
        return np.asarray(features(model, heldin, key))

    truth_train, truth = data.train.behavior, data.test.behavior
    dims = truth.shape[-1]

    def align(z_train, z_test):
        def design(z):
            flat = z.reshape(-1, z.shape[-1])
            return np.concatenate([flat, np.ones((len(flat), 1))], axis=1)

        coef, *_ = np.linalg.lstsq(
            design(z_train), truth_train.reshape(-1, dims), rcond=None
        )
        aligned = (design(z_test) @ coef).reshape(truth.shape)
        residual = np.sum((aligned - truth) ** 2)
        return aligned, 1 - residual / np.sum((truth - truth.mean(axis=(0, 1))) ** 2)

    d = models.flow.dynamics.potential.size
    flow_train = latent(models.flow, data.train, jr.key(1))
    flow_test = latent(models.flow, data.test, jr.key(2))
    aligned, r2_z = align(flow_train[..., :d], flow_test[..., :d])
    out = {
        "checkpoint": checkpoint,
        "flow_z_r2": float(r2_z),
        "flow_zv_r2": float(align(flow_train, flow_test)[1]),
    }
    if models.baseline is not None:
        base_train = latent(models.baseline, data.train, jr.key(1))
        base_test = latent(models.baseline, data.test, jr.key(2))
        out["deterministic_r2"] = float(align(base_train, base_test)[1])
    conditions = data.test.conditions
    if conditions is None:
        shown = [0, 1, 2]
    else:
        shown = [int(np.flatnonzero(conditions == c)[0]) for c in np.unique(conditions)]
    fig, axes = plt.subplots(1, dims, figsize=(4 * dims, 3), sharex=True)
    for j, ax in enumerate(axes):
        for colour, i in enumerate(shown[:3]):
            ax.plot(truth[i, :, j], color=f"C{colour}", lw=2, alpha=0.4)
            ax.plot(aligned[i, :, j], color=f"C{colour}", ls="--")
        ax.set_title(f"Lorenz {'xyz'[j]}: true (solid), inferred (dashed)")
        ax.set_xlabel("bin")
    fig.suptitle(f"Test trials, the flow's z affinely aligned: R^2 = {r2_z:.3f}")
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    out["png"] = png
    return out


def _fmt(stats) -> str:
    if stats["sd"] is None:
        return f"{stats['mean']:.4f}"
    return f"{stats['mean']:.4f} ± {stats['sd']:.4f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument(
        "--steps", type=int, default=None, help="training steps (default: fit's)"
    )
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--timed-steps", type=int, default=5)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--skip-table", action="store_true")
    parser.add_argument(
        "--inferred-input",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="the table's flow with (or without) the encoder's inferred force "
        "(default: as sdekit fit, with it)",
    )
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument(
        "--out", default=None, help="checkpoint root (default: a temp dir)"
    )
    parser.add_argument(
        "--plot",
        nargs=2,
        metavar=("CHECKPOINT", "PNG"),
        default=None,
        help="only plot a Lorenz checkpoint's affinely aligned latents against the "
        "true ones (e.g. of `sdekit fit --model langevin-flow --dataset lorenz`)",
    )
    args = parser.parse_args()

    from sdekit.langevin import FitConfig

    if args.plot is not None:
        print(json.dumps(plot_latents(*args.plot)), flush=True)
        return
    result = {"load_average_start": os.getloadavg()[0]}
    if not args.skip_throughput:
        result["throughput"] = throughput(
            args.repeats, args.timed_steps, args.batch, seed=0
        )
        print("variant          ms/step  trials/s  x align_grid  compile s")
        for name, row in result["throughput"].items():
            if not isinstance(row, dict):
                continue
            print(
                f"{name:16s} {row['ms_per_step']:7.1f} {row['trials_per_s']:9.1f} "
                f"{row['x_align_grid']:12.2f} {row['compile_s']:9.1f}"
            )
        print(
            "ALIGN by diffrax vs the scan, same noise: max |difference| / max |value| "
            f"{result['throughput']['scan_vs_diffrax_max_rel']:.1e}"
        )
    if not args.skip_table:
        steps = args.steps or FitConfig().steps
        out_dir = args.out or tempfile.mkdtemp(prefix="langevin-flow-")
        result["table"] = table(args.seeds, steps, out_dir, args.inferred_input)
        print(f"\nLorenz, seeds {args.seeds}, {steps} training steps")
        print("model                       co-bps                rate R^2")
        for name, row in result["table"]["summary"].items():
            print(f"{name:20s} {_fmt(row['co_bps']):>20s} {_fmt(row['rate_r2']):>20s}")
    result["load_average_end"] = os.getloadavg()[0]
    rows = [v for v in result.get("throughput", {}).values() if isinstance(v, dict)]
    result["math_ok"] = all(math.isfinite(v["trials_per_s"]) for v in rows)
    sys.stdout.flush()
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
