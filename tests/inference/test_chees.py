"""ChEES-HMC (``method="mcmc", kernel="chees"``): exact posteriors, agreement with NUTS, diagnostics."""

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
from probgen.testing import check_model

PRIOR_SD, NOISE_SD = 10.0, 1.0
X20 = torch.randn(20, generator=torch.Generator().manual_seed(0)) + 3.0
Y8 = torch.tensor([28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0])
S8 = torch.tensor([15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0])


def _chees(model, data, **options):
    options = {"kernel": "chees", **options}
    return pg.fit(model, data, method="mcmc", seed=0, progress=False, **options)


def _mc_se(x: torch.Tensor) -> torch.Tensor:
    """Monte Carlo standard error of the mean of each element of ``x`` ``(chain, draw, ...)``."""
    flat = x.reshape(x.shape[0], x.shape[1], -1).numpy()
    ess = np.array([float(az.ess(flat[:, :, j], method="bulk")) for j in range(flat.shape[-1])])
    sd = flat.reshape(-1, flat.shape[-1]).std(0)
    return torch.as_tensor(sd / np.sqrt(ess)).reshape(x.shape[2:])


@pg.model
def normal_mean(data=None):
    mu = pyro.sample("mu", dist.Normal(0.0, PRIOR_SD))
    with pyro.plate("data", 20 if data is None else len(data)):
        pyro.sample("obs", dist.Normal(mu, NOISE_SD), obs=data)


def test_conjugate_normal_posterior_mean_and_sd_are_exact():
    fit = _chees(normal_mean, X20, num_chains=8, num_samples=500, warmup_steps=400)
    precision = 1 / PRIOR_SD**2 + len(X20) / NOISE_SD**2
    mean, sd = float(X20.sum()) / NOISE_SD**2 / precision, math.sqrt(1 / precision)
    mu = fit.posterior["mu"]
    assert mu.shape == (8, 500)
    se = float(_mc_se(mu))
    assert abs(float(mu.mean()) - mean) < 4 * se
    assert abs(float(mu.std()) / sd - 1) < 0.1
    assert fit.converged, fit.extras["convergence"]


COV = torch.tensor([[1.0, 0.9], [0.9, 1.0]]) * torch.tensor([[4.0, 2.0], [2.0, 1.0]])
MEAN = torch.tensor([1.0, -2.0])


@pg.model
def correlated(data=None):
    """A 2-D correlated Gaussian target (the observed site does not depend on it)."""
    pyro.sample("x", dist.MultivariateNormal(MEAN, COV))
    with pyro.plate("data", 3 if data is None else len(data)):
        pyro.sample("obs", dist.Normal(0.0, 1.0), obs=data)


def test_correlated_gaussian_mean_and_covariance():
    fit = _chees(correlated, torch.zeros(3), num_chains=8, num_samples=600, warmup_steps=500)
    x = fit.posterior["x"]
    se = _mc_se(x)
    assert ((x.mean((0, 1)) - MEAN).abs() < 4 * se).all(), (x.mean((0, 1)), se)
    cov = torch.cov(x.reshape(-1, 2).T)
    assert torch.allclose(cov, COV, rtol=0.15, atol=0.1), cov
    stats = fit.sample_stats
    for key in ("diverging", "step_size", "n_steps", "acceptance_rate", "lp", "energy", "trajectory_length"):
        assert stats[key].shape == (8, 600), key
    assert stats["diverging"].dtype == bool and stats["n_steps"].dtype == np.int64
    # n_steps is ceil(jitter * T / eps) with a jitter in (0, 1): at most T / eps, at least one
    bound = np.ceil(stats["trajectory_length"] / stats["step_size"])
    assert (stats["n_steps"] >= 1).all() and (stats["n_steps"] <= bound).all()
    assert stats["n_steps"].std() > 0  # jittered


def test_lp_is_the_log_joint_in_the_unconstrained_space():
    @pg.model
    def noise_scale(data=None):
        sigma = pyro.sample("sigma", dist.HalfNormal(2.0))
        with pyro.plate("data", 10 if data is None else len(data)):
            pyro.sample("obs", dist.Normal(0.0, sigma), obs=data)

    data = torch.randn(10, generator=torch.Generator().manual_seed(3)) * 1.5
    fit = _chees(noise_scale, data, num_chains=2, num_samples=20, warmup_steps=100)
    sigma = fit.posterior["sigma"]
    by_hand = (
        dist.HalfNormal(2.0).log_prob(sigma)
        + dist.Normal(0.0, sigma[..., None]).log_prob(data).sum(-1)
        + torch.log(sigma)  # the Jacobian of sigma = exp(u)
    )
    assert np.allclose(fit.sample_stats["lp"], by_hand.numpy(), rtol=1e-4, atol=1e-3)


