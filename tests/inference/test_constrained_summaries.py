"""Posterior point summaries lie in each site's support; MCMC's discrete draws are reachable."""

import math

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.ops.indexing import Vindex
from torch.distributions import constraints

import probgen as pg
from probgen.models import GaussianMixture
from probgen.summaries import constrained_mean, posterior_means, unconstrained_mean

D = 3  # features: not the number of components, so no axis of the correlation factor looks like one


def _corr2(r: float) -> torch.Tensor:
    """The Cholesky factor of the 2x2 correlation matrix with correlation ``r``."""
    return torch.tensor([[1.0, 0.0], [r, math.sqrt(1.0 - r * r)]], dtype=torch.float64)


@pg.model
def lkj_mixture(data=None):
    weights = pyro.sample("weights", dist.Dirichlet(torch.ones(2, dtype=torch.float64)))
    with pyro.plate("components", 2):
        locs = pyro.sample("locs", dist.Normal(torch.zeros(D, dtype=torch.float64), 5.0).to_event(1))
    corr = pyro.sample("corr_cholesky", dist.LKJCholesky(D, torch.tensor(1.0, dtype=torch.float64)))
    with pyro.plate("data", 10 if data is None else len(data)):
        z = pyro.sample("z", dist.Categorical(weights))
        return pyro.sample("obs", dist.MultivariateNormal(Vindex(locs)[..., z, :], scale_tril=corr), obs=data)


@pg.model
def correlated(data=None):
    corr = pyro.sample("corr_cholesky", dist.LKJCholesky(D, torch.tensor(1.0, dtype=torch.float64)))
    with pyro.plate("data", 10 if data is None else len(data)):
        return pyro.sample(
            "obs", dist.MultivariateNormal(torch.zeros(D, dtype=torch.float64), scale_tril=corr), obs=data
        )


