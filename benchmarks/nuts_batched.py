"""Effective samples per second: probgen's batched NUTS against the default MCMC kernel.

Eight schools, non-centred (the classic data), 4 chains of 500 warm-up and 500 kept draws on one
thread (``torch.set_num_threads(1)``), seeds 0-2.  Both sides are ``pg.fit(..., method="mcmc")``
from the default starts: ``kernel="nuts_batched"`` (every chain in lockstep on one batched,
compiled potential) and the default kernel (Pyro's NUTS, chains one after another).  The wall
time of the whole fit (compilation and warm-up included) is timed; the figure is the smallest
bulk ESS over every parameter element (``arviz.ess``) per second.  Every seed is printed with
its largest split R-hat and its divergences, then the ratio batched / default per seed.

Run: ``python benchmarks/nuts_batched.py`` (``--seeds 0 1 2``, ``--warmup``, ``--samples``).
"""

from __future__ import annotations

import argparse
import time
import warnings
from typing import Any

import arviz as az
import numpy as np
import pyro
import pyro.distributions as dist
import torch

import probgen as pg
import probgen.inference.mcmc  # noqa: F401  (registers the backend)

Y8 = [28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0]
S8 = torch.tensor([15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0])
CHAINS = 4


@pg.model
def schools(data: Any = None) -> None:
    mu = pyro.sample("mu", dist.Normal(0.0, 5.0))
    tau = pyro.sample("tau", dist.HalfCauchy(5.0))
    with pyro.plate("schools", 8):
        eta = pyro.sample("eta", dist.Normal(0.0, 1.0))
        pyro.sample("obs", dist.Normal(mu + tau * eta, S8), obs=data)


def run(kernel: str | None, seed: int, warmup: int, samples: int) -> dict[str, float]:
    """Seconds, min bulk ESS, ESS per second, max R-hat and divergences of one fit."""
    options: dict[str, Any] = {} if kernel is None else {"kernel": kernel}
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = pg.fit(
            schools,
            torch.tensor(Y8),
            method="mcmc",
            num_chains=CHAINS,
            warmup_steps=warmup,
            num_samples=samples,
            seed=seed,
            progress=False,
            **options,
        )
    seconds = time.perf_counter() - start
    draws = {k: v.numpy() for k, v in (fit.posterior or {}).items()}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ess = min(_extreme(v, "ess") for v in draws.values())
        rhat = max(_extreme(v, "rhat") for v in draws.values())
    return {
        "seconds": seconds,
        "ess": ess,
        "rate": ess / seconds,
        "rhat": rhat,
        "divergences": float(fit.sample_stats["diverging"].sum()),
    }


def _extreme(v: np.ndarray, what: str) -> float:
    """The smallest ESS (or the largest R-hat) over the elements of a ``(chain, draw, ...)`` array."""
    flat = v.reshape(v.shape[0], v.shape[1], -1)
    if what == "ess":
        return min(float(az.ess(flat[:, :, j], method="bulk")) for j in range(flat.shape[-1]))
    return max(float(az.rhat(flat[:, :, j])) for j in range(flat.shape[-1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--warmup", type=int, default=500)
    parser.add_argument("--samples", type=int, default=500)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"eight schools, non-centred: {CHAINS} chains x ({args.warmup} warm-up + {args.samples} draws)")
    print(
        f"{'seed':>4s} {'kernel':14s} {'seconds':>8s} {'min ESS':>8s} {'ESS/s':>8s} {'R-hat':>7s} {'div':>4s}"
    )
    ratios = []
    for seed in args.seeds:
        rows = {}
        for name, kernel in (("nuts_batched", "nuts_batched"), ("default", None)):
            r = rows[name] = run(kernel, seed, args.warmup, args.samples)
            print(
                f"{seed:4d} {name:14s} {r['seconds']:8.2f} {r['ess']:8.0f} {r['rate']:8.1f} "
                f"{r['rhat']:7.3f} {r['divergences']:4.0f}"
            )
        ratios.append(rows["nuts_batched"]["rate"] / rows["default"]["rate"])
        print(f"{seed:4d} ratio nuts_batched / default ESS/s: {ratios[-1]:.2f}")
    print(f"median ratio: {float(np.median(ratios)):.2f}")


if __name__ == "__main__":
    main()
