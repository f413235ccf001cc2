"""Hurst recovery: bias, RMSE and wall time of sdekit's Hurst estimate against the exact
Gaussian maximum-likelihood estimate (dense covariance, O(n^3)) and the variogram
estimator, on fBM and fractional OU paths simulated by the `fbm` package (Davies-Harte).

    python benchmarks/hurst_recovery.py --json-out hurst.json --plot docs/assets/fractional-hurst-recovery.png

prints a table (and writes the full result as JSON, and the plot). The figures on record
and what they mean: docs/fractional.md. Needs `pip install fbm matplotlib`.

    python benchmarks/hurst_recovery.py --compile-timings

times instead the first call (compiling), a second call, and a first call in a new
process with JAX's persistent compilation cache filled, for the dense and the Kalman
likelihood over n (docs/benchmarks.md, "Hurst timings").

- fBM paths: `fbm.FBM(n - 1, H, length=1)`, n points on [0, 1] from B(0) = 0.
- fractional OU paths: X(t + dt) = exp(-theta dt) X(t) + sigma (B(t + dt) - B(t)) on the same
  grid over [0, 10] with theta = 1, sigma = 1, X(0) = 0, B from the `fbm` package.
- sdekit: `sdekit.fractional.estimate_hurst(path, dt=dt, model=...)` (model "fbm" or "fou",
  observation noise decided by the BIC, as by default). Its time per path is the median
  over paths once compiled; the one-off compilation is reported apart.
- exact MLE: the likelihood of X(t_1..t_n) given X(0) = 0 with the exact covariance (the fGn
  Toeplitz matrix for fBM; for fOU the AR(1) filter of it), sigma^2 profiled in closed form,
  maximised by Brent over H (fBM) or by Nelder-Mead over (H, theta) started at sdekit's
  estimate (fOU; its time counts no search), each evaluation a dense Cholesky factorisation.
  For fOU at n >= 2000 only `--exact-fou-paths` paths per H (default 5): each takes ~20 s.
- variogram: half the least-squares slope of log E[(X(t + k dt) - X(t))^2] against log k,
  k = 1, 2, 4, 8, 16.
"""

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
import warnings

import numpy as np
import scipy.linalg as sl
from scipy.optimize import minimize, minimize_scalar
from scipy.signal import lfilter


warnings.filterwarnings("ignore", message="The value of the smallest subnormal")


def fgn_autocovariance(hurst: float, n: int) -> np.ndarray:
    k = np.arange(n, dtype=np.float64)
    return 0.5 * (
        np.abs(k + 1) ** (2 * hurst)
        - 2 * k ** (2 * hurst)
        + np.abs(k - 1) ** (2 * hurst)
    )


def fbm_path(rng_seed: int, hurst: float, n: int) -> np.ndarray:
    from fbm import FBM

    np.random.seed(rng_seed)  # the fbm package draws from NumPy's global generator
    return FBM(n=n - 1, hurst=hurst, length=1.0, method="daviesharte").fbm()


def fou_path(
    rng_seed: int, hurst: float, n: int, span: float, theta: float
) -> np.ndarray:
    from fbm import FBM

    np.random.seed(rng_seed)
    dt = span / (n - 1)
    noise = FBM(n=n - 1, hurst=hurst, length=span, method="daviesharte").fgn()
    return np.concatenate([[0.0], lfilter([1.0], [1.0, -math.exp(-theta * dt)], noise)])


def _profile_nll(cov: np.ndarray, x: np.ndarray) -> float:
    try:
        chol = sl.cholesky(cov, lower=True)
    except np.linalg.LinAlgError:
        return math.inf
    z = sl.solve_triangular(chol, x, lower=True)
    n = x.shape[0]
    return 0.5 * (n * math.log(z @ z / n) + 2 * np.sum(np.log(np.diag(chol))))


