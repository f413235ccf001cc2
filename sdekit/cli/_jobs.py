"""The family jobs on the command line: `sdekit fit`, `evaluate`, `predict`, `sample` and
`logprob`, each routed to the family that owns the model (`fit --model NAME`) or that
wrote the checkpoint (`--checkpoint DIR`).

Parsing takes two passes: the first reads only `--model` / `--checkpoint` to find the
family (nothing heavy is imported); the second parses the whole command line with the
options every family shares (added here) and the family's own (added by its job).
"""

import argparse
import json
import shlex
import sys
from collections.abc import Sequence

from .. import _families


# `sdekit fit` without `--model` trains this one, as it did before families existed.
DEFAULT_MODEL = "lnsde"

_HELP = {
    "fit": "train a model on a data set, write a checkpoint and report test metrics",
    "evaluate": "recompute the test report of a checkpoint written by `sdekit fit`",
    "predict": "apply a checkpoint's model to new data and save the predictions",
    "sample": "draw samples from a checkpoint's generative model",
    "logprob": "log-density of given points under a checkpoint's model",
}


def add_placeholder(subparsers, name: str) -> None:
    """List job `name` in `sdekit --help`; its arguments are parsed by [`run`][]."""
    subparsers.add_parser(name, help=_HELP[name], add_help=False)


def _add_cluster_options(parser: argparse.ArgumentParser) -> None:
    cluster = parser.add_argument_group(
        "several processes (jax.distributed; default: this process alone, or "
        "JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID, or a "
        "Slurm or Open MPI launch)"
    )
    cluster.add_argument("--coordinator", metavar="HOST:PORT", help="address of process 0")
    cluster.add_argument(
        "--num-processes", type=int, metavar="N", help="number of processes"
    )
    cluster.add_argument("--process-id", type=int, metavar="I", help="this process's index")


