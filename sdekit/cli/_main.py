"""The `sdekit` command: parse the arguments, call the library, print.

Each subcommand lives in its own module, which provides

- `add_parser(subparsers) -> argparse.ArgumentParser`: adds and returns its parser;
- `run(args: argparse.Namespace) -> int`: does the work, returns the exit status.

Adding a model family's commands is one module beside `_bench.py` and one line in `SUBCOMMANDS`.
Subcommand modules import the library inside `run`, so that `sdekit --help` stays quick.
"""

import argparse
import importlib
import importlib.metadata
import os
import sys
from collections.abc import Sequence


SUBCOMMANDS = (
    "sdekit.cli._bench",
    "sdekit.cli._fit",
    "sdekit.cli._evaluate",
    "sdekit.cli._demo",
    "sdekit.cli._hurst",
)

# Errors that mean "the input was wrong", which the user can fix: reported as one line. Anything
# else is a bug in sdekit and keeps its traceback.
_USER_ERRORS = (ValueError, TypeError, OSError)


def version() -> str:
    """sdekit's version: the package's own, else the installed distribution's, else 'unknown'."""
    import sdekit

    found = getattr(sdekit, "__version__", None)
    if found:
        return str(found)
    try:
        return importlib.metadata.version("sdekit")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every registered subcommand."""
    parser = argparse.ArgumentParser(
        prog="sdekit",
        description="Differentiable SDEs in JAX, built on diffrax.",
        epilog="Set SDEKIT_DEBUG=1 to see the full traceback of an error.",
    )
    parser.add_argument("--version", action="version", version=f"sdekit {version()}")
    subparsers = parser.add_subparsers(
        dest="command", metavar="<command>", title="commands", required=True
    )
    for name in SUBCOMMANDS:
        module = importlib.import_module(name)
        subparser = module.add_parser(subparsers)
        subparser.set_defaults(run=module.run)
    return parser


def _one_line(error: BaseException) -> str:
    if isinstance(error, OSError) and error.strerror and error.filename is not None:
        message = f"{error.strerror}: {error.filename}"
    else:
        message = str(error) or type(error).__name__
    return " ".join(message.split())


def main(argv: Sequence[str] | None = None) -> int:
    """Run the `sdekit` command line.

    **Arguments:**

    - `argv`: the arguments after the program name; default `sys.argv[1:]`.

    **Returns:**

    The exit status: 0 on success, 1 when the library rejects the input (reported on stderr as one
    line `sdekit: error: <message>`, or re-raised when the environment sets `SDEKIT_DEBUG=1`),
    2 for a malformed command line (argparse's own message).
    """
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except _USER_ERRORS as error:
        if os.environ.get("SDEKIT_DEBUG", "") not in ("", "0"):
            raise
        print(f"sdekit: error: {_one_line(error)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("sdekit: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
