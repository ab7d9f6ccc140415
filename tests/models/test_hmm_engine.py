"""The HMM engine alone, against brute force over every state path on tiny problems.

Each problem is small enough to list all ``K ** T`` paths of every sequence: the forward pass must
give the log-sum-exp of their joint log-probabilities, forward-backward the posterior marginals
and expected transition counts, Viterbi the best path and its score.  Small block lengths
(``L`` of 1, 2, 3 steps) cut even these sequences into many blocks, so the chaining and the
correction rounds of the blocked scans run too.  Tolerances: 1e-10 relative on log-likelihoods
and scores, 1e-10 absolute on probabilities and counts; identical paths.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from probgen.models._hmm_engine import _forward_backward, _scale_log_emission
from probgen.models._hmm_layout import SequenceData, _layout, _padded_length
from probgen.models._hmm_viterbi import _viterbi, _ViterbiEmission

F64 = torch.float64


# ------------------------------------------------------------------------------ problems
def _problem(K: int, lengths: list[int], seed: int, *, forbidden: bool = False, symbols: int = 0):
    """Random chain, and per-step log-emissions ``(N, T, K)`` (or symbols and a log table)."""
    rng = np.random.default_rng(seed)
    initial = rng.dirichlet(np.ones(K))
    transition = rng.dirichlet(np.ones(K), K)
    if forbidden and K > 1:  # a zero in every row but one, and an impossible first state
        transition[np.arange(K - 1), np.arange(1, K)] = 0.0
        transition /= transition.sum(1, keepdims=True)
        initial[-1] = 0.0
        initial /= initial.sum()
    T = max(lengths)
    if symbols:
        table = np.log(rng.dirichlet(np.ones(symbols), K))  # (K, S)
        codes = rng.integers(0, symbols, (len(lengths), T))
        log_e = table.T[codes]  # (N, T, K)
        return initial, transition, log_e, (table, codes)
    log_e = rng.normal(0.0, 2.0, (len(lengths), T, K))
    return initial, transition, log_e, None


def _brute_force(initial, transition, log_e, lengths):
    """Per sequence: log-likelihood, marginals (T, K), transition counts (K, K), best path and score."""
    K = len(initial)
    with np.errstate(divide="ignore"):
        log_init, log_trans = np.log(initial), np.log(transition)
    out = []
    for n, T in enumerate(lengths):
        paths = np.array(list(itertools.product(range(K), repeat=T)))  # (K^T, T)
        steps = np.arange(T)
        joint = log_init[paths[:, 0]] + log_e[n, steps, paths].sum(1)
        if T > 1:
            joint = joint + log_trans[paths[:, :-1], paths[:, 1:]].sum(1)
        total = np.logaddexp.reduce(joint)
        w = np.exp(joint - total)
        marg = np.zeros((T, K))
        for t in range(T):
            marg[t] = np.bincount(paths[:, t], weights=w, minlength=K)
        counts = np.zeros((K, K))
        for t in range(1, T):
            np.add.at(counts, (paths[:, t - 1], paths[:, t]), w)
        best = int(np.argmax(joint))
        out.append((total, marg, counts, paths[best], joint[best], np.sort(joint)[-2:]))
    return out


def _engine_forward_backward(initial, transition, log_e, lengths, L, method=None):
    lens = torch.tensor(lengths)
    Tp = _padded_length(max(lengths), L)
    lay = _layout(lens, Tp, L)
    x = torch.zeros((len(lengths), Tp, len(initial)), dtype=F64)
    x[:, : log_e.shape[1]] = torch.as_tensor(log_e)
    e, mx = _scale_log_emission(lay.to_blocks(x), lay)
    ll, gamma, xi = _forward_backward(
        e, mx, lay, torch.as_tensor(initial), torch.as_tensor(transition), posteriors=True, method=method
    )
    assert gamma is not None and xi is not None
    return ll.numpy(), lay.from_blocks(gamma).numpy(), xi.numpy()


def _engine_viterbi(initial, transition, log_e, lengths, L, table=None, merge=False):
    """Viterbi on blocks of ``L`` steps as given (chained), or merged as the engine prefers."""
    lens = torch.tensor(lengths)
    Tp = _padded_length(max(lengths), L)
    lay = _layout(lens, Tp, L)
    K = len(initial)
    if table is None:
        x = torch.zeros((len(lengths), Tp, K), dtype=F64)
        x[:, : log_e.shape[1]] = torch.as_tensor(log_e)
        em = _ViterbiEmission.from_array(lay.to_blocks(x).transpose(1, 2), lay)
    else:
        log_table, codes = table
        s = torch.zeros((len(lengths), Tp), dtype=torch.long)
        s[:, : codes.shape[1]] = torch.as_tensor(codes)
        em = _ViterbiEmission.from_table(torch.as_tensor(log_table), lay.to_blocks(s), lay)
    with np.errstate(divide="ignore"):
        log_init, log_trans = np.log(initial), np.log(transition)
    paths, scores = _viterbi(
        em,
        lay,
        torch.as_tensor(log_init),
        torch.as_tensor(log_trans),
        block_length=None if merge else lay.L,
    )
    return [paths[i, :T].numpy() for i, T in enumerate(lengths)], scores.numpy()


def _check_against_brute_force(K, lengths, L, seed, *, forbidden=False, symbols=0, method=None):
    initial, transition, log_e, table = _problem(K, lengths, seed, forbidden=forbidden, symbols=symbols)
    ref = _brute_force(initial, transition, log_e, lengths)
    ll, gamma, xi = _engine_forward_backward(initial, transition, log_e, lengths, L, method)
    np.testing.assert_allclose(ll, [r[0] for r in ref], rtol=1e-10)
    for n, T in enumerate(lengths):
        np.testing.assert_allclose(gamma[n, :T], ref[n][1], rtol=0, atol=1e-10)
        assert np.all(gamma[n, T:] == 0.0)  # padded steps carry no weight
    np.testing.assert_allclose(xi, sum(r[2] for r in ref), rtol=0, atol=1e-10)
    for merge in (False, True):  # blocks as given (chained), and merged as the engine prefers
        paths, scores = _engine_viterbi(initial, transition, log_e, lengths, L, table, merge)
        np.testing.assert_allclose(scores, [r[4] for r in ref], rtol=1e-10)
        for n, r in enumerate(ref):
            runner_up, best = r[5] if len(r[5]) == 2 else (-np.inf, r[5][-1])
            if best - runner_up > 1e-9:  # a unique best path: the engine must find it exactly
                np.testing.assert_array_equal(paths[n], r[3])


# --------------------------------------------------------------------------------- tests
LENGTH_SETS = [[1], [2], [6], [1, 4, 7, 2], [5, 5]]


METHODS = ["blocked", "sequential", "prefix-torch"]  # "prefix" picks one of the last two


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("K", [1, 2, 3])
@pytest.mark.parametrize("lengths", LENGTH_SETS, ids=lambda ls: "-".join(map(str, ls)))
@pytest.mark.parametrize("L", [None, 1, 2, 3])
def test_engine_equals_sums_and_maxima_over_every_path(K, lengths, L, method):
    _check_against_brute_force(K, lengths, L, seed=K * 100 + sum(lengths) + (L or 0), method=method)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("L", [None, 1, 3])
def test_forbidden_transitions_and_impossible_start(L, method):
    """Zeros in the chain: impossible paths contribute nothing and are never chosen."""
    _check_against_brute_force(3, [1, 6, 3, 7], L, seed=5, forbidden=True, method=method)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("L", [None, 2])
def test_viterbi_from_a_symbol_table(L, method):
    """Categorical emissions read from a (K, S) log table by symbol, as the HMM does."""
    _check_against_brute_force(3, [7, 1, 4], L, seed=6, symbols=4, method=method)


@pytest.mark.parametrize("method", METHODS)
def test_nearly_deterministic_chain_needs_several_correction_rounds(method):
    """A sticky chain forgets its start slowly: every block of one step is corrected in turn."""
    K, lengths = 2, [7, 3]
    initial, transition, log_e, _ = _problem(K, lengths, seed=7)
    transition = np.array([[1 - 1e-6, 1e-6], [1e-6, 1 - 1e-6]])
    log_e = log_e * 1e-3  # weak evidence: the chain, not the data, decides
    ref = _brute_force(initial, transition, log_e, lengths)
    ll, gamma, xi = _engine_forward_backward(initial, transition, log_e, lengths, 1, method)
    np.testing.assert_allclose(ll, [r[0] for r in ref], rtol=1e-10)
    np.testing.assert_allclose(gamma[0, :7], ref[0][1], atol=1e-10)
    np.testing.assert_allclose(xi, sum(r[2] for r in ref), atol=1e-10)
    _, scores = _engine_viterbi(initial, transition, log_e, lengths, 1)
    np.testing.assert_allclose(scores, [r[4] for r in ref], rtol=1e-10)


@settings(deadline=None, max_examples=40)
@given(
    K=st.integers(1, 3),
    lengths=st.lists(st.integers(1, 6), min_size=1, max_size=3),
    L=st.sampled_from([None, 1, 2, 4]),
    seed=st.integers(0, 2**16),
    method=st.sampled_from(METHODS),
)
def test_forward_pass_equals_the_sum_over_all_paths(K, lengths, L, seed, method):
    _check_against_brute_force(K, lengths, L, seed, method=method)


def test_block_layout_round_trips_and_marks_padding():
    lens = torch.tensor([5, 1, 3])
    Tp = _padded_length(5, 2)
    assert Tp == 6
    lay = _layout(lens, Tp, 2)
    assert (lay.N, lay.L, lay.Bs, lay.M) == (3, 2, 3, 9)
    x = torch.arange(3 * 6, dtype=F64).view(3, 6)
    assert torch.equal(lay.from_blocks(lay.to_blocks(x)), x)
    mask = lay.from_blocks(lay.mask)
    assert torch.equal(mask, torch.arange(6)[None, :] < lens[:, None])
    assert lay.first.tolist() == [True, False, False] * 3
    assert lay.last.tolist() == [False, False, True] * 3
    assert lay.empty.tolist() == [False, False, False, False, True, True, False, False, True]
    with pytest.raises(ValueError, match="whole blocks of 4 steps; got 6"):
        _layout(lens, 6, 4)


def test_sequence_data_unpads_its_sequences():
    values = torch.arange(12, dtype=F64).view(2, 3, 2)
    data = SequenceData(values, torch.tensor([3, 1]))
    assert len(data) == 2 and data.n_features == 2 and data.shape == (2, 3, 2)
    assert data.mask.tolist() == [[True, True, True], [True, False, False]]
    seqs = data.sequences()
    assert torch.equal(seqs[0], values[0]) and torch.equal(seqs[1], values[1, :1])


# ------------------------------------------------------------ the two forward-backward paths
def _both_paths(initial, transition, log_e, lengths):
    """Forward-backward of long problems by the blocked and the prefix scan, default blocks."""
    out = []
    for method in METHODS:
        lens = torch.tensor(lengths)
        Tp = _padded_length(max(lengths))
        lay = _layout(lens, Tp)
        x = torch.zeros((len(lengths), Tp, len(initial)), dtype=F64)
        x[:, : log_e.shape[1]] = torch.as_tensor(log_e)
        e, mx = _scale_log_emission(lay.to_blocks(x), lay)
        ll, gamma, xi = _forward_backward(
            e, mx, lay, torch.as_tensor(initial), torch.as_tensor(transition), method=method
        )
        ll_only, _, _ = _forward_backward(
            *_scale_log_emission(lay.to_blocks(x), lay),
            lay,
            torch.as_tensor(initial),
            torch.as_tensor(transition),
            posteriors=False,
            method=method,
        )
        assert gamma is not None and xi is not None
        np.testing.assert_array_equal(ll_only.numpy(), ll.numpy())
        out.append((ll.numpy(), lay.from_blocks(gamma).numpy(), xi.numpy()))
    return out


def _assert_paths_agree(initial, transition, log_e, lengths):
    (ll_b, g_b, xi_b), *prefix = _both_paths(initial, transition, log_e, lengths)
    for ll_p, g_p, xi_p in prefix:  # compiled sequential kernel and PyTorch prefix scan
        np.testing.assert_allclose(ll_p, ll_b, rtol=1e-10)
        np.testing.assert_allclose(g_p, g_b, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(xi_p, xi_b, rtol=1e-10)
        for n, T in enumerate(lengths):
            assert np.all(g_p[n, T:] == 0.0)
            np.testing.assert_allclose(g_p[n, :T].sum(1), 1.0, rtol=1e-12)
        np.testing.assert_allclose(xi_p.sum(), sum(lengths) - len(lengths), rtol=1e-10)


@pytest.mark.parametrize("sticky", [False, True], ids=["mixing", "sticky"])
@pytest.mark.parametrize("K", [2, 4])
def test_prefix_and_blocked_scans_agree_on_long_chains(K, sticky):
    """3000 steps; sticky chains (0.999 on the diagonal) forget their start slowly."""
    lengths = [3000]
    initial, transition, log_e, _ = _problem(K, lengths, seed=11 + K)
    if sticky:
        transition = 0.999 * np.eye(K) + 0.001 * transition
    _assert_paths_agree(initial, transition, log_e, lengths)


def test_blocked_scan_with_hundreds_of_blocks_meeting_at_different_steps():
    """Short blocks of a slowly mixing chain: the correction round drops the blocks that have met
    and carries on with the slow ones; the result still equals the prefix scans'."""
    lengths = [12000, 9000]
    initial, transition, log_e, _ = _problem(3, lengths, seed=51)
    transition = 0.97 * np.eye(3) + 0.03 * transition
    log_e = log_e * 0.2  # weak evidence: the chain forgets its start slowly
    Tp = _padded_length(max(lengths))
    lay = _layout(torch.tensor(lengths), Tp)
    x = torch.zeros((len(lengths), Tp, 3), dtype=F64)
    x[:, : log_e.shape[1]] = torch.as_tensor(log_e)
    results = []
    for method, scan in (("blocked", 16), ("prefix-torch", None)):
        e, mx = _scale_log_emission(lay.to_blocks(x), lay)
        ll, gamma, xi = _forward_backward(
            e, mx, lay, torch.as_tensor(initial), torch.as_tensor(transition), method=method, scan_length=scan
        )
        results.append((ll.numpy(), lay.from_blocks(gamma).numpy(), xi.numpy()))
    (ll_b, g_b, xi_b), (ll_p, g_p, xi_p) = results
    np.testing.assert_allclose(ll_b, ll_p, rtol=1e-10)
    np.testing.assert_allclose(g_b, g_p, rtol=1e-9, atol=1e-11)
    np.testing.assert_allclose(xi_b, xi_p, rtol=1e-9)


