"""probgen.sklearn against scikit-learn's conventions (check_estimator) and reference libraries.

Numbers are compared with scikit-learn's ``GaussianMixture``, ``CategoricalNB`` and
``BernoulliRBM`` and hmmlearn's ``GaussianHMM``/``CategoricalHMM`` on the same data and the same
starting parameters, or with answers worked out by hand.
"""

from __future__ import annotations

import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch
from hmmlearn import hmm as hmmlearn_hmm
from sklearn.base import clone
from sklearn.exceptions import ConvergenceWarning as SkConvergenceWarning
from sklearn.exceptions import NotFittedError
from sklearn.mixture import GaussianMixture as SkGaussianMixture
from sklearn.model_selection import GridSearchCV, KFold
from sklearn.naive_bayes import CategoricalNB
from sklearn.neural_network import BernoulliRBM
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

import probgen as pg
from probgen.sklearn import (
    RBM,
    BayesianGaussianMixture,
    CategoricalHMM,
    GaussianHMM,
    GaussianMixture,
    NaiveBayes,
)

quiet_convergence = pytest.mark.filterwarnings(
    "ignore::probgen.errors.ConvergenceWarning", "ignore::sklearn.exceptions.ConvergenceWarning"
)


@pytest.fixture(scope="module")
def faithful() -> np.ndarray:
    return pg.datasets.load_old_faithful()[["eruptions", "waiting"]].to_numpy()


# --------------------------------------------------------------------------- check_estimator
class _GaussianHMMChecked(GaussianHMM):
    """GaussianHMM as scikit-learn's checks call it.

    The checks pass ``y`` positionally to ``fit`` and ``score``, where hmmlearn's signature (kept
    by GaussianHMM) reads it as the sequence ``lengths``; this subclass drops it, so every other
    check exercises the estimator's own code.
    """

    def fit(self, X, y=None):
        return super().fit(X)

    def score(self, X, y=None):
        return super().score(X)


def _squash(X):
    """Values in (0, 1) from the checks' real-valued data (NaN and inf left as they are)."""
    arr = np.asarray(X)
    if arr.dtype.kind not in "biuf":
        return X
    arr = arr.astype(np.float64)
    with np.errstate(over="ignore"):
        return np.where(np.isfinite(arr), 1.0 / (1.0 + np.exp(-arr)), arr)


class _RBMChecked(RBM):
    """RBM on the checks' data squashed into (0, 1): the checks draw real values anywhere, an RBM
    reads values in [0, 1] (and refuses others, tested below)."""

    def _validate(self, X, *, reset):
        return super()._validate(_squash(X) if not hasattr(X, "columns") else X, reset=reset)


_SEQUENCE = "rows of X are the time steps of one sequence: reordering or splitting them changes the data"
_PSEUDO = "the pseudo-likelihood flips one random unit per row (as BernoulliRBM's, which fails it too)"
_SYMBOLS = "the check fits several real-valued columns; a CategoricalHMM reads one column of symbols"
_CATEGORICAL_HMM_XFAIL = {
    name: _SYMBOLS
    for name in (
        "check_fit_score_takes_y",
        "check_estimators_overwrite_params",
        "check_dont_overwrite_parameters",
        "check_estimators_fit_returns_self",
        "check_readonly_memmap_input",
        "check_n_features_in_after_fitting",
        "check_positive_only_tag_during_fit",
        "check_estimators_dtypes",
        "check_dtype_object",
        "check_pipeline_consistency",
        "check_estimators_nan_inf",
        "check_estimators_pickle",
        "check_f_contiguous_array_estimator",
        "check_methods_sample_order_invariance",
        "check_methods_subset_invariance",
        "check_fit2d_1sample",
        "check_fit2d_1feature",
        "check_dict_unchanged",
        "check_fit_idempotent",
        "check_fit_check_is_fitted",
        "check_n_features_in",
        "check_fit2d_predict1d",
    )
}
EXPECTED_FAILURES = {
    "_GaussianHMMChecked": {
        "check_methods_sample_order_invariance": _SEQUENCE,
        "check_methods_subset_invariance": _SEQUENCE,
    },
    "CategoricalHMM": _CATEGORICAL_HMM_XFAIL,
    "_RBMChecked": {
        "check_methods_sample_order_invariance": _PSEUDO,
        "check_methods_subset_invariance": _PSEUDO,
    },
}

