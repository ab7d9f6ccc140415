"""Junction-tree inference on Bayesian networks, against the single contraction, brute force and pyAgrum.

Both engines of the tree (level by level on one buffer, and clique by clique) are forced in turn
and compared with references computed another way: the single opt_einsum contraction (sliced
CPDs, one evidence assignment at a time), sums over every joint assignment, and pyAgrum's
LazyPropagation on the same CPDs.
"""

from __future__ import annotations

import gzip
import itertools
import math
import os
import re

import networkx as nx
import numpy as np
import pandas as pd
import pgmpy
import pytest
import torch

import probgen.models._bn_inference as bnmod
from probgen.models import BayesianNetwork, read_bif
from probgen.models import _bn_flat as flat_engine
from probgen.models import _bn_junction as jt

EXAMPLES = os.path.join(os.path.dirname(pgmpy.__file__), "utils", "example_models")
ENGINES = ("flat", "cliques")
_CACHE: dict[str, BayesianNetwork] = {}
CPDS_OF: dict[int, dict] = {}  # CPDs of the networks the tests built, by id of the network


def bif(name: str) -> BayesianNetwork:
    if name not in _CACHE:
        _CACHE[name] = read_bif(os.path.join(EXAMPLES, f"{name}.bif.gz"))
    return _CACHE[name]


def fresh(name: str, engine: str) -> tuple:
    """A new fit of the network (caches of its own) with the tree engine forced, its network and CPDs.

    Read again rather than rebuilt from ``bn.dag``: that copy of the graph lists parents in node
    order, not in the order of the BIF's blocks that ``bn.cpds`` follow.
    """
    fit = read_bif(os.path.join(EXAMPLES, f"{name}.bif.gz")).as_fit()
    net = fit._net()
    net.plans["junction-engine"] = engine
    CPDS_OF[id(net)] = net.params_cpds(fit.params)
    return fit, net, CPDS_OF[id(net)]


def evidence_for(net, k: int, seed: int) -> dict[str, int]:
    """The ``k`` last nodes in topological order, observed as in a row drawn from the network
    (so the evidence has probability above zero)."""
    cpds = CPDS_OF[id(net)]  # registered by the test that built the network
    row = bnmod.sample(net, cpds, 1, {}, torch.Generator().manual_seed(seed), None)[0]
    return {n: int(row[net.col[n]]) for n in list(reversed(net.order))[:k]}


def reference_marginals(net, cpds, ev, var) -> dict[str, torch.Tensor]:
    """``P(v | ev)`` by one single contraction per variable."""
    out = {}
    for v in var:
        p = bnmod.contract_single(net, cpds, ev, [v])
        out[v] = p / p.sum()
    return out


@pytest.mark.parametrize("name", ["asia", "asia-tree", "alarm", "child", "insurance"])
@pytest.mark.parametrize("engine", ENGINES)
def test_all_marginals_equal_the_contraction(name, engine, monkeypatch):
    if name == "asia-tree":  # asia's cliques rather than its one-clique table
        monkeypatch.setattr(jt, "_ONE_CLIQUE", 1)
        name = "asia"
    _, net, cpds = fresh(name, engine)
    for ev in ({}, evidence_for(net, 3, 0)):
        ref_ev = ev
        var = [v for v in net.nodes if v not in ref_ev]
        ref = reference_marginals(net, cpds, ref_ev, var)
        m, z = flat_engine.tree_marginals(net, cpds, ref_ev, None, var)
        got = dict(zip(var, (m[0] / z[0]).split([net.card(v) for v in var]), strict=True))
        for v in var:
            torch.testing.assert_close(got[v], ref[v], atol=1e-12, rtol=0)
        p_ev = float(bnmod.contract_single(net, cpds, ref_ev, [])) if ref_ev else 1.0
        assert float(z[0]) == pytest.approx(p_ev, rel=1e-12)


@pytest.mark.parametrize("engine", ENGINES)
def test_queries_through_the_fit_use_the_tree_and_match(engine):
    fit, net, cpds = fresh("alarm", engine)
    ev = {"HRBP": "HIGH", "CO": "LOW"}
    got = fit.query(evidence=ev, labels=False)
    codes = net.evidence_codes(ev)
    assert any(k[0] == "calibration" for k in net.plans["kept"])  # answered by the tree
    ref = reference_marginals(net, cpds, codes, list(got))
    for v in got:
        torch.testing.assert_close(got[v], ref[v], atol=1e-12, rtol=0)
    again = fit.query("HYPOVOLEMIA", evidence=ev, labels=False)  # same evidence: the kept calibration
    torch.testing.assert_close(again["HYPOVOLEMIA"], ref["HYPOVOLEMIA"], atol=1e-12, rtol=0)


