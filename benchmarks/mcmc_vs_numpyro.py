"""Effective samples per second: probgen's ChEES-HMC (and its NUTS) against NumPyro's NUTS.

Two posteriors:

* eight schools, non-centred (the classic data);
* a three-component 1-D Gaussian mixture (500 points, Dirichlet weights, Normal(0, 10) locations,
  unit scale) with the labels summed out.  Both sides start every chain from the same locations
  (-3, 0, 3), so the chains keep one labelling; probgen's relabelling of draws is turned off here so
  both sides report the draws as sampled.

Each side runs 4 chains of 1000 warm-up and 1000 kept draws on one thread
(``torch.set_num_threads(1)``; for JAX ``XLA_FLAGS=--xla_force_host_platform_device_count=1``,
``OMP_NUM_THREADS=1`` and ``chain_method="vectorized"``).  The wall time of the whole fit
(compilation and warm-up included) is timed; the figure is the smallest bulk ESS over every
parameter element (``arviz.ess``) per second; medians of ``--repeats`` runs.

NumPyro is not a dependency of probgen: its side runs as a subprocess of a separate environment's
python (``--numpyro-python``, default ``/tmp/npvenv/bin/python``; make one with
``python -m venv /tmp/npvenv && /tmp/npvenv/bin/pip install numpyro jax arviz funsor``;
funsor is NumPyro's enumeration engine), given the same
data as JSON, and prints its figures as JSON.  Without it only probgen's figures are printed.

Run: ``python benchmarks/mcmc_vs_numpyro.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path
from typing import Any

import arviz as az
import numpy as np
import pyro
import pyro.distributions as dist
import torch
from pyro.ops.indexing import Vindex

import probgen as pg
import probgen.inference.mcmc  # noqa: F401  (registers the backend)

Y8 = [28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0]
S8 = [15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0]
LOCS0 = [-3.0, 0.0, 3.0]
CHAINS, WARMUP, SAMPLES = 4, 1000, 1000


def mixture_data() -> list[float]:
    """500 points from three unit-variance components at -4, 0 and 5 (weights 0.3, 0.3, 0.4)."""
    rng = np.random.default_rng(1)
    labels = rng.choice(3, size=500, p=[0.3, 0.3, 0.4])
    return (np.array([-4.0, 0.0, 5.0])[labels] + rng.standard_normal(500)).tolist()


def min_bulk_ess(draws: dict[str, np.ndarray]) -> float:
    """Smallest bulk ESS over every element of every site; draws are ``(chain, draw, ...)``."""
    ess = az.ess(az.convert_to_dataset(draws), method="bulk")
    return min(float(np.min(ess[k].values)) for k in draws)


# ----------------------------------------------------------------------------------------- probgen
_S8 = torch.tensor(S8)


@pg.model
def schools(data: Any = None) -> None:
    mu = pyro.sample("mu", dist.Normal(0.0, 5.0))
    tau = pyro.sample("tau", dist.HalfCauchy(5.0))
    with pyro.plate("schools", 8):
        eta = pyro.sample("eta", dist.Normal(0.0, 1.0))
        pyro.sample("obs", dist.Normal(mu + tau * eta, _S8), obs=data)


@pg.model
def mixture(data: Any = None) -> None:
    weights = pyro.sample("weights", dist.Dirichlet(torch.ones(3)))
    locs = pyro.sample("locs", dist.Normal(0.0, 10.0).expand([3]).to_event(1))
    with pyro.plate("data", 500 if data is None else len(data)):
        z = pyro.sample("z", dist.Categorical(weights))
        pyro.sample("obs", dist.Normal(Vindex(locs)[..., z], 1.0), obs=data)


mixture.align_posterior = lambda posterior, data=None, params=None: dict(posterior)  # type: ignore[method-assign]


def run_probgen(case: str, kernel: str, seed: int) -> tuple[float, float]:
    """(seconds, min bulk ESS) of one probgen fit."""
    init: Any = "auto"
    if case == "schools":
        model, data = schools, torch.tensor(Y8)
    else:
        model, data = mixture, torch.tensor(mixture_data())
        init = {"locs": torch.tensor(LOCS0), "weights": torch.ones(3) / 3}
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = pg.fit(
            model,
            data,
            method="mcmc",
            kernel=kernel,
            num_chains=CHAINS,
            warmup_steps=WARMUP,
            num_samples=SAMPLES,
            init=init,
            seed=seed,
            progress=False,
        )
    seconds = time.perf_counter() - start
    return seconds, min_bulk_ess({k: v.numpy() for k, v in (fit.posterior or {}).items()})


# ----------------------------------------------------------------------------------------- NumPyro
NUMPYRO_SIDE = textwrap.dedent(
    """
    import json, sys, time
    import numpy as np
    import arviz as az
    import jax, jax.numpy as jnp
    import numpyro, numpyro.distributions as dist
    from numpyro.infer import MCMC, NUTS, init_to_value
    from numpyro.ops.indexing import Vindex
    from numpyro.contrib.funsor import config_enumerate

    args = json.loads(sys.argv[1])
    S8 = jnp.array(args["S8"])

    def schools(y):
        mu = numpyro.sample("mu", dist.Normal(0.0, 5.0))
        tau = numpyro.sample("tau", dist.HalfCauchy(5.0))
        with numpyro.plate("schools", 8):
            eta = numpyro.sample("eta", dist.Normal(0.0, 1.0))
            numpyro.sample("obs", dist.Normal(mu + tau * eta, S8), obs=y)

    @config_enumerate
    def mixture(x):
        weights = numpyro.sample("weights", dist.Dirichlet(jnp.ones(3)))
        locs = numpyro.sample("locs", dist.Normal(0.0, 10.0).expand([3]).to_event(1))
        with numpyro.plate("data", x.shape[0]):
            z = numpyro.sample("z", dist.Categorical(weights))
            numpyro.sample("obs", dist.Normal(Vindex(locs)[..., z], 1.0), obs=x)

    if args["case"] == "schools":
        model, data, init = schools, jnp.array(args["Y8"]), {}
    else:
        model, data = mixture, jnp.array(args["X"])
        init = {"init_strategy": init_to_value(values={"locs": jnp.array(args["LOCS0"]),
                                                      "weights": jnp.ones(3) / 3})}
    start = time.perf_counter()
    mcmc = MCMC(NUTS(model, **init), num_warmup=args["warmup"], num_samples=args["samples"],
                num_chains=args["chains"], chain_method="vectorized", progress_bar=False)
    mcmc.run(jax.random.PRNGKey(args["seed"]), data)
    draws = {k: np.asarray(v) for k, v in mcmc.get_samples(group_by_chain=True).items()}
    seconds = time.perf_counter() - start
    ess = az.ess(az.convert_to_dataset(draws), method="bulk")
    print(json.dumps({"seconds": seconds, "ess": min(float(np.min(ess[k].values)) for k in draws)}))
    """
)


def run_numpyro(python: str, case: str, seed: int) -> tuple[float, float]:
    """(seconds, min bulk ESS) of one NumPyro fit, in a subprocess of ``python``."""
    args = {
        "case": case,
        "Y8": Y8,
        "S8": S8,
        "X": mixture_data(),
        "LOCS0": LOCS0,
        "chains": CHAINS,
        "warmup": WARMUP,
        "samples": SAMPLES,
        "seed": seed,
    }
    env = {
        **os.environ,
        "XLA_FLAGS": "--xla_force_host_platform_device_count=1",
        "OMP_NUM_THREADS": "1",
        "JAX_PLATFORMS": "cpu",
    }
    out = subprocess.run(
        [python, "-c", NUMPYRO_SIDE, json.dumps(args)], capture_output=True, text=True, env=env
    )
    if out.returncode != 0:
        raise RuntimeError(f"the NumPyro side failed:\n{out.stderr[-2000:]}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    return float(result["seconds"]), float(result["ess"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--numpyro-python", default="/tmp/npvenv/bin/python")
    parser.add_argument("--no-nuts", action="store_true", help="skip probgen's (slow) sequential NUTS")
    args = parser.parse_args()
    torch.set_num_threads(1)
    have_numpyro = Path(args.numpyro_python).exists()
    if not have_numpyro:
        print(f"NumPyro's python {args.numpyro_python} not found: probgen's figures only", file=sys.stderr)
    print(f"{'case':10s} {'sampler':22s} {'seconds':>8s} {'min ESS':>8s} {'ESS/s':>8s}")
    for case in ("schools", "mixture"):
        rows: dict[str, list[tuple[float, float]]] = {}
        for r in range(args.repeats):
            rows.setdefault("probgen chees", []).append(run_probgen(case, "chees", r))
            if have_numpyro:
                rows.setdefault("numpyro nuts", []).append(run_numpyro(args.numpyro_python, case, r))
        if not args.no_nuts:  # one run: the sequential path takes minutes
            rows["probgen nuts (1 run)"] = [run_probgen(case, "nuts", 0)]
        rate = {}
        for name, runs in rows.items():
            seconds = statistics.median(s for s, _ in runs)
            ess = statistics.median(e for _, e in runs)
            rate[name] = statistics.median(e / s for s, e in runs)
            print(f"{case:10s} {name:22s} {seconds:8.2f} {ess:8.0f} {rate[name]:8.1f}")
        if "numpyro nuts" in rate:
            print(f"{case:10s} ratio chees / numpyro: {rate['probgen chees'] / rate['numpyro nuts']:.2f}")


if __name__ == "__main__":
    main()
