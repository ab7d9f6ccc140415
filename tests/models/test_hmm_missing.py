"""Missing values in hidden Markov models: missing='marginalize' (issue 23)."""

import itertools

import numpy as np
import pytest
import torch
from scipy.stats import multivariate_normal

import probgen as pg
from probgen.models import HiddenMarkovModel


def _params(K, d, seed):
    rng = np.random.default_rng(seed)
    A = rng.dirichlet(np.ones(K), size=K)
    pi = rng.dirichlet(np.ones(K))
    locs = rng.normal(scale=2.0, size=(K, d))
    L = np.tril(rng.normal(scale=0.4, size=(K, d, d)), -1) + np.eye(d) * rng.uniform(0.7, 1.5, size=(K, 1, d))
    covs = L @ L.transpose(0, 2, 1)
    return pi, A, locs, covs


def _torch_params(pi, A, locs, covs):
    t = lambda a: torch.as_tensor(a, dtype=torch.float64)  # noqa: E731
    return {
        "initial": t(pi),
        "transition": t(A),
        "locs": t(locs),
        "scale_tril": torch.linalg.cholesky(t(covs)),
    }


def _emission(x, locs, covs):
    """Densities of the observed features of one step per state (1 for a step missing whole)."""
    o = ~np.isnan(x)
    if not o.any():
        return np.ones(len(locs))
    return np.array(
        [multivariate_normal(m[o], c[np.ix_(o, o)]).pdf(x[o]) for m, c in zip(locs, covs, strict=True)]
    )


def _brute_force(x, pi, A, locs, covs):
    """log p(observed cells) as a sum over every state path."""
    e = np.array([_emission(s, locs, covs) for s in x])
    total = 0.0
    for path in itertools.product(range(len(pi)), repeat=len(x)):
        p = pi[path[0]] * e[0, path[0]]
        for t in range(1, len(x)):
            p *= A[path[t - 1], path[t]] * e[t, path[t]]
        total += p
    return np.log(total)


def _missing_sequences(seed):
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(6, 3))
    a[1] = np.nan  # a step missing whole
    a[2, 0] = np.nan
    a[4, [0, 2]] = np.nan
    b = rng.normal(size=(4, 3))
    b[0, 1] = np.nan
    b[3] = np.nan
    return [a, b]


def test_log_prob_equals_brute_force_over_paths_with_missing_cells():
    pi, A, locs, covs = _params(2, 3, 0)
    seqs = _missing_sequences(1)
    hmm = HiddenMarkovModel(2, covariance_type="full")
    got = hmm.log_prob_items(hmm.prepare_missing(seqs), _torch_params(pi, A, locs, covs))
    want = [_brute_force(s, pi, A, locs, covs) for s in seqs]
    np.testing.assert_allclose(got.numpy(), want, rtol=0, atol=1e-10)


@pytest.mark.parametrize("covariance_type", ["diag", "spherical", "tied"])
def test_other_covariance_types_marginalise_the_missing_features(covariance_type):
    pi, A, locs, covs = _params(2, 3, 2)
    if covariance_type == "tied":
        covs = np.repeat(covs[:1], 2, 0)
        value = torch.linalg.cholesky(torch.as_tensor(covs[0]))
        site = "scale_tril"
    else:
        var = np.diagonal(covs, axis1=1, axis2=2)
        if covariance_type == "spherical":
            var = np.repeat(var.mean(1, keepdims=True), 3, 1)
        covs = np.stack([np.diag(v) for v in var])
        value = torch.as_tensor(np.sqrt(var if covariance_type == "diag" else var[:, 0]))
        site = "scales"
    params = {**_torch_params(pi, A, locs, covs), site: value}
    params.pop("scale_tril") if site == "scales" else None
    seqs = _missing_sequences(3)
    hmm = HiddenMarkovModel(2, covariance_type=covariance_type)
    got = hmm.log_prob_items(hmm.prepare_missing(seqs), params)
    want = [_brute_force(s, pi, A, locs, covs) for s in seqs]
    np.testing.assert_allclose(got.numpy(), want, rtol=0, atol=1e-10)


def test_viterbi_score_is_the_best_path_with_a_missing_step():
    pi, A, locs, covs = _params(2, 1, 4)
    x = np.random.default_rng(5).normal(size=(6, 1))
    x[2] = np.nan
    hmm = HiddenMarkovModel(2, covariance_type="full")
    paths, scores = hmm.viterbi(hmm.prepare_missing(x), _torch_params(pi, A, locs, covs))
    e = np.array([_emission(s, locs, covs) for s in x])
    best = max(
        (
            np.log(pi[p[0]] * e[0, p[0]] * np.prod([A[p[t - 1], p[t]] * e[t, p[t]] for t in range(1, 6)])),
            p,
        )
        for p in itertools.product(range(2), repeat=6)
    )
    assert float(scores[0]) == pytest.approx(best[0], abs=1e-10)
    assert tuple(paths[0].tolist()) == best[1]


