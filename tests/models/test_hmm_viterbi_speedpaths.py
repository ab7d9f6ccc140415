"""Viterbi's own blocking, state-major Gaussian emissions and backtrace guesses: exact answers.

The decoder lays long sequences out in blocks of about 128 steps, computes full/tied Gaussian
log-densities state-major, lets corrected blocks drop out as they meet their stored values and
guesses every backtrace block's end state from a few steps into the next block.  None of this may
change an answer: paths and scores are checked against hmmlearn, scipy and a plain log-space
Viterbi recursion (first maximiser on ties, as ``np.argmax``) on ragged sequences whose lengths
straddle block boundaries, on exact ties and on impossible transitions.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hmmlearn import hmm
from scipy.stats import multivariate_normal

from probgen.models import HiddenMarkovModel
from probgen.models._hmm_layout import _layout, _pad_time, _padded_length
from probgen.models._hmm_viterbi import _viterbi, _viterbi_block_length, _ViterbiEmission

F64 = torch.float64
RAGGED = [1000, 513, 129, 128, 257, 3, 1]  # around multiples of the 128-step blocks, and tiny ones


pytestmark = pytest.mark.usefixtures("one_thread")


def _reference_viterbi(
    log_init: np.ndarray, log_trans: np.ndarray, log_e: np.ndarray
) -> tuple[np.ndarray, float]:
    """Plain log-space Viterbi of one sequence ``log_e`` ``(T, K)``; ties go to the first state."""
    T, K = log_e.shape
    v = log_init + log_e[0]
    back = np.zeros((T, K), dtype=np.int64)
    for t in range(1, T):
        cand = v[:, None] + log_trans
        back[t] = np.argmax(cand, 0)
        v = cand[back[t], np.arange(K)] + log_e[t]
    path = np.empty(T, dtype=np.int64)
    path[-1] = int(np.argmax(v))
    for t in range(T - 1, 0, -1):
        path[t - 1] = back[t, path[t]]
    return path, float(v.max())


def _chain(K: int, stay: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    start = rng.dirichlet(np.ones(K))
    trans = rng.dirichlet(np.ones(K), K) * (1 - stay) + stay * np.eye(K)
    return start, trans / trans.sum(1, keepdims=True)


# ------------------------------------------------------------------------------- blocking
@pytest.mark.parametrize("T", [1, 2, 97, 200, 256, 257, 300, 1000, 4097, 100_000])
@pytest.mark.parametrize("K", [2, 16, 64])
def test_block_length_covers_every_length_with_little_padding(T, K):
    lengths = [L_ for L_ in (T, T // 2, 1) if L_ > 0]
    L = _viterbi_block_length(T, float(sum(lengths)) * K * K)
    if T <= 256:
        assert L == T  # whole sequences: no correction round at all
        return
    Bs = -(-T // L)
    assert L % 8 == 0 and 85 < L <= 256  # 128 to 256 steps, T / ceil(T / target) rounded up to 8
    assert Bs * L >= T and Bs * L - T < 8 * Bs  # padding under 8 steps per block
    assert _padded_length(T, L) == Bs * L
    # more arithmetic per step buys longer blocks (fewer correction steps per step of work)
    assert _viterbi_block_length(T, 0.0) <= L <= _viterbi_block_length(T, 1e15)
    assert _viterbi_block_length(T, 1e15) >= T / -(-T // 256)  # the longest blocks: about 256 steps


# ------------------------------------------------------------------------------- emissions
@pytest.mark.parametrize("tied", [False, True], ids=["full", "tied"])
def test_whitened_emissions_match_scipy_and_vanish_on_padded_steps(tied):
    rng = np.random.default_rng(0)
    K, d, lengths = 3, 3, [300, 41, 17]
    locs = rng.normal(0, 2, (K, d))
    a = rng.normal(0, 0.7, (1 if tied else K, d, d))
    covs = np.broadcast_to(a @ a.transpose(0, 2, 1) + 0.5 * np.eye(d), (K, d, d)).copy()
    x = rng.normal(0, 3, (len(lengths), max(lengths), d))
    L = 50
    Tp = _padded_length(max(lengths), L)
    lay = _layout(torch.tensor(lengths), Tp, L)
    vals = lay.to_blocks(_pad_time(torch.as_tensor(x), Tp, 0))
    Lc = torch.linalg.cholesky(torch.as_tensor(covs))
    W = torch.linalg.solve_triangular(Lc, torch.eye(d, dtype=F64).expand(K, d, d), upper=False)
    const = torch.log(torch.diagonal(Lc, dim1=-2, dim2=-1)).sum(-1) + 0.5 * d * np.log(2 * np.pi)
    shift = -(W @ torch.as_tensor(locs)[:, :, None])[..., 0]
    em = _ViterbiEmission.from_whitened(vals, W, shift, const, lay)
    got = lay.from_blocks(torch.stack([em.step(t) for t in range(L)]).transpose(1, 2)).numpy()  # (N, Tp, K)
    for n, T in enumerate(lengths):
        ref = np.stack([multivariate_normal(locs[k], covs[k]).logpdf(x[n, :T]) for k in range(K)], -1)
        np.testing.assert_allclose(got[n, :T], ref, rtol=1e-12, atol=1e-10)
        assert np.all(got[n, T:] == 0.0)


# ------------------------------------------------------------------------------- whole decoder
@pytest.mark.parametrize("case", ["full", "tied", "categorical"])
def test_ragged_long_sequences_match_hmmlearn(case):
    """Lengths on both sides of block boundaries; every sequence decoded exactly as hmmlearn does."""
    rng = np.random.default_rng(1)
    K = 5
    start, trans = _chain(K, 0.7, rng)
    if case == "categorical":
        ref = hmm.CategoricalHMM(K, init_params="")
        ref.emissionprob_ = rng.dirichlet(np.full(12, 0.4), K)
        model, emission = HiddenMarkovModel(K, "categorical", n_symbols=12), {"probs": ref.emissionprob_}
    else:
        ref = hmm.GaussianHMM(K, covariance_type=case, init_params="")
        ref.means_ = rng.normal(0, 1.5, (K, 2))
        a = rng.normal(0, 0.5, (1 if case == "tied" else K, 2, 2))
        cov = a @ a.transpose(0, 2, 1) + np.eye(2)
        ref.n_features = 2
        ref.covars_ = cov[0] if case == "tied" else cov
        model = HiddenMarkovModel(K, covariance_type=case)
        emission = {"locs": ref.means_, "covars": ref.covars_ if case == "full" else cov[0]}
    ref.startprob_, ref.transmat_ = start, trans
    X, _ = ref.sample(sum(RAGGED), random_state=2)
    seqs = np.split(X, np.cumsum(RAGGED)[:-1])
    data = model.prepare_data(seqs)
    params = model.init_params(data, init={"initial": start, "transition": trans, **emission})
    paths, scores = model.viterbi(data, params)
    for seq, path, score in zip(seqs, paths, scores.numpy(), strict=True):
        ref_score, ref_path = ref.decode(seq)
        np.testing.assert_array_equal(path.numpy(), ref_path)
        assert score == pytest.approx(ref_score, rel=1e-10)


def _categorical_problem(K: int, T: int, seed: int, *, duplicate: bool = False, forbidden: bool = False):
    rng = np.random.default_rng(seed)
    start, trans = _chain(K, 0.6, rng)
    probs = rng.dirichlet(np.full(6, 0.5), K)
    if duplicate:  # state 2 copies state 1: every path through 1 ties exactly with one through 2
        probs[2] = probs[1]
        trans[:, [1, 2]] = trans[:, [1, 1]] / 2
        trans[2] = trans[1]
        trans /= trans.sum(1, keepdims=True)
        start[[1, 2]] = start[1]
        start /= start.sum()
    if forbidden:  # a left-to-right band plus a return, and an impossible start
        trans = trans * (np.triu(np.ones((K, K))) - np.triu(np.ones((K, K)), 2))
        trans[-1, 0] = 0.3
        trans /= trans.sum(1, keepdims=True)
        start[-1] = 0.0
        start /= start.sum()
    symbols = rng.integers(0, 6, T)
    return start, trans, probs, symbols


def _decode_both(start, trans, probs, seqs):
    K, S = probs.shape
    model = HiddenMarkovModel(K, "categorical", n_symbols=S)
    data = model.prepare_data(list(seqs))
    params = {
        "initial": torch.as_tensor(start),
        "transition": torch.as_tensor(trans),
        "probs": torch.as_tensor(probs),
    }
    paths, scores = model.viterbi(data, params)
    with np.errstate(divide="ignore"):
        lA, li, lp = np.log(trans), np.log(start), np.log(probs)
    refs = [_reference_viterbi(li, lA, lp[:, s].T) for s in seqs]
    return [p.numpy() for p in paths], scores.numpy(), refs


def test_exact_ties_go_to_the_first_state():
    """Two identical states: every tie must resolve to the lower index, in every block."""
    start, trans, probs, symbols = _categorical_problem(4, 3000, seed=3, duplicate=True)
    seqs = [symbols[:2000], symbols[2000:2901], symbols[2901:]]
    paths, scores, refs = _decode_both(start, trans, probs, seqs)
    for path, score, (ref_path, ref_score) in zip(paths, scores, refs, strict=True):
        assert 1 in path and 2 not in path
        np.testing.assert_array_equal(path, ref_path)
        assert score == pytest.approx(ref_score, rel=1e-10)


def test_impossible_transitions_and_start_are_never_used():
    start, trans, probs, symbols = _categorical_problem(5, 2500, seed=4, forbidden=True)
    seqs = [symbols[:1700], symbols[1700:]]
    paths, scores, refs = _decode_both(start, trans, probs, seqs)
    for path, score, (ref_path, ref_score) in zip(paths, scores, refs, strict=True):
        assert np.all(trans[path[:-1], path[1:]] > 0) and start[path[0]] > 0
        np.testing.assert_array_equal(path, ref_path)
        assert score == pytest.approx(ref_score, rel=1e-10)


@pytest.mark.parametrize("L", [48, 64, 128])
def test_blocks_meeting_early_and_late_stay_exact(L):
    """Strong evidence in some stretches (blocks meet their stored values within a few steps of
    a correction) and almost none in others (they take many steps, or the whole block), on a
    sticky chain; blocks of L steps as given to the engine, checked against the plain recursion."""
    rng = np.random.default_rng(5)
    K, lengths = 4, [2400, 700]
    _, trans = _chain(K, 0.97, rng)
    log_init = np.log(np.full(K, 1 / K))
    log_e = rng.normal(0, 2.0, (len(lengths), max(lengths), K))
    weak = (np.arange(max(lengths)) // 150) % 3 == 1  # every third stretch of 150 steps
    log_e[:, weak] *= 1e-3
    Tp = _padded_length(max(lengths), L)
    lay = _layout(torch.tensor(lengths), Tp, L)
    x = torch.zeros((len(lengths), Tp, K), dtype=F64)
    x[:, : max(lengths)] = torch.as_tensor(log_e)
    em = _ViterbiEmission.from_array(lay.to_blocks(x).transpose(1, 2), lay)
    paths, scores = _viterbi(
        em, lay, torch.as_tensor(log_init), torch.as_tensor(np.log(trans)), block_length=L
    )
    for n, T in enumerate(lengths):
        ref_path, ref_score = _reference_viterbi(log_init, np.log(trans), log_e[n, :T])
        np.testing.assert_array_equal(paths[n, :T].numpy(), ref_path)
        assert float(scores[n]) == pytest.approx(ref_score, rel=1e-10)
