"""A mixture's data read as a 2-D float64 matrix, with errors that name columns, rows and the
option that accepts missing values (:mod:`probgen.models.mixture`)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from probgen.model import as_tensor
from probgen.models._missing import _check_finite_observed

__all__: list[str] = []

#: How every refusal of NaN names the option that accepts it.
_MISSING_HINT = (
    "or pass missing='marginalize' to probgen.fit (method='em') to read NaN as missing at random "
    "and marginalise it."
)


def _frame_to_array(data: Any, missing: bool = False) -> Any:
    """Turn a pandas DataFrame into a numeric array with errors naming columns and rows (missing
    values kept as NaN when ``missing``)."""
    if not hasattr(data, "columns") or not hasattr(data, "isna"):
        return data
    non_numeric = [
        str(c) for c, kind in zip(data.columns, data.dtypes, strict=True) if kind.kind not in "biuf"
    ]
    if non_numeric:
        raise TypeError(
            f"data must hold numeric columns only; got non-numeric column(s) {non_numeric}. "
            "Select the measurement columns, e.g. frame[[...]]."
        )
    gaps = data.isna().any(axis=1)
    if not missing and bool(gaps.any()):
        rows = list(data.index[gaps.to_numpy()][:5])
        raise ValueError(
            f"data has {int(gaps.sum())} row(s) with missing values (first: {rows}); "
            f"drop or impute them before fitting, e.g. frame.dropna(), {_MISSING_HINT}"
        )
    return np.array(data.to_numpy(dtype=np.float64, na_value=np.nan))  # a writable copy


def _as_matrix(data: Any, family: str, *, missing: bool = False) -> Tensor:
    """Validate ``data`` as a 2-D float64 tensor ``(n_items, n_features)``.

    NaN is refused with a message naming ``missing="marginalize"``, unless ``missing`` (then it
    marks a missing cell); infinite values are always refused.
    """
    if isinstance(data, str | bytes):
        raise TypeError(f"data must be a 2-D numeric array (n_items, n_features); got {type(data).__name__}.")
    data = _frame_to_array(data, missing)
    if hasattr(data, "to_numpy") and not isinstance(data, Tensor):  # pandas Series
        data = data.to_numpy()
    if isinstance(data, np.ndarray) and not data.flags.writeable:
        data = data.copy()  # torch cannot wrap read-only memory
    t = as_tensor(data, "data", dtype=torch.float64, allow_nan=True)
    gaps = torch.isnan(t)
    if not missing and bool(gaps.any()):
        raise ValueError(
            f"{family}: data has {int(gaps.sum())} NaN value(s) in {int(gaps.reshape(len(t), -1).any(1).sum())} "
            f"item(s); drop or impute them before fitting, {_MISSING_HINT}"
        )
    _check_finite_observed(t, "data")
    if t.dim() != 2:
        hint = " For a single feature pass data.reshape(-1, 1)." if t.dim() == 1 else ""
        raise ValueError(
            f"{family}: data must be 2-D (n_items, n_features); got {t.dim()}-D data of shape "
            f"{tuple(t.shape)}.{hint}"
        )
    return t.contiguous()