# test-time settings keep each check short; the library defaults are those that converge
CHECKED = [
    GaussianMixture(tol=1e-3, max_iter=100, random_state=0),
    BayesianGaussianMixture(covariance_type="diag", num_steps=30, num_samples=5, random_state=0),
    _GaussianHMMChecked(n_iter=20, tol=1e-4, random_state=0),
    CategoricalHMM(n_iter=20, tol=1e-4, random_state=0),
    NaiveBayes(),
    _RBMChecked(4, n_iter=2, random_state=0),
]


@quiet_convergence
@parametrize_with_checks(
    CHECKED, expected_failed_checks=lambda est: EXPECTED_FAILURES.get(type(est).__name__, {})
)
def test_sklearn_compatible_estimator(estimator, check):
    check(estimator)


def test_hmm_fit_keeps_hmmlearns_signature():
    import inspect

    for cls in (GaussianHMM, CategoricalHMM):
        for method in ("fit", "score", "score_samples", "predict", "predict_proba", "decode", "bic", "aic"):
            assert list(inspect.signature(getattr(cls, method)).parameters)[:3] == ["self", "X", "lengths"]


# ------------------------------------------------------------------ parameters and pipelines
def test_clone_get_params_and_set_params():
    gm = GaussianMixture(2, covariance_type="diag", random_state=3)
    twin = clone(gm)
    assert twin is not gm and twin.get_params() == gm.get_params()
    assert twin.set_params(n_components=4).n_components == 4 and gm.n_components == 2
    for est in (BayesianGaussianMixture(2), GaussianHMM(3), CategoricalHMM(2), NaiveBayes(0.5), RBM(8)):
        assert clone(est).get_params() == est.get_params()


def test_not_fitted_error_before_fit(faithful):
    for est in (GaussianMixture(2), BayesianGaussianMixture(2), GaussianHMM(2), RBM(2)):
        with pytest.raises(NotFittedError):
            est.predict(faithful) if hasattr(est, "predict") else est.transform(faithful)
    with pytest.raises(NotFittedError):
        GaussianHMM(2).score(faithful)
    with pytest.raises(NotFittedError):
        NaiveBayes().predict_proba([[0, 1]])


def _sklearn_start(x: np.ndarray, k: int, cov: str) -> SkGaussianMixture:
    """A rough start: scikit-learn after one iteration from random items."""
    sk = SkGaussianMixture(k, covariance_type=cov, max_iter=1, init_params="random_from_data", random_state=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SkConvergenceWarning)
        return sk.fit(x)


@quiet_convergence
@pytest.mark.parametrize("cov", ["full", "diag", "spherical", "tied"])
def test_gaussian_mixture_equals_sklearn_from_the_same_start(cov, faithful):
    start = _sklearn_start(faithful, 2, cov)
    init = {"weights_init": start.weights_, "means_init": start.means_, "precisions_init": start.precisions_}
    sk = SkGaussianMixture(2, covariance_type=cov, max_iter=25, tol=0.0, **init).fit(faithful)
    ours = GaussianMixture(2, covariance_type=cov, max_iter=25, tol=0.0, **init).fit(faithful)
    assert ours.n_iter_ == sk.n_iter_ == 25
    assert ours.lower_bound_ == pytest.approx(sk.lower_bound_, abs=1e-6)
    for name in ("weights_", "means_", "covariances_", "precisions_", "precisions_cholesky_"):
        np.testing.assert_allclose(getattr(ours, name), getattr(sk, name), rtol=1e-6, atol=1e-9, err_msg=name)
    np.testing.assert_allclose(ours.score_samples(faithful), sk.score_samples(faithful), rtol=1e-9)
    np.testing.assert_allclose(ours.predict_proba(faithful), sk.predict_proba(faithful), atol=1e-8)
    np.testing.assert_array_equal(ours.predict(faithful), sk.predict(faithful))
    assert ours.score(faithful) == pytest.approx(sk.score(faithful), rel=1e-10)
    assert ours.bic(faithful) == pytest.approx(sk.bic(faithful), rel=1e-10)
    assert ours.aic(faithful) == pytest.approx(sk.aic(faithful), rel=1e-10)
    out = ours.predict_proba(faithful), ours.score_samples(faithful), ours.predict(faithful)
    assert [a.dtype for a in out] == [np.float64, np.float64, np.int64]


