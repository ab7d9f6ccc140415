"""Structure learning for discrete Bayesian networks: decomposable scores, exact and local search.

:func:`learn_structure` maximises a decomposable score (BIC by default) over DAGs. Small networks
are solved exactly (a dynamic programme over node sets, :mod:`._structure_exact`), larger ones by
hill climbing with a tabu list, a tabu walk past the first optimum and perturbed restarts from the
best DAG (:mod:`._structure_search`); both finish with the hill climb, so the answer is at least a
local optimum of pgmpy's ``HillClimbSearch`` neighbourhood. :func:`structure_score` gives the
score of a DAG, equal to pgmpy's ``BIC``/``AIC``/``BDeu`` on the same data.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from typing import Any, cast

import networkx as nx
import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from probgen.models._bn_network import Network, checked_states
from probgen.models._structure_exact import MAX_NODES, candidate_parent_sets, exact_search
from probgen.models._structure_score import LocalScores, canonical_score
from probgen.models._structure_search import Climber, SearchResult

__all__ = ["learn_structure", "structure_score"]

METHODS = ("auto", "hill_climb", "exact")
#: ``method="auto"`` solves networks of up to this many nodes exactly.
AUTO_EXACT_NODES = 15
#: Families scored for the exact search's parent sets of two or more members, per node pair.
_EXACT_BUDGET_PER_PAIR = 20
#: A perturbed restart makes one random move per this many nodes (at least two).
_PERTURB_FRACTION = 2


class _NoBar:
    """Stands in for a hidden progress bar."""

    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


def _codes(frame: pd.DataFrame, net: Network) -> np.ndarray:
    """Codes of ``frame``'s cells against ``net``'s states (-1 where missing), column by column.

    A column whose values are its states themselves (always so for states learnt from the data)
    is coded by pandas in one pass; any other column goes through the network's own coding,
    which also accepts state codes and raises on undeclared states.
    """
    out = np.empty((len(frame), len(net.nodes)), dtype=np.int64)
    slow = []
    for j, n in enumerate(net.nodes):
        col = frame[n]
        codes = pd.Categorical(col, categories=net.states[n]).codes.astype(np.int64)
        if ((codes < 0) & col.notna().to_numpy()).any():
            slow.append(j)
        out[:, j] = codes
    if slow:
        coded = net.code_frame(frame).numpy()
        for j in slow:
            out[:, j] = np.nan_to_num(coded[:, j], nan=-1).astype(np.int64)
    return out


def _frame_codes(data: Any, states: Mapping[str, Sequence[Any]] | None) -> tuple[Network, np.ndarray]:
    """The edgeless network over ``data``'s columns (states given or learnt) and its complete rows' codes."""
    if not isinstance(data, pd.DataFrame):
        raise TypeError(
            f"data must be a pandas DataFrame with one column per node; got {type(data).__name__}."
        )
    if states is not None and not isinstance(states, Mapping):
        raise TypeError(f"states must be a mapping node -> list of states; got {type(states).__name__}.")
    frame = data.set_axis([str(c) for c in data.columns], axis=1)
    if len(set(frame.columns)) != len(frame.columns):
        raise ValueError(f"data has repeated column names: {list(frame.columns)}.")
    g = nx.DiGraph()
    g.add_nodes_from(frame.columns)
    given = {n: checked_states(n, s) for n, s in (states or {}).items()}
    unknown = set(given) - set(g.nodes)
    if unknown:
        raise ValueError(f"states names node(s) {sorted(unknown)} that are not in the dag.")
    net = Network(g, given).learnt_from(frame)
    net.require_states()
    codes = _codes(frame, net)
    complete = (codes >= 0).all(1)
    if not complete.any():
        raise ValueError("structure learning needs complete rows; every row has a missing value.")
    return net, codes[complete]


def _scorer(data: Any, states: Any, score: Any, equivalent_sample_size: Any) -> tuple[Network, LocalScores]:
    name = canonical_score(score)
    if isinstance(equivalent_sample_size, bool) or not isinstance(equivalent_sample_size, numbers.Real):
        raise TypeError(f"equivalent_sample_size must be a positive number; got {equivalent_sample_size!r}.")
    if not float(equivalent_sample_size) > 0 or not math.isfinite(equivalent_sample_size):
        raise ValueError(f"equivalent_sample_size must be a positive number; got {equivalent_sample_size!r}.")
    net, codes = _frame_codes(data, states)
    return net, LocalScores(codes, [net.card(n) for n in net.nodes], name, float(equivalent_sample_size))


def structure_score(
    dag: nx.DiGraph,
    data: Any,
    *,
    score: str = "bic",
    equivalent_sample_size: float = 10.0,
    states: Any = None,
) -> float:
    """Score of ``dag`` on the complete rows of ``data``.

    Parameters
    ----------
    dag : networkx.DiGraph
        A DAG over (a subset of) ``data``'s columns; columns it lacks are scored without parents.
    data : pandas.DataFrame
        One column per node; rows with a missing value are left out.
    score : {"bic", "aic", "bdeu", "k2"}, default "bic"
        ``"bic"``: ``log L - k/2 log n`` (pgmpy's ``"bic-d"``); ``"aic"``: ``log L - k``; ``"bdeu"``:
        the log marginal likelihood under a BDeu prior of ``equivalent_sample_size``; ``"k2"``:
        Cooper and Herskovits' score (pgmpy's ``K2`` adds ``log Gamma(r)`` for every unobserved
        parent configuration, so the two differ there).
    equivalent_sample_size : float, default 10
        BDeu's prior sample size.
    states : dict of str to list, optional
        States of nodes (default: the values seen in ``data``).

    Returns
    -------
    float
    """
    if not isinstance(dag, nx.DiGraph):
        raise TypeError(f"dag must be a networkx.DiGraph; got {type(dag).__name__}.")
    net, sc = _scorer(data, states, score, equivalent_sample_size)
    idx = {n: i for i, n in enumerate(net.nodes)}
    unknown = [str(n) for n in dag.nodes if str(n) not in idx]
    if unknown:
        raise ValueError(f"dag has node(s) {unknown} that are not columns of data {net.nodes}.")
    parents = [0] * len(idx)
    for u, v in dag.edges:
        parents[idx[str(v)]] |= 1 << idx[str(u)]
    return sc.network(parents)


def _int_option(name: str, value: Any, low: int, *, allow_none: bool = False) -> int | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(
            f"{name} must be an integer >= {low}{' or None' if allow_none else ''}; got {value!r}."
        )
    if value < low:
        raise ValueError(f"{name} must be an integer >= {low}; got {value!r}.")
    return int(value)


def _edge_list(name: str, edges: Any, idx: Mapping[str, int]) -> list[tuple[int, int]]:
    if edges is None:
        return []
    if isinstance(edges, str | bytes) or not isinstance(edges, Sequence | set | frozenset):
        raise TypeError(f"{name} must be a list of (parent, child) pairs; got {type(edges).__name__}.")
    out = []
    for pair in edges:
        if isinstance(pair, str) or not isinstance(pair, Sequence) or len(pair) != 2:
            raise TypeError(f"{name} must hold (parent, child) pairs; got {pair!r}.")
        for x in pair:
            if str(x) not in idx:
                raise ValueError(f"{name} names unknown node {x!r}; the nodes are {list(idx)}.")
        out.append((idx[str(pair[0])], idx[str(pair[1])]))
    return out


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
    method: str = "auto",
    restarts: int | None = None,
    patience: int | None = None,
    seed: int | None = 0,
    progress: bool = True,
) -> nx.DiGraph:
    """The DAG that maximises a decomposable score on ``data``, found exactly or by local search.

    ``method="exact"`` finds the best DAG among those whose parent sets it scored: every parent
    set up to a size limit (``max_indegree``, or as many sizes as a budget of about
    ``20 * n_nodes**2`` families allows), less those that a bound proves useless for BIC/AIC. A
    dynamic programme over node sets (Silander and Myllymaki, 2006) then gives the optimum, and a
    hill climb from it lifts any in-degree limit the budget imposed. ``method="hill_climb"``
    climbs as pgmpy's ``HillClimbSearch`` does (best add, remove or reverse of one edge, with a
    tabu list), walks on past the optimum for ``patience`` moves, then restarts ``restarts``
    times from random perturbations of the best DAG (``n_nodes // 2`` random legal moves each),
    keeping the best. ``"auto"`` (the default) is exact for networks of up to 15 nodes and hill
    climbing beyond.

    Parameters
    ----------
    data : pandas.DataFrame
        One column per node; rows with a missing value are left out.
    score : {"bic", "aic", "bdeu", "k2"}, default "bic"
        See :func:`structure_score`.
    max_indegree : int, optional
        Most parents a node may have.
    tabu_length : int, default 100
        Number of recent moves whose reversal is forbidden.
    black_list, white_list : list of (parent, child), optional
        Edges never added / the only edges that may be added.
    start : networkx.DiGraph, optional
        Starting DAG of the hill climb (default: no edges); with ``method="auto"`` it selects
        the hill climb.
    max_iter : int, default 1_000_000
        Most moves of each climb.
    epsilon : float, default 1e-4
        Smallest score gain that counts as an improvement.
    equivalent_sample_size : float, default 10
        BDeu's prior sample size.
    states : dict of str to list, optional
        States of nodes (default: the values seen in ``data``).
    method : {"auto", "hill_climb", "exact"}, default "auto"
    restarts : int, optional
        Perturbed restarts of the local search (default: 0 after an exact search that scored
        every useful parent set, else ``max(10, n_nodes)``).
    patience : int, optional
        Non-improving moves of the tabu walk after each climb (default: ``n_nodes``); 0 stops at
        the first local optimum, as pgmpy does.
    seed : int, optional, default 0
        Seed of the perturbations.
    progress : bool, default True
        Show a progress bar (after half a second) for long searches.

    Returns
    -------
    networkx.DiGraph
        Nodes in ``data``'s column order; ``graph["score"]`` holds its score,
        ``graph["search"]`` how it was found (``"exact"``, ``"exact+climb"`` or ``"hill_climb"``)
        and ``graph["optimal"]`` whether the exact search proved it a best DAG (among those
        within ``max_indegree`` and the black and white lists).

    Raises
    ------
    TypeError, ValueError
        On arguments of the wrong type or value, naming the argument.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> a = rng.integers(0, 2, 2000)
    >>> b = a ^ (rng.random(2000) < 0.1)  # b copies a, with one flip in ten
    >>> frame = pd.DataFrame({"a": a, "b": b.astype(int), "c": rng.integers(0, 2, 2000)})
    >>> g = learn_structure(frame, progress=False)
    >>> sorted(frozenset(e) == {"a", "b"} for e in g.edges), g.graph["search"]
    ([True], 'exact')
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}; got {method!r}.")
    max_indegree = _int_option("max_indegree", max_indegree, 0, allow_none=True)
    tabu_length = cast(int, _int_option("tabu_length", tabu_length, 0))
    max_iter = cast(int, _int_option("max_iter", max_iter, 0))
    restarts = _int_option("restarts", restarts, 0, allow_none=True)
    patience = _int_option("patience", patience, 0, allow_none=True)
    if seed is not None:
        _int_option("seed", seed, 0)
    if isinstance(epsilon, bool) or not isinstance(epsilon, numbers.Real) or not epsilon >= 0:
        raise ValueError(f"epsilon must be a number >= 0; got {epsilon!r}.")
    if not isinstance(progress, bool):
        raise TypeError(f"progress must be True or False; got {progress!r}.")
    if start is not None and not isinstance(start, nx.DiGraph):
        raise TypeError(f"start must be a networkx.DiGraph or None; got {type(start).__name__}.")
    net, sc = _scorer(data, states, score, equivalent_sample_size)
    names = net.nodes
    n = len(names)
    idx = {name: i for i, name in enumerate(names)}
    allowed = np.ones((n, n), dtype=bool)
    white = _edge_list("white_list", white_list, idx)
    if white_list is not None:
        allowed[:] = False
        for u, v in white:
            allowed[u, v] = True
    for u, v in _edge_list("black_list", black_list, idx):
        allowed[u, v] = False
    np.fill_diagonal(allowed, False)
    begin = [0] * n
    if start is not None:
        unknown = [str(x) for x in start.nodes if str(x) not in idx]
        if unknown:
            raise ValueError(f"start has node(s) {unknown} that are not columns of data {names}.")
        if not nx.is_directed_acyclic_graph(start):
            raise ValueError("start must be acyclic; it has a directed cycle.")
        for u, v in start.edges:
            begin[idx[str(v)]] |= 1 << idx[str(u)]
    if method == "exact" and start is not None:
        raise ValueError("start= is the starting point of method='hill_climb'; the exact search takes none.")
    if method == "exact" and n > MAX_NODES:
        raise ValueError(f"method='exact' handles at most {MAX_NODES} nodes; data has {n}. Use 'hill_climb'.")
    exact = method == "exact" or (method == "auto" and start is None and n <= AUTO_EXACT_NODES)
    indegree = n if max_indegree is None else max_indegree
    patience = n if patience is None else patience
    rng = np.random.default_rng(seed)
    bar = tqdm(desc="learn_structure", unit="step", delay=0.5, leave=False) if progress else _NoBar()
    try:
        climber = Climber(sc, allowed, indegree, tabu_length, float(epsilon))
        search = "hill_climb"
        finished = False
        if exact:
            allowed_masks = [sum(1 << u for u in np.flatnonzero(allowed[:, v])) for v in range(n)]
            scored, complete = candidate_parent_sets(
                sc, allowed_masks, min(indegree, n - 1), _EXACT_BUDGET_PER_PAIR * n * n, bar.update
            )
            begin = exact_search(sc, scored)
            # every parent set not scored was proved useless, or lies beyond the user's limit
            finished = complete >= min(indegree, n - 1)
            search = "exact"
        climber.reset(begin)
        best = climber.climb(max_iter, 0 if finished else patience, lambda: bar.update())
        if exact and best.moves:
            search = "exact+climb"
        n_restarts = (0 if finished else max(10, n)) if restarts is None else restarts
        for _ in range(n_restarts):
            climber.reset(best.parents)
            climber.perturb(max(2, n // _PERTURB_FRACTION), rng)
            found = climber.climb(max_iter, patience, lambda: bar.update())
            if found.score > best.score + epsilon:
                best = SearchResult(found.parents, found.score, best.moves + found.moves)
                if exact:
                    search = "exact+climb"
    finally:
        bar.close()
    g = nx.DiGraph()
    g.add_nodes_from(names)
    g.add_edges_from((names[u], names[v]) for v, mask in enumerate(best.parents) for u in sc.members(mask))
    g.graph["score"] = sc.network(best.parents)
    g.graph["search"] = search
    g.graph["optimal"] = finished
    return g
