"""Warm-up draws kept on request (``save_warmup=True``) and exported as ArviZ's warm-up groups."""

from __future__ import annotations

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch

import probgen as pg
from probgen import arviz_bridge

PRIOR_SD = 10.0
X = torch.randn(20, generator=torch.Generator().manual_seed(3)) + 3.0
START = 40.0  # far from the posterior mean (about 3): early warm-up draws sit near it


@pg.model
def normal_mean(data=None):
    loc = pyro.sample("loc", dist.Normal(0.0, PRIOR_SD))
    with pyro.plate("data", 20 if data is None else len(data)):
        pyro.sample("obs", dist.Normal(loc, 1.0), obs=data)


def _fit(kernel: str, **options):
    return pg.fit(
        normal_mean,
        X,
        method="mcmc",
        seed=0,
        progress=False,
        kernel=kernel,
        num_chains=2,
        warmup_steps=60,
        num_samples=50,
        init={"loc": torch.tensor(START)},
        save_warmup=True,
        **options,
    )


@pytest.mark.parametrize("kernel", ["nuts", "chees"])
def test_warmup_draws_are_kept_apart_from_the_posterior(kernel):
    fit = _fit(kernel)
    warm = fit.extras["warmup_posterior"]["loc"]
    assert warm.shape == (2, 60)
    assert fit.posterior["loc"].shape == (2, 50)
    post_var = 1.0 / (1.0 / PRIOR_SD**2 + len(X))
    post_mean = post_var * float(X.sum())  # conjugate posterior; the start (40) is 150 sd away
    # the kept draws are the posterior's, the first warm-up draws are still on their way from 40
    assert float(fit.posterior["loc"].mean()) == pytest.approx(post_mean, abs=0.15)
    assert float(warm[:, 0].min()) > post_mean + 10 * post_var**0.5
    assert not np.isin(warm.numpy(), fit.posterior["loc"].numpy()).any()
    stats = fit.extras["warmup_sample_stats"]
    assert set(stats) >= {"lp", "step_size", "n_steps", "acceptance_rate", "diverging"}
    assert stats["step_size"].shape == (2, 60)
    assert stats["diverging"].dtype == bool
    # the step size adapts during warm-up and is fixed afterwards
    assert np.unique(stats["step_size"][0]).size > 5
    assert np.unique(fit.sample_stats["step_size"][0]).size == 1


def test_to_arviz_warmup_groups():
    fit = _fit("nuts")
    idata = fit.to_arviz(warmup=True)
    groups = arviz_bridge.group_names(idata)
    assert {"warmup_posterior", "warmup_sample_stats", "posterior", "sample_stats"} <= set(groups)
    warm = idata["warmup_posterior"]["loc"]
    assert warm.shape == (2, 60)
    np.testing.assert_allclose(np.asarray(warm), fit.extras["warmup_posterior"]["loc"].numpy())
    assert "warmup_posterior" not in arviz_bridge.group_names(fit.to_arviz())


def test_warmup_refused_where_not_kept():
    fit = pg.fit(normal_mean, X, method="mcmc", seed=0, progress=False, num_chains=2, num_samples=30)
    assert "warmup_posterior" not in fit.extras
    with pytest.raises(ValueError, match="save_warmup=True"):
        fit.to_arviz(warmup=True)
    with pytest.raises(TypeError, match="warmup must be a bool"):
        fit.to_arviz(warmup="yes")
    with pytest.raises(ValueError, match="save_warmup"):
        pg.fit(normal_mean, X, method="mcmc", kernel="pyro_nuts", num_samples=5, save_warmup=True)
