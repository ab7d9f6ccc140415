"""probgen's learn_structure against pgmpy's HillClimbSearch on pgmpy's example networks.

For every network and seed: forward-sample ``--rows`` complete rows from the network (probgen's
sampler), learn a DAG with both libraries under the same score, and print

* both DAGs' scores (probgen's ``structure_score``; checked equal to pgmpy's own scorer on the
  same DAG before timing) and the true DAG's score, all on the same data;
* the structural Hamming distance (SHD) of each learnt DAG to the true DAG, counted over
  unordered node pairs: 1 for a pair adjacent in one graph only (missing or extra edge), 1 for
  a pair adjacent in both but oriented differently. ``skel`` is the skeleton part alone (the
  number of missing plus extra edges), which ignores orientations data cannot decide;
* the median seconds of each public call, one thread each side, the two libraries alternating,
  each after one untimed call: ``learn_structure(data, score=...)`` against
  ``HillClimbSearch(data).estimate(scoring_method=..., show_progress=False)``, pgmpy's defaults
  otherwise (tabu length 100, no in-degree limit, epsilon 1e-4);
* the ratio of the times (probgen / pgmpy; below 1 is faster).

The summary gives, per network, the median and the worst over seeds of the score difference
(probgen - pgmpy; positive is better), of the gap to the true DAG and of the time ratio.

Run: ``flock /tmp/probgen-bench.lock python benchmarks/structure_vs_pgmpy.py [--seeds 0 1 2]
[--networks asia child] [--score bdeu] [--repeats 3] [--rows 5000]``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
import warnings
from collections.abc import Callable

import networkx as nx
import torch
from threadpoolctl import threadpool_limits

from probgen.models import learn_structure, read_bif, structure_score

warnings.simplefilter("ignore")  # pgmpy's deprecation notices

import pgmpy  # noqa: E402
from pgmpy.base import DAG  # noqa: E402
from pgmpy.estimators import BIC, BDeu, HillClimbSearch  # noqa: E402

EXAMPLES = os.path.join(os.path.dirname(pgmpy.__file__), "utils", "example_models")
NETWORKS = ["asia", "cancer", "earthquake", "survey", "sachs", "child", "insurance", "alarm"]
PGMPY_SCORE = {"bic": "bic-d", "bdeu": "bdeu"}


def shd(learnt: nx.DiGraph, truth: nx.DiGraph) -> tuple[int, int]:
    """(SHD, skeleton part): differences over unordered pairs, see the module docstring."""
    a = {frozenset(e) for e in learnt.edges}
    b = {frozenset(e) for e in truth.edges}
    skeleton = len(a ^ b)
    flipped = sum(1 for u, v in learnt.edges if truth.has_edge(v, u))
    return skeleton + flipped, skeleton


def alternated(fns: list[Callable[[], object]], repeats: int) -> list[float]:
    """Median seconds of each function, the functions run in turn (one untimed call each first)."""
    for fn in fns:
        fn()
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for fn, ts in zip(fns, times, strict=True):
            t = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t)
    return [statistics.median(ts) for ts in times]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--networks", nargs="+", default=NETWORKS)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--rows", type=int, default=5000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--score", choices=sorted(PGMPY_SCORE), default="bic")
    args = parser.parse_args()
    torch.set_num_threads(1)
    header = (
        f"{'network':<11}{'seed':>5}{'probgen':>12}{'pgmpy':>12}{'true DAG':>12}"
        f"{'SHD pg/pm':>11}{'skel pg/pm':>12}{'probgen s':>11}{'pgmpy s':>10}{'ratio':>7}"
    )
    print(f"score {args.score}, {args.rows} rows, median of {args.repeats} alternated runs, one thread each")
    print(header)
    rows: dict[str, list[tuple[float, float, float]]] = {}
    with threadpool_limits(1):
        for name in args.networks:
            bn = read_bif(os.path.join(EXAMPLES, f"{name}.bif.gz"))
            for seed in args.seeds:
                data = bn.to_frame(bn.as_fit().sample(args.rows, seed=seed))

                def ours(data=data) -> nx.DiGraph:
                    return learn_structure(data, score=args.score, progress=False)

                def theirs(data=data) -> nx.DiGraph:
                    return HillClimbSearch(data).estimate(
                        scoring_method=PGMPY_SCORE[args.score], show_progress=False
                    )

                mine, ref = ours(), theirs()
                score = {"score": args.score, "equivalent_sample_size": 10.0}
                s_mine = structure_score(mine, data, **score)
                s_ref = structure_score(ref, data, **score)
                s_true = structure_score(bn.dag, data, **score)
                # the comparison is only meaningful if both libraries score a DAG alike
                scorer = BIC(data) if args.score == "bic" else BDeu(data, equivalent_sample_size=10)
                dag = DAG()
                dag.add_nodes_from(mine.nodes)
                dag.add_edges_from(mine.edges)
                assert abs(scorer.score(dag) - s_mine) <= 1e-9 * abs(s_mine), (scorer.score(dag), s_mine)
                t_mine, t_ref = alternated([ours, theirs], args.repeats)
                d_mine, k_mine = shd(mine, bn.dag)
                d_ref, k_ref = shd(ref, bn.dag)
                print(
                    f"{name:<11}{seed:>5}{s_mine:>12.1f}{s_ref:>12.1f}{s_true:>12.1f}"
                    f"{f'{d_mine}/{d_ref}':>11}{f'{k_mine}/{k_ref}':>12}"
                    f"{t_mine:>11.3f}{t_ref:>10.3f}{t_mine / t_ref:>7.2f}",
                    flush=True,
                )
                rows.setdefault(name, []).append((s_mine - s_ref, s_mine - s_true, t_mine / t_ref))
    print()
    print(
        f"{'network':<11}{'score - pgmpy: median':>22}{'worst':>9}{'score - true: median':>22}{'worst':>9}"
        f"{'ratio: median':>15}{'worst':>7}"
    )
    for name, vals in rows.items():
        diff, gap, ratio = zip(*vals, strict=True)
        print(
            f"{name:<11}{statistics.median(diff):>22.1f}{min(diff):>9.1f}{statistics.median(gap):>22.1f}"
            f"{min(gap):>9.1f}{statistics.median(ratio):>15.2f}{max(ratio):>7.2f}"
        )


if __name__ == "__main__":
    main()
