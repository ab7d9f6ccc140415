"""GAN family: learns two moons, refuses likelihoods, the generator by hand, persistence, state."""

from __future__ import annotations

import random

import numpy as np
import pandas as pd
import pyro
import pyro.poutine as poutine
import pytest
import torch
from sklearn.datasets import make_moons
from sklearn.neighbors import KNeighborsClassifier

import probgen as pg
from probgen.capabilities import likelihood_problem
from probgen.metrics import mmd
from probgen.models import GAN
from probgen.testing import check_model

NO_LIKELIHOOD = "GAN has no likelihood.*probgen.mmd.*VAE, RBM"


@pytest.fixture(scope="module")
def moons() -> dict[str, np.ndarray]:
    x, y = make_moons(2000, noise=0.05, random_state=0)
    mean, sd = x[:1000].mean(0), x[:1000].std(0)
    z = (x - mean) / sd
    return {"train": z[:1000], "labels": y[:1000], "test": z[1000:]}


def _small() -> torch.Tensor:
    return torch.randn(64, 2, generator=torch.Generator().manual_seed(0))


def _fit(data, model=None, seed=0, **options):
    options.setdefault("num_steps", 30)
    return pg.fit(
        model or GAN(2, 2, hidden_dims=(8,)), data, method="adversarial", seed=seed, progress=False, **options
    )


# ------------------------------------------------------------------------ what it learns
def test_gan_learns_two_moons_far_better_than_a_gaussian(moons):
    fit = pg.fit(GAN(2, 2), moons["train"], method="adversarial", seed=0, progress=False, num_steps=2000)
    assert fit.converged
    fake = fit.sample(1000, seed=1).numpy()
    rng = np.random.default_rng(0)
    train = moons["train"]
    gauss = rng.multivariate_normal(train.mean(0), np.cov(train.T), 1000)  # the best single Gaussian
    h = 0.5  # one kernel for both, in standardised units: the moons' width and gap
    gan_mmd, gauss_mmd = mmd(fake, moons["test"], bandwidth=h), mmd(gauss, moons["test"], bandwidth=h)
    assert gan_mmd <= 0.5 * gauss_mmd, (gan_mmd, gauss_mmd)
    # both moons covered (no mode collapse): a classifier of the labelled moons splits the samples
    knn = KNeighborsClassifier(n_neighbors=15).fit(train, moons["labels"])
    share = np.bincount(knn.predict(fake), minlength=2) / len(fake)
    assert share.min() >= 0.3, share


# ------------------------------------------------------------------------ no likelihood
def test_log_prob_bic_aic_log_likelihood_are_refused_with_what_to_use_instead():
    fit = _fit(_small())
    for call in (fit.log_prob, fit.score, fit.bic, fit.aic, fit.log_likelihood):
        with pytest.raises(TypeError, match=NO_LIKELIHOOD):
            call()
    with pytest.raises(TypeError, match=NO_LIKELIHOOD):
        fit.log_prob(_small()[:5])


@pytest.mark.parametrize("method", ["svi", "em", "mcmc", "enum"])
def test_likelihood_backends_refuse_the_gan(method):
    with pytest.raises(pg.ModelNotSupportedError, match=r"no likelihood.*Methods that can: adversarial"):
        pg.fit(GAN(2, 2), _small(), method=method, seed=0, progress=False)


def test_arviz_conversion_has_no_log_likelihood_group():
    idata = _fit(_small()).to_arviz()
    assert "log_likelihood" not in idata.groups()
    assert "generator$$$0.weight" in idata.posterior


# ------------------------------------------------------------------------ the Pyro model
def test_the_pyro_model_is_noise_through_the_generator():
    gan = GAN(2, 3, hidden_dims=(8,))
    roles = gan.roles(_small())
    assert roles.local_sites == ("z",) and roles.global_sites == () and roles.data_plate == "data"
    assert likelihood_problem(gan) is not None
    with pyro.get_param_store().scope():
        trace = poutine.trace(gan.model).get_trace(None)
    z, x = trace.nodes["z"]["value"], trace.nodes["x"]["value"]
    assert z.shape == (1, 3) and x.shape == (1, 2)
    torch.testing.assert_close(x, gan.generator(z))


def test_samples_are_the_generator_evaluated_by_hand_on_the_fitted_weights():
    fit = _fit(_small(), model=GAN(2, 3, hidden_dims=(8, 5)))
    x, latents = fit.sample(50, seed=3, return_latents=True)
    p, z = fit.params, latents["z"]
    h1 = torch.relu(z @ p["generator$$$0.weight"].T + p["generator$$$0.bias"])
    h2 = torch.relu(h1 @ p["generator$$$2.weight"].T + p["generator$$$2.bias"])
    by_hand = h2 @ p["generator$$$4.weight"].T + p["generator$$$4.bias"]
    assert x.dtype == torch.float32 and x.shape == (50, 2) and z.shape == (50, 3)
    torch.testing.assert_close(x, by_hand)
    # the fit's weights are used, not whatever the model object holds
    fit.model._build()
    torch.testing.assert_close(fit.sample(50, seed=3), x)
    # the discriminator helper: LeakyReLU(0.2) MLP to one logit
    d1 = torch.nn.functional.leaky_relu(
        x @ p["discriminator$$$0.weight"].T + p["discriminator$$$0.bias"], 0.2
    )
    d2 = torch.nn.functional.leaky_relu(
        d1 @ p["discriminator$$$2.weight"].T + p["discriminator$$$2.bias"], 0.2
    )
    logit = (d2 @ p["discriminator$$$4.weight"].T + p["discriminator$$$4.bias"])[:, 0]
    torch.testing.assert_close(fit.discriminate(x), logit)