def test_prefix_and_blocked_scans_agree_on_ragged_batches():
    """Sequences of lengths 1 to 700 padded together, one of them a single step."""
    lengths = [700, 1, 2, 65, 129, 300]
    initial, transition, log_e, _ = _problem(3, lengths, seed=21)
    _assert_paths_agree(initial, transition, log_e, lengths)


@pytest.mark.parametrize("lengths", [[1], [1, 1, 1]], ids=["one", "three"])
def test_prefix_scan_on_sequences_of_one_step(lengths):
    """One step: the marginals are the posterior of the first state, no transitions."""
    initial, transition, log_e, _ = _problem(3, lengths, seed=31)
    ref = _brute_force(initial, transition, log_e, lengths)
    ll, gamma, xi = _engine_forward_backward(initial, transition, log_e, lengths, None, "prefix")
    np.testing.assert_allclose(ll, [r[0] for r in ref], rtol=1e-12)
    np.testing.assert_allclose(gamma[:, 0], [r[1][0] for r in ref], atol=1e-14)
    assert np.all(xi == 0.0)


def test_prefix_scan_survives_extreme_emissions():
    """Log-densities 1e3 apart between states: a product of raw densities under/overflows."""
    K, lengths = 3, [2000, 500]
    initial, transition, log_e, _ = _problem(K, lengths, seed=41)
    rng = np.random.default_rng(42)
    log_e = log_e - 1e3 * rng.integers(0, 2, log_e.shape) - 5e2  # whole steps near exp(-1500)
    _assert_paths_agree(initial, transition, log_e, lengths)
    ll = _both_paths(initial, transition, log_e, lengths)[1][0]
    assert np.all(np.isfinite(ll)) and np.all(ll < -5e2 * 2000 * 0.9 * np.array([1, 0.25]))


