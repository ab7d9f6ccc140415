"""Structure learning: scores equal pgmpy's, searches reach at least pgmpy's HillClimbSearch, the
exact search equals brute force over every DAG, and bad arguments are refused by name."""

from __future__ import annotations

import itertools
import math
import os
import warnings

import networkx as nx
import numpy as np
import pandas as pd
import pytest

from probgen.models import learn_structure, read_bif, structure_score

pgmpy = pytest.importorskip("pgmpy")
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from pgmpy.base import DAG
    from pgmpy.estimators import AIC, BIC, K2, BDeu, HillClimbSearch

EXAMPLES = os.path.join(os.path.dirname(pgmpy.__file__), "utils", "example_models")
_FRAMES: dict[tuple[str, int, int], tuple[nx.DiGraph, pd.DataFrame]] = {}
PGMPY_NAME = {"bic": "bic-d", "bdeu": "bdeu"}


def sampled(name: str, seed: int = 0, rows: int = 5000) -> tuple[nx.DiGraph, pd.DataFrame]:
    """The true DAG of a pgmpy example network and ``rows`` rows forward-sampled from it."""
    if (name, seed, rows) not in _FRAMES:
        bn = read_bif(os.path.join(EXAMPLES, f"{name}.bif.gz"))
        _FRAMES[name, seed, rows] = (bn.dag, bn.to_frame(bn.as_fit().sample(rows, seed=seed)))
    return _FRAMES[name, seed, rows]


def pgmpy_scorer(score: str, frame: pd.DataFrame):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {
            "bic": lambda: BIC(frame),
            "aic": lambda: AIC(frame),
            "bdeu": lambda: BDeu(frame, equivalent_sample_size=10),
            "k2": lambda: K2(frame),
        }[score]()


def pgmpy_score(g: nx.DiGraph, frame: pd.DataFrame, score: str) -> float:
    dag = DAG()
    dag.add_nodes_from(frame.columns)
    dag.add_edges_from(g.edges)
    return pgmpy_scorer(score, frame).score(dag)


def pgmpy_hill_climb(frame: pd.DataFrame, score: str) -> nx.DiGraph:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return HillClimbSearch(frame).estimate(scoring_method=PGMPY_NAME[score], show_progress=False)


# ---------------------------------------------------------------------- scores
@pytest.mark.parametrize("score", ["bic", "aic", "bdeu", "k2"])
def test_score_of_the_learnt_dag_equals_pgmpys(score):
    # asia's nodes are binary: pgmpy's K2 adds log Gamma(r) per unobserved parent configuration,
    # which is 0 for r = 2, so here it is the textbook K2 too
    _, frame = sampled("asia")
    g = learn_structure(frame, score=score, progress=False)
    assert g.number_of_edges() > 0
    ref = pgmpy_score(g, frame, score)
    assert structure_score(g, frame, score=score) == pytest.approx(ref, rel=1e-12, abs=1e-8)
    assert g.graph["score"] == pytest.approx(ref, rel=1e-12, abs=1e-8)


def test_k2_is_cooper_and_herskovits_on_unobserved_parent_configurations():
    # x has 3 states, y is constant in the data but declared with 2 states: one parent
    # configuration of x is never observed, and contributes log(Gamma(3) / Gamma(3 + 0)) = 0
    frame = pd.DataFrame({"x": [0, 1, 2, 2, 1, 0, 2], "y": ["a"] * 7})
    g = nx.DiGraph([("y", "x")])
    counts = [2, 2, 3]
    by_hand = math.lgamma(3) - math.lgamma(3 + 7) + sum(math.lgamma(1 + c) for c in counts)
    by_hand += math.lgamma(2) - math.lgamma(2 + 7) + math.lgamma(1 + 7)  # y: one state seen 7 times
    score = structure_score(g, frame, score="k2", states={"y": ["a", "b"]})
    assert score == pytest.approx(by_hand, abs=1e-10)


