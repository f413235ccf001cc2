"""The family registry: which model family owns which model name, and the jobs each
family offers (fit, evaluate, predict, sample, logprob).

This module imports only the standard library: the `sdekit` command reads it to answer
`sdekit fit --help` and to route `--model NAME` or `--checkpoint DIR` to a family
before anything heavy (JAX) is imported. A family's own module is imported only when
one of its jobs runs.

Adding a family is its folder plus one line in `FAMILIES`:

```python
Family("langevin", models=("langevin-flow",), jobs="sdekit.langevin._jobs")
```

where `sdekit/langevin/_jobs.py` defines `JOBS`, a dict from job name (`"fit"`,
`"evaluate"`, and optionally `"predict"`, `"sample"`, `"logprob"`) to a [`Job`][].
"""

import argparse
import dataclasses
import importlib
import json
import os
from collections.abc import Callable, Mapping
from typing import Any


# The jobs a family may offer, in the order the command line lists them.
JOB_NAMES = ("fit", "evaluate", "predict", "sample", "logprob")

# Checkpoints written before families were recorded are the stable family's.
_LEGACY_FAMILY = "stable"


@dataclasses.dataclass(frozen=True)
class Job:
    """One job of a family, as the command line drives it.

    **Fields:**

    - `add_arguments`: `(parser) -> None` adds the family's own options to the job's
        `argparse` parser. The command line has already added the options every family
        shares (see `sdekit/cli/_jobs.py`: `--checkpoint`, `--out`, `--json`, ...). Must
        not import anything heavy: `--help` runs it.
    - `run`: `(args) -> report` does the job with one call of the family's public API
        and returns a JSON-ready dict (the command prints it as the last line with
        `--json`). Raises `ValueError` (one line for the user) on bad input, before any
        work starts.
    - `describe`: `(report) -> str`: the lines printed for people before the JSON.
    - `help`: one line for the command's help.
    """

    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], dict[str, Any]]
    describe: Callable[[dict[str, Any]], str]
    help: str = ""


@dataclasses.dataclass(frozen=True)
class Family:
    """A registration: a family's name, its model names and where its jobs live.

    **Fields:**

    - `name`: the family's name, recorded in every checkpoint it writes (the
        `"family"` key of `config.json`).
    - `models`: the names `sdekit fit --model NAME` accepts for this family.
    - `jobs`: the module defining `JOBS: dict[str, Job]`; imported on first use.
    - `summary`: one line for `sdekit fit --help`.
    """

    name: str
    models: tuple[str, ...]
    jobs: str
    summary: str = ""

    def load_jobs(self) -> Mapping[str, Job]:
        """The family's jobs (imports its module)."""
        module = importlib.import_module(self.jobs)
        jobs = getattr(module, "JOBS", None)
        if not isinstance(jobs, Mapping) or "fit" not in jobs or "evaluate" not in jobs:
            raise TypeError(
                f"{self.jobs} must define JOBS, a dict with at least 'fit' and "
                "'evaluate' jobs."
            )
        unknown = set(jobs) - set(JOB_NAMES)
        if unknown:
            raise TypeError(f"{self.jobs}: unknown jobs {sorted(unknown)}.")
        return jobs


FAMILIES: tuple[Family, ...] = (
    Family(
        "stable",
        models=("lsde", "lnsde", "gsde", "neural-ode", "neural-sde", "neural-cde"),
        jobs="sdekit.stable._jobs",
        summary="stable neural SDEs for irregular, partly missing time series",
    ),
    Family(
        "interpolants",
        models=("interpolant",),
        jobs="sdekit.interpolants._jobs",
        summary="stochastic interpolants: flows and diffusions, sampling, log-densities",
    ),
    Family(
        "langevin",
        models=("langevin-flow",),
        jobs="sdekit.langevin._jobs",
        summary="latent Langevin flows for neural population spiking data (NLB metrics)",
    ),
)


def family_of_model(model: str) -> Family:
    """The family that owns the model name `model` (a `ValueError` listing every
    model name when none does)."""
    for family in FAMILIES:
        if model in family.models:
            return family
    names = ", ".join(m for family in FAMILIES for m in family.models)
    raise ValueError(f"Unknown model {model!r}; choose one of {names}.")


def family_by_name(name: str) -> Family:
    """The registered family called `name`."""
    for family in FAMILIES:
        if family.name == name:
            return family
    known = ", ".join(family.name for family in FAMILIES)
    raise ValueError(f"Unknown model family {name!r}; registered: {known}.")


def read_config(checkpoint: str | os.PathLike) -> dict[str, Any]:
    """The configuration stored in a checkpoint directory (its `config.json`), with a
    clear error when the path does not exist or is not a checkpoint."""
    path = os.fspath(checkpoint)
    if not os.path.exists(path):
        raise ValueError(
            f"{path} does not exist; pass the directory that `sdekit fit --out` wrote."
        )
    if not os.path.isdir(path):
        raise ValueError(
            f"{path} is a file, not a checkpoint directory; pass the directory that "
            "`sdekit fit --out` wrote."
        )
    config_file = os.path.join(path, "config.json")
    if not os.path.isfile(config_file):
        raise ValueError(
            f"{path} is not an sdekit checkpoint (it has no config.json); pass the "
            "directory that `sdekit fit --out` wrote."
        )
    try:
        with open(config_file) as f:
            config = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"{config_file} cannot be read as JSON: {e}") from None
    if not isinstance(config, dict):
        raise ValueError(f"{config_file} does not hold a configuration object.")
    return config


def family_of_checkpoint(checkpoint: str | os.PathLike) -> Family:
    """The family that wrote a checkpoint directory, from its `config.json`."""
    return family_by_name(read_config(checkpoint).get("family", _LEGACY_FAMILY))
