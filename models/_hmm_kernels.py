"""Compiled sequential kernels for hidden Markov models (float64, CPU): forward-backward and
the E-step of small models, and Viterbi decoding at every size.

On a few hundred steps, every vectorised formulation of forward-backward is bound by the cost of
dispatching its operations (some 60 NumPy or PyTorch calls for the parallel prefix scan, at a
few microseconds each), while the arithmetic is ``T K^2`` multiply-adds, microseconds.  PyTorch
and NumPy have no fused recursion for this, so the recursion is written here once, as a plain
loop compiled by Numba (``cache=True``: compiled once per machine, then loaded).  Large problems
keep the blocked PyTorch forward-backward of :mod:`probgen.models._hmm_engine`, which is
vectorised over blocks and faster there.  Viterbi keeps backpointers here, so its backtrace is a
lookup a step, where the blocked PyTorch decoder (for accelerators) recomputes them.

The forward pass is the rescaled one (filters normalised at every step, the scaling factors
giving the log-likelihood); the backward pass normalises its own messages at every step, and
the marginals and transition posteriors are normalised per step, so nothing under- or overflows
whatever the emissions.
"""

from __future__ import annotations

import math

import numba
import numpy as np

__all__: list[str] = []

_TINY = 1e-300


@numba.njit(cache=True, nogil=True)
def _forward_backward_one(
    rows: np.ndarray,
    row_of_step: np.ndarray,
    n: int,
    initial: np.ndarray,
    transition: np.ndarray,
    transition_t: np.ndarray,
    posteriors: bool,
    log_c: np.ndarray,
    gamma: np.ndarray,
    xi: np.ndarray,
    work: np.ndarray,
) -> None:  # pragma: no cover - compiled
    """Forward-backward of one sequence of ``n`` steps whose emission densities are
    ``rows[row_of_step[t]]`` (``K`` each: the sequence's own rows, or a categorical table's rows
    by symbol, so nothing of size ``n K`` is built for them).

    Writes the log scaling factors into ``log_c[:n]``, the state marginals into ``gamma[:n]``
    (the forward filters are kept there until the backward pass replaces them) and adds the
    expected transition counts, divided by the transition probabilities, to ``xi`` (the caller
    multiplies once by ``transition`` after all sequences).  ``transition_t`` is ``transition``
    transposed; ``work`` is ``(5, K)`` scratch (allocated once by the caller, not per sequence).
    """
    K = initial.shape[0]
    pred, v, beta, nxt, u = work[0], work[1], work[2], work[3], work[4]
    # Forward: alpha_t = (alpha_{t-1} A) * e_t / c_t, c_t its sum.  The product with A is taken
    # of the unnormalised v_{t-1} = c_{t-1} alpha_{t-1} and divided by c_{t-1} afterwards, so the
    # sum and the division run beside the product, not before it: the recursion's critical path
    # is one product a step.
    inv_prev = 1.0
    for t in range(n):
        if t == 0:
            for j in range(K):
                pred[j] = initial[j]
        else:
            if K <= 4:  # a few states: one dot product per destination, their chains overlap
                for j in range(K):
                    r = transition_t[j]
                    acc = v[0] * r[0]
                    for i in range(1, K):
                        acc += v[i] * r[i]
                    pred[j] = acc
            else:  # a sum of rows: the compiler vectorises the loop over destinations
                for j in range(K):
                    pred[j] = 0.0
                for i in range(K):
                    a = v[i]
                    for j in range(K):
                        pred[j] += a * transition[i, j]
        e = rows[row_of_step[t]]
        c = 0.0
        for j in range(K):
            x = pred[j] * inv_prev * e[j]
            v[j] = x
            c += x
        log_c[t] = math.log(c) if c > 0.0 else -math.inf
        inv_prev = 1.0 / max(c, _TINY)
        for j in range(K):
            gamma[t, j] = v[j] * inv_prev
    if not posteriors:
        return
    # Backward: beta_{t-1} = A (e_t beta_t) / c_t, which keeps sum_i alpha_i beta_i = 1 with no
    # sum on the critical path; the marginals and transition posteriors are still normalised
    # step by step, and where that sum leaves [1e-150, 1e150] (or c_t is zero) the messages are
    # normalised to sum one instead, so nothing under- or overflows.
    for j in range(K):
        beta[j] = 1.0
    for t in range(n - 1, -1, -1):
        norm = 0.0
        for j in range(K):
            norm += gamma[t, j] * beta[j]
        if t > 0:
            e = rows[row_of_step[t]]
            for j in range(K):
                u[j] = e[j] * beta[j]
            # nxt = A u: with a few states one dot product per source, otherwise a sum of
            # columns (contiguous rows of A^T, a loop the compiler vectorises)
            if K <= 4:
                for i in range(K):
                    r = transition[i]
                    acc = r[0] * u[0]
                    for j in range(1, K):
                        acc += r[j] * u[j]
                    nxt[i] = acc
            else:
                for i in range(K):
                    nxt[i] = 0.0
                for j in range(K):
                    uj = u[j]
                    for i in range(K):
                        nxt[i] += transition_t[j, i] * uj
            z = 0.0
            for i in range(K):
                z += gamma[t - 1, i] * nxt[i]
            if z > 0.0:
                inv_z = 1.0 / z
                for i in range(K):
                    w = gamma[t - 1, i] * inv_z
                    for j in range(K):
                        xi[i, j] += w * u[j]
        inv = 1.0 / norm if norm > 0.0 else 0.0
        for j in range(K):
            gamma[t, j] *= beta[j] * inv
        if t > 0:
            lc = log_c[t]
            if 1e-150 < norm < 1e150 and lc > -math.inf:
                scale = math.exp(-lc)
            else:
                total = 0.0
                for i in range(K):
                    total += nxt[i]
                scale = 1.0 / max(total, _TINY)
            for i in range(K):
                beta[i] = nxt[i] * scale