def test_gaussian_mixture_seed_is_probgens_and_outputs_are_numpy(faithful):
    est = GaussianMixture(2, random_state=5).fit(faithful)
    fit = pg.fit(pg.models.GaussianMixture(2), faithful, method="em", seed=5, progress=False)
    np.testing.assert_array_equal(est.means_, fit.params["locs"].numpy())
    assert isinstance(est.fit_, pg.Fit) and est.converged_
    X, z = est.sample(500)
    assert X.shape == (500, 2) and X.dtype == np.float64 and z.dtype == np.int64
    assert np.array_equal(est.sample(3)[0], est.sample(3)[0])  # an int random_state repeats draws


def test_dataframe_columns_become_feature_names_and_are_checked():
    frame = pg.datasets.load_old_faithful()[["eruptions", "waiting"]]
    est = GaussianMixture(2, random_state=0).fit(frame)
    assert list(est.feature_names_in_) == ["eruptions", "waiting"] and est.n_features_in_ == 2
    with pytest.raises(ValueError, match="feature names should match"):
        est.predict(frame[["waiting", "eruptions"]])
    on_arrays = GaussianMixture(2, random_state=0).fit(frame.to_numpy())
    assert not hasattr(on_arrays, "feature_names_in_")
    with pytest.raises(ValueError, match="X has 1 features, but GaussianMixture is expecting 2"):
        on_arrays.predict(frame[["waiting"]].to_numpy())


def test_pipeline_with_a_scaler_equals_the_mixture_of_scaled_data(faithful):
    pipe = Pipeline([("scale", StandardScaler()), ("gmm", GaussianMixture(2, random_state=0))]).fit(faithful)
    scaled = StandardScaler().fit_transform(faithful)
    direct = GaussianMixture(2, random_state=0).fit(scaled)
    np.testing.assert_allclose(pipe.named_steps["gmm"].means_, direct.means_, rtol=1e-10)
    np.testing.assert_array_equal(pipe.predict(faithful), direct.predict(scaled))
    assert pipe.score(faithful) == pytest.approx(direct.score(scaled), rel=1e-12)
    sk = SkGaussianMixture(2, tol=1e-10, max_iter=1000, n_init=5, random_state=0).fit(scaled)
    assert direct.score(scaled) == pytest.approx(sk.score(scaled), abs=1e-6)  # the same optimum


@pytest.mark.slow  # nine cross-validated fits of both libraries
def test_grid_search_selects_n_components_by_score_like_sklearn(faithful):
    cv = KFold(5, shuffle=True, random_state=0)
    ours = GridSearchCV(GaussianMixture(random_state=0), {"n_components": [1, 2, 3]}, cv=cv).fit(faithful)
    ref = GridSearchCV(
        SkGaussianMixture(tol=1e-8, max_iter=1000, n_init=3, random_state=0),
        {"n_components": [1, 2, 3]},
        cv=cv,
    ).fit(faithful)
    assert ours.best_params_ == ref.best_params_
    assert isinstance(ours.best_estimator_, GaussianMixture)
    ours_scores, ref_scores = ours.cv_results_["mean_test_score"], ref.cv_results_["mean_test_score"]
    assert ours_scores[0] == pytest.approx(ref_scores[0], rel=1e-10)  # one Gaussian: closed form
    assert ours_scores[1] == pytest.approx(ref_scores[1], abs=1e-5)  # two: the same optimum


