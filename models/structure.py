"""Structure learning for discrete Bayesian networks: decomposable scores and hill climbing."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import networkx as nx
import numpy as np
from scipy.special import gammaln

from probgen.models._bn_network import Network, checked_states

__all__ = ["learn_structure", "structure_score"]


class _Scorer:
    """Decomposable BIC / BDeu local scores on complete data, cached per (node, parent set)."""

    def __init__(self, codes: np.ndarray, cards: list[int], names: list[str], score: str, ess: float) -> None:
        if score not in ("bic", "bdeu"):
            raise ValueError(f"score must be 'bic' or 'bdeu'; got {score!r}.")
        self.codes, self.cards, self.names, self.score, self.ess = codes, cards, names, score, ess
        self.cache: dict[tuple[int, frozenset[int]], float] = {}

    def local(self, node: int, parents: frozenset[int]) -> float:
        key = (node, parents)
        if key in self.cache:
            return self.cache[key]
        par = sorted(parents)
        r = self.cards[node]
        q = math.prod(self.cards[p] for p in par)
        cfg = np.zeros(len(self.codes), dtype=np.int64)
        for p in par:
            cfg = cfg * self.cards[p] + self.codes[:, p]
        counts = np.bincount(cfg * r + self.codes[:, node], minlength=q * r).reshape(q, r).astype(np.float64)
        row = counts.sum(1, keepdims=True)
        if self.score == "bic":
            with np.errstate(divide="ignore", invalid="ignore"):
                ll = np.where(counts > 0, counts * np.log(counts / np.where(row > 0, row, 1.0)), 0.0).sum()
            value = float(ll - 0.5 * math.log(len(self.codes)) * q * (r - 1))
        else:
            a_j, a_jk = self.ess / q, self.ess / (q * r)
            value = float(
                (gammaln(a_j) - gammaln(a_j + row[:, 0])).sum()
                + (gammaln(a_jk + counts) - gammaln(a_jk)).sum()
            )
        self.cache[key] = value
        return value


def _frame_codes(data: Any, states: Mapping[str, Sequence[Any]] | None) -> tuple[Network, np.ndarray]:
    """The edgeless network over ``data``'s columns (states given or learnt) and its complete rows' codes."""
    if not hasattr(data, "columns"):
        raise TypeError(
            f"data must be a pandas DataFrame with one column per node; got {type(data).__name__}."
        )
    g = nx.DiGraph()
    g.add_nodes_from(str(c) for c in data.columns)
    given = {n: checked_states(n, s) for n, s in (states or {}).items()}
    unknown = set(given) - set(g.nodes)
    if unknown:
        raise ValueError(f"states names node(s) {sorted(unknown)} that are not in the dag.")
    frame = data[list(g.nodes)]
    net = Network(g, given).learnt_from(frame)
    net.require_states()
    codes = net.code_frame(frame).numpy()
    complete = ~np.isnan(codes).any(1)
    if not complete.any():
        raise ValueError("structure learning needs complete rows; every row has a missing value.")
    return net, codes[complete].astype(np.int64)


def structure_score(
    dag: nx.DiGraph,
    data: Any,
    *,
    score: str = "bic",
    equivalent_sample_size: float = 10.0,
    states: Any = None,
) -> float:
    """BIC (``log L - k/2 log n``) or BDeu score of ``dag`` on the complete rows of ``data``."""
    net, codes = _frame_codes(data, states)
    idx = {n: i for i, n in enumerate(net.nodes)}
    sc = _Scorer(codes, [net.card(n) for n in net.nodes], net.nodes, score, equivalent_sample_size)
    return sum(sc.local(idx[n], frozenset(idx[p] for p in dag.predecessors(n))) for n in net.nodes)


def learn_structure(
    data: Any,
    *,
    score: str = "bic",
    max_indegree: int | None = None,
    tabu_length: int = 100,
    black_list: Sequence[tuple[str, str]] | None = None,
    white_list: Sequence[tuple[str, str]] | None = None,
    start: nx.DiGraph | None = None,
    max_iter: int = 1_000_000,
    epsilon: float = 1e-4,
    equivalent_sample_size: float = 10.0,
    states: Mapping[str, Sequence[Any]] | None = None,
) -> nx.DiGraph:
    """Hill climbing over DAGs (add, remove, reverse an edge) with a tabu list, as pgmpy's.

    Parameters
    ----------
    data : pandas.DataFrame
        One column per node; rows with a missing value are left out.
    score : {"bic", "bdeu"}, default "bic"
    max_indegree : int, optional
        Most parents a node may have.
    tabu_length : int, default 100
        Number of recent moves whose reversal is forbidden.
    black_list, white_list : list of (parent, child), optional
        Edges never added / the only edges that may be added.
    start : networkx.DiGraph, optional
        Starting DAG (default: no edges).
    epsilon : float, default 1e-4
        Smallest score gain that counts as an improvement.

    Returns
    -------
    networkx.DiGraph
    """
    net, codes = _frame_codes(data, states)
    names = net.nodes
    idx = {n: i for i, n in enumerate(names)}
    sc = _Scorer(codes, [net.card(n) for n in names], names, score, equivalent_sample_size)
    for what, edges in (("black_list", black_list), ("white_list", white_list)):
        for u, v in edges or ():
            for x in (u, v):
                if x not in idx:
                    raise ValueError(f"{what} names unknown node {x!r}; the nodes are {names}.")
    black = {(u, v) for u, v in black_list or ()}
    white = None if white_list is None else {(u, v) for u, v in white_list}
    g = nx.DiGraph()
    g.add_nodes_from(names)
    if start is not None:
        g.add_edges_from(start.edges())
    parents = {n: frozenset(idx[p] for p in g.predecessors(n)) for n in names}
    tabu: list[tuple[str, tuple[str, str]]] = []

    def allowed(u: str, v: str) -> bool:
        return (u, v) not in black and (white is None or (u, v) in white)

    def best_move() -> tuple[float, tuple[str, tuple[str, str]]] | None:
        best: tuple[float, tuple[str, tuple[str, str]]] | None = None
        for u in names:
            for v in names:
                if u == v:
                    continue
                if g.has_edge(u, v):
                    pv = parents[v]
                    gain = sc.local(idx[v], pv - {idx[u]}) - sc.local(idx[v], pv)
                    op = ("remove", (u, v))
                    if op not in tabu and (best is None or gain > best[0]):
                        best = (gain, op)
                    # reverse u -> v into v -> u
                    if allowed(v, u) and (max_indegree is None or len(parents[u]) < max_indegree):
                        op = ("reverse", (u, v))
                        if op not in tabu:
                            g.remove_edge(u, v)
                            cyclic = nx.has_path(g, u, v)
                            g.add_edge(u, v)
                            if not cyclic:
                                gain2 = (
                                    gain
                                    + sc.local(idx[u], parents[u] | {idx[v]})
                                    - sc.local(idx[u], parents[u])
                                )
                                if best is None or gain2 > best[0]:
                                    best = (gain2, op)
                elif not g.has_edge(v, u) and allowed(u, v):
                    if max_indegree is not None and len(parents[v]) >= max_indegree:
                        continue
                    op = ("add", (u, v))
                    if op in tabu or nx.has_path(g, v, u):
                        continue
                    gain = sc.local(idx[v], parents[v] | {idx[u]}) - sc.local(idx[v], parents[v])
                    if best is None or gain > best[0]:
                        best = (gain, op)
        return best

    for _ in range(max_iter):
        best = best_move()
        if best is None or best[0] < epsilon:
            break
        kind, (u, v) = best[1]
        if kind == "add":
            g.add_edge(u, v)
            tabu.append(("remove", (u, v)))
        elif kind == "remove":
            g.remove_edge(u, v)
            tabu.append(("add", (u, v)))
        else:
            g.remove_edge(u, v)
            g.add_edge(v, u)
            tabu.append(("reverse", (v, u)))
        tabu = tabu[-tabu_length:] if tabu_length > 0 else []
        for n in (u, v):
            parents[n] = frozenset(idx[p] for p in g.predecessors(n))
    return g