@numba.njit(cache=True, nogil=True)
def forward_backward(
    e: np.ndarray,
    lengths: np.ndarray,
    initial: np.ndarray,
    transition: np.ndarray,
    posteriors: bool,
    log_c: np.ndarray,
    gamma: np.ndarray,
    xi: np.ndarray,
) -> None:  # pragma: no cover - compiled; exercised through probgen.models._hmm_engine
    """Forward-backward of every sequence, written into the outputs.

    Parameters
    ----------
    e : ndarray
        ``(N, T, K)`` emission densities, each step divided by a positive constant (any).
    lengths : ndarray
        ``(N,)`` int64 steps of every sequence (``1 <= lengths <= T``).
    initial, transition : ndarray
        ``(K,)`` and ``(K, K)`` probabilities.
    posteriors : bool
        Also fill ``gamma`` and ``xi``.
    log_c : ndarray
        ``(N, T)`` out: log of the per-step scaling factors (zero on padded steps), whose sum
        over a sequence plus the log of the emission divisors is its log-likelihood.
    gamma : ndarray
        ``(N, T, K)`` out: state marginals (zero on padded steps).
    xi : ndarray
        ``(K, K)`` out: expected transition counts summed over sequences and steps.
    """
    log_c[:, :] = 0.0
    gamma[:, :, :] = 0.0
    xi[:, :] = 0.0
    transition_t = transition.T.copy()
    steps = np.arange(e.shape[1])
    work = np.empty((5, initial.shape[0]))
    for s in range(e.shape[0]):
        _forward_backward_one(
            e[s],
            steps,
            lengths[s],
            initial,
            transition,
            transition_t,
            posteriors,
            log_c[s],
            gamma[s],
            xi,
            work,
        )
    xi *= transition


@numba.njit(cache=True, nogil=True)
def categorical_e_step(
    symbols: np.ndarray,
    lengths: np.ndarray,
    probs: np.ndarray,
    initial: np.ndarray,
    transition: np.ndarray,
    gamma: np.ndarray,
    log_c: np.ndarray,
    counts: np.ndarray,
    xi: np.ndarray,
    start: np.ndarray,
) -> float:  # pragma: no cover - compiled; exercised through probgen.models.hmm
    """E-step of a categorical HMM, whole: the emission densities are read from the table by
    symbol (no ``T K`` emission array), the marginals of one sequence at a time live in the
    scratch ``gamma`` (``(T, K)``, ``log_c`` ``(T,)``) and are added to the symbol counts
    ``counts`` (``(S, K)``) and, at the first step, to ``start`` (``(K,)``); the transition
    counts go into ``xi``.  ``symbols`` is ``(N, T)``, ``probs`` ``(K, S)``.  Returns the total
    log-likelihood.
    """
    K = initial.shape[0]
    rows = probs.T.copy()  # (S, K): the emission densities of a symbol
    transition_t = transition.T.copy()
    counts[:, :] = 0.0
    xi[:, :] = 0.0
    start[:] = 0.0
    total = 0.0
    work = np.empty((5, K))
    for s in range(symbols.shape[0]):
        n = lengths[s]
        sym = symbols[s]
        _forward_backward_one(rows, sym, n, initial, transition, transition_t, True, log_c, gamma, xi, work)
        for t in range(n):
            total += log_c[t]
            row = counts[sym[t]]
            for k in range(K):
                row[k] += gamma[t, k]
        for k in range(K):
            start[k] += gamma[0, k]
    xi *= transition
    return total


