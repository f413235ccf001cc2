"""`sdekit demo`: recover an Ornstein-Uhlenbeck process from irregular observations."""

import argparse
import json


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
        "--out", default=None, help="checkpoint directory (default: none)"
    )
    parser.add_argument(
        "--json", action="store_true", help="print the result as JSON, last line"
    )
    return parser


def run(args: argparse.Namespace) -> int:
    from sdekit.demo import ou_demo

    result = ou_demo(
        seed=args.seed,
        num_paths=args.paths,
        epochs=args.epochs,
        checkpoint_dir=args.out,
        progress=not args.json,
    )
    for name, true in result["true"].items():
        fitted = result["fitted"][name]
        print(f"{name:>6}: true {true:.3f}  fitted {fitted:.3f}")
    print(
        f"validation CRPS: fitted {result['valid_crps_fitted']:.4f}, true {result['valid_crps_true']:.4f}"
    )
    if args.json:
        print(json.dumps(result), flush=True)
    return 0
