"""Effective samples per second: probgen's default MCMC against NumPyro's NUTS, on one thread.

The protocol:

* **The calls users make.**  probgen: ``pg.fit(model, data, method="mcmc", seed=seed)`` with every
  sampler option at its default (probgen's batched NUTS, 4 chains, 1,000 warm-up and 1,000 kept
  draws each).  NumPyro: ``MCMC(NUTS(model), num_warmup=1000, num_samples=1000, num_chains=4,
  chain_method="vectorized")`` run with ``jax.random.PRNGKey(seed)``.  Both start from their
  defaults (uniform in (-2, 2) on the unconstrained space).
* **What is timed.**  The whole fit, compilation (probgen's traced potential, JAX's jit) and
  warm-up included; not the imports, which are timed apart (``imports`` column): the side's
  package and what its fit loads on first use (probgen's sampler imports PyTorch's compiler,
  ``torch._inductor``, about 2 s, the first time it compiles a potential; NumPyro's side imports
  JAX and NumPyro).  A user pays them once a process.  Every run is a fresh process
  (``sys.executable``, this environment), with an empty inductor cache unless ``--cache warm``;
  the two sides alternate.
* **Cold or warm compile caches** (``--cache``).  ``cold`` (the default, a user's first fit on a
  machine): every run gets an empty inductor cache.  ``warm`` (every later fit of the same model
  and data, in a new process): each side's on-disk compile cache holds the model's compiled code
  from an earlier, untimed run of the same side, model and data (seed 1000): inductor's (on by
  default in PyTorch) and JAX's persistent compilation cache (off by default, switched on here with
  ``jax_compilation_cache_dir`` so that NumPyro is not the only side compiling from nothing).
* **One thread each.**  probgen: ``torch.set_num_threads(1)`` (and ``OMP_NUM_THREADS=1``).
  JAX: ``XLA_FLAGS="--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"`` and
  ``JAX_PLATFORMS=cpu``.
* **The figure.**  The smallest bulk ESS (``arviz.ess(method="bulk")``) over every scalar of every
  latent site, divided by the wall time; per seed (0, 1, 2), their median and the worst; the ratio
  probgen / NumPyro of the medians per model.
* **The same posterior.**  Before a figure is reported, every scalar's posterior mean is compared
  across the sides: ``|mean_pg - mean_np| <= 4 sqrt(mcse_pg**2 + mcse_np**2)`` (ArviZ's MCSE of the
  mean), per seed; a model that fails is flagged in the table (``SAME POSTERIOR?`` column).

Models (each written once per side, in the form users write):

* ``schools``: eight schools, non-centred (``mu ~ N(0, 5)``, ``tau ~ HalfCauchy(5)``,
  ``eta ~ N(0, 1)`` per school); 10 scalars.
* ``mixture``: a three-component 1-D Gaussian mixture over 1,000 overlapping points (components at
  -1.5, 0 and 2 with sds 1, 0.7 and 1.2, weights 0.3, 0.4, 0.3), ``weights ~ Dirichlet(1)``,
  ``locs ~ N(0, 10)``, ``scales ~ LogNormal(0, 1)``, the labels ``z ~ Categorical(weights)`` summed
  out by enumeration on both sides (probgen: its batched potential's tensor variable
  elimination; NumPyro: ``config_enumerate`` with funsor, NumPyro's own route).  The components
  are exchangeable, so both sides' draws are sorted by location, draw by draw, before anything
  is measured (a function of the unordered draw: the same post-processing for both); 9 scalars.
* ``logistic``: logistic regression on scikit-learn's breast-cancer data (569 rows), the 30
  covariates standardised, ``intercept ~ N(0, 5)``, ``coef ~ N(0, 1)`` each; written with
  covariates, ``model(x, y=None)``, fitted as ``pg.fit(model, {"x": X, "y": y})``; 31 scalars.

Install both sides with ``pip install -e ".[bench]"`` (numpyro, jax and funsor are in the bench
extra).  Run: ``python benchmarks/mcmc_vs_numpyro.py`` (3 seeds x 3 models x 2 sides: about half an
hour on one core), or ``--quick`` for a smoke run (seed 0, 200 warm-up + 200 draws).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

MODELS = ("schools", "mixture", "logistic")
#: ``mix1d`` (a 1-D two-component mixture of 300 points, learned scales) is for the seed sweep
#: (``benchmarks/mcmc_seed_sweep.py``) and may be named with ``--models``.
CHOICES = (*MODELS, "mix1d")
SIDES = ("probgen", "numpyro")
CHAINS, WARMUP, SAMPLES = 4, 1000, 1000
QUICK_WARMUP, QUICK_SAMPLES = 200, 200
Y8 = [28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0]
S8 = [15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0]
#: JAX on one thread (XLA's CPU client reads these at import).
XLA_ONE_THREAD = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
#: Posterior means must agree within this many combined Monte Carlo standard errors.
MAX_Z = 4.0


def mixture_data() -> np.ndarray:
    """1,000 points from three overlapping components (float32)."""
    rng = np.random.default_rng(1)
    labels = rng.choice(3, size=1000, p=[0.3, 0.4, 0.3])
    x = np.array([-1.5, 0.0, 2.0])[labels] + np.array([1.0, 0.7, 1.2])[labels] * rng.standard_normal(1000)
    return x.astype(np.float32)


def mix1d_data() -> np.ndarray:
    """300 points from two overlapping components (-2 with sd 1, 2 with sd 0.5), float32."""
    rng = np.random.default_rng(0)
    return np.concatenate([rng.standard_normal(150) - 2.0, 0.5 * rng.standard_normal(150) + 2.0]).astype(
        np.float32
    )


def breast_cancer() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's breast-cancer covariates, standardised, and the 0/1 labels (float32)."""
    from sklearn.datasets import load_breast_cancer

    x, y = load_breast_cancer(return_X_y=True)
    x = (x - x.mean(0)) / x.std(0)
    return x.astype(np.float32), y.astype(np.float32)