@pytest.mark.parametrize("engine", ENGINES)
def test_joint_of_variables_in_different_cliques_equals_the_contraction(engine):
    _, net, cpds = fresh("alarm", engine)
    var = ["HYPOVOLEMIA", "LVFAILURE", "HRBP"]
    for ev in ({}, {"CO": 0, "SAO2": 1}):
        got = flat_engine.tree_joint(net, cpds, ev, var, None)
        ref = bnmod.contract_single(net, cpds, ev, var)
        torch.testing.assert_close(got, ref, atol=1e-14, rtol=1e-12)


def random_rows(net, n: int, seed: int, p_missing: float) -> torch.Tensor:
    """Rows sampled from the network with cells hidden at random (NaN)."""
    g = torch.Generator().manual_seed(seed)
    rows = bnmod.sample(net, CPDS_OF[id(net)], n, {}, g, None)
    hide = torch.rand(rows.shape, generator=g, dtype=torch.float64) < p_missing
    return rows.masked_fill(hide, math.nan)


@pytest.mark.parametrize("name", ["asia", "alarm", "child", "insurance"])
@pytest.mark.parametrize("engine", ENGINES)
def test_batched_rows_equal_one_contraction_per_row(name, engine):
    _, net, cpds = fresh(name, engine)
    CPDS_OF[id(net)] = cpds
    rows = random_rows(net, 40, 1, 0.6)
    var = net.nodes[:3]
    got, _ = flat_engine.tree_marginals(net, cpds, {}, rows, var)
    ref = torch.cat([bnmod.contract_rows(net, cpds, rows, (v,)) for v in var], 1)
    torch.testing.assert_close(got, ref, atol=1e-14, rtol=1e-11)
    z = flat_engine.tree_evidence(net, cpds, {}, rows)
    torch.testing.assert_close(z, bnmod.contract_rows(net, cpds, rows, ()), atol=1e-300, rtol=1e-11)
    joint = flat_engine.tree_joint(net, cpds, {}, var[:2], rows)
    torch.testing.assert_close(joint, bnmod.contract_rows(net, cpds, rows, var[:2]), atol=1e-14, rtol=1e-11)


@pytest.mark.parametrize("engine", ENGINES)
def test_row_queries_impute_and_log_prob_through_the_fit_match(engine):
    fit, net, cpds = fresh("alarm", engine)
    CPDS_OF[id(net)] = cpds
    rows = random_rows(net, 30, 2, 0.5)
    frame = net.to_frame(rows)
    got = fit.query(["HYPOVOLEMIA", "LVFAILURE"], evidence=frame, labels=False)
    for v in got:
        p = bnmod.contract_rows(net, cpds, rows, (v,))
        torch.testing.assert_close(got[v], p / p.sum(-1, keepdim=True), atol=1e-12, rtol=0)
    ll = fit.log_prob(frame)
    ref = bnmod.contract_rows(net, cpds, rows, ()).log()
    torch.testing.assert_close(torch.as_tensor(np.asarray(ll)), ref, atol=1e-10, rtol=0)
    filled = fit.impute(frame)
    for v in ["HYPOVOLEMIA", "LVFAILURE", "HRBP"]:  # a few (each reference compiles a contraction)
        gap = torch.isnan(rows[:, net.col[v]])
        if bool(gap.any()):
            p = bnmod.contract_rows(net, cpds, rows[gap], (v,))
            p = p / p.sum(-1, keepdim=True)
            chosen = torch.tensor([net.states[v].index(s) for s in filled[v][gap.numpy()]])
            picked = p.gather(1, chosen[:, None])[:, 0]  # ties may go either way: compare probabilities
            torch.testing.assert_close(picked, p.max(-1).values, atol=1e-12, rtol=0)


@pytest.mark.parametrize("engine", ENGINES)
def test_expected_counts_equal_the_backward_pass(engine, monkeypatch):
    _, net, cpds = fresh("child", engine)
    CPDS_OF[id(net)] = cpds
    rows = random_rows(net, 60, 3, 0.4)
    got, ll = flat_engine.tree_counts(net, cpds, rows)
    monkeypatch.setattr(bnmod, "_use_tree", lambda *a, **k: False)
    ref, ref_ll = bnmod.expected_counts(net, cpds, rows)
    assert ll == pytest.approx(ref_ll, rel=1e-12)
    complete = ~torch.isnan(rows).any(1)
    for n in net.nodes:  # the reference counts complete rows directly; the tree was given every row
        torch.testing.assert_close(got[n], ref[n], atol=1e-10, rtol=0)
    assert not bool(complete.all())


