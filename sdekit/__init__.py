"""sdekit: differentiable SDE and ODE models in JAX, built on diffrax."""

import importlib.metadata

from ._adjoint import ReversibleAdjoint as ReversibleAdjoint
from ._brownian import GridBrownianPath as GridBrownianPath
from ._grid import step_grid as step_grid
from ._kl import (
    girsanov_integrand as girsanov_integrand,
    split_kl as split_kl,
    with_pathwise_kl as with_pathwise_kl,
)
from ._sde import SDE as SDE
from ._solve import SDESolution as SDESolution, solve as solve


try:
    __version__ = importlib.metadata.version("sdekit")
except importlib.metadata.PackageNotFoundError:  # running from a source tree
    __version__ = "0.1.0+source"
