"""The per-leaf bookkeeping of the batched NUTS (:mod:`probgen.inference.nuts`), compiled.

Between two evaluations of the potential, a leaf of every chain's tree needs the second half of
its leapfrog step, its Hamiltonian, the divergence check, the multinomial choice of the proposal,
the running sum of momenta, the U-turn checks of every subtree the leaf completes and the first
half of the next leapfrog step: some 40 NumPy calls on arrays of a few dozen numbers, about
100 us a leaf, more than a small model's whole compiled potential.  NumPy and PyTorch have no
fused form of it, so it is written here once as plain loops over chains compiled by Numba
(``cache=True``: compiled once per machine, then loaded), about 5 us a leaf.  Rows are copied
in explicit loops, not slice assignments, and no helper is forced inline: Numba's generic array
assignment made the first compile 7.9 s against 3.1 s, for the same speed a leaf.

A state is one row ``[z | p | grad | pe | H]`` (``3 D + 2`` numbers per chain), as in
:func:`probgen.inference.nuts._transition`.  The inverse mass matrix is ``diag`` ``(C, D)`` when
``dense`` is false, else ``full`` ``(C, D, D)`` (the other argument is unused).
"""

from __future__ import annotations

import math

import numba
import numpy as np

__all__: list[str] = []

#: An energy error above this is a divergence (Stan's and NumPyro's threshold).
MAX_ENERGY_ERROR = 1000.0


@numba.njit(cache=True, nogil=True)
def _velocity_dot(
    c: int, p: np.ndarray, rho: np.ndarray, diag: np.ndarray, full: np.ndarray, dense: bool
) -> float:  # pragma: no cover - compiled
    """``p . M^-1 rho`` of chain ``c``."""
    D = p.shape[0]
    s = 0.0
    if dense:
        for i in range(D):
            v = 0.0
            for j in range(D):
                v += full[c, i, j] * rho[j]
            s += p[i] * v
    else:
        for i in range(D):
            s += p[i] * diag[c, i] * rho[i]
    return s


@numba.njit(cache=True, nogil=True)
def _turned(
    c: int,
    p_begin: np.ndarray,
    p_end: np.ndarray,
    rho: np.ndarray,
    diag: np.ndarray,
    full: np.ndarray,
    dense: bool,
) -> bool:  # pragma: no cover - compiled
    """The generalised no-U-turn criterion fails for a span beginning with momentum ``p_begin``,
    ending with ``p_end``, whose momenta sum to ``rho``."""
    return not (
        _velocity_dot(c, p_begin, rho, diag, full, dense) > 0
        and _velocity_dot(c, p_end, rho, diag, full, dense) > 0
    )


