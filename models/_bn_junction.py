"""Exact inference on a discrete Bayesian network by message passing on a junction tree.

The moral graph is triangulated by greedy elimination (min-fill, min-weight and weighted
min-fill orders are all tried, the one with the smallest total clique table kept), its elimination cliques are joined into
a tree (non-maximal cliques merged into their neighbours, the trees of a disconnected graph linked
by empty separators) and each CPD is assigned to a clique holding its family: :func:`compile_tree`,
once per network (kept in :attr:`Network.plans`).

Propagation is Hugin's: a collect pass multiplies each clique's upward message into its parent, a
distribute pass gives each clique ``up * (parent marginal on the separator) / (its upward
message)``.  Distribution is lazy (only the cliques a query reads, and the path to them), and the
calibration of one CPD set and evidence assignment is kept for the next query with the same
evidence (:class:`Calibration`).  Every table carries a leading batch axis: a dict of evidence
slices the tables (its variables leave every clique, size 1 batch) while evidence rows enter as
one-hot factors ``(B, card)`` (ones where missing), so a batch of rows is one pass.  MAP/MPE runs
max-product on the same tree in log space with backtracking.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import networkx as nx
import torch
from torch import Tensor

from probgen.models._bn_network import Network

__all__ = [
    "MAX_CLIQUE",
    "Calibration",
    "JunctionTree",
    "calibrate",
    "check_size",
    "clear_cache",
    "compile_tree",
    "mpe",
    "row_chunk",
]

_DTYPE = torch.float64
#: largest clique table (entries, one evidence row) the tree may hold: 2**27 float64 is 1 GiB
MAX_CLIQUE = 2**27
_ROW_BUDGET = 2**24  # batch rows x total clique entries per chunk of evidence rows (memory bound)
_CACHE = 8  # calibrations and clique potentials kept per network
_ONE_CLIQUE = 4096  # networks whose joint table is at most this large get a one-clique tree


@dataclass(frozen=True)
class JunctionTree:
    """A rooted junction tree of a network's moral graph (variables as node indices ``net.col``).

    Attributes
    ----------
    cliques : tuple of tuple of int
        Variables of each clique, ascending (every table's axes follow this global order).
    parent : tuple of int
        Parent clique of each clique, ``-1`` for the root.
    order : tuple of int
        Cliques children before parents (a post-order); the root is last.
    home : tuple of int
        Clique holding each node's family, where its CPD is multiplied in.
    total, largest : int
        Entries of all clique tables together, and of the largest one.
    heuristic : str
        Elimination heuristic that gave the tree (``"min-fill"``, ``"min-weight"``,
        ``"weighted min-fill"``, or ``"one clique"`` for a tiny network).
    """

    cliques: tuple[tuple[int, ...], ...]
    parent: tuple[int, ...]
    order: tuple[int, ...]
    home: tuple[int, ...]
    total: int
    largest: int
    heuristic: str


# ------------------------------------------------------------------------ triangulation
def _eliminate(adj: list[set[int]], cards: list[int], rule: str) -> list[tuple[int, set[int]]]:
    """Greedy elimination: ``(v, its neighbours when eliminated)`` per step.

    ``rule="weight"`` eliminates the node whose clique table is smallest; ``"fill"`` the one
    adding the fewest fill-in edges (ties by table size); ``"wfill"`` the one whose fill-in
    edges have the smallest sum of card products.  Scores live in a heap with lazy
    invalidation: eliminating ``x`` changes the weight of its neighbours only, and the fill of
    its neighbours and of their neighbours (new edges among ``x``'s neighbours).
    """
    adj = [set(a) for a in adj]
    logc = [math.log(c) for c in cards]
    alive = [True] * len(adj)
    version = [0] * len(adj)

    def score(v: int) -> tuple[float, float]:
        w = logc[v] + sum(logc[u] for u in adj[v])
        if rule == "weight":
            return (w, 0.0)
        nb = list(adj[v])
        if rule == "fill":
            fill = sum(1 for i, a in enumerate(nb) for b in nb[i + 1 :] if b not in adj[a])
            return (float(fill), w)
        # weighted fill: each new edge counts the table it could create (product of the cards)
        fill = sum(cards[a] * cards[b] for i, a in enumerate(nb) for b in nb[i + 1 :] if b not in adj[a])
        return (float(fill), w)

    heap = [(score(v), v, 0) for v in range(len(adj))]
    heapq.heapify(heap)
    steps: list[tuple[int, set[int]]] = []
    while heap:
        _, v, ver = heapq.heappop(heap)
        if not alive[v] or ver != version[v]:
            continue
        nb = adj[v]
        steps.append((v, set(nb)))
        alive[v] = False
        for u in nb:
            adj[u].discard(v)
            adj[u] |= nb - {u}
        touched = set(nb)
        if rule != "weight":
            for u in nb:
                touched |= adj[u]
        for u in touched:
            version[u] += 1
            heapq.heappush(heap, (score(u), u, version[u]))
    return steps


def _tree_from(
    steps: list[tuple[int, set[int]]], cards: list[int], n: int, fams: list[list[int]], name: str
) -> JunctionTree:
    """Join the elimination cliques into a tree: step ``i``'s clique hangs under the step that
    eliminates the first of its other variables (the running intersection property holds by
    construction); a clique contained in its parent's (or containing it) is merged into it."""
    pos = [0] * n
    for i, (v, _) in enumerate(steps):
        pos[v] = i
    sets = [{v} | nb for v, nb in steps]
    par = [min((pos[u] for u in nb), default=-1) for _, nb in steps]
    alias = list(range(len(steps)))

    def find(i: int) -> int:
        while alias[i] != i:
            alias[i] = alias[alias[i]]
            i = alias[i]
        return i

    for i in range(len(steps)):  # children have smaller steps than their parents
        p = par[i]
        if p >= 0 and (sets[i] <= sets[p] or sets[p] <= sets[i]):
            sets[p] = sets[p] | sets[i]
            alias[i] = p
    keep = [i for i in range(len(steps)) if alias[i] == i]
    index = {i: k for k, i in enumerate(keep)}
    parent = [index[find(par[i])] if par[i] >= 0 else -1 for i in keep]
    roots = [k for k, p in enumerate(parent) if p < 0]
    for r in roots[:-1]:  # a forest: the trees hang under one root by empty separators
        parent[r] = roots[-1]
    cliques = tuple(tuple(sorted(sets[i])) for i in keep)
    # rooted at a centre: the level-synchronous engine runs one step per level of the tree
    g = nx.Graph([(k, p) for k, p in enumerate(parent) if p >= 0])
    g.add_nodes_from(range(len(keep)))
    far = nx.single_source_shortest_path_length(g, 0)
    a = max(far, key=far.__getitem__)
    path = nx.single_source_shortest_path(g, a)
    longest = max(path.values(), key=len)  # a diameter; its middle is a centre of the tree
    root = longest[(len(longest) - 1) // 2]
    parent = [-1] * len(keep)
    for a, b in nx.bfs_edges(g, root):
        parent[b] = a
    children: list[list[int]] = [[] for _ in keep]
    for k, p in enumerate(parent):
        if p >= 0:
            children[p].append(k)
    order: list[int] = []
    stack = [(root, False)]
    while stack:  # iterative post-order (trees of big networks are deep)
        k, done = stack.pop()
        if done:
            order.append(k)
            continue
        stack.append((k, True))
        stack.extend((c, False) for c in children[k])
    home = tuple(index[find(min(pos[v] for v in fam))] for fam in fams)
    sizes = [math.prod(cards[v] for v in c) for c in cliques]
    return JunctionTree(cliques, tuple(parent), tuple(order), home, sum(sizes), max(sizes), name)


def compile_tree(net: Network) -> JunctionTree:
    """The junction tree of ``net`` (min-fill, min-weight or weighted min-fill elimination,
    the smallest total table; a single clique when the whole joint table is tiny, where calls cost more than
    entries), compiled once and kept in ``net.plans``."""
    tree = net.plans.get("junction")
    if tree is None:
        moral = nx.moral_graph(net.dag)
        col = net.col
        adj: list[set[int]] = [set() for _ in net.nodes]
        for a, b in moral.edges:
            adj[col[a]].add(col[b])
            adj[col[b]].add(col[a])
        cards = [net.card(v) for v in net.nodes]
        joint = math.prod(cards)
        if joint <= _ONE_CLIQUE:  # a tiny network: one table of everything, no messages at all
            tree = JunctionTree(
                (tuple(range(len(cards))),), (-1,), (0,), (0,) * len(cards), joint, joint, "one clique"
            )
            net.plans["junction"] = tree
            return tree
        fams = [[col[v] for v in net.parents[n] + [n]] for n in net.nodes]
        trees = [
            _tree_from(_eliminate(adj, cards, rule), cards, len(cards), fams, name)
            for rule, name in (("fill", "min-fill"), ("weight", "min-weight"), ("wfill", "weighted min-fill"))
        ]
        tree = min(trees, key=lambda t: (t.total, t.largest))
        net.plans["junction"] = tree
    return tree


def check_size(net: Network, tree: JunctionTree, limit: int = MAX_CLIQUE) -> None:
    """Refuse a tree whose largest clique table is over ``limit`` entries, before any table is built."""
    if tree.largest > limit:
        big = max(tree.cliques, key=lambda c: math.prod(net.card(net.nodes[v]) for v in c))
        raise ValueError(
            f"exact inference on this network needs a junction-tree clique of {tree.largest:,} entries "
            f"({len(big)} variables; limit {limit:,}) and {tree.total:,} entries in all; it is too "
            "large to answer exactly.  Add evidence, or query a smaller network."
        )


def clear_cache(net: Network) -> None:
    """Forget the calibrations and clique potentials kept on ``net`` (the tree stays)."""
    net.plans.pop("kept", None)


def _recall(net: Network, key: tuple) -> Any:
    """What :func:`_remember` kept under ``key``, or None."""
    kept = net.plans.get("kept")
    return None if kept is None else kept.get(key)


def _remember(net: Network, key: tuple, value: object) -> None:
    """Keep ``value`` under ``key`` (in ``net.plans["kept"]``), dropping the oldest entry of its
    kind (``key[0]``) past ``_CACHE``."""
    kept = net.plans.setdefault("kept", {})
    same = [k for k in kept if k[0] == key[0]]
    for k in same[: max(0, len(same) - _CACHE + 1)]:
        kept.pop(k, None)
    kept[key] = value


def _cpd_key(net: Network, cpds: Mapping[str, Tensor]) -> tuple:
    """Identity of a CPD set: storage, version and layout of each tensor (the cache entry keeps
    the tensors alive, so an address cannot be reused while it is cached)."""
    return tuple(
        (t.data_ptr(), t._version, tuple(t.shape), tuple(t.stride())) for t in (cpds[n] for n in net.nodes)
    )


# ------------------------------------------------------------------------- potentials
def _potentials(net: Network, tree: JunctionTree, cpds: Mapping[str, Tensor]) -> list[Tensor]:
    """Each clique's table ``(1, *cards)``: the product of the CPDs assigned to it (kept per CPD set)."""
    key = ("potentials", _cpd_key(net, cpds))
    hit = _recall(net, key)
    if hit is not None:
        return hit[0]
    plan = net.plans.get("potential-plan")
    if plan is None:
        # per clique: (node, permutation of its CPD axes into the clique's order, broadcast shape)
        plan = []
        for i, c in enumerate(tree.cliques):
            items = []
            for j, n in enumerate(net.nodes):
                if tree.home[j] != i:
                    continue
                fam = [net.col[v] for v in net.parents[n] + [n]]
                perm = sorted(range(len(fam)), key=fam.__getitem__)
                shape = (1,) + tuple(net.card(net.nodes[v]) if v in fam else 1 for v in c)
                items.append((n, net.shape(n), None if perm == sorted(perm) else perm, shape))
            full = (1,) + tuple(net.card(net.nodes[v]) for v in c)
            plan.append((items, full, len(items) == 1 and items[0][3] == full))
        net.plans["potential-plan"] = plan
    out = []
    for items, full, whole in plan:
        t: Tensor | None = None
        for n, cpd_shape, perm, shape in items:
            f = cpds[n].reshape(cpd_shape)
            f = (f if perm is None else f.permute(perm)).reshape(shape)
            t = f if t is None else t * f
        if t is None:
            t = torch.ones(full, dtype=_DTYPE)
        elif not whole:  # a clique with variables no CPD of its own covers: broadcast them
            t = t.expand(full)
        out.append(t.contiguous())
    _remember(net, key, (out, [cpds[n] for n in net.nodes]))
    return out


@dataclass(frozen=True)
class _Plan:
    """Grouped shapes of the messages for one set of sliced (dict) evidence variables.

    Tables are stored flat, ``(B, entries)``.  For a message, a clique's axes are grouped into
    runs of separator and non-separator variables (all in the global order, so a separator's
    entries come out in the same order on both sides): summing a few merged axes is many times
    faster in torch than summing many small ones.
    """

    cliques: tuple[tuple[int, ...], ...]  # variables left in each clique
    index: tuple[tuple[int, ...] | None, ...]  # positions of sliced variables in each full clique
    sep: tuple[int, ...]  # entries of each clique's separator with its parent
    child: tuple[
        tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]], ...
    ]  # grouped shape, summed axes, broadcast
    parent: tuple[tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]], ...]  # the same in the parent
    best: dict[int, int]  # smallest clique holding each free variable
    where: dict[int, tuple[int, int, int]]  # that clique's entries before, of and after the variable


