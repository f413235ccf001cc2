"""`sdekit bench`: the solver speed benchmark, as `benchmarks/solver_speed.py` runs it."""

import argparse
import inspect
import json


def _default(parameter: str):
    from sdekit.bench import solver_speed

    return inspect.signature(solver_speed).parameters[parameter].default


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "bench",
        help="time a neural SDE's forward and backward pass: sdekit, lax.scan, diffrax, torchsde",
        description=(
            "Time one forward-and-backward pass of the reference neural SDE (d=16, MLP width 64, "
            "Euler-Maruyama on [0, 1]) with sdekit, a hand-written jax.lax.scan, diffrax with a "
            "VirtualBrownianTree and torchsde; print milliseconds per step. See "
            "docs/benchmarks.md."
        ),
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help="also print the full result as JSON, on the last line",
    )
    for name, help_text in (
        ("repeats", "timed repeats; the figures are their medians"),
        ("batch", "number of paths"),
        ("steps", "number of solver steps on [0, 1]"),
        ("number", "gradient evaluations per repeat"),
        ("seed", "random seed"),
    ):
        parser.add_argument(
            f"--{name}",
            type=int,
            default=None,
            help=f"{help_text} (default {_default(name)})",
        )
    parser.add_argument(
        "--variants",
        default=None,
        help="comma-separated subset of sdekit,lax_scan,lax_scan_remat,diffrax_vbt,torchsde "
        "(default all)",
    )
    return parser


def run(args: argparse.Namespace) -> int:
    from sdekit.bench import format_solver_speed, solver_speed

    # Only what was given, so that the benchmark's own defaults stay the single source.
    options = {
        name: getattr(args, name)
        for name in ("repeats", "batch", "steps", "number", "seed", "variants")
        if getattr(args, name) is not None
    }
    result = solver_speed(**options)
    print(format_solver_speed(result))
    if args.json:
        print(json.dumps(result), flush=True)
    return 0
