"""Simulation-based calibration of a model of several arguments: responses simulated at given inputs."""

from __future__ import annotations

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch

import probgen as pg
from probgen.calibration import _generate

RNG = np.random.default_rng(11)
X = RNG.normal(size=(60, 2))


def regression(x, y=None):
    beta = pyro.sample("beta", dist.Normal(0.0, 1.0).expand([2]).to_event(1))
    with pyro.plate("data", len(x)):
        return pyro.sample("y", dist.Normal(x @ beta, 0.5), obs=y)


def test_responses_are_simulated_at_the_given_inputs():
    gm = pg.model(regression)
    inputs = gm.prepare_data({"x": X})
    truth, data = _generate(gm, 3, None, inputs)
    assert set(truth) == {"beta"}
    x, y = data.values["x"], data.values["y"]
    assert torch.equal(x, inputs.values["x"])
    resid = y - x @ truth["beta"]
    assert abs(float(resid.std()) - 0.5) < 0.15  # the model's noise at the true coefficients
    _, again = _generate(gm, 3, None, inputs)
    assert torch.equal(again.values["y"], y)  # seeded


@pytest.mark.slow  # 20 fits
def test_conjugate_regression_calibrates_with_a_full_rank_guide():
    cal = pg.calibrate(
        regression,
        "svi",
        data={"x": X},
        num_simulations=20,
        num_draws=19,
        guide="mvn",
        num_steps=800,
        lr=0.05,
        progress=False,
    )
    assert cal.ranks["beta"].shape == (20, 2)
    assert min(cal.p_values.values()) > 0.001


def test_inputs_must_leave_one_response_out():
    with pytest.raises(ValueError, match="response left out"):
        pg.calibrate(regression, "svi", data={"x": X, "y": X[:, 0]}, num_simulations=20)
    with pytest.raises(ValueError, match="arguments"):
        pg.calibrate(regression, "svi", data=X[:, 0], num_simulations=20)