@numba.njit(cache=True, nogil=True)
def categorical_forward_backward(
    symbols: np.ndarray,
    lengths: np.ndarray,
    probs: np.ndarray,
    initial: np.ndarray,
    transition: np.ndarray,
    posteriors: bool,
    log_c: np.ndarray,
    gamma: np.ndarray,
    log_lik: np.ndarray,
) -> None:  # pragma: no cover - compiled; exercised through probgen.models.hmm
    """Log-likelihood of every symbol sequence ``(N, T)`` into ``log_lik`` (``(N,)``) and, with
    ``posteriors``, the state marginals into ``gamma`` (``(N, T, K)``, zero on padded steps);
    without, ``gamma`` (``(1, T, K)``) and ``log_c`` (``(1, T)``) are one sequence's scratch.
    The emission densities are read from the ``(K, S)`` table by symbol."""
    K = initial.shape[0]
    rows = probs.T.copy()
    transition_t = transition.T.copy()
    xi = np.zeros((K, K))  # not asked for: the kernel adds to it regardless
    work = np.empty((5, K))
    for s in range(symbols.shape[0]):
        n = lengths[s]
        k = s if posteriors else 0
        g = gamma[k]
        lc = log_c[k]
        _forward_backward_one(
            rows, symbols[s], n, initial, transition, transition_t, posteriors, lc, g, xi, work
        )
        total = 0.0
        for t in range(n):
            total += lc[t]
        log_lik[s] = total
        if posteriors:
            g[n:] = 0.0


@numba.njit(cache=True, nogil=True)
def gaussian_diag_e_step(
    x: np.ndarray,
    lengths: np.ndarray,
    locs: np.ndarray,
    scales: np.ndarray,
    initial: np.ndarray,
    transition: np.ndarray,
    e: np.ndarray,
    log_c: np.ndarray,
    gamma: np.ndarray,
    xi: np.ndarray,
    moments: np.ndarray,
) -> float:  # pragma: no cover - compiled; exercised through probgen.models.hmm
    """E-step of a Gaussian HMM with diagonal covariances, whole, for small problems.

    Emission log-densities from ``x`` ``(N, T, d)``, ``locs`` and ``scales`` ``(K, d)``, each
    step rescaled by its largest density (into ``e``, ``(N, T, K)``), then
    :func:`forward_backward`, then the sufficient statistics into ``moments`` ``(K, 2 d + 2)``:
    the marginals' sums ``sum_t g_t``, ``sum_t g_t x_t``, ``sum_t g_t x_t ** 2`` and, last, the
    first-step marginals summed over sequences.  Returns the total log-likelihood.
    """
    N, T, d = x.shape
    K = locs.shape[0]
    const = np.empty(K)
    inv = np.empty((K, d))
    for k in range(K):
        s = 0.0
        for f in range(d):
            inv[k, f] = 1.0 / scales[k, f]
            s += math.log(scales[k, f])
        const[k] = -s - 0.5 * d * math.log(2.0 * math.pi)
    total = 0.0
    for n in range(N):
        for t in range(lengths[n]):
            top = -math.inf
            for k in range(K):
                q = 0.0
                for f in range(d):
                    z = (x[n, t, f] - locs[k, f]) * inv[k, f]
                    q += z * z
                v = const[k] - 0.5 * q
                e[n, t, k] = v
                if v > top:
                    top = v
            for k in range(K):
                e[n, t, k] = math.exp(e[n, t, k] - top)
            total += top
    forward_backward(e, lengths, initial, transition, True, log_c, gamma, xi)
    moments[:, :] = 0.0
    for n in range(N):
        for t in range(lengths[n]):
            total += log_c[n, t]
            for k in range(K):
                g = gamma[n, t, k]
                moments[k, 0] += g
                for f in range(d):
                    v = x[n, t, f]
                    moments[k, 1 + f] += g * v
                    moments[k, 1 + d + f] += g * v * v
        for k in range(K):
            moments[k, 2 * d + 1] += gamma[n, 0, k]
    return total


@numba.njit(cache=True, nogil=True, inline="always")
def _larger(a: float, b: float) -> float:  # pragma: no cover - compiled
    return a if a > b else b


