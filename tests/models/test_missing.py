"""Missing values in the mixtures: NaN read as missing at random (``missing="marginalize"``).

Scores are checked against brute-force marginals written here (scipy on each item's observed
block), EM against the gradient of the observed-data log-likelihood (torch autograd on the same
brute force), and imputation against scikit-learn's imputers on real data.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats as sps
from scipy.special import logsumexp

import probgen as pg
from probgen.models import (
    RBM,
    BernoulliMixture,
    CategoricalMixture,
    GaussianMixture,
    PoissonMixture,
)

COV_TYPES = ["full", "diag", "spherical", "tied"]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Small tensors: one intra-op thread avoids scheduler stalls on a shared machine."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def _blobs(seed: int = 0, n: int = 240) -> np.ndarray:
    rng = np.random.default_rng(seed)
    a = rng.normal(0.0, 1.0, (n // 2, 3)) @ np.array([[1.0, 0.6, 0.0], [0.0, 0.8, 0.3], [0.0, 0.0, 0.5]])
    b = rng.normal(0.0, 0.7, (n - n // 2, 3)) + np.array([3.0, -2.0, 1.0])
    return np.concatenate([a, b])


def _remove(x: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """``x`` with a ``fraction`` of its cells set to NaN completely at random (MCAR), one item
    wholly missing and one complete, so every kind of pattern is present."""
    rng = np.random.default_rng(seed)
    out = x.astype(np.float64, copy=True)
    out[rng.random(x.shape) < fraction] = np.nan
    out[0] = np.nan
    out[1] = x[1]
    return out


def _brute_gaussian(x: np.ndarray, weights: np.ndarray, locs: np.ndarray, cov: np.ndarray) -> np.ndarray:
    """Per item ``log sum_k w_k N(x_o | mu_k[o], Sigma_k[o, o])``, item by item with scipy."""
    out = np.empty(len(x))
    for i, row in enumerate(x):
        o = ~np.isnan(row)
        if not o.any():
            out[i] = 0.0
            continue
        terms = [
            np.log(w) + sps.multivariate_normal(m[o], c[np.ix_(o, o)]).logpdf(row[o])
            for w, m, c in zip(weights, locs, cov, strict=True)
        ]
        out[i] = logsumexp(terms)
    return out


def _observed_log_lik_torch(x: torch.Tensor, weights, locs, cov) -> torch.Tensor:
    """The brute-force observed-data log-likelihood in torch (differentiable in the parameters)."""
    total = torch.zeros((), dtype=torch.float64)
    for row in x:
        o = ~torch.isnan(row)
        if not bool(o.any()):
            continue
        idx = torch.nonzero(o).flatten()
        terms = torch.stack(
            [
                torch.log(weights[k])
                + torch.distributions.MultivariateNormal(locs[k][idx], cov[k][idx][:, idx]).log_prob(row[idx])
                for k in range(len(weights))
            ]
        )
        total = total + torch.logsumexp(terms, 0)
    return total


# ------------------------------------------------------------------ the option itself
def test_default_refuses_nan_and_names_the_option():
    x = _remove(_blobs(), 0.1, 0)
    with pytest.raises(ValueError, match="missing='marginalize'"):
        pg.fit(GaussianMixture(2), x, method="em", progress=False)
    frame = pd.DataFrame(x, columns=["a", "b", "c"])
    with pytest.raises(ValueError, match=r"row\(s\) with missing values.*missing='marginalize'"):
        pg.fit(GaussianMixture(2), frame, method="em", progress=False)
    counts = np.array([[1.0, np.nan], [2.0, 3.0], [0.0, 1.0]])
    with pytest.raises(ValueError, match="missing='marginalize'"):
        pg.fit(PoissonMixture(1), counts, method="em", progress=False)


def test_a_fit_without_the_option_refuses_nan_in_new_data():
    x = _blobs()
    fit = pg.fit(GaussianMixture(2), x, method="em", progress=False)
    with pytest.raises(ValueError, match="missing='marginalize'"):
        fit.log_prob(_remove(x, 0.1, 0))


def _normal_items(x=None):
    import pyro
    import pyro.distributions as dist

    loc = pyro.sample("loc", dist.Normal(0.0, 1.0))
    with pyro.plate("data", 5 if x is None else len(x)):
        pyro.sample("x", dist.Normal(loc, 1.0), obs=x)


def test_bad_missing_values_are_refused_before_work():
    x = _remove(_blobs(), 0.1, 0)
    with pytest.raises(ValueError, match=r"missing must be one of 'raise', 'marginalize'; got 'drop'"):
        pg.fit(GaussianMixture(2), x, method="em", missing="drop", progress=False)
    with pytest.raises(ValueError, match=r"missing='marginalize' is served by method='em'.*'svi'"):
        pg.fit(GaussianMixture(2), x, method="svi", missing="marginalize", progress=False)
    with pytest.raises(ValueError, match="chunk_size"):
        pg.fit(GaussianMixture(2), x, method="em", missing="marginalize", chunk_size=50, progress=False)
    with pytest.raises(TypeError, match="MissingValues"):
        pg.fit(RBM(2, 2), (x > 0).astype(float), method="cd", missing="marginalize", progress=False)
    with pytest.raises(ValueError, match=r"missing='marginalize' is served by method=.*'svi'.*cannot"):
        pg.fit(pg.model(_normal_items), x[:, 0], method="cd", missing="marginalize", progress=False)
    inf = x.copy()
    inf[3, 1] = np.inf
    with pytest.raises(ValueError, match="infinite"):
        pg.fit(GaussianMixture(2), inf, method="em", missing="marginalize", progress=False)


# ------------------------------------------------------------------------- Gaussian
@pytest.mark.parametrize("cov", COV_TYPES)
def test_gaussian_log_prob_with_nan_is_the_marginal_of_the_observed_cells(cov):
    x = _remove(_blobs(), 0.25, 1)
    fit = pg.fit(GaussianMixture(2, cov), x, method="em", missing="marginalize", progress=False)
    p = fit.params
    full = fit.model._full_covariances(p).numpy()
    expected = _brute_gaussian(x, p["weights"].numpy(), p["locs"].numpy(), full)
    got = fit.log_prob(x).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-10)
    assert got[0] == pytest.approx(0.0, abs=1e-12)  # a wholly missing item: probability one
    # new data with NaN are read as missing too (the fit keeps the option)
    new = _remove(_blobs(5, 40), 0.3, 2)
    expected_new = _brute_gaussian(new, p["weights"].numpy(), p["locs"].numpy(), full)
    np.testing.assert_allclose(fit.log_prob(new).numpy(), expected_new, rtol=1e-10, atol=1e-10)
    proba = fit.predict_proba(new).numpy()
    assert np.allclose(proba.sum(1), 1.0) and fit.predict(new).shape == (40,)


@pytest.mark.parametrize("cov", COV_TYPES)
def test_gaussian_em_with_missing_values_climbs_to_a_stationary_point(cov):
    x = _remove(_blobs(3, 160), 0.2, 3)
    fit = pg.fit(
        GaussianMixture(2, cov, reg_covar=0.0, covariance_shrinkage=0.0),  # the likelihood's optimum
        x,
        method="em",
        missing="marginalize",
        tol=1e-13,
        max_iter=5000,
        progress=False,
    )
    assert fit.converged
    assert np.diff(fit.history).min() >= -1e-9  # EM never lowers the observed-data likelihood
    p = fit.params
    xt = torch.as_tensor(x)
    weights = p["weights"].clone()
    locs = p["locs"].clone().requires_grad_()
    cov_full = fit.model._full_covariances(p).clone().requires_grad_()
    ll = _observed_log_lik_torch(xt, weights, locs, cov_full)
    assert float(ll.detach()) == pytest.approx(fit.log_likelihood(x), rel=1e-10)
    assert float(ll.detach()) == pytest.approx(fit.history[-1], abs=1e-6)
    g_locs, g_cov = torch.autograd.grad(ll, [locs, cov_full])
    # the gradient of the observed-data log-likelihood per item vanishes at EM's fixed point
    # (a wrong conditional expectation leaves it at 1e-2 and more)
    assert float(g_locs.abs().max()) / len(x) < 1e-6
    if cov == "full":
        assert float(g_cov.abs().max()) / len(x) < 1e-6


def test_gaussian_fit_without_missing_cells_is_unchanged_by_the_option():
    x = _blobs()
    plain = pg.fit(GaussianMixture(2), x, method="em", progress=False)
    marg = pg.fit(GaussianMixture(2), x, method="em", missing="marginalize", progress=False)
    for k in plain.params:
        torch.testing.assert_close(plain.params[k], marg.params[k])
    assert marg.extras["missing"] == "marginalize"


# ------------------------------------------------------------------------- imputation
def test_impute_returns_the_form_it_was_given_with_observed_cells_unchanged():
    x = _remove(_blobs(), 0.2, 4)
    fit = pg.fit(GaussianMixture(2), x, method="em", missing="marginalize", progress=False)
    gaps = np.isnan(x)
    filled = fit.impute(x)
    assert isinstance(filled, np.ndarray) and filled.shape == x.shape
    assert not np.isnan(filled).any() and np.array_equal(filled[~gaps], x[~gaps])
    frame = pd.DataFrame(x, columns=["a", "b", "c"], index=pd.RangeIndex(100, 100 + len(x)))
    out = fit.impute(frame)
    assert isinstance(out, pd.DataFrame)
    assert out.index.equals(frame.index) and list(out.columns) == ["a", "b", "c"]
    np.testing.assert_array_equal(out.to_numpy(), filled)
    tensor = fit.impute(torch.as_tensor(x, dtype=torch.float32))
    assert tensor.dtype == torch.float32 and not torch.isnan(tensor).any()
    draws = fit.impute(x, method="sample", num_samples=3, seed=0)
    assert len(draws) == 3 and all(np.array_equal(d[~gaps], x[~gaps]) for d in draws)
    assert not np.array_equal(draws[0], draws[1])
    again = fit.impute(x, method="sample", num_samples=3, seed=0)
    assert all(np.array_equal(a, b) for a, b in zip(draws, again, strict=True))
    # the mean of many draws approaches the conditional mean
    many = np.mean(fit.impute(x, method="sample", num_samples=400, seed=1), axis=0)
    assert np.abs(many - filled)[gaps].mean() < 0.1


def test_a_wholly_missing_item_is_imputed_with_the_mixture_mean():
    x = _remove(_blobs(), 0.2, 4)
    fit = pg.fit(GaussianMixture(2), x, method="em", missing="marginalize", progress=False)
    mean = (fit.params["weights"] @ fit.params["locs"]).numpy()
    np.testing.assert_allclose(fit.impute(x)[0], mean, rtol=1e-12)


def test_impute_on_a_fit_of_complete_data_and_its_errors():
    x = _blobs()
    fit = pg.fit(GaussianMixture(2), x, method="em", progress=False)
    gappy = _remove(x, 0.2, 5)
    assert not np.isnan(fit.impute(gappy)).any()
    with pytest.raises(ValueError, match="method must be one of 'mean', 'sample'; got 'median'"):
        fit.impute(gappy, method="median")
    with pytest.raises(ValueError, match="num_samples=2 applies to method='sample'"):
        fit.impute(gappy, num_samples=2)
    bits = (np.random.default_rng(0).random((40, 3)) < 0.5).astype(float)
    rbm_fit = pg.fit(RBM(3, 2), bits, method="cd", progress=False)
    with pytest.raises(TypeError, match="cannot impute missing cells.*Imputes"):
        rbm_fit.impute(bits)


def _mcar_benchmark() -> list[tuple[str, np.ndarray]]:
    from sklearn.datasets import load_iris, load_wine

    cols = ["bill_length_mm", "bill_depth_mm", "flipper_length_mm", "body_mass_g"]
    penguins = pg.datasets.load_penguins(dropna=True)[cols].to_numpy()
    return [("iris", load_iris().data), ("wine", load_wine().data), ("penguins", penguins)]


#: One mixture for every data set, as a user would write it: three components (three species,
#: cultivars, species) with the defaults (full covariances, ``covariance_shrinkage="auto"``).
#: Measured RMSE, ours / IterativeImputer / KNNImputer, seeds 0-4: iris .382/.497/.566,
#: .504/.596/.606, .441/.529/.645, .480/.534/.617, .385/.414/.462; wine .711/.799/.759,
#: .729/.783/.774, .700/.748/.759, .677/.731/.720, .669/.724/.697; penguins .574/.697/.729,
#: .599/.716/.669, .586/.671/.706, .616/.741/.724, .573/.646/.658.  Without the shrinkage
#: (``covariance_shrinkage=0.0``) wine's full covariances (91 parameters each, about 60 items
#: a component) overfit: .897/.863/.888/.861/.848.
def _imputer_model() -> GaussianMixture:
    return GaussianMixture(3)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize("name", ["iris", "wine", "penguins"])
@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
def test_imputation_rmse_is_at_most_scikit_learns(name, seed):
    from sklearn.experimental import enable_iterative_imputer  # noqa: F401
    from sklearn.impute import IterativeImputer, KNNImputer

    x = dict(_mcar_benchmark())[name]
    x = (x - x.mean(0)) / x.std(0)
    gaps = np.random.default_rng(seed).random(x.shape) < 0.2  # 20% of the cells, MCAR
    gappy = np.where(gaps, np.nan, x)
    fit = pg.fit(_imputer_model(), gappy, method="em", missing="marginalize", seed=seed, progress=False)

    def rmse(filled: np.ndarray) -> float:
        return float(np.sqrt(np.mean((filled - x)[gaps] ** 2)))

    ours = rmse(fit.impute(gappy))
    iterative = rmse(IterativeImputer(random_state=seed, max_iter=30).fit_transform(gappy))
    knn = rmse(KNNImputer().fit_transform(gappy))
    assert ours <= iterative and ours <= knn, (ours, iterative, knn)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize("name", ["iris", "wine", "penguins"])
def test_imputation_rmse_under_missing_not_at_random_blocks(name):
    """Missing not at random: in each of the first four columns in turn, 60% of the values above
    the column's 70th percentile are hidden (the high values go missing).  Measured RMSE per
    column, ours / IterativeImputer / KNNImputer: iris .478/.464/.747, .827/.997/.931,
    .234/.278/.227, .499/.437/.532; wine .795/.910/.772, 1.486/1.522/1.454, 1.148/1.192/1.193,
    .974/.937/1.116; penguins .925/1.037/1.060, .875/1.271/.996, .325/.397/.342, .454/.573/.441.
    The mixture is not best on every column; over the four blocks it is (means .510/.544/.609,
    1.101/1.141/1.134, .645/.819/.710)."""
    from sklearn.experimental import enable_iterative_imputer  # noqa: F401
    from sklearn.impute import IterativeImputer, KNNImputer

    x = dict(_mcar_benchmark())[name]
    x = (x - x.mean(0)) / x.std(0)
    totals = np.zeros(3)
    for col in range(4):
        rng = np.random.default_rng(col)
        gaps = np.zeros(x.shape, dtype=bool)
        gaps[:, col] = (x[:, col] > np.quantile(x[:, col], 0.7)) & (rng.random(len(x)) < 0.6)
        gappy = np.where(gaps, np.nan, x)
        fit = pg.fit(_imputer_model(), gappy, method="em", missing="marginalize", seed=0, progress=False)
        filled = [
            fit.impute(gappy),
            IterativeImputer(random_state=0, max_iter=30).fit_transform(gappy),
            KNNImputer().fit_transform(gappy),
        ]
        totals += [np.sqrt(np.mean((f - x)[gaps] ** 2)) for f in filled]
    ours, iterative, knn = totals / 4
    assert ours <= iterative and ours <= knn, (ours, iterative, knn)


# ------------------------------------------------------------------ covariance shrinkage
def test_shrinkage_keeps_variances_and_scales_correlations_by_the_pseudo_items():
    """One M-step from given responsibilities, by hand: ``S_k`` off the diagonal times
    ``n_k / (n_k + nu)``, variances unchanged; "auto" shrinks with missing cells only."""
    x = torch.as_tensor(_blobs())
    resp = torch.as_tensor(np.random.default_rng(0).dirichlet([1.0, 1.0], len(x)))
    plain = GaussianMixture(2, covariance_shrinkage=0.0)
    shrunk = GaussianMixture(2, covariance_shrinkage=3.0)
    nk = resp.sum(0)
    s = plain.covariances(plain._m_step_resp(x, resp, None))
    got = shrunk.covariances(shrunk._m_step_resp(x, resp, None))
    keep = (nk / (nk + 3.0))[:, None, None]
    expected = keep * s + (1 - keep) * torch.diag_embed(torch.diagonal(s, dim1=1, dim2=2))
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)
    auto = GaussianMixture(2)  # complete data: no shrinkage
    torch.testing.assert_close(auto.covariances(auto._m_step_resp(x, resp, None)), s)
    tied = GaussianMixture(2, "tied", covariance_shrinkage=3.0)
    t_plain = GaussianMixture(2, "tied", covariance_shrinkage=0.0)
    t = t_plain.covariances(t_plain._m_step_resp(x, resp, None))
    keep_t = len(x) / (len(x) + 3.0)
    torch.testing.assert_close(
        tied.covariances(tied._m_step_resp(x, resp, None)),
        keep_t * t + (1 - keep_t) * torch.diag(torch.diagonal(t)),
        rtol=1e-10,
        atol=1e-12,
    )
    gappy = _remove(_blobs(), 0.2, 4)
    fits = {
        nu: pg.fit(
            GaussianMixture(2, covariance_shrinkage=nu),
            gappy,
            method="em",
            missing="marginalize",
            progress=False,
        )
        for nu in ("auto", 3.0, 0.0)
    }
    for k in fits[3.0].params:  # "auto" is n_features = 3 pseudo-items here
        torch.testing.assert_close(fits["auto"].params[k], fits[3.0].params[k])
    assert not torch.allclose(fits["auto"].params["corr_cholesky"], fits[0.0].params["corr_cholesky"])


@pytest.mark.parametrize(
    "value, error, match",
    [
        (-1.0, ValueError, "covariance_shrinkage must be 'auto' or a finite number >= 0; got -1.0"),
        (float("inf"), ValueError, "finite number >= 0"),
        ("big", TypeError, "covariance_shrinkage must be 'auto' or a number >= 0; got 'big'"),
        (True, TypeError, "covariance_shrinkage must be 'auto' or a number"),
    ],
)
def test_bad_shrinkage_is_refused(value, error, match):
    with pytest.raises(error, match=match):
        GaussianMixture(2, covariance_shrinkage=value)


# ------------------------------------------------------------------------- discrete
def _brute_discrete(x: np.ndarray, weights: np.ndarray, logpmf) -> np.ndarray:
    """Per item ``log sum_k w_k prod_{j observed} p(x_ij | k)``, cell by cell."""
    out = np.empty(len(x))
    for i, row in enumerate(x):
        terms = [
            np.log(w) + sum(logpmf(k, j, row[j]) for j in range(len(row)) if not np.isnan(row[j]))
            for k, w in enumerate(weights)
        ]
        out[i] = logsumexp(terms)
    return out


def _discrete_case(family: str):
    rng = np.random.default_rng(7)
    if family == "bernoulli":
        x = (rng.random((120, 5)) < np.where(np.arange(120)[:, None] < 60, 0.8, 0.2)).astype(float)
        return BernoulliMixture(2), x, lambda p, k, j, v: sps.bernoulli(p["probs"][k, j]).logpmf(v)
    if family == "categorical":
        x = rng.integers(0, 3, (120, 4)).astype(float)
        x[:60, 0] = 2.0
        return (
            CategoricalMixture(2, n_categories=3),
            x,
            lambda p, k, j, v: np.log(p["probs"][k, j, int(v)]),
        )
    x = rng.poisson(np.where(np.arange(120)[:, None] < 60, 1.0, 6.0), (120, 3)).astype(float)
    return PoissonMixture(2), x, lambda p, k, j, v: sps.poisson(p["rates"][k, j]).logpmf(v)


@pytest.mark.parametrize("family", ["bernoulli", "categorical", "poisson"])
def test_discrete_log_prob_with_nan_skips_the_missing_cells(family):
    model, x, logpmf = _discrete_case(family)
    gappy = _remove(x, 0.25, 8)
    fit = pg.fit(model, gappy, method="em", missing="marginalize", progress=False)
    assert np.diff(fit.history).min() >= -1e-9
    p = {k: v.numpy() for k, v in fit.params.items()}
    expected = _brute_discrete(gappy, p["weights"], lambda k, j, v: logpmf(p, k, j, v))
    np.testing.assert_allclose(fit.log_prob(gappy).numpy(), expected, rtol=1e-10, atol=1e-10)
    filled = fit.impute(gappy)
    gaps = np.isnan(gappy)
    assert not np.isnan(filled).any() and np.array_equal(filled[~gaps], gappy[~gaps])
    draws = fit.impute(gappy, method="sample", seed=0)
    assert np.array_equal(draws[~gaps], gappy[~gaps])
    if family != "poisson":
        assert set(np.unique(draws)) <= set(np.unique(x))


@pytest.mark.parametrize("family", ["bernoulli", "poisson"])
def test_discrete_em_with_missing_values_reaches_a_stationary_point(family):
    """At EM's fixed point the per-feature parameters equal their responsibility-weighted means
    over the observed cells only (the stationarity condition of the observed-data likelihood)."""
    model, x, _ = _discrete_case(family)
    gappy = _remove(x, 0.25, 9)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fit = pg.fit(model, gappy, method="em", missing="marginalize", tol=1e-13, progress=False)
    resp = fit.predict_proba(gappy).numpy()
    seen = ~np.isnan(gappy)
    xs = np.where(seen, gappy, 0.0)
    site = "probs" if family == "bernoulli" else "rates"
    expected = (resp.T @ xs) / (resp.T @ seen)
    np.testing.assert_allclose(fit.params[site].numpy(), expected, atol=1e-5)


def test_a_fit_with_missing_values_saves_and_loads(tmp_path):
    x = _remove(_blobs(), 0.2, 6)
    fit = pg.fit(GaussianMixture(2), x, method="em", missing="marginalize", progress=False)
    fit.save(tmp_path / "fit.npz")
    back = pg.load(tmp_path / "fit.npz")
    assert back.extras["missing"] == "marginalize"
    np.testing.assert_allclose(back.log_prob().numpy(), fit.log_prob(x).numpy(), rtol=1e-12)
    np.testing.assert_allclose(back.impute(x), fit.impute(x), rtol=1e-12)
    assert fit.to_arviz().log_likelihood["obs"].shape == (1, 1, len(x))
