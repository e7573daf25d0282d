"""Surrogate models: patch -> predictive distribution of the target. ``base`` holds the interface and the registry,
``dkl`` the deep-kernel-learning exact GP (the default). Importing the package registers the built-ins."""

from . import dkl  # noqa: F401  (registers "dkl")
from .base import MODELS, FitReport, Posterior, SurrogateModel, make_model, register_model

__all__ = ["MODELS", "FitReport", "Posterior", "SurrogateModel", "make_model", "register_model"]