# ------------------------------------------------------------------------------------ the two sides
def probgen_model(name: str) -> tuple[Any, Any]:
    """The probgen model ``name`` (``pg.model`` of the Pyro function users write) and its data."""
    import pyro
    import pyro.distributions as dist
    import torch
    from pyro.ops.indexing import Vindex

    import probgen as pg

    s8 = torch.tensor(S8)

    def schools(y: Any = None) -> None:
        mu = pyro.sample("mu", dist.Normal(0.0, 5.0))
        tau = pyro.sample("tau", dist.HalfCauchy(5.0))
        with pyro.plate("schools", 8):
            eta = pyro.sample("eta", dist.Normal(0.0, 1.0))
            pyro.sample("obs", dist.Normal(mu + tau * eta, s8), obs=y)

    def mixture(x: Any = None) -> None:
        k = 2 if name == "mix1d" else 3
        weights = pyro.sample("weights", dist.Dirichlet(torch.ones(k)))
        locs = pyro.sample("locs", dist.Normal(0.0, 10.0).expand([k]).to_event(1))
        scales = pyro.sample("scales", dist.LogNormal(0.0, 1.0).expand([k]).to_event(1))
        with pyro.plate("data", len(x)):
            z = pyro.sample("z", dist.Categorical(weights))
            pyro.sample("obs", dist.Normal(Vindex(locs)[..., z], Vindex(scales)[..., z]), obs=x)

    def logistic(x: Any, y: Any = None) -> None:
        intercept = pyro.sample("intercept", dist.Normal(0.0, 5.0))
        coef = pyro.sample("coef", dist.Normal(0.0, 1.0).expand([x.shape[-1]]).to_event(1))
        with pyro.plate("data", x.shape[0]):
            pyro.sample("y", dist.Bernoulli(logits=intercept + x @ coef), obs=y)

    data: Any
    if name == "schools":
        fn, data = schools, torch.tensor(Y8)
    elif name in ("mixture", "mix1d"):
        fn, data = mixture, torch.from_numpy(mixture_data() if name == "mixture" else mix1d_data())
    else:
        x, y = breast_cancer()
        fn, data = logistic, {"x": torch.from_numpy(x), "y": torch.from_numpy(y)}
    return pg.model(fn), data