@numba.njit(cache=True, nogil=True)
def _viterbi_one(
    rows: np.ndarray,
    row_of_step: np.ndarray,
    n: int,
    log_initial: np.ndarray,
    log_transition: np.ndarray,
    transition_t: np.ndarray,
    delta: np.ndarray,
    path: np.ndarray,
    best: np.ndarray,
) -> float:  # pragma: no cover - compiled
    """Viterbi on ``n`` steps whose emission log-densities are ``rows[row_of_step[t]]`` (``K``
    each: a sequence's own rows, or a table's rows by symbol, nothing of size ``n K`` built).

    The forward pass keeps every step's scores ``delta_t`` in ``delta`` (``(n, K)``; it may be
    ``rows`` itself when the rows are the sequence's own, each row is read before it is
    overwritten) and takes no argmax, only the best score of every destination: with fewer than
    16 states one destination at a time over a contiguous row of ``transition_t`` (the log
    transitions transposed, ``[to, from]``; the destinations' chains are independent and
    overlap), with more four sources per pass over the destinations (a loop the compiler
    vectorises, with a quarter of the dependent loads and stores of one source a pass).  The
    backtrace recomputes the one argmax it needs a step from the kept scores, the same sums
    compared in the same order, so ties still go to the lowest source state as ``argmax`` does.
    The path goes into ``path`` (``(n,)``); ``best`` is ``(K,)`` scratch.
    """
    K = log_initial.shape[0]
    first = rows[row_of_step[0]]
    for j in range(K):
        delta[0, j] = log_initial[j] + first[j]
    for t in range(1, n):
        prev = delta[t - 1]
        if K < 16:
            for j in range(K):
                r = transition_t[j]
                top = prev[0] + r[0]
                for i in range(1, K):
                    top = _larger(top, prev[i] + r[i])
                best[j] = top
        else:
            for i in range(0, K - 3, 4):
                d0, d1, d2, d3 = prev[i], prev[i + 1], prev[i + 2], prev[i + 3]
                r0, r1 = log_transition[i], log_transition[i + 1]
                r2, r3 = log_transition[i + 2], log_transition[i + 3]
                if i == 0:
                    for j in range(K):
                        best[j] = _larger(_larger(d0 + r0[j], d1 + r1[j]), _larger(d2 + r2[j], d3 + r3[j]))
                else:
                    for j in range(K):
                        best[j] = _larger(
                            best[j], _larger(_larger(d0 + r0[j], d1 + r1[j]), _larger(d2 + r2[j], d3 + r3[j]))
                        )
            for i in range(K - K % 4, K):
                d0, r0 = prev[i], log_transition[i]
                for j in range(K):
                    best[j] = _larger(best[j], d0 + r0[j])
        e = rows[row_of_step[t]]
        cur = delta[t]
        for j in range(K):
            cur[j] = best[j] + e[j]
    last = delta[n - 1]
    state = 0
    for j in range(1, K):
        if last[j] > last[state]:
            state = j
    score = last[state]
    path[n - 1] = state
    for t in range(n - 1, 0, -1):
        prev = delta[t - 1]
        r = transition_t[state]
        arg = 0
        top = prev[0] + r[0]
        for i in range(1, K):
            v = prev[i] + r[i]
            if v > top:
                top = v
                arg = i
        state = arg
        path[t - 1] = state
    return score


@numba.njit(cache=True, nogil=True)
def viterbi_dense(
    log_e: np.ndarray,
    lengths: np.ndarray,
    log_initial: np.ndarray,
    log_transition: np.ndarray,
    paths: np.ndarray,
    scores: np.ndarray,
) -> None:  # pragma: no cover - compiled
    """Viterbi of every sequence from emission log-densities ``(N, T, K)`` (finite: log 0
    floored), overwritten by the step scores; the paths go one after another into ``paths``
    (``(sum(lengths),)``)."""
    steps = np.arange(log_e.shape[1])
    best = np.empty(log_initial.shape[0])
    transition_t = log_transition.T.copy()
    start = 0
    for s in range(log_e.shape[0]):
        n = lengths[s]
        scores[s] = _viterbi_one(
            log_e[s],
            steps,
            n,
            log_initial,
            log_transition,
            transition_t,
            log_e[s],
            paths[start : start + n],
            best,
        )
        start += n


@numba.njit(cache=True, nogil=True)
def viterbi_table(
    symbols: np.ndarray,
    lengths: np.ndarray,
    log_table: np.ndarray,
    log_initial: np.ndarray,
    log_transition: np.ndarray,
    delta: np.ndarray,
    paths: np.ndarray,
    scores: np.ndarray,
) -> None:  # pragma: no cover - compiled
    """Viterbi of every symbol sequence ``(N, T)`` from a ``(K, S)`` table of log-probabilities;
    ``delta`` ``(T, K)`` float64 scratch for the step scores; the paths go one after another
    into ``paths`` (``(sum(lengths),)``)."""
    rows = log_table.T.copy()  # (S, K): the emission row of a symbol
    best = np.empty(log_initial.shape[0])
    transition_t = log_transition.T.copy()
    start = 0
    for s in range(symbols.shape[0]):
        n = lengths[s]
        scores[s] = _viterbi_one(
            rows,
            symbols[s],
            n,
            log_initial,
            log_transition,
            transition_t,
            delta,
            paths[start : start + n],
            best,
        )
        start += n
