"""Training checkpoints that can only ever replace themselves.

A checkpoint is one directory, which sdekit writes into and never renames or removes:

```
<directory>/
    .sdekit-checkpoint      # marker: this directory is sdekit's (written before anything else)
    state.json              # the commit record: format version, generation, trainer state,
                            # config, the files of this generation and a manifest of their leaves
    model.<g>.eqx           # eqx.tree_serialise_leaves of the latest model, generation g
    opt_state.<g>.eqx       # ... of the optimiser state
    best_model.<g>.eqx      # ... of the best model so far (only when there is one)
    config.json             # a copy of the config, for people and tools
    report.json             # the finished run's report (see `save_report`)
```

**Atomicity.** A save writes and fsyncs the files of a new generation `g + 1` beside those
of generation `g`, then replaces `state.json` in one `os.replace`: that rename is the
commit. Only then are the files of older generations deleted. A crash at any moment
therefore leaves `state.json` naming either the old generation or the new one, with all
of its files in place.

**Ownership.** sdekit writes into a directory only when it does not exist, is empty, or is
already a checkpoint (it holds the marker, or a `state.json` of this format); anything
else is refused with a `ValueError` before anything is written. Inside its own directory a
save deletes only the names it writes itself (`<role>.<g>.eqx` of an older generation,
its `*.partial` files, a stale `report.json`); a user's `notes.txt` beside the checkpoint
is left alone, and no sibling of the directory is ever touched.
"""

import json
import os
import pathlib
import re
import stat
from typing import Any

import equinox as eqx
import jax
import jax.tree_util as jtu
import numpy as np


FORMAT_VERSION = 2
# Version 1 (sdekit 0.1) kept one generation under fixed names and swapped whole
# directories; it is still read, and a save into it upgrades it in place.
_READABLE_VERSIONS = (1, 2)

_MARKER = ".sdekit-checkpoint"
_STATE = "state.json"
_CONFIG = "config.json"
_REPORT = "report.json"
_PARTIAL = ".partial"
_ROLES = ("model", "opt_state", "best_model")
_GENERATION_FILE = re.compile(r"^(model|opt_state|best_model)\.(\d+)\.eqx$")
_V1_FILES = {"model": "model.eqx", "opt_state": "opt_state.eqx", "best_model": "best_model.eqx"}


def _manifest(tree: Any) -> list[dict[str, Any]]:
    """Describe the leaves that `eqx.tree_serialise_leaves` writes, in its order.

    Stored in `state.json` so that a mismatched `like` is reported by leaf path and
    shape before any binary data is read.
    """
    out = []
    for path, leaf in jtu.tree_flatten_with_path(tree)[0]:
        if isinstance(leaf, (jax.Array, np.ndarray, jax.ShapeDtypeStruct)):
            out.append(
                {
                    "path": jtu.keystr(path),
                    "shape": list(leaf.shape),
                    "dtype": str(leaf.dtype),
                }
            )
        elif eqx.is_array_like(leaf):
            # Python and NumPy scalars are saved too; their dtype depends on x64 mode,
            # so only their position is checked.
            out.append({"path": jtu.keystr(path), "shape": None, "dtype": None})
    return out


def _check_manifest(stored: list[dict[str, Any]], like: Any, name: str) -> None:
    expected = _manifest(like)
    like_name = f"like_{name}"
    for saved, wanted in zip(stored, expected):
        if saved["path"] != wanted["path"]:
            raise ValueError(
                f"The checkpoint's `{name}` does not have the structure of "
                f"`{like_name}`: the checkpoint has a leaf at `{saved['path']}` where "
                f"`{like_name}` has one at `{wanted['path']}`. Pass a `{like_name}` "
                "built exactly as the one that was saved."
            )
        if wanted["shape"] is None or saved["shape"] is None:
            continue
        if saved["shape"] != wanted["shape"] or saved["dtype"] != wanted["dtype"]:
            raise ValueError(
                f"The checkpoint's `{name}` leaf `{saved['path']}` has shape "
                f"{tuple(saved['shape'])} and dtype {saved['dtype']}, but `{like_name}` "
                f"has shape {tuple(wanted['shape'])} and dtype {wanted['dtype']}. Build "
                f"`{like_name}` with the hyperparameters (and x64 setting) of the run "
                "that saved it."
            )
    if len(stored) != len(expected):
        raise ValueError(
            f"The checkpoint's `{name}` has {len(stored)} saved leaves but "
            f"`{like_name}` has {len(expected)}. Pass a `{like_name}` built exactly as "
            "the one that was saved."
        )


