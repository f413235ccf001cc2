"""What a run will do with its checkpoint directory, decided before any work starts.

One rule for every command and for `fit` itself: a directory that does not exist or is
empty gets a fresh run; a checkpoint is continued only when asked to (`--resume`, with the
same settings) and replaced only when asked to (`--overwrite`); anything else in the way
(a file, a directory that is not a checkpoint) is refused.
"""

import dataclasses
import json
import os
import pathlib
import sys
from collections.abc import Callable
from typing import Any, Literal

from ._checkpoint import _is_complete, _is_owned, _listing, _read_meta, describe_run


@dataclasses.dataclass(frozen=True)
class _Spelling:
    """How messages name the options: as command-line flags or as Python arguments."""

    resume: str
    overwrite: str
    setting: Callable[[str], str]


FLAGS = _Spelling("--resume", "--overwrite", lambda key: "--" + key.replace("_", "-"))
ARGUMENTS = _Spelling("resume=True", "overwrite=True", lambda key: f"config[{key!r}]")

Plan = Literal["fresh", "resume", "overwrite"]


def _show(value: Any) -> str:
    return "(not set)" if value is _MISSING else json.dumps(value)


_MISSING = object()


def _differences(stored: Any, config: dict[str, Any], spelling: _Spelling) -> str:
    if not isinstance(stored, dict):
        return f"the config {json.dumps(stored)} there, {json.dumps(config)} now"
    out = []
    for key in list(stored) + [k for k in config if k not in stored]:
        there, now = stored.get(key, _MISSING), config.get(key, _MISSING)
        if there != now:
            out.append(f"{spelling.setting(key)} {_show(there)} there, {_show(now)} now")
    return "; ".join(out)


def plan_checkpoint_dir(
    path: str | os.PathLike,
    *,
    resume: bool,
    overwrite: bool,
    config: dict[str, Any] | None,
    spelling: _Spelling,
) -> tuple[Plan, str | None]:
    """The plan for `path`, and a line for the user when resuming found nothing."""
    directory = pathlib.Path(path)
    if config is not None:
        # Compared with the stored config as JSON sees both (tuples become lists).
        try:
            config = json.loads(json.dumps(config))
        except (TypeError, ValueError) as e:
            raise ValueError(f"The config must be JSON-serialisable: {e}.") from e
    if directory.is_symlink() or directory.exists():
        if not directory.is_dir():
            raise ValueError(
                f"{path} is a file, not a checkpoint directory; sdekit never replaces "
                "a file. Choose a directory name that does not exist yet."
            )
        if not os.listdir(directory):
            return "fresh", f"nothing to resume in {path} (it is empty); starting afresh"
        if not _is_owned(directory):
            raise ValueError(
                f"{path} is a directory that does not hold an sdekit checkpoint (it "
                f"contains {_listing(directory)}); sdekit writes only into a new or "
                "empty directory or its own checkpoints"
                + (", and overwrites nothing else" if overwrite else "")
                + ". Choose another directory."
            )
    else:
        return "fresh", f"nothing to resume: {path} does not exist; starting afresh"
    meta = _read_meta(directory)
    if not _is_complete(directory, meta):
        # An sdekit directory whose first save was interrupted: nothing in it can be
        # loaded, so nothing is lost by starting afresh.
        return "fresh", f"nothing to resume in {path} (no epoch was saved); starting afresh"
    assert meta is not None
    progress = describe_run(meta["state"])
    if overwrite:
        return "overwrite", None
    if not resume:
        raise ValueError(
            f"{path} holds the checkpoint of an earlier run ({progress}); pass "
            f"{spelling.resume} to continue it or {spelling.overwrite} to replace it, "
            "or choose another directory."
        )
    stored = meta["config"] if "config" in meta else _read_json_or_none(directory)
    if config is not None and stored != config:
        raise ValueError(
            f"{path} holds a run with other settings ({progress}): "
            f"{_differences(stored, config, spelling)}. Pass the same settings to resume "
            f"it, or {spelling.overwrite} to replace it."
        )
    return "resume", None


def _read_json_or_none(directory: pathlib.Path) -> Any:
    try:
        with open(directory / "config.json") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def check_checkpoint_dir(
    path: str | os.PathLike,
    *,
    resume: bool = False,
    overwrite: bool = False,
    config: dict[str, Any] | None = None,
    quiet: bool = False,
) -> Plan:
    """Decide what a run will do with its checkpoint directory, before any work starts.

    Command-line jobs call this first, before loading data, so that a wrong `--out` is
    refused in a second rather than after the first epoch. [`sdekit.train.fit`][]
    applies the same rule itself.

    | `path` | neither flag | `resume=True` | `overwrite=True` |
    |---|---|---|---|
    | does not exist, or empty | `"fresh"` | `"fresh"` (says so) | `"fresh"` |
    | a checkpoint of this config | refused | `"resume"` | `"overwrite"` |
    | a checkpoint of another config | refused | refused, naming the settings | `"overwrite"` |
    | a file, or a directory that is not a checkpoint | refused | refused | refused |

    A checkpoint whose first save was interrupted holds nothing loadable and counts as
    empty. `"overwrite"` replaces the old checkpoint only when the new run saves its
    first epoch: a run interrupted before that leaves the old one as it was.

    **Arguments:**

    - `path`: the checkpoint directory (`--out`).
    - `resume`: continue the run saved in `path` (`--resume`).
    - `overwrite`: replace the run saved in `path` with a fresh one (`--overwrite`).
    - `config`: the new run's configuration, compared with the saved one when resuming.
        Keys are named as command-line flags in messages (`batch_size` ->
        `--batch-size`).
    - `quiet`: do not print the line (on stderr) that says there was nothing to resume.

    **Returns:**

    `"fresh"`, `"resume"` or `"overwrite"`. Raises a `ValueError` with one line naming
    the way out (`--resume`, `--overwrite`, the differing settings with both values, or
    another directory) when the run must not start.
    """
    if resume and overwrite:
        raise ValueError(
            "--resume and --overwrite contradict each other: continue the saved run, or "
            "replace it, not both."
        )
    plan, note = plan_checkpoint_dir(
        path, resume=resume, overwrite=overwrite, config=config, spelling=FLAGS
    )
    if resume and note is not None and not quiet:
        print(f"sdekit: {note}", file=sys.stderr, flush=True)
    return plan
