"""Shared fixtures: float64 by default in tests that ask for it, and a quiet, seeded Pyro."""

from __future__ import annotations

import importlib
import os

import pyro
import pytest
import torch

# Small tensor operations stall with two threads on a shared two-core machine.
torch.set_num_threads(1)

# In CI the reference libraries and plotting must be there: a test that would skip for want of one
# fails the run at collection instead (locally, tests that need them skip).
if os.environ.get("CI"):
    for _name in ("sklearn", "hmmlearn", "pgmpy", "matplotlib", "hypothesis"):
        importlib.import_module(_name)


@pytest.fixture(autouse=True)
def _fresh_pyro():
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    yield
    pyro.clear_param_store()


@pytest.fixture
def float64():
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)