def exact_mle_fbm(path: np.ndarray) -> float:
    increments = np.diff(path)
    n = increments.shape[0]

    def nll(h):
        return _profile_nll(sl.toeplitz(fgn_autocovariance(h, n)), increments)

    return minimize_scalar(
        nll, bounds=(0.01, 0.99), method="bounded", options=dict(xatol=1e-4)
    ).x


def exact_mle_fou(
    path: np.ndarray, dt: float, start: tuple[float, float]
) -> tuple[float, float]:
    x = path[1:]
    n = x.shape[0]

    def nll(params):
        h = 1 / (1 + math.exp(-params[0]))
        phi = math.exp(-math.exp(params[1]) * dt)
        toeplitz = sl.toeplitz(fgn_autocovariance(h, n))
        # C = L T L' with L the AR(1) filter: two O(n^2) passes, not dense products.
        half = lfilter([1.0], [1.0, -phi], toeplitz, axis=0)
        cov = lfilter([1.0], [1.0, -phi], half.T, axis=0)
        return _profile_nll(0.5 * (cov + cov.T), x)

    # Started at (H, theta) = `start` (sdekit's estimate: a favour to the exact MLE,
    # whose time then counts no search), to 1e-3 in logit H and log theta.
    h0, theta0 = start
    x0 = np.array([math.log(h0 / (1 - h0)), math.log(max(theta0, 1e-3))])
    simplex = np.stack([x0, x0 + [0.1, 0.0], x0 + [0.0, 0.2]])
    options = dict(xatol=1e-3, fatol=1e-6, initial_simplex=simplex)
    result = minimize(nll, x0, method="Nelder-Mead", options=options)
    return 1 / (1 + math.exp(-result.x[0])), math.exp(result.x[1])


def variogram_hurst(path: np.ndarray, lags=(1, 2, 4, 8, 16)) -> float:
    lags = [k for k in lags if k < path.shape[0] // 4]
    v = [np.mean((path[k:] - path[:-k]) ** 2) for k in lags]
    return 0.5 * np.polyfit(np.log(lags), np.log(v), 1)[0]


def _summary(values, truth):
    values = np.asarray(values, np.float64)
    return dict(
        bias=float(np.mean(values) - truth),
        rmse=float(np.sqrt(np.mean((values - truth) ** 2))),
    )


def recovery(args) -> list[dict]:
    from sdekit.fractional import estimate_hurst

    rows = []
    for process in args.processes:
        for n in args.lengths:
            compiled = False
            for hurst in args.hursts:
                span = 1.0 if process == "fbm" else args.fou_span
                dt = span / (n - 1)
                exact_paths = (
                    args.paths if n < 2000 or process == "fbm" else args.exact_fou_paths
                )
                estimates = {"sdekit": [], "exact": [], "variogram": []}
                seconds = {"sdekit": [], "exact": [], "variogram": []}
                stds, first_call = [], None
                for i in range(args.paths):
                    seed = args.seed + 1000 * i + int(round(100 * hurst)) + 7 * n
                    if process == "fbm":
                        path = fbm_path(seed, hurst, n)
                    else:
                        path = fou_path(seed, hurst, n, span, args.fou_theta)
                    start = time.perf_counter()
                    est = estimate_hurst(path, dt=dt, model=process)
                    elapsed = time.perf_counter() - start
                    if not compiled:
                        first_call, compiled = elapsed, True
                    else:
                        seconds["sdekit"].append(elapsed)
                    estimates["sdekit"].append(est.hurst)
                    stds.append(est.hurst_std)
                    start = time.perf_counter()
                    estimates["variogram"].append(variogram_hurst(path))
                    seconds["variogram"].append(time.perf_counter() - start)
                    if i < exact_paths:
                        start = time.perf_counter()
                        if process == "fbm":
                            h_exact = exact_mle_fbm(path)
                        else:
                            h_exact = exact_mle_fou(path, dt, (est.hurst, est.theta))[0]
                        seconds["exact"].append(time.perf_counter() - start)
                        estimates["exact"].append(h_exact)
                for name, values in estimates.items():
                    row = dict(
                        process=process,
                        n=n,
                        hurst=hurst,
                        estimator=name,
                        paths=len(values),
                        seconds=float(np.median(seconds[name]))
                        if seconds[name]
                        else None,
                        **_summary(values, hurst),
                    )
                    if name == "sdekit":
                        row["mean_std"] = float(np.mean(stds))
                        row["first_call_seconds"] = first_call
                        # The same paths as the exact MLE's, for a paired ratio.
                        paired = _summary(values[: len(estimates["exact"])], hurst)
                        row["rmse_on_exact_paths"] = paired["rmse"]
                    rows.append(row)
                    print(_format_row(row), flush=True)
    return rows


def timing(args) -> list[dict]:
    from sdekit.fractional import estimate_hurst

    out = []
    for n in args.timing_lengths:
        paths = [fbm_path(args.seed + 17 * k + n, 0.5, n) for k in range(3)]
        estimate_hurst(paths[0], dt=1.0 / (n - 1))  # compile
        times = []
        for path in paths[1:]:
            start = time.perf_counter()
            estimate_hurst(path, dt=1.0 / (n - 1))
            times.append(time.perf_counter() - start)
        row = dict(n=n, sdekit=float(np.median(times)), exact=None)
        if n <= args.exact_timing_max:
            start = time.perf_counter()
            exact_mle_fbm(paths[1])
            row["exact"] = time.perf_counter() - start
        out.append(row)
        print(
            f"timing n={n}: sdekit {row['sdekit']:.2f} s, exact {row['exact']}",
            flush=True,
        )
    return out


def _compile_child(n, method, model, cache, calls, seed) -> dict:
    # In a fresh process: JAX's persistent cache in `cache`, then `calls` estimates of
    # one path; CPU seconds of each (the first compiles, or loads from the cache).
    os.environ.setdefault("EQX_ON_ERROR", "nan")  # equinox's checks defeat the cache
    import jax

    jax.config.update("jax_compilation_cache_dir", cache)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.1)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)
    from sdekit.fractional import estimate_hurst

    path = fbm_path(seed + n, 0.35, n)
    out = {}
    # "default": no `method` argument (also for sdekit before it had one).
    options = {} if method == "default" else {"method": method}
    for k in range(calls):
        start = time.process_time()
        est = estimate_hurst(path, dt=1.0 / (n - 1), model=model, **options)
        out[f"call{k}"] = time.process_time() - start
    return dict(out, hurst=est.hurst)


