"""Discrete Bayesian networks: a ``networkx.DiGraph`` as a Pyro model with exact inference.

Generative model (one categorical site per node, in topological order)::

    cpd_X[u] ~ Dirichlet(alpha_X)            for every parent configuration u of X
    x_i ~ Categorical(cpd_X[parents(x_i)])   for every item i and node X (site name: the node)

SVI and MCMC therefore give Bayesian CPD posteriors; EM uses the closed-form hooks
(:meth:`BayesianNetwork.e_step`/:meth:`BayesianNetwork.m_step`) and gives the MLE (or the MAP
with ``map_estimate=True``) from complete data in one step and from incomplete data (NaN in the
data frame, or a node absent from it) by EM over every partially observed row.

Exact inference is variable elimination written as one tensor contraction
(:mod:`opt_einsum`), its contraction path compiled once per network, evidence pattern and
query and cached on the model.  Nodes that are not ancestors of the query or the evidence are
pruned first (barren nodes sum to one).  A batch of evidence rows is one contraction with a
batch index: each observed value enters as a one-hot factor, a missing one as a factor of ones.
All marginals at once come from one backward pass through the contraction
(``P(X = x, e) = d Z / d lambda_X[x]`` for an indicator ``lambda_X`` of ones), and the E-step's
expected family counts the same way (``theta * d log Z / d theta``).
"""

from __future__ import annotations

import gzip
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import networkx as nx
import numpy as np
import opt_einsum as oe
import pyro
import pyro.distributions as dist
import torch
from pyro.ops.indexing import Vindex
from torch import Tensor

from probgen.model import GenerativeModel

__all__ = ["BayesianNetwork", "learn_structure", "read_bif", "structure_score", "write_bif"]

_DTYPE = torch.float64
_BATCH = 2048  # rows per batched contraction (memory bound)
_MAX_JOINT = 2**22  # largest joint table a query or map_query builds
_REJECTION_MIN_P = 1e-3  # sample(evidence=...) rejects ancestral draws when P(evidence) is at least this
_MAX_INTERMEDIATE = 2**27  # entries (1 GiB of float64): larger contractions are refused up front
_SUM_TOL = 1e-6  # CPD rows must sum to one within this


def _cpd_site(node: str) -> str:
    return f"cpd_{node}"