def run_probgen(name: str, seed: int, warmup: int | None, samples: int | None) -> dict[str, np.ndarray]:
    """One probgen fit in this process; returns the draws ``(chain, draw, ...)`` and the seconds."""
    import torch

    import probgen as pg

    torch.set_num_threads(1)
    model, data = probgen_model(name)
    sizes = {} if warmup is None else {"warmup_steps": warmup, "num_samples": samples}
    start = time.perf_counter()
    fit = pg.fit(model, data, method="mcmc", seed=seed, progress=False, **sizes)
    seconds = time.perf_counter() - start
    draws = {k: v.numpy() for k, v in (fit.posterior or {}).items()}
    return {**draws, "_seconds": np.array(seconds)}


def numpyro_model(name: str) -> tuple[Any, tuple[Any, ...]]:
    """The NumPyro model ``name`` and its arguments (JAX's threads set before it is imported)."""
    import jax.numpy as jnp
    import numpyro
    import numpyro.distributions as dist
    from numpyro.contrib.funsor import config_enumerate
    from numpyro.ops.indexing import Vindex

    s8 = jnp.array(S8)

    def schools(y: Any = None) -> None:
        mu = numpyro.sample("mu", dist.Normal(0.0, 5.0))
        tau = numpyro.sample("tau", dist.HalfCauchy(5.0))
        with numpyro.plate("schools", 8):
            eta = numpyro.sample("eta", dist.Normal(0.0, 1.0))
            numpyro.sample("obs", dist.Normal(mu + tau * eta, s8), obs=y)

    @config_enumerate
    def mixture(x: Any = None) -> None:
        k = 2 if name == "mix1d" else 3
        weights = numpyro.sample("weights", dist.Dirichlet(jnp.ones(k)))
        locs = numpyro.sample("locs", dist.Normal(0.0, 10.0).expand([k]).to_event(1))
        scales = numpyro.sample("scales", dist.LogNormal(0.0, 1.0).expand([k]).to_event(1))
        with numpyro.plate("data", len(x)):
            z = numpyro.sample("z", dist.Categorical(weights))
            numpyro.sample("obs", dist.Normal(Vindex(locs)[..., z], Vindex(scales)[..., z]), obs=x)

    def logistic(x: Any, y: Any = None) -> None:
        intercept = numpyro.sample("intercept", dist.Normal(0.0, 5.0))
        coef = numpyro.sample("coef", dist.Normal(0.0, 1.0).expand([x.shape[-1]]).to_event(1))
        with numpyro.plate("data", x.shape[0]):
            numpyro.sample("y", dist.Bernoulli(logits=intercept + x @ coef), obs=y)

    if name == "schools":
        return schools, (jnp.array(Y8),)
    if name in ("mixture", "mix1d"):
        return mixture, (jnp.asarray(mixture_data() if name == "mixture" else mix1d_data()),)
    x, y = breast_cancer()
    return logistic, (jnp.asarray(x), jnp.asarray(y))


def run_numpyro(name: str, seed: int, warmup: int | None, samples: int | None) -> dict[str, np.ndarray]:
    """One NumPyro fit in this process (JAX's threads set before it is imported)."""
    import jax
    from numpyro.infer import MCMC, NUTS

    fn, args = numpyro_model(name)
    start = time.perf_counter()
    mcmc = MCMC(
        NUTS(fn),
        num_warmup=WARMUP if warmup is None else warmup,
        num_samples=SAMPLES if samples is None else samples,
        num_chains=CHAINS,
        chain_method="vectorized",
        progress_bar=False,
    )
    mcmc.run(jax.random.PRNGKey(seed), *args)
    draws = {k: np.asarray(v) for k, v in mcmc.get_samples(group_by_chain=True).items()}
    seconds = time.perf_counter() - start
    return {**draws, "_seconds": np.array(seconds)}


