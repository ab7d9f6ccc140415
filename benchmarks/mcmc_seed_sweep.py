"""Does the default sampler leave a chain stuck, or call a bad run healthy?  A sweep over seeds.

For each model of ``benchmarks/mcmc_vs_numpyro.py`` (eight schools, the breast-cancer logistic
regression, the enumerated three-component mixture) and a 1-D two-component mixture of 300
overlapping points with learned scales (``mix1d``), the default ``pg.fit(model, data,
method="mcmc", seed=seed)`` (4 chains, 1,000 warm-up and 1,000 kept draws) is run for every seed,
and each run is judged:

* **Stuck chain**: a chain whose draws diverge on more than a fifth of its transitions, or whose
  mean acceptance statistic is under 0.2, or whose posterior means sit more than 6 of the other
  chains' pooled posterior sds away from theirs (every scalar checked; mixtures' components
  sorted by location, draw by draw, so that label switching is not counted as stuck).
* **R-hat and ESS**: the largest rank-normalised split R-hat and the smallest bulk ESS over every
  scalar (mixtures sorted as above).
* **Healthy**: ``pg.check(fit)`` returns no problem (its defaults: R-hat under 1.01, bulk ESS at
  least 400, no divergence).  A run ``pg.check`` calls healthy must have R-hat under 1.01 and no
  stuck chain; every other run must be flagged (it is, by definition: the table says why).
* **Same posterior**: with ``--reference`` (NumPyro installed: the bench extra), every scalar's
  mean against a long NumPyro run (4 chains x 5,000 draws, NumPyro's NUTS) within 4 combined
  Monte Carlo standard errors.

The last lines count, per model: runs, healthy runs, stuck chains, healthy runs with R-hat of
1.01 or more (must be 0), runs whose means differ from the reference, and the worst R-hat.

Run: ``python benchmarks/mcmc_seed_sweep.py --seeds 20 --models schools logistic mix1d
--reference`` (about 20 minutes on one core; the three-component mixture takes about a minute
a seed more); ``--quick`` for 3 seeds of 300 + 300 draws.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
import mcmc_vs_numpyro as bench  # noqa: E402  (the models, written once)

STUCK_DIVERGENT_SHARE, STUCK_ACCEPT, STUCK_SDS = 0.2, 0.2, 6.0


def reference_draws(name: str, draws: int) -> dict[str, np.ndarray]:
    """A long NumPyro run in a fresh process (one thread): every scalar as ``(chain, draw)``."""
    import subprocess
    import tempfile

    env = {**os.environ, "OMP_NUM_THREADS": "1", "XLA_FLAGS": bench.XLA_ONE_THREAD, "JAX_PLATFORMS": "cpu"}
    with tempfile.TemporaryDirectory() as tmp:
        out = str(Path(tmp) / "ref.npz")
        here = str(Path(__file__).parent)
        code = (
            f"import sys, numpy as np; sys.path.insert(0, {here!r}); import mcmc_vs_numpyro as b; "
            f"np.savez({out!r}, **b.run_numpyro({name!r}, 12345, 1000, {draws}))"
        )
        subprocess.run([sys.executable, "-c", code], check=True, env=env, capture_output=True)
        with np.load(out) as f:
            return bench.scalars({k: f[k] for k in f.files}, name)


def stuck_chains(x: dict[str, np.ndarray], diverging: np.ndarray, accept: np.ndarray) -> list[int]:
    """Chains judged stuck (see the module docstring)."""
    C = diverging.shape[0]
    out = []
    for c in range(C):
        others = [o for o in range(C) if o != c]
        far = any(
            abs(v[c].mean() - v[others].mean()) > STUCK_SDS * max(float(v[others].std()), 1e-12)
            for v in x.values()
        )
        if diverging[c].mean() > STUCK_DIVERGENT_SHARE or accept[c].mean() < STUCK_ACCEPT or far:
            out.append(c)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--models", nargs="+", choices=bench.CHOICES, default=["schools", "logistic", "mix1d"]
    )
    parser.add_argument("--seeds", type=int, default=20, help="seeds 0 .. N-1")
    parser.add_argument("--reference", action="store_true", help="compare means with a long NumPyro run")
    parser.add_argument("--quick", action="store_true", help="3 seeds of 300 + 300 draws")
    args = parser.parse_args()
    import torch

    import probgen as pg
    from probgen.arviz_bridge import ess, rhat

    torch.set_num_threads(1)
    seeds = range(3 if args.quick else args.seeds)
    sizes = {"warmup_steps": 300, "num_samples": 300} if args.quick else {}
    print(
        f"{'model':8s} {'seed':>4s} {'sec':>6s} {'R-hat':>6s} {'minESS':>6s} {'div':>4s} stuck  healthy  z/problems"
    )
    totals: dict[str, dict[str, Any]] = {}
    for name in args.models:
        ref = reference_draws(name, 5000) if args.reference else None
        model, data = bench.probgen_model(name)
        t = totals[name] = {
            "runs": 0,
            "healthy": 0,
            "stuck": 0,
            "bad_healthy": 0,
            "different": 0,
            "worst": 0.0,
        }
        for seed in seeds:
            start = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # an unhealthy run warns: it is judged here instead
                fit = pg.fit(model, data, method="mcmc", seed=seed, progress=False, **sizes)
            seconds = time.perf_counter() - start
            draws = {k: v.numpy() for k, v in (fit.posterior or {}).items()}
            x = bench.scalars(draws, name)
            r = max(float(v) for v in rhat(x).values())
            e = min(float(v) for v in ess(x).values())
            stats = fit.sample_stats
            div = np.asarray(stats["diverging"])
            stuck = stuck_chains(x, div, np.asarray(stats["acceptance_rate"]))
            problems = pg.check(fit)
            z = bench.largest_z(x, ref)[0] if ref is not None else float("nan")
            t["runs"] += 1
            t["healthy"] += not problems
            t["stuck"] += len(stuck)
            t["bad_healthy"] += (not problems) and (r >= 1.01 or bool(stuck))
            t["different"] += bool(z > bench.MAX_Z)
            t["worst"] = max(t["worst"], r)
            why = "; ".join(p[:60] for p in problems)
            print(
                f"{name:8s} {seed:4d} {seconds:6.1f} {r:6.3f} {e:6.0f} {int(div.sum()):4d} {str(stuck):5s}"
                f"  {'yes' if not problems else 'no ':3s}      z {z:.2f}  {why}",
                flush=True,
            )
    print()
    print("model    runs healthy stuck-chains healthy-but-R-hat>=1.01 means-differ worst-R-hat")
    for name, t in totals.items():
        print(
            f"{name:8s} {t['runs']:4d} {t['healthy']:7d} {t['stuck']:12d} {t['bad_healthy']:23d} "
            f"{t['different']:12d} {t['worst']:11.3f}"
        )


if __name__ == "__main__":
    main()