# ------------------------------------------------------------------------------------ HMMs
START = np.array([0.5, 0.3, 0.2])
TRANS = np.array([[0.8, 0.1, 0.1], [0.2, 0.7, 0.1], [0.1, 0.3, 0.6]])
MEANS = np.array([[0.0, 0.0], [3.0, 1.0], [-2.0, 4.0]])
COVARS = {
    "full": np.array([np.eye(2) * 1.5, [[1.0, 0.3], [0.3, 0.5]], np.eye(2)]),
    "diag": np.array([[1.0, 2.0], [0.5, 1.0], [1.0, 1.0]]),
}
PROBS = np.array([[0.5, 0.2, 0.1, 0.1, 0.1], [0.05, 0.05, 0.3, 0.3, 0.3], [0.2, 0.2, 0.2, 0.2, 0.2]])
LENGTHS = [120, 45, 200]


@quiet_convergence
@pytest.mark.parametrize("cov", ["full", "diag"])
def test_gaussian_hmm_follows_hmmlearn(cov):
    ref = hmmlearn_hmm.GaussianHMM(3, covariance_type=cov, init_params="", n_iter=6, tol=-np.inf)
    ref.startprob_, ref.transmat_, ref.means_, ref.covars_ = (
        START.copy(),
        TRANS.copy(),
        MEANS.copy(),
        COVARS[cov].copy(),
    )
    X, _ = ref.sample(sum(LENGTHS), random_state=0)
    ref.fit(X, LENGTHS)
    ours = GaussianHMM(
        3,
        covariance_type=cov,
        n_iter=6,
        tol=0.0,
        startprob_init=START,
        transmat_init=TRANS,
        means_init=MEANS,
        covars_init=COVARS[cov],
    ).fit(X, LENGTHS)
    np.testing.assert_allclose(ours.history_, ref.monitor_.history, rtol=1e-8)
    np.testing.assert_allclose(ours.startprob_, ref.startprob_, rtol=1e-7, atol=1e-10)
    np.testing.assert_allclose(ours.transmat_, ref.transmat_, rtol=1e-7, atol=1e-10)
    np.testing.assert_allclose(ours.means_, ref.means_, rtol=1e-7, atol=1e-10)
    np.testing.assert_allclose(ours.covars_, ref.covars_, rtol=1e-7)
    assert ours.score(X, LENGTHS) == pytest.approx(ref.score(X, LENGTHS), rel=1e-10)
    logp, post = ours.score_samples(X, LENGTHS)
    ref_logp, ref_post = ref.score_samples(X, LENGTHS)
    assert logp == pytest.approx(ref_logp, rel=1e-10)
    np.testing.assert_allclose(post, ref_post, atol=1e-8)
    np.testing.assert_allclose(ours.predict_proba(X, LENGTHS), ref.predict_proba(X, LENGTHS), atol=1e-8)
    np.testing.assert_array_equal(ours.predict(X, LENGTHS), ref.predict(X, LENGTHS))
    v, path = ours.decode(X, LENGTHS)
    ref_v, ref_path = ref.decode(X, LENGTHS)
    assert v == pytest.approx(ref_v, rel=1e-10) and np.array_equal(path, ref_path)
    assert ours.bic(X, LENGTHS) == pytest.approx(ref.bic(X, LENGTHS), rel=1e-10)
    assert ours.aic(X, LENGTHS) == pytest.approx(ref.aic(X, LENGTHS), rel=1e-10)
    Xs, states = ours.sample(50, random_state=1)
    assert Xs.shape == (50, 2) and Xs.dtype == np.float64 and states.shape == (50,)


@quiet_convergence
def test_categorical_hmm_follows_hmmlearn():
    ref = hmmlearn_hmm.CategoricalHMM(3, init_params="", n_iter=6, tol=-np.inf)
    ref.startprob_, ref.transmat_, ref.emissionprob_ = START.copy(), TRANS.copy(), PROBS.copy()
    X, _ = ref.sample(sum(LENGTHS), random_state=2)
    ref.fit(X, LENGTHS)
    ours = CategoricalHMM(
        3, n_iter=6, tol=0.0, startprob_init=START, transmat_init=TRANS, emissionprob_init=PROBS
    ).fit(X, LENGTHS)
    np.testing.assert_allclose(ours.transmat_, ref.transmat_, rtol=1e-7, atol=1e-10)
    np.testing.assert_allclose(ours.emissionprob_, ref.emissionprob_, rtol=1e-7, atol=1e-10)
    assert ours.score(X, LENGTHS) == pytest.approx(ref.score(X, LENGTHS), rel=1e-10)
    np.testing.assert_allclose(ours.predict_proba(X, LENGTHS), ref.predict_proba(X, LENGTHS), atol=1e-8)
    np.testing.assert_array_equal(ours.predict(X, LENGTHS), ref.predict(X, LENGTHS))
    Xs, _ = ours.sample(20, random_state=0)
    assert Xs.shape == (20, 1) and Xs.dtype == np.int64