@numba.njit(cache=True, nogil=True)
def leaf(
    n: int,
    d: int,
    leaf_rows: np.ndarray,
    z1: np.ndarray,
    p_half: np.ndarray,
    pe1: np.ndarray,
    g1: np.ndarray,
    h0: np.ndarray,
    step: np.ndarray,
    active: np.ndarray,
    front: np.ndarray,
    sub_bad: np.ndarray,
    sub_w: np.ndarray,
    sub_rho: np.ndarray,
    sub_prop: np.ndarray,
    p_first: np.ndarray,
    pending: np.ndarray,
    n_steps: np.ndarray,
    sum_accept: np.ndarray,
    diverging: np.ndarray,
    uniform: np.ndarray,
    diag: np.ndarray,
    full: np.ndarray,
    dense: bool,
) -> bool:  # pragma: no cover - compiled
    """Finish leaf ``n`` of a subtree of depth ``d`` of every chain, and start leaf ``n + 1``.

    In: the positions ``z1`` ``(C, D)`` the potential was evaluated at, with the half-step
    momenta ``p_half`` that led there, the potential ``pe1`` ``(C,)`` and gradient ``g1``, each
    chain's signed step ``step`` ``(C,)``, ``uniform`` ``(C,)`` draws for the multinomial choice.
    Updated in place: the subtree's ``front`` state, ``sub_bad`` (turned or diverged), log weight
    ``sub_w``, momentum sum ``sub_rho``, proposal ``sub_prop``, first momentum ``p_first``
    (leaf 0), the pending left spans ``pending`` ``(d, 3, C, D)`` (first momentum, last momentum,
    sum), and the trajectory's ``n_steps``, ``sum_accept`` and ``diverging``.  ``leaf_rows`` is
    scratch ``(C, 3 D + 2)``.  Then ``z1`` and ``p_half`` are overwritten with the next leaf's
    positions and half-step momenta (a chain no longer extending stays where it is).

    Returns whether any chain extends to the next leaf.
    """
    C, D = z1.shape
    P, G, PE, H = D, 2 * D, 3 * D, 3 * D + 1
    W = leaf_rows.shape[1]  # a state row: 3 D + 2
    node_rho = np.empty(D, dtype=z1.dtype)
    node_begin = np.empty(D, dtype=z1.dtype)
    rho_tmp = np.empty(D, dtype=z1.dtype)
    p1v = np.empty(D, dtype=z1.dtype)
    any_live = False
    for c in range(C):
        live = active[c] and not sub_bad[c]
        half = 0.5 * step[c]
        row = leaf_rows[c]
        kinetic = 0.0
        for i in range(D):
            p1 = p_half[c, i] - half * g1[c, i]
            row[i] = z1[c, i]
            row[P + i] = p1
            p1v[i] = p1
            row[G + i] = g1[c, i]
            if not dense:
                kinetic += p1 * p1 * diag[c, i]
        if dense:
            kinetic = _velocity_dot(c, p1v, p1v, diag, full, dense)
        h1 = pe1[c] + 0.5 * kinetic
        row[PE] = pe1[c]
        row[H] = h1
        delta = h1 - h0[c]
        if math.isnan(delta):
            delta = math.inf
        div = live and not (delta <= MAX_ENERGY_ERROR and math.isfinite(h1))
        ok = live and not div
        if live:
            n_steps[c] += 1
            sum_accept[c] += math.exp(min(-delta, 0.0))
        if div:
            diverging[c] = True
        if ok:
            # multinomial sampling within the subtree: the new leaf with probability w / sum(w)
            w = sub_w[c]
            new_w = -delta if w == -math.inf else max(w, -delta) + math.log1p(math.exp(-abs(w + delta)))
            if uniform[c] < math.exp(-delta - new_w):
                for i in range(W):
                    sub_prop[c, i] = row[i]
            sub_w[c] = new_w
            for i in range(D):
                sub_rho[c, i] += row[P + i]
            for i in range(W):
                front[c, i] = row[i]
        if n == 0:
            for i in range(D):
                p_first[c, i] = front[c, P + i]
        # the U-turn checks of every subtree this leaf completes
        for i in range(D):
            node_begin[i] = p1v[i]
            node_rho[i] = p1v[i]
        turned = False
        for j in range(d):
            if (n >> j) & 1:
                sb, se, sr = pending[j, 0, c], pending[j, 1, c], pending[j, 2, c]
                if j == 0:  # two single states: the extra checks are the merged one
                    for i in range(D):
                        rho_tmp[i] = sr[i] + p1v[i]
                    now = _turned(c, sb, p1v, rho_tmp, diag, full, dense)
                else:  # Stan's three checks: the merged span and each span extended by one state
                    for i in range(D):
                        rho_tmp[i] = sr[i] + node_rho[i]
                    now = _turned(c, sb, p1v, rho_tmp, diag, full, dense)
                    for i in range(D):
                        rho_tmp[i] = sr[i] + node_begin[i]
                    now = now or _turned(c, sb, node_begin, rho_tmp, diag, full, dense)
                    for i in range(D):
                        rho_tmp[i] = node_rho[i] + se[i]
                    now = now or _turned(c, se, p1v, rho_tmp, diag, full, dense)
                turned = turned or now
                for i in range(D):
                    node_begin[i] = sb[i]
                    node_rho[i] += sr[i]
            else:
                for i in range(D):
                    pending[j, 0, c, i] = node_begin[i]
                    pending[j, 1, c, i] = p1v[i]
                    pending[j, 2, c, i] = node_rho[i]
                break
        if div or (ok and turned):
            sub_bad[c] = True
        # the first half of the next leapfrog step, from the front
        nxt = active[c] and not sub_bad[c]
        any_live = any_live or nxt
        for i in range(D):
            ph = front[c, P + i] - half * front[c, G + i]
            p_half[c, i] = ph
            if nxt:
                if dense:
                    v = 0.0
                    for j in range(D):
                        v += full[c, i, j] * (front[c, P + j] - half * front[c, G + j])
                    z1[c, i] = front[c, i] + step[c] * v
                else:
                    z1[c, i] = front[c, i] + step[c] * diag[c, i] * ph
            else:
                z1[c, i] = front[c, i]
    return any_live


