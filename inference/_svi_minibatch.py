"""SVI minibatches of in-memory data: random items each step, for any model.

The data (a tensor, a model's arguments, a tuple of tensors) are sliced to the minibatch and the
data plate scaled by N / B; data probgen cannot slice get the minibatch indices through the data
plate itself.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pyro.poutine as poutine
import torch
from pyro.poutine.messenger import Messenger
from pyro.poutine.subsample_messenger import _Subsample

from probgen.arguments import ModelArgs


def _take(data: Any, index: torch.Tensor, n: int) -> Any:
    """The items ``index`` of in-memory data, or None when probgen cannot slice its type.

    A tensor is indexed along its leading axis; model arguments (`ModelArgs`) take the items of
    their per-item arguments and keep the constants; a tuple of tensors (a family's prepared pair,
    such as images and labels) is indexed element by element.
    """
    if isinstance(data, torch.Tensor) and data.dim() and len(data) == n:
        return data[index]
    if isinstance(data, ModelArgs):
        return data.take(index)
    if (
        isinstance(data, tuple)
        and data
        and all(isinstance(v, torch.Tensor) and v.dim() and len(v) == n for v in data)
    ):
        return tuple(v[index] for v in data)
    return None


class _PlateSubsample(Messenger):
    """Give the plate ``name`` the subsample ``index``: the plate then scales its sites by N / B.

    For data that probgen cannot slice (a family's own prepared type), used with models that
    index their data by the plate's indices (``with pyro.plate(...) as idx: ... data[idx]``).
    """

    def __init__(self, name: str, batches: _Minibatches) -> None:
        super().__init__()
        self.name, self.batches = name, batches

    def _process_message(self, msg: Any) -> None:
        if msg["type"] == "sample" and msg["name"] == self.name and isinstance(msg["fn"], _Subsample):
            msg["value"] = self.batches.index


class _Minibatches:
    """Random minibatches of in-memory data: one permutation of the items per epoch, sliced in
    order (every item is seen once an epoch), each of ``size`` items."""

    def __init__(self, n: int, size: int) -> None:
        self.n, self.size = n, size
        self.perm = torch.arange(n)
        self.pos = n
        self.index = torch.arange(size)

    def next_index(self) -> torch.Tensor:
        if self.pos + self.size > self.n:
            self.perm, self.pos = torch.randperm(self.n), 0
        self.index = self.perm[self.pos : self.pos + self.size]
        self.pos += self.size
        return self.index


def _check_plate_subsample(
    model_fn: Callable[..., Any], plate: str, data: Any, batches: _Minibatches, name: str
) -> None:
    """Refuse, with a clear message, data that cannot be sliced for a model that does not index
    them by its plate's indices."""
    try:
        with poutine.block(), torch.no_grad():
            poutine.trace(_PlateSubsample(plate, batches)(model_fn)).get_trace(data)
    except (ValueError, RuntimeError, IndexError) as err:
        raise ValueError(
            f"subsample_size: probgen slices data held as a tensor, model arguments or a tuple of "
            f"tensors, and {name}'s data are a {type(data).__name__}; its plate {plate!r} must then "
            f"index the data by the plate's indices (``with pyro.plate(...) as idx: ... data[idx]``), "
            f"which failed: {err}"
        ) from None