# ------------------------------------------------------------------------ input
@pytest.mark.parametrize(
    "data, error, match",
    [
        (np.zeros((5, 3)), ValueError, r"shape \(n_items, 2\) \(data_dim=2\); got \(5, 3\)"),
        (np.zeros(5), ValueError, r"got \(5,\)"),
        (np.array([[0.0, np.nan]] * 4), ValueError, "has 4 NaN"),
        (np.array([[0.0, np.inf]] * 4), ValueError, "0 NaN and 4 infinite"),
        (np.zeros((0, 2)), ValueError, "empty"),
        ([["a", "b"]], TypeError, "numeric"),
        (None, ValueError, "data is None"),
    ],
)
def test_bad_data_is_refused_before_any_work(data, error, match):
    with pytest.raises(error, match=match):
        pg.fit(GAN(2, 2), data, method="adversarial", progress=False)


def test_data_arrive_in_any_form_as_float32():
    x = np.arange(12, dtype=np.int64).reshape(6, 2)
    want = torch.arange(12, dtype=torch.float32).reshape(6, 2)
    for form in (
        x,
        x.astype(np.float16),
        x.tolist(),
        pd.DataFrame(x),
        torch.as_tensor(x, dtype=torch.float64),
    ):
        got = GAN(2, 2).prepare_data(form)
        assert got.dtype == torch.float32
        torch.testing.assert_close(got, want)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"data_dim": 0, "latent_dim": 2}, "data_dim must be a positive int; got 0"),
        ({"data_dim": 2, "latent_dim": 1.5}, "latent_dim must be a positive int; got 1.5"),
        ({"data_dim": 2, "latent_dim": 2, "hidden_dims": 16}, "hidden_dims must be a sequence"),
        ({"data_dim": 2, "latent_dim": 2, "hidden_dims": (16, 0)}, "hidden_dims must be a positive int"),
    ],
)
def test_bad_constructor_arguments_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        GAN(**kwargs)


# ------------------------------------------------------------------------ reproducibility
def test_save_and_load_round_trip_params_and_samples(tmp_path):
    fit = _fit(_small(), model=GAN(2, 3, hidden_dims=(8, 4)))
    fit.save(tmp_path / "gan")
    back = pg.load(tmp_path / "gan")
    assert isinstance(back.model, GAN) and back.model.get_config() == fit.model.get_config()
    assert back.method == "adversarial" and set(back.params) == set(fit.params)
    for k, v in fit.params.items():
        assert torch.equal(back.params[k], v), k
    assert torch.equal(back.sample(20, seed=5), fit.sample(20, seed=5))
    assert torch.equal(back.discriminate(_small()), fit.discriminate(_small()))
    np.testing.assert_array_equal(back.history, fit.history)
    with open(tmp_path / "gan.npz", "rb") as fh, np.load(fh, allow_pickle=False) as npz:
        assert "params/generator$$$0.weight" in npz.files  # plain arrays, readable with no pickle


def test_same_seed_same_params_other_seed_other_params():
    data = _small()
    a, b, c = _fit(data, seed=4), _fit(data, seed=4), _fit(data, seed=5)
    assert a.params.keys() == b.params.keys()
    assert all(torch.equal(a.params[k], b.params[k]) for k in a.params)
    np.testing.assert_array_equal(a.history, b.history)
    assert not torch.equal(a.params["generator$$$0.weight"], c.params["generator$$$0.weight"])


def test_a_fit_leaves_global_state_as_it_found_it():
    pyro.param("user_param", torch.tensor(1.5))
    torch.manual_seed(123)
    np.random.seed(7)  # noqa: NPY002
    random.seed(9)
    torch_state, np_state, py_state = torch.random.get_rng_state(), np.random.get_state(), random.getstate()  # noqa: NPY002
    threads = torch.get_num_threads()
    fit = _fit(_small(), subsample_size=16)
    fit.sample(10, seed=1)  # a seeded draw leaves the global generator alone
    assert torch.equal(torch.random.get_rng_state(), torch_state)
    assert np.array_equal(np.random.get_state()[1], np_state[1])  # noqa: NPY002
    assert random.getstate() == py_state
    assert torch.get_num_threads() == threads
    assert list(pyro.get_param_store().keys()) == ["user_param"]
    assert float(pyro.param("user_param").detach()) == 1.5


def test_the_gan_passes_the_contract_of_a_model_with_no_likelihood():
    x = torch.randn(64, 2, generator=torch.Generator().manual_seed(0))
    report = check_model(GAN(2, 2, hidden_dims=(8,)), x, methods=["adversarial"])["adversarial"]
    for check in (
        "global state kept",
        "same seed, same fit",
        "log_prob refused (no likelihood)",
        "save/load",
    ):
        assert report[check] == "ok", check
    assert report["sample shape"] == "ok" and report["bad input refused"] == "ok"
