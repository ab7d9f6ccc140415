"""The batched potential's own sum over local enumerated variables equals Pyro's contraction."""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer.mcmc.util import initialize_model
from pyro.ops.indexing import Vindex

from probgen.inference import _potential as potential_module
from probgen.inference._potential import BatchedPotential

X = torch.randn(40, dtype=torch.float64) * 2
GROUPS = torch.randn(5, 6, dtype=torch.float64)


def local_labels(x):
    """A mixture: one label per item."""
    w = pyro.sample("w", dist.Dirichlet(torch.ones(3, dtype=torch.float64)))
    locs = pyro.sample("locs", dist.Normal(0.0, 5.0).expand([3]).to_event(1))
    scale = pyro.sample("scale", dist.LogNormal(0.0, 1.0))
    with pyro.plate("data", len(x)):
        z = pyro.sample("z", dist.Categorical(w))
        pyro.sample("obs", dist.Normal(Vindex(locs)[..., z], scale), obs=x)


def global_label(x):
    """One label for the whole data set, outside the plate."""
    locs = pyro.sample("locs", dist.Normal(0.0, 5.0).expand([2]).to_event(1))
    z = pyro.sample("z", dist.Categorical(torch.tensor([0.3, 0.7], dtype=torch.float64)))
    with pyro.plate("data", len(x)):
        pyro.sample("obs", dist.Normal(Vindex(locs)[..., z], 1.0), obs=x)


def nested_plates(x):
    """A label per group, items nested in groups."""
    locs = pyro.sample("locs", dist.Normal(0.0, 5.0).expand([2]).to_event(1))
    with pyro.plate("groups", x.shape[0], dim=-2):
        z = pyro.sample("z", dist.Bernoulli(0.4)).long()
        with pyro.plate("items", x.shape[1], dim=-1):
            pyro.sample("obs", dist.Normal(Vindex(locs)[..., z], 1.0), obs=x)


def two_independent_labels(x):
    """Two discrete sites in two plates, neither term holding both."""
    loc = pyro.sample("loc", dist.Normal(0.0, 5.0))
    with pyro.plate("a", 7):
        z1 = pyro.sample("z1", dist.Bernoulli(0.3))
        pyro.sample("o1", dist.Normal(loc + z1, 1.0), obs=x[:7])
    with pyro.plate("b", 9):
        z2 = pyro.sample("z2", dist.Categorical(torch.ones(3, dtype=torch.float64) / 3))
        pyro.sample("o2", dist.Normal(loc - z2.double(), 2.0), obs=x[7:16])


def markov_chain(x):
    """Two enumerated variables in one term: the general contraction is used."""
    loc = pyro.sample("loc", dist.Normal(0.0, 5.0))
    z = 0
    for t in pyro.markov(range(5)):
        p = torch.tensor([[0.8, 0.2], [0.3, 0.7]], dtype=torch.float64)[z]
        z = pyro.sample(f"z_{t}", dist.Categorical(p))
        pyro.sample(f"x_{t}", dist.Normal(loc * z.double(), 1.0), obs=x[t])


# every test in float64 (the shared fixture of tests/conftest.py)
pytestmark = pytest.mark.usefixtures("float64")


CASES = [(local_labels, X), (global_label, X), (nested_plates, GROUPS), (two_independent_labels, X)]


def _build(model, data, chains=3):
    config = pyro.infer.config_enumerate(model)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        params, potential_fn, transforms, _ = initialize_model(
            config, model_args=(data,), num_chains=chains, max_plate_nesting=2
        )
    template = {k: v[0] for k, v in params.items()}
    pot = BatchedPotential(config, data, transforms, template, chains, 2, enumerate_discrete=True)
    flat = pot.flatten(params)
    return pot, flat, potential_fn


@pytest.mark.parametrize(("model", "data"), CASES, ids=[m.__name__ for m, _ in CASES])
def test_own_sum_equals_pyros_contraction_and_pyros_potential(model, data, monkeypatch):
    pot, flat, potential_fn = _build(model, data)
    flat = flat + 0.3 * torch.randn(flat.shape, dtype=flat.dtype, generator=torch.Generator().manual_seed(1))
    calls = []
    real = potential_module._sum_out_locals

    def spy(*args):
        out = real(*args)
        calls.append(out is not None)
        return out

    monkeypatch.setattr(potential_module, "_sum_out_locals", spy)
    ours = pot.batched(flat)
    assert calls and all(calls)  # the own sum served every call
    monkeypatch.setattr(potential_module, "_sum_out_locals", lambda *args: None)
    pyros = pot.batched(flat)
    torch.testing.assert_close(ours, pyros, rtol=1e-12, atol=1e-10)
    one_state = torch.stack([potential_fn(row) for row in pot.unflatten_rows(flat)])
    torch.testing.assert_close(ours, one_state, rtol=1e-12, atol=1e-10)


def test_two_enumerated_variables_in_one_term_use_pyros_contraction(monkeypatch):
    pot, flat, potential_fn = _build(markov_chain, X)
    calls = []
    real = potential_module._sum_out_locals
    monkeypatch.setattr(potential_module, "_sum_out_locals", lambda *a: calls.append(real(*a)) or calls[-1])
    ours = pot.batched(flat)
    assert calls and all(c is None for c in calls)
    one_state = torch.stack([potential_fn(row) for row in pot.unflatten_rows(flat)])
    torch.testing.assert_close(ours, one_state, rtol=1e-12, atol=1e-10)
