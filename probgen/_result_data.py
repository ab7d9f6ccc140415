"""What :class:`probgen.result.FitResult` needs to know of data and to show: a data set's items in
words, whether new data equal the training data, and probabilities as a labelled DataFrame."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from probgen.arguments import ModelArgs

__all__ = ["describe_items", "proba_frame", "same_data"]


def describe_items(data: Tensor) -> str:
    """What a data set's items are, in words: ``scalar items`` or ``items of shape (2,) (2 features)``."""
    shape = tuple(data.shape[1:])
    if not shape:
        return "scalar items (one number each)"
    return f"items of shape {shape} ({shape[-1]} features)" if len(shape) == 1 else f"items of shape {shape}"


def same_data(a: Any, b: Any) -> bool:
    """Whether two prepared data sets hold the same values (new data given equal to the training data)."""
    if isinstance(a, Tensor) and isinstance(b, Tensor):
        return a.shape == b.shape and bool(torch.equal(a, b.to(a.dtype)))
    if isinstance(a, ModelArgs) and isinstance(b, ModelArgs):
        return set(a.values) == set(b.values) and all(
            same_data(a.values[k], b.values[k])
            if isinstance(a.values[k], Tensor)
            else a.values[k] == b.values[k]
            for k in a.values
        )
    return a is b


def proba_frame(proba: Any, site: str, data: Any) -> pd.DataFrame:
    """Probabilities ``(n, K)`` (or one such tensor per sequence) as a labelled DataFrame."""
    parts = proba if isinstance(proba, list | tuple) else [proba]
    arrays = [np.asarray(p.detach().cpu().numpy() if isinstance(p, Tensor) else p) for p in parts]
    if any(a.ndim != 2 for a in arrays):
        shapes = [tuple(a.shape) for a in arrays]
        raise ValueError(
            f"as_frame=True needs one row of probabilities per item (an (n, K) array); the "
            f"probabilities of {site!r} have shape {shapes[0] if len(shapes) == 1 else shapes}."
        )
    columns = pd.RangeIndex(arrays[0].shape[1], name=site)
    if not isinstance(proba, list | tuple):
        index = (
            data.index if isinstance(data, pd.DataFrame | pd.Series) and len(data) == len(arrays[0]) else None
        )
        return pd.DataFrame(arrays[0], index=index, columns=columns)
    items = (
        list(data) if isinstance(data, list | tuple) and len(data) == len(arrays) else [None] * len(arrays)
    )
    frames = []
    for i, (a, item) in enumerate(zip(arrays, items, strict=True)):
        inner = (
            item.index
            if isinstance(item, pd.DataFrame | pd.Series) and len(item) == len(a)
            else pd.RangeIndex(len(a))
        )
        frames.append(
            pd.DataFrame(
                a,
                index=pd.MultiIndex.from_product([[i], inner], names=["sequence", "position"]),
                columns=columns,
            )
        )
    return pd.concat(frames)