def _correlated_data(n: int, shift: float, seed: int = 0) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    cov = np.array([[1.0, 0.6, 0.3], [0.6, 1.0, 0.2], [0.3, 0.2, 1.0]])
    half = [
        rng.multivariate_normal([-shift, 0.0, 0.0], cov, n // 2),
        rng.multivariate_normal([shift, 1.0, 0.0], cov, n // 2),
    ]
    return torch.tensor(np.concatenate(half))


# ---- the summaries themselves, on hand-made draws -----------------------------------------------


def test_unconstrained_mean_of_two_correlation_factors_is_the_hand_answer():
    draws = torch.stack([_corr2(0.5), _corr2(-0.9)]).reshape(1, 2, 2, 2)  # (chain, draw, 2, 2)
    # d = 2: the unconstrained value is atanh(r); their mean maps back to r = tanh(mean)
    r = math.tanh((math.atanh(0.5) + math.atanh(-0.9)) / 2)
    expected = _corr2(r)
    assert not bool(constraints.corr_cholesky.check(draws.mean((0, 1))))  # the element-wise mean is off
    torch.testing.assert_close(
        unconstrained_mean(draws, constraints.corr_cholesky), expected, rtol=0, atol=1e-12
    )
    got = constrained_mean(draws, constraints.corr_cholesky)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-12)
    assert bool(constraints.corr_cholesky.check(got))


def test_a_mean_inside_the_support_is_the_plain_mean():
    pos = torch.tensor([[1.0, 4.0]], dtype=torch.float64).reshape(1, 2, 1)
    assert torch.equal(constrained_mean(pos, constraints.positive), torch.tensor([2.5], dtype=torch.float64))
    same = torch.stack([_corr2(0.3), _corr2(0.3)]).reshape(2, 1, 2, 2)  # identical factors: mean is one
    assert torch.equal(constrained_mean(same, constraints.corr_cholesky), _corr2(0.3))
    real = torch.randn(2, 5, 3, dtype=torch.float64)
    assert torch.equal(constrained_mean(real, constraints.real), real.mean((0, 1)))


def test_a_simplex_mean_off_by_rounding_is_renormalised():
    draws = torch.tensor([[[0.3, 0.7 + 4e-6], [0.5, 0.5 + 4e-6]]], dtype=torch.float64)  # sums 1 + 4e-6
    got = constrained_mean(draws, constraints.simplex)
    mean = torch.tensor([0.4, 0.6 + 4e-6], dtype=torch.float64)
    torch.testing.assert_close(got, mean / mean.sum(), rtol=0, atol=1e-15)
    assert bool(constraints.simplex.check(got))


def test_posterior_means_read_each_sites_support_from_the_model():
    gen = torch.Generator().manual_seed(0)
    corr = dist.LKJCholesky(D, torch.tensor(1.0, dtype=torch.float64)).sample((2, 20))
    locs = torch.randn(2, 20, 2, D, dtype=torch.float64, generator=gen)
    weights = torch.distributions.Dirichlet(torch.ones(2, dtype=torch.float64)).sample((2, 20))
    posterior = {"corr_cholesky": corr, "locs": locs, "weights": weights}
    got = posterior_means(lkj_mixture, _correlated_data(20, 3.0), posterior)
    assert torch.equal(got["locs"], locs.mean((0, 1)))  # unconstrained: the plain mean
    assert torch.equal(got["weights"], weights.mean((0, 1)))  # simplex, already valid: the plain mean
    assert not bool(constraints.corr_cholesky.check(corr.mean((0, 1))))
    torch.testing.assert_close(got["corr_cholesky"], unconstrained_mean(corr, constraints.corr_cholesky))
    assert bool(constraints.corr_cholesky.check(got["corr_cholesky"]))


# ---- fits ------------------------------------------------------------------------------------------


def test_svi_params_of_a_correlation_factor_are_a_correlation_factor():
    data = _correlated_data(60, 0.0)
    fit = pg.fit(
        correlated, data, method="svi", seed=0, num_steps=300, lr=0.05, num_samples=200, progress=False
    )
    draws = fit.posterior["corr_cholesky"]
    assert bool(constraints.corr_cholesky.check(fit.params["corr_cholesky"]))
    torch.testing.assert_close(
        fit.params["corr_cholesky"], unconstrained_mean(draws, constraints.corr_cholesky)
    )
    assert math.isfinite(fit.bic(data))  # evaluated at fit.params


@pytest.fixture(scope="module")
def mixture_fit():
    data = _correlated_data(40, 1.2)  # overlapping clusters: some items have no clear label
    fit = pg.fit(
        lkj_mixture,
        data,
        method="mcmc",
        seed=0,
        num_samples=100,
        warmup_steps=100,
        recover_discrete=True,
        num_threads=1,
        progress=False,
    )
    return fit, data


def test_check_runs_on_an_mcmc_fit_with_a_correlation_factor(mixture_fit):
    fit, _ = mixture_fit
    corr = fit.params["corr_cholesky"]
    assert bool(constraints.corr_cholesky.check(corr))
    torch.testing.assert_close(
        corr, unconstrained_mean(fit.posterior["corr_cholesky"], constraints.corr_cholesky)
    )
    assert torch.equal(fit.params["locs"], fit.posterior["locs"].mean((0, 1)))  # after relabelling
    problems = pg.check(fit)  # traces the model at fit.params: crashed on the element-wise mean
    assert all(isinstance(p, str) for p in problems)


def test_recovered_discrete_draws_agree_with_predict_proba(mixture_fit):
    fit, data = mixture_fit
    z = fit.extras["discrete"]["z"]
    assert z.shape == (4, 100, len(data))
    assert set(z.unique().tolist()) <= {0, 1}
    freq = (z == 1).double().mean((0, 1))
    proba = torch.as_tensor(fit.predict_proba(data))[:, 1]
    uncertain = ((proba > 0.1) & (proba < 0.9)).sum()
    assert int(uncertain) >= 1  # the comparison is not only of 0s and 1s
    # 400 draws of a Bernoulli: sd at most 0.025; the bound is about six of them
    assert float((freq - proba).abs().max()) < 0.15


def test_gaussian_mixture_full_covariance_mcmc_params_are_valid():
    from_family = pg.fit(
        GaussianMixture(2, covariance_type="full"),
        _correlated_data(40, 3.0)[:, :2],
        method="mcmc",
        seed=0,
        num_samples=50,
        warmup_steps=50,
        num_threads=1,
        progress=False,
    )
    corr = from_family.params["corr_cholesky"]
    assert corr.shape == (2, 2, 2) and bool(constraints.corr_cholesky.check(corr).all())
    assert torch.equal(from_family.params["locs"], from_family.posterior["locs"].mean((0, 1)))
    assert all(isinstance(p, str) for p in pg.check(from_family))
