"""Shared jaxtyping aliases."""

from typing import Literal, TypeAlias

import diffrax as dfx
from jaxtyping import Array, ArrayLike, Float, Real, Shaped


NoiseStructure: TypeAlias = Literal["diagonal", "scalar", "general"]
Calculus: TypeAlias = Literal["ito", "stratonovich"]
# The Lévy areas a Brownian path can generate (diffrax's increment classes).
LevyArea: TypeAlias = type[
    dfx.BrownianIncrement | dfx.SpaceTimeLevyArea | dfx.SpaceTimeTimeLevyArea
]

RealScalarLike: TypeAlias = float | int | Real[ArrayLike, ""]
State: TypeAlias = Float[Array, "*state"]
BatchedState: TypeAlias = Float[Array, "batch *state"]
Times: TypeAlias = Real[Array, " times"]
BatchedTimes: TypeAlias = Real[Array, "batch times"]
Mask: TypeAlias = Shaped[Array, "batch times"]
