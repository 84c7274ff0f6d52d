"""samplepar: parallel sampling-based Bayesian learning on JAX.

Monte-Carlo samples and data lie on one device mesh with two named axes, ``sample`` and ``data``;
objectives are reduced exactly across both, so every layout computes the same thing.
Importing samplepar configures nothing: JAX settings and multi-host start-up belong to entry points.
"""

from samplepar.bnn import BayesianModel, bayesianize, get_model, model_likelihood
from samplepar.engine import (
    StepInfo,
    TrainState,
    bayesian_particle,
    build_step,
    init,
    make_loss,
    weight_sample_compiler_options,
)
from samplepar.mesh import (
    DATA,
    SAMPLE,
    Layout,
    LayoutError,
    check_batch_size,
    check_num_samples,
    global_batch,
    make_mesh,
    parse_layout,
)
from samplepar.metrics import ClassificationStats, RegressionStats, ood_auroc, uncertainty
from samplepar.objectives import (
    ELBO,
    IWELBO,
    PredictiveNLL,
    RenyiELBO,
    get_objective,
)
from samplepar.random import sample_keys, step_key
from samplepar.variational import Family, MeanFieldParams, mean_field_normal

__version__ = "0.1.0"

__all__ = [
    "BayesianModel",
    "ClassificationStats",
    "RegressionStats",
    "bayesianize",
    "get_model",
    "model_likelihood",
    "ood_auroc",
    "uncertainty",
    "DATA",
    "ELBO",
    "IWELBO",
    "SAMPLE",
    "Family",
    "Layout",
    "LayoutError",
    "MeanFieldParams",
    "PredictiveNLL",
    "RenyiELBO",
    "StepInfo",
    "TrainState",
    "bayesian_particle",
    "build_step",
    "check_batch_size",
    "check_num_samples",
    "get_objective",
    "global_batch",
    "init",
    "make_loss",
    "make_mesh",
    "mean_field_normal",
    "parse_layout",
    "sample_keys",
    "step_key",
    "weight_sample_compiler_options",
]
