"""probgen: generative models on Pyro, fitted by EM, SVI, exact enumeration or MCMC.

>>> import probgen as pg
>>> sorted(pg.available_methods())
['adversarial', 'cd', 'em', 'enum', 'mcmc', 'svi']
"""

from __future__ import annotations

import torch as _torch  # noqa: F401  (imported first so torch sets up before pyro)

import probgen.inference  # noqa: F401  (the built-in backends: importing them loads the core they stand on)
from probgen import datasets
from probgen.calibration import Calibration, calibrate
from probgen.diagnostics import check, compare, loo, summary
from probgen.errors import ConvergenceWarning, IdentifiabilityWarning, ModelNotSupportedError
from probgen.fit import (
    Backend,
    Fit,
    available_methods,
    document_options,
    fit,
    get_backend,
    load,
    register_backend,
)
from probgen.metrics import MMDTestResult, mmd, mmd_test
from probgen.model import GenerativeModel, SiteRoles, model, register_model

document_options()

__version__ = "0.1.0"

__all__ = [
    "Backend",
    "Calibration",
    "ConvergenceWarning",
    "Fit",
    "GenerativeModel",
    "IdentifiabilityWarning",
    "MMDTestResult",
    "ModelNotSupportedError",
    "SiteRoles",
    "available_methods",
    "calibrate",
    "check",
    "compare",
    "datasets",
    "fit",
    "get_backend",
    "load",
    "loo",
    "mmd",
    "mmd_test",
    "model",
    "register_backend",
    "register_model",
    "summary",
]