class BayesianNetwork(GenerativeModel):
    r"""A discrete Bayesian network on a ``networkx.DiGraph``.

    Sample sites: ``"cpd_<node>"`` (global, shape ``(n_parent_configs, n_states)``, a Dirichlet
    prior per row) and one observed categorical site per node named by the node, inside the
    plate ``"data"``.  Parent configurations are row-major over the node's parents in
    ``model.parents[node]`` order (the graph's predecessor order); ``fit.params["cpd_X"]``
    reshaped to ``(*parent_cards, card)`` is the CPD of ``X``.

    Data are a pandas DataFrame with one column per node holding state names (NaN/None for
    missing; a node without a column is latent), or an array of state codes ``(n, n_nodes)``
    in ``model.nodes`` order with NaN for missing.

    Fit helpers: ``fit.query(variables, evidence=..., joint=False)`` (a dict or a DataFrame of
    evidence rows), ``fit.map_query(variables, evidence=...)``, ``fit.cpd_table(node)``,
    ``fit.to_frame(codes)``; ``fit.log_prob(rows)`` sums missing entries out and
    ``fit.sample(n, evidence=...)`` draws exactly given evidence.  Module functions:
    :func:`read_bif`, :func:`write_bif`, :func:`learn_structure`, :func:`structure_score`.

    Parameters
    ----------
    dag : networkx.DiGraph
        The network; node attribute ``states`` may give a node's ordered state names.
    states : dict of str to sequence, optional
        Ordered state names per node (default: the node attribute, else the sorted values seen
        in the first data).
    cpds : dict of str to array, optional
        Given CPDs, shape ``(*parent_cards, card)`` (or ``(n_parent_configs, card)``) in the
        parents' order; rows must sum to one.  Used for queries without fitting
        (:meth:`as_fit`) and as EM's start.
    prior : float or "bdeu", default 1.0
        Dirichlet concentration of every CPD entry, or ``"bdeu"``: ``equivalent_sample_size /
        (n_parent_configs * card)``.
    equivalent_sample_size : float, default 1.0
        BDeu's equivalent sample size.
    map_estimate : bool, default False
        EM returns the posterior mode (counts + alpha - 1) instead of the MLE.

    Examples
    --------
    >>> import networkx as nx
    >>> bn = BayesianNetwork(nx.DiGraph([("rain", "wet")]),
    ...                      states={"rain": ["no", "yes"], "wet": ["no", "yes"]},
    ...                      cpds={"rain": [0.8, 0.2], "wet": [[0.9, 0.1], [0.2, 0.8]]})
    >>> round(float(bn.as_fit().query("rain", evidence={"wet": "yes"})["rain"][1]), 4)
    0.6667
    """

    dtype = _DTYPE
    data_plate_name = "data"
    fit_helpers = ("query", "map_query", "cpd_table", "to_frame")
    #: NaN in the data means a missing value, summed out (see GenerativeModel.accepts_missing).
    accepts_missing = True

    def __init__(
        self,
        dag: nx.DiGraph,
        states: Mapping[str, Sequence[Any]] | None = None,
        cpds: Mapping[str, Any] | None = None,
        prior: float | str = 1.0,
        *,
        equivalent_sample_size: float = 1.0,
        map_estimate: bool = False,
    ) -> None:
        if isinstance(dag, Mapping) and {"nodes", "edges"} <= set(dag):  # a saved configuration
            spec = dag
            dag = nx.DiGraph()
            dag.add_nodes_from(spec["nodes"])
            dag.add_edges_from(tuple(e) for e in spec["edges"])
        if not isinstance(dag, nx.DiGraph):
            raise TypeError(f"dag must be a networkx.DiGraph; got {type(dag).__name__}.")
        if not nx.is_directed_acyclic_graph(dag):
            cycle = nx.find_cycle(dag)
            path = " -> ".join(str(u) for u, _ in cycle) + f" -> {cycle[0][0]}"
            raise ValueError(
                f"dag has a cycle through node {cycle[0][0]!r}: {path}; a network must be acyclic."
            )
        if dag.number_of_nodes() == 0:
            raise ValueError("dag has no nodes.")
        for node in dag.nodes:
            if not isinstance(node, str):
                raise TypeError(f"node names must be strings; got {node!r} ({type(node).__name__}).")
            if node == "data":
                raise ValueError("node name 'data' is reserved for the plate over rows; rename the node.")
        for node in dag.nodes:
            for site in (_cpd_site(node), f"{node}_missing"):
                if site in dag.nodes:
                    raise ValueError(f"node {site!r} clashes with the Pyro site of node {node!r}; rename it.")
        if isinstance(prior, str):
            if prior != "bdeu":
                raise ValueError(f"prior must be a positive number or 'bdeu'; got {prior!r}.")
        elif isinstance(prior, bool) or not isinstance(prior, int | float) or not prior > 0:
            raise ValueError(f"prior must be a positive number or 'bdeu'; got {prior!r}.")
        if not equivalent_sample_size > 0:
            raise ValueError(f"equivalent_sample_size must be > 0; got {equivalent_sample_size!r}.")
        self.dag = nx.DiGraph(dag)
        self.nodes: list[str] = list(dag.nodes)
        self.order: list[str] = list(nx.topological_sort(dag))
        self.parents: dict[str, list[str]] = {n: list(dag.predecessors(n)) for n in self.nodes}
        self.prior = prior
        self.equivalent_sample_size = float(equivalent_sample_size)
        self.map_estimate = bool(map_estimate)
        given = dict(states or {})
        unknown = set(given) - set(self.nodes)
        if unknown:
            raise ValueError(f"states names node(s) {sorted(unknown)} that are not in the dag.")
        self.states: dict[str, list[Any]] = {}
        for n in self.nodes:
            s = given.get(n, dag.nodes[n].get("states"))
            if s is not None:
                self._set_states(n, s)
        self.cpds: dict[str, Tensor] | None = None
        if cpds is not None:
            self.cpds = self._check_cpds(cpds)
        self._cache: dict[Any, Any] = {}

    # ------------------------------------------------------------------ structure helpers
    def _set_states(self, node: str, s: Sequence[Any]) -> None:
        s = list(s)
        if len(s) < 1 or len(set(map(str, s))) != len(s):
            raise ValueError(f"node {node!r}: states must be distinct and non-empty; got {s!r}.")
        self.states[node] = s

    def _require_states(self) -> None:
        missing = [n for n in self.nodes if n not in self.states]
        if missing:
            raise ValueError(
                f"states of node(s) {missing} are unknown; pass states=..., give the dag a node "
                "attribute 'states', or fit on data first."
            )

    def card(self, node: str) -> int:
        """Number of states of ``node``."""
        s = self.states.get(node)
        if s is None:
            self._require_states()
            raise ValueError(f"unknown node {node!r}; the nodes are {self.nodes}.")
        return len(s)

    def _shape(self, node: str) -> tuple[int, ...]:
        return tuple(self.card(p) for p in self.parents[node]) + (self.card(node),)

    def _n_configs(self, node: str) -> int:
        return math.prod(self.card(p) for p in self.parents[node])

    def _check_node(self, node: Any, what: str) -> str:
        if node not in self.parents:
            raise ValueError(f"{what} names unknown node {node!r}; the nodes are {self.nodes}.")
        return str(node)

    def _code(self, node: str, state: Any, what: str) -> int:
        lookup = self.__dict__.setdefault("_lookup", {})
        if node not in lookup:
            table: dict[Any, int] = {}
            for i, s in enumerate(self.states[node]):
                table[s] = i
                table[str(s)] = i
            lookup[node] = table
        try:
            return lookup[node][state]
        except (KeyError, TypeError):
            try:
                return lookup[node][str(state)]
            except KeyError:
                raise ValueError(
                    f"{what}: state {state!r} of node {node!r} is not declared; its states are "
                    f"{self.states[node]}."
                ) from None

    def _check_cpds(self, cpds: Mapping[str, Any]) -> dict[str, Tensor]:
        self._require_states()
        unknown = set(cpds) - set(self.nodes)
        if unknown:
            raise ValueError(f"cpds names node(s) {sorted(unknown)} that are not in the dag.")
        missing = [n for n in self.nodes if n not in cpds]
        if missing:
            raise ValueError(f"cpds misses node(s) {missing}; give a CPD for every node.")
        out = {}
        for n in self.nodes:
            t = torch.as_tensor(np.asarray(cpds[n], dtype=np.float64), dtype=_DTYPE)
            shape, flat = self._shape(n), (self._n_configs(n), self.card(n))
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
                    f"cpd of node {n!r}: row {row} (parent configuration {self._config_names(n, row)}) "
                    f"sums to {float(t[row].sum()):.6g}, not 1."
                )
            out[n] = t / t.sum(-1, keepdim=True)  # rounding in BIF files: rows renormalised
        return out

    def _config_names(self, node: str, row: int) -> dict[str, Any]:
        names = {}
        for p in reversed(self.parents[node]):
            row, k = divmod(row, self.card(p))
            names[p] = self.states[p][k]
        return dict(reversed(list(names.items())))

    def _alpha(self, node: str) -> float:
        if self.prior == "bdeu":
            return self.equivalent_sample_size / (self._n_configs(node) * self.card(node))
        return float(self.prior)

    # ---------------------------------------------------------------------------- data
    def prepare_data(self, data: Any) -> Tensor:
        """Data as float64 state codes ``(n, n_nodes)`` in :attr:`nodes` order, NaN for missing.

        A DataFrame maps state names column by column (missing columns are latent nodes);
        arrays and tensors hold codes.  States are learnt from the first data when not given.
        """
        if hasattr(data, "columns") and hasattr(data, "isna"):
            return self._from_frame(data)
        if isinstance(data, str | bytes) or data is None:
            raise TypeError(
                f"data must be a DataFrame or an array of state codes; got {type(data).__name__}."
            )
        t = torch.as_tensor(np.asarray(data, dtype=np.float64) if not isinstance(data, Tensor) else data)
        t = t.detach().to(_DTYPE)
        if t.dim() != 2 or t.shape[1] != len(self.nodes):
            raise ValueError(
                f"data must have shape (n, {len(self.nodes)}) (one column per node: {self.nodes}); "
                f"got {tuple(t.shape)}."
            )
        if len(t) == 0:
            raise ValueError("data is empty; expected at least one row.")
        if torch.isinf(t).any():
            raise ValueError("data holds infinite values; expected state codes or NaN for missing.")
        if not self.states:
            for j, n in enumerate(self.nodes):
                col = t[:, j]
                col = col[~torch.isnan(col)]
                top = int(col.max()) + 1 if len(col) else 2
                self.states.setdefault(n, list(range(max(top, 2))))
        self._require_states()
        for j, n in enumerate(self.nodes):
            col = t[:, j]
            ok = torch.isnan(col)
            bad = ~ok & ((col != col.round()) | (col < 0) | (col >= self.card(n)))
            if bad.any():
                v = float(col[bad][0])
                raise ValueError(
                    f"data: state code {v:g} of node {n!r} is not declared; codes run 0..{self.card(n) - 1} "
                    f"for states {self.states[n]}."
                )
        return t.contiguous()

    def _from_frame(self, frame: Any) -> Tensor:
        unknown = [c for c in frame.columns if c not in self.parents]
        if unknown:
            raise ValueError(f"data has column(s) {unknown} that are not nodes of the network {self.nodes}.")
        if len(frame) == 0:
            raise ValueError("data is empty; expected at least one row.")
        for n in self.nodes:
            if n not in self.states and n in frame.columns:
                seen = frame[n].dropna().unique().tolist()
                if not seen:
                    raise ValueError(f"node {n!r} has no observed value; pass its states=.")
                self._set_states(n, sorted(seen, key=lambda v: (str(type(v)), v)))
        self._require_states()
        out = np.full((len(frame), len(self.nodes)), np.nan)
        for j, n in enumerate(self.nodes):
            if n not in frame.columns:
                continue
            col = frame[n]
            miss = col.isna().to_numpy()
            values = col.to_numpy()
            codes = np.full(len(frame), np.nan)
            uniq = {}
            for i in np.flatnonzero(~miss):
                v = values[i]
                key = v if isinstance(v, str | int | float | np.integer | np.floating | bool) else str(v)
                if key not in uniq:
                    uniq[key] = self._code(n, v, "data")
                codes[i] = uniq[key]
            out[:, j] = codes
        return torch.from_numpy(out).to(_DTYPE)

    def to_frame(self, fit_or_codes: Any, codes: Any = None) -> Any:
        """State codes ``(n, n_nodes)`` as a DataFrame of state names (``fit.to_frame(codes)``)."""
        import pandas as pd

        arr = torch.as_tensor(codes if codes is not None else fit_or_codes).to(_DTYPE)
        cols = {}
        for j, n in enumerate(self.nodes):
            names = np.asarray(self.states[n], dtype=object)
            col = arr[:, j]
            vals = np.full(len(col), None, dtype=object)
            ok = ~torch.isnan(col)
            vals[ok.numpy()] = names[col[ok].long().numpy()]
            cols[n] = vals
        return pd.DataFrame(cols)

    # --------------------------------------------------------------------------- Pyro pair
    def model(self, data: Tensor | None = None, *, num_items: int | None = None) -> Tensor:
        """Pyro model; ``data=None`` generates ``num_items`` rows (default 1)."""
        self._require_states()
        cpds = {}
        for n in self.order:
            conc = torch.full((self._n_configs(n), self.card(n)), self._alpha(n), dtype=_DTYPE)
            cpds[n] = pyro.sample(_cpd_site(n), dist.Dirichlet(conc).to_event(1))
        size = (num_items or 1) if data is None else len(data)
        col = {n: j for j, n in enumerate(self.nodes)}
        values: dict[str, Tensor] = {}
        with pyro.plate("data", size):
            for n in self.order:
                idx: Tensor | int = 0
                for p in self.parents[n]:
                    idx = idx * self.card(p) + values[p]
                probs = Vindex(cpds[n])[..., idx, :] if self.parents[n] else cpds[n][..., 0, :]
                if data is None:
                    values[n] = pyro.sample(n, dist.Categorical(probs))
                    continue
                x = data[:, col[n]]
                miss = torch.isnan(x)
                if miss.any():  # missing entries: an enumerated latent site, masked to those rows
                    hidden = pyro.sample(
                        f"{n}_missing",
                        dist.Categorical(probs).mask(miss),
                        infer={"enumerate": "parallel"},
                    )
                    seen = x.nan_to_num(0.0).long()
                    pyro.sample(n, dist.Categorical(probs).mask(~miss), obs=seen)
                    values[n] = torch.where(miss, hidden, seen)
                else:
                    values[n] = pyro.sample(n, dist.Categorical(probs), obs=x.long())
        if data is not None:  # values may carry enumeration dims; the data are what was scored
            return data
        return torch.stack([values[n].to(_DTYPE).expand(size) for n in self.nodes], -1)

    # ------------------------------------------------------------------- parameters
    def _params_cpds(self, params: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """CPD tensors ``(*parent_cards, card)`` from fit parameters."""
        out = {}
        for n in self.nodes:
            key = _cpd_site(n)
            if key not in params:
                raise ValueError(f"params misses {key!r}; fit the network or pass cpds=.")
            out[n] = params[key].to(_DTYPE).reshape(self._shape(n))
        return out

    def as_fit(self, data: Any = None) -> Any:
        """A :class:`probgen.Fit` holding the given CPDs, so queries run without fitting."""
        from probgen.fit import Fit

        if self.cpds is None:
            raise ValueError("as_fit needs cpds=...; or fit the network to data with probgen.fit.")
        prepared = None if data is None else self.prepare_data(data)
        params = {_cpd_site(n): t.clone() for n, t in self.cpds.items()}
        return Fit(model=self, data=prepared, method="given", params=params)

    def num_parameters(self, params: Mapping[str, Tensor], data: Any) -> int:
        """Free CPD entries: ``sum_X n_parent_configs(X) (card(X) - 1)``."""
        return sum(self._n_configs(n) * (self.card(n) - 1) for n in self.nodes)

    def get_config(self) -> dict[str, Any]:
        return {
            "dag": {"nodes": self.nodes, "edges": [[p, n] for n in self.nodes for p in self.parents[n]]},
            "states": {
                n: [s if isinstance(s, str | int | float) else str(s) for s in v]
                for n, v in self.states.items()
            },
            "cpds": None if self.cpds is None else {n: t.tolist() for n, t in self.cpds.items()},
            "prior": self.prior,
            "equivalent_sample_size": self.equivalent_sample_size,
            "map_estimate": self.map_estimate,
        }

    def __repr__(self) -> str:
        return f"BayesianNetwork({len(self.nodes)} nodes, {self.dag.number_of_edges()} edges)"

    # ------------------------------------------------------------------ contraction engine
    def _sym(self, node: str) -> str:
        syms = self.__dict__.setdefault("_syms", {})
        if node not in syms:
            syms[node] = oe.get_symbol(len(syms) + 1)  # symbol 0 is the batch index
        return syms[node]

    def _relevant(self, targets: set[str]) -> list[str]:
        keep = set(targets)
        for t in targets:
            keep |= nx.ancestors(self.dag, t)
        return [n for n in self.order if n in keep]

    def _expression(self, key: Any, eq: str, shapes: list[tuple[int, ...]]) -> Any:
        expr = self._cache.get(key)
        if expr is None:
            # batched contractions: plain greedy paths blow up with the batch index on every
            # evidence factor (alarm, 2,048 rows: 220 GB); the best of 128 randomised greedy
            # paths (fewest flops) is compiled in ~0.6 s once and runs in ~50 ms
            batched = key[0] == "rows"
            small = "auto-hq" if len(shapes) <= 24 else "greedy"
            optimize = oe.RandomGreedy(max_repeats=128) if batched else small
            path, info = oe.contract_path(eq, *shapes, shapes=True, optimize=optimize)
            if info.largest_intermediate > _MAX_INTERMEDIATE:
                rows = f" for {shapes[-1][0]} rows at once" if batched else ""
                raise ValueError(
                    f"exact inference on this network would build a table of {int(info.largest_intermediate):,} "
                    f"entries{rows} (limit {_MAX_INTERMEDIATE:,}); the moral graph's treewidth is <= "
                    f"{self.treewidth()}.  Query fewer variables, add evidence, or pass fewer rows."
                )
            expr = oe.contract_expression(eq, *shapes, optimize=path)
            self._cache[key] = expr
        return expr

    def _contract_single(
        self,
        cpds: Mapping[str, Tensor],
        evidence: Mapping[str, int],
        outputs: Sequence[str],
        indicators: Sequence[str] = (),
        indicator_values: Mapping[str, Tensor] | None = None,
        keep: Sequence[str] = (),
    ) -> Tensor:
        """``sum P(outputs, evidence)`` over the rest, one evidence assignment (sliced CPDs).

        Barren nodes are pruned except ``keep`` (whose CPDs a caller differentiates).
        """
        plan_key = ("plan", tuple(sorted(evidence)), tuple(outputs), tuple(indicators), tuple(keep))
        plan = self._cache.get(plan_key)
        if plan is None:  # which CPDs, which axes are sliced, the equation: once per pattern
            nodes = self._relevant(set(outputs) | set(evidence) | set(indicators) | set(keep))
            fams = [(n, self.parents[n] + [n]) for n in nodes]
            slices = [[v if v in evidence else None for v in fam] for _, fam in fams]
            subs = ["".join(self._sym(v) for v in fam if v not in evidence) for _, fam in fams]
            subs += [self._sym(n) for n in indicators]
            eq = ",".join(subs) + "->" + "".join(self._sym(v) for v in outputs)
            plan = ([n for n, _ in fams], slices, eq)
            self._cache[plan_key] = plan
        nodes, slices, eq = plan
        ops = []
        for n, sl in zip(nodes, slices, strict=True):
            t = cpds[n]
            if any(v is not None for v in sl):
                t = t[tuple(slice(None) if v is None else evidence[v] for v in sl)]
            ops.append(t)
        for n in indicators:
            ops.append(
                indicator_values[n]
                if indicator_values is not None
                else torch.ones(self.card(n), dtype=_DTYPE)
            )
        expr = self._expression(("single", eq), eq, [tuple(o.shape) for o in ops])
        return expr(*ops, backend="torch")

    def _contract_rows(
        self, cpds: Mapping[str, Tensor], rows: Tensor, outputs: Sequence[str], *, prune: bool = True
    ) -> Tensor:
        """``P(outputs, evidence_b)`` per row ``b``: shape ``(B, *cards)``.

        A column observed in every row of the chunk is gathered out of each CPD row by row (its
        variable leaves the contraction); a column observed in some rows enters as a one-hot
        factor ``(B, card)`` with ones where missing; an unobserved column is summed over.
        """
        col = {n: j for j, n in enumerate(self.nodes)}
        miss = torch.isnan(rows)
        observed = {n for n in self.nodes if not bool(miss[:, col[n]].all())}
        full = {n for n in observed if not bool(miss[:, col[n]].any()) and n not in outputs}
        nodes = self._relevant(set(outputs) | observed) if prune else list(self.order)
        codes = {n: rows[:, col[n]].long() for n in full}
        b = oe.get_symbol(0)
        ops, subs = [], []
        for n in nodes:
            fam = self.parents[n] + [n]
            seen = [i for i, v in enumerate(fam) if v in full]
            rest = [i for i, v in enumerate(fam) if v not in full]
            t = cpds[n]
            if seen:
                t = t.permute(seen + rest)[tuple(codes[fam[i]] for i in seen)]
                subs.append(b + "".join(self._sym(fam[i]) for i in rest))
            else:
                subs.append("".join(self._sym(v) for v in fam))
            ops.append(t)
        for n in nodes:
            if n in observed and n not in full:
                x = rows[:, col[n]]
                f = torch.nn.functional.one_hot(x.nan_to_num(0.0).long(), self.card(n)).to(_DTYPE)
                f[miss[:, col[n]]] = 1.0
                ops.append(f)
                subs.append(b + self._sym(n))
        if not any(b in sub for sub in subs):  # no evidence at all: ones keep the batch index
            ops.append(torch.ones(len(rows), dtype=_DTYPE))
            subs.append(b)
        eq = ",".join(subs) + "->" + b + "".join(self._sym(v) for v in outputs)
        expr = self._expression(("rows", eq), eq, [tuple(o.shape) for o in ops])
        return expr(*ops, backend="torch")

    def _rows_in_chunks(self, rows: Tensor, fn: Any) -> Tensor:
        return torch.cat([fn(rows[i : i + _BATCH]) for i in range(0, len(rows), _BATCH)], 0)

    # --------------------------------------------------------------------------- scoring
    def log_prob_items(self, data: Any, params: Mapping[str, Tensor]) -> Tensor:
        """Per-row ``log P(observed entries)``, missing entries summed out (exact)."""
        cpds = self._params_cpds(params)
        return self._rows_in_chunks(data, lambda r: self._contract_rows(cpds, r, ()).log())

    def latent_posterior(self, data: Any, params: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Posterior marginals ``(n, card)`` of every node with a missing value in ``data``."""
        cpds = self._params_cpds(params)
        miss = [n for j, n in enumerate(self.nodes) if bool(torch.isnan(data[:, j]).any())]
        out = {}
        for n in miss:
            p = self._rows_in_chunks(data, lambda r, n=n: self._contract_rows(cpds, r, (n,)))
            out[n] = p / p.sum(-1, keepdim=True)
        return out

    def latent_map(self, data: Any, params: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Most probable state of each node with missing values, per row (marginal argmax)."""
        return {k: v.argmax(-1) for k, v in self.latent_posterior(data, params).items()}

    def sample_items(
        self,
        n: int,
        params: Mapping[str, Tensor],
        *,
        generator: torch.Generator | None = None,
        evidence: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> dict[str, Any]:
        """``n`` rows of state codes: ancestral sampling, or exact sampling given ``evidence``.

        Given evidence of probability at least 1e-3, ancestral draws are kept when they match
        it (rejection: exact and vectorised); rarer evidence draws nodes in topological order
        from ``P(X | drawn so far, evidence)``, each step one batched contraction.
        """
        if kwargs:
            raise ValueError(f"unknown sample option(s) {sorted(kwargs)}; BayesianNetwork takes evidence=.")
        cpds = self._params_cpds(params)
        col = {x: j for j, x in enumerate(self.nodes)}
        ev = self._evidence_codes(evidence or {})
        if ev:
            p_e = float(self._contract_single(cpds, ev, ()))
            if not p_e > 0:
                raise ValueError(f"evidence {dict(evidence or {})} has probability zero under the network.")
            if p_e >= _REJECTION_MIN_P:
                kept: list[Tensor] = []
                got = 0
                while got < n:
                    m = min(int(1.2 * (n - got) / p_e) + 16, 1_000_000)
                    draw = self.sample_items(m, params, generator=generator)["data"]
                    ok = torch.ones(m, dtype=torch.bool)
                    for x, c in ev.items():
                        ok &= draw[:, col[x]] == c
                    kept.append(draw[ok])
                    got += int(ok.sum())
                return {"data": torch.cat(kept, 0)[:n]}
        rows = torch.full((n, len(self.nodes)), math.nan, dtype=_DTYPE)
        for x, c in ev.items():
            rows[:, col[x]] = float(c)
        for x in self.order:
            if x in ev:
                continue
            if ev:
                p = self._rows_in_chunks(rows, lambda r, x=x: self._contract_rows(cpds, r, (x,)))
            else:
                idx = torch.zeros(n, dtype=torch.long)
                for par in self.parents[x]:
                    idx = idx * self.card(par) + rows[:, col[par]].long()
                p = cpds[x].reshape(-1, self.card(x))[idx]
            rows[:, col[x]] = torch.multinomial(p / p.sum(-1, keepdim=True), 1, generator=generator)[:, 0].to(
                _DTYPE
            )
        return {"data": rows}

    # ------------------------------------------------------------------------ queries
    def _evidence_codes(self, evidence: Mapping[str, Any]) -> dict[str, int]:
        if not isinstance(evidence, Mapping):
            raise TypeError(
                f"evidence must be a dict of node -> state or a DataFrame; got {type(evidence).__name__}."
            )
        self._require_states()
        return {self._check_node(k, "evidence"): self._code(k, v, "evidence") for k, v in evidence.items()}

    def _variables(self, variables: Any, exclude: Sequence[str] = ()) -> list[str]:
        if variables is None:
            return [n for n in self.nodes if n not in exclude]
        if isinstance(variables, str):
            variables = [variables]
        out = [self._check_node(v, "query") for v in variables]
        both = [v for v in out if v in exclude]
        if both:
            raise ValueError(f"query variable(s) {both} are also evidence; query the others.")
        if len(set(out)) != len(out):
            raise ValueError(f"query variables repeat a node: {out}.")
        return out

    def _fit_cpds(self, fit: Any) -> list[tuple[dict[str, Tensor], float]]:
        """CPD sets to average over: the estimates for point fits, posterior draws otherwise."""
        if not getattr(fit, "posterior", None):
            return [(self._params_cpds(fit.params), 1.0)]
        sets = fit._draw_params(200)
        return [(self._params_cpds(p), 1.0) for p in sets]

    def query(
        self, fit: Any, variables: Any = None, evidence: Any = None, *, joint: bool = False
    ) -> dict[str, Tensor] | Tensor:
        """Exact posterior marginals (or the joint) of ``variables`` given ``evidence``.

        Parameters
        ----------
        variables : str or list of str, optional
            Nodes to query (default: every node not in the evidence, in one pass).
        evidence : dict or pandas.DataFrame, optional
            ``{node: state}``, or a DataFrame of evidence rows (NaN/None where not observed)
            answered in one vectorised contraction.
        joint : bool, default False
            Return the joint table over ``variables`` (axes in their order) instead of a dict
            of marginals.

        Returns
        -------
        dict of str to Tensor, or Tensor
            Marginals ``(card,)`` per variable (``(n_rows, card)`` for a DataFrame), or the joint
            ``(*cards)`` (``(n_rows, *cards)``).  Posterior fits average ``P(. , e | theta_s)``
            over draws before normalising (the posterior predictive).
        """
        if hasattr(evidence, "columns"):
            return self._query_rows(fit, variables, evidence, joint)
        ev = self._evidence_codes(evidence or {})
        var = self._variables(variables, tuple(ev))
        if joint:
            size = math.prod(self.card(v) for v in var)
            if size > _MAX_JOINT:
                raise ValueError(
                    f"the joint of {len(var)} variables has {size} entries (> {_MAX_JOINT}); query fewer."
                )
            parts = [self._contract_single(c, ev, var) for c, _ in self._fit_cpds(fit)]
            total = torch.stack(parts).sum(0)
            z = float(total.sum())
            if not z > 0:
                raise ValueError(f"evidence {evidence} has probability zero under the network.")
            return total / z
        out: dict[str, Tensor] = {}
        for cpds, _ in self._fit_cpds(fit):
            if len(var) == 1:
                part = {var[0]: self._contract_single(cpds, ev, var)}
            else:
                # P(family of X, e) = theta_X * dZ/dtheta_X: one backward pass gives every family
                leaves = {n: cpds[n].detach().requires_grad_() for n in self._relevant(set(var) | set(ev))}
                with torch.enable_grad():
                    zt = self._contract_single({**cpds, **leaves}, ev, (), keep=var)
                    grads = torch.autograd.grad(zt, [leaves[v] for v in var])
                part = {
                    v: (g * cpds[v]).reshape(-1, self.card(v)).sum(0) for v, g in zip(var, grads, strict=True)
                }
            for k, v in part.items():
                out[k] = out[k] + v if k in out else v.detach()
        for k, v in out.items():
            z = float(v.sum())
            if not z > 0:
                raise ValueError(f"evidence {evidence} has probability zero under the network.")
            out[k] = v / z
        return out

    def _query_rows(self, fit: Any, variables: Any, frame: Any, joint: bool) -> dict[str, Tensor] | Tensor:
        rows = self._from_frame(frame)
        var = self._variables(variables)
        if joint:
            total = sum(
                self._rows_in_chunks(rows, lambda r, c=c: self._contract_rows(c, r, var))
                for c, _ in self._fit_cpds(fit)
            )
            assert isinstance(total, Tensor)
            flat = total.reshape(len(rows), -1)
            return (flat / flat.sum(-1, keepdim=True)).reshape(total.shape)
        out: dict[str, Tensor] = {}
        for cpds, _ in self._fit_cpds(fit):
            for v in var:
                p = self._rows_in_chunks(rows, lambda r, v=v, c=cpds: self._contract_rows(c, r, (v,)))
                out[v] = out[v] + p if v in out else p
        for p in out.values():
            zero = (p.sum(-1) <= 0).nonzero().reshape(-1)
            if len(zero):
                raise ValueError(
                    f"evidence row(s) {[frame.index[i] for i in zero[:5].tolist()]} have probability zero "
                    "under the network; drop them or check their states."
                )
        return {k: p / p.sum(-1, keepdim=True) for k, p in out.items()}

    def map_query(self, fit: Any, variables: Any = None, evidence: Any = None) -> dict[str, Any]:
        """Most probable joint assignment of ``variables`` given ``evidence`` (others summed out).

        Returns ``{node: state name}``.  With ``variables=None`` every non-evidence node is
        maximised jointly (MPE) by max-product elimination.
        """
        ev = self._evidence_codes(evidence or {})
        if variables is None:
            var = self._variables(None, tuple(ev))
            best = self._mpe(self._fit_cpds(fit)[0][0], ev) if not fit.posterior else None
            if best is not None:
                return {v: self.states[v][best[v]] for v in var}
        var = self._variables(variables, tuple(ev))
        table = self.query(fit, var, evidence, joint=True)
        assert isinstance(table, Tensor)
        flat = int(table.reshape(-1).argmax())
        out = {}
        for v, k in zip(reversed(var), reversed(table.shape), strict=True):
            flat, i = divmod(flat, k)
            out[v] = self.states[v][i]
        return {v: out[v] for v in var}

    def _mpe(self, cpds: Mapping[str, Tensor], ev: Mapping[str, int]) -> dict[str, int]:
        """Max-product variable elimination (log space, min-degree order) with backtracking."""
        factors: list[tuple[tuple[str, ...], Tensor]] = []
        for n in self.nodes:
            fam = self.parents[n] + [n]
            t = cpds[n]
            if any(v in ev for v in fam):
                t = t[tuple(ev[v] if v in ev else slice(None) for v in fam)]
            factors.append((tuple(v for v in fam if v not in ev), t.clamp_min(1e-300).log()))
        free = [n for n in self.nodes if n not in ev]
        trace: list[tuple[str, tuple[str, ...], Tensor]] = []
        remaining = set(free)
        while remaining:
            scopes = [s for s, _ in factors]
            sizes = {x: len({u for s in scopes if x in s for u in s}) for x in remaining}
            v = min(sorted(remaining), key=sizes.__getitem__)
            remaining.discard(v)
            touching = [f for f in factors if v in f[0]]
            factors = [f for f in factors if v not in f[0]]
            scope = tuple(sorted({u for s, _ in touching for u in s}, key=self.nodes.index))
            total = torch.zeros((1,) * len(scope), dtype=_DTYPE)
            for s, t in touching:
                perm = [s.index(u) for u in scope if u in s]
                t = t.permute(perm) if s else t
                shape = [self.card(u) if u in s else 1 for u in scope]
                total = total + t.reshape(shape)
            axis = scope.index(v)
            best = total.argmax(axis)
            rest = tuple(u for u in scope if u != v)
            factors.append((rest, total.amax(axis)))
            trace.append((v, rest, best))
        assign: dict[str, int] = {}
        for v, rest, best in reversed(trace):
            assign[v] = int(best[tuple(assign[u] for u in rest)]) if rest else int(best)
        return assign

    def cpd_table(self, fit: Any, node: str) -> Any:
        """The fitted CPD of ``node`` as a DataFrame: one row per parent configuration."""
        import pandas as pd

        node = self._check_node(node, "cpd_table")
        t = fit.params[_cpd_site(node)].reshape(self._n_configs(node), self.card(node))
        if self.parents[node]:
            index = pd.MultiIndex.from_product(
                [self.states[p] for p in self.parents[node]], names=self.parents[node]
            )
        else:
            index = pd.Index([""], name=None)
        return pd.DataFrame(t.numpy(), index=index, columns=pd.Index(self.states[node], name=node))

    def treewidth(self) -> int:
        """Treewidth upper bound of the moral graph (min-degree heuristic)."""
        from networkx.algorithms.approximation import treewidth_min_degree

        moral = nx.moral_graph(self.dag)
        return int(treewidth_min_degree(moral)[0]) if moral.number_of_nodes() else 0

    # ------------------------------------------------------------------- closed-form EM
    def em_defaults(self) -> dict[str, Any]:
        return {"init": "counts", "tol": 1e-8, "max_iter": 500}

    def init_params(self, data: Any, *, init: Any, generator: torch.Generator) -> dict[str, Tensor]:
        """EM start: the given CPDs, a dict, ``"counts"`` (rows observing the family, +1) or ``"random"``."""
        if isinstance(init, Mapping):
            out = {}
            for n in self.nodes:
                key = _cpd_site(n)
                src = init.get(key, init.get(n))
                if src is None:
                    raise ValueError(f"init misses node {n!r} (key {key!r}).")
                out[key] = self._check_cpds(
                    {**{m: torch.ones(self._shape(m)) / self.card(m) for m in self.nodes}, n: src}
                )[n]
            return out
        if init not in ("counts", "random", "given"):
            raise ValueError(
                f"init={init!r} is not a strategy; expected 'counts', 'random', 'given' or a dict."
            )
        if init == "given" or (init == "counts" and self.cpds is not None):
            if self.cpds is None:
                raise ValueError("init='given' needs cpds=... in the constructor.")
            return {_cpd_site(n): t.clone() for n, t in self.cpds.items()}
        out = {}
        col = {n: j for j, n in enumerate(self.nodes)}
        for n in self.nodes:
            shape = (self._n_configs(n), self.card(n))
            gamma = -torch.log(torch.rand(shape, dtype=_DTYPE, generator=generator))  # Dirichlet(1) draws
            noise = gamma / gamma.sum(-1, keepdim=True)
            fam = [col[v] for v in self.parents[n] + [n]]
            full = ~torch.isnan(data[:, fam]).any(1)
            if init == "random" or not bool(full.any()):
                out[_cpd_site(n)] = noise
                continue
            counts = self._family_counts(data[full], n) + 1.0
            out[_cpd_site(n)] = counts / counts.sum(-1, keepdim=True)
        return out

    def _family_counts(self, rows: Tensor, node: str) -> Tensor:
        col = {n: j for j, n in enumerate(self.nodes)}
        idx = torch.zeros(len(rows), dtype=torch.long)
        for v in self.parents[node] + [node]:
            idx = idx * self.card(v) + rows[:, col[v]].long()
        size = self._n_configs(node) * self.card(node)
        return torch.bincount(idx, minlength=size).to(_DTYPE).reshape(self._n_configs(node), self.card(node))

    def e_step(self, data: Any, params: Mapping[str, Tensor]) -> tuple[dict[str, Tensor], float]:
        """Expected family counts (complete rows counted, incomplete rows by one backward pass)."""
        cpds = self._params_cpds(params)
        complete = ~torch.isnan(data).any(1)
        stats = {n: torch.zeros(self._n_configs(n), self.card(n), dtype=_DTYPE) for n in self.nodes}
        ll = 0.0
        if bool(complete.any()):
            rows = data[complete]
            for n in self.nodes:
                c = self._family_counts(rows, n)
                stats[n] += c
                ll += float((c * cpds[n].reshape(c.shape).log().nan_to_num(0.0, neginf=0.0)).sum())
        rest = data[~complete]
        for i in range(0, len(rest), _BATCH):
            chunk = rest[i : i + _BATCH]
            leaves = {n: cpds[n].detach().clone().requires_grad_() for n in self.nodes}
            with torch.enable_grad():
                z = self._contract_rows(leaves, chunk, (), prune=False)
                total = z.log().sum()
                grads = torch.autograd.grad(total, [leaves[n] for n in self.nodes])
            ll += float(total.detach())
            for n, g in zip(self.nodes, grads, strict=True):
                stats[n] += (g * cpds[n]).reshape(stats[n].shape)
        return stats, ll

    def m_step(self, data: Any, stats: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """CPD rows ``counts / row total`` (MAP: ``+ alpha - 1``); unseen rows uniform."""
        out = {}
        for n in self.nodes:
            c = stats[n]
            if self.map_estimate:
                c = (c + self._alpha(n) - 1.0).clamp_min(0.0)
            tot = c.sum(-1, keepdim=True)
            out[_cpd_site(n)] = torch.where(
                tot > 0, c / tot.clamp_min(1e-300), torch.full_like(c, 1.0 / c.shape[-1])
            )
        return out

    def plot_fit(self, data: Any, params: Mapping[str, Tensor], *, ax: Any = None, **kwargs: Any) -> Any:
        """Draw the DAG (layered by topological generation) on matplotlib axes."""
        import matplotlib.pyplot as plt

        if ax is None:
            _, ax = plt.subplots(figsize=(8, 6))
        g = self._layered()
        pos = nx.multipartite_layout(g, subset_key="layer", align="horizontal")
        pos = {k: (x, -y) for k, (x, y) in pos.items()}
        nx.draw_networkx(
            g,
            pos=pos,
            ax=ax,
            node_color="#cde",
            node_size=kwargs.get("node_size", 900),
            font_size=kwargs.get("font_size", 8),
            arrows=True,
        )
        ax.set_axis_off()
        return ax

    def _layered(self) -> nx.DiGraph:
        g = nx.DiGraph(self.dag)
        for layer, nodes in enumerate(nx.topological_generations(g)):
            for n in nodes:
                g.nodes[n]["layer"] = layer
        return g


# ------------------------------------------------------------------------------ BIF
_VAR = re.compile(r"variable\s+([^\s{]+)\s*\{[^}]*?type\s+discrete\s*\[\s*(\d+)\s*\]\s*\{([^}]*)\}", re.S)
_PROB = re.compile(r"probability\s*\(\s*([^|)]+?)\s*(?:\|\s*([^)]*))?\)\s*\{(.*?)\}", re.S)


def read_bif(path: str | Path) -> BayesianNetwork:
    """Read a network in BIF format (``.bif`` or ``.bif.gz``, as in the bnlearn repository).

    The parents of each node keep the order of its ``probability ( X | parents )`` block.
    """
    p = Path(path)
    raw = gzip.open(p, "rt").read() if p.suffix == ".gz" else p.read_text()
    text = re.sub(r"//[^\n]*", "", raw)
    states: dict[str, list[str]] = {}
    for name, k, vals in _VAR.findall(text):
        s = [v.strip() for v in vals.split(",") if v.strip()]
        if len(s) != int(k):
            raise ValueError(f"{p.name}: variable {name!r} declares {k} states but lists {len(s)}.")
        states[name] = s
    g = nx.DiGraph()
    g.add_nodes_from(states)
    cpds: dict[str, Any] = {}
    blocks = _PROB.findall(text)
    for child, pars, _ in blocks:
        for par in [q.strip() for q in pars.split(",") if q.strip()]:
            g.add_edge(par, child.strip())
    for child, pars, body in blocks:
        child = child.strip()
        parents = [q.strip() for q in pars.split(",") if q.strip()]
        card = len(states[child])
        shape = tuple(len(states[q]) for q in parents) + (card,)
        table = np.zeros(shape)
        code = [{s: i for i, s in enumerate(states[q])} for q in parents]
        for line in body.split(";"):
            line = line.strip()
            if not line:
                continue
            if line.startswith("table"):
                nums = np.array([float(x) for x in re.split(r"[,\s]+", line[5:].strip()) if x])
                table = nums.reshape((card, -1)).T.reshape(shape) if parents else nums.reshape(shape)
                continue
            m = re.match(r"\(([^)]*)\)\s*(.*)", line, re.S)
            if m is None:
                raise ValueError(f"{p.name}: cannot read line {line[:60]!r} of node {child!r}.")
            cfg = [c.strip() for c in m.group(1).split(",")]
            idx = tuple(code[i][c] for i, c in enumerate(cfg))
            table[idx] = [float(x) for x in re.split(r"[,\s]+", m.group(2).strip()) if x]
        cpds[child] = table
    if set(cpds) != set(states):
        raise ValueError(f"{p.name}: node(s) {sorted(set(states) - set(cpds))} have no probability block.")
    order = {n: i for i, n in enumerate(states)}
    h = nx.DiGraph()
    h.add_nodes_from(states)
    for child, pars, _ in sorted(blocks, key=lambda b: order[b[0].strip()]):
        for par in [q.strip() for q in pars.split(",") if q.strip()]:
            h.add_edge(par, child.strip())
    return BayesianNetwork(h, states=states, cpds=cpds)


def write_bif(
    model: BayesianNetwork,
    path: str | Path,
    params: Mapping[str, Tensor] | None = None,
    *,
    name: str = "probgen",
) -> None:
    """Write ``model`` (its given CPDs, or ``params`` of a fit) in BIF format."""
    if params is not None:
        cpds = {n: t.reshape(model._shape(n)) for n, t in model._params_cpds(params).items()}
    elif model.cpds is not None:
        cpds = {n: t.reshape(model._shape(n)) for n, t in model.cpds.items()}
    else:
        raise ValueError("write_bif needs CPDs: pass params=fit.params or build the network with cpds=.")
    lines = [f"network {name} {{\n}}"]
    for n in model.nodes:
        s = ", ".join(str(x) for x in model.states[n])
        lines.append(f"variable {n} {{\n  type discrete [ {model.card(n)} ] {{ {s} }};\n}}")
    for n in model.nodes:
        par = model.parents[n]
        t = cpds[n].numpy()
        head = f"probability ( {n}" + (f" | {', '.join(par)} )" if par else " )") + " {"
        body = []
        if not par:
            body.append("  table " + ", ".join(repr(float(x)) for x in t) + ";")
        else:
            for idx in np.ndindex(*t.shape[:-1]):
                cfg = ", ".join(str(model.states[q][i]) for q, i in zip(par, idx, strict=True))
                body.append(f"  ({cfg}) " + ", ".join(repr(float(x)) for x in t[idx]) + ";")
        lines.append(head + "\n" + "\n".join(body) + "\n}")
    Path(path).write_text("\n".join(lines) + "\n")


# ------------------------------------------------------------------------- structure learning
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
            from scipy.special import gammaln

            a_j, a_jk = self.ess / q, self.ess / (q * r)
            value = float(
                (gammaln(a_j) - gammaln(a_j + row[:, 0])).sum()
                + (gammaln(a_jk + counts) - gammaln(a_jk)).sum()
            )
        self.cache[key] = value
        return value


def _frame_codes(data: Any, states: Mapping[str, Sequence[Any]] | None) -> tuple[BayesianNetwork, np.ndarray]:
    if not hasattr(data, "columns"):
        raise TypeError(
            f"data must be a pandas DataFrame with one column per node; got {type(data).__name__}."
        )
    g = nx.DiGraph()
    g.add_nodes_from(str(c) for c in data.columns)
    bn = BayesianNetwork(g, states=states)
    codes = bn.prepare_data(data[list(g.nodes)]).numpy()
    complete = ~np.isnan(codes).any(1)
    if not complete.any():
        raise ValueError("structure learning needs complete rows; every row has a missing value.")
    return bn, codes[complete].astype(np.int64)


def structure_score(
    dag: nx.DiGraph,
    data: Any,
    *,
    score: str = "bic",
    equivalent_sample_size: float = 10.0,
    states: Any = None,
) -> float:
    """BIC (``log L - k/2 log n``) or BDeu score of ``dag`` on the complete rows of ``data``."""
    bn, codes = _frame_codes(data, states)
    idx = {n: i for i, n in enumerate(bn.nodes)}
    sc = _Scorer(codes, [bn.card(n) for n in bn.nodes], bn.nodes, score, equivalent_sample_size)
    return sum(sc.local(idx[n], frozenset(idx[p] for p in dag.predecessors(n))) for n in bn.nodes)


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
    bn, codes = _frame_codes(data, states)
    names = bn.nodes
    idx = {n: i for i, n in enumerate(names)}
    sc = _Scorer(codes, [bn.card(n) for n in names], names, score, equivalent_sample_size)
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

    for _ in range(max_iter):
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
