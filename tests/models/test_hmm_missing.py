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


# ------------------------------------------------------------------- impute(method="sample")
def _path_posterior(e, pi, A):
    """Every state path of a sequence with emission likelihoods ``e`` ``(T, K)`` and its
    posterior probability, by enumeration: ``(K^T, T)`` paths and ``(K^T,)`` probabilities."""
    T, K = e.shape
    paths = np.array(list(itertools.product(range(K), repeat=T)))
    w = pi[paths[:, 0]] * e[0, paths[:, 0]]
    for t in range(1, T):
        w = w * A[paths[:, t - 1], paths[:, t]] * e[t, paths[:, t]]
    return paths, w / w.sum()


def _within(freq, p, n, z=4.0):
    """Empirical frequencies ``freq`` of ``n`` draws within ``z`` binomial standard errors of ``p``."""
    se = np.sqrt(np.maximum(p * (1 - p), 1e-12) / n)
    assert np.all(np.abs(freq - p) <= z * se + 1e-12), (freq, p)


def _conditional_moments(x, locs, covs):
    """Conditional means ``(K, |m|)`` and covariances ``(K, |m|, |m|)`` of the missing features of
    the step ``x`` given its observed ones, per state."""
    o = ~np.isnan(x)
    means, cs = [], []
    for mu, S in zip(locs, covs, strict=True):
        if o.any():
            gain = S[np.ix_(~o, o)] @ np.linalg.inv(S[np.ix_(o, o)])
            means.append(mu[~o] + gain @ (x[o] - mu[o]))
            cs.append(S[np.ix_(~o, ~o)] - gain @ S[np.ix_(o, ~o)])
        else:
            means.append(mu[~o])
            cs.append(S[np.ix_(~o, ~o)])
    return np.array(means), np.array(cs)


def _gaussian_case():
    pi, A, locs, covs = _params(3, 2, 11)
    rng = np.random.default_rng(12)
    a = rng.normal(size=(5, 2)) + locs[[0, 0, 1, 2, 2]]
    a[1, 0] = np.nan
    a[2] = np.nan  # a step missing whole
    a[4, 1] = np.nan
    b = rng.normal(size=(3, 2)) + locs[[1, 1, 0]]
    b[2, 0] = np.nan
    return pi, A, locs, covs, [a, b]


def test_sampled_state_paths_follow_the_brute_force_posterior():
    from probgen.models._hmm_impute import sample_paths

    pi, A, locs, covs, seqs = _gaussian_case()
    T = max(len(s) for s in seqs)
    log_e = np.zeros((len(seqs), T, 3))  # padded steps observe nothing
    for i, s in enumerate(seqs):
        log_e[i, : len(s)] = np.log([_emission(x, locs, covs) for x in s])
    n = 20000
    g = torch.Generator().manual_seed(0)
    states = sample_paths(torch.tensor(log_e), torch.tensor(pi), torch.tensor(A), n, g).numpy()
    assert states.shape == (n, 2, T)
    for i, s in enumerate(seqs):
        paths, post = _path_posterior(np.array([_emission(x, locs, covs) for x in s]), pi, A)
        for t in range(len(s)):
            marginal = np.array([post[paths[:, t] == k].sum() for k in range(3)])
            _within(np.bincount(states[:, i, t], minlength=3) / n, marginal, n)
        # the joint law of the path too, not only its marginals: the five likeliest whole paths
        codes = (states[:, i, : len(s)] * 3 ** np.arange(len(s))[::-1]).sum(1)
        want = (paths * 3 ** np.arange(len(s))[::-1]).sum(1)
        top = np.argsort(post)[-5:]
        _within(np.array([(codes == want[j]).mean() for j in top]), post[top], n)