def test_hmm_inputs_are_checked():
    X = np.random.default_rng(0).normal(size=(30, 2))
    with pytest.raises(ValueError, match="lengths must sum to the number of rows of X"):
        GaussianHMM(2).fit(X, [10, 10])
    with pytest.raises(ValueError, match="lengths must be positive"):
        GaussianHMM(2).fit(X, [30, 0])
    with pytest.raises(ValueError, match="one column of symbols"):
        CategoricalHMM(2).fit(np.zeros((10, 2), dtype=int))
    with pytest.raises(ValueError, match="non-negative integer codes"):
        CategoricalHMM(2).fit(np.array([[0.0], [1.5], [1.0]]))
    with pytest.raises(ValueError, match="n_states"):
        GaussianHMM(0).fit(X)


# ------------------------------------------------------------------------------ naive Bayes
def test_naive_bayes_equals_categorical_nb_with_the_smoothed_class_prior():
    rng = np.random.default_rng(0)
    y = rng.choice(["cold", "flu", "none"], size=200, p=[0.3, 0.2, 0.5])
    X = np.column_stack(
        [rng.integers(0, 3, 200), rng.integers(0, 4, 200), (y == "flu") + rng.integers(0, 2, 200)]
    )
    alpha = 0.5
    ours = NaiveBayes(alpha).fit(X, y)
    counts = np.array([(y == c).sum() for c in ["cold", "flu", "none"]])
    prior = (counts + alpha) / (len(y) + 3 * alpha)  # the class prior smoothed like every table
    ref = CategoricalNB(alpha=alpha, class_prior=prior).fit(X, y)
    assert list(ours.classes_) == list(ref.classes_)
    np.testing.assert_allclose(ours.class_log_prior_, np.log(prior), rtol=1e-12)
    for a, b in zip(ours.feature_log_prob_, ref.feature_log_prob_, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-10)
    np.testing.assert_allclose(ours.predict_proba(X), ref.predict_proba(X), atol=1e-10)
    np.testing.assert_array_equal(ours.predict(X), ref.predict(X))
    assert ours.score(X, y) == ref.score(X, y)
    # log p(x): the class summed out, by hand from the tables
    joint = ref._joint_log_likelihood(X)
    np.testing.assert_allclose(ours.score_samples(X), np.logaddexp.reduce(joint, axis=1), rtol=1e-10)
    Xs, ys = ours.sample(5, random_state=0)
    assert Xs.shape == (5, 3) and set(ys) <= set(ours.classes_)


def test_naive_bayes_refuses_what_it_cannot_read():
    with pytest.raises(ValueError, match="integer codes"):
        NaiveBayes().fit([[0.5, 1.0], [1.0, 0.0]], [0, 1])
    with pytest.raises(ValueError, match="class"):
        NaiveBayes().fit([[0, 1], [1, 0]], [1, 1])
    fitted = NaiveBayes().fit([[0, 1], [1, 0]], [0, 1])
    with pytest.raises(ValueError, match="X column 1 holds code 5"):
        fitted.predict([[0, 5]])


