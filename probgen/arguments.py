"""Data for models of several arguments: covariates, group indices, an observed response.

A user's model written as Pyro's regression tutorial writes it, ``model(x, y=None)``, takes its data
as a mapping bound to the parameters by name (``{"x": X, "y": y}``, or a DataFrame whose columns
the parameters name) or as a tuple bound positionally (``(X, y)``).  :class:`ModelArgs` is that
data prepared: every array converted at the public boundary (NaN refused, floats to the model's
type, integer codes kept as integers), bound by name, with the number of items (the leading length
that most arguments share) and which arguments are per item.  Every tool that takes ``data``
takes the same forms; an argument left out takes the model's default (``y=None``: generate).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from probgen.roles import as_observed, as_tensor

__all__ = ["ModelArgs", "bind_arguments", "is_argument_data"]


@dataclass(frozen=True, eq=False)
class ModelArgs:
    """A model's arguments, bound by name and prepared; ``len()`` is the number of items."""

    values: Mapping[str, Any]
    n_items: int
    #: names of the arguments an observed site reads (the response); the others are covariates
    observed: tuple[str, ...] = ()
    _order: tuple[str, ...] = field(default=(), repr=False)

    def __len__(self) -> int:
        return self.n_items

    def __iter__(self) -> Iterator[str]:
        return iter(self.values)

    @property
    def per_item(self) -> tuple[str, ...]:
        """Arguments whose leading axis runs over the items (subsampled, split, saved per item)."""
        return tuple(
            k for k, v in self.values.items() if isinstance(v, Tensor) and v.dim() and len(v) == self.n_items
        )

    @property
    def constants(self) -> dict[str, Tensor]:
        """Tensor arguments that no observed site reads: ArviZ's ``constant_data``."""
        return {k: v for k, v in self.values.items() if isinstance(v, Tensor) and k not in self.observed}

    def shape_key(self) -> Any:
        """What tracing results depend on: names, shapes and dtypes (the values of scalars)."""
        return (
            "args",
            tuple(
                (k, (tuple(v.shape), str(v.dtype)) if isinstance(v, Tensor) else ("value", v))
                for k, v in self.values.items()
            ),
        )

    def call(self, fn: Callable[..., Any], **kwargs: Any) -> Any:
        """``fn`` called with these arguments by name (and ``kwargs``)."""
        return fn(**self.values, **kwargs)

    def take(self, index: Tensor) -> ModelArgs:
        """The items at ``index`` (a 1-D tensor of item positions): the per-item arguments are
        indexed along their leading axis, the constants kept whole (SVI's minibatches)."""
        per_item = set(self.per_item)
        values = {k: (v[index] if k in per_item else v) for k, v in self.values.items()}
        return self.replace(values=values, n_items=len(index))

    def replace(self, **changes: Any) -> ModelArgs:
        """The same arguments with ``changes`` (e.g. ``observed``)."""
        fields = {
            "values": self.values,
            "n_items": self.n_items,
            "observed": self.observed,
            "_order": self._order,
        }
        return ModelArgs(**{**fields, **changes})


def _parameters(fn: Callable[..., Any]) -> list[inspect.Parameter]:
    try:
        return list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        return []


def _array_like(v: Any) -> bool:
    return isinstance(v, Tensor | np.ndarray | list) or hasattr(v, "to_numpy")