def test_dispatch_prefers_the_prefix_scan_on_small_problems():
    from probgen.models._hmm_engine import _prefix_pays

    assert _prefix_pays(_layout(torch.tensor([300]), _padded_length(300)), 2)
    assert _prefix_pays(_layout(torch.tensor([300, 200]), _padded_length(300)), 3)
    assert not _prefix_pays(_layout(torch.tensor([100000]), _padded_length(100000)), 2)
    assert not _prefix_pays(_layout(torch.tensor([5000]), _padded_length(5000)), 8)


# ------------------------------------------------------------- block lengths and scratch buffers
@pytest.mark.parametrize("T", [1, 96, 97, 200, 1000, 16384, 16385, 100_000, 200_000])
def test_block_length_wastes_little_padding_and_is_stable(T):
    """Equal blocks just covering the sequence; the padded length maps to the same blocks."""
    from probgen.models._hmm_layout import _block_length

    L, Tp = _block_length(T), _padded_length(T)
    Bs = Tp // L
    assert Tp % L == 0 and T <= Tp
    assert _block_length(Tp) == L and _padded_length(Tp) == Tp
    if T <= 96:
        assert L == T
    elif T <= 16384:
        assert Bs == -(-T // 64) and Tp - T < Bs
    else:
        assert L % 64 == 0 and Bs == -(-T // 256) and Tp - T < 64 * Bs
    if T == 200:
        assert (L, Tp) == (50, 200)  # four blocks, no padding (a fixed 64 would pad to 256)


def test_scratch_buffers_do_not_leak_between_calls():
    """Reused internal buffers: results of one call survive the next, and match brute force."""
    probs = [_problem(3, [6, 2], seed=51), _problem(2, [5, 5, 1], seed=52)]
    lengths = [[6, 2], [5, 5, 1]]
    first = _engine_forward_backward(*probs[0][:3], lengths[0], 2, "blocked")
    kept = [x.copy() for x in first]
    second = _engine_forward_backward(*probs[1][:3], lengths[1], 1, "blocked")
    again = _engine_forward_backward(*probs[0][:3], lengths[0], 2, "blocked")
    for got, ref in zip(first, kept, strict=True):
        np.testing.assert_array_equal(got, ref)  # the second call did not write into the first's output
    for got, ref in zip(again, kept, strict=True):
        np.testing.assert_array_equal(got, ref)
    for (initial, transition, log_e, _), lens, (ll, _, xi) in zip(
        probs, lengths, [first, second], strict=True
    ):
        ref = _brute_force(initial, transition, log_e, lens)
        np.testing.assert_allclose(ll, [r[0] for r in ref], rtol=1e-10)
        np.testing.assert_allclose(xi, sum(r[2] for r in ref), atol=1e-10)
    # Viterbi after forward-backward and back: same scores as brute force each time
    for (initial, transition, log_e, _), lens in zip(probs + probs[:1], lengths + lengths[:1], strict=True):
        ref = _brute_force(initial, transition, log_e, lens)
        _, scores = _engine_viterbi(initial, transition, log_e, lens, 2)
        np.testing.assert_allclose(scores, [r[4] for r in ref], rtol=1e-10)


@pytest.mark.parametrize("merge", [False, True], ids=["as-given", "merged"])
@pytest.mark.parametrize("symbols", [0, 5], ids=["array", "table"])
@pytest.mark.parametrize("lengths", [[300, 97, 200, 131], [200, 200, 150, 3]], ids=["300", "200"])
def test_blocked_scans_on_medium_sequences_with_uneven_blocks(lengths, symbols, merge):
    """Blocks of 49 to 60 steps (not powers of two), Viterbi also merged to 200 steps (backtrace in
    4 sub-blocks of 50), against an exact log-space recursion; forward-backward re-blocked too."""
    K = 3
    initial, transition, log_e, table = _problem(K, lengths, seed=61, symbols=symbols)
    ll, gamma, xi = _engine_forward_backward(
        initial, transition, log_e, lengths, None, None if merge else "blocked"
    )
    paths, scores = _engine_viterbi(initial, transition, log_e, lengths, None, table, merge)
    la, lA = np.log(initial), np.log(transition)
    xi_ref = np.zeros((K, K))
    for n, T in enumerate(lengths):
        f = np.empty((T, K))
        b = np.zeros((T, K))
        v = np.empty((T, K))
        f[0] = v[0] = la + log_e[n, 0]
        for t in range(1, T):
            f[t] = np.logaddexp.reduce(f[t - 1][:, None] + lA, 0) + log_e[n, t]
            v[t] = (v[t - 1][:, None] + lA).max(0) + log_e[n, t]
        for t in range(T - 2, -1, -1):
            b[t] = np.logaddexp.reduce(lA + (log_e[n, t + 1] + b[t + 1])[None, :], 1)
        total = np.logaddexp.reduce(f[-1])
        np.testing.assert_allclose(ll[n], total, rtol=1e-10)
        np.testing.assert_allclose(gamma[n, :T], np.exp(f + b - total), atol=1e-10)
        for t in range(1, T):
            xi_ref += np.exp(f[t - 1][:, None] + lA + (log_e[n, t] + b[t])[None, :] - total)
        np.testing.assert_allclose(scores[n], v[-1].max(), rtol=1e-10)
        p = paths[n]  # the path's own log-probability equals the maximum (ties aside)
        own = la[p[0]] + lA[p[:-1], p[1:]].sum() + log_e[n, np.arange(T), p].sum()
        np.testing.assert_allclose(own, v[-1].max(), rtol=1e-10)
    np.testing.assert_allclose(xi, xi_ref, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize(
    ("lengths", "L", "scan_length"),
    [([6, 1, 4], 6, 2), ([6, 1, 4], 6, 3), ([6, 5], 2, 6), ([8, 3, 8], 2, 4), ([7, 7], 4, 1)],
    ids=["split-2", "split-3", "merge-whole", "merge-2", "split-1"],
)
def test_blocked_scan_in_other_blocks_equals_sums_over_every_path(lengths, L, scan_length):
    """The scan re-blocks the steps (blocks split or merged): same results, same layout out."""
    K = 2
    initial, transition, log_e, _ = _problem(K, lengths, seed=71 + L + scan_length)
    ref = _brute_force(initial, transition, log_e, lengths)
    lens = torch.tensor(lengths)
    Tp = _padded_length(max(lengths), L)
    lay = _layout(lens, Tp, L)
    x = torch.zeros((len(lengths), Tp, K), dtype=F64)
    x[:, : log_e.shape[1]] = torch.as_tensor(log_e)
    e, mx = _scale_log_emission(lay.to_blocks(x), lay)
    ll, gamma, xi = _forward_backward(
        e,
        mx,
        lay,
        torch.as_tensor(initial),
        torch.as_tensor(transition),
        method="blocked",
        scan_length=scan_length,
    )
    assert gamma is not None and xi is not None
    g = lay.from_blocks(gamma).numpy()
    np.testing.assert_allclose(ll.numpy(), [r[0] for r in ref], rtol=1e-10)
    for n, T in enumerate(lengths):
        np.testing.assert_allclose(g[n, :T], ref[n][1], atol=1e-10)
        assert np.all(g[n, T:] == 0.0)
    np.testing.assert_allclose(xi.numpy(), sum(r[2] for r in ref), atol=1e-10)


def test_scan_length_follows_the_cost_model():
    """Few states: short blocks; many states: longer ones; many short sequences: whole ones."""
    from probgen.models._hmm_engine import _scan_length

    long = _layout(torch.tensor([100_000]), _padded_length(100_000))
    assert _scan_length(long, 8) == 64 and _scan_length(long, 16) in (128, 256)
    many = _layout(torch.full((1000,), 200), _padded_length(200))
    assert _scan_length(many, 8) == 200  # a block per sequence: no correction round at all
    for lay, K in [(long, 2), (long, 32), (many, 3)]:
        Lp = _scan_length(lay, K)
        assert (lay.L % Lp == 0) or (Lp % lay.L == 0 and lay.Bs % (Lp // lay.L) == 0)
