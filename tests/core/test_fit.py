"""fit() on user-written models: analytic posteriors, the Fit tools, and bad input."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch

import probgen as pg
from tests.core.models import NOISE_SD, PRIOR_MU, PRIOR_SD, beta_binomial, normal_normal

Y8 = torch.tensor([28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0])
SIGMA8 = torch.tensor([15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0])


@pg.model
def eight_schools(data=None):
    mu = pyro.sample("mu", dist.Normal(0.0, 5.0))
    tau = pyro.sample("tau", dist.HalfCauchy(5.0))
    with pyro.plate("schools", 8):
        theta = pyro.sample("theta", dist.Normal(mu, tau))
        return pyro.sample("obs", dist.Normal(theta, SIGMA8), obs=data)


def _normal_posterior(y: torch.Tensor) -> tuple[float, float]:
    precision = 1 / PRIOR_SD**2 + len(y) / NOISE_SD**2
    mean = (PRIOR_MU / PRIOR_SD**2 + float(y.sum()) / NOISE_SD**2) / precision
    return mean, math.sqrt(1 / precision)


NN_DATA = torch.tensor([2.1, 3.3, 0.4, 2.8, 1.9, 3.7, 2.2, 1.1, 2.6, 3.0])
BB_DATA = torch.tensor([12.0, 9.0, 14.0, 11.0, 10.0])


@pytest.mark.parametrize(
    "method, options, tol_mean, tol_sd",
    [
        ("mcmc", {"num_samples": 600, "warmup_steps": 300}, 0.06, 0.05),
        ("svi", {"num_steps": 2000, "lr": 0.05, "lr_decay": 0.05, "tol": 0}, 0.05, 0.03),
    ],
)
def test_normal_normal_posterior_is_analytic(method, options, tol_mean, tol_sd):
    fit = pg.fit(normal_normal, NN_DATA, method=method, seed=1, progress=False, **options)
    mean, sd = _normal_posterior(NN_DATA)  # 2.26 and 0.45; the prior mean 1.0 fails
    draws = fit.posterior["mu"]
    assert draws.shape[:2] == ((4, 600) if method == "mcmc" else (1, 1000))
    assert draws.mean().item() == pytest.approx(mean, abs=tol_mean)
    assert draws.std().item() == pytest.approx(sd, abs=tol_sd)


@pytest.mark.parametrize("method, tol", [("mcmc", 0.015), ("svi", 0.02)])
def test_beta_binomial_posterior_is_analytic(method, tol):
    opts = (
        {"num_samples": 600, "warmup_steps": 300}
        if method == "mcmc"
        else {"num_steps": 2000, "lr": 0.05, "lr_decay": 0.05, "tol": 0}
    )
    fit = pg.fit(beta_binomial, BB_DATA, method=method, seed=2, progress=False, **opts)
    a, b = 2 + BB_DATA.sum().item(), 3 + (20 * len(BB_DATA) - BB_DATA.sum().item())
    assert fit.posterior["p"].mean().item() == pytest.approx(a / (a + b), abs=tol)
    sd = math.sqrt(a * b / ((a + b) ** 2 * (a + b + 1)))
    assert fit.posterior["p"].std().item() == pytest.approx(sd, abs=tol)


def test_mcmc_records_sampler_statistics():
    fit = pg.fit(
        normal_normal, NN_DATA, method="mcmc", seed=0, progress=False, num_samples=50, warmup_steps=50
    )
    for key in ("diverging", "step_size", "tree_depth", "acceptance_rate", "lp"):
        assert fit.sample_stats[key].shape == (4, 50)  # four chains by default
    assert fit.sample_stats["diverging"].dtype == bool
    assert (fit.sample_stats["tree_depth"] >= 1).all()
    acc = fit.sample_stats["acceptance_rate"]
    assert ((acc >= 0) & (acc <= 1)).all()
    # lp is the log joint density at each draw: check it against the model by hand
    mu = fit.posterior["mu"][0, 7]
    lp = dist.Normal(PRIOR_MU, PRIOR_SD).log_prob(mu) + dist.Normal(mu, NOISE_SD).log_prob(NN_DATA).sum()
    assert fit.sample_stats["lp"][0, 7] == pytest.approx(lp.item(), abs=1e-4)
    idata = fit.to_arviz()
    assert set(idata.sample_stats.data_vars) >= {
        "diverging",
        "step_size",
        "tree_depth",
        "acceptance_rate",
        "lp",
    }


def test_pointwise_log_likelihood_of_local_latent_model_conditions_on_theta():
    fit = pg.fit(eight_schools, Y8, method="svi", seed=0, progress=False, num_steps=200, num_samples=20)
    ll = fit.pointwise_log_likelihood()
    theta = fit.posterior["theta"]
    expected = dist.Normal(theta, SIGMA8).log_prob(Y8)
    assert ll.shape == (1, 20, 8)
    assert torch.allclose(ll, expected, atol=1e-5)


def test_sample_draws_from_the_fitted_model():
    fit = pg.fit(normal_normal, NN_DATA, method="svi", seed=0, progress=False, num_steps=300)
    x = fit.sample(4000, seed=1)
    assert x.shape == (4000,)
    mu = fit.params["mu"].item()
    assert x.mean().item() == pytest.approx(mu, abs=4 * NOISE_SD / math.sqrt(4000))
    assert x.std().item() == pytest.approx(NOISE_SD, rel=0.05)


def test_seed_makes_fits_reproducible():
    a = pg.fit(normal_normal, NN_DATA, method="svi", seed=5, progress=False, num_steps=100)
    b = pg.fit(normal_normal, NN_DATA, method="svi", seed=5, progress=False, num_steps=100)
    assert np.array_equal(a.history, b.history)
    assert torch.equal(a.posterior["mu"], b.posterior["mu"])


# ------------------------------------------------------------------------------- bad input
def test_nan_in_data_is_refused_before_work():
    with pytest.raises(ValueError, match="data has 1 NaN and 0 infinite values"):
        pg.fit(normal_normal, [1.0, float("nan"), 2.0], method="svi", progress=False)


def test_unknown_method_lists_the_known_ones():
    with pytest.raises(
        ValueError, match="Unknown method 'gibbs'; expected one of: adversarial, cd, em, enum, mcmc, svi"
    ):
        pg.fit(normal_normal, NN_DATA, method="gibbs")


def test_model_with_no_sample_sites_is_refused():
    @pg.model
    def empty(data=None):
        return data

    with pytest.raises(ValueError, match="no pyro.sample sites"):
        pg.fit(empty, NN_DATA, method="svi", progress=False)


@pytest.mark.parametrize(
    "method, options, match",
    [
        ("mcmc", {"num_samples": -5}, "num_samples must be a positive int; got -5"),
        ("mcmc", {"num_chain": 2}, "Unknown MCMC option\\(s\\) \\['num_chain'\\]"),
        ("svi", {"lr": 0.0}, "lr must be a positive number; got 0.0"),
        ("svi", {"subsample_size": 0}, "subsample_size must be an int in"),
        ("em", {"max_iter": 0}, "max_iter must be a positive int; got 0"),
        ("enum", {"tol": 1}, "takes no options"),
    ],
)
def test_impossible_options_are_refused(method, options, match):
    from tests.core.models import make_mixture, sprinkler

    model = {"enum": sprinkler, "em": make_mixture()}.get(method, normal_normal)
    data = torch.tensor([1.0, 0.0, 1.0]) if method == "enum" else NN_DATA
    with pytest.raises(ValueError, match=match):
        pg.fit(model, data, method=method, progress=False, **options)


def test_wrong_data_type_is_refused():
    with pytest.raises(TypeError, match="data must be numeric"):
        pg.fit(normal_normal, np.array(["a", "b"]), method="svi", progress=False)
    with pytest.raises(ValueError, match="data is empty"):
        pg.fit(normal_normal, [], method="svi", progress=False)


def test_subsampling_uses_the_data_plate():
    @pg.model
    def normal_sub(data=None, subsample_size=None):
        mu = pyro.sample("mu", dist.Normal(PRIOR_MU, PRIOR_SD))
        with pyro.plate("data", len(data), subsample_size=subsample_size) as idx:
            pyro.sample("obs", dist.Normal(mu, NOISE_SD), obs=data[idx])

    fit = pg.fit(
        normal_sub, NN_DATA, method="svi", seed=0, progress=False, subsample_size=5, num_steps=3000, lr=0.02
    )
    mean, _ = _normal_posterior(NN_DATA)
    assert fit.posterior["mu"].mean().item() == pytest.approx(mean, abs=0.15)


def test_family_helpers_are_reachable_on_the_fit():
    @dataclasses.dataclass(frozen=True, eq=False, repr=False)
    class DoublerFit(pg.Fit):
        def twice_mean(self, scale=2.0):
            return scale * self.params["mu"]

    class Doubler(pg.GenerativeModel):
        fit_class = DoublerFit

        def model(self, data=None):
            mu = pyro.sample("mu", dist.Normal(0.0, 10.0))
            with pyro.plate("data", 5 if data is None else len(data)):
                pyro.sample("obs", dist.Normal(mu, 1.0), obs=data)

    fit = pg.fit(Doubler(), NN_DATA, method="em", seed=0, progress=False)
    assert isinstance(fit, DoublerFit)
    assert fit.twice_mean() == pytest.approx(2 * float(NN_DATA.mean()), abs=1e-3)
    assert "twice_mean" in dir(fit)
    with pytest.raises(AttributeError, match="'DoublerFit' object has no attribute 'encode'"):
        _ = fit.encode


def test_a_fit_is_immutable():
    fit = pg.fit(normal_normal, NN_DATA, method="svi", seed=0, progress=False, num_steps=50)
    with pytest.raises(dataclasses.FrozenInstanceError):
        fit.params = {}  # type: ignore[misc]
    with pytest.raises(TypeError):
        fit.params["mu"] = torch.zeros(())  # type: ignore[index]
    with pytest.raises(TypeError):
        fit.posterior["mu"] = torch.zeros(())  # type: ignore[index]


def test_device_option_is_validated_and_cpu_gives_the_default_fit():
    on_cpu = pg.fit(normal_normal, NN_DATA, method="svi", num_steps=100, progress=False, device="cpu")
    default = pg.fit(normal_normal, NN_DATA, method="svi", num_steps=100, progress=False)
    for k, v in default.params.items():
        assert torch.equal(on_cpu.params[k], v)
    with pytest.raises(ValueError, match="device must be a torch device"):
        pg.fit(normal_normal, NN_DATA, method="svi", device="gpu-please")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="cuda.is_available"):
            pg.fit(normal_normal, NN_DATA, method="svi", device="cuda")
