"""The store of exported compiled functions (sdekit/_export_cache.py) that makes a
repeated `sdekit hurst` skip the tracing of its search."""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np


# One estimate in a fresh process with the command's cache on: the search's traces are
# counted (a stored module is loaded without tracing its Python function).
_PROGRAM = """
import json, sys
from sdekit.train import enable_compilation_cache
enable_compilation_cache()
import numpy as np
from sdekit.fractional import _search, estimate_hurst

traced = []
original = _search._minimise_impl
def counting(*args, **kwargs):
    traced.append(1)
    return original(*args, **kwargs)
_search._minimise_impl = counting

ys = np.cumsum(np.random.default_rng(3).standard_normal(120))
estimate = estimate_hurst(ys, dt=0.1)
print(json.dumps({"hurst": estimate.hurst, "std": estimate.hurst_std,
                  "sigma": estimate.sigma, "traced": len(traced)}))
"""


def _run(cache):
    env = dict(os.environ, JAX_PLATFORMS="cpu", SDEKIT_CACHE_DIR=str(cache))
    for name in ("SDEKIT_NO_CACHE", "JAX_COMPILATION_CACHE_DIR"):
        env.pop(name, None)
    done = subprocess.run(
        [sys.executable, "-c", _PROGRAM],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_a_repeated_estimate_loads_the_stored_search(tmp_path):
    from sdekit.fractional import estimate_hurst

    cache = tmp_path / "cache"
    first = _run(cache)
    stored = sorted((cache / "sdekit-exported").glob("*.jaxexport"))
    # The grid/stencil evaluation and the BFGS search.
    assert len(stored) == 2
    assert first["traced"] >= 1
    second = _run(cache)
    assert second["traced"] == 0
    assert second == {**first, "traced": 0}

    # Without the store (no cache in this process): the same numbers.
    ys = np.cumsum(np.random.default_rng(3).standard_normal(120))
    plain = estimate_hurst(ys, dt=0.1)
    assert abs(plain.hurst - first["hurst"]) < 1e-9
    assert abs(plain.hurst_std - first["std"]) < 1e-9

    # A damaged entry is traced again, replaced, and changes nothing.
    for path in stored:
        path.write_bytes(path.read_bytes()[:100])
    third = _run(cache)
    assert third["traced"] >= 1
    assert {k: v for k, v in third.items() if k != "traced"} == {
        k: v for k, v in first.items() if k != "traced"
    }
    assert all(path.stat().st_size > 100 for path in stored)
    assert not list((cache / "sdekit-exported").glob("*.partial"))


def test_without_a_store_each_configuration_is_traced_once():
    from sdekit._export_cache import exported_call

    assert not jax.config.jax_compilation_cache_dir  # pyright: ignore[reportAttributeAccessIssue]
    traced = []

    def scaled(factor, x):
        traced.append(factor)
        return factor * jnp.sin(x)

    x = jnp.linspace(0.0, 1.0, 5)
    for _ in range(3):
        out = exported_call("test-scaled", 2.0, lambda x: scaled(2.0, x), x)
    np.testing.assert_allclose(out, 2.0 * np.sin(np.asarray(x)), rtol=1e-6)
    out = exported_call("test-scaled", 3.0, lambda x: scaled(3.0, x), x)
    np.testing.assert_allclose(out, 3.0 * np.sin(np.asarray(x)), rtol=1e-6)
    assert traced == [2.0, 3.0]