def import_side(side: str) -> float:
    """Import what the side's fit uses (its package and what the fit imports on first use);
    the seconds taken."""
    start = time.perf_counter()
    if side == "probgen":
        import torch._inductor.compile_fx  # noqa: F401  (the sampler's compiler, imported on first use)

        import probgen  # noqa: F401
    else:
        import jax  # noqa: F401
        import numpyro.contrib.funsor  # noqa: F401
        import numpyro.infer  # noqa: F401
    return time.perf_counter() - start


def child(side: str, name: str, seed: int, quick: bool, out: str) -> None:
    """Run one fit (this process is fresh) and save its draws and seconds to ``out`` (npz)."""
    warmup, samples = (QUICK_WARMUP, QUICK_SAMPLES) if quick else (None, None)
    imports = import_side(side)
    run = run_probgen if side == "probgen" else run_numpyro
    np.savez(out, **run(name, seed, warmup, samples), _imports=np.array(imports))


def spawn(side: str, name: str, seed: int, quick: bool, cache: str | None = None) -> dict[str, np.ndarray]:
    """One fit in a fresh process on one thread; its draws and ``_seconds``.  ``cache``: a folder
    for the side's on-disk compile cache (kept), or None for an empty one (removed after)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    if side == "numpyro":
        env.update({"XLA_FLAGS": XLA_ONE_THREAD, "JAX_PLATFORMS": "cpu"})
        if cache is not None:
            env.update(
                {"JAX_COMPILATION_CACHE_DIR": cache, "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0"}
            )
    with tempfile.TemporaryDirectory() as tmp:
        # inductor keeps compiled graphs on disk between processes: an empty cache unless one is named
        env["TORCHINDUCTOR_CACHE_DIR"] = cache if cache is not None else str(Path(tmp) / "inductor")
        out = str(Path(tmp) / "draws.npz")
        cmd = [sys.executable, __file__, "--child", side, name, str(seed), out] + (
            ["--quick"] if quick else []
        )
        done = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if done.returncode != 0:
            raise RuntimeError(f"the {side} side failed on {name}, seed {seed}:\n{done.stderr[-3000:]}")
        with np.load(out) as f:
            return {k: f[k] for k in f.files}


# ------------------------------------------------------------------------------------- measurement
def scalars(draws: dict[str, np.ndarray], name: str) -> dict[str, np.ndarray]:
    """Every latent scalar as ``(chain, draw)``; a mixture's components sorted by location."""
    sites = {k: v for k, v in draws.items() if not k.startswith("_")}
    if name in ("mixture", "mix1d"):
        order = np.argsort(sites["locs"], axis=-1)
        sites = {k: np.take_along_axis(sites[k], order, -1) for k in ("weights", "locs", "scales")}
    out = {}
    for k, v in sites.items():
        flat = v.reshape(v.shape[:2] + (-1,))
        for i in range(flat.shape[-1]):
            out[f"{k}[{i}]" if flat.shape[-1] > 1 or v.ndim > 2 else k] = flat[..., i].astype(np.float64)
    return out


def min_bulk_ess(x: dict[str, np.ndarray]) -> tuple[float, str]:
    import arviz as az

    ess = {k: float(az.ess(v, method="bulk")) for k, v in x.items()}
    worst = min(ess, key=lambda k: ess[k])
    return ess[worst], worst