def test_categorical_and_poisson_missing_steps_emit_with_probability_one():
    x = np.array([0.0, 2.0, np.nan, 1.0, np.nan, 2.0])
    probs = np.array([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]])
    pi, A = np.array([0.6, 0.4]), np.array([[0.8, 0.2], [0.3, 0.7]])
    params = {"initial": torch.tensor(pi), "transition": torch.tensor(A), "probs": torch.tensor(probs)}
    hmm = HiddenMarkovModel(2, emission="categorical")
    got = float(hmm.log_prob_items(hmm.prepare_missing(x), params)[0])
    # the observed steps alone, the transition matrix raised to the gap's power across a gap
    obs = [(0, 0), (1, 2), (3, 1), (5, 2)]
    alpha = pi * probs[:, 0]
    for (t0, _), (t1, s) in zip(obs[:-1], obs[1:], strict=True):
        alpha = alpha @ np.linalg.matrix_power(A, t1 - t0) * probs[:, s]
    assert got == pytest.approx(np.log(alpha.sum()), abs=1e-12)
    rates = np.array([[1.0, 4.0], [3.0, 0.5]])
    xp = np.array([[1.0, 3.0], [np.nan, np.nan], [2.0, np.nan]])
    params = {"initial": torch.tensor(pi), "transition": torch.tensor(A), "rates": torch.tensor(rates)}
    hmm = HiddenMarkovModel(2, emission="poisson")
    got = float(hmm.log_prob_items(hmm.prepare_missing(xp), params)[0])
    from scipy.stats import poisson

    e0 = poisson.pmf(1, rates[:, 0]) * poisson.pmf(3, rates[:, 1])
    e2 = poisson.pmf(2, rates[:, 0])
    assert got == pytest.approx(np.log(((pi * e0) @ A @ A * e2).sum()), abs=1e-12)


def test_geyser_fit_with_ten_percent_missing_steps_is_close_to_the_complete_fit():
    w = np.asarray(pg.datasets.load_geyser()["waiting"], dtype=float)
    x = w.copy()
    x[np.random.default_rng(0).choice(len(w), len(w) // 10, replace=False)] = np.nan
    full = pg.fit(HiddenMarkovModel(2), w, method="em", seed=0, progress=False)
    part = pg.fit(HiddenMarkovModel(2), x, method="em", seed=0, progress=False, missing="marginalize")
    assert part.extras["missing"] == "marginalize"
    assert np.diff(part.history).min() >= -1e-9  # EM never lowers the observed-data likelihood
    order = lambda f: torch.argsort(f.params["locs"][:, 0])  # noqa: E731
    m0, m1 = full.params["locs"][order(full), 0], part.params["locs"][order(part), 0]
    sd = full.params["scales"][order(full), 0]
    n_k = full.model.latent_posterior(w, full.params)["states"].sum(0)[order(full)]
    assert bool(((m1 - m0).abs() < 2 * sd / n_k.sqrt()).all()), (m0, m1)


def test_impute_mean_is_the_posterior_weighted_conditional_mean():
    pi, A, locs, covs = _params(2, 3, 6)
    params = _torch_params(pi, A, locs, covs)
    seqs = _missing_sequences(7)
    hmm = HiddenMarkovModel(2, covariance_type="full")
    fit = pg.fit(
        hmm,
        seqs,
        method="em",
        max_iter=20,
        tol=1e-2,
        progress=False,
        missing="marginalize",
        init=dict(params),
    )
    filled = fit.impute(seqs)
    gammas = fit.model.latent_posterior(fit.model.prepare_missing(seqs), fit.params)["states"]
    mu = fit.params["locs"].numpy()
    S = fit.model.covariances(fit.params).numpy()
    for x, got, g in zip(seqs, filled, gammas, strict=True):
        for t in range(len(x)):
            o = ~np.isnan(x[t])
            want = x[t].copy()
            for k in range(2):
                cond = mu[k, ~o].copy()
                if o.any():
                    cond += S[k][np.ix_(~o, o)] @ np.linalg.solve(S[k][np.ix_(o, o)], x[t, o] - mu[k, o])
                want[~o] = (want[~o] if k else 0) + float(g[t, k]) * cond
            np.testing.assert_allclose(got[t], want, rtol=0, atol=1e-10)
    assert not np.isnan(filled[0]).any() and filled[1].shape == (4, 3)


def test_default_refuses_nan_naming_the_option():
    x = np.array([1.0, np.nan, 2.0, 3.0])
    with pytest.raises(ValueError, match="missing='marginalize'"):
        pg.fit(HiddenMarkovModel(2), x, method="em", progress=False)
