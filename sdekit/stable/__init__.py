"""Stable neural SDEs for irregular, partly missing time series (Oh, Lim & Kim,
ICLR 2024): Langevin-type (LSDE), linear-noise (LNSDE) and geometric (GSDE) neural
SDEs, with neural ODE, naive neural SDE and neural CDE baselines sharing their
encoder and heads; tasks, losses and the `sdekit fit` job."""

from ._dynamics import (
    AbstractDynamics as AbstractDynamics,
    GSDE as GSDE,
    LNSDE as LNSDE,
    LSDE as LSDE,
    MODELS as MODELS,
    NeuralCDE as NeuralCDE,
    NeuralODE as NeuralODE,
    NeuralSDE as NeuralSDE,
)
from ._job import (
    build_model as build_model,
    default_out as default_out,
    evaluate_job as evaluate_job,
    fit_job as fit_job,
    FitConfig as FitConfig,
    load_job_data as load_job_data,
)
from ._model import LatentModel as LatentModel
from ._tasks import (
    default_task as default_task,
    make_loss as make_loss,
    metrics as metrics,
    predict as predict,
    prepare_data as prepare_data,
    PreparedData as PreparedData,
    TASKS as TASKS,
)
