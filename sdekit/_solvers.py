"""What solve() needs to know of a diffrax solver, read from diffrax's own classes."""

import diffrax as dfx

from ._custom_types import Calculus, LevyArea
from ._sde import AbstractSDE
from ._underdamped_langevin import UnderdampedLangevinSDE


# The Lévy areas a Brownian path can generate, from the least to the most.
_LEVY_AREAS = (dfx.BrownianIncrement, dfx.SpaceTimeLevyArea, dfx.SpaceTimeTimeLevyArea)

# Milstein's methods differentiate the diffusion; StratonovichMilstein even forms its
# Jacobian with respect to dW, a (batch * d)^2 matrix over a batch held as one state.
# diffrax has no base class for them, so they are named.
_DIFFERENTIATE_DIFFUSION = (dfx.ItoMilstein, dfx.StratonovichMilstein)


def solver_calculus(solver: dfx.AbstractSolver) -> Calculus:
    """The calculus a diffrax solver's SDE solutions converge in, from diffrax's own
    classification (`AbstractItoSolver`, `AbstractStratonovichSolver`); a solver that
    is neither (an ODE solver such as `Tsit5`) raises a `ValueError`."""
    if isinstance(solver, dfx.AbstractItoSolver):
        return "ito"
    if isinstance(solver, dfx.AbstractStratonovichSolver):
        return "stratonovich"
    raise ValueError(
        f"{type(solver).__name__} is not an SDE solver (diffrax classes it as neither "
        "Itô nor Stratonovich), so its SDE solutions are undefined. Pick an SDE "
        "solver: Euler, Heun, EulerHeun, Midpoint, ReversibleHeun, ItoMilstein, "
        "StratonovichMilstein, SEA, SRA1, ShARK, GeneralShARK, SPaRK, SlowRK, or "
        "ALIGN, ShOULD, QUICSORT for an UnderdampedLangevinSDE."
    )


def levy_area_for(solver: dfx.AbstractSolver) -> LevyArea:
    """The Lévy area a diffrax solver needs from its Brownian motion: the least of
    `BrownianIncrement`, `SpaceTimeLevyArea`, `SpaceTimeTimeLevyArea` that is an
    instance of the solver's own `minimal_levy_area` (`BrownianIncrement` for solvers
    that declare none)."""
    minimal = getattr(solver, "minimal_levy_area", dfx.AbstractBrownianIncrement)
    for levy_area in _LEVY_AREAS:
        if issubclass(levy_area, minimal):
            return levy_area
    raise ValueError(
        f"{type(solver).__name__} asks for the Lévy area {minimal.__name__}, which no "
        "Brownian path in sdekit or diffrax generates."
    )


def check_solver(solver: dfx.AbstractSolver, sde: AbstractSDE) -> None:
    """Raise a `ValueError` when `solver` cannot integrate `sde`: not an SDE solver, a
    Langevin solver for another SDE, or a method for additive noise (its tableau says
    so) on an SDE not declared additive."""
    if not isinstance(solver, dfx.AbstractSolver):
        raise TypeError(f"`solver` must be a diffrax solver, got {type(solver).__name__}.")
    solver_calculus(solver)
    if isinstance(solver, dfx.AbstractFosterLangevinSRK) and not isinstance(
        sde, UnderdampedLangevinSDE
    ):
        raise ValueError(
            f"{type(solver).__name__} integrates the underdamped Langevin diffusion "
            "only: pass an sdekit.UnderdampedLangevinSDE, or pick another solver."
        )
    if (
        isinstance(solver, dfx.AbstractSRK)
        and solver.tableau.is_additive_noise()
        and not sde.additive
    ):
        raise ValueError(
            f"{type(solver).__name__} is only correct for additive noise; declare "
            "`SDE(..., additive=True)` if the diffusion does not depend on y, or pick "
            "another solver."
        )


def batches_as_one_state(solver: dfx.AbstractSolver) -> bool:
    """Whether a batch held as one state costs the solver no more per path than one
    path does (false for Milstein's methods, see above)."""
    return not isinstance(solver, _DIFFERENTIATE_DIFFUSION)