def compile_timings(args) -> list[dict]:
    """Cold (first call in a process), again (second call) and warm (first call in a
    new process with the persistent compilation cache filled) CPU seconds of
    `estimate_hurst` per series length and likelihood."""
    out = []
    methods = args.compile_methods
    runs = [(n, m, "fbm") for n in args.compile_lengths for m in methods]
    fou = "default" if methods == ["default"] else "kalman"
    runs.append((max(args.compile_lengths), fou, "fou"))
    for n, method, model in runs:
        with tempfile.TemporaryDirectory() as cache:
            child = [sys.executable, __file__, "--compile-child"]
            spec = f"{n},{method},{model},{cache},{args.seed}"
            first = json.loads(
                subprocess.run(
                    child + [f"{spec},2"], capture_output=True, text=True, check=True
                ).stdout.splitlines()[-1]
            )
            warm = json.loads(
                subprocess.run(
                    child + [f"{spec},1"], capture_output=True, text=True, check=True
                ).stdout.splitlines()[-1]
            )
        row = dict(
            n=n,
            method=method,
            model=model,
            cold=first["call0"],
            again=first["call1"],
            warm=warm["call0"],
            hurst=first["hurst"],
        )
        out.append(row)
        print(
            f"compile n={n} {model} {method}: cold {row['cold']:.2f} again "
            f"{row['again']:.2f} warm {row['warm']:.2f} CPU s (H {row['hurst']:.4f})",
            flush=True,
        )
    return out