def _fsync_dir(path: pathlib.Path) -> None:
    # Makes renames and new directory entries durable; not supported everywhere
    # (e.g. Windows), where the rename itself is the best we can do.
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _write_bytes(path: pathlib.Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _replace_text(path: pathlib.Path, text: str) -> None:
    """Write `path` atomically: readers see the old content or the new, never a part."""
    partial = path.with_name(path.name + _PARTIAL)
    _write_bytes(partial, text.encode())
    os.replace(partial, path)
    _fsync_dir(path.parent)


def _write_tree(path: pathlib.Path, tree: Any) -> None:
    with open(path, "wb") as f:
        eqx.tree_serialise_leaves(f, tree)
        f.flush()
        os.fsync(f.fileno())


def _to_json(value: Any, what: str) -> str:
    try:
        return json.dumps(value, indent=1)
    except (TypeError, ValueError) as e:
        raise ValueError(
            f"`{what}` must be JSON-serialisable (dicts, lists, strings, numbers, "
            f"booleans, None), but serialising it failed: {e}. Convert arrays with "
            "`.tolist()` and other objects to strings or numbers."
        ) from e


def _read_json(path: pathlib.Path) -> Any:
    with open(path) as f:
        return json.load(f)


def _read_meta(directory: pathlib.Path) -> dict[str, Any] | None:
    """The parsed `state.json` of a checkpoint of this module's format, or `None`."""
    try:
        meta = _read_json(directory / _STATE)
    except (OSError, ValueError):
        return None
    if not isinstance(meta, dict) or not {"format_version", "manifest"} <= set(meta):
        return None
    return meta


def _files(meta: dict[str, Any]) -> dict[str, str]:
    """The file of each saved role (`model`, `opt_state`, `best_model`)."""
    if "files" in meta:
        return dict(meta["files"])
    return {role: name for role, name in _V1_FILES.items() if name in meta["manifest"]}


def _is_complete(directory: pathlib.Path, meta: dict[str, Any] | None) -> bool:
    if meta is None:
        return False
    names = list(_files(meta).values())
    if "files" not in meta:
        # Version 1 kept the config in its own file.
        names.append(_CONFIG)
    return all((directory / name).is_file() for name in names)


def _is_owned(directory: pathlib.Path) -> bool:
    """Whether `directory` is provably sdekit's: it holds the marker or a `state.json`
    of this module's format."""
    return (directory / _MARKER).is_file() or _read_meta(directory) is not None


def _listing(directory: pathlib.Path, limit: int = 4) -> str:
    entries = sorted(os.listdir(directory))
    shown = [e + ("/" if (directory / e).is_dir() else "") for e in entries[:limit]]
    more = f" and {len(entries) - limit} more" if len(entries) > limit else ""
    return ", ".join(shown) + more


def find_checkpoint(directory: str | os.PathLike) -> pathlib.Path | None:
    """`directory` if it holds a complete checkpoint, else `None`."""
    directory = pathlib.Path(directory)
    return directory if _is_complete(directory, _read_meta(directory)) else None


def _claim(directory: pathlib.Path) -> None:
    """Make `directory` a checkpoint directory, or refuse if it is someone else's."""
    if directory.is_symlink() or directory.exists():
        if not directory.is_dir():
            raise ValueError(
                f"{directory} is a file, not a checkpoint directory; sdekit never "
                "replaces a file. Choose a directory name that does not exist yet."
            )
    else:
        directory.mkdir(parents=True, exist_ok=True)
    if (directory / _MARKER).is_file():
        return
    if os.listdir(directory) and _read_meta(directory) is None:
        raise ValueError(
            f"{directory} is a directory that does not hold an sdekit checkpoint (it "
            f"contains {_listing(directory)}); sdekit writes only into a new or empty "
            "directory or its own checkpoints. Choose another directory."
        )
    # First of all, so that a save killed at any later moment leaves a directory that
    # is provably sdekit's and is taken back without asking.
    _write_bytes(directory / _MARKER, b'{"sdekit": "training checkpoint"}\n')
    _fsync_dir(directory)


def _next_generation(directory: pathlib.Path, meta: dict[str, Any] | None) -> int:
    # Above the committed generation and above any file left by an interrupted save, so
    # that a save never writes into a file that `state.json` names.
    used = [meta.get("generation", 0)] if meta is not None else [0]
    for name in os.listdir(directory):
        match = _GENERATION_FILE.match(name)
        if match:
            used.append(int(match.group(2)))
    return max(used) + 1


def _remove_stale(directory: pathlib.Path, keep: set[str]) -> None:
    """Delete what earlier (or interrupted) saves left: only names this module writes."""
    ours = {name + _PARTIAL for name in (_STATE, _CONFIG, _REPORT)}
    ours |= set(_V1_FILES.values()) | {_REPORT}
    for name in os.listdir(directory):
        if name in keep or not (name in ours or _GENERATION_FILE.match(name)):
            continue
        path = directory / name
        try:
            if stat.S_ISREG(path.lstat().st_mode):
                path.unlink()
        except FileNotFoundError:
            pass


def save_checkpoint(
    directory: str | os.PathLike,
    *,
    model: Any,
    opt_state: Any,
    state: dict[str, Any],
    config: dict[str, Any] | None = None,
    best_model: Any = None,
) -> None:
    """Atomically write a training checkpoint to `directory`.

    Either the whole new checkpoint lands or the previous one stays loadable, whatever
    moment the process is killed at. The directory is created if it does not exist;
    an existing one must be empty or a checkpoint already (see this module's docstring
    for the layout, the commit and what a save may delete).

    **Arguments:**

    - `directory`: the checkpoint directory. Its parents are created if needed.
    - `model`: the latest model, any PyTree (usually an `eqx.Module`).
    - `opt_state`: the optimiser state.
    - `state`: JSON-serialisable trainer state (epoch counter, history, ...).
    - `config`: JSON-serialisable user configuration, stored with the checkpoint (and
        copied to `config.json`).
    - `best_model`: optionally, the best model so far, with the structure of `model`.

    **Returns:**

    Nothing. Raises a `ValueError` when `directory` is a file, or a non-empty directory
    that is not a checkpoint, before anything is written.
    """
    directory = pathlib.Path(directory)
    trees = {"model": model, "opt_state": opt_state}
    if best_model is not None:
        trees["best_model"] = best_model
    # Serialise the JSON first so that bad input fails before the disk is touched.
    config_text = _to_json(config, "config")
    _to_json(state, "state")

    _claim(directory)
    generation = _next_generation(directory, _read_meta(directory))
    files = {role: f"{role}.{generation}.eqx" for role in trees}
    for role, tree in trees.items():
        _write_tree(directory / files[role], tree)
    _fsync_dir(directory)
    meta = {
        "format_version": FORMAT_VERSION,
        "generation": generation,
        "files": files,
        "manifest": {files[role]: _manifest(tree) for role, tree in trees.items()},
        "config": config,
        "state": state,
    }
    # The commit.
    _replace_text(directory / _STATE, _to_json(meta, "state"))
    try:
        same_config = (directory / _CONFIG).read_text() == config_text
    except OSError:
        same_config = False
    if not same_config:
        _replace_text(directory / _CONFIG, config_text)
    # A report describes a finished run; once the checkpoint moves on it is stale.
    _remove_stale(directory, keep=set(files.values()))


def _read_tree(directory: pathlib.Path, meta: dict, role: str, like: Any, name: str):
    file = _files(meta)[role]
    _check_manifest(meta["manifest"][file], like, name)
    try:
        return eqx.tree_deserialise_leaves(directory / file, like)
    except Exception as e:
        # The manifest matched, so this is a damaged file or a leaf of another type.
        raise ValueError(
            f"Could not load `{name}` from {directory / file}: {e}. Check that "
            f"`like_{name}` has the types of the saved one."
        ) from e


def _open(directory: str | os.PathLike) -> tuple[pathlib.Path, dict]:
    path = pathlib.Path(directory)
    meta = _read_meta(path)
    if not _is_complete(path, meta):
        if not path.exists():
            why = "it does not exist"
        elif not path.is_dir():
            why = "it is a file"
        elif meta is None:
            why = "it has no state.json of an sdekit checkpoint"
        else:
            why = "files that its state.json names are missing"
        raise FileNotFoundError(
            f"No complete checkpoint at {path}: {why}. Check the path, or train with "
            "`fit(..., checkpoint_dir=...)` first."
        )
    assert meta is not None
    version = meta.get("format_version")
    if version not in _READABLE_VERSIONS:
        raise ValueError(
            f"The checkpoint at {path} has format version {version}, but this version "
            f"of sdekit reads versions {_READABLE_VERSIONS}. Load it with the sdekit "
            "version that wrote it."
        )
    return path, meta


def _stored_config(directory: pathlib.Path, meta: dict[str, Any]) -> Any:
    if "config" in meta:
        return meta["config"]
    return _read_json(directory / _CONFIG)


def read_checkpoint(
    directory: str | os.PathLike, *, like_model: Any, like_opt_state: Any
) -> dict[str, Any]:
    """Everything in a checkpoint, as a dict with keys `model`, `opt_state`,
    `best_model` (`None` if not saved), `state` and `config`."""
    found, meta = _open(directory)
    best_model = None
    if "best_model" in _files(meta):
        best_model = _read_tree(found, meta, "best_model", like_model, "model")
    return dict(
        model=_read_tree(found, meta, "model", like_model, "model"),
        opt_state=_read_tree(found, meta, "opt_state", like_opt_state, "opt_state"),
        best_model=best_model,
        state=meta["state"],
        config=_stored_config(found, meta),
    )


def read_state(directory: str | os.PathLike) -> tuple[dict[str, Any], Any]:
    """The trainer state and config of a complete checkpoint, without loading arrays."""
    found, meta = _open(directory)
    return meta["state"], _stored_config(found, meta)


def load_checkpoint(
    directory: str | os.PathLike, *, like_model: Any, like_opt_state: Any
) -> tuple[Any, Any, dict[str, Any], dict[str, Any] | None]:
    """Load a checkpoint written by [`sdekit.train.save_checkpoint`][].

    **Arguments:**

    - `directory`: the checkpoint directory.
    - `like_model`: a model with the structure, shapes and dtypes of the saved one,
        e.g. freshly initialised, or `eqx.filter_eval_shape(Model, ...)`.
    - `like_opt_state`: likewise for the optimiser state, e.g.
        `optimizer.init(eqx.filter(like_model, eqx.is_inexact_array))`.

    **Returns:**

    A tuple `(model, opt_state, state, config)`: the latest model, the optimiser
    state, the trainer state dict and the stored config. Raises a `ValueError` naming
    the first leaf whose shape or dtype differs from `like_model`/`like_opt_state`.
    """
    out = read_checkpoint(
        directory, like_model=like_model, like_opt_state=like_opt_state
    )
    return out["model"], out["opt_state"], out["state"], out["config"]


def load_model(directory: str | os.PathLike, like_model: Any, *, best: bool = True):
    """Load the trained model from a checkpoint directory written by `fit`.

    **Arguments:**

    - `directory`: the checkpoint directory passed to `fit(..., checkpoint_dir=...)`.
    - `like_model`: a model with the structure, shapes and dtypes of the saved one.
    - `best`: if `True`, the best model by the monitored validation metric (what `fit`
        returns), falling back to the latest model when no best was tracked. If
        `False`, the latest model.

    **Returns:**

    The model, with the leaves of `like_model` replaced by the saved ones.
    """
    found, meta = _open(directory)
    role = "best_model" if best and "best_model" in _files(meta) else "model"
    return _read_tree(found, meta, role, like_model, "model")


def save_report(directory: str | os.PathLike, report: dict[str, Any]) -> None:
    """Atomically write a finished run's report into its checkpoint directory, as
    `report.json`.

    The next checkpoint saved into the directory deletes the report, since the run it
    describes has then moved on.

    **Arguments:**

    - `directory`: a checkpoint directory (written by [`sdekit.train.fit`][] or
        [`sdekit.train.save_checkpoint`][]).
    - `report`: a JSON-serialisable dict.

    **Returns:**

    Nothing. Raises a `ValueError` when `directory` is not a checkpoint or `report` is
    not JSON-serialisable, before anything is written.
    """
    directory = pathlib.Path(directory)
    if not isinstance(report, dict):
        raise ValueError(f"`report` must be a dict, got {type(report).__name__}.")
    text = _to_json(report, "report")
    if not (directory.is_dir() and _is_owned(directory)):
        raise ValueError(
            f"{directory} is not an sdekit checkpoint directory; a report is written "
            "beside the checkpoint of its run."
        )
    _replace_text(directory / _REPORT, text + "\n")


def load_report(directory: str | os.PathLike) -> dict[str, Any]:
    """The report of a finished run, written by [`sdekit.train.save_report`][].

    **Arguments:**

    - `directory`: the run's checkpoint directory.

    **Returns:**

    The report dict. Raises a `FileNotFoundError` saying why when there is none (no
    such directory, or a run that did not finish).
    """
    path = pathlib.Path(directory)
    try:
        return _read_json(path / _REPORT)
    except FileNotFoundError:
        pass
    meta = _read_meta(path)
    if not path.exists():
        why = "it does not exist"
    elif meta is None:
        why = "it is not an sdekit checkpoint"
    else:
        why = f"its run has not finished ({describe_run(meta['state'])})"
    raise FileNotFoundError(f"No report.json in {path}: {why}.")


def describe_run(state: dict[str, Any]) -> str:
    """How far a run got, from its trainer state: "epoch 12 of 100, unfinished"."""
    done, total = state.get("epochs_completed"), state.get("epochs")
    if done is None:
        return "no epoch recorded"
    of = f" of {total}" if total is not None else ""
    if state.get("stopped_early"):
        return f"stopped early at epoch {done}{of}, finished"
    if total is not None and done >= total:
        return f"epoch {done}{of}, finished"
    return f"epoch {done}{of}, unfinished"
