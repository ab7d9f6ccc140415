"""Missing cells in a user's Pyro model (``missing="marginalize"``): masked observations.

Every answer is checked against one computed here by hand: the exact marginal of the observed
cells (mixtures, a hidden Markov chain by the forward algorithm), the conjugate posterior of a
normal mean from the observed cells alone, and the conditional means of the missing cells.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyro
import pyro.distributions as dist
import pytest
import torch
from scipy.special import logsumexp
from scipy.stats import norm

import probgen as pg

# every test in float64 (the shared fixture of tests/conftest.py)
pytestmark = pytest.mark.usefixtures("float64")


# ------------------------------------------------------------------ a mixture, EM's generic path
def _mixture(data=None):
    w = pyro.param("w", torch.ones(2) / 2, constraint=dist.constraints.simplex)
    loc = pyro.param("loc", torch.tensor([[1.0, 1.0], [-1.0, 0.0]]))
    with pyro.plate("items", 300 if data is None else len(data)):
        k = pyro.sample("k", dist.Categorical(w))
        pyro.sample("x", dist.Normal(loc[k], 1.0).to_event(1), obs=data)


def _blobs(seed=1, n=300):
    rng = np.random.default_rng(seed)
    z = rng.random(n) < 0.4
    x = np.where(z[:, None], rng.normal([3, 3], 1, size=(n, 2)), rng.normal([-2, 0], 1, size=(n, 2)))
    gaps = rng.random(x.shape) < 0.2
    gappy = x.copy()
    gappy[gaps] = np.nan
    return x, gappy, gaps


def _mixture_by_hand(gappy, w, loc):
    """Per item: log p(observed cells) and the conditional means of every cell."""
    lls, means = [], []
    for row in gappy:
        seen = ~np.isnan(row)
        logw = np.log(w) + np.array([norm.logpdf(row[seen], loc[k, seen], 1).sum() for k in range(2)])
        lls.append(logsumexp(logw))
        means.append(np.exp(logw - logsumexp(logw)) @ loc)
    return np.array(lls), np.array(means)


def test_a_mixture_with_missing_cells_scores_and_imputes_the_exact_marginal():
    x, gappy, gaps = _blobs()
    fit = pg.fit(pg.model(_mixture), gappy, method="em", missing="marginalize", progress=False)
    w, loc = fit.params["w"].numpy(), fit.params["loc"].numpy()
    assert np.allclose(np.sort(loc[:, 0]), [-2, 3], atol=0.3)
    lls, means = _mixture_by_hand(gappy, w, loc)
    np.testing.assert_allclose(fit.log_prob(gappy), lls, rtol=1e-10, atol=1e-10)
    filled = fit.impute(gappy)
    np.testing.assert_allclose(filled, np.where(gaps, means, x), rtol=1e-10, atol=1e-10)
    # EM's fixed point: the weights are the mean posterior responsibilities of the observed cells
    resp = np.asarray(fit.predict_proba(gappy))
    np.testing.assert_allclose(resp.mean(0), w, atol=1e-4)


def test_drawn_cells_follow_the_conditional_distribution():
    x, gappy, gaps = _blobs(n=60)
    fit = pg.fit(pg.model(_mixture), gappy, method="em", missing="marginalize", progress=False)
    copies = fit.impute(gappy, method="sample", num_samples=400, seed=0)
    stacked = np.stack(copies)
    assert np.array_equal(stacked[:, ~gaps], np.broadcast_to(x[~gaps], (400, int((~gaps).sum()))))
    exact = np.asarray(fit.impute(gappy))
    # each missing cell: a two-component mixture of unit normals, sd at most ~2.6
    err = np.abs(stacked.mean(0) - exact)[gaps]
    assert err.max() < 4 * 2.6 / np.sqrt(400)


# ------------------------------------------------------------------ a chain without a plate
T = 120


def _chain(data=None):
    trans = pyro.param("trans", torch.tensor([[0.8, 0.2], [0.2, 0.8]]), constraint=dist.constraints.simplex)
    locs = pyro.param("locs", torch.tensor([-0.5, 0.5]))
    z = 0
    for t in pyro.markov(range(T if data is None else len(data))):
        z = pyro.sample(f"z_{t}", dist.Categorical(trans[z]))
        pyro.sample(f"y_{t}", dist.Normal(locs[z], 0.7), obs=None if data is None else data[t])


def _series(seed=2):
    rng = np.random.default_rng(seed)
    a = np.array([[0.9, 0.1], [0.2, 0.8]])
    z = [0]
    for _ in range(T - 1):
        z.append(rng.choice(2, p=a[z[-1]]))
    y = np.array([-1.0, 2.0])[np.array(z)] + rng.normal(size=T) * 0.7
    gaps = rng.random(T) < 0.15
    gappy = y.copy()
    gappy[gaps] = np.nan
    return y, gappy, gaps


def _forward_backward(gappy, trans, locs):
    """log p(observed steps) and the smoothed state probabilities, a missing step emitting 1."""
    em = np.array([[1.0 if np.isnan(v) else norm.pdf(v, locs[k], 0.7) for k in range(2)] for v in gappy])
    alpha, logz = np.zeros((T, 2)), 0.0
    prev = trans[0]
    for t in range(T):
        a = (prev if t == 0 else alpha[t - 1] @ trans) * em[t]
        logz += np.log(a.sum())
        alpha[t] = a / a.sum()
    beta = np.ones((T, 2))
    for t in range(T - 2, -1, -1):
        b = trans @ (em[t + 1] * beta[t + 1])
        beta[t] = b / b.sum()
    post = alpha * beta
    return logz, post / post.sum(1, keepdims=True)


def test_a_series_observed_step_by_step_skips_its_missing_steps():
    y, gappy, gaps = _series()
    fit = pg.fit(pg.model(_chain), gappy, method="em", missing="marginalize", progress=False)
    trans, locs = fit.params["trans"].numpy(), fit.params["locs"].numpy()
    assert np.allclose(locs, [-1, 2], atol=0.25)
    logz, post = _forward_backward(gappy, trans, locs)
    assert float(np.asarray(fit.log_prob(gappy)).sum()) == pytest.approx(logz, rel=1e-10)
    np.testing.assert_allclose(fit.impute(gappy), np.where(gaps, post @ locs, y), rtol=1e-10, atol=1e-10)


# ------------------------------------------------------------------ posteriors of the observed cells
def _normal_mean(data=None):
    mu = pyro.sample("mu", dist.Normal(0.0, 10.0))
    with pyro.plate("items", 40 if data is None else len(data)):
        pyro.sample("x", dist.Normal(mu, 2.0), obs=data)


def _conjugate(observed):
    prec = 1 / 100 + len(observed) / 4
    return (observed.sum() / 4) / prec, prec**-0.5


def test_mcmc_on_masked_cells_finds_the_posterior_of_the_observed_cells():
    rng = np.random.default_rng(3)
    x = rng.normal(1.5, 2.0, size=40)
    x[rng.random(40) < 0.3] = np.nan
    mean, sd = _conjugate(x[~np.isnan(x)])
    fit = pg.fit(
        pg.model(_normal_mean),
        x,
        method="mcmc",
        missing="marginalize",
        num_samples=500,
        warmup_steps=300,
        progress=False,
    )
    draws = fit.posterior["mu"]
    summary = pg.summary(fit)
    assert float(summary["r_hat"].max()) < 1.02
    mcse = float(draws.std()) / np.sqrt(float(summary["ess_bulk"].min()))
    assert float(draws.mean()) == pytest.approx(mean, abs=4 * mcse)
    assert float(draws.std()) == pytest.approx(sd, rel=0.15)
    # the missing cells' predictive mean is the posterior mean of mu
    filled = fit.impute(x)
    np.testing.assert_allclose(filled[np.isnan(x)], float(draws.mean()), atol=4 * mcse + 1e-9)
    # LOO's data points are the observed items: the log-likelihood group leaves out the others
    idata = fit.to_arviz()
    ll = np.asarray(idata.log_likelihood["x"])
    assert ll.shape[-1] == int((~np.isnan(x)).sum())
    by_hand = norm.logpdf(x[~np.isnan(x)], np.asarray(draws)[..., None], 2.0)
    np.testing.assert_allclose(ll.reshape(-1, ll.shape[-1]), by_hand.reshape(-1, ll.shape[-1]), rtol=1e-10)
    assert np.isfinite(pg.loo(fit)["max_pareto_k"])


def test_a_saved_fit_of_gappy_arguments_loads_and_imputes_alike(tmp_path):
    rng = np.random.default_rng(7)
    x = rng.normal(size=60)
    y = np.where(rng.random(60) < 0.2, np.nan, 1.0 + 2.0 * x + rng.normal(size=60) * 0.5)
    fit = pg.fit(
        pg.model(_regression),
        {"x": x, "y": y},
        method="svi",
        missing="marginalize",
        num_steps=300,
        progress=False,
    )
    fit.save(tmp_path / "fit")
    back = pg.load(tmp_path / "fit", model=pg.model(_regression))
    filled = back.impute()
    assert set(filled) == {"x", "y"}
    np.testing.assert_array_equal(np.asarray(filled["y"])[~np.isnan(y)], y[~np.isnan(y)])
    np.testing.assert_allclose(
        np.asarray(back.impute({"x": x, "y": y})["y"]),
        np.asarray(fit.impute({"x": x, "y": y})["y"]),
        rtol=1e-12,
    )


def _regression(x, y=None):
    a = pyro.sample("a", dist.Normal(0.0, 10.0))
    b = pyro.sample("b", dist.Normal(0.0, 10.0))
    with pyro.plate("rows", len(x)):
        pyro.sample("y", dist.Normal(a + b * x, 0.5), obs=y)


def test_svi_on_a_response_with_missing_values_matches_the_complete_case_posterior():
    rng = np.random.default_rng(4)
    x = rng.normal(size=150)
    y = 1.0 + 2.0 * x + rng.normal(size=150) * 0.5
    gaps = rng.random(150) < 0.25
    gappy = np.where(gaps, np.nan, y)
    frame = pd.DataFrame({"x": x, "y": gappy})
    fit = pg.fit(
        pg.model(_regression),
        frame,
        method="svi",
        guide="mvn",
        missing="marginalize",
        num_steps=3000,
        lr=0.02,
        progress=False,
    )
    # conjugate posterior of (a, b) from the complete rows: Gaussian prior N(0, 100 I), noise 0.5
    design = np.c_[np.ones((~gaps).sum()), x[~gaps]]
    prec = np.eye(2) / 100 + design.T @ design / 0.25
    mean = np.linalg.solve(prec, design.T @ y[~gaps] / 0.25)
    got = np.array([float(fit.params["a"]), float(fit.params["b"])])
    np.testing.assert_allclose(got, mean, atol=4 * np.sqrt(np.diag(np.linalg.inv(prec))).max())
    filled = fit.impute(frame)
    assert isinstance(filled, pd.DataFrame) and list(filled.columns) == ["x", "y"]
    np.testing.assert_array_equal(filled["x"], x)
    np.testing.assert_array_equal(filled["y"][~gaps], y[~gaps])
    pred = float(fit.params["a"]) + float(fit.params["b"]) * x[gaps]
    np.testing.assert_allclose(filled["y"][gaps], pred, atol=0.05)


# ------------------------------------------------------------------ refusals
def _mvn(data=None):
    mu = pyro.sample("mu", dist.Normal(torch.zeros(3), 10.0).to_event(1))
    with pyro.plate("n", 50 if data is None else len(data)):
        pyro.sample("x", dist.MultivariateNormal(mu, torch.eye(3)), obs=data)


def test_what_masking_cannot_serve_is_refused_before_work():
    rng = np.random.default_rng(5)
    x = rng.normal(size=(50, 3))
    partial = x.copy()
    partial[0, 1] = np.nan
    with pytest.raises(ValueError, match="couples the cells of an item"):
        pg.fit(pg.model(_mvn), partial, method="svi", missing="marginalize", progress=False)
    with pytest.raises(ValueError, match="missing='marginalize'"):
        pg.fit(pg.model(_mvn), partial, method="svi", progress=False)
    covariate = {"x": np.where(np.arange(20) == 3, np.nan, np.arange(20.0)), "y": np.arange(20.0)}
    with pytest.raises(ValueError, match=r"data\['x'\] has 1 NaN values, but no observed site reads it"):
        pg.fit(pg.model(_regression), covariate, method="svi", missing="marginalize", progress=False)
    inf = x[:, 0].copy()
    inf[2] = np.inf
    with pytest.raises(ValueError, match="infinite"):
        pg.fit(pg.model(_normal_mean), inf, method="svi", missing="marginalize", progress=False)


def test_wholly_missing_items_of_a_coupled_distribution_are_masked():
    rng = np.random.default_rng(6)
    x = rng.normal(1.0, 1.0, size=(50, 3))
    x[[0, 7], :] = np.nan
    fit = pg.fit(
        pg.model(_mvn),
        x,
        method="svi",
        guide="mvn",
        missing="marginalize",
        num_steps=2000,
        lr=0.02,
        progress=False,
    )
    seen = x[~np.isnan(x).any(1)]
    prec = 1 / 100 + len(seen)
    np.testing.assert_allclose(fit.params["mu"].numpy(), seen.sum(0) / prec, atol=4 * prec**-0.5)
    scores = np.asarray(fit.log_prob(x))
    assert scores[0] == 0.0 and scores[7] == 0.0 and np.isfinite(scores).all()
