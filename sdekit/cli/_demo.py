"""`sdekit demo`: recover an Ornstein-Uhlenbeck process from irregular observations."""

import argparse
import json
import shlex
import sys


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "demo",
        help="fit an Ornstein-Uhlenbeck process to irregularly observed paths through the solver",
        description=(
            "Simulate Ornstein-Uhlenbeck paths observed at random times, then recover the "
            "drift and diffusion parameters by gradient descent through sdekit.solve "
            "(CRPS loss, shared trainer with early stopping and checkpoints)."
        ),
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument(
        "--paths", type=int, default=512, help="number of paths (default 512)"
    )
    parser.add_argument(
        "--epochs", type=int, default=60, help="maximum epochs (default 60)"
    )
    parser.add_argument(
        "--out",
        metavar="DIR",
        default=None,
        help="checkpoint directory (default: none); an existing run there is never "
        "replaced unless --resume or --overwrite says so",
    )
    run_mode = parser.add_mutually_exclusive_group()
    run_mode.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --out (same settings) instead of starting afresh",
    )
    run_mode.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the sdekit checkpoint in --out with a fresh run",
    )
    parser.add_argument(
        "--json", action="store_true", help="print the result as JSON, last line"
    )
    parser.add_argument(
        "--quiet", action="store_true", help="no progress output, only the results"
    )
    return parser


def _resume_command(args: argparse.Namespace) -> str:
    words = ["sdekit", "demo", "--seed", str(args.seed), "--paths", str(args.paths)]
    words += ["--epochs", str(args.epochs), "--out", str(args.out), "--resume"]
    return shlex.join(words + (["--json"] if args.json else []))


def run(args: argparse.Namespace) -> int:
    from sdekit.demo import ou_demo
    from sdekit.train import TrainingInterrupted

    try:
        result = ou_demo(
            seed=args.seed,
            num_paths=args.paths,
            epochs=args.epochs,
            checkpoint_dir=args.out,
            resume=args.resume,
            overwrite=args.overwrite,
            progress=not args.quiet,
        )
    except TrainingInterrupted as interrupt:
        if interrupt.checkpoint_dir is None:
            print(f"sdekit: {interrupt}", file=sys.stderr)
        else:
            print(
                f"sdekit: interrupted after epoch {interrupt.epochs_completed} of "
                f"{interrupt.epochs}; checkpoint saved in {interrupt.checkpoint_dir}\n"
                f"resume with: {_resume_command(args)}",
                file=sys.stderr,
            )
        return 130
    for name, true in result["true"].items():
        fitted = result["fitted"][name]
        print(f"{name:>6}: true {true:.3f}  fitted {fitted:.3f}")
    print(
        f"validation CRPS: fitted {result['valid_crps_fitted']:.4f}, true {result['valid_crps_true']:.4f}"
    )
    if args.json:
        print(json.dumps(result), flush=True)
    return 0
