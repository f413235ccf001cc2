"""Noise sources beyond Brownian motion: Markov-approximate fractional Brownian motion
(MA-fBM) and the augmentation that drives any [`sdekit.SDE`][] with it."""

from ._augment import (
    augment as augment,
    augmented_initial_state as augmented_initial_state,
    check_step_size as check_step_size,
    num_channels as num_channels,
    solve_fractional as solve_fractional,
    split_components as split_components,
)
from ._fractional import (
    FractionalNoise as FractionalNoise,
    stationary_covariance as stationary_covariance,
)
from ._mafbm import (
    exact_covariance as exact_covariance,
    exp_gammaincc as exp_gammaincc,
    mafbm_covariance as mafbm_covariance,
    mafbm_omega as mafbm_omega,
    mafbm_speeds as mafbm_speeds,
    omega_system as omega_system,
    regularized_gammainc as regularized_gammainc,
    spectral_system as spectral_system,
    tail_variance as tail_variance,
)