# ---------------------------------------------------------------------- against pgmpy's search
@pytest.mark.parametrize("score", ["bic", "bdeu"])
@pytest.mark.parametrize("method", ["auto", "hill_climb"])
def test_asia_scores_at_least_pgmpys_hill_climb(score, method):
    _, frame = sampled("asia")
    ref = pgmpy_hill_climb(frame, score)
    g = learn_structure(frame, score=score, method=method, progress=False)
    assert nx.is_directed_acyclic_graph(g)
    assert structure_score(g, frame, score=score) >= pgmpy_score(ref, frame, score) - 1e-9


def test_sachs_reaches_pgmpy_and_the_true_dag():
    truth, frame = sampled("sachs")
    ref = pgmpy_hill_climb(frame, "bic")
    g = learn_structure(frame, progress=False)
    mine = pgmpy_score(g, frame, "bic")
    assert mine >= pgmpy_score(ref, frame, "bic") - 1e-9
    assert mine >= pgmpy_score(truth, frame, "bic") - 1e-9  # 5,000 rows: the truth is a BIC optimum here


@pytest.mark.slow
@pytest.mark.parametrize("name", ["child", "insurance", "alarm"])
@pytest.mark.parametrize("score", ["bic", "bdeu"])
def test_larger_networks_score_at_least_pgmpys_hill_climb(name, score):
    _, frame = sampled(name)
    ref = pgmpy_hill_climb(frame, score)
    g = learn_structure(frame, score=score, progress=False)
    assert pgmpy_score(g, frame, score) >= pgmpy_score(ref, frame, score) - 1e-9


# ---------------------------------------------------------------------- exact search
def all_dags(nodes: list[str]):
    """Every DAG on ``nodes``: each pair absent, one way or the other, kept if acyclic."""
    pairs = list(itertools.combinations(nodes, 2))
    for choice in itertools.product((0, 1, 2), repeat=len(pairs)):
        g = nx.DiGraph()
        g.add_nodes_from(nodes)
        g.add_edges_from((a, b) if c == 1 else (b, a) for (a, b), c in zip(pairs, choice, strict=True) if c)
        if nx.is_directed_acyclic_graph(g):
            yield g


@pytest.mark.parametrize("score, max_indegree", [("bic", None), ("bdeu", None), ("aic", None), ("bic", 1)])
def test_exact_search_equals_brute_force_over_all_543_dags(score, max_indegree):
    _, frame = sampled("asia", seed=1, rows=600)
    frame = frame[["smoke", "lung", "bronc", "dysp"]]
    dags = list(all_dags(list(frame.columns)))
    assert len(dags) == 543
    scorer = pgmpy_scorer(score, frame)
    local = {}  # pgmpy's local scores, each family once
    limit = 3 if max_indegree is None else max_indegree
    best = -np.inf
    for d in dags:
        if max(deg for _, deg in d.in_degree()) <= limit:
            total = 0.0
            for v in d.nodes:
                family = (v, tuple(sorted(d.predecessors(v))))
                if family not in local:
                    local[family] = scorer.local_score(*family)
                total += local[family]
            best = max(best, total)
    g = learn_structure(frame, score=score, method="exact", max_indegree=max_indegree, progress=False)
    assert max(deg for _, deg in g.in_degree()) <= limit
    assert pgmpy_score(g, frame, score) == pytest.approx(best, abs=1e-8)
    assert g.graph["search"] == "exact" and g.graph["optimal"]


def test_exact_search_keeps_black_and_white_lists():
    _, frame = sampled("asia")
    black = [("either", "xray"), ("xray", "either"), ("lung", "either")]
    g = learn_structure(frame, method="exact", black_list=black, progress=False)
    assert not any(g.has_edge(*e) for e in black)
    white = [("smoke", "lung"), ("smoke", "bronc"), ("bronc", "dysp")]
    w = learn_structure(frame, method="exact", white_list=white, progress=False)
    assert set(w.edges()) <= set(white) and len(w.edges()) > 0


