"""Compiled functions kept on disk between processes as serialised `jax.export`
modules, next to JAX's persistent compilation cache.

JAX's compilation cache skips XLA's compilation on a repeated run, but not the
Python tracing and lowering before it, and for a function built on an iterative
solver (optimistix's BFGS inside a `while_loop`) that tracing is the larger part
of a short command's time. A serialised `jax.export.Exported` holds the lowered
StableHLO: loading it costs milliseconds, and its compilation then comes from the
compilation cache. The store is used only while that cache is on (the `sdekit`
command turns it on; see `sdekit.train.enable_compilation_cache`), so a library
call of a user who did not ask for a cache writes nothing to disk.

An entry is keyed by everything that could change its code: the caller's static
configuration, the shapes and dtypes of the arguments, the versions of JAX and of
the libraries whose code is traced, and a digest of sdekit's own source. Any failure
to export (a host callback, say) or to load (a truncated file) falls back to the
ordinary traced call: the store only ever saves time.
"""

import functools
import hashlib
import importlib.metadata
import os
import pathlib
import tempfile
from collections.abc import Callable
from typing import Any

import jax


_SUBDIRECTORY = "sdekit-exported"
# The libraries whose code is traced into the stored modules.
_TRACED = ("jax", "jaxlib", "equinox", "lineax", "optimistix", "diffrax")


def _directory() -> pathlib.Path | None:
    cache = jax.config.jax_compilation_cache_dir  # pyright: ignore[reportAttributeAccessIssue]
    return pathlib.Path(cache) / _SUBDIRECTORY if cache else None


@functools.cache
def _fingerprint() -> str:
    # sdekit's own source, so that an edited checkout never loads a stale module.
    digest = hashlib.sha256()
    package = pathlib.Path(__file__).parent
    for path in sorted(package.rglob("*.py")):
        digest.update(str(path.relative_to(package)).encode())
        digest.update(path.read_bytes())
    for name in _TRACED:
        try:
            digest.update(f"{name}={importlib.metadata.version(name)}".encode())
        except importlib.metadata.PackageNotFoundError:
            digest.update(f"{name}=none".encode())
    return digest.hexdigest()


def _key(name: str, static: Any, args: tuple) -> str:
    leaves, structure = jax.tree_util.tree_flatten(args)
    signature = [(jax.numpy.shape(x), str(jax.numpy.result_type(x))) for x in leaves]
    text = repr(
        (
            name,
            static,
            str(structure),
            signature,
            jax.config.jax_enable_x64,  # pyright: ignore[reportAttributeAccessIssue]
            jax.default_backend(),
            _fingerprint(),
        )
    )
    return hashlib.sha256(text.encode()).hexdigest()[:32]


# In one process, a loaded or exported module is wrapped by `jax.jit` once.
_loaded: dict[str, Callable] = {}


def exported_call(name: str, static: Any, function: Callable, *args) -> Any:
    """`function(*args)`, by the stored module for this `name`, `static`
    configuration and argument signature where there is one, else exported (and
    stored) now.

    `function` must be jittable with every argument an array (or a PyTree of
    arrays); whatever else it depends on must be in `static` (hashable, with a
    `repr` that determines it).
    """
    directory = _directory()
    if directory is None:
        # No store: one jitted function per configuration, which JAX's own cache
        # then serves for every later call in this process.
        key = f"jit:{name}:{static!r}"
        if key not in _loaded:
            _loaded[key] = jax.jit(function)
        return _loaded[key](*args)
    key = _key(name, static, args)
    call = _loaded.get(key)
    if call is None:
        call = _load(directory / f"{key}.jaxexport") or _export(
            directory / f"{key}.jaxexport", function, args
        )
        _loaded[key] = call
    return call(*args)


def _load(path: pathlib.Path) -> Callable | None:
    try:
        from jax import export

        exported = export.deserialize(bytearray(path.read_bytes()))
    except Exception:  # absent, unreadable, truncated, or of another JAX
        return None
    return jax.jit(exported.call)


def _export(path: pathlib.Path, function: Callable, args: tuple) -> Callable:
    try:
        from jax import export

        exported = export.export(jax.jit(function))(*args)
        blob = exported.serialize()
    except Exception:  # e.g. a host callback, which a module cannot hold
        return jax.jit(function)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # Written whole, then renamed: a reader never sees a partial module.
        handle, temporary = tempfile.mkstemp(dir=path.parent, suffix=".partial")
        try:
            with os.fdopen(handle, "wb") as file:
                file.write(blob)
            os.replace(temporary, path)
        except BaseException:
            os.unlink(temporary)
            raise
    except OSError:
        pass  # a read-only cache: run without storing
    return jax.jit(exported.call)