def test_sampled_gaussian_cells_have_the_mean_and_variance_of_the_posterior_mixture():
    pi, A, locs, covs, seqs = _gaussian_case()
    params = _torch_params(pi, A, locs, covs)
    hmm = HiddenMarkovModel(3, covariance_type="full")
    data = hmm.prepare_missing(seqs)
    n = 4000
    draws = hmm.impute_items(
        data, params, method="sample", num_samples=n, generator=torch.Generator().manual_seed(1)
    )
    assert draws.shape == (n, *data.values.shape)
    mean = hmm.impute_items(data, params)[0]
    for i, s in enumerate(seqs):
        got = draws[:, i, : len(s)].numpy()
        seen = ~np.isnan(s)
        assert np.array_equal(got[:, seen], np.broadcast_to(s[seen], (n, seen.sum())))  # observed unchanged
        se = got.std(0) / np.sqrt(n)
        diff = np.abs(got.mean(0) - mean[i, : len(s)].numpy())
        assert np.all(diff[~seen] <= 4 * se[~seen]), (diff, se)
        # every missing cell: mean and variance of the mixture over the states' conditional Gaussians
        paths, post = _path_posterior(np.array([_emission(x, locs, covs) for x in s]), pi, A)
        for t in range(len(s)):
            if seen[t].all():
                continue
            g = np.array([post[paths[:, t] == k].sum() for k in range(3)])
            m, C = _conditional_moments(s[t], locs, covs)
            for j, dim in enumerate(np.flatnonzero(~seen[t])):
                mix_mean = g @ m[:, j]
                mix_var = g @ (C[:, j, j] + m[:, j] ** 2) - mix_mean**2
                x = got[:, t, dim]
                assert abs(x.mean() - mix_mean) <= 4 * np.sqrt(mix_var / n)
                dev = (x - x.mean()) ** 2
                assert abs(dev.mean() - mix_var) <= 4 * dev.std() / np.sqrt(n), (i, t, dim)
    assert torch.equal(draws[:, 1, 3:], data.values[1, 3:].expand(n, -1, -1))  # padded steps untouched


@pytest.mark.parametrize("covariance_type", ["diag", "spherical"])
def test_sampled_cells_of_independent_features_ignore_the_observed_ones(covariance_type):
    # one state: the posterior of a missing cell is its state's marginal, whatever the other cell
    hmm = HiddenMarkovModel(1, covariance_type=covariance_type)
    scales = torch.tensor([[0.5, 2.0]]) if covariance_type == "diag" else torch.tensor([1.5])
    params = {"initial": torch.ones(1), "transition": torch.ones(1, 1), "locs": torch.tensor([[1.0, -3.0]])}
    params["scales"] = scales.double()
    x = np.array([[np.nan, 40.0], [7.0, np.nan]])
    n = 4000
    got = hmm.impute_items(
        x, params, method="sample", num_samples=n, generator=torch.Generator().manual_seed(2)
    )
    a, b = got[:, 0, 0, 0].numpy(), got[:, 0, 1, 1].numpy()
    sd = scales.expand(1, 2)[0].numpy() if covariance_type == "spherical" else scales[0].numpy()
    for v, mu, s in ((a, 1.0, sd[0]), (b, -3.0, sd[1])):
        assert abs(v.mean() - mu) <= 4 * s / np.sqrt(n)
        assert abs(v.var() - s**2) <= 4 * s**2 * np.sqrt(2 / n)


def test_sampled_symbols_follow_the_brute_force_posterior_predictive():
    x = np.array([0.0, np.nan, np.nan, 2.0, 1.0, np.nan])
    probs = np.array([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]])
    pi, A = np.array([0.6, 0.4]), np.array([[0.8, 0.2], [0.3, 0.7]])
    params = {"initial": torch.tensor(pi), "transition": torch.tensor(A), "probs": torch.tensor(probs)}
    hmm = HiddenMarkovModel(2, emission="categorical")
    n = 20000
    got = hmm.impute_items(
        x, params, method="sample", num_samples=n, generator=torch.Generator().manual_seed(3)
    )
    got = got[:, 0, : len(x)].numpy().astype(int)
    seen = ~np.isnan(x)
    assert np.array_equal(got[:, seen], np.broadcast_to(x[seen], (n, seen.sum())))
    e = np.where(seen[:, None], probs[:, np.nan_to_num(x).astype(int)].T, 1.0)
    paths, post = _path_posterior(e, pi, A)
    for t in np.flatnonzero(~seen):
        predictive = np.array([post @ probs[paths[:, t], s] for s in range(3)])
        _within(np.bincount(got[:, t], minlength=3) / n, predictive, n)
    # the two adjacent missing steps jointly: their symbols depend on each other through the states
    joint = np.array(
        [[post @ (probs[paths[:, 1], a] * probs[paths[:, 2], b]) for b in range(3)] for a in range(3)]
    )
    freq = np.bincount(got[:, 1] * 3 + got[:, 2], minlength=9) / n
    _within(freq, joint.reshape(-1), n)


