"""A Bayesian network's structure with its state names, and data coded against it.

:class:`Network` is what every computation on a discrete network reads: the DAG, the parents of
each node in order, the ordered state names of each node, and the tables that turn state names
into codes.  It is a value derived from a model's configuration and, where states are learnt,
from data: :class:`NetworkData` (the prepared data of a network, a tensor of state codes) carries
the network its codes refer to, so what is learnt from data never lives on the model.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

import networkx as nx
import numpy as np
import opt_einsum as oe
import pandas as pd
import torch
from torch import Tensor

__all__ = ["Network", "NetworkData", "cpd_site"]

_DTYPE = torch.float64
_SUM_TOL = 1e-6  # CPD rows must sum to one within this


def cpd_site(node: str) -> str:
    """Name of the Pyro site (and ``fit.params`` key) of ``node``'s CPD."""
    return f"cpd_{node}"


def checked_states(node: str, states: Sequence[Any]) -> list[Any]:
    """``states`` as a list, refused unless distinct and non-empty."""
    s = list(states)
    if len(s) < 1 or len(set(map(str, s))) != len(s):
        raise ValueError(f"node {node!r}: states must be distinct and non-empty; got {s!r}.")
    return s


def _plain(state: Any) -> Any:
    """A state name JSON can hold: numpy scalars as Python scalars, other objects as text."""
    if isinstance(state, np.generic):
        state = state.item()
    return state if isinstance(state, str | int | float) else str(state)


def _ordered_copy(dag: nx.DiGraph) -> nx.DiGraph:
    """A copy of ``dag`` whose every node lists its predecessors in ``dag``'s order.

    ``nx.DiGraph(dag)`` adds the edges source by source, so a node's predecessors come out in
    the order of the nodes, not of the original: a network rebuilt from the copy would read each
    CPD's parent axes in another order.  Edges are added target by target here instead.
    """
    out = nx.DiGraph()
    out.graph.update(dag.graph)
    out.add_nodes_from(dag.nodes(data=True))
    for n in dag.nodes:
        for p in dag.predecessors(n):
            out.add_edge(p, n, **dag.edges[p, n])
    return out


