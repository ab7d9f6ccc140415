"""probgen's BayesianNetwork against pgmpy (and pyAgrum when installed) on ALARM.

Cases (one thread each side, the libraries alternating, median of ``--repeats`` runs, each
after one warm-up call, so probgen's compiled contraction path is cached as it is in use):

* ``single``: one marginal (HYPOVOLEMIA) given 2 evidence variables (HRBP, CO);
* ``all``: the other 35 marginals given the same evidence;
* ``rows``: the HYPOVOLEMIA marginal for 1,000 evidence rows (HRBP, CO, SAO2 sampled from the
  network): probgen answers them in one vectorised call, pgmpy and pyAgrum loop;
* ``mle``: CPDs from 10,000 complete rows (pgmpy's MaximumLikelihoodEstimator, probgen's EM
  closed form, which is one E-step of counts).

pgmpy runs ``VariableElimination`` (one query per variable); pyAgrum ``VariableElimination``
with targets for ``single``/``rows`` and ``ShaferShenoyInference`` for ``all``.  Ratios are
probgen / other (lower is better).

Run: ``python benchmarks/bn_vs_pgmpy.py [--repeats 5]`` (``pip install pyagrum`` adds pyAgrum).
"""

from __future__ import annotations

import argparse
import gzip
import os
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable

import torch

import probgen as pg
from probgen.models import BayesianNetwork, read_bif

warnings.simplefilter("ignore")  # pgmpy's deprecation notices

import pgmpy  # noqa: E402
from pgmpy.estimators import MaximumLikelihoodEstimator  # noqa: E402
from pgmpy.inference import VariableElimination  # noqa: E402
from pgmpy.readwrite import BIFReader  # noqa: E402

try:
    import pyagrum as gum
except ImportError:  # optional: the bench extra installs it
    gum = None

ALARM = os.path.join(os.path.dirname(pgmpy.__file__), "utils", "example_models", "alarm.bif.gz")
EVIDENCE = {"HRBP": "HIGH", "CO": "LOW"}
TARGET = "HYPOVOLEMIA"


def _alternated(fns: list[Callable[[], object]], repeats: int) -> list[float]:
    """Median seconds of each function, the functions run in turn (one warm-up call each)."""
    for fn in fns:
        fn()
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for fn, ts in zip(fns, times, strict=True):
            t = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t)
    return [statistics.median(ts) for ts in times]


def main(repeats: int) -> None:
    torch.set_num_threads(1)
    os.environ["OMP_NUM_THREADS"] = "1"
    text = gzip.open(ALARM, "rt").read()
    bn = read_bif(ALARM)
    fit = bn.as_fit()
    ref = BIFReader(string=text).get_model()
    ve = VariableElimination(ref)
    rows = bn.to_frame(fit.sample(1000, seed=0))[["HRBP", "CO", "SAO2"]]
    complete = bn.to_frame(fit.sample(10_000, seed=1))
    others = [n for n in bn.nodes if n not in EVIDENCE]
    records = rows.to_dict("records")

    agrum = None
    if gum is not None:
        with tempfile.NamedTemporaryFile("w", suffix=".bif", delete=False) as f:
            f.write(text)
        agrum = gum.loadBN(f.name)
        os.unlink(f.name)
        gum.setNumberOfThreads(1)

    probgen_cases: dict[str, Callable[[], object]] = {
        "single": lambda: fit.query(TARGET, evidence=EVIDENCE, labels=False),
        "all": lambda: fit.query(evidence=EVIDENCE, labels=False),
        "rows": lambda: fit.query(TARGET, evidence=rows, labels=False),
        "mle": lambda: pg.fit(BayesianNetwork(bn.dag, states=bn.states), complete, method="em"),
    }
    pgmpy_cases: dict[str, Callable[[], object]] = {
        "single": lambda: ve.query([TARGET], evidence=EVIDENCE, show_progress=False),
        "all": lambda: [ve.query([v], evidence=EVIDENCE, show_progress=False) for v in others],
        "rows": lambda: [ve.query([TARGET], evidence=r, show_progress=False) for r in records],
        "mle": lambda: [MaximumLikelihoodEstimator(ref, complete).estimate_cpd(n) for n in bn.nodes],
    }
    agrum_cases: dict[str, Callable[[], object]] = {}
    if agrum is not None:

        def single() -> object:
            ie = gum.VariableElimination(agrum)
            ie.setEvidence(EVIDENCE)
            ie.addTarget(TARGET)
            ie.makeInference()
            return ie.posterior(TARGET)

        def everything() -> object:
            ie = gum.ShaferShenoyInference(agrum)
            ie.setEvidence(EVIDENCE)
            ie.makeInference()
            return [ie.posterior(v) for v in others]

        def many() -> object:
            ie = gum.VariableElimination(agrum)
            ie.addTarget(TARGET)
            ie.setEvidence(records[0])
            out = []
            for r in records:
                ie.updateEvidence(r)
                ie.makeInference()
                out.append(ie.posterior(TARGET).toarray())
            return out

        agrum_cases = {"single": single, "all": everything, "rows": many}

    print(f"ALARM ({len(bn.nodes)} nodes), one thread, median of {repeats} runs")
    header = f"{'case':8s} {'probgen':>11s} {'pgmpy':>11s} {'ratio':>7s}"
    if agrum_cases:
        header += f" {'pyAgrum':>11s} {'ratio':>7s}"
    print(header)
    for case in probgen_cases:
        fns = [probgen_cases[case], pgmpy_cases[case]] + ([agrum_cases[case]] if case in agrum_cases else [])
        a, b, *c = _alternated(fns, repeats)
        line = f"{case:8s} {a * 1e3:9.3f}ms {b * 1e3:9.3f}ms {a / b:7.3f}"
        if c:
            line += f" {c[0] * 1e3:9.3f}ms {a / c[0]:7.3f}"
        print(line)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    main(parser.parse_args().repeats)