def largest_z(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> tuple[float, str]:
    """The largest ``|mean_a - mean_b| / sqrt(mcse_a**2 + mcse_b**2)`` over the scalars."""
    import arviz as az

    z = {}
    for k in a:
        se = np.hypot(
            float(np.ravel(az.mcse(a[k], method="mean"))[0]), float(np.ravel(az.mcse(b[k], method="mean"))[0])
        )
        z[k] = abs(a[k].mean() - b[k].mean()) / se
    worst = max(z, key=lambda k: z[k])
    return z[worst], worst


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: seed 0, 200 + 200 draws")
    parser.add_argument("--models", nargs="+", choices=CHOICES, default=list(MODELS))
    parser.add_argument("--seeds", nargs="+", type=int, default=None, help="default 0 1 2 (--quick: 0)")
    parser.add_argument("--json", default=None, help="also write every run's figures to this file")
    parser.add_argument(
        "--cache",
        choices=("cold", "warm"),
        default="cold",
        help="cold: an empty compile cache every run (default); warm: each side's cache primed by an untimed run",
    )
    parser.add_argument("--child", nargs=4, metavar=("SIDE", "MODEL", "SEED", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        side, name, seed, out = args.child
        child(side, name, int(seed), args.quick, out)
        return
    seeds = args.seeds if args.seeds is not None else ([0] if args.quick else [0, 1, 2])
    runs: list[dict[str, Any]] = []
    caches = tempfile.TemporaryDirectory() if args.cache == "warm" else None
    print(f"compile caches: {args.cache}")
    print(
        f"{'model':9s} {'seed':>4s} {'side':8s} {'seconds':>8s} {'min ESS':>8s} {'ESS/s':>8s} {'imports':>8s}"
        "  worst scalar"
    )
    for name in args.models:
        cache = {side: None for side in SIDES}
        if caches is not None:
            for side in SIDES:  # the untimed run that fills the side's cache for this model
                cache[side] = str(Path(caches.name) / f"{side}-{name}")
                spawn(side, name, 1000, args.quick, cache[side])
        for seed in seeds:
            # alternate which side runs first, seed by seed
            order = SIDES if seed % 2 == 0 else SIDES[::-1]
            got = {side: spawn(side, name, seed, args.quick, cache[side]) for side in order}
            x = {side: scalars(got[side], name) for side in SIDES}
            z, z_at = largest_z(x["probgen"], x["numpyro"])
            for side in SIDES:
                seconds, imports = float(got[side]["_seconds"]), float(got[side]["_imports"])
                ess, at = min_bulk_ess(x[side])
                runs.append(
                    {
                        "model": name,
                        "seed": seed,
                        "side": side,
                        "seconds": seconds,
                        "ess": ess,
                        "z": z,
                        "imports": imports,
                    }
                )
                print(
                    f"{name:9s} {seed:4d} {side:8s} {seconds:8.2f} {ess:8.0f} {ess / seconds:8.1f} {imports:8.2f}  {at}"
                )
            flag = "ok" if z <= MAX_Z else "DIFFERENT"
            print(f"{name:9s} {seed:4d} same posterior: largest |z| {z:.2f} at {z_at} ({flag})")
    print()
    print(f"{'model':9s} {'side':8s} {'median ESS/s':>12s} {'worst ESS/s':>11s}  per seed")
    for name in args.models:
        median = {}
        for side in SIDES:
            rates = [r["ess"] / r["seconds"] for r in runs if r["model"] == name and r["side"] == side]
            median[side] = statistics.median(rates)
            per_seed = " ".join(f"{v:.1f}" for v in rates)
            print(f"{name:9s} {side:8s} {median[side]:12.1f} {min(rates):11.1f}  {per_seed}")
        same = all(r["z"] <= MAX_Z for r in runs if r["model"] == name)
        print(
            f"{name:9s} ratio probgen / NumPyro (medians): {median['probgen'] / median['numpyro']:.2f}x"
            f"{'' if same else '  (SAME POSTERIOR? means differ by more than 4 MCSE)'}"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(runs, indent=1))


if __name__ == "__main__":
    main()