# ---------------------------------------------------------------------- constraints and defaults
@pytest.mark.parametrize("method", ["auto", "hill_climb", "exact"])
def test_constraints_hold_for_every_method(method):
    _, frame = sampled("asia")
    h = learn_structure(frame, method=method, max_indegree=1, black_list=[("either", "xray")], progress=False)
    assert max(d for _, d in h.in_degree()) <= 1 and not h.has_edge("either", "xray")
    w = learn_structure(
        frame, method=method, white_list=[("smoke", "lung"), ("smoke", "bronc")], progress=False
    )
    assert set(w.edges()) <= {("smoke", "lung"), ("smoke", "bronc")}


def test_hill_climb_from_a_start_and_integer_column_names():
    _, frame = sampled("asia")
    start = nx.DiGraph([("xray", "smoke")])
    g = learn_structure(frame, start=start, progress=False)
    assert g.graph["search"] == "hill_climb" and nx.is_directed_acyclic_graph(g)
    ints = frame.set_axis(range(frame.shape[1]), axis=1)
    h = learn_structure(ints, progress=False)
    assert list(h.nodes) == [str(j) for j in range(frame.shape[1])]
    assert h.graph["score"] == pytest.approx(learn_structure(frame, progress=False).graph["score"], abs=1e-8)


def test_progress_false_prints_nothing(capsys):
    _, frame = sampled("asia")
    learn_structure(frame, method="hill_climb", restarts=3, progress=False)
    out = capsys.readouterr()
    assert out.out == "" and out.err == ""


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"score": "bd"}, ValueError, "score must be one of"),
        ({"score": 3}, TypeError, "score must be a string"),
        ({"method": "greedy"}, ValueError, "method must be one of"),
        ({"max_indegree": -1}, ValueError, "max_indegree must be an integer >= 0"),
        ({"max_indegree": 1.5}, TypeError, "max_indegree must be an integer"),
        ({"restarts": -2}, ValueError, "restarts must be an integer >= 0"),
        ({"patience": "3"}, TypeError, "patience must be an integer"),
        ({"tabu_length": True}, TypeError, "tabu_length must be an integer"),
        ({"seed": -1}, ValueError, "seed must be an integer >= 0"),
        ({"epsilon": -1.0}, ValueError, "epsilon must be a number >= 0"),
        ({"equivalent_sample_size": 0}, ValueError, "equivalent_sample_size must be a positive number"),
        ({"progress": 1}, TypeError, "progress must be True or False"),
        ({"black_list": [("smoke", "nowhere")]}, ValueError, "black_list names unknown node 'nowhere'"),
        ({"white_list": "smoke"}, TypeError, "white_list must be a list of"),
        ({"start": [("smoke", "lung")]}, TypeError, "start must be a networkx.DiGraph"),
        ({"start": nx.DiGraph([("smoke", "lung"), ("lung", "smoke")])}, ValueError, "start must be acyclic"),
        ({"start": nx.DiGraph([("smoke", "x")])}, ValueError, "start has node"),
        (
            {"method": "exact", "start": nx.DiGraph([("smoke", "lung")])},
            ValueError,
            "exact search takes none",
        ),
        ({"states": ["a", "b"]}, TypeError, "states must be a mapping"),
    ],
)
def test_bad_arguments_are_refused_by_name(kwargs, error, match):
    _, frame = sampled("asia")
    with pytest.raises(error, match=match):
        learn_structure(frame, **{"progress": False, **kwargs})


def test_bad_data_is_refused():
    with pytest.raises(TypeError, match="data must be a pandas DataFrame"):
        learn_structure(np.zeros((3, 2)))
    with pytest.raises(ValueError, match="needs complete rows"):
        learn_structure(pd.DataFrame({"a": [1.0, np.nan], "b": [np.nan, 2.0]}))
    _, frame = sampled("alarm", rows=50)
    with pytest.raises(ValueError, match="method='exact' handles at most 20 nodes"):
        learn_structure(frame, method="exact")
    with pytest.raises(TypeError, match="dag must be a networkx.DiGraph"):
        structure_score([("a", "b")], frame)
