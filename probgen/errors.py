"""Warning and error types raised by probgen."""

from __future__ import annotations

__all__ = ["ConvergenceWarning", "IdentifiabilityWarning", "ModelNotSupportedError"]


class ConvergenceWarning(UserWarning):
    """A fit stopped before its convergence criterion was met."""


class IdentifiabilityWarning(UserWarning):
    """Part of a model is not determined by the data (a network node no row observes)."""


class ModelNotSupportedError(TypeError):
    """A backend cannot fit this model; the message lists the backends that can."""
