"""Shrinkage of :class:`probgen.models.GaussianMixture` correlations toward zero in the M-step.

``covariance_shrinkage=nu`` weighs each component's estimated correlations against ``nu``
pseudo-items of uncorrelated features: the M-step's covariance keeps its variances and has its
off-diagonal entries multiplied by ``n_k / (n_k + nu)`` (``n_k`` the component's responsibility
sum; a tied covariance counts every item)::

    Sigma_k = n_k / (n_k + nu) * S_k + nu / (n_k + nu) * diag(S_k)

a shrinkage toward the diagonal target (Schaefer and Strimmer 2005) whose strength falls as a
component gains items.  With many features per item (13 features, 60 items a component) the
maximum-likelihood correlations are noisy, and the regressions of missing cells on observed
ones that imputation reads from them overfit; shrunk, they become ridge regressions.  Diagonal
and spherical covariances have no correlations and are unchanged.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__: list[str] = []

#: The default: ``n_features`` pseudo-items when the data have missing cells, none on complete
#: data (scikit-learn's M-step exactly).
_AUTO = "auto"


def _check_shrinkage(value: object) -> float | str:
    """``"auto"`` or a finite number ``>= 0`` (the constructor's validation)."""
    if isinstance(value, str) and value == _AUTO:
        return _AUTO
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"covariance_shrinkage must be 'auto' or a number >= 0; got {value!r}.")
    if not 0 <= value < float("inf"):
        raise ValueError(f"covariance_shrinkage must be 'auto' or a finite number >= 0; got {value!r}.")
    return float(value)


def _pseudo_items(value: float | str, d: int, missing: bool) -> float:
    """The number of pseudo-items ``nu`` that ``value`` means for ``d`` features."""
    if isinstance(value, str):  # "auto"
        return float(d) if missing else 0.0
    return value


def _shrink_correlations(covariance_type: str, cov: Tensor, nk: Tensor, nu: float) -> Tensor:
    """scikit-learn-shaped covariances ``cov`` with their correlations shrunk by ``nu`` pseudo-items."""
    if covariance_type == "full":
        keep = (nk / (nk + nu))[:, None, None]
    elif covariance_type == "tied":
        keep = nk.sum() / (nk.sum() + nu)
    else:  # "diag", "spherical": nothing to shrink
        return cov
    return keep * cov + (1.0 - keep) * torch.diag_embed(torch.diagonal(cov, dim1=-2, dim2=-1))
