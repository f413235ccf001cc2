"""Fractional SDEs: fractional Ornstein-Uhlenbeck processes, exact likelihoods by
Kalman filtering, Hurst-index estimation and latent fractional SDEs."""

from ._fou import FractionalOU as FractionalOU
from ._hurst import (
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
