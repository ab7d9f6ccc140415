"""Markov chain Monte Carlo with NUTS, HMC or ChEES-HMC (``method="mcmc"``).

``kernel="chees"`` runs every chain at once on one batched potential (see
:mod:`probgen.inference.chees`, which records its own statistics); the rest of this docstring is
about the NUTS and HMC kernels, which are Pyro's.

Discrete latents are enumerated out of the potential (Pyro's ``initialize_model`` does this for
every enumerable site), chains run one after another in this process (Pyro's multiprocessing
chains are known to hang, so they are never the default), each from its own starting point, and
every draw's sampler statistics are recorded for ArviZ.

The statistics of Pyro's kernels, and how each is obtained, are in
:mod:`probgen.inference._pyro_kernels`.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch
from pyro.infer import MCMC as PyroMCMC
from pyro.infer import config_enumerate
from pyro.infer.autoguide.initialization import init_to_median, init_to_sample, init_to_uniform

from probgen import arviz_bridge
from probgen.backend import BackendBase, Option, register_backend
from probgen.capabilities import ClosedFormEM, MasksObserved, StartingValues
from probgen.fit import Fit
from probgen.inference._mcmc_draws import typed_stats, warmup_groups
from probgen.inference._mcmc_starts import (
    ChainStart,
    GivenValues,
    find_start,
    find_starts,
    nearby,
    run_chains_apart,
)
from probgen.inference._pyro_kernels import CountingPotential, DrawStats, RecordingHMC, RecordingNUTS
from probgen.inference.chees import BatchedPotential, run_chees
from probgen.inference.nuts import run_nuts
from probgen.model import GenerativeModel
from probgen.posterior import sample_discrete
from probgen.relabel import align_posterior
from probgen.state import seed_everything
from probgen.summaries import posterior_means, site_supports

__all__ = ["MCMC"]

_INITS: dict[str, Callable[..., Any]] = {
    "uniform": init_to_uniform,
    "median": init_to_median,
    "sample": init_to_sample,
}
#: Largest rank-normalised split R-hat of a converged fit (Vehtari et al. 2021).
_MAX_RHAT = 1.01
#: Smallest bulk effective sample size per chain of a converged fit (Vehtari et al. 2021: 100 per chain).
_MIN_ESS_PER_CHAIN = 100
#: Offset between the seeds of successive chains.
_CHAIN_SEED_STRIDE = 7919

_State = dict[str, torch.Tensor]


#: Relative tolerance of the check that the batched potential equals Pyro's one-state potential.
_BATCH_RTOL = {torch.float64: 1e-8, torch.float32: 2e-4}


def _run_chees(
    model_fn: Callable[..., Any],
    data: Any,
    roles: Any,
    starts: list[ChainStart],
    o: dict[str, Any],
    seed: int,
    progress: bool,
    sampler: str = "chees",
) -> tuple[dict[str, torch.Tensor], dict[str, np.ndarray], dict[str, torch.Tensor], dict[str, Any]]:
    """All chains of ChEES-HMC (or of NUTS: ``sampler="nuts_batched"``) in lockstep; draws
    ``(chain, draw, ...)`` and sampler statistics."""
    C = o["num_chains"]
    potentials = [s.potential_fn for s in starts]
    pot = BatchedPotential(
        model_fn,
        data,
        starts[0].transforms,
        starts[0].z,
        C,
        roles.max_plate_nesting,
        enumerate_discrete=bool(roles.discrete_sites),
        one_state=potentials[0],
    )
    flat = pot.flatten({k: torch.stack([s.z[k] for s in starts]) for k in pot.names})
    seed_everything(seed)
    moved = nearby(flat, pot.unflatten_rows, potentials[0])
    rtol = _BATCH_RTOL.get(pot.dtype, 2e-4)
    why_not = None
    for points in (flat, moved):
        with torch.no_grad():
            one_by_one = torch.stack([potentials[0](z) for z in pot.unflatten_rows(points)]).to(pot.dtype)
            try:
                together = pot.batched(points)
            except (RuntimeError, ValueError, IndexError) as e:
                why_not = f"the model fails with the chains as an extra leftmost batch dim ({e})"
                break
        if together.shape != one_by_one.shape or not _agree(together, one_by_one, rtol):
            why_not = "the model gives other log densities with the chains as an extra leftmost batch dim"
            break
    if why_not is not None and not pot.use_vmap([flat, moved], rtol):
        pot.per_chain()
    compiled = pot.compile([flat, moved], rtol=max(rtol, 1e-5))

    def run() -> Any:
        seed_everything(seed)
        if sampler == "nuts_batched":
            return run_nuts(
                pot,
                flat,
                num_warmup=o["warmup_steps"],
                num_samples=o["num_samples"],
                target_accept_prob=o["target_accept_prob"],
                max_tree_depth=o["max_tree_depth"],
                dense_mass=o["dense_mass"],
                progress=progress,
                keep_warmup=o["save_warmup"],
                compile=o["compile"],
            )
        return run_chees(
            pot,
            flat,
            num_warmup=o["warmup_steps"],
            num_samples=o["num_samples"],
            target_accept_prob=o["target_accept_prob"],
            max_steps=2 ** o["max_tree_depth"],
            initial_step_size=None,
            generator_seed=seed,
            progress=progress,
            keep_warmup=o["save_warmup"],
        )

    result = run()
    if (compiled or pot.mode != "per_chain") and not _potential_held(pot, result, rtol):
        # the batched or compiled potential froze a branch the model takes on values: start again
        # with Pyro's one-state potential, chain by chain, uncompiled
        pot.per_chain()
        compiled = False
        why_not = why_not or (
            "the batched or compiled potential disagreed with Pyro's own at the draws (the model "
            "branches on values), so the run was repeated one chain at a time, uncompiled"
        )
        result = run()
    S = o["num_samples"]
    values = pot.constrained(result.draws.reshape(C * S, pot.dim))
    draws = {k: v.reshape((C, S) + tuple(v.shape[1:])).detach() for k, v in values.items()}
    stats = dict(result.stats)
    stats["diverging"] = stats["diverging"].astype(bool)
    inits = {k: v.detach() for k, v in pot.constrained(flat).items()}
    info = {
        "step_size": result.step_size,
        "trajectory_length": result.trajectory_length,
        # per site (diagonal), or the whole (chain, dim, dim) matrix over the flattened sites (dense)
        "inverse_mass": result.inverse_mass
        if result.inverse_mass.dim() == 3
        else {k: v[0] for k, v in pot.unflatten(result.inverse_mass[None]).items()},
        "compiled": compiled,
        "vectorised": why_not is None,
        # how the chains were evaluated: "batched" (one trace), "vmap" or "per_chain"
        "potential": pot.mode,
        # what ran the potential at the end: "trace" (TorchScript), "inductor" or None (eager)
        "compiler": pot.compiler,
        "compiler_note": pot.compiler_note,
        "why_not_vectorised": why_not,
        "warmup_divergences": int(result.extra.get("warmup_divergences", 0)),
        # chees: warm-up restarts of stuck chains, per chain, and chains still unhealthy after it
        **{k: result.extra[k] for k in ("restarts", "unhealthy_chains") if k in result.extra},
    }
    info.update(warmup_groups(pot, result.extra))  # save_warmup
    return draws, stats, inits, info


#: States (draws of all chains) at which the sampled potential is checked against Pyro's own.
_CHECKED_STATES = 160


def _potential_held(pot: BatchedPotential, result: Any, rtol: float) -> bool:
    """Whether the potential the chains ran on equals Pyro's one-state potential at draws spread
    over the run (a model's Python branch on values is frozen by compilation and taken once for
    all chains by the batched trace)."""
    C, S = result.draws.shape[:2]
    lp = torch.as_tensor(result.stats["lp"])
    n = min(S, max(2, _CHECKED_STATES // C))
    for s in torch.linspace(0, S - 1, n).round().long().unique().tolist():
        if not pot.agrees_at(result.draws[:, s], -lp[:, s], rtol):
            return False
    return True


def _agree(a: torch.Tensor, b: torch.Tensor, rtol: float) -> bool:
    finite = torch.isfinite(b)
    if not bool((torch.isfinite(a) == finite).all()):
        return False
    if not bool(finite.any()):
        return True
    return bool(((a[finite] - b[finite]).abs() <= rtol * b[finite].abs().clamp(min=1.0)).all())


def _aligned(
    model: GenerativeModel, data: Any, posterior: dict[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """Draws relabelled by the model (label switching), before R-hat compares the chains."""
    return align_posterior(model, posterior, data)


def _convergence_problems(
    posterior: Mapping[str, torch.Tensor], n_divergent: int, *, target_accept_prob: float
) -> list[str]:
    """Why a set of MCMC draws should not be trusted; an empty list means converged.

    The rule (Vehtari, Gelman, Simpson, Carpenter and Buerkner 2021, "Rank-normalization,
    folding, and localization: an improved R-hat"): with more than one chain, every varying
    element of every site has a rank-normalised split R-hat of at most ``_MAX_RHAT`` (1.01); every
    element has a bulk effective sample size of at least ``_MIN_ESS_PER_CHAIN`` (100) per chain;
    and no transition diverged after warmup.  Elements constant over every draw (the fixed
    entries of a Cholesky factor) are skipped.  R-hat and ESS are ArviZ's (``arviz.rhat``,
    ``arviz.ess(method="bulk")``, called through :mod:`probgen.arviz_bridge`).
    """
    problems: list[str] = []
    if n_divergent:
        problems.append(
            f"{n_divergent} divergent transition(s) after warmup; raise target_accept_prob "
            f"(now {target_accept_prob}) or reparameterise the model"
        )
    if not posterior:
        return problems
    arrays = {k: v.detach().cpu().numpy() for k, v in posterior.items()}
    chains, draws = next(iter(arrays.values())).shape[:2]
    min_ess = _MIN_ESS_PER_CHAIN * chains
    if draws < 4:
        problems.append(f"only {draws} draw(s) per chain: too few for R-hat and ESS; raise num_samples")
        return problems
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ArviZ warns on constant elements (NaN R-hat) and short chains
        rhat = arviz_bridge.rhat(arrays) if chains > 1 else None
        ess = arviz_bridge.ess(arrays, method="bulk")
    for name, x in arrays.items():
        flat = x.reshape(chains, draws, -1)
        varying = ~(flat == flat[:1, :1]).all(axis=(0, 1))
        if not varying.any():
            continue
        if rhat is not None:
            r = np.asarray(rhat[name], dtype=float).reshape(-1)[varying]
            worst = float(np.max(np.where(np.isnan(r), np.inf, r)))  # NaN: chains stuck apart
            if not worst <= _MAX_RHAT:
                problems.append(
                    f"site {name!r}: split R-hat {worst:.3f} > {_MAX_RHAT} (chains disagree); "
                    "run longer warmup, or check for several modes"
                )
        e = np.asarray(ess[name], dtype=float).reshape(-1)[varying]
        low = float(np.min(np.where(np.isnan(e), 0.0, e)))
        if not low >= min_ess:
            problems.append(
                f"site {name!r}: bulk ESS {low:.0f} < {min_ess} ({_MIN_ESS_PER_CHAIN} per chain); "
                "raise num_samples"
            )
    return problems


class MCMC(BackendBase):
    """NUTS (default) or HMC.

    Options (Pyro's names, with defaults):

    ``num_samples`` : int, default 1000
        Draws kept per chain.
    ``warmup_steps`` : int, default ``num_samples``
        Adaptation steps per chain, discarded.
    ``num_chains`` : int, default 4
        Chains (ArviZ's and Stan's convention), all at once in this process ("nuts", "chees",
        which needs at least 2), or one after another ("pyro_nuts", "hmc").
    ``kernel`` : {"nuts", "pyro_nuts", "hmc", "chees"}, default "nuts"
        "nuts": probgen's NUTS (:mod:`probgen.inference.nuts`; "nuts_batched" is the same),
        every chain in lockstep on one batched evaluation of the potential as "chees" runs it
        (multinomial sampling, the generalised U-turn criterion, Stan's windowed adaptation of
        the step size and a diagonal mass matrix; ``fit.extras["nuts_batched"]`` holds the adapted
        values).  With ``chain_method="parallel"`` it is Pyro's NUTS, one chain per process
        (``fit.extras["kernel_note"]`` says so).  "pyro_nuts": Pyro's NUTS, chain after chain.
        ``fit.extras["kernel"]`` names the kernel that ran.
        "chees": ChEES-HMC (:mod:`probgen.inference.chees`), every chain in lockstep on one
        batched, compiled evaluation of the potential (chains cost about one, so 16 to 64 chains
        adapt better than the default 2; the per-draw statistics add ``energy`` and
        ``trajectory_length``, and ``fit.extras["chees"]`` holds the adapted step size,
        trajectory length, inverse mass matrix, whether the potential was compiled and whether
        it was vectorised).  A model that broadcasts over an extra leftmost batch dim (as
        ``pyro.ops.indexing.Vindex`` indexing does) is evaluated for every chain in one call;
        this is checked against Pyro's one-state potential at every chain's start and at a
        moved point.  Any other model (``x @ coef`` with covariates given as data) is evaluated
        by ``torch.func.vmap`` of a one-state trace over the chains, checked the same way, or,
        where vmap cannot follow it either, one chain after another inside the compiled graph
        (correct, but its cost grows with the number of chains): ``fit.extras["chees"]
        ["vectorised"]`` is then False, ``["why_not_vectorised"]`` says why and
        ``["potential"]`` names the evaluation used (``"batched"``, ``"vmap"``, ``"per_chain"``).
    ``target_accept_prob`` : float, default 0.8
        Step-size adaptation target.
    ``max_tree_depth`` : int, default 10
        NUTS; "chees" caps its leapfrog steps per draw at ``2**max_tree_depth``.
    ``dense_mass`` : bool, default False
        "nuts", "pyro_nuts", "hmc": adapt a dense inverse mass matrix (the covariance of each
        chain's draws in Stan's windows; Pyro's ``full_mass``) instead of a diagonal one, for
        strongly correlated posteriors (``O(D**2)`` work per leapfrog step).  "chees" keeps a
        diagonal one and refuses ``dense_mass=True``.
    ``compile`` : bool or "auto", default "auto"
        "nuts": compile the potential's traced graph with inductor (0.8 to 0.93 of each leapfrog
        step's potential saved; 2 to 6 s to compile, 0.5 s when inductor's disk cache holds the
        graph from an earlier fit): True always, False never, "auto" when the calls expected
        (looked at after 20 and 100 iterations) pay for the estimated compile time.
        Checked against the uncompiled potential before use; ``fit.extras["nuts_batched"]
        ["compiler"]`` names what ran (``"trace"``, ``"inductor"``, None) and
        ``["compiler_note"]`` gives the decision's figures.  With "auto" the decision is timed,
        so the same seed can give draws that differ in float rounding between machines.
    ``step_size`` : float, default 1.0
        Initial step size (adapted during warmup).
    ``num_steps`` : int, default None
        HMC only: leapfrog steps per draw at the initial ``step_size``; the trajectory length
        ``step_size * num_steps`` is kept as the step size adapts (None: a length of 2 pi).
    ``init`` : str or dict, default "auto"
        Starting points.  "auto": the model's own ``init_params`` hook when it offers one (each
        chain calls it with its own random generator), else "uniform".  "uniform", "median",
        "sample": Pyro's init strategies, drawn afresh for each chain.  A dict of starting values
        by site name (sites left out start uniformly).  Every chain gets its own starting point:
        with "auto" hooks and dicts, chain 0 starts at the values themselves and each later chain
        at the values moved uniformly by up to 1.0 per coordinate (as PyMC's "jitter") in the
        unconstrained space; a value with one more leading dim than its site gives each chain its
        own (not jittered).  Every start is checked (finite potential and gradient) and redrawn
        when not (:mod:`probgen.inference._mcmc_starts`): given values that fail are replaced by
        uniform draws with a ``StartWarning``.  The starting values are returned in
        ``fit.extras["init"]`` (``(chain, ...)`` per site), the rejected candidates per chain in
        ``fit.extras["init_redraws"]``.
    ``save_warmup`` : bool, default False
        Keep the warm-up draws ("nuts" and "chees"): ``fit.extras["warmup_posterior"]`` and
        ``["warmup_sample_stats"]``, ``(chain, warmup_steps, ...)``, exported by
        ``fit.to_arviz(warmup=True)`` as ArviZ's ``warmup_posterior`` and ``warmup_sample_stats``.
    ``recover_discrete`` : bool, default False
        Draw the discrete latents for every posterior draw: ``fit.extras["discrete"]`` is a dict
        of discrete site -> integer draws of shape ``(chain, draw, *plate shape)`` (``(chain,
        draw, n_items)`` for a mixture's ``z``), one joint draw from ``p(z | data, theta)`` at
        each posterior draw ``theta`` of ``fit.posterior``, labelled as the relabelled draws are.
        Averaged over ``(chain, draw)``, ``z == k`` estimates ``fit.predict_proba(data)[:, k]``.
        Absent when the model has no discrete latents.
    ``chain_method`` : {"sequential", "parallel"}, default "sequential"
        "parallel" opts in to Pyro's multiprocessing chains (then only ``diverging`` is recorded
        per draw), for models that cannot batch: with the default kernel it runs Pyro's NUTS
        ("pyro_nuts"); "chees" always runs its chains vectorised.
    ``num_threads`` : int or None, default None
        torch intra-op threads while sampling; None keeps the caller's setting.  When given, the
        caller's setting is restored afterwards.  NUTS evaluates the gradient thousands of times
        on small tensors, where extra threads can only add synchronisation: on a loaded two-core
        machine one gradient took 230 ms with two threads against 9 ms with one, so
        ``num_threads=1`` is worth trying for small models.

    Sampler statistics per draw (``fit.sample_stats``, ``(chain, draw)``), named as
    ``arviz.from_numpyro`` names them: ``diverging``, ``step_size``, ``n_steps`` (leapfrog
    steps), ``tree_depth`` (``floor(log2(n_steps)) + 1``, the depth of NUTS's tree),
    ``acceptance_rate``, ``lp`` (log joint density in the unconstrained space) and ``energy``
    (the Hamiltonian at the draw, for ``arviz.bfmi`` and ``arviz.plot_energy``); ``fit.history``
    is ``lp`` flattened.

    ``fit.converged`` is True when ``fit.extras["convergence"]`` (one sentence per problem) is
    empty: rank-normalised split R-hat at most 1.01 on every varying element (more than one
    chain), bulk ESS at least 100 per chain on every element, and no divergence after warmup.

    Models with ``pyro.param`` sites are refused: MCMC samples random variables only.
    """

    name = "mcmc"
    label = "MCMC"
    options = (
        Option("num_samples", "int", 1000, "draws per chain after warm-up"),
        Option(
            "warmup_steps",
            "int0",
            None,
            "warm-up steps per chain (None: num_samples)",
            none=True,
            aliases=("num_warmup",),
        ),
        Option("num_chains", "int", 4, "chains, run vectorised or one after another"),
        Option(
            "kernel",
            "str",
            "nuts",
            '"nuts" (probgen\'s, chains batched), "pyro_nuts", "hmc", "chees"',
            choices=("nuts", "pyro_nuts", "hmc", "chees", "nuts_batched"),
        ),
        Option("target_accept_prob", "any", 0.8, "step-size adaptation target"),
        Option("max_tree_depth", "int", 10, "NUTS tree depth at most"),
        Option("dense_mass", "any", False, "adapt a dense mass matrix (NUTS, HMC)"),
        Option("compile", "any", "auto", 'NUTS: compile the potential with inductor (True, False, "auto")'),
        Option("step_size", "any", 1.0, "initial step size"),
        Option("num_steps", "any", None, "HMC: leapfrog steps per trajectory"),
        Option("init", "any", "auto", '"auto", "uniform", "median", "sample" or a dict of values'),
        Option("recover_discrete", "any", False, "draw the enumerated discrete latents per draw"),
        Option(
            "chain_method",
            "str",
            "sequential",
            '"sequential" or "parallel" (processes)',
            choices=("sequential", "parallel"),
        ),
        Option(
            "num_threads", "int", None, "torch threads during sampling (None: torch's setting)", none=True
        ),
        Option("save_warmup", "bool", False, "keep the warm-up draws (fit.to_arviz(warmup=True))"),
    )

    def missing_refusal(self, model: GenerativeModel) -> str | None:
        """Missing cells are served by a model that masks its observed sites (a user's model)."""
        if isinstance(model, MasksObserved):
            return None
        return f"{model.name} does not mask the missing cells of its observed sites (MasksObserved)"

    def refusal(self, model: GenerativeModel, data: Any) -> str | None:
        roles = model.roles(data)
        if roles.param_sites:
            names = ", ".join(repr(s) for s in roles.param_sites)
            return (
                f"it declares pyro.param site(s) {names}, which MCMC cannot sample; give them priors "
                "(pyro.sample) or use 'svi' or 'em'"
            )
        if not roles.continuous_sites:
            return "it has no continuous latent sites to sample (use 'enum' for all-discrete models)"
        return None

    def fit(self, model: GenerativeModel, data: Any, *, seed: int, progress: bool, **options: Any) -> Fit:
        defaults: dict[str, Any] = self.defaults()
        options = self.check_options(options)
        o = {**defaults, **options}
        if o["warmup_steps"] is None:
            o["warmup_steps"] = o["num_samples"]
        extras: dict[str, Any] = {}
        if o["kernel"] == "nuts":  # probgen's batched NUTS; Pyro's where chains run in processes
            if o["chain_method"] == "sequential":
                o["kernel"] = "nuts_batched"
            else:
                o["kernel"] = "pyro_nuts"
                extras["kernel_note"] = (
                    f"chain_method={o['chain_method']!r} runs Pyro's NUTS, one chain per process; "
                    "probgen's NUTS runs every chain in lockstep in this process"
                )
        extras["kernel"] = "nuts" if o["kernel"] == "nuts_batched" else o["kernel"]
        nt = o["num_threads"]
        if o["kernel"] in ("chees", "nuts_batched") and o["chain_method"] != "sequential":
            raise ValueError(
                f"kernel={o['kernel']!r} runs its chains vectorised in this process; chain_method must "
                "be left "
                f"'sequential'; got {o['chain_method']!r}."
            )
        if o["kernel"] == "chees" and o["num_chains"] < 2:
            raise ValueError(
                "kernel='chees' adapts its trajectory length from the spread across chains; num_chains "
                f"must be at least 2 (16 to 64 adapt best); got {o['num_chains']}."
            )
        if o["compile"] not in (True, False, "auto"):
            raise ValueError(f"compile must be True, False or 'auto'; got {o['compile']!r}.")
        if o["dense_mass"] not in (True, False):
            raise ValueError(f"dense_mass must be True or False; got {o['dense_mass']!r}.")
        if o["kernel"] == "chees" and o["dense_mass"]:
            raise ValueError(
                "kernel='chees' adapts a diagonal mass matrix only; leave dense_mass=False or use "
                "kernel='nuts' for a dense one."
            )
        if o["save_warmup"] and o["kernel"] not in ("chees", "nuts_batched"):
            raise ValueError(
                "save_warmup=True keeps the warm-up draws of kernel='nuts' (run in this process) and "
                f"kernel='chees'; got kernel={o['kernel']!r} with chain_method={o['chain_method']!r}."
            )
        if not 0 < o["target_accept_prob"] < 1:
            raise ValueError(f"target_accept_prob must be in (0, 1); got {o['target_accept_prob']!r}.")
        roles = model.roles(data)
        # the supports that fit.params must lie in, read by tracing once per data shape: before
        # sampling, so that nothing traces the model after its draws (fit() reuses them)
        supports = site_supports(model, data)
        strategies = self._init_strategies(model, data, roles, o["init"], seed, o["num_chains"])
        model_fn = config_enumerate(model.model, default="parallel") if roles.discrete_sites else model.model

        threads = torch.get_num_threads()
        if nt is not None:
            torch.set_num_threads(int(nt))
        try:
            if o["kernel"] in ("chees", "nuts_batched"):
                seeds = [seed + _CHAIN_SEED_STRIDE * c for c in range(o["num_chains"])]
                starts = find_starts(model_fn, data, roles.max_plate_nesting, strategies, seeds)
                extras["init_redraws"] = [s.redraws for s in starts]
                draws, sample_stats, inits, extras[o["kernel"]] = _run_chees(
                    model_fn, data, roles, starts, o, seed, progress, sampler=o["kernel"]
                )
            else:
                chains, stats, inits = self._run_chains(
                    model_fn, data, roles, strategies, o, seed, progress, extras
                )
                draws = {k: torch.stack([ch[k] for ch in chains]) for k in chains[0]}
                sample_stats = {
                    k: np.asarray([[row[k] for row in rows] for rows in stats]) for k in stats[0][0]
                }
        finally:
            if nt is not None:
                torch.set_num_threads(threads)

        posterior = _aligned(model, data, draws)
        sample_stats = typed_stats(sample_stats)
        params = posterior_means(model, data, posterior, roles.global_sites, supports=supports)
        problems = _convergence_problems(
            posterior, int(sample_stats["diverging"].sum()), target_accept_prob=o["target_accept_prob"]
        )
        extras.update({"convergence": problems, "init": inits})
        if o["save_warmup"]:
            info = extras[o["kernel"]]
            extras["warmup_posterior"] = info.pop("warmup_posterior")
            extras["warmup_sample_stats"] = info.pop("warmup_sample_stats")
        if o["recover_discrete"] and roles.discrete_sites:
            extras["discrete"] = self._recover(model, data, posterior, roles)
        return Fit(
            model=model,
            data=data,
            method=self.name,
            params=params,
            posterior=posterior,
            history=sample_stats["lp"].reshape(-1) if "lp" in sample_stats else np.zeros(0),
            converged=not problems,
            sample_stats=sample_stats,
            extras=extras,
            seed=seed,
        )

    @staticmethod
    def _init_strategies(
        model: GenerativeModel, data: Any, roles: Any, init: Any, seed: int, num_chains: int
    ) -> list[tuple[Callable[..., Any], bool, bool]]:
        """Per chain: a Pyro init strategy, whether to jitter the point it gives and whether it
        repeats given values."""
        if isinstance(init, str) and init == "auto":
            if isinstance(model, StartingValues):
                # A model that offers starting values (the EM hook) starts there: NUTS from a
                # random start on a multimodal mixture posterior spends its warmup on very deep
                # trees.  Each chain asks with its own generator, then later chains are jittered.
                strategy = (
                    model.em_defaults().get("init", "random") if isinstance(model, ClosedFormEM) else "random"
                )
                out = []
                for c in range(num_chains):
                    gen = torch.Generator().manual_seed(seed + c)
                    start = model.init_params(data, init=strategy, generator=gen)
                    values = {k: torch.as_tensor(v) for k, v in start.items() if k in roles.continuous_sites}
                    out.append((GivenValues(values, c), c > 0, True))
                return out
            init = "uniform"
        if isinstance(init, Mapping):
            unknown_sites = set(init) - set(roles.continuous_sites)
            if unknown_sites:
                raise ValueError(
                    f"init names unknown site(s) {sorted(unknown_sites)}; latent sites are {list(roles.continuous_sites)}."
                )
            values = {k: torch.as_tensor(v) for k, v in init.items()}
            return [(GivenValues(values, c), c > 0, True) for c in range(num_chains)]
        if isinstance(init, str) and init in _INITS:
            return [(_INITS[init], False, False) for _ in range(num_chains)]  # drawn afresh per chain
        raise ValueError(
            f"init={init!r} is not known; expected a dict of values or one of: auto, {', '.join(_INITS)}."
        )

    @staticmethod
    def _run_chains(
        model_fn: Callable[..., Any],
        data: Any,
        roles: Any,
        strategies: list[tuple[Callable[..., Any], bool, bool]],
        o: dict[str, Any],
        seed: int,
        progress: bool,
        extras: dict[str, Any],
    ) -> tuple[list[_State], list[list[dict[str, float]]], dict[str, torch.Tensor]]:
        nuts = o["kernel"] in ("nuts", "pyro_nuts")

        def make_kernel(potential_fn: Callable[[_State], torch.Tensor]) -> Any:
            common = {
                "step_size": o["step_size"],
                "target_accept_prob": o["target_accept_prob"],
                "full_mass": o["dense_mass"],
            }
            if nuts:
                return RecordingNUTS(potential_fn=potential_fn, max_tree_depth=o["max_tree_depth"], **common)
            return RecordingHMC(potential_fn=potential_fn, num_steps=o["num_steps"], **common)

        def constrained(starts: list[ChainStart]) -> dict[str, torch.Tensor]:
            t = starts[0].transforms
            return {k: torch.stack([t[k].inv(s.z[k]) for s in starts]) for k in starts[0].z}

        seeds = [seed + _CHAIN_SEED_STRIDE * c for c in range(o["num_chains"])]
        if o["chain_method"] == "parallel" and o["num_chains"] > 1:
            starts = find_starts(model_fn, data, roles.max_plate_nesting, strategies, seeds)
            extras["init_redraws"] = [s.redraws for s in starts]
            runner = PyroMCMC(
                make_kernel(starts[0].potential_fn),  # the same potential for every chain
                o["num_samples"],
                o["warmup_steps"],
                initial_params={k: torch.stack([s.z[k] for s in starts]) for k in starts[0].z},
                num_chains=o["num_chains"],
                transforms=starts[0].transforms,
                disable_progbar=not progress,
            )
            runner.run()
            grouped = runner.get_samples(group_by_chain=True)
            chains = [{k: v[c] for k, v in grouped.items()} for c in range(o["num_chains"])]
            div = runner.diagnostics()["divergences"]
            stats = [
                [{"diverging": float(i in div[f"chain {c}"])} for i in range(o["num_samples"])]
                for c in range(o["num_chains"])
            ]
            return chains, stats, constrained(starts)

        def run_one(c: int) -> tuple[_State, list[dict[str, float]], ChainStart]:
            seed_everything(seeds[c])
            start = find_start(model_fn, data, roles.max_plate_nesting, strategies[c], c)
            potential = CountingPotential(start.potential_fn)
            recorder = DrawStats(potential, nuts)
            runner = PyroMCMC(
                make_kernel(potential),
                o["num_samples"],
                o["warmup_steps"],
                initial_params=start.z,
                transforms=start.transforms,
                disable_progbar=not progress,
                hook_fn=recorder,
            )
            runner.run()
            return runner.get_samples(), recorder.rows, start

        ran, failed = run_chains_apart(run_one, o["num_chains"])
        if failed:
            extras["failed_chains"] = failed
        extras["init_redraws"] = [r[2].redraws for r in ran]
        return [r[0] for r in ran], [r[1] for r in ran], constrained([r[2] for r in ran])

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
