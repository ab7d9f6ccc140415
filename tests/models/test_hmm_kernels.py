"""The compiled CPU kernels at every state count: the few-state and many-state loop forms of
forward-backward and Viterbi, against hmmlearn and a plain log-space Viterbi recursion.

forward-backward takes one dot product per destination for up to 4 states and a sum of rows
above; Viterbi takes one destination at a time below 16 states and four sources per pass from
16 (with a remainder when 4 does not divide the count).  Each form is checked here on ragged
sequences, including a one-step one, and on exact ties.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from hmmlearn import hmm
from test_hmm_viterbi_speedpaths import _reference_viterbi  # the plain recursion, ties to argmax

from probgen.models import HiddenMarkovModel

pytestmark = pytest.mark.usefixtures("one_thread")

LENGTHS = [400, 37, 1, 250]
STATE_COUNTS = [2, 4, 5, 8, 15, 16, 18]  # both sides of every switch between loop forms


def _categorical(K: int, seed: int, symbols: int = 7) -> tuple[hmm.CategoricalHMM, HiddenMarkovModel, dict]:
    rng = np.random.default_rng(seed)
    ref = hmm.CategoricalHMM(K, init_params="", n_iter=1, implementation="scaling")
    ref.startprob_ = rng.dirichlet(np.ones(K))
    trans = rng.dirichlet(np.ones(K), K) * 0.4 + 0.6 * np.eye(K)
    ref.transmat_ = trans / trans.sum(1, keepdims=True)
    ref.emissionprob_ = rng.dirichlet(np.full(symbols, 0.5), K)
    model = HiddenMarkovModel(K, "categorical", n_symbols=symbols)
    params = {
        "initial": torch.tensor(ref.startprob_),
        "transition": torch.tensor(ref.transmat_),
        "probs": torch.tensor(ref.emissionprob_),
    }
    return ref, model, params


@pytest.mark.parametrize("K", STATE_COUNTS)
def test_categorical_e_step_scores_and_viterbi_follow_hmmlearn(K):
    ref, model, params = _categorical(K, seed=K)
    X, _ = ref.sample(sum(LENGTHS), random_state=K)
    seqs = np.split(X, np.cumsum(LENGTHS)[:-1])
    data = model.prepare_data(seqs)

    stats, ll = model.e_step(data, params)
    assert ll == pytest.approx(ref.score(X, LENGTHS), rel=1e-11)
    np.testing.assert_allclose(stats["post"].numpy(), ref.predict_proba(X, LENGTHS).sum(0), rtol=1e-10)
    ref_scores = [ref.decode(s)[0] for s in seqs]  # hmmlearn: one sequence at a time
    paths, scores = model.viterbi(data, params)
    np.testing.assert_allclose(scores.numpy(), ref_scores, rtol=1e-11)
    for s, p in zip(seqs, paths, strict=True):
        np.testing.assert_array_equal(p.numpy(), ref.decode(s)[1])

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # n_iter=1 convergence notice
        ref.fit(X, LENGTHS)
    new = model.m_step(data, stats)
    np.testing.assert_allclose(new["transition"].numpy(), ref.transmat_, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(new["probs"].numpy(), ref.emissionprob_, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(new["initial"].numpy(), ref.startprob_, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("K", STATE_COUNTS)
def test_gaussian_viterbi_in_place_follows_the_reference_recursion(K):
    """Gaussian emissions decode in place of their log-densities; the paths and scores equal a
    plain recursion over the same log-densities."""
    rng = np.random.default_rng(100 + K)
    model = HiddenMarkovModel(K, covariance_type="diag")
    trans = rng.dirichlet(np.ones(K), K) * 0.5 + 0.5 * np.eye(K)
    params = {
        "initial": torch.tensor(rng.dirichlet(np.ones(K))),
        "transition": torch.tensor(trans / trans.sum(1, keepdims=True)),
        "locs": torch.tensor(rng.normal(0, 2, (K, 2))),
        "scales": torch.tensor(rng.uniform(0.5, 2.0, (K, 2))),
    }
    seqs = [rng.normal(0, 2, (n, 2)) for n in LENGTHS]
    data = model.prepare_data(seqs)
    paths, scores = model.viterbi(data, params)
    log_init, log_trans = np.log(params["initial"].numpy()), np.log(params["transition"].numpy())
    for x, p, score in zip(seqs, paths, scores, strict=True):
        log_e = model._log_emission(torch.tensor(x)[None], params)[0].numpy()
        ref_path, ref_score = _reference_viterbi(log_init, log_trans, log_e)
        assert float(score) == pytest.approx(ref_score, rel=1e-12)
        np.testing.assert_array_equal(p.numpy(), ref_path)


@pytest.mark.parametrize("K", [3, 16, 18])
def test_viterbi_ties_go_to_the_lowest_state(K):
    """A uniform chain with a symbol every state emits alike: every path ties, and the decoder
    must return the one ``argmax`` picks at every step (state 0 throughout), while a symbol only
    the last state emits pins the end of the path."""
    model = HiddenMarkovModel(K, "categorical", n_symbols=2)
    probs = np.full((K, 2), 0.5)
    probs[-1] = [0.25, 0.75]
    params = {
        "initial": torch.full((K,), 1.0 / K, dtype=torch.float64),
        "transition": torch.full((K, K), 1.0 / K, dtype=torch.float64),
        "probs": torch.tensor(probs),
    }
    seq = np.array([0] * 30 + [1])
    (path,), (score,) = model.viterbi(model.prepare_data([seq]), params)
    ref_path, ref_score = _reference_viterbi(
        np.log(params["initial"].numpy()), np.log(params["transition"].numpy()), np.log(probs[:, seq].T)
    )
    assert float(score) == pytest.approx(ref_score, rel=1e-13)
    np.testing.assert_array_equal(path.numpy(), ref_path)
    assert path.numpy()[0] == 0 and path.numpy()[-1] == K - 1
