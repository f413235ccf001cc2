"""The robustness study of the stable neural SDEs (Oh, Lim & Kim, ICLR 2024, section
5.4): test accuracy of LSDE, LNSDE, GSDE, neural CDE, naive neural SDE and neural ODE
as each channel loses 0-70% of its points, with 1-NN DTW and MiniRocket (aeon) on
the same masks, linearly imputed, as peers.

Every run is one `sdekit.stable.fit_job` with the library's defaults (what `sdekit fit`
does), so the table measures the defaults. Results are appended to a JSON-lines file
as they come, and a rerun skips what is already there, so a long study can be run in
pieces. Prints a markdown table (mean and standard deviation over seeds) and the
average over data sets per missing rate; `--plot` draws accuracy against missing rate.

    python benchmarks/stable_sde_missing.py --datasets BasicMotions,GunPoint \
        --rates 0,0.5 --seeds 0 --epochs 100 --results results.jsonl --plot acc.png
"""

import argparse
import collections
import json
import os
import sys
import tempfile
import time

import jax
import numpy as np


DATASETS = "BasicMotions,GunPoint,ArrowHead,ItalyPowerDemand,JapaneseVowels"
MODELS = "lsde,lnsde,gsde,neural-cde,neural-sde,neural-ode"
PEERS = "1nn-dtw,minirocket"
STABLE = ("lsde", "lnsde", "gsde")


def peer_accuracy(name: str, dataset: str, rate: float, seed: int) -> float:
    """A peer's test accuracy on the masks `sdekit fit` uses (aeon's split, the
    train split masked with stream 0 and the test split with stream 1), after linear
    imputation in time; trained on the whole masked train split."""
    from sdekit.data import drop_observations, fill_missing, load_dataset

    train, test = load_dataset(dataset)
    train = drop_observations(train, rate, seed, 0)
    test = drop_observations(test, rate, seed, 1)

    def imputed(data):
        # aeon wants (n, channels, length).
        return np.transpose(
            np.asarray(fill_missing(data.times, data.values), np.float64), (0, 2, 1)
        )

    if name == "1nn-dtw":
        from aeon.classification.distance_based import KNeighborsTimeSeriesClassifier

        model = KNeighborsTimeSeriesClassifier(n_neighbors=1, distance="dtw")
    elif name == "minirocket":
        from aeon.classification.convolution_based import MiniRocketClassifier

        model = MiniRocketClassifier(random_state=seed)
    else:
        raise ValueError(f"Unknown peer {name!r}; choose from {PEERS}.")
    model.fit(imputed(train), train.labels)
    return float(np.mean(model.predict(imputed(test)) == test.labels))


def model_accuracy(
    model: str,
    dataset: str,
    rate: float,
    seed: int,
    epochs: int | None,
    bounded: bool = False,
) -> dict:
    from sdekit.stable import fit_job, FitConfig

    options = {} if epochs is None else {"epochs": epochs}
    config = FitConfig(
        model=model,
        dataset=dataset,
        missing=rate,
        seed=seed,
        bounded=bounded,
        **options,
    )
    with tempfile.TemporaryDirectory() as out:
        report = fit_job(config, out, progress=False)
    # Every fit compiles its own functions and JAX keeps them all: after about a
    # hundred fits in one process LLVM can no longer map code memory ("Cannot
    # allocate memory", seen here at fit 98). Nothing is reused between fits anyway.
    jax.clear_caches()
    return {
        "accuracy": report["test_accuracy"],
        "epochs": report["epochs"],
        "seconds": report["seconds"],
    }


def summarise(
    rows: list[dict], methods: list[str], rates: list[float], datasets: list[str]
) -> str:
    def fmt(values):
        if not values:
            return "-"
        return (
            f"{np.mean(values):.3f} ± {np.std(values):.3f}"
            if len(values) > 1
            else f"{values[0]:.3f}"
        )

    lines = [
        "| data set | missing | " + " | ".join(methods) + " |",
        "|---" * (len(methods) + 2) + "|",
    ]
    for d in datasets:
        for rate in rates:
            lines.append(
                f"| {d} | {rate:g} | "
                + " | ".join(fmt(seed_averages(rows, m, rate, [d])) for m in methods)
                + " |"
            )
    lines.append("")
    lines.append(
        "Average over data sets (± the standard deviation of that average over seeds):"
    )
    lines.append("")
    lines.append("| missing | " + " | ".join(methods) + " |")
    lines.append("|---" * (len(methods) + 1) + "|")
    for rate in rates:
        cells = []
        for m in methods:
            per_seed = seed_averages(rows, m, rate, datasets)
            cells.append(fmt(per_seed) if per_seed else "-")
        lines.append(f"| {rate:g} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def seed_averages(
    rows: list[dict], method: str, rate: float, datasets: list[str]
) -> list[float]:
    """The accuracy averaged over `datasets`, one value per seed that has all of them
    (the spread of these is the seed-to-seed spread of the average)."""
    by_seed = collections.defaultdict(dict)
    for r in rows:
        if r["method"] == method and r["missing"] == rate:
            by_seed[r["seed"]][r["dataset"]] = r["accuracy"]
    return [
        float(np.mean([acc[d] for d in datasets]))
        for _, acc in sorted(by_seed.items())
        if all(d in acc for d in datasets)
    ]