def _format_row(row) -> str:
    extra = ""
    if row["estimator"] == "sdekit":
        extra = f"  mean std {row['mean_std']:.4f}"
        if row["first_call_seconds"] is not None:
            extra += f"  first call (compiling) {row['first_call_seconds']:.1f} s"
    seconds = "-" if row["seconds"] is None else f"{row['seconds']:.3f}"
    return (
        f"{row['process']:>4} n={row['n']:<5d} H={row['hurst']:.1f} {row['estimator']:>9}: "
        f"bias {row['bias']:+.4f}  rmse {row['rmse']:.4f}  ({row['paths']} paths, "
        f"{seconds} s/path){extra}"
    )


def targets(rows, timings, lengths) -> dict:
    big = max(lengths)
    ratios = {}
    for row in rows:
        if (
            row["estimator"] != "sdekit"
            or row["n"] != big
            or not 0.2 <= row["hurst"] <= 0.8
        ):
            continue
        exact = next(
            r
            for r in rows
            if r["estimator"] == "exact"
            and (r["process"], r["n"], r["hurst"])
            == (row["process"], row["n"], row["hurst"])
        )
        key = f"{row['process']} H={row['hurst']}"
        ratios[key] = row["rmse_on_exact_paths"] / exact["rmse"]
    faster = [t for t in timings if t["exact"] is not None and t["n"] >= 2000]
    ns = np.array([t["n"] for t in timings], np.float64)
    secs = np.array([t["sdekit"] for t in timings])
    slope = float(np.polyfit(np.log(ns), np.log(secs), 1)[0]) if len(ns) > 1 else None
    return dict(
        rmse_ratio_at_largest_n=ratios,
        rmse_within_1_25=all(r <= 1.25 for r in ratios.values()),
        faster_than_exact_from_2000=all(t["sdekit"] < t["exact"] for t in faster),
        time_loglog_slope=slope,
    )


def markdown(result) -> str:
    """The tables of docs/fractional.md: accuracy per (process, n, H), then timing."""
    rows = result["rows"]
    by_key = {(r["process"], r["n"], r["hurst"], r["estimator"]): r for r in rows}
    lines = [
        "| process | n | H | sdekit bias | sdekit RMSE | exact MLE RMSE | RMSE ratio "
        "| variogram RMSE | sdekit s/path | exact s/path |",
        "|---" * 10 + "|",
    ]
    for process, n, hurst in sorted({k[:3] for k in by_key}, key=lambda k: k):
        ours = by_key[(process, n, hurst, "sdekit")]
        exact = by_key[(process, n, hurst, "exact")]
        vario = by_key[(process, n, hurst, "variogram")]
        ratio = ours["rmse_on_exact_paths"] / exact["rmse"]
        paths = "" if exact["paths"] == ours["paths"] else f" ({exact['paths']} paths)"
        lines.append(
            f"| {process} | {n} | {hurst} | {ours['bias']:+.4f} | {ours['rmse']:.4f} "
            f"| {exact['rmse']:.4f}{paths} | {ratio:.2f} | {vario['rmse']:.4f} "
            f"| {ours['seconds']:.2f} | {exact['seconds']:.2f} |"
        )
    lines += ["", "| n | sdekit s/path | exact MLE s/path |", "|---|---|---|"]
    for t in result["timing"]:
        exact = "-" if t["exact"] is None else f"{t['exact']:.2f}"
        lines.append(f"| {t['n']} | {t['sdekit']:.2f} | {exact} |")
    return "\n".join(lines)


