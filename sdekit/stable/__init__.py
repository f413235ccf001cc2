"""Stable neural SDEs for irregular, partly missing time series (Oh, Lim & Kim,
ICLR 2024): Langevin-type (LSDE), linear-noise (LNSDE) and geometric (GSDE) neural
SDEs, with neural ODE, naive neural SDE and neural CDE baselines sharing their
encoder and heads; the tasks as objects, the loss, and the `sdekit fit`, `evaluate`
and `predict` jobs."""

from ._dynamics import (
    AbstractDynamics as AbstractDynamics,
    AbstractMixedDrift as AbstractMixedDrift,
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
    predict_job as predict_job,
)
from ._loss import make_loss as make_loss
from ._model import LatentModel as LatentModel
from ._predict import metrics as metrics, predict as predict
from ._prepare import (
    prepare_data as prepare_data,
    PreparedData as PreparedData,
    SmallDataWarning as SmallDataWarning,
)
from ._task import (
    AbstractObservationTask as AbstractObservationTask,
    AbstractTask as AbstractTask,
    as_task as as_task,
    Classification as Classification,
    default_task as default_task,
    Forecasting as Forecasting,
    Interpolation as Interpolation,
    masked_mse as masked_mse,
    Regression as Regression,
    TASKS as TASKS,
)