@pg.model
def two_modes(data=None):
    """mu**2 is identified, the sign of mu is not: modes at +-2, far apart."""
    mu = pyro.sample("mu", dist.Normal(0.0, 3.0))
    with pyro.plate("data", 5 if data is None else len(data)):
        pyro.sample("obs", dist.Normal(mu**2, 0.3), obs=data)


def test_chains_stuck_in_different_modes_are_flagged():
    data = torch.full((5,), 4.0)
    fit = _chees(two_modes, data, num_chains=6, num_samples=100, warmup_steps=100, init="sample")
    signs = torch.sign(fit.posterior["mu"].mean(1))
    assert (signs > 0).any() and (signs < 0).any()  # the premise: chains sit in both modes
    rhat = float(az.rhat(fit.posterior["mu"].numpy()))
    assert rhat > 1.1
    assert not fit.converged
    assert any("R-hat" in p for p in fit.extras["convergence"])


def test_same_seed_same_draws_and_other_seed_other_draws():
    a = _chees(normal_mean, X20, num_chains=3, num_samples=30, warmup_steps=30)
    b = _chees(normal_mean, X20, num_chains=3, num_samples=30, warmup_steps=30)
    c = pg.fit(
        normal_mean, X20, method="mcmc", kernel="chees", seed=1, progress=False, num_chains=3,
        num_samples=30, warmup_steps=30,
    )  # fmt: skip
    assert torch.equal(a.posterior["mu"], b.posterior["mu"])
    assert not torch.equal(a.posterior["mu"], c.posterior["mu"])


def test_a_model_that_does_not_broadcast_over_chains_runs_chain_by_chain_and_stays_exact():
    @pg.model
    def flat_sum(data=None):
        w = pyro.sample("w", dist.Normal(0.0, 1.0).expand([2]).to_event(1))
        total = w.reshape(-1).sum()  # sums over every dim: a chains dim would be summed too
        with pyro.plate("data", 4 if data is None else len(data)):
            pyro.sample("obs", dist.Normal(total, 1.0), obs=data)

    y = torch.tensor([1.0, 2.0, 0.5, 1.5])
    fit = _chees(flat_sum, y, num_chains=4, num_samples=400, warmup_steps=300)
    assert fit.extras["chees"]["vectorised"] is False
    assert "other log densities" in fit.extras["chees"]["why_not_vectorised"]
    # w ~ N(0, I), y_i ~ N(w1 + w2, 1): posterior precision I + n a a^T, mean P^-1 a sum(y)
    a = torch.ones(2, 1)
    precision = torch.eye(2) + len(y) * a @ a.T
    exact = torch.linalg.solve(precision, a * y.sum()).reshape(-1)
    w = fit.posterior["w"]
    assert ((w.mean((0, 1)) - exact).abs() < 4 * _mc_se(w)).all(), (w.mean((0, 1)), exact)


def test_bad_options_are_refused():
    with pytest.raises(ValueError, match="kernel"):
        _chees(normal_mean, X20, kernel="mala")
    with pytest.raises(ValueError, match="max_tree_depth"):
        _chees(normal_mean, X20, max_tree_depth=0)
    with pytest.raises(ValueError, match="num_chains"):
        _chees(normal_mean, X20, num_chains=1)
    with pytest.raises(ValueError, match="chain_method"):
        _chees(normal_mean, X20, chain_method="parallel")


def test_contract_holds_for_chees():
    report = check_model(
        normal_mean, X20, methods=["mcmc"], options={"mcmc": {"kernel": "chees", "num_chains": 4}}
    )
    assert all(v == "ok" or v.startswith("skipped") for v in report["mcmc"].values())


# --------------------------------------------------------------------------- mixture, enumeration
CENTRES = torch.tensor([-10.0, 0.0, 10.0])
_g = torch.Generator().manual_seed(1)
LABELS = torch.cat([torch.full((n,), k) for k, n in enumerate((60, 100, 140))])
XMIX = CENTRES[LABELS] + torch.randn(300, generator=_g)


