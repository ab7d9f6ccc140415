"""User-written Pyro models shared by the core tests (as a user would write them)."""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
from pyro.ops.indexing import Vindex

import probgen as pg

PRIOR_MU, PRIOR_SD, NOISE_SD = 1.0, 2.0, 1.5


@pg.model
def normal_normal(data=None):
    """Known-variance Normal likelihood with a Normal prior on the mean."""
    mu = pyro.sample("mu", dist.Normal(PRIOR_MU, PRIOR_SD))
    with pyro.plate("data", 10 if data is None else len(data)):
        return pyro.sample("obs", dist.Normal(mu, NOISE_SD), obs=data)


@pg.model
def beta_binomial(data=None):
    """Binomial counts (20 trials each) with a Beta(2, 3) prior on the success probability."""
    p = pyro.sample("p", dist.Beta(2.0, 3.0))
    with pyro.plate("data", 5 if data is None else len(data)):
        return pyro.sample("obs", dist.Binomial(20, p), obs=data)


def make_mixture(scale: float = 1.0):
    """A two-component 1-D Gaussian mixture with known scale, as a user writes it."""

    @pg.model
    def mixture(data=None):
        weights = pyro.sample("weights", dist.Dirichlet(torch.ones(2)))
        with pyro.plate("components", 2):
            locs = pyro.sample("locs", dist.Normal(0.0, 10.0))
        with pyro.plate("data", 50 if data is None else len(data)):
            z = pyro.sample("z", dist.Categorical(weights))
            return pyro.sample("obs", dist.Normal(Vindex(locs)[..., z], scale), obs=data)

    return mixture


@pg.model
def sprinkler(data=None):
    """All-discrete: season -> (sprinkler, rain) -> wet grass, observed for several days."""
    cloudy = pyro.sample("cloudy", dist.Bernoulli(0.5))
    c = cloudy.long()
    n = 3 if data is None else len(data)
    with pyro.plate("days", n):
        sprinkler = pyro.sample("sprinkler", dist.Bernoulli(torch.tensor([0.5, 0.1])[c]))
        rain = pyro.sample("rain", dist.Bernoulli(torch.tensor([0.2, 0.8])[c]))
        s, r = sprinkler.long(), rain.long()
        p_wet = torch.tensor([[0.01, 0.9], [0.9, 0.99]])[s, r]
        return pyro.sample("wet", dist.Bernoulli(p_wet), obs=data)
