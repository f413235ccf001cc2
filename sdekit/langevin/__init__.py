"""Latent Langevin flows for neural population spiking data: a sequential VAE whose
latent state follows underdamped Langevin dynamics in a potential of locally coupled
oscillators (Song et al. 2025, *Langevin Flows for Modeling Neural Latent Dynamics*),
the Neural Latents Benchmark's metrics, and its smoothing baseline."""

from ._decoder import TransformerLayer as TransformerLayer
from ._dynamics import (
    AbstractLatentDynamics as AbstractLatentDynamics,
    DiscreteLangevinMap as DiscreteLangevinMap,
    ForcedLangevinDynamics as ForcedLangevinDynamics,
    GRUDynamics as GRUDynamics,
    LangevinDynamics as LangevinDynamics,
)
from ._job import (
    build_models as build_models,
    default_out as default_out,
    evaluate_job as evaluate_job,
    fit_job as fit_job,
    FitConfig as FitConfig,
    infer_rates as infer_rates,
    load_job_data as load_job_data,
    load_job_models as load_job_models,
    ModelPair as ModelPair,
    predict_job as predict_job,
)
from ._loss import (
    kl_weight as kl_weight,
    make_loss as make_loss,
    optimizer as optimizer,
    poisson_nll_terms as poisson_nll_terms,
)
from ._metrics import (
    bits_per_spike as bits_per_spike,
    co_bps as co_bps,
    condition_psth as condition_psth,
    fp_bps as fp_bps,
    poisson_nll as poisson_nll,
    psth_r2 as psth_r2,
    rate_r2 as rate_r2,
    velocity_r2 as velocity_r2,
)
from ._model import SequentialVAE as SequentialVAE
from ._potential import CoupledOscillatorPotential as CoupledOscillatorPotential
from ._smoothing import (
    fit_poisson_glm as fit_poisson_glm,
    smooth_spikes as smooth_spikes,
    smoothing_baseline as smoothing_baseline,
    SmoothingBaseline as SmoothingBaseline,
)
