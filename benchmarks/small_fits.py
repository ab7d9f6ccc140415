"""Whole small fits, fixed costs included: probgen against hmmlearn and scikit-learn.

Two problems where fixed costs (tracing, validation, set-up, conversions) could dominate:

* a 2-state Gaussian HMM on the first 300 waiting times of the Old Faithful geyser series
  (``probgen.datasets.load_geyser``), against ``hmmlearn.hmm.GaussianHMM``;
* a 3-component full-covariance Gaussian mixture on the 150 iris flowers, against
  ``sklearn.mixture.GaussianMixture``.

Both sides run the same number of EM iterations (the reference's own count at its default
tolerance, then ``tol=0`` on both sides so neither stops early), each with its own default
initialisation (k-means), one thread each (``torch.set_num_threads(1)``, ``threadpoolctl``).
Two more HMM rows show how the ratio moves with the work per fit: 3 states (hmmlearn's own
count again), and 100 iterations of the 2-state model, where the per-iteration cost outweighs
the set-up that hmmlearn spends in k-means.  The wall time of the whole call (constructor and
fit) is timed; runs alternate between the
libraries and the medians of ``--repeats`` runs are reported with their ratio.

Run: ``python benchmarks/small_fits.py``.
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings
from collections.abc import Callable

import torch
from hmmlearn import hmm
from sklearn.datasets import load_iris
from sklearn.mixture import GaussianMixture as SkGaussianMixture
from threadpoolctl import threadpool_limits

import probgen as pg
from probgen.models import GaussianMixture, HiddenMarkovModel


def _median_pair(a: Callable[[], object], b: Callable[[], object], repeats: int) -> tuple[float, float]:
    a()
    b()  # warm-up: imports, first-call caches of either library
    ta, tb = [], []
    for _ in range(repeats):
        for fn, out in ((a, ta), (b, tb)):
            start = time.perf_counter()
            fn()
            out.append(time.perf_counter() - start)
    return statistics.median(ta), statistics.median(tb)


def _hmm_pair(x: object, k: int, iters: int) -> tuple[Callable[[], object], Callable[[], object]]:
    """hmmlearn's and probgen's whole fits of a ``k``-state Gaussian HMM, ``iters`` iterations."""
    return (
        lambda: hmm.GaussianHMM(k, n_iter=iters, tol=0, random_state=0).fit(x),
        lambda: pg.fit(
            HiddenMarkovModel(k, emission="gaussian"), x, method="em", max_iter=iters, tol=0, progress=False
        ),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")  # hmmlearn's and scikit-learn's convergence notices at tol=0
    x = pg.datasets.load_geyser()[["waiting"]].to_numpy().astype(float)[:300]
    iris = load_iris().data
    with threadpool_limits(1):
        ref = hmm.GaussianHMM(2, n_iter=1000, random_state=0).fit(x)
        n_hmm = int(ref.monitor_.iter)
        n_hmm3 = int(hmm.GaussianHMM(3, n_iter=1000, random_state=0).fit(x).monitor_.iter)
        sk = SkGaussianMixture(3, random_state=0).fit(iris)
        n_gmm = int(sk.n_iter_)
        cases = {
            f"HMM, 2 states, 300 steps, {n_hmm} iterations": _hmm_pair(x, 2, n_hmm),
            f"HMM, 3 states, 300 steps, {n_hmm3} iterations": _hmm_pair(x, 3, n_hmm3),
            "HMM, 2 states, 300 steps, 100 iterations": _hmm_pair(x, 2, 100),
            f"mixture, 3 components, iris, {n_gmm} iterations": (
                lambda: SkGaussianMixture(3, max_iter=n_gmm, tol=0, random_state=0).fit(iris),
                lambda: pg.fit(GaussianMixture(3), iris, method="em", max_iter=n_gmm, tol=0, progress=False),
            ),
        }
        print(f"{'case':48s} {'reference':>10s} {'probgen':>10s} {'ratio':>7s}")
        for name, (reference, ours) in cases.items():
            t_ref, t_ours = _median_pair(reference, ours, args.repeats)
            print(f"{name:48s} {t_ref * 1e3:8.2f}ms {t_ours * 1e3:8.2f}ms {t_ours / t_ref:7.2f}")


if __name__ == "__main__":
    main()
