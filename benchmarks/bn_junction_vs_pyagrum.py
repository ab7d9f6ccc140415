"""probgen's junction tree against pyAgrum's LazyPropagation: exact posterior marginals.

Cases (one thread each side, the two libraries alternating, median and worst of ``--repeats``
timed runs after both sides were checked to give the same answer):

* per network of pgmpy's example BIFs: every posterior marginal with no evidence;
* ALARM: every marginal with and without evidence (HRBP=HIGH, CO=LOW);
* ALARM, 1,000 evidence rows (HRBP, CO, SAO2 sampled from the network): the HYPOVOLEMIA
  marginal, and every marginal, per row: probgen answers the rows in one call, pyAgrum in a
  loop over rows (LazyPropagation, evidence updated per row).

Every timed run is a cold query on both sides.  probgen keeps its compiled junction tree (what a
user pays once per network; printed apart as ``compile``: the first query, with the tree, the
engine's index maps and its choice) but its clique potentials and calibrations are cleared
before each run.  pyAgrum keeps its LazyPropagation object and its junction tree; before each
run a different evidence is entered and propagated (untimed; with no evidence, entered,
propagated and erased), so the timed run propagates again without building a new object.  Both networks hold the same CPDs: pyAgrum's is built from the
tables probgen read (pyAgrum's BIF parser refuses some of these files' state names).

Run: ``flock /tmp/probgen-bench.lock python benchmarks/bn_junction_vs_pyagrum.py [--repeats 3]
[--networks alarm,child ...] [--rows 1000]``.  Networks that probgen refuses (a clique over its
table limit) or that pyAgrum needs more than ``--agrum-limit`` seconds for are reported as such.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pgmpy  # noqa: E402  (the example networks ship with pgmpy)
import pyagrum as gum  # noqa: E402
import torch

from probgen.models import read_bif
from probgen.models._bn_junction import clear_cache

EXAMPLES = os.path.join(os.path.dirname(pgmpy.__file__), "utils", "example_models")
NETWORKS = (
    "asia cancer earthquake survey sachs child insurance alarm water mildew barley hailfinder hepar2 "
    "win95pts pathfinder andes pigs link munin1 munin2 munin3 munin4 munin diabetes"
).split()
EVIDENCE = {"HRBP": "HIGH", "CO": "LOW"}
OTHER = {"HRBP": "LOW", "CO": "HIGH"}  # entered between timed pyAgrum runs (untimed)
TARGET = "HYPOVOLEMIA"


def to_agrum(bn: Any) -> Any:
    """pyAgrum's BayesNet with the same variables, states, arcs and CPDs as probgen's ``bn``."""
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
        order = [fam.index(x) for x in reversed(list(cpt.names))]  # pyAgrum's first variable varies fastest
        cpt.fillWith(t.transpose(order).reshape(-1).tolist())
    return g


def timed(fns: list[Callable[[], float | None]], repeats: int) -> list[tuple[float, float]]:
    """(median, worst) seconds of each function, run in turn; a function returning a float
    reports its own time (its untimed preparation excluded)."""
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for fn, ts in zip(fns, times, strict=True):
            t = time.perf_counter()
            own = fn()
            ts.append(own if own is not None else time.perf_counter() - t)
    return [(statistics.median(ts), max(ts)) for ts in times]


def all_marginals(net_name: str, repeats: int, agrum_limit: float, evidence: dict[str, str] | None) -> None:
    bn = read_bif(os.path.join(EXAMPLES, f"{net_name}.bif.gz"))
    fit = bn.as_fit()
    net = fit._net()  # the network the fit's queries use; its caches are cleared between runs
    g = to_agrum(bn)
    ev = evidence or {}
    label = f"{net_name}{' +evidence' if ev else ''}"
    t = time.perf_counter()
    try:
        ours = fit.query(evidence=ev, labels=False)
    except ValueError as err:
        print(f"{label:22s} probgen refuses: {str(err)[:150]}", flush=True)
        return
    compile_s = time.perf_counter() - t
    ie = gum.LazyPropagation(g)
    t = time.perf_counter()
    ie.setEvidence(ev)
    ie.makeInference()
    theirs = {n: ie.posterior(n).toarray() for n in bn.nodes if n not in ev}
    agrum_first = time.perf_counter() - t
    diff = max(float(np.abs(ours[n].numpy() - theirs[n]).max()) for n in theirs)
    if agrum_first > agrum_limit:
        print(f"{label:22s} pyAgrum's first query took {agrum_first:.1f} s; not repeated", flush=True)
        return
    other = OTHER if ev else {bn.nodes[0]: 0}

    def probgen_run() -> float:
        clear_cache(net)
        t = time.perf_counter()
        fit.query(evidence=ev, labels=False)
        return time.perf_counter() - t

    def agrum_run() -> float:
        if ev:
            ie.setEvidence(other)
            ie.makeInference()
            t = time.perf_counter()
            ie.setEvidence(ev)
        else:  # evidence entered, propagated and erased: the next inference starts afresh
            ie.addEvidence(*next(iter(other.items())))
            ie.makeInference()
            ie.eraseAllEvidence()
            t = time.perf_counter()
        ie.makeInference()
        for n in theirs:
            ie.posterior(n)
        return time.perf_counter() - t

    (a, aw), (b, bw) = timed([probgen_run, agrum_run], repeats)
    print(
        f"{label:22s} {a * 1e3:10.2f} {aw * 1e3:9.2f} {b * 1e3:10.2f} {bw * 1e3:9.2f} {a / b:7.3f} "
        f"{diff:9.1e} {compile_s:8.3f}",
        flush=True,
    )


def rows_case(n_rows: int, repeats: int) -> None:
    bn = read_bif(os.path.join(EXAMPLES, "alarm.bif.gz"))
    fit = bn.as_fit()
    net = fit._net()
    g = to_agrum(bn)
    rows = bn.to_frame(fit.sample(n_rows, seed=0))[["HRBP", "CO", "SAO2"]]
    records = [{k: str(v) for k, v in r.items()} for r in rows.to_dict("records")]
    others = [n for n in bn.nodes if n not in rows.columns]
    for case, var in (("one marginal", TARGET), ("all marginals", None)):
        ours = fit.query(var, evidence=rows, labels=False)
        ie = gum.LazyPropagation(g)
        targets = [TARGET] if var else others
        if var:
            ie.addTarget(TARGET)
        ie.setEvidence(records[0])

        def loop(ie: Any = ie, targets: list[str] = targets) -> list[list[Any]]:
            out = []
            for r in records:
                ie.updateEvidence(r)
                ie.makeInference()
                out.append([ie.posterior(n).toarray() for n in targets])
            return out

        theirs = loop()
        diff = max(
            float(np.abs(ours[n].numpy()[i] - theirs[i][k]).max())
            for i in range(0, n_rows, max(1, n_rows // 50))
            for k, n in enumerate(targets)
        )

        def probgen_run(var: str | None = var) -> float:
            clear_cache(net)
            t = time.perf_counter()
            fit.query(var, evidence=rows, labels=False)
            return time.perf_counter() - t

        (a, aw), (b, bw) = timed([probgen_run, lambda: loop() and None], repeats)
        print(
            f"ALARM {n_rows} rows, {case:13s}: probgen {a * 1e3:8.2f} ms (worst {aw * 1e3:.2f}), "
            f"pyAgrum loop {b * 1e3:8.2f} ms (worst {bw * 1e3:.2f}); pyAgrum / probgen {b / a:6.1f}x, "
            f"max |diff| {diff:.1e}",
            flush=True,
        )


def main(networks: list[str], repeats: int, n_rows: int, agrum_limit: float) -> None:
    torch.set_num_threads(1)
    gum.setNumberOfThreads(1)
    print(f"one thread each side (torch {torch.get_num_threads()}, pyAgrum {gum.getNumberOfThreads()}); ")
    print(f"median and worst of {repeats} cold runs, ms; ratio = probgen / pyAgrum (below 1: probgen faster)")
    print(
        f"{'network':22s} {'probgen':>10s} {'worst':>9s} {'pyAgrum':>10s} {'worst':>9s} {'ratio':>7s} "
        f"{'max|diff|':>9s} {'compile s':>8s}"
    )
    for name in networks:
        all_marginals(name, repeats, agrum_limit, None)
        if name == "alarm":
            all_marginals(name, repeats, agrum_limit, EVIDENCE)
    if "alarm" in networks and n_rows:
        rows_case(n_rows, repeats)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--networks", default=",".join(NETWORKS))
    parser.add_argument("--rows", type=int, default=1000)
    parser.add_argument(
        "--agrum-limit", type=float, default=20.0, help="seconds; slower networks are not repeated"
    )
    args = parser.parse_args()
    main(args.networks.split(","), args.repeats, args.rows, args.agrum_limit)