def plot(result, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    rows, big = result["rows"], max(result["config"]["lengths"])
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    styles = {"sdekit": "C0", "exact": "C1", "variogram": "C2"}
    for process, line in (("fbm", "-"), ("fou", "--")):
        for name, colour in styles.items():
            sel = [
                r
                for r in rows
                if r["process"] == process and r["n"] == big and r["estimator"] == name
            ]
            if sel:
                axes[0].plot(
                    [r["hurst"] for r in sel],
                    [r["rmse"] for r in sel],
                    line,
                    color=colour,
                    marker="o",
                    label=f"{name} ({process})",
                )
    axes[0].set_xlabel("H")
    axes[0].set_ylabel(f"RMSE of the estimate of H (n = {big})")
    axes[0].set_yscale("log")
    axes[0].legend(fontsize=7)
    t = result["timing"]
    axes[1].loglog([r["n"] for r in t], [r["sdekit"] for r in t], "o-", label="sdekit")
    exact = [r for r in t if r["exact"] is not None]
    axes[1].loglog(
        [r["n"] for r in exact], [r["exact"] for r in exact], "o-", label="exact MLE"
    )
    axes[1].xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    axes[1].set_xlabel("number of points n")
    axes[1].set_ylabel("seconds per path (fBM, H = 0.5)")
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--paths", type=int, default=20, help="paths per (process, n, H)"
    )
    parser.add_argument("--lengths", default="500,2000", help="numbers of points")
    parser.add_argument("--hursts", default="0.2,0.3,0.5,0.7,0.8")
    parser.add_argument("--processes", default="fbm,fou")
    parser.add_argument("--fou-theta", type=float, default=1.0)
    parser.add_argument("--fou-span", type=float, default=10.0)
    parser.add_argument(
        "--exact-fou-paths",
        type=int,
        default=5,
        help="paths given to the exact MLE for fOU at n >= 2000 (it takes ~10 s per path)",
    )
    parser.add_argument("--timing-lengths", default="500,1000,2000,4000,8000")
    parser.add_argument(
        "--exact-timing-max",
        type=int,
        default=4000,
        help="largest n timed for the exact MLE",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--timing-only", action="store_true", help="only the timing sweep over n"
    )
    parser.add_argument(
        "--json-out", default=None, help="write the result as JSON here"
    )
    parser.add_argument("--plot", default=None, help="write the figure here (PNG)")
    parser.add_argument("--json", action="store_true", help="print the JSON, last line")
    parser.add_argument(
        "--compile-timings",
        action="store_true",
        help="only the cold / again / warm CPU times of both likelihoods over n",
    )
    parser.add_argument("--compile-lengths", default="128,256,512,768,1000")
    parser.add_argument(
        "--compile-methods",
        default="dense,kalman",
        help="estimate_hurst's `method`s to time, or `default` (no argument)",
    )
    parser.add_argument("--compile-child", default=None, help=argparse.SUPPRESS)
    parser.add_argument(
        "--from-json",
        default=None,
        metavar="FILE",
        help="print the tables (and --plot) of a saved result instead of running",
    )
    args = parser.parse_args()
    if args.compile_child:
        n, method, model, cache, seed, calls = args.compile_child.split(",")
        result = _compile_child(int(n), method, model, cache, int(calls), int(seed))
        print(json.dumps(result))
        return
    if args.compile_timings:
        args.compile_lengths = [int(v) for v in args.compile_lengths.split(",")]
        args.compile_methods = args.compile_methods.split(",")
        print(json.dumps(compile_timings(args), indent=1))
        return
    if args.from_json:
        with open(args.from_json) as f:
            saved = json.load(f)
        print(markdown(saved))
        if args.plot:
            plot(saved, args.plot)
        return
    args.lengths = [int(v) for v in args.lengths.split(",")]
    args.hursts = [float(v) for v in args.hursts.split(",")]
    args.processes = args.processes.split(",")
    args.timing_lengths = [int(v) for v in args.timing_lengths.split(",") if v]
    start = time.perf_counter()
    rows = [] if args.timing_only else recovery(args)
    timings = timing(args)
    result = dict(
        config={
            k: v for k, v in vars(args).items() if k not in ("json", "json_out", "plot")
        },
        rows=rows,
        timing=timings,
        targets=targets(rows, timings, args.lengths) if rows else None,
        seconds=time.perf_counter() - start,
    )
    if rows:
        print(markdown(result))
    print(json.dumps(result["targets"] or result["timing"], indent=1))
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump(result, f, indent=1)
    if args.plot and rows:
        plot(result, args.plot)
    if args.json:
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
