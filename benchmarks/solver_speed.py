"""Solver speed: one forward-and-backward pass of a neural SDE with sdekit, a hand-written
`jax.lax.scan`, diffrax with a `VirtualBrownianTree`, and torchsde, in milliseconds per step.

    python benchmarks/solver_speed.py --repeats 15 --json

prints a table and, with `--json`, the full result as JSON on the last line. What is measured and
the figures on record: docs/benchmarks.md. (`sdekit bench` runs the same benchmark.)
"""

import argparse
import json

from sdekit.bench import format_solver_speed, solver_speed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--json", action="store_true", help="print the result as JSON, last line"
    )
    parser.add_argument(
        "--repeats", type=int, default=5, help="timed repeats (medians)"
    )
    parser.add_argument("--batch", type=int, default=128, help="number of paths")
    parser.add_argument(
        "--steps", type=int, default=200, help="Euler-Maruyama steps on [0, 1]"
    )
    parser.add_argument(
        "--number", type=int, default=3, help="gradient calls per repeat"
    )
    parser.add_argument(
        "--variants", default=None, help="comma-separated subset (default all)"
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    result = solver_speed(
        repeats=args.repeats,
        batch=args.batch,
        steps=args.steps,
        variants=args.variants,
        number=args.number,
        seed=args.seed,
    )
    print(format_solver_speed(result))
    if args.json:
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