def test_sampled_counts_follow_the_brute_force_posterior_predictive():
    from scipy.stats import poisson

    rates = np.array([[1.0, 4.0], [3.0, 0.5]])
    pi, A = np.array([0.6, 0.4]), np.array([[0.8, 0.2], [0.3, 0.7]])
    x = np.array([[1.0, 3.0], [np.nan, 0.0], [np.nan, np.nan], [2.0, 5.0]])
    params = {"initial": torch.tensor(pi), "transition": torch.tensor(A), "rates": torch.tensor(rates)}
    hmm = HiddenMarkovModel(2, emission="poisson")
    n = 20000
    got = hmm.impute_items(
        x, params, method="sample", num_samples=n, generator=torch.Generator().manual_seed(4)
    )
    got = got[:, 0].numpy()
    seen = ~np.isnan(x)
    assert np.array_equal(got[:, seen], np.broadcast_to(x[seen], (n, seen.sum())))
    e = np.prod(np.where(seen[:, None, :], poisson.pmf(np.nan_to_num(x)[:, None, :], rates[None]), 1.0), -1)
    paths, post = _path_posterior(e, pi, A)
    for t, j in ((1, 0), (2, 0), (2, 1)):
        predictive = np.array([post @ poisson.pmf(c, rates[paths[:, t], j]) for c in range(6)])
        _within(np.array([(got[:, t, j] == c).mean() for c in range(6)]), predictive, n)


def test_fit_impute_sample_is_reproducible_and_keeps_the_ragged_sequences():
    rng = np.random.default_rng(13)
    seqs = []
    for n in (40, 25):
        regime = (np.arange(n) // 8) % 2
        s = rng.normal(size=(n, 2)) + np.array([[-3.0, 0.0], [3.0, 2.0]])[regime]
        s[rng.random((n, 2)) < 0.15] = np.nan
        seqs.append(s)
    fit = pg.fit(
        HiddenMarkovModel(2, covariance_type="full"),
        seqs,
        method="em",
        tol=1e-4,
        progress=False,
        missing="marginalize",
    )
    copies = fit.impute(seqs, method="sample", num_samples=3, seed=5)
    again = fit.impute(seqs, method="sample", num_samples=3, seed=5)
    other = fit.impute(seqs, method="sample", num_samples=3, seed=6)
    assert len(copies) == 3
    for copy, copy2, copy3 in zip(copies, again, other, strict=True):
        assert isinstance(copy, list) and [c.shape for c in copy] == [(40, 2), (25, 2)]
        for c, c2, c3, s in zip(copy, copy2, copy3, seqs, strict=True):
            seen = ~np.isnan(s)
            assert np.array_equal(c[seen], s[seen]) and not np.isnan(c).any()
            assert np.array_equal(c, c2) and not np.array_equal(c[~seen], c3[~seen])
    assert not np.array_equal(copies[0][0], copies[1][0])  # copies are distinct draws


def test_impute_items_names_a_bad_method_or_count():
    hmm = HiddenMarkovModel(1)
    params = {
        "initial": torch.ones(1),
        "transition": torch.ones(1, 1),
        "locs": torch.zeros(1, 1),
        "scales": torch.ones(1, 1),
    }
    x = np.array([1.0, np.nan])
    with pytest.raises(ValueError, match="method must be 'mean' or 'sample'; got 'median'"):
        hmm.impute_items(x, params, method="median")
    with pytest.raises(ValueError, match="num_samples"):
        hmm.impute_items(x, params, method="sample", num_samples=0)
