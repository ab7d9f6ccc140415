"""Leaving the user's global state as it was found: RNGs, Pyro's param store, torch settings.

Pyro's samplers draw from torch's global generator and keep parameters in one process-wide
store, so a fit seeds and fills them; these context managers put everything back afterwards.
"""

from __future__ import annotations

import functools
import random
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import numpy as np
import pyro
import torch

__all__ = ["PYRO_LOCK", "isolated_rng", "isolated_state", "seed_everything", "serialised"]

#: One lock for everything that runs Pyro: its handler stack and param store are process-wide, so
#: fits and scores in several threads take turns (re-entrant: a fit inside a tool is fine).
PYRO_LOCK = threading.RLock()

F = TypeVar("F", bound=Callable[..., Any])


def serialised(fn: F) -> F:
    """``fn`` run while holding :data:`PYRO_LOCK` (fits and scores from threads take turns)."""

    @functools.wraps(fn)
    def locked(*args: Any, **kwargs: Any) -> Any:
        with PYRO_LOCK:
            return fn(*args, **kwargs)

    return locked  # type: ignore[return-value]


def seed_everything(seed: int) -> None:
    """What ``pyro.set_rng_seed`` seeds (torch, numpy, ``random``), without its CUDA side.

    ``torch.manual_seed`` also queues a seed for every CUDA device, and with CUDA not yet
    initialised it records a Python traceback to do so (about 0.3 ms a call, a tenth of a
    whole small EM fit); a CUDA fit seeds its device itself.
    """
    torch.random.default_generator.manual_seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002 (the legacy global state is what Pyro seeds)
    random.seed(seed)


@contextmanager
def isolated_rng(seed: int | None) -> Iterator[None]:
    """Seed torch, numpy and ``random`` (as ``pyro.set_rng_seed``) inside; restore them after."""
    torch_state = torch.random.get_rng_state()
    np_state = np.random.get_state()  # noqa: NPY002 (the legacy global state is what Pyro seeds)
    py_state = random.getstate()
    try:
        if seed is not None:
            seed_everything(int(seed))
        yield
    finally:
        torch.random.set_rng_state(torch_state)
        np.random.set_state(np_state)  # noqa: NPY002
        random.setstate(py_state)


@contextmanager
def isolated_state(seed: int | None) -> Iterator[None]:
    """:func:`isolated_rng`, plus a fresh Pyro param store and torch's dtype and thread count.

    Inside, the param store starts empty; afterwards the user's store is back as it was.
    """
    dtype = torch.get_default_dtype()
    threads = torch.get_num_threads()
    with isolated_rng(seed), pyro.get_param_store().scope():
        try:
            yield
        finally:
            if torch.get_default_dtype() != dtype:
                torch.set_default_dtype(dtype)
            if torch.get_num_threads() != threads:
                torch.set_num_threads(threads)