def _groups(
    c: tuple[int, ...], keep: set[int], card: list[int]
) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
    """``c``'s axes merged into runs of kept / summed variables: the grouped shape, the summed
    axes (counting the batch axis), and the kept part's broadcast shape."""
    shape: list[int] = []
    flags: list[bool] = []
    for v in c:
        k = v in keep
        if flags and flags[-1] == k:
            shape[-1] *= card[v]
        else:
            shape.append(card[v])
            flags.append(k)
    dims = tuple(j + 1 for j, f in enumerate(flags) if not f)
    return tuple(shape), dims, tuple(n if f else 1 for n, f in zip(shape, flags, strict=True))


def _plan(net: Network, tree: JunctionTree, sliced: frozenset[int]) -> _Plan:
    key = ("message-plan", sliced)
    plan = net.plans.get(key)
    if plan is not None:
        return plan
    card = [net.card(v) for v in net.nodes]
    red = tuple(tuple(v for v in c if v not in sliced) for c in tree.cliques)
    index = tuple(tuple(k for k, v in enumerate(c) if v in sliced) or None for c in tree.cliques)
    sep, child, parent = [], [], []
    for i, c in enumerate(red):
        p = tree.parent[i]
        s = set(c) & set(red[p]) if p >= 0 else set()
        sep.append(math.prod(card[v] for v in s))
        child.append(_groups(c, s, card))
        parent.append(_groups(red[p] if p >= 0 else (), s, card))
    best: dict[int, int] = {}
    size = [math.prod(card[v] for v in c) for c in red]
    for i, c in enumerate(red):
        for v in c:
            if v not in best or size[i] < size[best[v]]:
                best[v] = i
    where = {}
    for v, i in best.items():
        k = red[i].index(v)
        where[v] = (
            math.prod(card[u] for u in red[i][:k]),
            card[v],
            math.prod(card[u] for u in red[i][k + 1 :]),
        )
    plan = _Plan(red, index, tuple(sep), tuple(child), tuple(parent), best, where)
    net.plans[key] = plan
    return plan


