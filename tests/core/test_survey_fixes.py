"""Regression tests for the survey's findings: each named after the behaviour it pins."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import probgen as pg
from probgen.models import GaussianMixture, PoissonMixture
from tests.core.gallery import mixture_vindex, two_blobs


@pytest.fixture(scope="module")
def user_fit():
    return pg.fit(mixture_vindex, two_blobs(), method="em", seed=0, progress=False)


def test_a_finite_value_too_large_for_a_float32_model_is_refused_by_every_tool(user_fit):
    big = np.array([0.0, 1e150])
    for tool in (user_fit.predict, user_fit.log_prob, user_fit.predict_proba):
        with pytest.raises(ValueError, match=r"too large for float32 \(e.g. 1e\+150\)"):
            tool(big)


@pytest.mark.parametrize("seed", [2**70, -1])
def test_seeds_outside_the_generators_range_are_refused(user_fit, seed):
    with pytest.raises(ValueError, match=r"seed must be an int in \[0, 2\*\*63 - 1\]"):
        pg.fit(mixture_vindex, two_blobs(), method="em", seed=seed, progress=False)
    with pytest.raises(ValueError, match="seed must be an int in"):
        user_fit.sample(2, seed=seed)


def test_a_single_number_as_data_is_refused_with_the_fix(user_fit):
    with pytest.raises(
        ValueError, match=r"data is a single number \(1.0\); pass an array of items, e.g. \[1.0\]"
    ):
        user_fit.log_prob(1.0)


def test_items_of_another_shape_name_scalar_items(user_fit):
    with pytest.raises(ValueError, match=r"fitted on scalar items \(one number each\)"):
        user_fit.log_prob(np.zeros((3, 2)))


def test_a_mixture_scores_and_labels_one_item():
    x = pg.datasets.load_old_faithful().to_numpy()
    fit = pg.fit(GaussianMixture(2), x, method="em", seed=0, progress=False)
    w, locs = fit.params["weights"], fit.params["locs"]
    one = fit.log_prob(x[:1])
    assert one.shape == (1,)
    torch.testing.assert_close(one, fit.log_prob(x)[:1])
    assert fit.predict(x[:1]).shape == (1,) and w.shape == (2,) and locs.shape == (2, 2)
    counts = np.random.default_rng(0).poisson(3, (50, 2))
    pois = pg.fit(PoissonMixture(2), counts, method="em", seed=0, progress=False)
    torch.testing.assert_close(pois.log_prob(counts[:1]), pois.log_prob(counts)[:1])
    with pytest.raises(ValueError, match="n_components=3 is larger than the number of items in data \\(2\\)"):
        pg.fit(GaussianMixture(3), x[:2], method="em", progress=False)


def test_a_user_model_says_its_data_plate_is_found_at_the_first_fit():
    def f(data=None):
        return None

    assert "found by tracing at the first fit" in repr(pg.model(f))
    assert "data_plate=None" not in repr(pg.model(f))
