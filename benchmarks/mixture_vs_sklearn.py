"""Gaussian mixture EM: probgen against scikit-learn, and what EM buys over SVI.

Setting: n=100,000 items, d=10 features, K=8 components, full covariances, float64, one
thread on both sides (``torch.set_num_threads(1)`` and ``threadpoolctl`` limits for
scikit-learn), the same starting values for both, a fixed number of iterations (``tol=0``).

Seconds per EM iteration exclude initialisation and fixed costs: each library is timed at
``--short`` and ``--long`` iterations and the difference is divided by the extra iterations.
Runs alternate between the libraries; the medians of ``--repeats`` runs are reported.

The SVI part fits the same model the way Pyro's Gaussian-mixture tutorial does (MAP by SVI
with an ``AutoDelta`` guide, enumerated assignments, Adam at lr 0.1) through
``probgen.fit(..., method="svi")``, doubling the number of steps until the mean
log-likelihood is within ``--svi-gap`` nats per item of EM's, within ``--svi-budget`` seconds.

Run: ``python benchmarks/mixture_vs_sklearn.py`` (add ``--quick`` for a smaller smoke run).
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning as SkConvergenceWarning
from sklearn.mixture import GaussianMixture as SkGaussianMixture
from threadpoolctl import threadpool_limits

import probgen as pg
from probgen.models import GaussianMixture


def make_data(n: int, d: int, k: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centers = rng.normal(0.0, 4.0, (k, d))
    mixing = rng.normal(size=(k, d, d)) / np.sqrt(d)
    z = rng.integers(k, size=n)
    return centers[z] + np.einsum("nij,nj->ni", mixing[z], rng.normal(size=(n, d)))


def starting_point(x: np.ndarray, k: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Weights, means (k random items) and covariances (the data covariance): a rough start."""
    rng = np.random.default_rng(seed)
    means = x[rng.choice(len(x), k, replace=False)]
    cov = np.cov(x.T, bias=True)
    return np.full(k, 1.0 / k), means, np.broadcast_to(cov, (k,) + cov.shape).copy()


def run_sklearn(x, start, iters):
    w, m, c = start
    sk = SkGaussianMixture(
        len(w),
        covariance_type="full",
        max_iter=iters,
        tol=0.0,
        weights_init=w,
        means_init=m,
        precisions_init=np.linalg.inv(c),
    )
    with warnings.catch_warnings(), threadpool_limits(limits=1):
        warnings.simplefilter("ignore", SkConvergenceWarning)
        t0 = time.perf_counter()
        sk.fit(x)
        elapsed = time.perf_counter() - t0
    return elapsed, sk.lower_bound_


def run_probgen(x, start, iters):
    w, m, c = start
    gm = GaussianMixture(len(w), covariance_type="full")
    init = gm.params_from_covariances(w, m, c)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", pg.ConvergenceWarning)
        t0 = time.perf_counter()
        fit = pg.fit(gm, x, method="em", init=init, max_iter=iters, tol=0.0, progress=False)
        elapsed = time.perf_counter() - t0
    return elapsed, fit.history[-1] / len(x)


def em_per_iteration(x, start, short, long, repeats):
    per = {"sklearn": [], "probgen": []}
    bounds = {}
    for _ in range(repeats):
        for name, runner in (("sklearn", run_sklearn), ("probgen", run_probgen)):  # alternate
            t_short, _ = runner(x, start, short)
            t_long, bound = runner(x, start, long)
            per[name].append((t_long - t_short) / (long - short))
            bounds[name] = bound
    return {k: statistics.median(v) for k, v in per.items()}, bounds


