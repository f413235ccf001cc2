"""Stochastic interpolants (Albergo, Boffi and Vanden-Eijnden, arXiv 2303.08797):
flows and diffusions between a base density and the data, their losses and
couplings, ODE and SDE samplers, exact log-likelihoods, and a Feynman-Kac corrector."""

from ._corrector import (
    effective_sample_size as effective_sample_size,
    feynman_kac_sample as feynman_kac_sample,
    systematic_resample as systematic_resample,
)
from ._coupling import (
    AbstractCoupling as AbstractCoupling,
    IndependentCoupling as IndependentCoupling,
    OTCoupling as OTCoupling,
    sinkhorn_plan as sinkhorn_plan,
    transport_cost as transport_cost,
)
from ._interpolant import (
    AbstractGamma as AbstractGamma,
    AbstractInterpolant as AbstractInterpolant,
    EncoderDecoderInterpolant as EncoderDecoderInterpolant,
    LinearInterpolant as LinearInterpolant,
    make_interpolant as make_interpolant,
    MirrorInterpolant as MirrorInterpolant,
    SinSquaredGamma as SinSquaredGamma,
    SqrtGamma as SqrtGamma,
    TrigonometricInterpolant as TrigonometricInterpolant,
    VPInterpolant as VPInterpolant,
    ZeroGamma as ZeroGamma,
)
from ._job import (
    evaluate_job as evaluate_job,
    fit_job as fit_job,
    FitConfig as FitConfig,
    logprob_job as logprob_job,
    sample_job as sample_job,
)
from ._likelihood import (
    exact_divergence as exact_divergence,
    hutchinson_divergence as hutchinson_divergence,
    log_likelihood as log_likelihood,
)
from ._loss import (
    interpolant_loss as interpolant_loss,
    pair_minibatch as pair_minibatch,
)
from ._model import (
    data_scaling as data_scaling,
    InterpolantModel as InterpolantModel,
    TimeMLP as TimeMLP,
)
from ._sample import (
    probability_flow as probability_flow,
    sample as sample,
    solve_sde as solve_sde,
)
