"""`sdekit evaluate`: reload a `sdekit fit` checkpoint and recompute its test metrics."""

import argparse
import json


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "evaluate",
        help="recompute the test metrics of a `sdekit fit` checkpoint",
        description=(
            "Reload the best model of a checkpoint directory written by `sdekit fit`, "
            "rebuild its data (same masks and split from the stored config) and print "
            "the test metrics, which equal those `sdekit fit` printed."
        ),
    )
    parser.add_argument(
        "--checkpoint", required=True, metavar="DIR", help="checkpoint directory"
    )
    parser.add_argument(
        "--json", action="store_true", help="print the report as JSON on the last line"
    )
    return parser


def run(args: argparse.Namespace) -> int:
    from sdekit.cli._fit import _summary
    from sdekit.stable import evaluate_job

    report = evaluate_job(args.checkpoint)
    print(_summary(report))
    if args.json:
        print(json.dumps(report), flush=True)
    return 0