def plot(rows, methods, rates, datasets, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = datasets + ["average"]
    fig, axes = plt.subplots(
        1, len(panels), figsize=(3.2 * len(panels), 3.2), sharey=True
    )
    for ax, panel in zip(np.atleast_1d(axes), panels):
        names = datasets if panel == "average" else [panel]
        for m in methods:
            xs, ys, spread = [], [], []
            for rate in rates:
                per_seed = seed_averages(rows, m, rate, names)
                if per_seed:
                    xs.append(rate)
                    ys.append(np.mean(per_seed))
                    spread.append(np.std(per_seed))
            if m.split("+")[0] in STABLE:
                style = "-o"
            elif m in PEERS.split(","):
                style = "--s"
            else:
                style = ":^"
            (line,) = ax.plot(xs, ys, style, label=m, markersize=4)
            ys, spread = np.asarray(ys), np.asarray(spread)
            # A band of one standard deviation over seeds.
            ax.fill_between(
                xs, ys - spread, ys + spread, color=line.get_color(), alpha=0.08
            )
        ax.set_title(panel)
        ax.set_xlabel("missing rate")
        ax.grid(alpha=0.3)
    np.atleast_1d(axes)[0].set_ylabel("test accuracy")
    handles, labels = np.atleast_1d(axes)[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="center right", fontsize=8)
    fig.tight_layout(rect=(0, 0, 0.9, 1))
    fig.savefig(path, dpi=120)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--datasets", default=DATASETS, help=f"comma-separated (default {DATASETS})"
    )
    parser.add_argument(
        "--rates", default="0,0.3,0.5,0.7", help="missing rates (default 0,0.3,0.5,0.7)"
    )
    parser.add_argument(
        "--models", default=MODELS, help=f"comma-separated (default {MODELS})"
    )
    parser.add_argument(
        "--peers", default=PEERS, help=f"comma-separated, or 'none' (default {PEERS})"
    )
    parser.add_argument(
        "--seeds", default="0,1,2", help="comma-separated seeds (default 0,1,2)"
    )
    parser.add_argument(
        "--epochs", type=int, default=None, help="override the default epochs"
    )
    parser.add_argument(
        "--bounded",
        action="store_true",
        help="the official code's tanh-bounded dynamics (rows named e.g. lsde+bounded)",
    )
    parser.add_argument(
        "--results",
        default="stable_sde_missing.jsonl",
        help="JSON-lines results file (appended)",
    )
    parser.add_argument(
        "--plot", default=None, help="write the accuracy-vs-missing-rate plot here"
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help="print all rows as one JSON object on the last line",
    )
    args = parser.parse_args(argv)

    datasets = [d for d in args.datasets.split(",") if d]
    rates = [float(r) for r in args.rates.split(",")]
    models = [m for m in args.models.split(",") if m]
    suffix = "+bounded" if args.bounded else ""
    peers = [] if args.peers == "none" else [p for p in args.peers.split(",") if p]
    seeds = [int(s) for s in args.seeds.split(",")]
    methods = [m + suffix for m in models] + peers

    rows = []
    if os.path.exists(args.results):
        with open(args.results) as f:
            rows = [json.loads(line) for line in f if line.strip()]
    done = {
        (r["dataset"], r["missing"], r["seed"], r["method"], r.get("epochs_arg"))
        for r in rows
    }
    for dataset in datasets:
        for rate in rates:
            for seed in seeds:
                for method in methods:
                    key = (
                        dataset,
                        rate,
                        seed,
                        method,
                        args.epochs if method not in peers else None,
                    )
                    if key in done:
                        continue
                    start = time.perf_counter()
                    if method not in peers:
                        out = model_accuracy(
                            method.removesuffix(suffix),
                            dataset,
                            rate,
                            seed,
                            args.epochs,
                            bounded=args.bounded,
                        )
                    else:
                        out = {"accuracy": peer_accuracy(method, dataset, rate, seed)}
                    row = dict(
                        dataset=dataset,
                        missing=rate,
                        seed=seed,
                        method=method,
                        epochs_arg=key[4],
                        **out,
                    )
                    row["wall"] = round(time.perf_counter() - start, 2)
                    rows.append(row)
                    with open(args.results, "a") as f:
                        f.write(json.dumps(row) + "\n")
                    print(json.dumps(row), file=sys.stderr, flush=True)
    wanted = [
        r
        for r in rows
        if r["dataset"] in datasets
        and r["missing"] in rates
        and r["seed"] in seeds
        and r["method"] in methods
        and r.get("epochs_arg") == (args.epochs if r["method"] not in peers else None)
    ]
    print(summarise(wanted, methods, rates, datasets))
    if args.plot:
        plot(wanted, methods, rates, datasets, args.plot)
    if args.json:
        print(json.dumps({"rows": wanted}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
