"""Exact score-maximising DAGs for small networks: candidate parent sets, then a DP over node sets.

The search follows the two-stage dynamic programme of Silander and Myllymaki (2006):

1. For every node, score candidate parent sets (all of them up to a size limit, skipping those a
   bound proves useless), then turn them into ``best(v, C)``: the best score of ``v`` with its
   parents drawn from ``C``, for every set ``C`` of other nodes (a max over subsets, computed
   bit by bit in place).
2. ``F(S)``, the best score of a DAG over the node set ``S``, is ``max over sinks v in S of
   F(S - v) + best(v, S - v)``: some node of every DAG has no child inside it. Filling ``F`` layer
   by layer (by the number of nodes) and remembering the best sink of each set gives an optimal
   ordering, and the optimal parents follow from it.

Memory is ``n * 2**(n - 1)`` floats, so this serves networks of up to :data:`MAX_NODES` nodes.

For BIC and AIC a parent set ``T`` is never better than a subset ``S`` whose log-likelihood
deficit ``-LL(S)`` is below the extra penalty ``pen(T) - pen(S)``, since a log-likelihood is at
most 0 (de Campos and Ji, 2011); such ``T``, and all sets containing it, are not scored.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from probgen.models._structure_score import LocalScores

__all__ = ["MAX_NODES", "candidate_parent_sets", "exact_search"]

MAX_NODES = 20


def candidate_parent_sets(
    scores: LocalScores,
    allowed: Sequence[int],
    max_parents: int,
    budget: int,
    tick: Callable[[int], None] | None = None,
) -> tuple[list[dict[int, float]], int]:
    """Scored parent sets of every node, level by level (by size) while the budget lasts.

    Parameters
    ----------
    scores : LocalScores
    allowed : sequence of int
        Bit mask of the nodes allowed as parents, per node.
    max_parents : int
        Largest parent set scored.
    budget : int
        Most families scored at levels 2 and above; a level that would exceed it is not started.
    tick : callable, optional
        Called with the number of families scored by each batch (progress).

    Returns
    -------
    (list of dict, int)
        Per node, parent mask -> local score; and the size up to which every parent set not
        proved useless was scored (the search is exact over DAGs of that in-degree).
    """
    n = scores.n_nodes
    bounded = scores.score in ("bic", "aic")
    scored: list[dict[int, float]] = [{0: scores.local(v, 0)} for v in range(n)]
    frontier: list[list[int]] = [[0] for _ in range(n)]  # sets of the last level, per node
    spent, complete = 0, 0
    for size in range(1, max_parents + 1):
        # all sets of this size whose immediate subsets were scored and do not dominate them
        plans: list[list[tuple[int, list[int]]]] = []
        count = 0
        for v in range(n):
            plan = []
            r1 = int(scores.cards[v]) - 1
            for s in frontier[v]:
                top = s.bit_length()  # extend by nodes above the largest member: each set once
                ws = []
                for w in range(top, n):
                    if not allowed[v] >> w & 1:
                        continue
                    t = s | 1 << w
                    if _worth_scoring(scores, scored[v], v, t, r1, bounded):
                        ws.append(w)
                if ws:
                    plan.append((s, ws))
                    count += len(ws)
            plans.append(plan)
        if count == 0:
            return scored, max_parents  # nothing left to score: exact with no limit below max_parents
        if size >= 2 and spent + count > budget:
            break
        spent += count
        for v, plan in enumerate(plans):
            new = []
            groups = [(s, np.asarray(ws, dtype=np.int64)) for s, ws in plan]
            for (s, ws), values in zip(plan, scores.grouped(v, groups), strict=True):
                for w, value in zip(ws, values, strict=True):
                    scored[v][s | 1 << w] = float(value)
                    new.append(s | 1 << w)
            if tick is not None:
                tick(sum(len(ws) for _, ws in plan))
            frontier[v] = new
        complete = size
    return scored, complete


def _worth_scoring(
    scores: LocalScores, known: dict[int, float], v: int, t: int, r1: int, bounded: bool
) -> bool:
    """Whether parent set ``t`` of ``v`` may beat all its subsets (its immediate subsets are checked)."""
    if not bounded:
        return all((t & ~(1 << x)) in known for x in scores.members(t))
    pen_t = scores.per_param * scores.n_configs(t) * r1
    for x in scores.members(t):
        s = t & ~(1 << x)
        value = known.get(s)
        if value is None:
            return False  # a subset was proved useless, and so is every set containing it
        pen_s = scores.per_param * scores.n_configs(s) * r1
        if pen_t - pen_s > -(value + pen_s):  # -LL(s) < extra penalty: s beats t and all above it
            return False
    return True


def _layered(bits: int) -> tuple[np.ndarray, np.ndarray]:
    """All ``bits``-bit masks ordered by their number of members, and where each size starts."""
    masks = np.arange(1 << bits, dtype=np.int32)
    popcount = np.zeros(1 << bits, dtype=np.int32)
    for b in range(bits):
        popcount += (masks >> b) & 1
    order = np.argsort(popcount, kind="stable")
    return order.astype(np.int32), np.searchsorted(popcount[order], np.arange(bits + 2))


def exact_search(scores: LocalScores, scored: Sequence[dict[int, float]]) -> list[int]:
    """The parent masks of a DAG maximising the sum of local scores over the given candidates.

    Parameters
    ----------
    scores : LocalScores
        Only its number of nodes is read.
    scored : list of dict
        Per node, candidate parent mask -> local score (must contain the empty set).

    Returns
    -------
    list of int
        Parent bit mask of every node.
    """
    n = scores.n_nodes
    if n > MAX_NODES:
        raise ValueError(f"exact search handles at most {MAX_NODES} nodes; got {n}.")
    # sets of the other n - 1 nodes, by size: a set C of others and v itself form the set C + v
    others, starts = _layered(n - 1)
    best = []
    for v in range(n):
        low = (1 << v) - 1
        arr = np.full(1 << (n - 1), -np.inf)
        for mask, value in scored[v].items():
            c = (mask & low) | ((mask >> (v + 1)) << v)  # drop bit v: an index over the others
            arr[c] = max(arr[c], value)
        # best over subsets: fold in, bit by bit, the sets without that bit
        for b in range(n - 1):
            view = arr.reshape(-1, 2, 1 << b)
            np.maximum(view[:, 1, :], view[:, 0, :], out=view[:, 1, :])
        best.append(arr[others])  # in size order, so each layer below reads a contiguous slice
    # the same sets of others as masks over all n nodes, per v
    rest = [(others & ((1 << v) - 1)) | ((others >> v) << (v + 1)) for v in range(n)]
    f = np.full(1 << n, -np.inf)
    f[0] = 0.0
    for k in range(n):  # sets of k others plus their sink v: sets of k + 1 nodes, all F(k) known
        a, b = starts[k], starts[k + 1]
        for v in range(n):
            r = rest[v][a:b]
            sets = r | (1 << v)
            f[sets] = np.maximum(f[sets], f[r] + best[v][a:b])
    # read the optimal ordering back from the full set: a sink whose term attains F(S)
    position = np.empty_like(others)
    position[others] = np.arange(len(others))
    parents = [0] * n
    s = (1 << n) - 1
    while s:
        gaps = []
        for v in scores.members(s):
            rem = s ^ (1 << v)
            c = (rem & ((1 << v) - 1)) | ((rem >> (v + 1)) << v)
            gaps.append((float(f[s] - f[rem] - best[v][position[c]]), v))
        v = min(gaps)[1]
        s ^= 1 << v
        parents[v] = max(((m, val) for m, val in scored[v].items() if m & ~s == 0), key=lambda t: t[1])[0]
    return parents