def brute_force_mpe(net, cpds, ev):
    """Highest joint probability over every assignment consistent with ``ev``."""
    free = [v for v in net.nodes if v not in ev]
    best, arg = -1.0, None
    for states in itertools.product(*(range(net.card(v)) for v in free)):
        a = {**ev, **dict(zip(free, states, strict=True))}
        p = 1.0
        for n in net.nodes:
            p *= float(cpds[n][tuple(a[u] for u in net.parents[n] + [n])])
        if p > best:
            best, arg = p, a
    return best, arg


def joint_prob(net, cpds, a):
    return math.prod(float(cpds[n][tuple(a[u] for u in net.parents[n] + [n])]) for n in net.nodes)


def sprinkler_plus() -> BayesianNetwork:
    """A small network with a loop and a disconnected pair (the tree is a forest joined by empty separators)."""
    g = nx.DiGraph([("a", "b"), ("a", "c"), ("b", "d"), ("c", "d"), ("d", "e"), ("x", "y")])
    rng = np.random.default_rng(4)
    states = {n: ["s0", "s1", "s2"] if n in "cx" else ["s0", "s1"] for n in g.nodes}
    cpds = {}
    for n in g.nodes:
        shape = [len(states[p]) for p in g.predecessors(n)] + [len(states[n])]
        t = rng.random(shape) + 0.05
        cpds[n] = t / t.sum(-1, keepdims=True)
    return BayesianNetwork(g, states=states, cpds=cpds)


@pytest.mark.parametrize("one_clique", [4096, 1])  # tiny networks get one clique unless the limit is 1
@pytest.mark.parametrize("name", ["asia", "sprinkler_plus"])
def test_mpe_equals_brute_force(name, one_clique, monkeypatch):
    monkeypatch.setattr(jt, "_ONE_CLIQUE", one_clique)
    bn = sprinkler_plus() if name == "sprinkler_plus" else bif(name)
    fit = bn.as_fit()
    net = fit._net()
    cpds = {n: t.reshape(net.shape(n)) for n, t in net.params_cpds(fit.params).items()}
    for ev in ({}, {net.order[-1]: 1}, {net.order[-1]: 0, net.order[1]: 1}):
        best, _ = brute_force_mpe(net, cpds, ev)
        got = jt.mpe(net, net.params_cpds(fit.params), ev)
        assert joint_prob(net, cpds, {**ev, **got}) == pytest.approx(best, rel=1e-12)
        named = fit.map_query(evidence={k: net.states[k][v] for k, v in ev.items()})
        codes = {k: net.states[k].index(s) for k, s in named.items()}
        assert joint_prob(net, cpds, {**ev, **codes}) == pytest.approx(best, rel=1e-12)


def test_mpe_refuses_impossible_evidence():
    bn = BayesianNetwork(
        nx.DiGraph([("a", "b")]),
        states={"a": ["0", "1"], "b": ["0", "1"]},
        cpds={"a": [1.0, 0.0], "b": [[1.0, 0.0], [0.5, 0.5]]},
    )
    net = bn.as_fit()._net()
    with pytest.raises(ValueError, match="probability zero"):
        jt.mpe(net, net.params_cpds(bn.as_fit().params), {"b": 1})


@pytest.mark.parametrize("one_clique", [4096, 1])
def test_forest_marginals_equal_the_contraction(one_clique, monkeypatch):
    monkeypatch.setattr(jt, "_ONE_CLIQUE", one_clique)
    for engine in ENGINES:
        fit = sprinkler_plus().as_fit()
        net = fit._net()
        net.plans["junction-engine"] = engine
        cpds = net.params_cpds(fit.params)
        ev = {"e": 1, "y": 0}
        var = [v for v in net.nodes if v not in ev]
        m, z = flat_engine.tree_marginals(net, cpds, ev, None, var)
        got = dict(zip(var, (m[0] / z[0]).split([net.card(v) for v in var]), strict=True))
        ref = reference_marginals(net, cpds, ev, var)
        for v in var:
            torch.testing.assert_close(got[v], ref[v], atol=1e-13, rtol=0)
        assert (len(jt.compile_tree(net).cliques) == 1) == (one_clique > 1)


def test_the_tree_is_a_valid_junction_tree():
    net = bif("alarm").as_fit()._net()
    tree = jt.compile_tree(net)
    cliques = [set(c) for c in tree.cliques]
    for j, n in enumerate(net.nodes):  # each family in its home clique
        assert {net.col[v] for v in net.parents[n] + [n]} <= cliques[tree.home[j]]
    g = nx.Graph([(i, p) for i, p in enumerate(tree.parent) if p >= 0])
    assert nx.is_tree(g) and g.number_of_nodes() == len(cliques)
    for v in range(len(net.nodes)):  # running intersection: the cliques holding v are connected
        holding = [i for i, c in enumerate(cliques) if v in c]
        assert nx.is_connected(g.subgraph(holding))
    assert tree.largest == max(math.prod(net.card(net.nodes[v]) for v in c) for c in cliques)


