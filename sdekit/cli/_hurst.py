"""`sdekit hurst`: estimate the Hurst index of a one-dimensional series from a file."""

import argparse
import json
import math
import time
import warnings
from typing import Any


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "hurst",
        help="estimate the Hurst index of a series (fBM or fractional OU model)",
        description=(
            "Estimate the Hurst index H of a one-dimensional series, read from an NPY, "
            "NPZ or CSV file (one column of values with --dt or --times, or two "
            "columns time,value; NaN or empty cells are missing values), by "
            "maximising the exact likelihood of a fractional Brownian motion (fbm) or "
            "fractional Ornstein-Uhlenbeck (fou) model with observation noise: "
            "fBM's exact likelihood for short series, else the Kalman filter's on "
            "Markov-approximate fBM (--method). A repeated call reuses the compiled "
            "code from JAX's cache (SDEKIT_NO_CACHE=1 turns it off). See "
            "docs/fractional.md."
        ),
    )
    parser.add_argument(
        "--input",
        required=True,
        metavar="FILE",
        help="the series (.npy, .npz with one array, .csv with or without a header): "
        "one column of values, or two columns time,value",
    )
    spacing = parser.add_mutually_exclusive_group()
    spacing.add_argument(
        "--dt",
        type=float,
        metavar="DT",
        help="time step of a regular series (for a file of values only)",
    )
    spacing.add_argument(
        "--times",
        metavar="FILE",
        help="observation times (a file like --input), strictly increasing, one per "
        "value",
    )
    parser.add_argument(
        "--model",
        choices=("fbm", "fou"),
        default="fbm",
        help="fbm: scaled fBM; fou: fractional OU, also estimates theta and mu "
        "(default fbm)",
    )
    parser.add_argument(
        "--obs-noise",
        choices=("auto", "yes", "no"),
        default="auto",
        help="observation noise: kept on strong evidence, 2 dlogL - log n > 6 (auto, "
        "default), always estimated (yes) or none (no)",
    )
    parser.add_argument(
        "--method",
        choices=("auto", "dense", "kalman"),
        default="auto",
        help="likelihood: the exact dense one of fBM (fbm only; O(n^3)), the Kalman "
        "filter's on Markov-approximate fBM (O(n)), or auto: dense for short fBM "
        "series, where it is faster (default auto)",
    )
    parser.add_argument(
        "--components",
        type=int,
        default=12,
        metavar="K",
        help="Ornstein-Uhlenbeck components of the approximation (default 12)",
    )
    parser.add_argument(
        "--posterior",
        action="store_true",
        help="also sample the posterior by NUTS: hurst and hurst_std become the "
        "posterior mean and standard deviation, with a 95%% interval (slower)",
    )
    parser.add_argument(
        "--num-samples",
        type=int,
        default=300,
        help="NUTS samples (and as many warm-up steps) with --posterior (default 300)",
    )
    parser.add_argument("--seed", type=int, default=0, help="NUTS seed (default 0)")
    parser.add_argument(
        "--json",
        action="store_true",
        help="print the result as one JSON object on the last line",
    )
    return parser


def _series(args) -> tuple:
    """`(values, times)` from `--input` (and `--times`): one column of values, or
    two columns time,value."""
    import numpy as np

    from sdekit.data import read_array

    values = read_array(args.input, what="--input")
    where = f"--input file {args.input}"
    if values.ndim == 2 and values.shape[1] == 2 and values.shape[0] > 2:
        times, values = values[:, 0], values[:, 1]
        if not (np.all(np.isfinite(times)) and np.all(np.diff(times) > 0)):
            raise ValueError(
                f"{where} has two columns, but the first is not strictly increasing "
                "times; give one series: one column of values (with --dt or --times), "
                "or two columns time,value"
            )
        if args.dt is not None or args.times is not None:
            raise ValueError(
                f"{where} has two columns, time and value, so its times are used; "
                "drop --dt/--times (or give only the values column)"
            )
        return values, times
    # One column, or one row (a series written across).
    if values.ndim == 2 and 1 in values.shape:
        values = values.reshape(-1)
    if values.ndim != 1:
        raise ValueError(
            f"{where} holds an array of shape {values.shape}; expected one column of "
            "values (with --dt or --times), or two columns time,value"
        )
    if args.times is not None:
        times = read_array(args.times, what="--times")
        if times.ndim == 2 and 1 in times.shape:
            times = times.reshape(-1)
        if times.ndim != 1:
            raise ValueError(
                f"--times file {args.times} holds an array of shape {times.shape}; "
                "expected one column of times"
            )
        return values, times
    if args.dt is None:
        raise ValueError(
            f"{where} holds values only; give --dt (the time step of a regular series) "
            "or --times FILE (the observation times), or write two columns time,value"
        )
    return values, None


def _format(result: dict) -> str:
    def number(value):
        return "-" if value is None else f"{value:.6g}"

    lines = [f"Hurst index H = {result['hurst']:.4f} +- {result['hurst_std']:.4f}"]
    if result.get("hurst_interval"):
        lo, hi = result["hurst_interval"]
        lines[0] += f" (95% interval {lo:.4f} to {hi:.4f})"
    method = result.get("details", {}).get("method", "kalman")
    lines.append(
        f"model {result['model']} ({method} likelihood): sigma "
        f"{number(result['sigma'])}, observation noise sd {number(result['obs_std'])}"
    )
    if result["model"] == "fou":
        lines.append(f"theta {number(result['theta'])}, mu {number(result['mu'])}")
    lines.append(
        f"log-likelihood {result['log_likelihood']:.4f} over {result['num_observed']} "
        f"observed values; {result['seconds']:.2f} s"
    )
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    from sdekit import train

    # Before anything is compiled (or equinox imported): a repeated call loads the
    # compiled search instead of compiling it again.
    train.enable_compilation_cache()
    # XLA sets flush-to-zero on the CPU, which makes NumPy warn on float64 limits.
    warnings.filterwarnings("ignore", message="The value of the smallest subnormal")
    if args.components < 2:
        raise ValueError(f"--components must be at least 2, got {args.components}")
    if args.dt is not None and not (math.isfinite(args.dt) and args.dt > 0):
        raise ValueError(f"--dt must be a positive number, got {args.dt}")
    if args.num_samples < 1:
        raise ValueError(f"--num-samples must be positive, got {args.num_samples}")
    if args.method == "dense" and (args.model != "fbm" or args.posterior):
        raise ValueError(
            "--method dense is the exact likelihood of fBM: use it with --model fbm "
            "and without --posterior (which samples the Kalman filter's)"
        )
    ys, times = _series(args)
    obs_noise = {"auto": "auto", "yes": True, "no": False}[args.obs_noise]
    options: dict[str, Any] = dict(
        dt=args.dt, times=times, model=args.model, obs_noise=obs_noise
    )
    if args.posterior:
        from sdekit.fractional import hurst_posterior

        estimate, _ = hurst_posterior(
            ys,
            **options,
            num_warmup=args.num_samples,
            num_samples=args.num_samples,
            seed=args.seed,
            num_components=args.components,
        )
    else:
        from sdekit.fractional import estimate_hurst

        estimate = estimate_hurst(
            ys, **options, num_components=args.components, method=args.method
        )
    result = estimate.as_dict()
    result["seconds"] = time.perf_counter() - start
    result["input"] = args.input
    print(_format(result))
    if args.json:
        print(json.dumps(result), flush=True)
    return 0
