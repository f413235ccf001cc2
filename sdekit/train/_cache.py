"""JAX's persistent compilation cache, on by default for the `sdekit` command."""

import importlib.util
import os
import pathlib
import sys


# Big enough for the compiled programs of many runs; the least recently used entries go
# first beyond it.
_MAX_SIZE_BYTES = 4 * 2**30


def default_cache_dir() -> pathlib.Path:
    """`$SDEKIT_CACHE_DIR`, else `$XDG_CACHE_HOME/sdekit/jax`, else
    `~/.cache/sdekit/jax`."""
    if os.environ.get("SDEKIT_CACHE_DIR"):
        return pathlib.Path(os.environ["SDEKIT_CACHE_DIR"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or pathlib.Path.home() / ".cache"
    return pathlib.Path(base) / "sdekit" / "jax"


def enable_compilation_cache(
    directory: str | os.PathLike | None = None,
) -> pathlib.Path | None:
    """Keep compiled XLA programs on disk, so that a repeated run skips compilation.

    A fit's first epoch is mostly compilation (39 s of a 109 s run of the README's
    main job on two cores); with the cache, a second run with the same shapes and
    settings loads the compiled programs instead. The `sdekit` command calls this
    before every job. Set `SDEKIT_NO_CACHE=1` to turn it off, `SDEKIT_CACHE_DIR` to move
    it. When JAX's own cache directory is already set (`JAX_COMPILATION_CACHE_DIR`), it
    is left as it is. Must be called before the first compilation to cover it.

    Every program that takes at least 0.1 s to compile is cached, whatever its size
    (JAX's defaults skip programs compiled in under a second).

    JAX never caches a program that calls back into Python, and equinox's runtime
    checks (`eqx.error_if`, inside every diffrax solve) are such callbacks unless
    `EQX_ON_ERROR=nan`. So, when called before equinox is imported, this sets
    `EQX_ON_ERROR=nan` unless the environment sets it already: a failed runtime check
    then gives NaNs instead of an error. The command checks its inputs before any
    work, so that such checks do not fire on its jobs; set `EQX_ON_ERROR=raise` (or
    `SDEKIT_NO_CACHE=1`) to have them raise again, e.g. when debugging.

    **Arguments:**

    - `directory`: where to keep the cache. Default:
        `$SDEKIT_CACHE_DIR`, else `$XDG_CACHE_HOME/sdekit/jax`, else
        `~/.cache/sdekit/jax`.

    **Returns:**

    The cache directory in use, or `None` when the cache is off (`SDEKIT_NO_CACHE`, or
    a directory that cannot be created).
    """
    if os.environ.get("SDEKIT_NO_CACHE", "") not in ("", "0"):
        return None
    if "equinox" not in sys.modules:
        # JAX never caches a program that calls back into Python, and equinox's runtime
        # checks (`eqx.error_if`, in every diffrax solve) are such callbacks unless
        # `EQX_ON_ERROR=nan`, which equinox reads once, at import.
        os.environ.setdefault("EQX_ON_ERROR", "nan")
    import jax

    already = jax.config.jax_compilation_cache_dir  # pyright: ignore[reportAttributeAccessIssue]
    if already:
        return pathlib.Path(already)
    path = default_cache_dir() if directory is None else pathlib.Path(directory)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError:
        # A read-only home, say: run without the cache rather than fail.
        return None
    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.1)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)
    if importlib.util.find_spec("filelock") is not None:
        # JAX evicts only with `filelock` installed, and refuses a size limit without it.
        jax.config.update("jax_compilation_cache_max_size", _MAX_SIZE_BYTES)
    return path
