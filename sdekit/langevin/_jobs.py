"""The Langevin family's jobs on the command line: `sdekit fit --model langevin-flow`,
`sdekit evaluate` and `sdekit predict`.

Each `run` makes one call of the family's Python API ([`sdekit.langevin.fit_job`][] and
its siblings); this module only declares options and formats reports. It imports
nothing heavy at module level: `sdekit fit --model langevin-flow --help` reads it.
"""

import argparse
from typing import Any

from .._families import Job


# Options with a value: (flag, type, help). Their defaults live in `FitConfig`.
_VALUE_OPTIONS = (
    (
        "heldout-neurons",
        int,
        "hold out the last K neurons (auto: the NWB file's flags, else a quarter)",
    ),
    ("forward-bins", int, "predict F bins past each trial's window"),
    ("bin-ms", float, "bin width in ms for NWB files"),
    ("dynamics", str, "langevin (the SDE) or discrete (the official code's map)"),
    ("solver", str, "align or should"),
    ("preset", str, "network sizes: cpu or paper"),
    ("hidden", int, "encoder GRU width"),
    ("groups", int, "latent groups of the oscillator chain"),
    ("sites", int, "latent sites per group"),
    ("size", int, "decoder token width (d_model)"),
    ("heads", int, "decoder attention heads"),
    ("feedforward", int, "decoder feed-forward width"),
    ("dropout", float, "decoder dropout"),
    ("bin-time", float, "model time per bin"),
    ("steps-per-bin", int, "solver steps per bin"),
    ("keep", float, "coordinated dropout's keep probability"),
    ("beta", float, "KL weight after its ramp"),
    ("ramp", float, "share of training over which the KL weight ramps up"),
    ("lr", float, "learning rate (Adam, reduce-on-plateau)"),
    ("weight-decay", float, "decoupled weight decay"),
    ("batch-size", int, "trials per step"),
    ("steps", int, "optimiser steps of training (sets the epochs)"),
    ("epochs", int, "passes over the training trials (instead of --steps)"),
    (
        "patience",
        int,
        "stop after this many epochs without a better validation score "
        "(auto: never; the best epoch is kept anyway)",
    ),
    ("eval-passes", int, "stochastic passes averaged for the rates"),
)


def _add_fit_arguments(parser: argparse.ArgumentParser) -> None:
    from ._job import FitConfig  # a dataclass: cheap once the package is imported

    defaults = FitConfig()
    source = parser.add_mutually_exclusive_group()
    source.add_argument(
        "--dataset",
        default=None,
        help=f"a bundled data set: lorenz (default {defaults.dataset})",
    )
    source.add_argument(
        "--data",
        metavar="FILE",
        default=None,
        help="your spikes: FILE.npz (train_spikes, test_spikes, ...) or a Neural "
        "Latents Benchmark FILE.nwb (format: docs/langevin.md)",
    )
    for name, kind, help_text in _VALUE_OPTIONS:
        default = getattr(defaults, name.replace("-", "_"))
        parser.add_argument(
            f"--{name}",
            type=kind,
            default=None,
            help=f"{help_text} (default {'auto' if default is None else default})",
        )
    parser.add_argument(
        "--inferred-input",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="let the encoder push the latent with a force, paid for by the pathwise "
        "(Girsanov) KL (default: on for --dynamics langevin, off for discrete)",
    )
    parser.add_argument(
        "--no-baseline",
        action="store_true",
        help="skip the deterministic-latent baseline (halves the training time)",
    )


def _fit(args: argparse.Namespace) -> dict[str, Any]:
    from ._job import fit_job, FitConfig

    options = {
        name.replace("-", "_"): getattr(args, name.replace("-", "_"))
        for name, _, _ in _VALUE_OPTIONS
        if getattr(args, name.replace("-", "_")) is not None
    }
    if args.data is not None:
        options.update(dataset=None, data=args.data)
    elif args.dataset is not None:
        options["dataset"] = args.dataset
    config = FitConfig(
        model=args.model,
        seed=args.seed,
        inferred_input=args.inferred_input,
        baseline=not args.no_baseline,
        **options,
    )
    return fit_job(
        config,
        args.out,
        progress=not args.quiet,
        resume=args.resume,
        overwrite=args.overwrite,
    )


def _figures(report: dict[str, Any]) -> str:
    names = ("co_bps", "fp_bps", "rate_r2", "vel_r2", "psth_r2")
    return ", ".join(f"{n} {report[n]:.4f}" for n in names if n in report)


def _describe(report: dict[str, Any]) -> str:
    lines = [
        f"{report['model']} on {report['dataset']} ({report['neurons']} neurons, "
        f"{report['heldout_neurons']} held out, {report['forward_bins']} forward bins, "
        f"seed {report['seed']}): {_figures(report)}"
    ]
    for name, figures in report.get("baselines", {}).items():
        lines.append(f"  {name} baseline: {_figures(figures)}")
    if "epochs" in report:
        # Counted from 1, as the progress lines count; the JSON's best_epoch is the
        # 0-based index into the history.
        best = report["best_epoch"]
        best = "" if best is None else f" (kept: epoch {best + 1})"
        lines.append(
            f"{report['epochs']} epochs{best} in "
            f"{report['seconds']:.0f} s; checkpoint: {report['checkpoint']}"
        )
    return "\n".join(lines)


def _no_arguments(parser: argparse.ArgumentParser) -> None:
    del parser


def _evaluate(args: argparse.Namespace) -> dict[str, Any]:
    from ._job import evaluate_job

    return evaluate_job(args.checkpoint)


def _predict(args: argparse.Namespace) -> dict[str, Any]:
    from ._job import predict_job

    return predict_job(args.checkpoint, args.data, args.out)


def _describe_prediction(report: dict[str, Any]) -> str:
    return (
        f"rates of {report['trials']} trials x {report['bins']} bins x "
        f"{report['neurons']} neurons (spikes per bin) saved to {report['out']}"
    )


JOBS = {
    "fit": Job(
        _add_fit_arguments,
        _fit,
        _describe,
        help="Train a latent Langevin flow (a sequential VAE whose latent follows "
        "underdamped Langevin dynamics) on spike counts: the bundled Lorenz set, your "
        "NPZ file or a Neural Latents Benchmark NWB file. Trains the deterministic-"
        "latent baseline alongside and fits the smoothing baseline, writes a "
        "checkpoint directory with its report.json, and prints co-bps, fp-bps, rate, "
        "velocity and PSTH R^2 as available. See docs/langevin.md.",
    ),
    "evaluate": Job(
        _no_arguments,
        _evaluate,
        _describe,
        help="Reload the best models of a langevin-flow checkpoint, rebuild its data "
        "from the stored config and recompute the test report, which equals the one "
        "`sdekit fit` printed.",
    ),
    "predict": Job(
        _no_arguments,
        _predict,
        _describe_prediction,
        help="Infer the rates of new trials (--data FILE.npy, or .npz with `spikes`, "
        "shaped trials x bins x neurons) with a langevin-flow checkpoint and save them "
        "to --out RATES.npy.",
    ),
}
