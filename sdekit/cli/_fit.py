"""`sdekit fit`: train a stable neural SDE (or a baseline) on an irregular, partly
missing time-series data set, and print its test metrics."""

import argparse
import json


def add_parser(subparsers) -> argparse.ArgumentParser:
    from sdekit.stable._job import FitConfig

    defaults = FitConfig()
    parser = subparsers.add_parser(
        "fit",
        help="train a stable neural SDE on a time-series data set and report test metrics",
        description=(
            "Train LSDE, LNSDE, GSDE or a baseline (neural ODE, naive neural SDE, neural "
            "CDE) on one of aeon's bundled data sets, statsmodels' co2 record, or your "
            "own NPZ/CSV file, with a seeded fraction of each channel's observations "
            "dropped. Early-stops on a validation split, writes a checkpoint directory, "
            "and prints the test metrics. See docs/stable-sdes.md."
        ),
    )
    parser.add_argument(
        "--model",
        default=defaults.model,
        help="lsde, lnsde, gsde, neural-ode, neural-sde or neural-cde "
        f"(default {defaults.model})",
    )
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
        help="your own .npz or .csv file (format: docs/stable-sdes.md)",
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
    parser.add_argument("--seed", type=int, default=defaults.seed, help="random seed")
    for name, kind, help_text in (
        ("epochs", int, "passes over the training set"),
        (
            "patience",
            int,
            "stop after this many epochs without a better validation score",
        ),
        ("hidden", int, "latent size and network width"),
        ("depth", int, "hidden layers per network"),
        ("lr", float, "peak learning rate (AdamW, cosine decay)"),
        ("batch-size", int, "series per step"),
        ("horizon", float, "model time the observation window is mapped onto"),
        ("steps", int, "Euler-Maruyama steps over the horizon"),
        (
            "augment",
            float,
            "probability of dropping each input point per training step",
        ),
    ):
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
    parser.add_argument(
        "--out",
        default=None,
        help="checkpoint directory (default runs/<model>-<data>-missing<rate>-seed<seed>)",
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --out instead of starting afresh",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help="print the report as one JSON object on the last line",
    )
    return parser


def _summary(report: dict) -> str:
    if "test_accuracy" in report:
        figure = f"test accuracy {report['test_accuracy']:.4f}"
    else:
        figure = f"test MSE {report['test_mse']:.4f} (normalised units)"
    return (
        f"{report['model']} on {report['dataset']} ({report['task']}, "
        f"{report['missing']:.0%} missing, seed {report['seed']}): {figure}"
    )


def run(args: argparse.Namespace) -> int:
    from sdekit.stable import fit_job, FitConfig

    options = {
        name: getattr(args, name)
        for name in (
            "epochs",
            "patience",
            "hidden",
            "depth",
            "lr",
            "batch_size",
            "horizon",
            "steps",
            "augment",
        )
        if getattr(args, name, None) is not None
    }
    if args.data is not None:
        options["dataset"] = None
        options["data"] = args.data
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
    report = fit_job(config, args.out, progress=True, resume=args.resume)
    print(_summary(report))
    print(
        f"{report['epochs']} epochs (best {report['best_epoch']}) in "
        f"{report['seconds']:.0f} s; checkpoint: {report['checkpoint']}"
    )
    if args.json:
        print(json.dumps(report), flush=True)
    return 0
