"""samplepar: parallel sampling-based Bayesian learning on JAX.

Monte-Carlo samples and data lie on one device mesh with two named axes, ``sample`` and ``data``;
objectives are reduced exactly across both, so every layout computes the same thing.
Importing samplepar configures nothing: JAX settings and multi-host start-up belong to entry points.
"""

import importlib

# Names are imported from their modules on first use (PEP 562), so that ``import samplepar.svi``
# or the command line does not also load flax, SciPy and the rest: a fresh process started 3 s
# later with them.
_EXPORTS = {
    "samplepar.bnn": ("BayesianModel", "bayesianize", "get_model", "model_likelihood"),
    "samplepar.engine": (
        "StepInfo",
        "TrainState",
        "bayesian_particle",
        "build_step",
        "init",
        "make_loss",
        "weight_sample_compiler_options",
    ),
    "samplepar.mesh": (
        "DATA",
        "SAMPLE",
        "Layout",
        "LayoutError",
        "check_batch_size",
        "check_num_samples",
        "global_batch",
        "make_mesh",
        "parse_layout",
    ),
    "samplepar.metrics": ("ClassificationStats", "RegressionStats", "ood_auroc", "uncertainty"),
    "samplepar.objectives": ("ELBO", "IWELBO", "PredictiveNLL", "RenyiELBO", "get_objective"),
    "samplepar.random": ("sample_keys", "step_key"),
    "samplepar.variational": ("Family", "MeanFieldParams", "mean_field_normal"),
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}


def __getattr__(name: str):
    if name not in _MODULE_OF:
        raise AttributeError(f"module 'samplepar' has no attribute {name!r}")
    return getattr(importlib.import_module(_MODULE_OF[name]), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_MODULE_OF))


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