class Network:
    """A DAG with ordered state names per node (some may be unknown until data or CPDs give them).

    Parameters
    ----------
    dag : networkx.DiGraph
        The (validated, acyclic) graph; a node's parents keep its predecessor order.
    states : dict of str to list
        Ordered state names of the nodes whose states are known.
    """

    def __init__(self, dag: nx.DiGraph, states: Mapping[str, Sequence[Any]]) -> None:
        self.dag = _ordered_copy(dag)  # the parents' order is read from ``dag`` and kept in the copy
        self.nodes: list[str] = list(dag.nodes)
        self.order: list[str] = list(nx.topological_sort(dag))
        self.parents: dict[str, list[str]] = {n: list(dag.predecessors(n)) for n in self.nodes}
        self._set_states(states)

    def with_states(self, states: Mapping[str, Sequence[Any]]) -> Network:
        """The same structure with other states."""
        out = object.__new__(Network)
        out.dag, out.nodes, out.order, out.parents = self.dag, self.nodes, self.order, self.parents
        out._set_states(states)
        return out

    def _set_states(self, states: Mapping[str, Sequence[Any]]) -> None:
        self.col: dict[str, int] = {n: j for j, n in enumerate(self.nodes)}
        self.states: dict[str, list[Any]] = {n: list(states[n]) for n in self.nodes if n in states}
        self.complete = len(self.states) == len(self.nodes)
        self.sym: dict[str, str] = {n: oe.get_symbol(i + 1) for i, n in enumerate(self.nodes)}  # 0: batch
        self._lookup: dict[str, dict[Any, int]] = {}
        for n, s in self.states.items():
            table: dict[Any, int] = {}
            for i, v in enumerate(s):
                table[v] = i
                table[str(v)] = i
            self._lookup[n] = table
        #: contraction plans per evidence pattern (pure functions of this network, kept with it)
        self.plans: dict[Any, Any] = {}

    # ------------------------------------------------------------------ states
    def require_states(self) -> None:
        missing = [n for n in self.nodes if n not in self.states]
        if missing:
            raise ValueError(
                f"states of node(s) {missing} are unknown; pass states=..., give the dag a node "
                "attribute 'states', or fit on data first (the fit knows them: fit.to_frame, fit.query, ...)."
            )

    def card(self, node: str) -> int:
        """Number of states of ``node``."""
        s = self.states.get(node)
        if s is None:
            self.require_states()
            raise ValueError(f"unknown node {node!r}; the nodes are {self.nodes}.")
        return len(s)

    def shape(self, node: str) -> tuple[int, ...]:
        return tuple(self.card(p) for p in self.parents[node]) + (self.card(node),)

    def n_configs(self, node: str) -> int:
        return math.prod(self.card(p) for p in self.parents[node])

    def check_node(self, node: Any, what: str) -> str:
        if node not in self.parents:
            raise ValueError(f"{what} names unknown node {node!r}; the nodes are {self.nodes}.")
        return str(node)

    def code(self, node: str, state: Any, what: str) -> int:
        table = self._lookup[node]
        try:
            return table[state]
        except (KeyError, TypeError):
            try:
                return table[str(state)]
            except KeyError:
                # a state code 0 .. card-1, as the data may hold (a name always wins)
                if isinstance(state, int | np.integer) and not isinstance(state, bool):
                    if 0 <= int(state) < len(self.states[node]):
                        return int(state)
                raise ValueError(
                    f"{what}: state {state!r} of node {node!r} is not declared: neither one of its "
                    f"states {self.states[node]} nor a code 0..{len(self.states[node]) - 1}."
                ) from None

    def config_names(self, node: str, row: int) -> dict[str, Any]:
        names = {}
        for p in reversed(self.parents[node]):
            row, k = divmod(row, self.card(p))
            names[p] = self.states[p][k]
        return dict(reversed(list(names.items())))

    def with_params(self, params: Mapping[str, Tensor]) -> Network:
        """This network with the states that only the CPDs in ``params`` give (``0 .. card-1``).

        Raises when a known node's number of states differs from its fitted CPD's.
        """
        learnt: dict[str, list[Any]] = {}
        for n in self.nodes:
            key = cpd_site(n)
            if key not in params:
                raise ValueError(f"params misses {key!r}; fit the network or pass cpds=.")
            k = int(params[key].shape[-1])
            if n not in self.states:
                learnt[n] = list(range(k))
            elif len(self.states[n]) != k:
                raise ValueError(
                    f"node {n!r} has {len(self.states[n])} states {self.states[n]} in these data but "
                    f"{k} in the fitted CPDs; states learnt from the training data are not known to new "
                    "data: pass states= to the model so that every data set is coded alike."
                )
        return self.with_states({**self.states, **learnt}) if learnt else self

    def learnt_from(self, frame: Any) -> Network:
        """This network with the states of its nodes without states learnt from ``frame``'s columns."""
        self.check_frame(frame)
        learnt: dict[str, list[Any]] = {}
        for n in self.nodes:
            if n not in self.states and n in frame.columns:
                seen = frame[n].dropna().unique().tolist()
                if not seen:
                    raise ValueError(f"node {n!r} has no observed value; pass its states=.")
                learnt[n] = checked_states(n, sorted(seen, key=lambda v: (str(type(v)), v)))
        return self.with_states({**self.states, **learnt}) if learnt else self

    def learnt_from_codes(self, t: Tensor) -> Network:
        """With no state known at all: states ``0 .. max code`` (at least two) per column of ``t``."""
        if self.states:
            return self
        learnt = {}
        for j, n in enumerate(self.nodes):
            col = t[:, j]
            col = col[~torch.isnan(col)]
            top = int(col.max()) + 1 if len(col) else 2
            learnt[n] = list(range(max(top, 2)))
        return self.with_states(learnt)

    # ------------------------------------------------------------------ CPDs
    def check_cpds(self, cpds: Mapping[str, Any]) -> dict[str, Tensor]:
        """Given CPDs as ``(n_parent_configs, card)`` float64 tensors, rows renormalised."""
        self.require_states()
        unknown = set(cpds) - set(self.nodes)
        if unknown:
            raise ValueError(f"cpds names node(s) {sorted(unknown)} that are not in the dag.")
        missing = [n for n in self.nodes if n not in cpds]
        if missing:
            raise ValueError(f"cpds misses node(s) {missing}; give a CPD for every node.")
        out = {}
        for n in self.nodes:
            t = torch.as_tensor(np.asarray(cpds[n], dtype=np.float64), dtype=_DTYPE)
            shape, flat = self.shape(n), (self.n_configs(n), self.card(n))
            if tuple(t.shape) not in (shape, flat) and not (t.numel() == math.prod(shape) and t.dim() == 1):
                raise ValueError(
                    f"cpd of node {n!r} has shape {tuple(t.shape)}; expected {shape} "
                    f"(parents {self.parents[n]} then the node's {self.card(n)} states)."
                )
            t = t.reshape(flat)
            if not torch.isfinite(t).all() or (t < 0).any():
                raise ValueError(f"cpd of node {n!r} has negative or non-finite entries.")
            err = (t.sum(-1) - 1).abs()
            if float(err.max()) > _SUM_TOL:
                row = int(err.argmax())
                raise ValueError(
                    f"cpd of node {n!r}: row {row} (parent configuration {self.config_names(n, row)}) "
                    f"sums to {float(t[row].sum()):.6g}, not 1."
                )
            out[n] = t / t.sum(-1, keepdim=True)  # rounding in BIF files: rows renormalised
        return out

    def cpds_from_init(self, init: Mapping[str, Any]) -> dict[str, Tensor]:
        """EM's start from a dict of CPDs by site (``"cpd_X"``) or node name, each checked."""
        out = {}
        uniform = {m: torch.ones(self.shape(m)) / self.card(m) for m in self.nodes}
        for n in self.nodes:
            key = cpd_site(n)
            src = init.get(key, init.get(n))
            if src is None:
                raise ValueError(f"init misses node {n!r} (key {key!r}).")
            out[key] = self.check_cpds({**uniform, n: src})[n]
        return out

    def start_cpds(self, data: Tensor, *, counts: bool, generator: torch.Generator) -> dict[str, Tensor]:
        """EM's start: family counts + 1 of the rows observing the family (``counts``; a node no
        row observes, and every node otherwise, from Dirichlet(1) draws)."""
        out = {}
        for n in self.nodes:
            shape = (self.n_configs(n), self.card(n))
            gamma = -torch.log(torch.rand(shape, dtype=_DTYPE, generator=generator))  # Dirichlet(1) draws
            noise = gamma / gamma.sum(-1, keepdim=True)
            fam = [self.col[v] for v in self.parents[n] + [n]]
            full = ~torch.isnan(data[:, fam]).any(1)
            if not counts or not bool(full.any()):
                out[cpd_site(n)] = noise
                continue
            c = self.family_counts(data[full], n) + 1.0
            out[cpd_site(n)] = c / c.sum(-1, keepdim=True)
        return out

    def params_cpds(self, params: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """CPD tensors ``(*parent_cards, card)`` from fit parameters."""
        out = {}
        for n in self.nodes:
            key = cpd_site(n)
            if key not in params:
                raise ValueError(f"params misses {key!r}; fit the network or pass cpds=.")
            out[n] = params[key].to(_DTYPE).reshape(self.shape(n))
        return out

    def family_counts(self, rows: Tensor, node: str) -> Tensor:
        """Counts ``(n_parent_configs, card)`` of ``node``'s family in complete ``rows``."""
        idx = torch.zeros(len(rows), dtype=torch.long)
        for v in self.parents[node] + [node]:
            idx = idx * self.card(v) + rows[:, self.col[v]].long()
        size = self.n_configs(node) * self.card(node)
        return torch.bincount(idx, minlength=size).to(_DTYPE).reshape(self.n_configs(node), self.card(node))

    def relevant(self, targets: set[str]) -> list[str]:
        """The targets and their ancestors, in topological order (the rest sums to one)."""
        keep = set(targets)
        for t in targets:
            keep |= nx.ancestors(self.dag, t)
        return [n for n in self.order if n in keep]

    # ------------------------------------------------------------------ coding
    def check_frame(self, frame: Any) -> None:
        """Refuse a DataFrame with columns that are not nodes, or with no rows."""
        unknown = [c for c in frame.columns if c not in self.parents]
        if unknown:
            raise ValueError(f"data has column(s) {unknown} that are not nodes of the network {self.nodes}.")
        if len(frame) == 0:
            raise ValueError("data is empty; expected at least one row.")

    def code_frame(self, frame: Any) -> Tensor:
        """A DataFrame of state names as float64 codes ``(n, n_nodes)``, NaN where missing or absent."""
        self.check_frame(frame)
        out = np.full((len(frame), len(self.nodes)), np.nan)
        for j, n in enumerate(self.nodes):
            if n not in frame.columns:
                continue
            if n not in self.states:
                self.require_states()  # raises: a column's states are learnt before coding
            col = frame[n]
            miss = col.isna().to_numpy()
            values = col.to_numpy()
            codes = np.full(len(frame), np.nan)
            uniq = {}
            for i in np.flatnonzero(~miss):
                v = values[i]
                key = v if isinstance(v, str | int | float | np.integer | np.floating | bool) else str(v)
                if key not in uniq:
                    uniq[key] = self.code(n, v, "data")
                codes[i] = uniq[key]
            out[:, j] = codes
        return torch.from_numpy(out).to(_DTYPE)

    def check_codes(self, t: Tensor) -> None:
        """Refuse codes outside a node's states (NaN is missing)."""
        self.require_states()
        for j, n in enumerate(self.nodes):
            col = t[:, j]
            bad = ~torch.isnan(col) & ((col != col.round()) | (col < 0) | (col >= self.card(n)))
            if bad.any():
                v = float(col[bad][0])
                raise ValueError(
                    f"data: state code {v:g} of node {n!r} is not declared; codes run 0..{self.card(n) - 1} "
                    f"for states {self.states[n]}."
                )

    def to_frame(self, codes: Any) -> Any:
        """State codes ``(n, n_nodes)`` as a DataFrame of state names (None where NaN); a
        DataFrame (already named states) is returned as it is."""
        if isinstance(codes, pd.DataFrame):
            return codes
        self.require_states()
        arr = torch.as_tensor(codes).to(_DTYPE)
        cols = {}
        for j, n in enumerate(self.nodes):
            names = np.asarray(self.states[n], dtype=object)
            col = arr[:, j]
            vals = np.full(len(col), None, dtype=object)
            ok = ~torch.isnan(col)
            vals[ok.numpy()] = names[col[ok].long().numpy()]
            cols[n] = vals
        return pd.DataFrame(cols)

    def evidence_codes(self, evidence: Mapping[str, Any]) -> dict[str, int]:
        if not isinstance(evidence, Mapping):
            raise TypeError(
                f"evidence must be a dict of node -> state or a DataFrame; got {type(evidence).__name__}."
            )
        self.require_states()
        return {self.check_node(k, "evidence"): self.code(k, v, "evidence") for k, v in evidence.items()}

    def variables(self, variables: Any, exclude: Sequence[str] = ()) -> list[str]:
        if variables is None:
            return [n for n in self.nodes if n not in exclude]
        if isinstance(variables, str):
            variables = [variables]
        out = [self.check_node(v, "query") for v in variables]
        both = [v for v in out if v in exclude]
        if both:
            raise ValueError(f"query variable(s) {both} are also evidence; query the others.")
        if len(set(out)) != len(out):
            raise ValueError(f"query variables repeat a node: {out}.")
        return out

    # ------------------------------------------------------------------ saving
    def to_json(self) -> str:
        return json.dumps(
            {"nodes": self.nodes, "states": {n: [_plain(s) for s in v] for n, v in self.states.items()}}
        )


def states_from_json(text: str) -> tuple[list[str], dict[str, list[Any]]]:
    """Nodes and states written by :meth:`Network.to_json`."""
    spec = json.loads(text)
    return list(spec["nodes"]), {str(k): list(v) for k, v in spec["states"].items()}


class NetworkData(Tensor):
    """Prepared data of a network: float64 state codes ``(n, n_nodes)`` (NaN for missing) in the
    node order of :attr:`network`, the network (structure and states) the codes refer to.

    Operations on it give plain tensors; only the prepared data object carries the network.
    """

    network: Network
    __torch_function__ = torch._C._disabled_torch_function_impl  # type: ignore[assignment]

    @staticmethod
    def __new__(cls, codes: Tensor, network: Network) -> NetworkData:  # noqa: D102
        out = Tensor._make_subclass(cls, codes)
        out.network = network
        return out