# ------------------------------------------------------------------------------------ RBM
def test_rbm_transform_and_pseudo_likelihood_equal_bernoulli_rbm():
    rng = np.random.default_rng(0)
    X = (rng.uniform(size=(60, 7)) < 0.3).astype(float)
    ours = RBM(4, n_iter=3, random_state=7).fit(X)
    ref = BernoulliRBM(4, n_iter=1, random_state=7).fit(X)
    ref.components_ = ours.components_.copy()
    ref.intercept_hidden_ = ours.intercept_hidden_.copy()
    ref.intercept_visible_ = ours.intercept_visible_.copy()
    np.testing.assert_allclose(ours.transform(X), ref.transform(X), rtol=1e-12)
    np.testing.assert_allclose(ours.score_samples(X), ref.score_samples(X), rtol=1e-12)
    # a Gibbs sweep: visible units on with the probability of summing out the drawn hidden units
    draws = np.stack([ours.gibbs(np.tile(X[:1], (1, 1)))[0] for _ in range(3000)])
    h = np.array(np.meshgrid(*[[0.0, 1.0]] * 4, indexing="ij")).reshape(4, -1).T
    p_h = np.prod(np.where(h == 1, ours.transform(X[:1]), 1 - ours.transform(X[:1])), axis=1)
    p_v = (p_h[:, None] / (1 + np.exp(-(h @ ours.components_ + ours.intercept_visible_)))).sum(0)
    np.testing.assert_allclose(draws.mean(0), p_v, atol=4 * np.sqrt(0.25 / 3000))


def test_rbm_learns_and_refuses_values_outside_the_unit_interval():
    """Two patterns with every unit flipped with probability 0.1: with its default settings the
    RBM's exact log-likelihood reaches that of the distribution that drew the data."""
    rng = np.random.default_rng(1)
    patterns = np.array([[1, 1, 1, 0, 0, 0], [0, 0, 0, 1, 1, 1]], dtype=float)
    X = patterns[rng.integers(0, 2, 400)]
    X = np.abs(X - (rng.uniform(size=X.shape) < 0.1))
    agree = (X[:, None, :] == patterns[None]).sum(-1)  # (n, 2) units agreeing with each pattern
    truth = np.log(0.5 * (0.9**agree * 0.1 ** (6 - agree)).sum(1)).mean()
    rbm = RBM(2, random_state=0).fit(X)
    assert rbm.fit_.log_prob(X).numpy().mean() > truth - 0.05
    assert rbm.transform(X).shape == (400, 2) and rbm.get_feature_names_out().tolist() == ["rbm0", "rbm1"]
    assert rbm.sample(3, burn_in=10).shape == (3, 6)
    with pytest.raises(ValueError, match=r"values in \[0, 1\]"):
        RBM(2).fit(X * 2)


# ---------------------------------------------------------------------- Bayesian mixtures
def test_bayesian_mixture_by_svi_agrees_with_em(faithful):
    scaled = StandardScaler().fit_transform(faithful)
    em = GaussianMixture(2, covariance_type="diag", random_state=0).fit(scaled)
    bgm = BayesianGaussianMixture(2, covariance_type="diag", num_steps=800, num_samples=100, random_state=0)
    bgm.fit(scaled)
    order = np.argsort(bgm.means_[:, 0])
    em_order = np.argsort(em.means_[:, 0])
    np.testing.assert_allclose(bgm.means_[order], em.means_[em_order], atol=0.1)
    np.testing.assert_allclose(bgm.weights_[order], em.weights_[em_order], atol=0.05)
    agree = (bgm.predict(scaled)[:, None] == np.argsort(order)[em.predict(scaled)][:, None]).mean()
    assert agree > 0.97
    assert bgm.fit_.posterior["locs"].shape[:2] == (1, 100)
    assert bgm.score(scaled) == pytest.approx(em.score(scaled), abs=0.05)
    with pytest.raises(ValueError, match="warmup_steps do\\(es\\) not apply to method='svi'"):
        BayesianGaussianMixture(2, warmup_steps=10).fit(scaled)
    with pytest.raises(ValueError, match="method must be 'svi' or 'mcmc'"):
        BayesianGaussianMixture(2, method="em").fit(scaled)


@pytest.mark.slow
def test_bayesian_mixture_by_mcmc_agrees_with_em(faithful):
    scaled = StandardScaler().fit_transform(faithful)
    em = GaussianMixture(2, covariance_type="diag", random_state=0).fit(scaled)
    bgm = BayesianGaussianMixture(
        2,
        covariance_type="diag",
        method="mcmc",
        num_samples=200,
        warmup_steps=200,
        num_chains=2,
        random_state=0,
    ).fit(scaled)
    order, em_order = np.argsort(bgm.means_[:, 0]), np.argsort(em.means_[:, 0])
    np.testing.assert_allclose(bgm.means_[order], em.means_[em_order], atol=0.1)
    assert bgm.fit_.posterior["locs"].shape == (2, 200, 2, 2)


