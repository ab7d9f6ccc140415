"""Markov chain Monte Carlo with NUTS or HMC (``method="mcmc"``).

Discrete latents are enumerated out of the potential (Pyro's NUTS does this for sites marked
for parallel enumeration), chains run one after another in this process (Pyro's
multiprocessing chains are known to hang, so they are never the default), and every draw's
sampler statistics are recorded for ArviZ: divergence, step size, tree depth, acceptance
probability and log density.  Pyro keeps only the divergences' indices and a running mean of
the acceptance probability, so the per-draw statistics are read off the kernel after each step.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pyro
import torch
from pyro.infer import HMC, NUTS, config_enumerate
from pyro.infer import MCMC as PyroMCMC
from pyro.infer.autoguide.initialization import init_to_median, init_to_sample, init_to_uniform

from probgen.fit import Fit, register_backend
from probgen.model import GenerativeModel
from probgen.posterior import sample_discrete

__all__ = ["MCMC"]

_INITS = {"uniform": init_to_uniform, "median": init_to_median, "sample": init_to_sample}


class _StatsRecorder:
    """Reads per-draw statistics off a Pyro HMC/NUTS kernel from the MCMC hook."""

    def __init__(self, kernel: Any) -> None:
        self.kernel = kernel
        self.depth = 0
        self.rows: list[dict[str, float]] = []
        self._n_div = 0
        self._prev_mean_accept = 0.0
        if hasattr(kernel, "_build_tree"):
            original = kernel._build_tree

            def build_tree(
                z: Any, r: Any, z_grads: Any, log_slice: Any, direction: Any, tree_depth: int, energy: Any
            ) -> Any:
                self.depth = max(self.depth, tree_depth + 1)
                return original(z, r, z_grads, log_slice, direction, tree_depth, energy)

            kernel._build_tree = build_tree

    def __call__(self, kernel: Any, params: Any, stage: str, i: int) -> None:
        depth, self.depth = self.depth, 0
        if not stage.startswith("Sample"):
            self._n_div = len(kernel._divergences)
            return
        n = i + 1
        mean_accept = float(kernel._mean_accept_prob)
        accept = mean_accept * n - self._prev_mean_accept * (n - 1)
        self._prev_mean_accept = mean_accept
        n_div = len(kernel._divergences)
        pe = getattr(kernel, "_potential_energy_last", None)
        self.rows.append(
            {
                "diverging": float(n_div > self._n_div),
                "step_size": float(kernel.step_size),
                "tree_depth": float(depth),
                "acceptance_rate": float(min(max(accept, 0.0), 1.0)),
                "lp": float(-pe) if pe is not None else float("nan"),
            }
        )
        self._n_div = n_div


class MCMC:
    """NUTS (default) or HMC.

    Options (Pyro's names): ``num_samples`` (1000), ``warmup_steps`` (``num_samples``),
    ``num_chains`` (2), ``kernel`` ("nuts" or "hmc"), ``target_accept_prob`` (0.8),
    ``max_tree_depth`` (10), ``step_size`` (1.0), ``num_steps`` (HMC only), ``init``
    ("auto": the model's own starting values when it offers ``init_params``, else "uniform";
    "uniform", "median", "sample", or a dict of starting values), ``recover_discrete`` (False:
    when True, draw the discrete latents for every posterior draw into ``fit.extras["discrete"]``),
    ``chain_method`` ("sequential"; "parallel" opts in to Pyro's multiprocessing chains),
    ``num_threads`` (1: torch intra-op threads while sampling; None keeps torch's setting).
    NUTS evaluates the model's gradient thousands of times on small tensors, where extra
    threads only add synchronisation: on a loaded two-core machine one gradient took 230 ms
    with two threads against 9 ms with one.
    """

    name = "mcmc"

    def supports(self, model: GenerativeModel, data: Any) -> str | None:
        roles = model.roles(data)
        if not roles.continuous_sites:
            return "it has no continuous latent sites to sample (use 'enum' for all-discrete models)"
        return None

    def fit(self, model: GenerativeModel, data: Any, *, seed: int, progress: bool, **options: Any) -> Fit:
        defaults: dict[str, Any] = {
            "num_samples": 1000,
            "warmup_steps": None,
            "num_chains": 2,
            "kernel": "nuts",
            "target_accept_prob": 0.8,
            "max_tree_depth": 10,
            "step_size": 1.0,
            "num_steps": None,
            "init": "auto",
            "recover_discrete": False,
            "chain_method": "sequential",
            "num_threads": 1,
        }
        unknown = set(options) - set(defaults)
        if unknown:
            raise ValueError(
                f"Unknown MCMC option(s) {sorted(unknown)}; expected some of: {', '.join(sorted(defaults))}."
            )
        o = {**defaults, **options}
        if o["warmup_steps"] is None:
            o["warmup_steps"] = o["num_samples"]
        for key in ("num_samples", "num_chains"):
            if isinstance(o[key], bool) or not isinstance(o[key], int) or o[key] < 1:
                raise ValueError(f"{key} must be a positive int; got {o[key]!r}.")
        if (
            isinstance(o["warmup_steps"], bool)
            or not isinstance(o["warmup_steps"], int)
            or o["warmup_steps"] < 0
        ):
            raise ValueError(f"warmup_steps must be a non-negative int; got {o['warmup_steps']!r}.")
        nt = o["num_threads"]
        if nt is not None and (isinstance(nt, bool) or not isinstance(nt, int) or nt < 1):
            raise ValueError(f"num_threads must be a positive int or None; got {nt!r}.")
        if o["kernel"] not in ("nuts", "hmc"):
            raise ValueError(f"kernel must be 'nuts' or 'hmc'; got {o['kernel']!r}.")
        if o["chain_method"] not in ("sequential", "parallel"):
            raise ValueError(f"chain_method must be 'sequential' or 'parallel'; got {o['chain_method']!r}.")
        if not 0 < o["target_accept_prob"] < 1:
            raise ValueError(f"target_accept_prob must be in (0, 1); got {o['target_accept_prob']!r}.")
        roles = model.roles(data)
        init = o["init"]
        if init == "auto":
            # A model that offers starting values (the EM hook) starts every chain there: NUTS from
            # a random start on a multimodal mixture posterior spends its warmup on very deep trees.
            hook = getattr(model, "init_params", None)
            if callable(hook):
                em_defaults: Any = getattr(model, "em_defaults", dict)
                strategy = em_defaults().get("init", "random")
                start = hook(data, init=strategy, generator=torch.Generator().manual_seed(seed))
                init = {k: v for k, v in start.items() if k in roles.continuous_sites}
            else:
                init = "uniform"
        if isinstance(init, Mapping):
            unknown_sites = set(init) - set(roles.continuous_sites)
            if unknown_sites:
                raise ValueError(
                    f"init names unknown site(s) {sorted(unknown_sites)}; latent sites are {list(roles.continuous_sites)}."
                )
            values = {k: torch.as_tensor(v) for k, v in init.items()}

            def init_strategy(site: Any, _values: Mapping[str, torch.Tensor] = values) -> torch.Tensor:
                fallback = init_to_uniform(site)
                if site["name"] not in _values:
                    return fallback
                return _values[site["name"]].to(fallback.dtype).expand(fallback.shape)

            init_fn: Any = init_strategy
        elif init in _INITS:
            init_fn = _INITS[init]
        else:
            raise ValueError(
                f"init={init!r} is not known; expected a dict of values or one of: auto, {', '.join(_INITS)}."
            )

        model_fn = config_enumerate(model.model, default="parallel") if roles.discrete_sites else model.model

        def make_kernel() -> Any:
            common = {
                "max_plate_nesting": roles.max_plate_nesting,
                "init_strategy": init_fn,
                "step_size": o["step_size"],
            }
            if o["kernel"] == "nuts":
                return NUTS(
                    model_fn,
                    target_accept_prob=o["target_accept_prob"],
                    max_tree_depth=o["max_tree_depth"],
                    **common,
                )
            return HMC(
                model_fn, target_accept_prob=o["target_accept_prob"], num_steps=o["num_steps"], **common
            )

        threads = torch.get_num_threads()
        if o["num_threads"] is not None:
            torch.set_num_threads(int(o["num_threads"]))
        try:
            chains, stats = self._run_chains(make_kernel, data, o, seed, progress)
        finally:
            torch.set_num_threads(threads)

        posterior = {k: torch.stack([ch[k] for ch in chains]) for k in chains[0]}
        align = getattr(model, "align_posterior", None)
        if callable(align):
            posterior = align(posterior)
        sample_stats = {k: np.asarray([[row[k] for row in rows] for rows in stats]) for k in stats[0][0]}
        sample_stats["diverging"] = sample_stats["diverging"].astype(bool)  # ArviZ indexes draws with it
        if "tree_depth" in sample_stats:
            sample_stats["tree_depth"] = sample_stats["tree_depth"].astype(np.int64)
        params = {k: v.mean((0, 1)) for k, v in posterior.items() if k in roles.global_sites}
        extras: dict[str, Any] = {}
        if o["recover_discrete"] and roles.discrete_sites:
            extras["discrete"] = self._recover(model, data, posterior, roles)
        n_div = int(sample_stats["diverging"].sum())
        return Fit(
            model=model,
            data=data,
            method=self.name,
            params=params,
            posterior=posterior,
            history=sample_stats["lp"].reshape(-1) if "lp" in sample_stats else np.zeros(0),
            converged=n_div == 0,
            sample_stats=sample_stats,
            extras=extras,
            seed=seed,
        )

    @staticmethod
    def _run_chains(
        make_kernel: Any, data: Any, o: dict[str, Any], seed: int, progress: bool
    ) -> tuple[list[dict[str, torch.Tensor]], list[list[dict[str, float]]]]:
        chains: list[dict[str, torch.Tensor]] = []
        stats: list[list[dict[str, float]]] = []
        if o["chain_method"] == "parallel" and o["num_chains"] > 1:
            kernel = make_kernel()
            runner = PyroMCMC(
                kernel,
                o["num_samples"],
                o["warmup_steps"],
                num_chains=o["num_chains"],
                disable_progbar=not progress,
            )
            runner.run(data)
            grouped = runner.get_samples(group_by_chain=True)
            chains = [{k: v[c] for k, v in grouped.items()} for c in range(o["num_chains"])]
            div = runner.diagnostics()
            stats = [
                [{"diverging": float(i in div["divergences"][f"chain {c}"])} for i in range(o["num_samples"])]
                for c in range(o["num_chains"])
            ]
        else:
            for c in range(o["num_chains"]):
                pyro.set_rng_seed(seed + 7919 * c)
                kernel = make_kernel()
                recorder = _StatsRecorder(kernel)
                runner = PyroMCMC(
                    kernel,
                    o["num_samples"],
                    o["warmup_steps"],
                    num_chains=1,
                    disable_progbar=not progress,
                    hook_fn=recorder,
                )
                runner.run(data)
                chains.append(runner.get_samples())
                stats.append(recorder.rows)
        return chains, stats

    @staticmethod
    def _recover(
        model: GenerativeModel, data: Any, posterior: dict[str, torch.Tensor], roles: Any
    ) -> dict[str, torch.Tensor]:
        C, D = next(iter(posterior.values())).shape[:2]
        out: dict[str, list[torch.Tensor]] = {s: [] for s in roles.discrete_sites}
        for c in range(C):
            for d in range(D):
                draw = {k: v[c, d] for k, v in posterior.items()}
                z = sample_discrete(model, data, draw)
                for s in out:
                    out[s].append(z[s])
        return {s: torch.stack(v).reshape((C, D) + tuple(v[0].shape)) for s, v in out.items()}


register_backend("mcmc", MCMC)
