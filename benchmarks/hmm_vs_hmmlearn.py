"""probgen's HiddenMarkovModel against hmmlearn: seconds per Baum-Welch iteration, score, Viterbi.

Cases (one thread each, the two libraries alternating, median of ``--repeats`` runs, setup
excluded, same parameters and data for both):

* ``gaussian``: one sequence, T=100,000, 8 states, 4-D full-covariance Gaussian emissions;
* ``categorical``: one sequence, T=200,000, 16 states, 64 symbols;
* ``many-short``: 1,000 sequences of length 200, the Gaussian model of the first case.

hmmlearn runs twice, with its default ``implementation="log"`` and with ``"scaling"``.  A
Baum-Welch iteration is one E-step plus one M-step (hmmlearn: ``fit`` with ``n_iter=1`` from set
parameters; probgen: ``e_step`` then ``m_step``).  Ratios are probgen / hmmlearn (lower is
better).

Run: ``python benchmarks/hmm_vs_hmmlearn.py [--repeats 5] [--cases gaussian,categorical,many-short]``.
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings
from collections.abc import Callable

import numpy as np
import torch
from hmmlearn import hmm
from threadpoolctl import threadpool_limits

from probgen.models import HiddenMarkovModel


def _random_hmm(rng: np.random.Generator, K: int, stay: float = 0.8) -> tuple[np.ndarray, np.ndarray]:
    start = rng.dirichlet(np.ones(K))
    trans = rng.dirichlet(np.ones(K), K) * (1 - stay) + stay * np.eye(K)
    return start, trans / trans.sum(1, keepdims=True)


def _gaussian_case(rng: np.random.Generator, K: int = 8, d: int = 4) -> dict:
    start, trans = _random_hmm(rng, K)
    means = rng.normal(0, 3, (K, d))
    a = rng.normal(0, 0.5, (K, d, d))
    covars = a @ a.transpose(0, 2, 1) + np.eye(d)
    return {"startprob_": start, "transmat_": trans, "means_": means, "covars_": covars}


def _hmmlearn_model(kind: str, params: dict, implementation: str) -> hmm.BaseHMM:
    if kind == "categorical":
        m = hmm.CategoricalHMM(
            params["emissionprob_"].shape[0], init_params="", n_iter=1, implementation=implementation
        )
    else:
        m = hmm.GaussianHMM(
            params["means_"].shape[0],
            covariance_type="full",
            init_params="",
            n_iter=1,
            implementation=implementation,
        )
    for k, v in params.items():
        setattr(m, k, v.copy())
    return m


def _probgen_params(kind: str, params: dict) -> dict[str, torch.Tensor]:
    out = {
        "initial": torch.tensor(params["startprob_"]),
        "transition": torch.tensor(params["transmat_"]),
    }
    if kind == "categorical":
        out["probs"] = torch.tensor(params["emissionprob_"])
    else:
        out["locs"] = torch.tensor(params["means_"])
        out["scale_tril"] = torch.linalg.cholesky(torch.tensor(params["covars_"]))
    return out


def _time(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def _make_case(name: str, seed: int = 0) -> tuple[str, dict, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    if name == "categorical":
        K, M = 16, 64
        start, trans = _random_hmm(rng, K)
        params = {"startprob_": start, "transmat_": trans, "emissionprob_": rng.dirichlet(np.full(M, 0.3), K)}
        lengths = np.array([200_000])
        kind = "categorical"
    else:
        params = _gaussian_case(rng)
        lengths = np.array([100_000]) if name == "gaussian" else np.full(1000, 200)
        kind = "gaussian"
    gen = _hmmlearn_model(kind, params, "log")
    X, _ = gen.sample(int(lengths.sum()), random_state=seed)
    return kind, params, X, lengths


def run_case(name: str, repeats: int) -> dict[str, dict[str, float]]:
    kind, params, X, lengths = _make_case(name)
    model = (
        HiddenMarkovModel(
            params["emissionprob_"].shape[0], "categorical", n_symbols=params["emissionprob_"].shape[1]
        )
        if kind == "categorical"
        else HiddenMarkovModel(params["means_"].shape[0], covariance_type="full")
    )
    seqs = np.split(X, np.cumsum(lengths)[:-1])
    data = model.prepare_data(seqs if len(seqs) > 1 else seqs[0])
    pg_params = _probgen_params(kind, params)

    def pg_iter() -> None:
        stats, _ = model.e_step(data, pg_params)
        model.m_step(data, stats)

    ops: dict[str, dict[str, Callable[[], object]]] = {"baum-welch": {}, "score": {}, "viterbi": {}}
    for impl in ("log", "scaling"):
        ref = _hmmlearn_model(kind, params, impl)

        def bw(impl: str = impl) -> None:
            m = _hmmlearn_model(kind, params, impl)  # fit() updates in place: start fresh each time
            m.fit(X, lengths)

        ops["baum-welch"][f"hmmlearn-{impl}"] = bw
        ops["score"][f"hmmlearn-{impl}"] = lambda ref=ref: ref.score(X, lengths)
        ops["viterbi"][f"hmmlearn-{impl}"] = lambda ref=ref: ref.decode(X, lengths)
    ops["baum-welch"]["probgen"] = pg_iter
    ops["score"]["probgen"] = lambda: model.log_prob_items(data, pg_params)
    ops["viterbi"]["probgen"] = lambda: model.viterbi(data, pg_params)

    results: dict[str, dict[str, float]] = {}
    for op, fns in ops.items():
        times: dict[str, list[float]] = {k: [] for k in fns}
        for fn in fns.values():  # warm-up, not timed
            fn()
        for _ in range(repeats):
            for k, fn in fns.items():  # alternate libraries within every repeat
                times[k].append(_time(fn))
        results[op] = {k: statistics.median(v) for k, v in times.items()}
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--cases", default="gaussian,categorical,many-short")
    args = parser.parse_args()
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")  # hmmlearn's n_iter=1 convergence notices
    with threadpool_limits(limits=1):
        for name in args.cases.split(","):
            res = run_case(name, args.repeats)
            print(f"\n== {name} ==")
            print(
                f"{'operation':<12}{'hmmlearn log':>14}{'hmmlearn scaling':>18}{'probgen':>10}{'vs log':>9}{'vs scaling':>12}"
            )
            for op, r in res.items():
                lg, sc, pg = r["hmmlearn-log"], r["hmmlearn-scaling"], r["probgen"]
                print(f"{op:<12}{lg:>13.4f}s{sc:>17.4f}s{pg:>9.4f}s{pg / lg:>8.2f}x{pg / sc:>11.2f}x")


if __name__ == "__main__":
    main()
