"""SVI's defaults reach the analytic posterior, ``converged`` means it, and ``pg.check`` names a
guide too narrow for its posterior (PSIS k-hat, Yao et al. 2018)."""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
from torch.utils.data import DataLoader, TensorDataset

import probgen as pg
from probgen.diagnostics import guide_khat

PRIOR_SD = 10.0


@pg.model
def normal_mean(data=None):
    mu = pyro.sample("mu", dist.Normal(0.0, PRIOR_SD))
    with pyro.plate("data", 10 if data is None else len(data)):
        pyro.sample("obs", dist.Normal(mu, 1.0), obs=data)


def _points(n: int) -> torch.Tensor:
    return 1.5 + torch.randn(n, generator=torch.Generator().manual_seed(3))


def _exact(x: torch.Tensor) -> tuple[float, float]:
    precision = 1 / PRIOR_SD**2 + len(x)
    return float(x.sum()) / precision, precision**-0.5


def _errors(fit, x) -> tuple[float, float]:
    """Error of the posterior mean in posterior sds, and the ratio of the sds."""
    mean, sd = _exact(x)
    draws = fit.posterior["mu"]
    return (draws.mean().item() - mean) / sd, draws.std().item() / sd


def test_a_streamed_fit_with_default_settings_reaches_the_analytic_posterior():
    x = _points(20_000)
    loader = DataLoader(
        TensorDataset(x), batch_size=500, shuffle=True, generator=torch.Generator().manual_seed(0)
    )
    fit = pg.fit(normal_mean, loader, method="svi", num_items=20_000, seed=2, progress=False)
    mean_error, sd_ratio = _errors(fit, x)  # exact sd 0.0071; before: 0.028, called converged
    assert fit.converged, fit.extras["convergence"]
    assert abs(mean_error) < 0.2  # measured +0.0
    assert 0.8 < sd_ratio < 1.2  # measured 1.00


def test_an_in_memory_fit_with_default_settings_reaches_the_analytic_posterior():
    x = _points(20_000)
    fit = pg.fit(normal_mean, x, method="svi", seed=0, progress=False)
    mean_error, sd_ratio = _errors(fit, x)
    assert fit.converged, fit.extras["convergence"]
    assert abs(mean_error) < 0.2  # measured -0.00
    assert 0.9 < sd_ratio < 1.1  # measured 1.01 (before: 3.4, called converged)


def test_a_run_too_short_for_the_guide_is_not_converged():
    x = _points(20_000)
    fit = pg.fit(normal_mean, x, method="svi", seed=0, progress=False, lr=1e-3, num_steps=1200)
    assert not fit.converged
    assert fit.extras["convergence"]
    assert pg.check(fit)[0].startswith("SVI did not converge")


def regression(x, y=None):
    beta = pyro.sample("beta", dist.Normal(0.0, PRIOR_SD).expand([2]).to_event(1))
    with pyro.plate("data", x.shape[0]):
        return pyro.sample("y", dist.Normal(x @ beta, 1.0), obs=y)


def _covariates(rho: float, n: int = 200) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    z = torch.randn(n, 2, generator=g)
    x = torch.stack([z[:, 0], rho * z[:, 0] + (1 - rho**2) ** 0.5 * z[:, 1]], -1)
    return {"x": x, "y": x @ torch.tensor([1.0, -0.5]) + torch.randn(n, generator=g)}


def test_a_mean_field_guide_on_collinear_covariates_is_flagged():
    data = _covariates(0.95)  # posterior correlation of the coefficients about -0.95
    fit = pg.fit(regression, data, method="svi", seed=0, progress=False)
    exact_sd = torch.linalg.inv(data["x"].T @ data["x"] + torch.eye(2) / PRIOR_SD**2).diagonal().sqrt()
    assert (fit.posterior["beta"].reshape(-1, 2).std(0) < 0.5 * exact_sd).all()  # too narrow: 0.3
    assert guide_khat(fit) > 0.7  # measured 0.86
    flagged = [p for p in pg.check(fit) if "Pareto k-hat" in p]
    assert len(flagged) == 1 and 'guide="mvn"' in flagged[0] and 'method="mcmc"' in flagged[0]


def test_a_full_covariance_guide_on_the_same_posterior_is_not_flagged():
    fit = pg.fit(regression, _covariates(0.95), method="svi", seed=0, progress=False, guide="mvn", lr=0.05)
    assert guide_khat(fit) < 0.5  # measured 0.17
    assert not [p for p in pg.check(fit) if "Pareto k-hat" in p]


def test_a_well_specified_mean_field_guide_is_not_flagged():
    fit = pg.fit(regression, _covariates(0.0), method="svi", seed=0, progress=False)
    assert guide_khat(fit) < 0.5  # measured -0.06
    assert pg.check(fit) == []


def test_a_mixture_on_unscaled_data_starts_where_em_does_and_reaches_its_optimum():
    """The autoguide starts at the family's own starting values (k-means), as EM and MCMC do:
    from Pyro's default start the two components of Old Faithful collapse onto one mode."""
    from probgen.models import GaussianMixture

    x = pg.datasets.load_old_faithful()
    em = pg.fit(GaussianMixture(2, covariance_type="diag"), x, method="em", progress=False)
    svi = pg.fit(
        GaussianMixture(2, covariance_type="diag"), x, method="svi", seed=0, progress=False, num_steps=600
    )
    assert abs(svi.score(x) - em.score(x)) < 0.01  # nats per item; a collapsed fit scores -9.6
