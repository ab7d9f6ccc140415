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


def test_constructing_a_vae_leaves_the_global_random_state_alone():
    from probgen.models import VAE, ConditionalVAE

    before = torch.random.get_rng_state()
    VAE(input_dim=6, latent_dim=2)
    ConditionalVAE(input_dim=6, latent_dim=2, n_classes=3)
    assert torch.equal(before, torch.random.get_rng_state())


def test_a_covariance_that_becomes_singular_is_a_clear_error():
    from probgen.models import HiddenMarkovModel

    rng = np.random.default_rng(0)
    repeated = np.repeat(rng.normal(size=(5, 2)), 10, 0)
    with pytest.raises(ValueError, match="(became singular during EM|not positive definite).*reg_covar"):
        pg.fit(
            GaussianMixture(2, covariance_type="full", reg_covar=0.0), repeated, method="em", progress=False
        )
    with pytest.raises(ValueError, match="(became singular during EM|not positive definite).*min_covar"):
        pg.fit(
            HiddenMarkovModel(2, emission="gaussian", covariance_type="full"),
            np.ones((50, 2)),
            method="em",
            progress=False,
        )


@pytest.mark.parametrize("code", [2**62, 1e150, 10**6])
def test_huge_category_codes_are_not_read_as_category_counts(code):
    from probgen.models import CategoricalMixture, HiddenMarkovModel

    with pytest.raises(ValueError, match="Recode the values to 0..C-1"):
        pg.fit(
            CategoricalMixture(2),
            np.array([[0, 1], [1, 2], [2, code]], dtype=float),
            method="em",
            progress=False,
        )
    with pytest.raises(ValueError, match="pass n_symbols explicitly"):
        pg.fit(
            HiddenMarkovModel(2, emission="categorical"),
            np.array([0, 1, code, 1], dtype=float),
            method="em",
            progress=False,
        )
    # given explicitly, a large number of categories is the user's choice
    fit = pg.fit(
        CategoricalMixture(1, n_categories=12_000), np.array([[0], [11_999]]), method="em", progress=False
    )
    assert fit.params["probs"].shape[-1] == 12_000


def _bernoulli_by_hand(params, x):
    x = torch.as_tensor(x, dtype=torch.float64)[:, None, :]
    p, w = params["probs"].double(), params["weights"].double()
    return torch.logsumexp((torch.xlogy(x, p) + torch.xlogy(1 - x, 1 - p)).sum(-1) + torch.log(w), -1)


def test_unregularised_discrete_mixtures_with_absent_values_score_finitely():
    from probgen.models import BernoulliMixture, CategoricalMixture, HiddenMarkovModel

    x = np.array([[0, 1], [0, 1], [1, 1], [0, 1]])
    fit = pg.fit(BernoulliMixture(2, reg=0.0), x, method="em", seed=0, progress=False)
    torch.testing.assert_close(fit.log_prob(x).double(), _bernoulli_by_hand(fit.params, x))
    counts = np.array([[0, 1], [0, 3], [0, 1], [0, 2]])
    pois = pg.fit(PoissonMixture(2, reg=0.0), counts, method="em", seed=0, progress=False)
    assert bool(torch.isfinite(pois.log_prob(counts)).all())
    cat = pg.fit(CategoricalMixture(2, reg=0.0, n_categories=3), x, method="em", seed=0, progress=False)
    assert bool(torch.isfinite(cat.log_prob(x)).all())
    zeros = pg.fit(HiddenMarkovModel(2, emission="poisson"), np.zeros(30), method="em", progress=False)
    torch.testing.assert_close(zeros.log_prob(np.zeros(30)).double(), torch.zeros(1, dtype=torch.float64))


@pytest.mark.parametrize("method", ["em", "svi"])
def test_an_hmm_with_more_states_than_time_steps_is_refused(method):
    from probgen.models import HiddenMarkovModel

    steps = np.random.default_rng(0).normal(size=3)
    with pytest.raises(
        ValueError, match=r"n_states=5 is larger than the number of observed time steps in data \(3\)"
    ):
        pg.fit(HiddenMarkovModel(5), steps, method=method, progress=False)


def test_two_dimensional_data_into_a_one_dimensional_user_model_names_the_site_and_shapes():
    import pyro
    import pyro.distributions as dist

    def model(x=None):
        mu = pyro.sample("mu", dist.Normal(0.0, 1.0))
        with pyro.plate("data", 10):
            pyro.sample("x", dist.Normal(mu, 1.0), obs=x)

    data = np.random.default_rng(0).normal(size=(10, 2))
    with pytest.raises(
        ValueError,
        match=r"observed site 'x' generates values of shape \(10,\) here, but the data give it shape \(10, 2\)",
    ) as err:
        pg.fit(pg.model(model), data, method="svi", progress=False)
    assert (
        err.traceback[-1].path.name == "roles.py"
    )  # raised by probgen before any step, not by Pyro's log_prob


def test_a_covariance_that_overflows_at_svis_start_is_a_clear_error():
    huge = np.random.default_rng(0).normal(size=(2, 2)) * 1e150
    with pytest.raises(ValueError, match="not positive definite \\(or not finite\\).*rescale the data"):
        pg.fit(GaussianMixture(2), huge, method="svi", num_steps=5, progress=False)


@pytest.mark.parametrize("n", [1, 2])
def test_items_with_an_extra_dim_in_a_plate_are_refused_whatever_they_broadcast_to(n):
    import pyro
    import pyro.distributions as dist

    def model(x=None):
        loc = pyro.sample("loc", dist.Normal(0.0, 1.0))
        with pyro.plate("data", 5 if x is None else len(x)):
            pyro.sample("x", dist.Normal(loc, 1.0), obs=x)

    # (2, 2) broadcasts against the plate's (2,) and would make the plate index the features
    data = np.random.default_rng(0).normal(size=(n, 2))
    with pytest.raises(
        ValueError, match=rf"generates values of shape \({n},\) here, but the data give it shape \({n}, 2\)"
    ):
        pg.fit(pg.model(model), data, method="svi", num_steps=5, progress=False)