# -------------------------------------------------------------------------- saving (skops)
@quiet_convergence
def test_skops_round_trip_trusts_only_the_estimator_classes(tmp_path, faithful):
    sio = pytest.importorskip("skops.io")
    rng = np.random.default_rng(0)
    seqs = rng.normal(size=(80, 2))
    binary = (rng.uniform(size=(50, 5)) < 0.4).astype(float)
    codes = rng.integers(0, 3, (40, 2))
    fitted = [
        (GaussianMixture(2, random_state=0).fit(faithful), faithful, "score_samples"),
        (
            BayesianGaussianMixture(
                2, covariance_type="diag", num_steps=50, num_samples=10, random_state=0
            ).fit(faithful),
            faithful,
            "predict_proba",
        ),
        (GaussianHMM(2, n_iter=30, random_state=0).fit(seqs, [50, 30]), seqs, "predict_proba"),
        (CategoricalHMM(2, n_iter=30, random_state=0).fit(codes[:, :1]), codes[:, :1], "predict_proba"),
        (NaiveBayes().fit(codes, rng.integers(0, 2, 40)), codes, "predict_proba"),
        (RBM(3, n_iter=2, random_state=0).fit(binary), binary, "transform"),
    ]
    for est, X, method in fitted:
        path = tmp_path / f"{type(est).__name__}.skops"
        sio.dump(est, path)
        untrusted = sio.get_untrusted_types(file=path)
        assert untrusted == [f"probgen.sklearn.{type(est).__name__}"], untrusted
        loaded = sio.load(path, trusted=untrusted)
        assert type(loaded) is type(est) and isinstance(loaded.fit_, pg.Fit)
        np.testing.assert_array_equal(getattr(loaded, method)(X), getattr(est, method)(X))


# ------------------------------------------------------------------- scikit-learn optional
def test_probgen_imports_without_sklearn_and_the_module_says_what_to_install():
    code = (
        "import sys; sys.modules['sklearn'] = None\n"
        "import probgen, probgen.models, probgen.inference\n"
        "try:\n    import probgen.sklearn\nexcept ImportError as err:\n    print(err)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert "probgen.sklearn needs scikit-learn" in out.stdout and "probgen[sklearn]" in out.stdout


def test_tensor_inputs_are_accepted(faithful):
    est = GaussianMixture(2, random_state=0).fit(torch.as_tensor(faithful))
    np.testing.assert_allclose(est.score_samples(torch.as_tensor(faithful)), est.score_samples(faithful))


def test_all_is_sorted_and_importable():
    import probgen.sklearn as module

    assert list(module.__all__) == sorted(module.__all__)
    assert all(hasattr(module, name) for name in module.__all__)


@quiet_convergence
def test_categorical_hmm_follows_the_conventions_its_skipped_checks_cover():
    """What the checks skipped for CategoricalHMM test, on one column of symbols."""
    X = np.random.default_rng(3).integers(0, 3, (60, 1))
    est = CategoricalHMM(2, n_iter=50, tol=1e-4, random_state=0)
    with pytest.raises(NotFittedError):
        est.predict(X)
    fitted = est.fit(X, [25, 35])
    assert fitted is est and est.n_features_in_ == 1 and est.get_params() == clone(est).get_params()
    again = clone(est).fit(X, [25, 35])
    np.testing.assert_array_equal(again.predict_proba(X), est.predict_proba(X))  # idempotent
    np.testing.assert_allclose(est.predict_proba(X.astype(np.float32)), est.predict_proba(X))
    with pytest.raises(ValueError, match="NaN"):
        CategoricalHMM(2).fit(np.where(np.arange(60)[:, None] == 5, np.nan, X))
    with pytest.raises(ValueError, match="X has 2 features, but CategoricalHMM is expecting 1"):
        est.predict(np.column_stack([X, X]))
    with pytest.raises(ValueError, match="symbol 7"):
        est.predict(np.array([[0], [7]]))
    with pytest.raises(ValueError, match="Negative values"):
        CategoricalHMM(2).fit(-X - 1)
