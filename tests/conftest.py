import os

import jax
import jax.random as jr
import pytest


# Strict JAX, as diffrax's own tests: silent rank promotion hides shape bugs.
jax.config.update("jax_numpy_rank_promotion", "raise")


@pytest.fixture
def getkey():
    """A fresh key per call, deterministic per test."""
    keys = iter(jr.split(jr.key(5678), 1000))
    return lambda: next(keys)


@pytest.fixture
def x64():
    """Run one test in float64 and restore the default afterwards."""
    previous = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    yield
    jax.config.update("jax_enable_x64", previous)


# Commands run in-process by the tests would otherwise fill the user's compilation
# cache (and set EQX_ON_ERROR=nan for the rest of the session): tests/test_train.py
# checks the cache itself, with its own directory.
os.environ.setdefault("SDEKIT_NO_CACHE", "1")
