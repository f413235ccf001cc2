"""The stable family's jobs on the command line: `sdekit fit --model lsde|lnsde|gsde|
neural-ode|neural-sde|neural-cde`, `sdekit evaluate`, `sdekit predict`.

Each `run` makes one call of the family's Python API ([`sdekit.stable.fit_job`][] and
its siblings); this module only declares options and formats reports. It imports
nothing heavy at module level: `sdekit fit --model lnsde --help` reads it.
"""

import argparse
import contextlib
import sys
import warnings
from typing import Any

from .._families import Job


# Options with a value; their defaults live in `FitConfig` (shown as "auto" when None).
_VALUE_OPTIONS = (
    ("epochs", int, "passes over the training set"),
    ("patience", int, "stop after this many epochs without a better validation score"),
    ("hidden", int, "latent size and network width"),
    ("depth", int, "hidden layers per network"),
    ("lr", float, "peak learning rate (AdamW, cosine decay)"),
    ("batch-size", int, "series per step"),
    ("horizon", float, "model time the observation window is mapped onto"),
    ("steps", int, "Euler-Maruyama steps over the horizon"),
    ("augment", float, "probability of dropping each input point per training step"),
)


def _add_fit_arguments(parser: argparse.ArgumentParser) -> None:
    from ._job import FitConfig  # a dataclass: cheap once the package is imported

    defaults = FitConfig()
    source = parser.add_mutually_exclusive_group()
    source.add_argument(
        "--dataset",
        default=None,
        help="a bundled data set, e.g. BasicMotions, GunPoint, ArrowHead, "
        f"ItalyPowerDemand, Covid3Month, co2 (default {defaults.dataset})",
    )
    source.add_argument(
        "--data",
        metavar="FILE",
        default=None,
        help="your own .npy, .npz or .csv file (format: docs/stable-sdes.md)",
    )
    parser.add_argument(
        "--task",
        default=None,
        help="classification, regression, interpolation or forecasting "
        "(default: from the data)",
    )
    parser.add_argument(
        "--missing",
        type=float,
        default=defaults.missing,
        help="fraction of each channel's points to drop, in [0, 1) (default 0)",
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
        "--bounded",
        action="store_true",
        help="the official code's tanh-bounded dynamics instead of the paper's",
    )
    parser.add_argument(
        "--intensity",
        action="store_true",
        help="add observation-intensity channels to the control path",
    )


@contextlib.contextmanager
def _warnings_as_lines():
    """Show the family's small-data warnings as `sdekit: warning: ...` lines on
    stderr when they are raised (before training starts), not as Python's
    `file:line: UserWarning` blocks."""
    from ._prepare import SmallDataWarning

    default = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, SmallDataWarning):
            print(f"sdekit: warning: {message}", file=sys.stderr, flush=True)
        else:
            default(message, category, filename, lineno, file, line)

    with warnings.catch_warnings():
        warnings.simplefilter("always", SmallDataWarning)
        warnings.showwarning = show
        yield


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
        task=args.task,
        missing=args.missing,
        seed=args.seed,
        bounded=args.bounded,
        intensity=args.intensity,
        **options,
    )
    with _warnings_as_lines():
        return fit_job(
            config,
            args.out,
            progress=not args.quiet,
            resume=args.resume,
            overwrite=args.overwrite,
        )


def _describe(report: dict[str, Any]) -> str:
    from ..data import format_missing_rate

    if "test_accuracy" in report:
        figure = f"test accuracy {report['test_accuracy']:.4f}"
    else:
        figure = f"test MSE {report['test_mse']:.4f} (normalised units)"
    lines = [
        f"{report['model']} on {report['dataset']} ({report['task']}, "
        f"{format_missing_rate(report['missing'])} missing, seed {report['seed']}): "
        f"{figure}"
    ]
    if "epochs" in report:
        # Counted from 1, as the progress lines count; the JSON's best_epoch is the
        # 0-based index into the history.
        best = report["best_epoch"]
        best = "" if best is None else f" (best: epoch {best + 1})"
        lines.append(
            f"{report['epochs']} epochs{best} in "
            f"{report['seconds']:.0f} s; checkpoint: {report['checkpoint']}"
        )
    return "\n".join(lines)


def _no_arguments(parser: argparse.ArgumentParser) -> None:
    del parser


def _evaluate(args: argparse.Namespace) -> dict[str, Any]:
    from ._job import evaluate_job

    with _warnings_as_lines():
        return evaluate_job(args.checkpoint)


def _predict(args: argparse.Namespace) -> dict[str, Any]:
    from ._job import predict_job

    # The run's data is rebuilt only for its normaliser; its size is no news here.
    from ._prepare import SmallDataWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SmallDataWarning)
        return predict_job(args.checkpoint, args.data, args.out)


def _describe_predictions(report: dict[str, Any]) -> str:
    shape = "x".join(str(n) for n in report["shape"])
    lines = [
        f"{report['model']} ({report['task']}, trained on {report['dataset']}): "
        f"saved {shape} predictions to {report['predictions']}",
        f"they are {report['saved']}",
    ]
    if "predicted" in report:
        counts = {c: report["predicted"].count(c) for c in report["classes"]}
        lines.append(
            "predicted classes: "
            + ", ".join(f"{c} {k}" for c, k in counts.items() if k)
        )
    return "\n".join(lines)


JOBS = {
    "fit": Job(
        _add_fit_arguments,
        _fit,
        _describe,
        help="Train LSDE, LNSDE, GSDE or a baseline (neural ODE, naive neural SDE, "
        "neural CDE) on one of aeon's bundled data sets, statsmodels' co2 record, or "
        "your own NPY/NPZ/CSV file, with a seeded fraction of each channel's observations "
        "dropped. Early-stops on a validation split, writes a checkpoint directory "
        "with its report.json, and prints the test metrics. See docs/stable-sdes.md.",
    ),
    "evaluate": Job(
        _no_arguments,
        _evaluate,
        _describe,
        help="Reload the best model of a stable-family checkpoint, rebuild its data "
        "(same masks and split from the stored config) and recompute the test "
        "metrics, which equal those `sdekit fit` printed.",
    ),
    "predict": Job(
        _no_arguments,
        _predict,
        _describe_predictions,
        help="Apply the best model of a stable-family checkpoint to new series on the "
        "training window (--data: .npy values (series, length, channels), NaN where "
        "missing, or .npz with values and optional times), normalised as in "
        "training, and save the predictions as .npy: class probabilities "
        "(classification), targets (regression) or values at every time of the "
        "window (interpolation, forecasting), in the data's units.",
    ),
}
