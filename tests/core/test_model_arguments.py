"""Models of several arguments (covariates, group indices, a response): every form binds, every
tool takes the same form, and the answers are the conjugate and closed-form ones."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyro
import pyro.distributions as dist
import pytest
import torch
from sklearn.datasets import load_diabetes
from sklearn.linear_model import LogisticRegression

import probgen as pg

SIGMA, TAU = 0.7, 1.0
_X, _Y = load_diabetes(return_X_y=True)
X = (_X - _X.mean(0)) / _X.std(0)
Y = (_Y - _Y.mean()) / _Y.std()


@pg.model
def regression(x, y=None):
    """Pyro's regression-tutorial shape: inputs first, the response last and optional."""
    w = pyro.sample("w", dist.Normal(torch.zeros(x.shape[1], dtype=x.dtype), TAU).to_event(1))
    with pyro.plate("data", x.shape[0]):
        return pyro.sample("y", dist.Normal(x @ w, SIGMA), obs=y)


def _conjugate(x, y):
    """Exact posterior of the weights: N(mu, cov) with cov = (X'X / s^2 + I / t^2)^-1."""
    xt, yt = torch.as_tensor(x, dtype=torch.float64), torch.as_tensor(y, dtype=torch.float64)
    cov = torch.linalg.inv(xt.T @ xt / SIGMA**2 + torch.eye(xt.shape[1], dtype=torch.float64) / TAU**2)
    return cov @ xt.T @ yt / SIGMA**2, cov


@pytest.fixture(scope="module")
def mcmc_fit():
    return pg.fit(regression, {"x": X, "y": Y}, method="mcmc", seed=0, progress=False, num_samples=400)


def test_a_mapping_binds_by_name_and_the_posterior_is_the_conjugate_one(mcmc_fit):
    mu, cov = _conjugate(X, Y)
    sd = cov.diag().sqrt()
    err = (mcmc_fit.params["w"].double() - mu).abs() / sd
    assert err.max() < 0.25  # Monte Carlo error of 800 draws is about sd / 20; the prior mean 0 fails
    post_sd = mcmc_fit.posterior["w"].double().reshape(-1, X.shape[1]).std(0)
    np.testing.assert_allclose(post_sd.numpy(), sd.numpy(), rtol=0.2)


def test_new_pairs_are_scored_by_the_posterior_predictive_density(mcmc_fit):
    mu, cov = _conjugate(X, Y)
    x_new, y_new = X[:6], Y[:6] + 0.3
    xt = torch.as_tensor(x_new, dtype=torch.float64)
    exact = torch.distributions.Normal(xt @ mu, (SIGMA**2 + ((xt @ cov) * xt).sum(1)).sqrt())
    got = mcmc_fit.log_prob({"x": x_new, "y": y_new})
    np.testing.assert_allclose(
        got.double().numpy(), exact.log_prob(torch.as_tensor(y_new)).numpy(), atol=0.03
    )


def test_responses_are_drawn_at_new_inputs(mcmc_fit):
    mu, cov = _conjugate(X, Y)
    x_new = X[-4:]
    draws = mcmc_fit.posterior_predictive(data={"x": x_new})["y"]
    assert draws.shape == (4, 400, 4)
    xt = torch.as_tensor(x_new, dtype=torch.float64)
    flat = draws.double().reshape(-1, 4)
    np.testing.assert_allclose(flat.mean(0).numpy(), (xt @ mu).numpy(), atol=0.08)
    exact_sd = (SIGMA**2 + ((xt @ cov) * xt).sum(1)).sqrt()
    np.testing.assert_allclose(flat.std(0).numpy(), exact_sd.numpy(), rtol=0.1)
    # fit.sample at the same inputs: n responses, each from a random posterior draw
    sampled = mcmc_fit.sample(3000, data={"x": x_new}, seed=1).double()
    assert sampled.shape == (3000, 4)
    np.testing.assert_allclose(sampled.mean(0).numpy(), (xt @ mu).numpy(), atol=0.08)
    np.testing.assert_allclose(sampled.std(0).numpy(), exact_sd.numpy(), rtol=0.1)
    with pytest.raises(ValueError, match=r"fit.sample\(n, data="):
        mcmc_fit.sample(3)


def test_arviz_gets_the_covariates_in_constant_data_and_the_response_observed(mcmc_fit):
    idata = mcmc_fit.to_arviz()
    np.testing.assert_allclose(idata.constant_data["x"].values, X, rtol=1e-6)
    np.testing.assert_allclose(idata.observed_data["y"].values, Y, rtol=1e-6)
    assert idata.log_likelihood["y"].shape == (4, 400, len(Y))


def test_a_tuple_binds_positionally_and_a_dataframe_by_its_columns():
    em_dict = pg.fit(regression, {"x": X, "y": Y}, method="em", seed=0, progress=False)
    em_tuple = pg.fit(regression, (X, Y), method="em", seed=0, progress=False)
    torch.testing.assert_close(em_dict.params["w"], em_tuple.params["w"])
    lstsq = np.linalg.lstsq(X, Y, rcond=None)[0]  # EM's M-step is maximum likelihood
    np.testing.assert_allclose(em_tuple.params["w"].numpy(), lstsq, atol=1e-4)

    @pg.model
    def line(x, y=None):
        a = pyro.sample("a", dist.Normal(0.0, 10.0))
        b = pyro.sample("b", dist.Normal(0.0, 10.0))
        with pyro.plate("rows", len(x)):
            pyro.sample("y", dist.Normal(a + b * x, 1.0), obs=y)

    frame = pd.DataFrame({"x": X[:, 2], "y": Y})
    fit = pg.fit(line, frame, method="em", seed=0, progress=False)
    slope, intercept = np.polyfit(X[:, 2], Y, 1)
    np.testing.assert_allclose(
        [fit.params["b"].item(), fit.params["a"].item()], [slope, intercept], atol=1e-4
    )