def _sum(t: Tensor, dims: tuple[int, ...]) -> Tensor:
    return t.sum(dims) if dims else t  # ``sum(())`` would sum every axis


def _times(t: Tensor, shape: tuple[int, ...], f: Tensor, bcast: tuple[int, ...]) -> Tensor:
    """``t`` (flat, grouped as ``shape``) times ``f`` (flat separator) broadcast as ``bcast``."""
    out = t.reshape(-1, *shape) * f.reshape(-1, *bcast)
    return out.reshape(out.shape[0], -1)


class Calibration:
    """A junction tree after the collect pass, distributing lazily to the cliques asked for.

    Parameters
    ----------
    net, tree : Network, JunctionTree
    plan : _Plan
        Shapes for the sliced evidence variables.
    up : list of Tensor
        Each clique's table times its children's messages, flat ``(B, entries)``.
    msg : list of Tensor or None
        Each clique's message to its parent, flat ``(B, separator entries)``.
    """

    def __init__(
        self, net: Network, tree: JunctionTree, plan: _Plan, up: list[Tensor], msg: list[Tensor | None]
    ) -> None:
        self.net, self.tree, self.plan, self.up, self.msg = net, tree, plan, up, msg
        root = tree.order[-1]
        self.final: dict[int, Tensor] = {root: up[root]}
        self.z = up[root].sum(1)  # P(evidence) per row

    def belief(self, i: int) -> Tensor:
        """Clique ``i``'s calibrated table ``P(clique, evidence)``, flat ``(B, entries)``."""
        path = []
        j = i
        while j not in self.final:  # walk up to a calibrated ancestor, then distribute down
            path.append(j)
            j = self.tree.parent[j]
        plan = self.plan
        for c in reversed(path):
            shape, dims, _ = plan.parent[c]
            sep = _sum(self.final[self.tree.parent[c]].reshape(-1, *shape), dims).reshape(-1, plan.sep[c])
            m = self.msg[c]
            assert m is not None
            ratio = torch.nan_to_num_(sep / m, nan=0.0)  # 0/0 where a message is zero
            shape, _, bcast = plan.child[c]
            self.final[c] = _times(self.up[c], shape, ratio, bcast)
        return self.final[i]

    def marginal(self, v: int) -> Tensor:
        """``P(v, evidence)`` per row, ``(B, card)`` (unnormalised)."""
        before, card, after = self.plan.where[v]
        return self.belief(self.plan.best[v]).reshape(-1, before, card, after).sum((1, 3))

    def clique_table(self, i: int) -> Tensor:
        """Clique ``i``'s calibrated table with one axis per variable, ``(B, *cards)``."""
        net = self.net
        return self.belief(i).reshape(-1, *(net.card(net.nodes[v]) for v in self.plan.cliques[i]))

    def family(self, node: str, weights: Tensor) -> Tensor:
        """``sum_b weights_b P(family of node, evidence_b)`` as ``(n_configs, card)`` (no slicing)."""
        net = self.net
        fam = [net.col[v] for v in net.parents[node] + [node]]
        i = self.tree.home[net.col[node]]
        t = torch.tensordot(weights, self.clique_table(i), dims=([0], [0]))
        c = self.plan.cliques[i]
        t = _sum(t, tuple(k for k, v in enumerate(c) if v not in fam))
        kept = [v for v in c if v in fam]
        return t.permute([kept.index(v) for v in fam]).reshape(net.n_configs(node), net.card(node))