def _add_shared(
    parser: argparse.ArgumentParser, name: str, family: _families.Family | None = None
) -> None:
    """The options every family's job `name` takes (`family`: the one routed to)."""
    if name == "fit":
        models = _families.FAMILIES if family is None else (family,)
        parser.add_argument(
            "--model",
            default=DEFAULT_MODEL,
            choices=[model for f in models for model in f.models],
            help="the model (this family's: %(choices)s)",
        )
        parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
        parser.add_argument(
            "--out",
            metavar="DIR",
            default=None,
            help="checkpoint directory (default: a name under runs/ made of the model, "
            "the data and the seed); an existing run there is never replaced unless "
            "--resume or --overwrite says so",
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
        _add_cluster_options(parser)
    else:
        parser.add_argument(
            "--checkpoint",
            metavar="DIR",
            required=True,
            help="a checkpoint directory written by `sdekit fit`",
        )
    if name in ("predict", "logprob"):
        parser.add_argument(
            "--data", metavar="FILE", required=True, help="the input data file"
        )
    if name == "sample":
        parser.add_argument(
            "-n", dest="num", type=int, required=True, help="number of samples"
        )
        parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    if name in ("predict", "sample"):
        parser.add_argument(
            "--out",
            metavar="FILE",
            required=True,
            help="where to save the array (.npy)",
        )
    parser.add_argument(
        "--json",
        action="store_true",
        help="print the report as one JSON object on the last line of stdout",
    )
    parser.add_argument(
        "--quiet", action="store_true", help="no progress output, only the results"
    )


def _overview(name: str) -> str:
    """`sdekit fit --help` before a model is chosen: the families and their models."""
    lines = [f"usage: sdekit {name} --model NAME [options]", "", _HELP[name] + ".", ""]
    lines.append("models, by family (`sdekit fit --model NAME --help` shows its options):")
    for family in _families.FAMILIES:
        lines.append(f"  {family.name}: {', '.join(family.models)}")
        if family.summary:
            lines.append(f"      {family.summary}")
    return "\n".join(lines)


def _checkpoint_overview(name: str) -> str:
    lines = [
        f"usage: sdekit {name} --checkpoint DIR [options]",
        "",
        _HELP[name] + ".",
        "",
        "The checkpoint records the family that wrote it; `sdekit "
        f"{name} --checkpoint DIR --help` shows that family's options.",
        "",
        "families offering it:",
    ]
    # Which families offer the job is what their JOBS say: importing them (and JAX)
    # makes this help slower than `fit --help`, but it cannot disagree with them.
    for family in _families.FAMILIES:
        if name in family.load_jobs():
            lines.append(f"  {family.name}: models {', '.join(family.models)}")
    return "\n".join(lines)


def _find_family(name: str, argv: Sequence[str]) -> _families.Family | None:
    """The family the command line routes to, or `None` when `--help` asks for the
    overview (printed here)."""
    first = argparse.ArgumentParser(add_help=False)
    first.add_argument("-h", "--help", action="store_true")
    first.add_argument("--model" if name == "fit" else "--checkpoint", default=None)
    known, _ = first.parse_known_args(argv)
    if name == "fit":
        if known.model is None and known.help:
            print(_overview(name))
            return None
        return _families.family_of_model(known.model or DEFAULT_MODEL)
    if known.checkpoint is None:
        if known.help:
            print(_checkpoint_overview(name))
            return None
        # The full parser reports the missing option in argparse's own words.
        return None
    return _families.family_of_checkpoint(known.checkpoint)


def _start_jax(name: str, argv: Sequence[str]) -> None:
    """Settings that must precede the family's imports: the compilation cache before
    equinox reads its error setting (see `enable_compilation_cache`), and joining a
    multi-process run before anything starts JAX's backend."""
    from .. import train  # light: its names load on first use

    train.enable_compilation_cache()
    if name == "fit":
        cluster = argparse.ArgumentParser(add_help=False)
        _add_cluster_options(cluster)
        known, _ = cluster.parse_known_args(argv)
        train.init_distributed(known.coordinator, known.num_processes, known.process_id)


def _resume_command(argv: Sequence[str]) -> str:
    """The command line that continues an interrupted `sdekit fit`."""
    words = [w for w in argv if w not in ("--overwrite", "--resume")]
    return shlex.join(["sdekit", "fit", *words, "--resume"])


def run(name: str, argv: Sequence[str]) -> int:
    """Parse and run family job `name` with the arguments after `sdekit NAME`."""
    family = _find_family(name, argv)
    if family is None:
        if name != "fit" and not any(a in ("-h", "--help") for a in argv):
            parser = argparse.ArgumentParser(prog=f"sdekit {name}")
            _add_shared(parser, name)
            parser.parse_args(argv)  # exits 2 naming the missing --checkpoint
        return 0
    if not any(a in ("-h", "--help") for a in argv):
        _start_jax(name, argv)
    jobs = family.load_jobs()
    if name not in jobs:
        offered = ", ".join(f"sdekit {job}" for job in jobs)
        raise ValueError(
            f"The {family.name} family has no `sdekit {name}` job; it offers {offered}."
        )
    job = jobs[name]
    parser = argparse.ArgumentParser(
        prog=f"sdekit {name}", description=job.help or _HELP[name]
    )
    _add_shared(parser, name, family)
    job.add_arguments(parser)
    args = parser.parse_args(argv)
    args.family = family.name
    try:
        report = job.run(args)
    except KeyboardInterrupt as interrupt:
        _report_interrupt(interrupt, argv)
        return 130
    print(job.describe(report), flush=True)
    if args.json:
        print(json.dumps(report), flush=True)
    return 0


def _report_interrupt(interrupt: KeyboardInterrupt, argv: Sequence[str]) -> None:
    checkpoint = getattr(interrupt, "checkpoint_dir", None)
    done = getattr(interrupt, "epochs_completed", None)
    total = getattr(interrupt, "epochs", None)
    if checkpoint is None:
        where = "nothing was saved (no epoch had finished)" if done == 0 else ""
        print(f"sdekit: interrupted; {where}".rstrip("; "), file=sys.stderr)
        return
    command = list(argv)
    if "--out" not in command and not any(w.startswith("--out=") for w in command):
        command += ["--out", str(checkpoint)]
    progress = f" after epoch {done} of {total}" if done is not None else ""
    print(
        f"sdekit: interrupted{progress}; checkpoint saved in {checkpoint}\n"
        f"resume with: {_resume_command(command)}",
        file=sys.stderr,
    )
