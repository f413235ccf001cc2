"""Adjoint memory: peak memory and time of one gradient of a neural SDE against the number of
solver steps, for sdekit's default (checkpointed backpropagation) and `sdekit.ReversibleAdjoint()`.

    python benchmarks/adjoint_memory.py --rss --json
    python benchmarks/adjoint_memory.py --calculus stratonovich --json

prints a table and, with `--json`, the full result as JSON on the last line. Peak memory is XLA's
compile-time buffer assignment; `--rss` adds the peak resident memory of a fresh process per
configuration. What is measured and the figures on record: docs/benchmarks.md.
"""

import argparse
import json

from sdekit.bench import adjoint_memory, format_adjoint_memory


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--json", action="store_true", help="print the result as JSON, last line"
    )
    parser.add_argument(
        "--steps",
        type=int,
        nargs="+",
        default=[100, 300, 1000, 3000, 10000],
        help="numbers of solver steps on [0, 1]",
    )
    parser.add_argument("--batch", type=int, default=128, help="number of paths")
    parser.add_argument(
        "--repeats", type=int, default=3, help="timed gradient calls (median)"
    )
    parser.add_argument(
        "--calculus",
        choices=("ito", "stratonovich"),
        default="ito",
        help="the calculus the SDE is written in",
    )
    parser.add_argument(
        "--rss", action="store_true", help="also measure peak RSS per config"
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    result = adjoint_memory(
        steps=args.steps,
        batch=args.batch,
        calculus=args.calculus,
        repeats=args.repeats,
        rss=args.rss,
        seed=args.seed,
    )
    print(format_adjoint_memory(result))
    if args.json:
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