def _entered(
    net: Network, tree: JunctionTree, plan: _Plan, cpds: Mapping[str, Tensor], ev: Mapping[str, int]
) -> list[Tensor]:
    """Clique tables ``(1, entries)`` with the dict evidence sliced out."""
    codes = {net.col[k]: v for k, v in ev.items()}
    out = []
    for i, t in enumerate(_potentials(net, tree, cpds)):
        if plan.index[i] is not None:
            t = t[(slice(None),) + tuple(codes.get(v, slice(None)) for v in tree.cliques[i])]
        out.append(t.reshape(1, -1))
    return out


def calibrate(
    net: Network,
    cpds: Mapping[str, Tensor],
    ev: Mapping[str, int],
    rows: Tensor | None = None,
    *,
    cache: bool = True,
) -> Calibration:
    """Collect pass on ``net``'s tree given dict evidence ``ev`` (sliced) and, optionally,
    evidence ``rows`` (float codes ``(B, n_nodes)``, NaN where unobserved; one-hot factors).

    A dict-only calibration is kept for the next query with the same CPDs and evidence.
    """
    tree = compile_tree(net)
    check_size(net, tree)
    key = None
    if rows is None and cache:
        key = ("calibration", _cpd_key(net, cpds), tuple(sorted((net.col[k], v) for k, v in ev.items())))
        hit = _recall(net, key)
        if hit is not None:
            return hit[0]
    sliced = frozenset(net.col[k] for k in ev)
    plan = _plan(net, tree, sliced)
    up = _entered(net, tree, plan, cpds, ev)
    if rows is not None:
        miss = torch.isnan(rows)
        for j in range(rows.shape[1]):
            if j in sliced or bool(miss[:, j].all()):
                continue
            onehot = torch.nn.functional.one_hot(rows[:, j].nan_to_num(0.0).long(), net.card(net.nodes[j]))
            f = onehot.to(_DTYPE).masked_fill_(miss[:, j : j + 1], 1.0)
            i = plan.best[j]
            before, card, after = plan.where[j]
            up[i] = _times(up[i], (before, card, after), f, (1, card, 1))
    msg: list[Tensor | None] = [None] * len(up)
    for i in tree.order[:-1]:  # children before parents
        p = tree.parent[i]
        shape, dims, _ = plan.child[i]
        m = _sum(up[i].reshape(-1, *shape), dims).reshape(-1, plan.sep[i])
        msg[i] = m
        shape, _, bcast = plan.parent[i]
        up[p] = _times(up[p], shape, m, bcast)
    out = Calibration(net, tree, plan, up, msg)
    if key is not None:
        _remember(net, key, (out, [cpds[n] for n in net.nodes]))
    return out


