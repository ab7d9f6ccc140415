"""The ArviZ bridge: pointwise log-likelihood with latents summed out, LOO, summaries, compare."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import probgen as pg
from tests.core.models import make_mixture

# NUTS on a bimodal mixture posterior is slow from a random start; start near the modes.
START = {"weights": torch.tensor([0.5, 0.5]), "locs": torch.tensor([-1.0, 1.0])}


@pytest.fixture(scope="module")
def mixture_data():
    rng = np.random.default_rng(0)
    return torch.tensor(np.concatenate([rng.normal(-2, 1, 30), rng.normal(2, 1, 20)]))


@pytest.fixture(scope="module")
def mixture_fits(mixture_data):
    """One EM and one MCMC fit of the user-written mixture, shared by the tests below."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        em = pg.fit(make_mixture(), mixture_data, method="em", seed=0, progress=False)
        mcmc = pg.fit(
            make_mixture(),
            mixture_data,
            method="mcmc",
            seed=0,
            progress=False,
            num_samples=100,
            warmup_steps=100,
            init=START,
        )
    finally:
        torch.set_default_dtype(old)
    return {"em": em, "mcmc": mcmc}


def _closed_form(x, w, locs):
    # log sum_k w_k N(x | loc_k, 1) for every draw and item, by hand
    log_norm = -0.5 * np.log(2 * np.pi)
    lj = np.log(w[..., None, :]) + log_norm - 0.5 * (x[:, None] - locs[..., None, :]) ** 2
    return np.logaddexp.reduce(lj, axis=-1)


@pytest.mark.filterwarnings("ignore:Estimated shape parameter of Pareto")  # 200 draws: k near 0.6
def test_mcmc_mixture_log_likelihood_group_and_loo(float64, mixture_data, mixture_fits):
    fit = mixture_fits["mcmc"]
    idata = fit.to_arviz()
    ll = idata.log_likelihood["obs"].values
    assert ll.shape == (4, 100, 50)  # four chains by default
    w = fit.posterior["weights"].numpy()
    locs = fit.posterior["locs"].numpy()
    assert np.allclose(ll, _closed_form(mixture_data.numpy(), w, locs), atol=1e-10)
    loo = pg.loo(fit)
    assert np.isfinite(loo["elpd_loo"])
    assert loo["n_data_points"] == 50
    # log_prob of a posterior fit is the log posterior-predictive density
    lpd = np.log(np.exp(ll.reshape(-1, 50)).mean(0))
    assert np.allclose(fit.log_prob().numpy(), lpd, atol=1e-10)


def test_point_fit_converts_as_one_draw_and_reports_bic(float64, mixture_data, mixture_fits):
    fit = mixture_fits["em"]
    idata = fit.to_arviz()
    assert idata.posterior["locs"].shape == (1, 1, 2)
    ll = idata.log_likelihood["obs"].values
    w, locs = fit.params["weights"].numpy(), fit.params["locs"].numpy()
    assert np.allclose(ll[0, 0], _closed_form(mixture_data.numpy(), w, locs), atol=1e-10)
    table = pg.summary(fit)
    assert table.loc["locs[0]", "estimate"] == pytest.approx(float(locs[0]))


def test_compare_ranks_point_fits_by_bic(float64, mixture_data, mixture_fits):
    from tests.core.models import normal_normal

    f_mix = mixture_fits["em"]
    f_one = pg.fit(normal_normal, mixture_data, method="svi", seed=0, progress=False, num_steps=300)
    table = pg.compare({"mixture": f_mix, "one normal": f_one}, mixture_data, ic="bic")
    # BIC by hand for the mixture: 3 free parameters
    ll = float(
        _closed_form(
            mixture_data.numpy(), f_mix.params["weights"].numpy(), f_mix.params["locs"].numpy()
        ).sum()
    )
    assert table.loc["mixture", "bic"] == pytest.approx(-2 * ll + 3 * np.log(50), abs=1e-8)
    assert table.index[0] == "mixture"


@pytest.mark.filterwarnings("ignore:Estimated shape parameter of Pareto")  # 200 draws: k near 0.6
def test_compare_ranks_posterior_fits_by_loo(float64, mixture_data, mixture_fits):
    from tests.core.models import normal_normal

    f_mix = mixture_fits["mcmc"]
    f_one = pg.fit(
        normal_normal, mixture_data, method="mcmc", seed=0, progress=False, num_samples=100, warmup_steps=100
    )
    table = pg.compare({"mixture": f_mix, "one normal": f_one})
    assert list(table.index) == ["mixture", "one normal"]
    assert "elpd_loo" in table.columns


def test_check_reports_problems_and_passes_healthy_fits(float64, mixture_data, mixture_fits):
    assert pg.check(mixture_fits["em"]) == []
    short = pg.fit(
        make_mixture(), mixture_data, method="mcmc", seed=0, progress=False, num_samples=20, warmup_steps=20
    )
    problems = pg.check(short)
    assert any("ESS" in p for p in problems)