def svi_time_to_em_loglik(x, k, target, gap, budget, first_steps):
    """Doubling SVI runs until the mean log-likelihood is within ``gap`` of ``target``."""
    steps, spent, last = first_steps, 0.0, None
    while spent < budget:
        gm = GaussianMixture(k, covariance_type="full")
        t0 = time.perf_counter()
        fit = pg.fit(
            gm,
            x,
            method="svi",
            guide="delta",
            optim="adam",
            lr=0.1,
            num_steps=steps,
            tol=0.0,
            num_samples=1,
            seed=0,
            progress=False,
        )
        elapsed = time.perf_counter() - t0
        spent += elapsed
        ll = float(fit.log_prob(x).mean())
        last = (steps, elapsed, ll)
        print(f"  SVI {steps:5d} steps: {elapsed:7.2f} s, mean log-likelihood {ll:.5f} (EM {target:.5f})")
        if ll >= target - gap:
            return last, True
        steps *= 2
    return last, False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--d", type=int, default=10)
    parser.add_argument("--k", type=int, default=8)
    parser.add_argument("--short", type=int, default=3, help="iterations of the short timed run")
    parser.add_argument("--long", type=int, default=23, help="iterations of the long timed run")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--svi-gap", type=float, default=0.01, help="nats per item")
    parser.add_argument("--svi-budget", type=float, default=240.0, help="seconds")
    parser.add_argument("--svi-first-steps", type=int, default=50)
    parser.add_argument("--no-svi", action="store_true")
    parser.add_argument("--quick", action="store_true", help="n=20,000, 2 repeats, small SVI budget")
    args = parser.parse_args()
    if args.quick:
        args.n, args.repeats, args.svi_budget = 20_000, 2, 30.0

    torch.set_num_threads(1)
    x = make_data(args.n, args.d, args.k, seed=0)
    start = starting_point(x, args.k, seed=1)
    print(f"Gaussian mixture EM, full covariance: n={args.n}, d={args.d}, K={args.k}, float64, one thread")
    per, bounds = em_per_iteration(x, start, args.short, args.long, args.repeats)
    ratio = per["probgen"] / per["sklearn"]
    print(f"  scikit-learn : {per['sklearn']:.4f} s/iteration (median of {args.repeats})")
    print(f"  probgen      : {per['probgen']:.4f} s/iteration (median of {args.repeats})")
    print(f"  ratio probgen/scikit-learn: {ratio:.2f}x (goal <= 0.25x; memory-bound limit near 0.08x)")
    print(
        f"  mean log-likelihood after {args.long} iterations: scikit-learn {bounds['sklearn']:.10f}, "
        f"probgen {bounds['probgen']:.10f} (difference {abs(bounds['sklearn'] - bounds['probgen']):.1e})"
    )
    if args.no_svi:
        return

    # EM to convergence (default tol) from the same start: the target and its wall time.
    gm = GaussianMixture(args.k, covariance_type="full")
    t0 = time.perf_counter()
    em = pg.fit(gm, x, method="em", init=gm.params_from_covariances(*start), max_iter=500, progress=False)
    em_time = time.perf_counter() - t0
    target = em.history[-1] / len(x)
    print(
        f"EM to convergence: {len(em.history)} iterations, {em_time:.2f} s, mean log-likelihood {target:.5f}"
    )
    print(f"SVI as in Pyro's GMM tutorial (AutoDelta, Adam lr=0.1), up to {args.svi_budget:.0f} s:")
    (steps, svi_time, ll), reached = svi_time_to_em_loglik(
        x, args.k, target, args.svi_gap, args.svi_budget, args.svi_first_steps
    )
    if reached:
        print(
            f"  SVI reached EM's log-likelihood (within {args.svi_gap} nats/item) in {steps} steps, "
            f"{svi_time:.2f} s: {svi_time / em_time:.1f}x EM's time"
        )
    else:
        print(
            f"  SVI did not reach EM's log-likelihood within the budget: after {steps} steps "
            f"({svi_time:.2f} s) it is {target - ll:.4f} nats/item short; time ratio > {svi_time / em_time:.1f}x"
        )


if __name__ == "__main__":
    main()
