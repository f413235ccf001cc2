"""sdekit: differentiable SDE and ODE models in JAX, built on diffrax."""

import importlib as _importlib
import importlib.metadata as _metadata
import importlib.util as _importlib_util
from typing import TYPE_CHECKING


if TYPE_CHECKING:
    # What type checkers and the API docs see; at run time the same names are loaded
    # on first use by `__getattr__` below.
    from ._api import (
        AbstractDrivingNoise as AbstractDrivingNoise,
        AbstractSDE as AbstractSDE,
        girsanov_integrand as girsanov_integrand,
        GridBrownianPath as GridBrownianPath,
        ReversibleAdjoint as ReversibleAdjoint,
        ScanAdjoint as ScanAdjoint,
        SDE as SDE,
        SDESolution as SDESolution,
        solve as solve,
        split_kl as split_kl,
        step_grid as step_grid,
        UnderdampedLangevinSDE as UnderdampedLangevinSDE,
        with_pathwise_kl as with_pathwise_kl,
    )


try:
    __version__ = _metadata.version("sdekit")
except _metadata.PackageNotFoundError:  # running from a source tree
    __version__ = "0.1.0+source"


def _load_api():
    # Importing JAX, equinox and diffrax takes seconds; the `sdekit` command imports
    # this package to answer `--help` and `--version`, which need none of them.
    return _importlib.import_module("._api", __name__)


def __getattr__(name: str):
    # Private names are submodules being imported (`from . import _families` asks
    # for the attribute before importing it): never load the API for them.
    # So are subpackages (`from sdekit import train`).
    if name.startswith("_") or _importlib_util.find_spec(f"{__name__}.{name}"):
        raise AttributeError(f"module 'sdekit' has no attribute {name!r}")
    try:
        value = getattr(_load_api(), name)
    except AttributeError:
        raise AttributeError(f"module 'sdekit' has no attribute {name!r}") from None
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    public = [name for name in vars(_load_api()) if not name.startswith("_")]
    return sorted({*(n for n in globals() if not n.startswith("_")), *public} - {"TYPE_CHECKING"})
