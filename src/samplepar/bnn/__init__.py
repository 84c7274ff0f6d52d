"""Bayesian neural networks: ``bayesianize`` any flax model, and a few models by name."""

from samplepar.bnn.bayesianize import BayesianModel, bayesianize
from samplepar.bnn.conv import ResNet
from samplepar.bnn.dense import MLP, Forecaster
from samplepar.bnn.lenet import LeNet5
from samplepar.bnn.partition import PartitionedParams, partitioned
from samplepar.bnn.registry import MODELS, get_model, model_likelihood
from samplepar.bnn.vit import ViT

__all__ = [
    "MLP",
    "MODELS",
    "BayesianModel",
    "Forecaster",
    "LeNet5",
    "PartitionedParams",
    "ResNet",
    "ViT",
    "bayesianize",
    "get_model",
    "model_likelihood",
    "partitioned",
]