def test_logistic_regression_on_integer_labels_matches_scikit_learn():
    @pg.model
    def logistic(x, y=None):
        w = pyro.sample("w", dist.Normal(torch.zeros(x.shape[1], dtype=x.dtype), 100.0).to_event(1))
        b = pyro.sample("b", dist.Normal(torch.zeros((), dtype=x.dtype), 100.0))
        with pyro.plate("data", x.shape[0]):
            pyro.sample("y", dist.Bernoulli(logits=x @ w + b), obs=y)

    x = X[:, :3]
    labels = (Y > 0).astype(np.int64)  # integer labels: converted to what the Bernoulli site takes
    fit = pg.fit(logistic, {"x": x, "y": labels}, method="em", seed=0, progress=False)
    sk = LogisticRegression(C=np.inf, tol=1e-10, max_iter=10_000).fit(x, labels)
    np.testing.assert_allclose(fit.params["w"].numpy(), sk.coef_[0], atol=2e-3)
    np.testing.assert_allclose(fit.params["b"].item(), sk.intercept_[0], atol=2e-3)
    # held-out scores are the Bernoulli log-likelihood at the estimates
    p = sk.predict_proba(x[:5])[np.arange(5), labels[:5]]
    np.testing.assert_allclose(fit.log_prob({"x": x[:5], "y": labels[:5]}).numpy(), np.log(p), atol=2e-3)


def test_group_indices_stay_integers_and_index_the_group_effects():
    rng = np.random.default_rng(0)
    groups = rng.integers(0, 4, 200)
    effects = np.array([-2.0, -0.5, 0.5, 2.0])
    y = effects[groups] + rng.normal(0, 1.0, 200)

    @pg.model
    def hierarchical(group, n_groups, y=None):
        scale = pyro.sample("scale", dist.HalfNormal(5.0))
        with pyro.plate("groups", n_groups):
            effect = pyro.sample("effect", dist.Normal(0.0, scale))
        with pyro.plate("data", len(group)):
            pyro.sample("y", dist.Normal(effect[group], 1.0), obs=y)

    fit = pg.fit(
        hierarchical,
        {"group": groups, "n_groups": 4, "y": y},
        method="mcmc",
        seed=0,
        progress=False,
        num_samples=300,
    )
    assert fit.data.values["group"].dtype == torch.long and fit.data.values["n_groups"] == 4
    means = np.array([y[groups == g].mean() for g in range(4)])
    np.testing.assert_allclose(fit.params["effect"].numpy(), means, atol=0.15)  # a weak pooling prior


def test_save_and_load_keep_the_arguments(mcmc_fit, tmp_path):
    mcmc_fit.save(tmp_path / "reg.npz")
    back = pg.load(tmp_path / "reg.npz", model=regression)
    torch.testing.assert_close(back.log_prob(), mcmc_fit.log_prob())
    torch.testing.assert_close(
        back.log_prob({"x": X[:3], "y": Y[:3]}), mcmc_fit.log_prob({"x": X[:3], "y": Y[:3]})
    )


def test_bad_arguments_are_refused_naming_them():
    with pytest.raises(TypeError, match=r"does not take; its parameters are: x, y"):
        pg.fit(regression, {"x": X, "z": Y}, method="em", progress=False)
    bad = X.copy()
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match=r"data\['x'\] has 1 NaN"):
        pg.fit(regression, {"x": bad, "y": Y}, method="em", progress=False)
    with pytest.raises(TypeError, match=r"as one mapping"):
        pg.fit(regression, X, Y)  # the response given where the method goes
    fit = pg.fit(regression, (X, Y), method="em", seed=0, progress=False)
    with pytest.raises(ValueError, match=r"data\['x'\] has items of shape \(3,\)"):
        fit.log_prob({"x": X[:5, :3], "y": Y[:5]})


@pytest.mark.slow  # a streamed SVI fit to convergence
def test_arguments_stream_from_a_data_loader_of_tensor_pairs():
    """A DataLoader over TensorDataset(X, y) yields [x_batch, y_batch]: bound positionally, the
    data plate scaled by num_items / batch, so the posterior is the full-data conjugate one."""
    from torch.utils.data import DataLoader, TensorDataset

    x = torch.as_tensor(X, dtype=torch.float32)
    y = torch.as_tensor(Y, dtype=torch.float32)
    loader = DataLoader(
        TensorDataset(x, y), batch_size=64, shuffle=True, generator=torch.Generator().manual_seed(0)
    )
    fit = pg.fit(regression, loader, method="svi", num_items=len(x), seed=0, progress=False, guide="mvn")
    mu, cov = _conjugate(X, Y)
    sd = cov.diag().sqrt()
    assert float(((fit.params["w"].double() - mu).abs() / sd).max()) < 1.0
    scores = fit.log_prob({"x": X[:5], "y": Y[:5]})  # new pairs scored in the same form
    assert scores.shape == (5,) and bool(torch.isfinite(scores).all())
