"""`sdekit hurst`: estimate the Hurst index of a one-dimensional series from a file."""

import argparse
import csv
import json
import math
import os
import time
import warnings


_MISSING = {"", "nan", "na", "n/a", "null", "none", "-"}


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "hurst",
        help="estimate the Hurst index of a series (fBM or fractional OU model)",
        description=(
            "Estimate the Hurst index H of a one-dimensional series, read from an NPY "
            "or CSV file (one column; NaN or empty cells are missing values), by "
            "maximising the exact likelihood of a fractional Brownian motion (fbm) or "
            "fractional Ornstein-Uhlenbeck (fou) model with observation noise, "
            "computed by a Kalman filter on Markov-approximate fBM. See "
            "docs/fractional.md."
        ),
    )
    parser.add_argument(
        "--input", required=True, metavar="FILE", help="the series (.npy or .csv)"
    )
    spacing = parser.add_mutually_exclusive_group(required=True)
    spacing.add_argument(
        "--dt", type=float, metavar="DT", help="time step of a regular series"
    )
    spacing.add_argument(
        "--times",
        metavar="FILE",
        help="observation times (.npy or .csv), strictly increasing, one per value",
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


def _read_column(path: str, what: str):
    """A one-dimensional float array from an .npy or .csv file (empty or NaN cells:
    NaN)."""
    import numpy as np

    if not os.path.isfile(path):
        raise ValueError(f"{what} file not found: {path}")
    suffix = os.path.splitext(path)[1].lower()
    if suffix == ".npy":
        try:
            values = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as error:
            raise ValueError(
                f"could not read {what} file {path} as NPY: {error}"
            ) from None
        try:
            values = np.asarray(values, np.float64)
        except (TypeError, ValueError):
            raise ValueError(f"{what} file {path} does not hold numbers") from None
    elif suffix in (".csv", ".txt"):
        values = _read_csv(path, what)
    else:
        raise ValueError(
            f"unsupported {what} file type {suffix or '(none)'!r} for {path}; use .npy "
            "or .csv"
        )
    values = np.squeeze(values)
    if values.ndim == 0:
        values = values.reshape(1)
    if values.ndim != 1:
        raise ValueError(
            f"{what} file {path} holds an array of shape {values.shape}; expected one "
            "column (or one row) of numbers"
        )
    return values


def _read_csv(path: str, what: str):
    import numpy as np

    try:
        with open(path, newline="") as f:
            # A blank line is a missing value (an empty cell), except at the end.
            rows = [row or [""] for row in csv.reader(f)]
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise ValueError(f"could not read {what} file {path}: {error}") from None
    while rows and not any(cell.strip() for cell in rows[-1]):
        rows.pop()
    if not rows:
        raise ValueError(f"{what} file {path} is empty")
    widths = {len(row) for row in rows}
    if len(rows) == 1 and len(rows[0]) > 1:
        rows = [[cell] for cell in rows[0]]  # one row: a series written across
    elif widths != {1}:
        raise ValueError(
            f"{what} file {path} has {max(widths)} columns; expected one column of numbers"
        )

    def parse(cell: str, line: int) -> float:
        cell = cell.strip()
        if cell.lower() in _MISSING:
            return math.nan
        try:
            return float(cell)
        except ValueError:
            raise ValueError(
                f"{what} file {path}, line {line}: {cell!r} is not a number"
            ) from None

    cells = [row[0] for row in rows]
    start = 0
    try:
        float(cells[0].strip() or "nan")
    except ValueError:
        start = 1  # a header
    values = [parse(cell, i + 1) for i, cell in enumerate(cells) if i >= start]
    return np.asarray(values, np.float64)


def _format(result: dict) -> str:
    def number(value):
        return "-" if value is None else f"{value:.6g}"

    lines = [f"Hurst index H = {result['hurst']:.4f} +- {result['hurst_std']:.4f}"]
    if result.get("hurst_interval"):
        lo, hi = result["hurst_interval"]
        lines[0] += f" (95% interval {lo:.4f} to {hi:.4f})"
    lines.append(
        f"model {result['model']}: sigma {number(result['sigma'])}, observation noise "
        f"sd {number(result['obs_std'])}"
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
    # XLA sets flush-to-zero on the CPU, which makes NumPy warn on float64 limits.
    warnings.filterwarnings("ignore", message="The value of the smallest subnormal")
    from sdekit.fractional import estimate_hurst, hurst_posterior

    if args.components < 2:
        raise ValueError(f"--components must be at least 2, got {args.components}")
    if args.dt is not None and not (math.isfinite(args.dt) and args.dt > 0):
        raise ValueError(f"--dt must be a positive number, got {args.dt}")
    if args.num_samples < 1:
        raise ValueError(f"--num-samples must be positive, got {args.num_samples}")
    ys = _read_column(args.input, "input")
    times = _read_column(args.times, "times") if args.times is not None else None
    obs_noise = {"auto": "auto", "yes": True, "no": False}[args.obs_noise]
    options = dict(dt=args.dt, times=times, model=args.model, obs_noise=obs_noise)
    if args.posterior:
        estimate, _ = hurst_posterior(
            ys,
            **options,
            num_warmup=args.num_samples,
            num_samples=args.num_samples,
            seed=args.seed,
            num_components=args.components,
        )
    else:
        estimate = estimate_hurst(ys, **options, num_components=args.components)
    result = estimate.as_dict()
    result["seconds"] = time.perf_counter() - start
    result["input"] = args.input
    print(_format(result))
    if args.json:
        print(json.dumps(result), flush=True)
    return 0
