"""sdekit's public API: what `import sdekit` offers, re-exported from the private modules.

`sdekit/__init__.py` loads this module on the first access of one of its names, so that
importing `sdekit` (as the `sdekit` command does) costs nothing until JAX is needed.
"""

from ._adjoint import (
    ReversibleAdjoint as ReversibleAdjoint,
    ScanAdjoint as ScanAdjoint,
)
from ._brownian import GridBrownianPath as GridBrownianPath
from ._driving_noise import AbstractDrivingNoise as AbstractDrivingNoise
from ._grid import step_grid as step_grid
from ._kl import (
    girsanov_integrand as girsanov_integrand,
    split_kl as split_kl,
    with_pathwise_kl as with_pathwise_kl,
)
from ._sde import AbstractSDE as AbstractSDE, SDE as SDE
from ._solution import SDESolution as SDESolution
from ._solve import solve as solve
from ._underdamped_langevin import UnderdampedLangevinSDE as UnderdampedLangevinSDE