def is_argument_data(fn: Callable[..., Any], data: Any) -> bool:
    """Whether ``data`` is a model's arguments rather than one data array.

    A mapping (a dict, or a DataFrame one of whose columns a parameter of ``fn`` names), or a
    tuple of two or more arrays for a function of two or more parameters.
    """
    names = [p.name for p in _parameters(fn) if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    if isinstance(data, Mapping):
        return True
    if hasattr(data, "columns") and hasattr(data, "to_numpy"):
        return any(str(c) in names for c in data.columns)
    takes = [n for n in names if n != "subsample_size"]  # SVI's keyword, not data
    if isinstance(data, tuple) and len(data) >= 2 and len(takes) >= 2:
        return all(_array_like(v) or v is None for v in data)
    return False


def _leading_length(values: Mapping[str, Any]) -> int:
    """The number of items: the leading length most tensor arguments share (the largest on a tie)."""
    lengths = [len(v) for v in values.values() if isinstance(v, Tensor) and v.dim()]
    if not lengths:
        return 1
    counts = {n: lengths.count(n) for n in set(lengths)}
    return max(counts, key=lambda n: (counts[n], n))


def bind_arguments(
    fn: Callable[..., Any],
    data: Any,
    *,
    dtype: torch.dtype | None = None,
    allow_nan: bool = False,
    nan_hint: str = "",
) -> ModelArgs:
    """``data`` (mapping, DataFrame or tuple) bound to ``fn``'s parameters and converted.

    Arrays become tensors (NaN/inf refused, naming the argument): integer arrays stay integers
    (group indices, counts, class labels), floating ones become ``dtype`` (torch's default when
    None).  Python scalars and None pass unchanged.

    Raises
    ------
    TypeError
        An argument the function does not take, or one given twice.
    ValueError
        Bad values (NaN unless ``allow_nan``, infinities, empty arrays) in an argument.
    """
    params = _parameters(fn)
    names = [p.name for p in params if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    takes_any = any(p.kind is p.VAR_KEYWORD for p in params)
    if isinstance(data, tuple):
        if len(data) > len(names):
            raise TypeError(
                f"data has {len(data)} arguments, but the model takes {len(names)} ({', '.join(names)})."
            )
        raw: dict[str, Any] = dict(zip(names, data, strict=False))
    elif hasattr(data, "columns") and hasattr(data, "to_numpy") and not isinstance(data, Mapping):
        raw = {str(c): data[c] for c in data.columns}
    else:
        raw = {str(k): v for k, v in dict(data).items()}
    unknown = [k for k in raw if k not in names]
    if unknown and not takes_any:
        raise TypeError(
            f"data names argument(s) {unknown} that the model does not take; its parameters are: "
            f"{', '.join(names) or 'none'}."
        )
    values: dict[str, Any] = {}
    for k, v in raw.items():
        if v is None or isinstance(v, bool | int | float | str):
            values[k] = v
            continue
        t = as_tensor(v, f"data[{k!r}]", allow_nan=allow_nan, nan_hint=nan_hint)
        values[k] = t.to(dtype) if dtype is not None and t.is_floating_point() else t
    return ModelArgs(values, _leading_length(values), (), tuple(values))


def with_dtypes(
    args: ModelArgs, model_dtype: torch.dtype | None, observed: Mapping[str, torch.dtype]
) -> ModelArgs:
    """``args`` with floating covariates in ``model_dtype`` and each observed argument in its type."""
    values: dict[str, Any] = {}
    for k, v in args.values.items():
        if isinstance(v, Tensor) and k in observed:
            values[k] = as_observed(v, observed[k], f"data[{k!r}] holds")
        elif isinstance(v, Tensor) and v.is_floating_point() and model_dtype is not None:
            values[k] = as_observed(v, model_dtype, f"data[{k!r}]")
        else:
            values[k] = v
    return args.replace(values=values, observed=tuple(observed))


def like_input(given: Any, filled: Tensor) -> Any:
    """``filled`` in the form ``given`` came in: a DataFrame with its index and columns, a numpy
    array (lists too) or a tensor of its floating dtype."""
    if isinstance(given, pd.DataFrame):
        return pd.DataFrame(filled.detach().cpu().numpy(), index=given.index, columns=given.columns)
    if isinstance(given, Tensor):
        return filled.to(given.dtype if given.is_floating_point() else filled.dtype)
    if given is None:  # the training data: prepared tensors
        return filled
    out = filled.detach().cpu().numpy()
    if isinstance(given, np.ndarray) and given.dtype.kind == "f":
        return out.astype(given.dtype, copy=False)
    return out
