"""The interpolant family on the command line: `sdekit fit --model interpolant`,
`sdekit evaluate`, `sdekit sample` and `sdekit logprob`.

Each `run` makes one call of the family's Python API ([`sdekit.interpolants.fit_job`][]
and its siblings). Nothing heavy is imported at module level: `--help` reads it.
"""

import argparse
from typing import Any

from .._families import Job


# Options with a value; defaults live in `FitConfig` (argparse keeps None for "unset").
_VALUE_OPTIONS = (
    (
        "interpolant",
        str,
        "linear, trig, encdec, vp or mirror (data to data: its samples start at "
        "training points; no likelihood)",
    ),
    (
        "gamma",
        str,
        "latent noise gamma(t): sqrt, sin2 or zero (default: the interpolant's)",
    ),
    ("a", float, "noise level a of gamma"),
    ("loss", str, "velocity, denoiser or score"),
    ("coupling", str, "independent or ot (minibatch optimal transport)"),
    ("ot-method", str, "exact (host assignment), sinkhorn or hungarian"),
    ("num-train", int, "points drawn from a toy density"),
    ("steps", int, "optimiser steps in all"),
    ("steps-per-call", int, "optimiser steps per compiled call (at most an epoch's)"),
    ("batch-size", int, "examples per step"),
    ("lr", float, "peak learning rate (Adam, cosine decay)"),
    ("width", int, "network width"),
    ("depth", int, "hidden layers"),
    ("activation", str, "silu, selu, relu, gelu or tanh"),
    ("time-features", int, "Fourier pairs of t fed to the network"),
)


def _add_fit_arguments(parser: argparse.ArgumentParser) -> None:
    from ._job import DATASETS, FitConfig

    defaults = FitConfig()
    source = parser.add_mutually_exclusive_group()
    source.add_argument(
        "--dataset",
        default=None,
        help=f"a bundled set: {', '.join(DATASETS)} (default {defaults.dataset})",
    )
    source.add_argument(
        "--data",
        metavar="FILE",
        default=None,
        help="your points: .npy (n, d), or .npz with x (n, d) and optional label (n,)",
    )
    parser.add_argument(
        "--conditional",
        action="store_true",
        help="train on the labels (digits or an .npz with label), for guidance",
    )
    for name, kind, text in _VALUE_OPTIONS:
        default = getattr(defaults, name.replace("-", "_"))
        parser.add_argument(
            f"--{name}",
            type=kind,
            default=None,
            # A default of None is described by the text itself ("the interpolant's").
            help=text if default is None else f"{text} (default {default})",
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
    config = FitConfig(seed=args.seed, conditional=args.conditional, **options)
    return fit_job(
        config,
        args.out,
        progress=not args.quiet,
        resume=args.resume,
        overwrite=args.overwrite,
    )


def _held_out(report: dict[str, Any]) -> str:
    if report["test_mean_logprob"] is None:  # the mirror interpolant: no likelihood
        return f"held-out loss {report['test_loss']:.4f} (no likelihood: mirror)"
    return f"held-out mean log-likelihood {report['test_mean_logprob']:.4f} nats"


def _describe_fit(report: dict[str, Any]) -> str:
    lines = [
        f"interpolant ({report['interpolant']}, {report['loss']} loss, "
        f"{report['coupling']} coupling) on {report['dataset']}, seed {report['seed']}: "
        f"{_held_out(report)}"
    ]
    if "logprob_gap" in report:
        lines.append(
            f"truth {report['true_mean_logprob']:.4f} nats: "
            f"{report['logprob_gap']:.4f} nats short"
        )
    lines.append(
        f"{report['steps']} steps in {report['seconds']:.0f} s; "
        f"checkpoint: {report['checkpoint']}"
    )
    return "\n".join(lines)


def _evaluate(args: argparse.Namespace) -> dict[str, Any]:
    from ._job import evaluate_job

    return evaluate_job(args.checkpoint)


def _describe_evaluate(report: dict[str, Any]) -> str:
    line = f"interpolant on {report['dataset']}: {_held_out(report)}"
    if "logprob_gap" in report:
        line += f" (truth {report['true_mean_logprob']:.4f})"
    return line


def _add_sample_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--sde",
        action="store_true",
        help="sample with the forward SDE (default: the probability-flow ODE)",
    )
    parser.add_argument(
        "--eps",
        type=float,
        default=1.0,
        help="SDE diffusion: eps(t) = EPS * sigma(t)^2 (default 1)",
    )
    parser.add_argument(
        "--steps",
        type=int,
        default=None,
        help="fixed steps (ODE: Euler; default adaptive Tsit5. SDE: default 500)",
    )
    parser.add_argument(
        "--label", type=int, default=None, help="class to sample (conditional model)"
    )
    parser.add_argument(
        "--guidance",
        type=float,
        default=None,
        help="classifier-free guidance weight (1: plain conditional)",
    )


def _sample(args: argparse.Namespace) -> dict[str, Any]:
    from ._job import sample_job

    return sample_job(
        args.checkpoint,
        args.num,
        args.out,
        seed=args.seed,
        sde=args.sde,
        eps=args.eps,
        steps=args.steps,
        label=args.label,
        guidance=args.guidance,
    )


def _describe_sample(report: dict[str, Any]) -> str:
    return (
        f"{report['n']} samples ({report['sampler']}) saved to {report['out']} "
        f"in {report['seconds']:.1f} s"
    )


def _add_logprob_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--hutchinson",
        action="store_true",
        help="estimate the divergence with one Rademacher probe (default: exact)",
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of the Hutchinson probes (default 0)"
    )
    parser.add_argument(
        "--out", metavar="FILE", default=None, help="save per-point values (.npy)"
    )


def _logprob(args: argparse.Namespace) -> dict[str, Any]:
    from ._job import logprob_job

    return logprob_job(
        args.checkpoint,
        args.data,
        hutchinson=args.hutchinson,
        seed=args.seed,
        out=args.out,
    )


def _describe_logprob(report: dict[str, Any]) -> str:
    return (
        f"mean log-density {report['mean_logprob']:.4f} nats over {report['n']} points "
        f"({report['divergence']} divergence, {report['seconds']:.1f} s)"
    )


JOBS = {
    "fit": Job(
        _add_fit_arguments, _fit, _describe_fit, "train a stochastic interpolant"
    ),
    "evaluate": Job(lambda parser: None, _evaluate, _describe_evaluate),
    "sample": Job(_add_sample_arguments, _sample, _describe_sample),
    "logprob": Job(_add_logprob_arguments, _logprob, _describe_logprob),
}
