"""SVI minibatches (``subsample_size``) for any model: the data plate is fed random minibatches
and scaled by N / B, and the fit reaches the analytic posterior."""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import pytest
import torch

import probgen as pg

PRIOR_SD = 10.0


def regression(x, y=None):
    beta = pyro.sample("beta", dist.Normal(0.0, PRIOR_SD).expand([2]).to_event(1))
    with pyro.plate("data", x.shape[0]):
        return pyro.sample("y", dist.Normal(x @ beta, 1.0), obs=y)


def _data(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 2, generator=g)
    return x, x @ torch.tensor([1.0, -0.5]) + torch.randn(n, generator=g)


def _exact(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Conjugate posterior of the coefficients: mean and marginal sds."""
    cov = torch.linalg.inv(x.T @ x + torch.eye(2) / PRIOR_SD**2)
    return cov @ x.T @ y, cov.diagonal().sqrt()


def test_a_model_without_the_keyword_reaches_the_conjugate_posterior_from_minibatches():
    x, y = _data(2000)
    fit = pg.fit(regression, {"x": x, "y": y}, method="svi", seed=0, progress=False, subsample_size=100)
    mean, sd = _exact(x, y)  # sd about 0.022 each
    draws = fit.posterior["beta"].reshape(-1, 2)
    assert fit.converged, fit.extras["convergence"]
    assert torch.allclose(draws.mean(0), mean, atol=float(0.25 * sd.max()))  # measured 0.04 sd
    assert torch.allclose(draws.std(0), sd, rtol=0.2)  # measured 0.98 and 0.91 of the exact sds


def test_the_data_plate_sees_minibatches_of_the_requested_size():
    sizes = []

    @pg.model
    def normal_mean(data=None):
        mu = pyro.sample("mu", dist.Normal(0.0, PRIOR_SD))
        sizes.append(0 if data is None else len(data))
        with pyro.plate("data", 10 if data is None else len(data)):
            pyro.sample("obs", dist.Normal(mu, 1.0), obs=data)

    x = torch.randn(50)
    pg.fit(normal_mean, x, method="svi", seed=0, progress=False, subsample_size=8, num_steps=12, tol=0)
    assert sizes.count(8) >= 12 and set(sizes) <= {8, 50}  # every step sees a minibatch of 8 items


def test_a_model_that_takes_the_keyword_still_works():
    @pg.model
    def normal_sub(data=None, subsample_size=None):
        mu = pyro.sample("mu", dist.Normal(0.0, PRIOR_SD))
        with pyro.plate("data", len(data), subsample_size=subsample_size) as idx:
            pyro.sample("obs", dist.Normal(mu, 1.0), obs=data[idx])

    x = 2.0 + torch.randn(400, generator=torch.Generator().manual_seed(1))
    fit = pg.fit(normal_sub, x, method="svi", seed=0, progress=False, subsample_size=40)
    precision = 1 / PRIOR_SD**2 + len(x)
    mean, sd = float(x.sum()) / precision, precision**-0.5
    assert fit.posterior["mu"].mean().item() == pytest.approx(mean, abs=0.3 * sd)
    assert fit.posterior["mu"].std().item() == pytest.approx(sd, rel=0.2)


def test_per_item_latents_under_an_autoguide_are_refused():
    @pg.model
    def schools(data=None):
        mu = pyro.sample("mu", dist.Normal(0.0, 5.0))
        with pyro.plate("data", 8 if data is None else len(data)):
            theta = pyro.sample("theta", dist.Normal(mu, 2.0))
            pyro.sample("obs", dist.Normal(theta, 1.0), obs=data)

    with pytest.raises(
        ValueError, match=r"subsample_size=4 needs a guide that amortises the per-item latents \['theta'\]"
    ):
        pg.fit(schools, torch.randn(8), method="svi", progress=False, subsample_size=4)


def test_a_bad_subsample_size_names_the_argument():
    x, y = _data(20)
    with pytest.raises(ValueError, match=r"subsample_size must be an int in \[1, 20\]"):
        pg.fit(regression, {"x": x, "y": y}, method="svi", progress=False, subsample_size=21)


def test_model_arguments_take_their_per_item_arguments_and_keep_constants():
    from probgen.arguments import ModelArgs

    args = ModelArgs({"x": torch.arange(10.0), "table": torch.ones(3), "k": 2}, 10)
    part = args.take(torch.tensor([7, 2]))
    assert torch.equal(part.values["x"], torch.tensor([7.0, 2.0])) and len(part) == 2
    assert torch.equal(part.values["table"], torch.ones(3)) and part.values["k"] == 2
