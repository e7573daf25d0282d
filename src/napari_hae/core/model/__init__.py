"""Surrogate models: patch -> predictive distribution of the target. ``base`` holds the interface and the registry,
``dkl`` the deep-kernel-learning exact GP (the default), ``ensemble`` an ensemble of DKL members, ``gp`` a plain GP
on fixed patch features (the baseline without a network), ``choice`` the DKL or the plain GP, whichever
predicted the run's measurements better. Importing the package registers the built-ins."""

from . import choice, dkl, ensemble, gp  # noqa: F401  (register "dkl", "dkl_ensemble", "gp", "dkl_or_gp")
from .base import MODELS, FitReport, Posterior, SurrogateModel, make_model, register_model

__all__ = ["MODELS", "FitReport", "Posterior", "SurrogateModel", "make_model", "register_model"]
