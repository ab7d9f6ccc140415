"""Chain starts are checked and redrawn; a chain that fails never takes the others' draws with it.

The model of the report: a centred stochastic-volatility model of the last 100 daily S&P 500
returns of 2018 (``probgen.datasets.load_sp500``), 103 latents.  ``phi`` is a Beta moved to
(-1, 1) by an affine map, whose support Pyro reads as the whole real line, so Pyro's uniform
starts put ``phi`` outside (-1, 1) about half the time and ``h_0``'s scale is then NaN.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.distributions.transforms import AffineTransform

import probgen as pg
from probgen.datasets import load_sp500
from probgen.inference._mcmc_starts import ChainFailure, StartWarning, find_starts

RETURNS = torch.tensor(load_sp500()["return"].to_numpy(), dtype=torch.float64)


def stochastic_volatility(returns=None):
    T = 100 if returns is None else returns.shape[0]
    phi = pyro.sample("phi", dist.TransformedDistribution(dist.Beta(20.0, 1.5), AffineTransform(-1.0, 2.0)))
    mu = pyro.sample("mu", dist.Normal(0.0, 1.0))
    sigma = pyro.sample("sigma", dist.HalfNormal(1.0))
    h_t = pyro.sample("h_0", dist.Normal(mu, sigma / torch.sqrt(1.0 - phi**2)))
    h = [h_t]
    for t in range(1, T):
        h_t = pyro.sample(f"h_{t}", dist.Normal(mu + phi * (h_t - mu), sigma))
        h.append(h_t)
    with pyro.plate("days", T):
        return pyro.sample("r", dist.Normal(0.0, torch.exp(torch.stack(h, -1) / 2.0)), obs=returns)


SV = pg.model(stochastic_volatility)


def test_sp500_returns_are_the_last_100_of_2018():
    frame = load_sp500()
    assert len(frame) == 100 and frame["date"].iloc[-1] == "2018-12-31"
    # each return is the log ratio of consecutive closes, in percent
    closes = frame["close"].to_numpy()
    expected = 100 * np.log(closes[1:] / closes[:-1])
    assert frame["return"].iloc[1:].to_numpy() == pytest.approx(expected, abs=1e-5)


def test_uniform_starts_outside_the_support_are_redrawn():
    # Pyro's own search raises at the first start with |phi| > 1 (h_0's scale is NaN); here
    # every chain gets a finite start, and some needed redraws
    strategies = [(pyro.infer.autoguide.initialization.init_to_uniform, False, False)] * 8
    starts = find_starts(SV.model, RETURNS, 1, strategies, seeds=list(range(8)))
    assert sum(s.redraws for s in starts) > 0
    for s in starts:
        assert abs(float(s.z["phi"])) < 1.0
        z = {k: v.clone().requires_grad_() for k, v in s.z.items()}
        pe = s.potential_fn(z)
        grads = torch.autograd.grad(pe, list(z.values()))
        assert math.isfinite(float(pe.detach())) and all(bool(torch.isfinite(g).all()) for g in grads)


@pytest.mark.slow
def test_default_fit_of_stochastic_volatility_completes_from_finite_starts():
    # short trees keep this quick; the starts are what is checked
    fit = pg.fit(
        SV, RETURNS, method="mcmc", seed=0, progress=False, num_samples=30, warmup_steps=30, max_tree_depth=4
    )
    inits = fit.extras["init"]
    assert inits["phi"].shape == (4,)
    assert bool((inits["phi"].abs() < 1).all()) and bool((inits["sigma"] > 0).all())
    assert len(fit.extras["init_redraws"]) == 4
    assert bool(torch.isfinite(torch.as_tensor(fit.sample_stats["lp"])).all())
    assert bool((fit.posterior["phi"].abs() < 1).all())


@pytest.mark.slow
def test_a_start_outside_the_support_for_one_chain_is_replaced_with_a_warning():
    # chain 1 starts at phi = 1.5 (zero density, h_0's scale NaN); the others inside
    init = {"phi": torch.tensor([0.9, 1.5, 0.9, 0.9]), "sigma": torch.tensor(0.3)}
    with pytest.warns(StartWarning, match="chain 1: the given starting values"):
        fit = pg.fit(
            SV,
            RETURNS,
            method="mcmc",
            seed=1,
            progress=False,
            num_samples=10,
            warmup_steps=10,
            max_tree_depth=3,
            init=init,
        )
    phi0 = fit.extras["init"]["phi"]
    assert float(phi0[0]) == pytest.approx(0.9) and float(phi0[2]) == pytest.approx(0.9)
    assert abs(float(phi0[1])) < 1.0  # redrawn, not the given 1.5


@pg.model
def impossible(data=None):
    loc = pyro.sample("loc", dist.Normal(0.0, 1.0))
    pyro.factor("never", -math.inf * (1.0 + loc**2))  # zero density everywhere
    with pyro.plate("data", 5 if data is None else len(data)):
        pyro.sample("obs", dist.Normal(loc, 1.0), obs=data)


def test_no_finite_start_names_the_site():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ChainFailure, match=r"chain 0: no starting point.*site\(s\) 'never'"):
            pg.fit(impossible, torch.zeros(5), method="mcmc", seed=0, progress=False, num_samples=5)
