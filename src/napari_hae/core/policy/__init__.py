"""Acquisition policies: which position to measure next, from the model's posterior.

``base`` holds the interface, the registry and the pick rule; ``acquisition`` the built-in functions;
``wrappers`` the anti-stagnation wrappers. Importing the package registers all built-ins.
"""

from . import acquisition, wrappers  # noqa: F401  (register the built-in policies)
from .base import (
                   POLICIES,
                   AcquisitionContext,
                   AcquisitionFunction,
                   Posterior,
                   make_policy,
                   policy_from_dict,
                   register_policy,
                   select,
)

__all__ = ["POLICIES", "AcquisitionContext", "AcquisitionFunction", "Posterior", "make_policy", "policy_from_dict",
           "register_policy", "select"]
