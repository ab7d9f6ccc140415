"""Exact inference on a discrete Bayesian network: one tensor contraction, or a junction tree.

Each query goes the cheaper of two ways, estimated per network and query pattern (kept in
:attr:`Network.plans`): the junction tree (:mod:`probgen.models._bn_junction`, its engines in
:mod:`probgen.models._bn_flat`), whose cost is its total clique table size and its calls, or
the single contraction below, whose cost is opt_einsum's flop count for its path; the tree is
always taken when the contraction would be refused for its size, and a query both refuse is
refused naming the tree's largest clique.

A contraction answer is a contraction (:mod:`opt_einsum`) of the CPDs of the query's and the evidence's
ancestors (barren nodes sum to one and are pruned).  Its path is compiled once per equation and
operand shapes (a module-level memo of a pure function) and its plan (which CPDs, which axes the
evidence slices) once per network and evidence pattern (:attr:`Network.plans`).  A batch of
evidence rows is one contraction with a batch index: each observed value enters as a one-hot
factor, a missing one as a factor of ones.  All marginals at once come from one backward pass
(``P(X = x, e) = d Z / d lambda_X[x]``), and the E-step's expected family counts the same way
(``theta * d log Z / d theta``).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from typing import Any

import networkx as nx
import opt_einsum as oe
import torch
from networkx.algorithms.approximation import treewidth_min_degree
from torch import Tensor

from probgen.models import _bn_flat as flat_engine
from probgen.models import _bn_junction as jt
from probgen.models._bn_network import Network

__all__ = [
    "contract_chunks",
    "contract_rows",
    "contract_single",
    "expected_counts",
    "impute",
    "joint",
    "map_query",
    "marginals",
    "most_probable_explanation",
    "query",
    "row_marginals",
    "sample",
    "treewidth",
]

_DTYPE = torch.float64
_BATCH = 2048  # rows per batched contraction (memory bound)
_MAX_JOINT = 2**22  # largest joint table a query or map_query builds
_REJECTION_MIN_P = 1e-3  # sample(evidence=...) rejects ancestral draws when P(evidence) is at least this
_MAX_INTERMEDIATE = 2**27  # entries (1 GiB of float64): larger contractions are refused up front

CPDs = Mapping[str, Tensor]


def treewidth(dag: nx.DiGraph) -> int:
    """Treewidth upper bound of the moral graph (min-degree heuristic)."""
    moral = nx.moral_graph(dag)
    return int(treewidth_min_degree(moral)[0]) if moral.number_of_nodes() else 0


@functools.lru_cache(maxsize=4096)
def _compiled(eq: str, shapes: tuple[tuple[int, ...], ...], batched: bool) -> tuple[Any, float, float]:
    """The contraction expression of ``eq`` on operands of ``shapes``, its largest intermediate
    and its cost (opt_einsum's flop count)."""
    # batched contractions: plain greedy paths blow up with the batch index on every evidence
    # factor (alarm, 2,048 rows: 220 GB); the best of 128 randomised greedy paths (fewest flops)
    # is compiled in ~0.6 s once and runs in ~50 ms
    small = "auto-hq" if len(shapes) <= 24 else "greedy"
    optimize = oe.RandomGreedy(max_repeats=128) if batched else small
    path, info = oe.contract_path(eq, *shapes, shapes=True, optimize=optimize)
    expr = oe.contract_expression(eq, *shapes, optimize=path)
    return expr, float(info.largest_intermediate), float(info.opt_cost)


def _expression(net: Network, eq: str, shapes: list[tuple[int, ...]], batched: bool) -> Any:
    expr, largest, _ = _compiled(eq, tuple(shapes), batched)
    if largest > _MAX_INTERMEDIATE:
        rows = f" for {shapes[-1][0]} rows at once" if batched else ""
        raise ValueError(
            f"exact inference on this network would build a table of {int(largest):,} "
            f"entries{rows} (limit {_MAX_INTERMEDIATE:,}); the moral graph's treewidth is <= "
            f"{treewidth(net.dag)}.  Query fewer variables, add evidence, or pass fewer rows."
        )
    return expr


def _single_plan(
    net: Network, evidence: Mapping[str, int], outputs: Sequence[str], keep: Sequence[str]
) -> Any:
    """Which CPDs, which of their axes the evidence slices, and the equation: once per pattern."""
    plan_key = ("plan", tuple(sorted(evidence)), tuple(outputs), tuple(keep))
    plan = net.plans.get(plan_key)
    if plan is None:
        nodes = net.relevant(set(outputs) | set(evidence) | set(keep))
        fams = [(n, net.parents[n] + [n]) for n in nodes]
        slices = [[v if v in evidence else None for v in fam] for _, fam in fams]
        subs = ["".join(net.sym[v] for v in fam if v not in evidence) for _, fam in fams]
        eq = ",".join(subs) + "->" + "".join(net.sym[v] for v in outputs)
        shapes = tuple(tuple(net.card(v) for v in fam if v not in evidence) for _, fam in fams)
        plan = ([n for n, _ in fams], slices, eq, shapes)
        net.plans[plan_key] = plan
    return plan


def contract_single(
    net: Network,
    cpds: CPDs,
    evidence: Mapping[str, int],
    outputs: Sequence[str],
    keep: Sequence[str] = (),
) -> Tensor:
    """``sum P(outputs, evidence)`` over the rest, one evidence assignment (sliced CPDs).

    Barren nodes are pruned except ``keep`` (whose CPDs a caller differentiates).
    """
    plan = _single_plan(net, evidence, outputs, keep)
    nodes, slices, eq, _ = plan
    ops = []
    for n, sl in zip(nodes, slices, strict=True):
        t = cpds[n]
        if any(v is not None for v in sl):
            t = t[tuple(slice(None) if v is None else evidence[v] for v in sl)]
        ops.append(t)
    expr = _expression(net, eq, [tuple(o.shape) for o in ops], False)
    return expr(*ops, backend="torch")


def contract_rows(
    net: Network, cpds: CPDs, rows: Tensor, outputs: Sequence[str], *, prune: bool = True
) -> Tensor:
    """``P(outputs, evidence_b)`` per row ``b``: shape ``(B, *cards)``.

    A column observed in every row of the chunk is gathered out of each CPD row by row (its
    variable leaves the contraction); a column observed in some rows enters as a one-hot
    factor ``(B, card)`` with ones where missing; an unobserved column is summed over.
    """
    col = net.col
    miss = torch.isnan(rows)
    observed = {n for n in net.nodes if not bool(miss[:, col[n]].all())}
    full = {n for n in observed if not bool(miss[:, col[n]].any()) and n not in outputs}
    nodes = net.relevant(set(outputs) | observed) if prune else list(net.order)
    codes = {n: rows[:, col[n]].long() for n in full}
    b = oe.get_symbol(0)
    ops, subs = [], []
    for n in nodes:
        fam = net.parents[n] + [n]
        seen = [i for i, v in enumerate(fam) if v in full]
        rest = [i for i, v in enumerate(fam) if v not in full]
        t = cpds[n]
        if seen:
            t = t.permute(seen + rest)[tuple(codes[fam[i]] for i in seen)]
            subs.append(b + "".join(net.sym[fam[i]] for i in rest))
        else:
            subs.append("".join(net.sym[v] for v in fam))
        ops.append(t)
    for n in nodes:
        if n in observed and n not in full:
            x = rows[:, col[n]]
            f = torch.nn.functional.one_hot(x.nan_to_num(0.0).long(), net.card(n)).to(_DTYPE)
            f[miss[:, col[n]]] = 1.0
            ops.append(f)
            subs.append(b + net.sym[n])
    if not any(b in sub for sub in subs):  # no evidence at all: ones keep the batch index
        ops.append(torch.ones(len(rows), dtype=_DTYPE))
        subs.append(b)
    eq = ",".join(subs) + "->" + b + "".join(net.sym[v] for v in outputs)
    expr = _expression(net, eq, [tuple(o.shape) for o in ops], True)
    return expr(*ops, backend="torch")


def contract_chunks(net: Network, cpds: CPDs, rows: Tensor, outputs: Sequence[str]) -> Tensor:
    """``P(outputs, evidence_b)`` per row, ``(B, *cards)``: by the junction tree (chunks of rows)
    or by :func:`contract_rows` (chunks of at most ``_BATCH`` rows), whichever is cheaper."""
    if _use_tree(net, cpds, {}, outputs, keep=_observed(net, rows), rows=len(rows)):
        if not outputs:
            return torch.cat(
                [
                    flat_engine.tree_evidence(net, cpds, {}, chunk)
                    for chunk in flat_engine.tree_chunks(net, rows)
                ]
            )
        if len(outputs) == 1:
            return row_tables(net, cpds, rows, outputs)[outputs[0]]
        return flat_engine.tree_joint(net, cpds, {}, outputs, rows)
    return _contracted_chunks(net, cpds, rows, outputs)


def _contracted_chunks(net: Network, cpds: CPDs, rows: Tensor, outputs: Sequence[str]) -> Tensor:
    try:
        return _contract_chunks(net, cpds, rows, outputs)
    except ValueError as err:
        raise _refusal(net, err) from None


def _contract_chunks(net: Network, cpds: CPDs, rows: Tensor, outputs: Sequence[str]) -> Tensor:
    """:func:`contract_rows` over chunks of at most ``_BATCH`` rows (memory bound), concatenated."""
    return torch.cat(
        [contract_rows(net, cpds, rows[i : i + _BATCH], outputs) for i in range(0, len(rows), _BATCH)], 0
    )


def expected_counts(net: Network, cpds: CPDs, data: Tensor) -> tuple[dict[str, Tensor], float]:
    """Expected family counts and the log-likelihood (complete rows counted, incomplete rows by
    one backward pass through their contraction)."""
    complete = ~torch.isnan(data).any(1)
    stats = {n: torch.zeros(net.n_configs(n), net.card(n), dtype=_DTYPE) for n in net.nodes}
    ll = 0.0
    if bool(complete.any()):
        rows = data[complete]
        for n in net.nodes:
            c = net.family_counts(rows, n)
            stats[n] += c
            ll += float((c * cpds[n].reshape(c.shape).log().nan_to_num(0.0, neginf=0.0)).sum())
    rest = data[~complete]
    if len(rest) and _use_tree(net, cpds, {}, (), keep=net.nodes, rows=len(rest), passes=3.0):
        more, part = flat_engine.tree_counts(net, cpds, rest)
        return {n: stats[n] + more[n] for n in net.nodes}, ll + part
    for i in range(0, len(rest), _BATCH):
        chunk = rest[i : i + _BATCH]
        leaves = {n: cpds[n].detach().clone().requires_grad_() for n in net.nodes}
        with torch.enable_grad():
            z = contract_rows(net, leaves, chunk, (), prune=False)
            total = z.log().sum()
            grads = torch.autograd.grad(total, [leaves[n] for n in net.nodes])
        ll += float(total.detach())
        for n, g in zip(net.nodes, grads, strict=True):
            stats[n] += (g * cpds[n]).reshape(stats[n].shape)
    return stats, ll


# ------------------------------------------------------------------ junction tree or contraction
_CONTRACT_MAX_NODES = 40  # larger pruned networks always take the junction tree (no path search)


def _refusal(net: Network, err: ValueError) -> ValueError:
    """The contraction's refusal, restated with the junction tree's largest clique when the tree
    is refused too (one limit on table sizes, ``_MAX_INTERMEDIATE``, for both)."""
    try:
        jt.check_size(net, jt.compile_tree(net), int(_MAX_INTERMEDIATE))
    except ValueError as tree_err:
        return ValueError(f"{tree_err}  The single contraction is refused too: {err}")
    return err


# one torch call with its Python around it, in nanoseconds (one multiply-add ~ 1 ns); the call
# counts below were fitted to cold single and all-marginal queries on alarm, child, insurance
# and hepar2 (a contraction costs ~20 us per operand, a tree pass ~60 us per level or ~50 us per
# clique)
_CALL_NS = 1e4


def _tree_cost(net: Network, cpds: CPDs, rows: int, targets: int) -> float:
    """Estimated nanoseconds of a junction-tree pass over ``rows`` evidence rows (inf when a
    clique is over the table limit): table work plus calls, per level of the tree for the
    level-synchronous engine, per clique for the other."""
    tree = jt.compile_tree(net)
    if tree.largest > min(_MAX_INTERMEDIATE, jt.MAX_CLIQUE):
        return math.inf
    chunks = math.ceil(rows / jt.row_chunk(tree, rows))
    if flat_engine.engine(net, cpds) == "flat":
        levels = len(flat_engine.compile_flat(net, tree).levels)
        return 6.0 * rows * tree.total + _CALL_NS * chunks * (6 * levels + 10)
    return 4.0 * rows * tree.total + _CALL_NS * chunks * (5 * len(tree.cliques) + targets)


def _contraction_cost(
    net: Network, ev: Mapping[str, int], outputs: Sequence[str], keep: Sequence[str], rows: int, passes: float
) -> float:
    """Estimated nanoseconds of the single contraction(s) (opt_einsum's flop count and the
    calls; a backward pass, ``passes > 1``, costs several calls per operand), inf when it
    would be refused or the pruned network is too large to search a path for."""
    nodes = net.relevant(set(outputs) | set(ev) | set(keep))
    if len(nodes) > _CONTRACT_MAX_NODES:
        return math.inf
    _, _, eq, shapes = _single_plan(net, ev, outputs, tuple(keep))
    _, largest, flops = _compiled(eq, shapes, False)
    if largest * rows > _MAX_INTERMEDIATE:
        return math.inf
    calls = 2 * len(nodes) * (1 if passes <= 1 else 3)
    return passes * (rows * flops + _CALL_NS * calls * math.ceil(rows / _BATCH))


def _use_tree(
    net: Network,
    cpds: CPDs,
    ev: Mapping[str, int],
    outputs: Sequence[str],
    *,
    keep: Sequence[str] = (),
    rows: int = 1,
    passes: float = 1.0,
) -> bool:
    """Whether the junction tree answers more cheaply than the single contraction (of
    ``outputs`` given ``ev``, ``keep`` unpruned, ``passes`` contractions per row); decided once
    per pattern (and power of two of rows), kept in ``net.plans``."""
    key = ("use-tree", tuple(sorted(ev)), tuple(outputs), tuple(keep), rows.bit_length(), passes)
    use = net.plans.get(key)
    if use is None:
        tree_cost = _tree_cost(net, cpds, rows, len(outputs))
        use = tree_cost < math.inf and tree_cost <= _contraction_cost(net, ev, outputs, keep, rows, passes)
        net.plans[key] = use
    return use


def _observed(net: Network, rows: Tensor) -> list[str]:
    """Nodes observed in at least one of ``rows``."""
    seen = (~torch.isnan(rows)).any(0).tolist()
    return [n for n, s in zip(net.nodes, seen, strict=True) if s]


def row_tables(net: Network, cpds: CPDs, rows: Tensor, var: Sequence[str]) -> dict[str, Tensor]:
    """``P(v, evidence_b)`` per row ``(B, card)`` for each of ``var``: one junction-tree pass
    per chunk of rows, or one batched contraction per variable, whichever is cheaper."""
    if _use_tree(net, cpds, {}, var, keep=_observed(net, rows), rows=len(rows), passes=len(var)):
        parts = [
            flat_engine.tree_marginals(net, cpds, {}, chunk, var)[0]
            for chunk in flat_engine.tree_chunks(net, rows)
        ]
        table = torch.cat(parts)
        return dict(zip(var, table.split([net.card(v) for v in var], 1), strict=True))
    return {v: _contracted_chunks(net, cpds, rows, (v,)) for v in var}


# ------------------------------------------------------------------------------ queries
def joint(
    net: Network, cpd_sets: Sequence[CPDs], ev: Mapping[str, int], var: list[str], evidence: Any
) -> Tensor:
    """``P(var | ev)`` as a table ``(*cards)``, averaged over CPD sets before normalising."""
    size = math.prod(net.card(v) for v in var)
    if size > _MAX_JOINT:
        raise ValueError(
            f"the joint of {len(var)} variables has {size} entries (> {_MAX_JOINT}); query fewer."
        )
    total = torch.stack([_joint_one(net, c, ev, var) for c in cpd_sets]).sum(0)
    z = float(total.sum())
    if not z > 0:
        raise ValueError(f"evidence {evidence} has probability zero under the network.")
    return total / z


def _joint_one(net: Network, cpds: CPDs, ev: Mapping[str, int], var: list[str]) -> Tensor:
    """``P(var, ev)`` by the junction tree or the single contraction, whichever is cheaper."""
    if _use_tree(net, cpds, ev, var):
        return flat_engine.tree_joint(net, cpds, ev, var, None)
    try:
        return contract_single(net, cpds, ev, var)
    except ValueError as err:
        raise _refusal(net, err) from None


def marginals(
    net: Network, cpd_sets: Sequence[CPDs], ev: Mapping[str, int], var: list[str], evidence: Any
) -> dict[str, Tensor]:
    """``P(v | ev)`` for each of ``var``: one junction-tree pass, or one contraction (one
    backward pass through it for several), whichever is cheaper."""
    passes = 3.0 if len(var) > 1 else 1.0
    if _use_tree(net, cpd_sets[0], ev, var, passes=passes):  # decided per pattern, whatever the CPDs
        table: Tensor | None = None
        total = 0.0
        for cpds in cpd_sets:
            m, z = flat_engine.tree_marginals(net, cpds, ev, None, var)
            table = m[0] if table is None else table + m[0]
            total += float(z[0])
        if not total > 0:
            raise ValueError(f"evidence {evidence} has probability zero under the network.")
        assert table is not None
        return dict(zip(var, (table / total).split([net.card(v) for v in var]), strict=True))
    out: dict[str, Tensor] = {}
    for cpds in cpd_sets:
        if len(var) == 1:
            part = {var[0]: _joint_one(net, cpds, ev, var)}
        else:
            # P(family of X, e) = theta_X * dZ/dtheta_X: one backward pass gives every family
            leaves = {n: cpds[n].detach().requires_grad_() for n in net.relevant(set(var) | set(ev))}
            with torch.enable_grad():
                try:
                    zt = contract_single(net, {**cpds, **leaves}, ev, (), keep=var)
                except ValueError as err:
                    raise _refusal(net, err) from None
                grads = torch.autograd.grad(zt, [leaves[v] for v in var])
            part = {v: (g * cpds[v]).reshape(-1, net.card(v)).sum(0) for v, g in zip(var, grads, strict=True)}
        for k, v in part.items():
            out[k] = out[k] + v if k in out else v.detach()
    for k, v in out.items():
        z = float(v.sum())
        if not z > 0:
            raise ValueError(f"evidence {evidence} has probability zero under the network.")
        out[k] = v / z
    return out


def row_marginals(
    net: Network, cpd_sets: Sequence[CPDs], rows: Tensor, var: list[str], joint_table: bool, index: Any
) -> dict[str, Tensor] | Tensor:
    """Marginals (or the joint) of ``var`` per evidence row, averaged over CPD sets."""
    if joint_table:
        total = torch.stack([contract_chunks(net, c, rows, var) for c in cpd_sets]).sum(0)
        flat = total.reshape(len(rows), -1)
        return (flat / flat.sum(-1, keepdim=True)).reshape(total.shape)
    out: dict[str, Tensor] = {}
    for cpds in cpd_sets:
        for v, p in row_tables(net, cpds, rows, var).items():
            out[v] = out[v] + p if v in out else p
    for p in out.values():
        zero = (p.sum(-1) <= 0).nonzero().reshape(-1)
        if len(zero):
            raise ValueError(
                f"evidence row(s) {[index[i] for i in zero[:5].tolist()]} have probability zero "
                "under the network; drop them or check their states."
            )
    return {k: p / p.sum(-1, keepdim=True) for k, p in out.items()}


def query(
    net: Network, cpd_sets: Sequence[CPDs], variables: Any, evidence: Any, joint_table: bool
) -> dict[str, Tensor] | Tensor:
    """Marginals (or the joint) of ``variables`` given ``evidence`` (a dict, or a DataFrame of rows)."""
    if hasattr(evidence, "columns"):
        rows = net.code_frame(evidence)
        return row_marginals(net, cpd_sets, rows, net.variables(variables), joint_table, evidence.index)
    ev = net.evidence_codes(evidence or {})
    var = net.variables(variables, tuple(ev))
    if joint_table:
        return joint(net, cpd_sets, ev, var, evidence)
    return marginals(net, cpd_sets, ev, var, evidence)


def map_query(
    net: Network, cpd_sets: Sequence[CPDs], variables: Any, evidence: Any, *, mpe: bool
) -> dict[str, Any]:
    """``{node: state name}`` of the most probable joint assignment of ``variables`` given
    ``evidence``: max-product elimination over every other node (``variables=None`` and ``mpe``),
    else the argmax of their joint."""
    ev = net.evidence_codes(evidence or {})
    if variables is None and mpe:
        if jt.compile_tree(net).largest <= min(_MAX_INTERMEDIATE, jt.MAX_CLIQUE):
            best = jt.mpe(net, cpd_sets[0], ev)
        else:
            best = most_probable_explanation(net, cpd_sets[0], ev)
        return {v: net.states[v][best[v]] for v in net.variables(None, tuple(ev))}
    var = net.variables(variables, tuple(ev))
    table = joint(net, cpd_sets, ev, var, evidence)
    flat = int(table.reshape(-1).argmax())
    out = {}
    for v, k in zip(reversed(var), reversed(table.shape), strict=True):
        flat, i = divmod(flat, k)
        out[v] = net.states[v][i]
    return {v: out[v] for v in var}


def most_probable_explanation(net: Network, cpds: CPDs, ev: Mapping[str, int]) -> dict[str, int]:
    """Max-product variable elimination (log space, min-degree order) with backtracking."""
    factors: list[tuple[tuple[str, ...], Tensor]] = []
    for n in net.nodes:
        fam = net.parents[n] + [n]
        t = cpds[n]
        if any(v in ev for v in fam):
            t = t[tuple(ev[v] if v in ev else slice(None) for v in fam)]
        factors.append((tuple(v for v in fam if v not in ev), t.clamp_min(1e-300).log()))
    free = [n for n in net.nodes if n not in ev]
    trace: list[tuple[str, tuple[str, ...], Tensor]] = []
    remaining = set(free)
    while remaining:
        scopes = [s for s, _ in factors]
        sizes = {x: len({u for s in scopes if x in s for u in s}) for x in remaining}
        v = min(sorted(remaining), key=sizes.__getitem__)
        remaining.discard(v)
        touching = [f for f in factors if v in f[0]]
        factors = [f for f in factors if v not in f[0]]
        scope = tuple(sorted({u for s, _ in touching for u in s}, key=net.col.__getitem__))
        total = torch.zeros((1,) * len(scope), dtype=_DTYPE)
        for s, t in touching:
            perm = [s.index(u) for u in scope if u in s]
            t = t.permute(perm) if s else t
            shape = [net.card(u) if u in s else 1 for u in scope]
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


# ---------------------------------------------------------------------------- imputation
def _checked_total(p: Tensor, rows: Tensor) -> Tensor:
    """``p`` (rows x states, unnormalised) normalised; rows of probability zero refused."""
    z = p.sum(-1, keepdim=True)
    zero = (z[:, 0] <= 0).nonzero().reshape(-1)
    if len(zero):
        raise ValueError(
            f"{len(zero)} row(s) have observed values of probability zero under the network "
            f"(e.g. codes {rows[int(zero[0])].tolist()}); drop them or check their states."
        )
    return p / z


def impute(
    net: Network,
    cpd_sets: Sequence[CPDs],
    rows: Tensor,
    method: str,
    num_samples: int,
    generator: torch.Generator | None,
) -> Tensor:
    """The missing codes (NaN) of ``rows`` filled given each row's observed codes.

    ``method="mean"``: each missing cell's most probable state under its posterior marginal
    ``P(X | observed cells of the row)`` (averaged over ``cpd_sets`` before normalising), one
    copy.  ``method="sample"``: ``num_samples`` joint draws of a row's missing cells from
    ``P(missing | observed)`` under ``cpd_sets[0]``, node by node in topological order (each
    node given the row's evidence and the nodes drawn before it: the chain rule, exact).  Every
    step is one batched contraction over the rows with missing cells.

    Returns
    -------
    Tensor
        ``(num_samples, n, n_nodes)`` codes, observed cells unchanged.
    """
    col = net.col
    holed = torch.isnan(rows).any(1).nonzero().reshape(-1)
    out = rows.unsqueeze(0).repeat(num_samples, 1, 1)
    if not len(holed):
        return out
    part = rows[holed]
    missing = [n for n in net.nodes if bool(torch.isnan(part[:, col[n]]).any())]
    if method == "mean":
        tables = [row_tables(net, c, part, missing) for c in cpd_sets]
        for n in missing:
            p = torch.stack([t[n] for t in tables]).sum(0)
            best = _checked_total(p, part).argmax(-1).to(_DTYPE)
            x = part[:, col[n]]
            out[0, holed, col[n]] = torch.where(torch.isnan(x), best, x)
        return out
    draws = part.repeat(num_samples, 1)  # copy-major: draws[s * m + i] is copy s of row i
    for n in (v for v in net.order if v in missing):
        x = draws[:, col[n]]
        gap = torch.isnan(x)
        p = _checked_total(contract_chunks(net, cpd_sets[0], draws[gap], (n,)), draws[gap])
        x[gap] = _draw(p, generator)
    out[:, holed] = draws.reshape(num_samples, len(holed), -1)
    return out


# ------------------------------------------------------------------------------ sampling
def _ancestral(net: Network, cpds: CPDs, n: int, generator: torch.Generator | None) -> Tensor:
    rows = torch.full((n, len(net.nodes)), math.nan, dtype=_DTYPE)
    for x in net.order:
        idx = torch.zeros(n, dtype=torch.long)
        for par in net.parents[x]:
            idx = idx * net.card(par) + rows[:, net.col[par]].long()
        p = cpds[x].reshape(-1, net.card(x))[idx]
        rows[:, net.col[x]] = _draw(p, generator)
    return rows


def _draw(p: Tensor, generator: torch.Generator | None) -> Tensor:
    return torch.multinomial(p / p.sum(-1, keepdim=True), 1, generator=generator)[:, 0].to(_DTYPE)


def sample(
    net: Network, cpds: CPDs, n: int, ev: Mapping[str, int], generator: torch.Generator | None, evidence: Any
) -> Tensor:
    """``n`` rows of state codes: ancestral sampling, or exact sampling given evidence ``ev``.

    Given evidence of probability at least ``_REJECTION_MIN_P``, ancestral draws are kept when
    they match it (rejection: exact and vectorised); rarer evidence draws nodes in topological
    order from ``P(X | drawn so far, evidence)``, each step one batched contraction.
    """
    if not ev:
        return _ancestral(net, cpds, n, generator)
    p_e = float(contract_single(net, cpds, ev, ()))
    if not p_e > 0:
        raise ValueError(f"evidence {dict(evidence or {})} has probability zero under the network.")
    if p_e >= _REJECTION_MIN_P:
        kept: list[Tensor] = []
        got = 0
        while got < n:
            m = min(int(1.2 * (n - got) / p_e) + 16, 1_000_000)
            draw = _ancestral(net, cpds, m, generator)
            ok = torch.ones(m, dtype=torch.bool)
            for x, c in ev.items():
                ok &= draw[:, net.col[x]] == c
            kept.append(draw[ok])
            got += int(ok.sum())
        return torch.cat(kept, 0)[:n]
    rows = torch.full((n, len(net.nodes)), math.nan, dtype=_DTYPE)
    for x, c in ev.items():
        rows[:, net.col[x]] = float(c)
    for x in net.order:
        if x not in ev:
            p = contract_chunks(net, cpds, rows, (x,))
            rows[:, net.col[x]] = _draw(p, generator)
    return rows
