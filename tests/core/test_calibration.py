"""Simulation-based calibration: exact posteriors pass, wrong ones are flagged in the right direction."""

from __future__ import annotations

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch

import probgen as pg

PRIOR_SD, NOISE_SD, N = 2.0, 1.0, 10
POST_SD = (1 / PRIOR_SD**2 + N / NOISE_SD**2) ** -0.5  # 0.312


def normal_mean(data=None):
    mu = pyro.sample("mu", dist.Normal(0.0, PRIOR_SD))
    with pyro.plate("data", N if data is None else len(data)):
        pyro.sample("obs", dist.Normal(mu, NOISE_SD), obs=data)


def exact_family_guide(data=None):  # the posterior is Gaussian: this family holds it exactly
    loc = pyro.param("loc", torch.tensor(0.0))
    scale = pyro.param("scale", torch.tensor(1.0), constraint=dist.constraints.positive)
    pyro.sample("mu", dist.Normal(loc, scale))


def too_wide_guide(data=None):  # the right centre, three times the posterior's spread
    loc = pyro.param("loc", torch.tensor(0.0))
    pyro.sample("mu", dist.Normal(loc, 3 * POST_SD))


SVI = {"num_steps": 400, "lr": 0.05, "num_samples": 200}


@pytest.mark.slow
def test_an_exact_guide_is_calibrated():
    cal = pg.calibrate(pg.model(normal_mean, exact_family_guide), "svi", num_simulations=100, **SVI)
    assert cal.ranks["mu"].shape == (100,)
    assert cal.p_values["mu"] > 0.001
    assert cal.summary().loc["mu", "verdict"] == "calibrated"


@pytest.mark.slow
@pytest.mark.parametrize(
    "guide, direction",
    [("delta", "under-dispersed"), (too_wide_guide, "over-dispersed")],
    ids=["point-mass", "too-wide"],
)
def test_wrong_guides_are_flagged_in_the_right_direction(guide, direction):
    model = pg.model(normal_mean) if guide == "delta" else pg.model(normal_mean, guide)
    opts = {**SVI, "guide": "delta"} if guide == "delta" else SVI
    cal = pg.calibrate(model, "svi", num_simulations=100, **opts)
    row = cal.summary().loc["mu"]
    assert row["verdict"] == "miscalibrated"
    assert row["direction"].startswith(direction)


@pytest.mark.slow
def test_mcmc_on_eight_schools_is_calibrated():
    sigma = torch.tensor([15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0])

    def eight_schools(data=None):
        mu = pyro.sample("mu", dist.Normal(0.0, 5.0))
        tau = pyro.sample("tau", dist.HalfCauchy(5.0))
        with pyro.plate("schools", 8):
            eta = pyro.sample("eta", dist.Normal(0.0, 1.0))
            pyro.sample("obs", dist.Normal(mu + tau * eta, sigma), obs=data)

    # one chain of 100 draws thinned to 49 per simulation keeps this within a few minutes
    cal = pg.calibrate(
        eight_schools,
        "mcmc",
        num_simulations=40,
        num_draws=49,
        num_samples=100,
        warmup_steps=100,
        num_chains=1,
        target_accept_prob=0.9,
    )
    table = cal.summary()
    assert set(table.index) == {"mu", "tau", "eta"}
    assert (table["verdict"] == "calibrated").all(), table


def test_ranks_count_draws_below_the_truth_and_resume_from_a_checkpoint(tmp_path):
    path = tmp_path / "sbc.npz"
    opts = {"num_steps": 60, "lr": 0.1, "num_samples": 30, "tol": 0}
    first = pg.calibrate(normal_mean, "svi", num_simulations=20, num_draws=9, checkpoint=path, **opts)
    assert first.ranks["mu"].dtype == np.int64
    assert first.ranks["mu"].min() >= 0 and first.ranks["mu"].max() <= 9
    # a second call with more simulations reruns only the new ones and keeps the old ranks
    again = pg.calibrate(normal_mean, "svi", num_simulations=22, num_draws=9, checkpoint=path, **opts)
    assert np.array_equal(again.ranks["mu"][:20], first.ranks["mu"])
    fresh = pg.calibrate(normal_mean, "svi", num_simulations=22, num_draws=9, **opts)
    assert np.array_equal(again.ranks["mu"], fresh.ranks["mu"])  # seeded per simulation
    with pytest.raises(ValueError, match="was written with num_draws=9"):
        pg.calibrate(normal_mean, "svi", num_simulations=22, num_draws=19, checkpoint=path, **opts)


def test_a_rank_is_the_number_of_thinned_draws_below_the_truth():
    from probgen.calibration import _generate, _one

    gm = pg.model(normal_mean)
    opts = {"num_steps": 60, "lr": 0.1, "num_samples": 30, "tol": 0}
    ranks = _one(gm, "svi", 5, 9, opts)
    truth, data = _generate(gm, 5)
    fit = pg.fit(gm, data, method="svi", seed=5, progress=False, **opts)
    draws = fit.posterior["mu"].reshape(-1)[torch.linspace(0, 29, 9).round().long()]
    assert int(ranks["mu"]) == int((draws < truth["mu"]).sum())


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"method": "em"}, "method='em' cannot be calibrated: EM gives point estimates"),
        ({"method": "svi", "num_simulations": 10}, "num_simulations must be an int of at least 20"),
    ],
)
def test_impossible_requests_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        pg.calibrate(normal_mean, **kwargs)


def test_a_model_that_cannot_generate_is_refused():
    def needs_data(data=None):
        mu = pyro.sample("mu", dist.Normal(0.0, 1.0))
        with pyro.plate("data", len(data)):
            pyro.sample("obs", dist.Normal(mu, 1.0), obs=data)

    with pytest.raises(ValueError, match="needs a model that generates data when called with data=None"):
        pg.calibrate(needs_data, "svi")


def test_plot_draws_one_histogram_per_site():
    import matplotlib

    matplotlib.use("Agg")
    cal = pg.calibrate(
        normal_mean, "svi", num_simulations=20, num_draws=9, num_steps=40, num_samples=20, tol=0
    )
    fig = cal.plot()
    assert len(fig.axes) == 1 and fig.axes[0].get_title().startswith("mu (p=")


@pytest.mark.slow
def test_calibration_grid_writes_a_table(tmp_path):
    from probgen.cli import main

    out = tmp_path / "calibration.md"
    assert main(["calibrate", "--quick", "--row", "normal mean, AutoDelta", "--out", str(out)]) == 0
    text = out.read_text()
    assert "| normal mean, AutoDelta | svi | 20 | miscalibrated: mu:" in text
    assert "**under-dispersed**" in text
