"""Fractional SDEs: fractional Ornstein-Uhlenbeck processes, exact likelihoods (dense
for fBM, by Kalman filtering for MA-fBM models), Hurst-index estimation and latent
fractional SDEs."""

import importlib as _importlib
from typing import TYPE_CHECKING


if TYPE_CHECKING:
    # What type checkers and the API docs see; at run time the same names are loaded
    # on first use by `__getattr__` below.
    from ._dense import fbm_log_likelihood as fbm_log_likelihood
    from ._fou import FractionalOU as FractionalOU
    from ._hurst import (
        DENSE_MAX_POINTS as DENSE_MAX_POINTS,
        estimate_hurst as estimate_hurst,
        estimation_setup as estimation_setup,
        EstimationSetup as EstimationSetup,
        HurstEstimate as HurstEstimate,
    )
    from ._kalman import (
        fbm_transition as fbm_transition,
        filter_innovations as filter_innovations,
        fou_log_likelihood as fou_log_likelihood,
        fou_system as fou_system,
        profile_from_innovations as profile_from_innovations,
        profile_log_likelihood as profile_log_likelihood,
        step_structure as step_structure,
        van_loan as van_loan,
    )
    from ._latent import (
        latent_fractional_loss as latent_fractional_loss,
        LatentFractionalSDE as LatentFractionalSDE,
    )
    from ._mle import fit_fou_mle as fit_fou_mle, MLEResult as MLEResult
    from ._numpyro import (
        fou_numpyro_model as fou_numpyro_model,
        hurst_posterior as hurst_posterior,
    )


# Each public name and its module, loaded on first use: `sdekit hurst` needs neither
# numpyro nor diffrax's solvers, which the latent SDE and the posterior import
# (together about a second of a cold start).
_HOMES = {
    "fbm_log_likelihood": "._dense",
    "FractionalOU": "._fou",
    "DENSE_MAX_POINTS": "._hurst",
    "estimate_hurst": "._hurst",
    "estimation_setup": "._hurst",
    "EstimationSetup": "._hurst",
    "HurstEstimate": "._hurst",
    "fbm_transition": "._kalman",
    "filter_innovations": "._kalman",
    "fou_log_likelihood": "._kalman",
    "fou_system": "._kalman",
    "profile_from_innovations": "._kalman",
    "profile_log_likelihood": "._kalman",
    "step_structure": "._kalman",
    "van_loan": "._kalman",
    "latent_fractional_loss": "._latent",
    "LatentFractionalSDE": "._latent",
    "fit_fou_mle": "._mle",
    "MLEResult": "._mle",
    "fou_numpyro_model": "._numpyro",
    "hurst_posterior": "._numpyro",
}


def __getattr__(name: str):
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'sdekit.fractional' has no attribute {name!r}")
    value = getattr(_importlib.import_module(home, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(_HOMES)