@numba.njit(cache=True, nogil=True)
def subtree_start(
    uniform: np.ndarray,
    eps: np.ndarray,
    done: np.ndarray,
    left: np.ndarray,
    right_end: np.ndarray,
    depth: np.ndarray,
    right: np.ndarray,
    step: np.ndarray,
    front: np.ndarray,
    p_far: np.ndarray,
    p_near: np.ndarray,
    sub_w: np.ndarray,
    sub_rho: np.ndarray,
    sub_prop: np.ndarray,
    sub_bad: np.ndarray,
    p_first: np.ndarray,
    z1: np.ndarray,
    p_half: np.ndarray,
    diag: np.ndarray,
    full: np.ndarray,
    dense: bool,
) -> None:  # pragma: no cover - compiled
    """Start a doubling of every chain still extending (``done`` false): its direction (right
    when ``uniform < 0.5``), signed ``step``, the ``front`` it extends from, the far and near
    momenta of the trajectory so far, the subtree's accumulators reset, and the first leaf's
    positions ``z1`` and half-step momenta ``p_half`` (a finished chain stays put)."""
    C, D = z1.shape
    P, G = D, 2 * D
    W = front.shape[1]
    for c in range(C):
        active = not done[c]
        if active:
            depth[c] += 1
        right[c] = uniform[c] < 0.5
        step[c] = eps[c] if right[c] else -eps[c]
        src, far = (right_end, left) if right[c] else (left, right_end)
        for i in range(W):
            front[c, i] = src[c, i]
            sub_prop[c, i] = src[c, i]
        for i in range(D):
            p_far[c, i] = far[c, P + i]
            p_near[c, i] = src[c, P + i]
            p_first[c, i] = src[c, P + i]
            sub_rho[c, i] = 0.0
        sub_w[c] = -math.inf
        sub_bad[c] = False
        half = 0.5 * step[c]
        for i in range(D):
            p_half[c, i] = front[c, P + i] - half * front[c, G + i]
        for i in range(D):
            if not active:
                z1[c, i] = front[c, i]
            elif dense:
                v = 0.0
                for j in range(D):
                    v += full[c, i, j] * p_half[c, j]
                z1[c, i] = front[c, i] + step[c] * v
            else:
                z1[c, i] = front[c, i] + step[c] * diag[c, i] * p_half[c, i]


@numba.njit(cache=True, nogil=True)
def subtree_end(
    uniform: np.ndarray,
    done: np.ndarray,
    right: np.ndarray,
    sub_bad: np.ndarray,
    sub_w: np.ndarray,
    sub_prop: np.ndarray,
    sub_rho: np.ndarray,
    front: np.ndarray,
    p_far: np.ndarray,
    p_near: np.ndarray,
    p_first: np.ndarray,
    log_w: np.ndarray,
    proposal: np.ndarray,
    left: np.ndarray,
    right_end: np.ndarray,
    rho: np.ndarray,
    diag: np.ndarray,
    full: np.ndarray,
    dense: bool,
) -> bool:  # pragma: no cover - compiled
    """Merge every chain's finished subtree into its trajectory: the proposal moves to the
    subtree's with probability ``min(1, w_subtree / w_old)`` (biased progressive sampling, drawn
    with ``uniform``), the trajectory's end and momentum sum extend, and a chain whose subtree
    turned or diverged, or whose whole trajectory now turns (Stan's three checks), is ``done``.

    Returns whether every chain is done."""
    C, D = front.shape[0], p_far.shape[1]
    P = D
    W = front.shape[1]
    rho_tmp = np.empty(D, dtype=rho.dtype)
    p_end = np.empty(D, dtype=rho.dtype)
    all_done = True
    for c in range(C):
        valid = not done[c] and not sub_bad[c]
        if valid:
            if uniform[c] < math.exp(min(sub_w[c] - log_w[c], 0.0)):
                for i in range(W):
                    proposal[c, i] = sub_prop[c, i]
            a, b = log_w[c], sub_w[c]
            log_w[c] = max(a, b) + math.log1p(math.exp(-abs(a - b)))
            end = right_end if right[c] else left
            for i in range(W):
                end[c, i] = front[c, i]
        # the whole trajectory (old span, then the new subtree) checked as Stan 2.x merges spans
        for i in range(D):
            p_end[i] = front[c, P + i]
            rho_tmp[i] = rho[c, i] + sub_rho[c, i]
        turned = _turned(c, p_far[c], p_end, rho_tmp, diag, full, dense)
        for i in range(D):
            rho_tmp[i] = rho[c, i] + p_first[c, i]
        turned = turned or _turned(c, p_far[c], p_first[c], rho_tmp, diag, full, dense)
        for i in range(D):
            rho_tmp[i] = sub_rho[c, i] + p_near[c, i]
        turned = turned or _turned(c, p_near[c], p_end, rho_tmp, diag, full, dense)
        if valid:
            for i in range(D):
                rho[c, i] += sub_rho[c, i]
        if not valid or turned:
            done[c] = True
        all_done = all_done and done[c]
    return all_done
