"""Saving and loading: round trips, and files that never run code."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import probgen as pg
from tests.core.models import make_mixture, normal_normal


def test_round_trip_keeps_estimates_draws_and_scores(tmp_path, float64):
    x = torch.tensor(np.random.default_rng(0).normal(0, 1, 40))
    mix = make_mixture()
    fit = pg.fit(mix, x, method="em", seed=0, progress=False)
    fit.save(tmp_path / "mix")
    back = pg.load(tmp_path / "mix.npz", model=mix)
    assert back.method == "em"
    assert torch.equal(back.params["locs"], fit.params["locs"])
    assert np.array_equal(back.history, fit.history)
    assert torch.allclose(back.log_prob(x), fit.log_prob(x))


def test_posterior_and_sample_stats_survive(tmp_path):
    fit = pg.fit(
        normal_normal, torch.randn(10), method="mcmc", seed=0, progress=False, num_samples=20, warmup_steps=20
    )
    fit.save(tmp_path / "nn.npz")
    back = pg.load(tmp_path / "nn.npz", model=normal_normal)
    assert torch.equal(back.posterior["mu"], fit.posterior["mu"])
    assert np.array_equal(back.sample_stats["tree_depth"], fit.sample_stats["tree_depth"])


def test_user_models_must_be_passed_again(tmp_path):
    fit = pg.fit(normal_normal, torch.randn(10), method="svi", seed=0, progress=False, num_steps=50)
    fit.save(tmp_path / "f.npz")
    with pytest.raises(ValueError, match="user-written model.*probgen.load\\(path, model=my_model\\)"):
        pg.load(tmp_path / "f.npz")


def test_a_file_with_pickled_objects_is_refused(tmp_path):
    path = tmp_path / "evil.npz"
    np.savez(path, __meta__=np.array([{"format": "probgen-fit/1"}], dtype=object))
    with pytest.raises(ValueError, match="pickled data, which probgen never loads"):
        pg.load(path)
