"""Shared jaxtyping aliases."""

from typing import Literal, TYPE_CHECKING, TypeAlias

import diffrax as dfx
import numpy as np
from jaxtyping import Array, ArrayLike, Float, Real, Shaped


NoiseStructure: TypeAlias = Literal["diagonal", "scalar", "general"]
Calculus: TypeAlias = Literal["ito", "stratonovich"]
# The Lévy areas a Brownian path can generate (diffrax's increment classes).
LevyArea: TypeAlias = type[
    dfx.BrownianIncrement | dfx.SpaceTimeLevyArea | dfx.SpaceTimeTimeLevyArea
]

# The variant and the quadrature weights of the Markov approximation of fBM
# (sdekit.noise.FractionalNoise).
MAfBMKind: TypeAlias = Literal["I", "II"]
MAfBMWeights: TypeAlias = Literal["optimal", "spectral"]

if TYPE_CHECKING:
    # A type checker reads `Real[ArrayLike, ""]` as all of ArrayLike, complex and
    # NumPy bool included, and refuses arithmetic and comparisons on it (diffrax's
    # _custom_types.py does the same).
    RealScalarLike: TypeAlias = float | int | Array | np.ndarray
else:
    RealScalarLike: TypeAlias = float | int | Real[ArrayLike, ""]

State: TypeAlias = Float[Array, "*state"]
BatchedState: TypeAlias = Float[Array, "batch *state"]
Times: TypeAlias = Real[Array, " times"]
BatchedTimes: TypeAlias = Real[Array, "batch times"]
Mask: TypeAlias = Shaped[Array, "batch times"]
