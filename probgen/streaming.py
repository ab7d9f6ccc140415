"""Data that do not sit in one tensor: minibatch streams and shards across processes.

``probgen.fit(model, loader, method="svi", num_items=N)`` fits on a ``torch.utils.data.DataLoader``
or any re-iterable of minibatches.  The data plate's log-likelihood of each minibatch is scaled by
``N / batch size``, as a Pyro plate with ``subsample`` scales it, so the objective is an unbiased
estimate of the full-data ELBO and the posterior is the full-data one.

Under an initialised ``torch.distributed`` process group (``torchrun``), each rank passes the shard
of data it holds; the plate's scale uses the sum of the shard sizes, gradients are averaged across
ranks with ``all_reduce`` (PyTorch's own collective) and every rank starts from rank 0's
parameters, so every rank ends with the posterior given the union of the shards.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np
import torch
from pyro.poutine.messenger import Messenger

from probgen.validation import positive_int

__all__ = ["ChunkedData", "StreamingData", "is_stream_source", "world"]


def is_stream_source(data: Any) -> bool:
    """Whether ``data`` is a minibatch source rather than an in-memory data set."""
    from torch.utils.data import DataLoader

    return isinstance(data, DataLoader)


class StreamingData:
    """A re-iterable source of minibatches, prepared one batch at a time.

    Parameters
    ----------
    source : iterable
        A ``DataLoader`` or any object that can be iterated over more than once (a list of
        arrays, a generator *function*'s result is not enough: it runs out after one pass).
    num_items : int
        Items in the whole data set (this process's shard under ``torch.distributed``).
    prepare : callable
        The model's ``prepare_data``, applied to each batch.
    """

    def __init__(self, source: Iterable[Any], num_items: int, prepare: Callable[[Any], Any]) -> None:
        if isinstance(source, Iterator):
            raise TypeError(
                "data is an iterator, which runs out after one pass; pass a re-iterable source of "
                "minibatches (a torch DataLoader, a list of arrays, or an object whose __iter__ starts anew)."
            )
        if not isinstance(source, Iterable):
            raise TypeError(
                f"streamed data must be a re-iterable of minibatches; got {type(source).__name__}."
            )
        positive_int(num_items, "num_items")  # items in the whole data set
        self.source, self.num_items, self.prepare = source, int(num_items), prepare
        it = iter(source)
        try:
            first = next(it)
        except StopIteration:
            raise ValueError("streamed data yielded no minibatch; expected at least one.") from None
        self.first = prepare(_unwrap(first))

    def batches(self) -> Iterator[Any]:
        """Prepared minibatches, pass after pass, for as long as they are asked for."""
        while True:
            empty = True
            for batch in self.source:
                empty = False
                yield self.prepare(_unwrap(batch))
            if empty:
                raise ValueError(
                    "streamed data yielded no minibatch on a later pass; it must be re-iterable."
                )

    def __repr__(self) -> str:
        return f"StreamingData({type(self.source).__name__}, num_items={self.num_items})"


def _unwrap(batch: Any) -> Any:
    """A ``TensorDataset`` batch is a list: of one tensor, the data; of several, a model's
    arguments in order (``TensorDataset(X, y)`` for ``model(x, y=None)``), as a tuple binds them.
    A batch of dicts (a dataset of mappings) binds by name as it is."""
    if isinstance(batch, list | tuple) and len(batch) == 1:
        return batch[0]
    if isinstance(batch, list) and len(batch) > 1 and all(isinstance(b, torch.Tensor) for b in batch):
        return tuple(batch)
    return batch


class PlateScale(Messenger):
    """Multiply the log-density of every site inside the plate ``name`` by ``factor``."""

    def __init__(self, name: str | None, factor: float) -> None:
        super().__init__()
        self.name, self.factor = name, float(factor)

    def _process_message(self, msg: Any) -> None:
        if msg["type"] != "sample" or self.factor == 1.0:
            return
        if any(f.name == self.name for f in msg["cond_indep_stack"]):
            msg["scale"] = msg["scale"] * self.factor


def scaled(fn: Callable[..., Any], plate: str | None, factor: Callable[[], float]) -> Callable[..., Any]:
    """``fn`` with its data plate's sites scaled by ``factor()`` (read at every call)."""

    def wrapped(*args: Any, **kwargs: Any) -> Any:
        with PlateScale(plate, factor()):
            return fn(*args, **kwargs)

    return wrapped


class world:  # noqa: N801  (a namespace of functions, read as ``world.size()``)
    """The ``torch.distributed`` process group as SVI sees it (one process when none is set up)."""

    @staticmethod
    def size() -> int:
        dist = torch.distributed
        return int(dist.get_world_size()) if dist.is_available() and dist.is_initialized() else 1

    @staticmethod
    def sum(value: float) -> float:
        if world.size() == 1:
            return float(value)
        t = torch.tensor([float(value)], dtype=torch.float64)
        torch.distributed.all_reduce(t)
        return float(t[0])

    @staticmethod
    def mean(value: float) -> float:
        return world.sum(value) / world.size()

    @staticmethod
    def average_gradients(params: list[torch.Tensor]) -> None:
        """Replace every gradient by its mean over the ranks (one flat all_reduce)."""
        n = world.size()
        if n == 1 or not params:
            return
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        flat = torch.cat([g.reshape(-1) for g in grads])
        torch.distributed.all_reduce(flat)
        flat /= n
        offset = 0
        for p, g in zip(params, grads, strict=True):
            k = g.numel()
            p.grad = flat[offset : offset + k].view_as(p).clone()
            offset += k

    @staticmethod
    def broadcast(params: list[torch.Tensor]) -> None:
        """Give every rank rank 0's values of ``params`` (in place)."""
        if world.size() == 1 or not params:
            return
        with torch.no_grad():
            flat = torch.cat([p.detach().reshape(-1) for p in params])
            torch.distributed.broadcast(flat, src=0)
            offset = 0
            for p in params:
                k = p.numel()
                p.copy_(flat[offset : offset + k].view_as(p))
                offset += k


class ChunkedData:
    """An array too large to convert at once (a numpy memmap), read and prepared chunk by chunk.

    Parameters
    ----------
    source : array-like
        Anything with ``len()`` and row slicing: a numpy array or memmap, a tensor, a DataFrame.
    chunk_size : int
        Rows per chunk.
    prepare : callable
        The model's ``prepare_data``, applied to each chunk.
    """

    def __init__(self, source: Any, chunk_size: int, prepare: Callable[[Any], Any]) -> None:
        positive_int(chunk_size, "chunk_size")  # rows per chunk
        if not hasattr(source, "__len__") or not hasattr(source, "__getitem__") or isinstance(source, str):
            raise TypeError(
                "chunk_size= needs data with len() and row slicing (a numpy array or memmap, a tensor, "
                f"a DataFrame); got {type(source).__name__}."
            )
        if hasattr(source, "iloc"):  # pandas: positional rows
            source = source.iloc
            self.num_items = len(source.obj)
        else:
            self.num_items = len(source)
        if self.num_items == 0:
            raise ValueError("data is empty; expected at least one item.")
        self.source, self.chunk_size, self.prepare = source, int(chunk_size), prepare
        try:
            self.first = self.rows(0, min(self.chunk_size, self.num_items))
        except ValueError as err:
            raise ValueError(
                f"{err} (the first chunk of chunk_size={self.chunk_size} rows; raise chunk_size)"
            ) from None

    def rows(self, start: int, stop: int) -> Any:
        """Rows ``start:stop``, prepared."""
        return self.prepare(self.source[start:stop])

    def chunks(self) -> Iterator[Any]:
        """Every row once, in order, as prepared chunks (a last chunk shorter than half a chunk is
        read with the one before it, so no chunk is tiny)."""
        starts = list(range(0, self.num_items, self.chunk_size))
        if len(starts) > 1 and self.num_items - starts[-1] < self.chunk_size // 2:
            starts.pop()
        for i, start in enumerate(starts):
            stop = starts[i + 1] if i + 1 < len(starts) else self.num_items
            yield self.rows(start, stop)

    def sample(self, n: int, generator: torch.Generator) -> Any:
        """``n`` rows chosen at random without replacement (sorted, so a memmap reads forward)."""
        n = min(int(n), self.num_items)
        idx = torch.randperm(self.num_items, generator=generator)[:n].sort().values.numpy()
        src = self.source
        if isinstance(src, torch.Tensor):
            return self.prepare(src[torch.as_tensor(idx)])
        return self.prepare(src[np.asarray(idx)])

    def __repr__(self) -> str:
        return f"ChunkedData({type(self.source).__name__}, num_items={self.num_items}, chunk_size={self.chunk_size})"
