"""The `sdekit` command: parse the arguments, call the library, print.

The family jobs (`fit`, `evaluate`, `predict`, `sample`, `logprob`) are routed by
`_jobs.py` to the family that owns the model or wrote the checkpoint (see
`sdekit/_families.py`): a new family adds no subcommand. Every other subcommand lives in
its own module, which provides

- `add_parser(subparsers) -> argparse.ArgumentParser`: adds and returns its parser;
- `run(args: argparse.Namespace) -> int`: does the work, returns the exit status.

Nothing here or in a subcommand module imports JAX before `run`, so that `sdekit --help`
and `sdekit --version` answer at once.
"""

import argparse
import importlib
import importlib.metadata
import os
import sys
from collections.abc import Sequence
from typing import NoReturn

from .. import _families
from . import _jobs


SUBCOMMANDS = (
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
    for name in _families.JOB_NAMES:
        _jobs.add_placeholder(subparsers, name)
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
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv and argv[0] in _families.JOB_NAMES:
            return _jobs.run(argv[0], argv[1:])
        args = build_parser().parse_args(argv)
        return int(args.run(args) or 0)
    except _USER_ERRORS as error:
        if os.environ.get("SDEKIT_DEBUG", "") not in ("", "0"):
            raise
        print(f"sdekit: error: {_one_line(error)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("sdekit: interrupted", file=sys.stderr)
        return 130


# Commands that answer a question and write nothing left open (their files are
# written whole and renamed before `main` returns), so that the program can end at
# once: the interpreter's teardown after JAX (destroying the XLA client and its
# thread pools) takes 0.4-0.6 s on 2 cores, a fifth of a warm `sdekit hurst`.
# `fit` and `demo` end normally: a multi-process run shuts `jax.distributed` down
# at exit.
_PROMPT_EXIT = frozenset({"hurst", "evaluate", "predict", "sample", "logprob"})


def console() -> NoReturn:
    """The `sdekit` program: [`sdekit.cli.main`][] on `sys.argv`, then exit with its
    status."""
    argv = sys.argv[1:]
    code = main(argv)
    if argv and argv[0] in _PROMPT_EXIT:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":
    console()