def row_chunk(tree: JunctionTree, n: int) -> int:
    """Rows per batched pass (memory bound)."""
    return max(1, min(n, _ROW_BUDGET // max(tree.total, 1)))


# --------------------------------------------------------------------------------- MPE
def mpe(net: Network, cpds: Mapping[str, Tensor], ev: Mapping[str, int]) -> dict[str, int]:
    """Most probable assignment of every non-evidence node: max-product on the tree in log
    space (products of hundreds of CPD entries underflow), then backtracking from the root:
    each clique's upward table restricted to its separator's chosen states gives its other
    variables' states (the upward table already maximises everything below it)."""
    tree = compile_tree(net)
    check_size(net, tree)
    sliced = frozenset(net.col[k] for k in ev)
    plan = _plan(net, tree, sliced)
    up = [t.log() for t in _entered(net, tree, plan, cpds, ev)]  # zeros: -inf, never NaN below
    for i in tree.order[:-1]:
        p = tree.parent[i]
        shape, dims, _ = plan.child[i]
        t = up[i].reshape(-1, *shape)
        m = t.amax(dims) if dims else t
        shape, _, bcast = plan.parent[i]
        up[p] = (up[p].reshape(-1, *shape) + m.reshape(-1, *bcast)).reshape(1, -1)
    root = tree.order[-1]
    if not bool(torch.isfinite(up[root].max())):  # every assignment has probability zero
        raise ValueError(f"evidence {dict(ev)} has probability zero under the network.")
    assign: dict[int, int] = {}
    for i in reversed(tree.order):  # parents before children
        c = plan.cliques[i]
        if not c:
            continue
        t = up[i].reshape(*(net.card(net.nodes[v]) for v in c))
        t = t[tuple(assign[v] if v in assign else slice(None) for v in c)]
        free = [v for v in c if v not in assign]
        if not free:
            continue
        flat = int(t.reshape(-1).argmax())
        for v in reversed(free):
            flat, s = divmod(flat, net.card(net.nodes[v]))
            assign[v] = s
    return {net.nodes[v]: s for v, s in assign.items()}