def test_a_network_too_large_is_refused_with_the_clique_size(monkeypatch):
    monkeypatch.setattr(bnmod, "_MAX_INTERMEDIATE", 50)  # ALARM's largest clique has 144 entries
    fit = read_bif(os.path.join(EXAMPLES, "alarm.bif.gz")).as_fit()
    with pytest.raises(ValueError, match=r"junction-tree clique of 144 entries .*limit 50"):
        fit.query(evidence={"HRBP": "HIGH"})


def grid(n: int, k: int) -> BayesianNetwork:
    """An ``n`` x ``n`` grid of ``k``-state nodes, arcs right and down: treewidth ``n``."""
    g = nx.DiGraph()
    name = {(i, j): f"g{i}_{j}" for i in range(n) for j in range(n)}
    g.add_nodes_from(name.values())
    for (i, j), v in name.items():
        if i + 1 < n:
            g.add_edge(v, name[(i + 1, j)])
        if j + 1 < n:
            g.add_edge(v, name[(i, j + 1)])
    states = {v: [str(s) for s in range(k)] for v in g.nodes}
    cpds = {v: np.full([k] * (g.in_degree(v) + 1), 1.0 / k) for v in g.nodes}
    return BayesianNetwork(g, states=states, cpds=cpds)


def test_a_network_of_huge_treewidth_is_refused_before_any_table_is_built():
    fit = grid(12, 6).as_fit()  # cliques of 13 six-state variables: 1.3e10 entries
    with pytest.raises(ValueError, match=r"junction-tree clique of [\d,]+ entries \(\d+ variables; limit"):
        fit.query()
    with pytest.raises(ValueError, match=r"junction-tree clique of [\d,]+ entries"):
        fit.query("g11_11", evidence={"g0_0": "1"})


def agrum_network(name: str, tmp_path):
    """pyAgrum's copy of the network, built from the tables probgen read (same numbers)."""
    gum = pytest.importorskip("pyagrum")
    bn = bif(name)
    g = gum.BayesNet()
    for n in bn.nodes:
        v = gum.LabelizedVariable(n, n, 0)
        for s in bn.states[n]:
            v.addLabel(str(s))
        g.add(v)
    for n in bn.nodes:
        for p in bn.parents[n]:
            g.addArc(p, n)
    for n in bn.nodes:
        cpt = g.cpt(n)
        fam = bn.parents[n] + [n]
        t = np.asarray(bn.cpds[n], dtype=float).reshape([len(bn.states[v]) for v in fam])
        order = [fam.index(x) for x in reversed(list(cpt.names))]
        cpt.fillWith(t.transpose(order).reshape(-1).tolist())
    return gum, g


@pytest.mark.parametrize("name", ["hepar2", "win95pts", "pathfinder", "andes"])
def test_all_marginals_equal_pyagrum(name, tmp_path):
    gum, g = agrum_network(name, tmp_path)
    fit = read_bif(os.path.join(EXAMPLES, f"{name}.bif.gz")).as_fit()
    net = fit._net()
    CPDS_OF[id(net)] = net.params_cpds(fit.params)
    for ev in ({}, {k: net.states[k][v] for k, v in evidence_for(net, 4, 5).items()}):
        ie = gum.LazyPropagation(g)
        try:
            ie.setEvidence({k: str(v) for k, v in ev.items()})
            ie.makeInference()
        except Exception as err:  # pyAgrum refuses evidence of probability zero
            assert re.search("(?i)impossible|incompatible|zero", str(err))
            continue
        ours = fit.query(evidence=ev, labels=False)
        for v, p in ours.items():
            np.testing.assert_allclose(p.numpy(), ie.posterior(v).toarray(), atol=1e-9, rtol=0)


def test_row_query_with_a_dataframe_equals_pyagrum_per_row():
    gum, g = agrum_network("alarm", None)
    bn = bif("alarm")
    fit = bn.as_fit()
    rows = bn.to_frame(fit.sample(25, seed=3))[["HRBP", "CO", "SAO2"]]
    rows.iloc[::4, 1] = None
    got = fit.query(["HYPOVOLEMIA", "LVFAILURE"], evidence=rows, labels=False)
    ie = gum.LazyPropagation(g)
    for i, r in enumerate(rows.to_dict("records")):
        ie.setEvidence({k: str(v) for k, v in r.items() if v is not None and not pd.isna(v)})
        ie.makeInference()
        for v in got:
            np.testing.assert_allclose(got[v][i].numpy(), ie.posterior(v).toarray(), atol=1e-9, rtol=0)


def test_gzip_examples_exist():
    with gzip.open(os.path.join(EXAMPLES, "asia.bif.gz"), "rt") as f:
        assert "network" in f.read(200)