@pg.model
def mixture(data=None):
    n = 300 if data is None else len(data)
    weights = pyro.sample("weights", dist.Dirichlet(torch.ones(3)))
    locs = pyro.sample("locs", dist.Normal(0.0, 10.0).expand([3]).to_event(1))
    with pyro.plate("data", n):
        z = pyro.sample("z", dist.Categorical(weights))
        pyro.sample("obs", dist.Normal(Vindex(locs)[..., z], 1.0), obs=data)


def test_mixture_with_labels_summed_out_has_the_right_means():
    """Clusters 10 sds apart: assignments are certain, so locs_k | data is conjugate normal."""
    init = {"locs": torch.tensor([-8.0, 0.0, 8.0]), "weights": torch.ones(3) / 3}
    fit = _chees(mixture, XMIX, num_chains=4, num_samples=300, warmup_steps=300, init=init)
    counts = torch.bincount(LABELS).double()
    sums = torch.stack([XMIX[LABELS == k].sum() for k in range(3)]).double()
    exact_mean = sums / (counts + 1 / 100.0)  # prior N(0, 10), unit noise
    locs = fit.posterior["locs"].double().sort(-1).values  # any labelling
    se = _mc_se(locs)
    assert ((locs.mean((0, 1)) - exact_mean).abs() < 4 * se + 1e-3).all(), (locs.mean((0, 1)), exact_mean)
    weights = fit.posterior["weights"].double().sort(-1).values
    exact_w = ((1 + counts) / (3 + counts.sum())).sort().values  # Dirichlet(1 + counts)
    assert ((weights.mean((0, 1)) - exact_w).abs() < 4 * _mc_se(weights) + 1e-3).all()
    assert fit.extras["chees"]["compiled"]


# --------------------------------------------------------------------------- agreement with NUTS
@pg.model
def schools(data=None):
    """Non-centred eight schools."""
    mu = pyro.sample("mu", dist.Normal(0.0, 5.0))
    tau = pyro.sample("tau", dist.HalfCauchy(5.0))
    with pyro.plate("schools", 8):
        eta = pyro.sample("eta", dist.Normal(0.0, 1.0))
        pyro.sample("obs", dist.Normal(mu + tau * eta, S8), obs=data)


@pytest.mark.slow
def test_eight_schools_matches_sequential_nuts():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        nuts = pg.fit(
            schools,
            Y8,
            method="mcmc",
            seed=0,
            progress=False,
            num_chains=2,
            num_samples=500,
            warmup_steps=300,
        )
    fit = _chees(schools, Y8, num_chains=8, num_samples=500, warmup_steps=500)
    assert fit.extras["chees"]["compiled"]
    for name in ("mu", "tau", "eta"):
        a, b = fit.posterior[name], nuts.posterior[name]
        se = torch.sqrt(_mc_se(a) ** 2 + _mc_se(b) ** 2)
        diff = (a.mean((0, 1)) - b.mean((0, 1))).abs()
        assert (diff < 4 * se).all(), (name, diff, se)
    # tau's posterior is heavy tailed: compare its quartiles too
    qa = torch.quantile(fit.posterior["tau"].reshape(-1), torch.tensor([0.25, 0.5, 0.75]))
    qb = torch.quantile(nuts.posterior["tau"].reshape(-1), torch.tensor([0.25, 0.5, 0.75]))
    assert torch.allclose(qa, qb, rtol=0.2, atol=0.3), (qa, qb)


@pytest.mark.slow
def test_a_model_that_branches_on_values_is_caught_and_rerun_exactly():
    """exp(-mu) tilts the density on mu > 0 only, through a Python branch on the value."""

    @pg.model
    def branching(data=None):
        mu = pyro.sample("mu", dist.Normal(0.0, 1.0))
        if bool((mu > 0).all()):  # a branch on a value: a static graph or a batch would freeze it
            pyro.factor("tilt", -3.0 * mu)
        with pyro.plate("data", 3 if data is None else len(data)):
            pyro.sample("obs", dist.Normal(0.0, 1.0), obs=data)

    fit = _chees(branching, torch.zeros(3), num_chains=4, num_samples=400, warmup_steps=300)
    info = fit.extras["chees"]
    assert info["compiled"] is False and info["vectorised"] is False
    grid = torch.linspace(-8, 8, 20001, dtype=torch.float64)
    log_density = dist.Normal(0.0, 1.0).log_prob(grid) - 3.0 * grid * (grid > 0)
    p = torch.softmax(log_density, 0)
    exact = float((p * grid).sum())
    mu = fit.posterior["mu"]
    assert abs(float(mu.mean()) - exact) < 4 * float(_mc_se(mu)), (float(mu.mean()), exact)
