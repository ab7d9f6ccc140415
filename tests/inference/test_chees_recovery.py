"""ChEES-HMC's stuck-chain recovery: a chain that cannot move in warm-up is restarted from a
healthy one, and left out of the adaptation while it is stuck (issue 20)."""

from __future__ import annotations

import math
import warnings

import arviz as az
import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.ops.indexing import Vindex

import probgen as pg
import probgen.inference.mcmc  # noqa: F401  (registers the backend)
from probgen.arviz_bridge import rhat as bridge_rhat

PRIOR_SD, NOISE_SD = 10.0, 1.0
X20 = torch.randn(20, generator=torch.Generator().manual_seed(0)) + 3.0
PRECISION = 1 / PRIOR_SD**2 + len(X20) / NOISE_SD**2
EXACT_MEAN, EXACT_SD = float(X20.sum()) / NOISE_SD**2 / PRECISION, math.sqrt(1 / PRECISION)


@pg.model
def normal_mean(data=None):
    mu = pyro.sample("mu", dist.Normal(0.0, PRIOR_SD))
    with pyro.plate("data", 20 if data is None else len(data)):
        pyro.sample("obs", dist.Normal(mu, NOISE_SD), obs=data)


def _chees(model, data, seed=0, **options):
    return pg.fit(model, data, method="mcmc", kernel="chees", seed=seed, progress=False, **options)


def _mc_se(x: torch.Tensor) -> float:
    """Monte Carlo standard error of the mean of draws ``(chain, draw)``."""
    ess = float(az.ess(x.numpy(), method="bulk"))
    return float(x.std()) / math.sqrt(ess)


@pg.model
def normal(data=None):
    """A Gaussian with unknown mean and scale."""
    mu = pyro.sample("mu", dist.Normal(0.0, PRIOR_SD))
    sigma = pyro.sample("sigma", dist.LogNormal(0.0, 1.0))
    with pyro.plate("data", 20 if data is None else len(data)):
        pyro.sample("obs", dist.Normal(mu, sigma), obs=data)


def test_a_chain_started_where_every_transition_diverges_is_restarted_and_recovers():
    # chain 0 starts at sigma = 1e-4: the gradient in log sigma is ~1e9, so a step size fit for
    # the other chains throws every one of its trajectories to overflow (without the restart it
    # stays there: every transition divergent, R-hat of sigma 1.27)
    init = {"mu": torch.full((8,), 3.0), "sigma": torch.ones(8)}
    init["sigma"][0] = 1e-4
    fit = _chees(
        normal, X20, num_chains=8, num_samples=1000, warmup_steps=300, init=init
    )  # R-hat 1.002 (300: 1.022)
    info = fit.extras["chees"]
    assert info["restarts"][0] >= 1, info["restarts"]
    assert sum(info["restarts"][1:]) == 0, info["restarts"]
    assert info["unhealthy_chains"] == []
    acceptance = fit.sample_stats["acceptance_rate"].mean(1)
    assert (acceptance > 0.5).all(), acceptance
    assert not fit.sample_stats["diverging"].any()
    for name in ("mu", "sigma"):
        assert float(az.rhat(fit.posterior[name].numpy())) < 1.05, name
    mu = fit.posterior["mu"]  # flat-ish prior: the posterior mean of mu is near the sample mean
    assert abs(float(mu.mean()) - float(X20.mean())) < 4 * _mc_se(mu) + 0.01
    assert fit.converged, fit.extras["convergence"]


def test_healthy_chains_are_not_restarted_and_the_conjugate_posterior_is_exact():
    fit = _chees(normal_mean, X20, num_chains=8, num_samples=400, warmup_steps=300, init="sample")
    assert fit.extras["chees"]["restarts"] == [0] * 8
    mu = fit.posterior["mu"]
    assert abs(float(mu.mean()) - EXACT_MEAN) < 4 * _mc_se(mu)
    assert abs(float(mu.std()) / EXACT_SD - 1) < 0.1
    # T's floor: at least one posterior sd of travel (the velocity M^-1 p has that scale)
    assert fit.extras["chees"]["trajectory_length"] >= 1.0


# --------------------------------------------------------------------- two overlapping components
_g = torch.Generator().manual_seed(0)
X_MIX = torch.cat([torch.randn(150, generator=_g) - 2.0, 0.5 * torch.randn(150, generator=_g) + 2.0])


@pg.model
def mixture(data=None):
    """A 1-D two-component mixture with learned weights, locations and scales."""
    n = 300 if data is None else len(data)
    weights = pyro.sample("weights", dist.Dirichlet(torch.ones(2)))
    locs = pyro.sample("locs", dist.Normal(0.0, 5.0).expand([2]).to_event(1))
    scales = pyro.sample("scales", dist.LogNormal(0.0, 1.0).expand([2]).to_event(1))
    with pyro.plate("data", n):
        z = pyro.sample("z", dist.Categorical(weights))
        pyro.sample("obs", dist.Normal(Vindex(locs)[..., z], Vindex(scales)[..., z]), obs=data)


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_mixture_with_learned_scales_has_no_stuck_chain_and_unhealthy_runs_are_flagged(seed):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # an unhealthy run warns: it is judged below instead
        fit = _chees(mixture, X_MIX, seed=seed, num_chains=8, num_samples=300, warmup_steps=300)
    divergent_share = fit.sample_stats["diverging"].mean(1)
    assert (divergent_share < 0.2).all(), divergent_share
    rhat = max(float(np.max(r)) for r in bridge_rhat(fit.posterior).values())  # every scalar of every site
    problems = pg.check(fit, max_rhat=1.05, min_ess=50)
    if fit.extras["chees"]["unhealthy_chains"] or rhat >= 1.05:
        assert problems, (rhat, fit.extras["chees"])
    else:
        assert rhat < 1.05
