"""Atomic training checkpoints: Equinox-serialised PyTrees beside two JSON files.

A checkpoint is one directory:

```
<directory>/
    model.eqx        # eqx.tree_serialise_leaves of the latest model
    opt_state.eqx    # ... of the optimiser state
    best_model.eqx   # ... of the best model so far (only when there is one)
    config.json      # the user's configuration, verbatim JSON
    state.json       # format version, trainer state, and a manifest of every saved leaf
```

**Atomicity.** Every file is written and fsynced into a fresh sibling `<directory>.tmp`,
with `state.json` last. The finished `.tmp` is then swapped in by two renames: the
current `<directory>` becomes `<directory>.old`, then `<directory>.tmp` becomes
`<directory>`, and only then is `.old` deleted. A directory is *complete* when its
`state.json` parses and every file its manifest lists exists. A crash at any moment
therefore leaves at least one complete checkpoint, and loading follows the recovery
rule: use `<directory>` if it is complete; otherwise (a crash between the two renames)
the complete `<directory>.tmp` (the newer), else the complete `<directory>.old`.
"""

import json
import os
import pathlib
import shutil
from typing import Any

import equinox as eqx
import jax
import jax.tree_util as jtu
import numpy as np


FORMAT_VERSION = 1

_MODEL = "model.eqx"
_OPT_STATE = "opt_state.eqx"
_BEST_MODEL = "best_model.eqx"
_CONFIG = "config.json"
_STATE = "state.json"


def _siblings(directory: pathlib.Path) -> tuple[pathlib.Path, pathlib.Path]:
    return (
        directory.with_name(directory.name + ".tmp"),
        directory.with_name(directory.name + ".old"),
    )


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


def _fsync_file(path: pathlib.Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


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


def _write_text(path: pathlib.Path, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def _write_tree(path: pathlib.Path, tree: Any) -> None:
    eqx.tree_serialise_leaves(path, tree)
    _fsync_file(path)


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


def _is_complete(directory: pathlib.Path) -> bool:
    try:
        meta = _read_json(directory / _STATE)
    except (OSError, ValueError):
        return False
    if not isinstance(meta, dict) or "manifest" not in meta:
        return False
    files = list(meta["manifest"]) + [_CONFIG]
    return all((directory / name).is_file() for name in files)


def find_checkpoint(directory: str | os.PathLike) -> pathlib.Path | None:
    """The complete checkpoint directory to load for `directory`, by the recovery rule
    of this module's docstring, or `None` if there is none."""
    directory = pathlib.Path(directory)
    tmp, old = _siblings(directory)
    for candidate in (directory, tmp, old):
        if _is_complete(candidate):
            return candidate
    return None


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

    Either the whole new checkpoint lands or the previous one stays loadable; see this
    module's docstring for the layout and the recovery rule.

    **Arguments:**

    - `directory`: the checkpoint directory. Its parent is created if needed; the
        siblings `<directory>.tmp` and `<directory>.old` are used while writing.
    - `model`: the latest model, any PyTree (usually an `eqx.Module`).
    - `opt_state`: the optimiser state.
    - `state`: JSON-serialisable trainer state (epoch counter, history, ...).
    - `config`: JSON-serialisable user configuration, stored as `config.json`.
    - `best_model`: optionally, the best model so far, with the structure of `model`.

    **Returns:**

    Nothing.
    """
    directory = pathlib.Path(directory)
    tmp, old = _siblings(directory)
    trees = {_MODEL: model, _OPT_STATE: opt_state}
    if best_model is not None:
        trees[_BEST_MODEL] = best_model
    # Serialise the JSON first so that bad input fails before the disk is touched.
    config_text = _to_json(config, "config")
    state_text = _to_json(
        {
            "format_version": FORMAT_VERSION,
            "state": state,
            "manifest": {name: _manifest(tree) for name, tree in trees.items()},
        },
        "state",
    )

    directory.parent.mkdir(parents=True, exist_ok=True)
    if tmp.exists():
        # Left by an interrupted save. If `directory` is missing it may be the only
        # complete copy, but `.old` is then complete too, so nothing is lost.
        shutil.rmtree(tmp)
    tmp.mkdir()
    for name, tree in trees.items():
        _write_tree(tmp / name, tree)
    _write_text(tmp / _CONFIG, config_text)
    # Written last: a parseable `state.json` is what marks a directory complete.
    _write_text(tmp / _STATE, state_text)
    _fsync_dir(tmp)

    if directory.exists():
        if old.exists():
            shutil.rmtree(old)
        os.replace(directory, old)
    os.replace(tmp, directory)
    _fsync_dir(directory.parent)
    if old.exists():
        shutil.rmtree(old)


def _read_tree(directory: pathlib.Path, meta: dict, file: str, like: Any, name: str):
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
    found = find_checkpoint(directory)
    if found is None:
        raise FileNotFoundError(
            f"No complete checkpoint at {directory} (nor at its `.tmp` or `.old` "
            "siblings). Check the path, or train with `fit(..., checkpoint_dir=...)` "
            "first."
        )
    meta = _read_json(found / _STATE)
    version = meta.get("format_version")
    if version != FORMAT_VERSION:
        raise ValueError(
            f"The checkpoint at {found} has format version {version}, but this version "
            f"of sdekit reads version {FORMAT_VERSION}. Load it with the sdekit "
            "version that wrote it."
        )
    return found, meta


def read_checkpoint(
    directory: str | os.PathLike, *, like_model: Any, like_opt_state: Any
) -> dict[str, Any]:
    """Everything in a checkpoint, as a dict with keys `model`, `opt_state`,
    `best_model` (`None` if not saved), `state` and `config`."""
    found, meta = _open(directory)
    best_model = None
    if _BEST_MODEL in meta["manifest"]:
        best_model = _read_tree(found, meta, _BEST_MODEL, like_model, "model")
    return dict(
        model=_read_tree(found, meta, _MODEL, like_model, "model"),
        opt_state=_read_tree(found, meta, _OPT_STATE, like_opt_state, "opt_state"),
        best_model=best_model,
        state=meta["state"],
        config=_read_json(found / _CONFIG),
    )


def load_checkpoint(
    directory: str | os.PathLike, *, like_model: Any, like_opt_state: Any
) -> tuple[Any, Any, dict[str, Any], dict[str, Any] | None]:
    """Load a checkpoint written by [`sdekit.train.save_checkpoint`][].

    **Arguments:**

    - `directory`: the checkpoint directory (the recovery rule of this module applies
        when a save was interrupted).
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
    file = _BEST_MODEL if best and _BEST_MODEL in meta["manifest"] else _MODEL
    return _read_tree(found, meta, file, like_model, "model")
