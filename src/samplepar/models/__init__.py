"""Models with their data: the hierarchical Poisson price-elasticity (demand) model."""

from samplepar.models.demand import (
    Priors,
    fast_inputs,
    fast_model,
    model_kwargs,
    published_inputs,
    published_model,
)
from samplepar.models.demand_data import (
    DemandDataError,
    Observations,
    Panel,
    TrueParams,
    observations,
    panel,
    read_table,
    simulate,
    validate,
)

__all__ = [
    "DemandDataError",
    "Observations",
    "Panel",
    "Priors",
    "TrueParams",
    "fast_inputs",
    "fast_model",
    "model_kwargs",
    "observations",
    "panel",
    "published_inputs",
    "published_model",
    "read_table",
    "simulate",
    "validate",
]
