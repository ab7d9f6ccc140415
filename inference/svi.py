"""Stochastic variational inference (``method="svi"``).

Trace_ELBO, or TraceEnum_ELBO when the model has discrete latents (they are enumerated, not
sampled); ``elbo=`` picks TraceMeanField_ELBO or the JIT-compiled ELBOs instead.  A model that
offers its own objective (the ``svi_objective`` hook: the same ELBO in plain PyTorch, e.g. with
an analytic KL, as the VAE families do) is trained by one plain PyTorch loop with no Pyro traces.  With no guide of the model's own, an ``AutoNormal`` guide is built over the continuous
latent sites (an empty guide when there are none: ``pyro.param`` sites are then fitted by maximum
likelihood).  Stops early when the windowed loss has settled, flat within its noise, not above
its best and not bouncing; posterior draws come from the guide.
"""

from __future__ import annotations

import contextlib
import inspect
import math
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pyro
import pyro.optim
import pyro.poutine as poutine
import torch
from pyro.infer import SVI as PyroSVI
from pyro.infer import (
    JitTrace_ELBO,
    JitTraceEnum_ELBO,
    Predictive,
    Trace_ELBO,
    TraceEnum_ELBO,
    TraceMeanField_ELBO,
    config_enumerate,
)
from pyro.infer.autoguide import AutoDelta, AutoDiagonalNormal, AutoGuide, AutoMultivariateNormal, AutoNormal
from pyro.optim.clipped_adam import ClippedAdam as ClippedAdamOptimizer
from tqdm.auto import tqdm

from probgen.backend import BackendBase, Option, register_backend
from probgen.capabilities import OwnSVIObjective, SVIDefaults
from probgen.fit import Fit
from probgen.model import GenerativeModel
from probgen.streaming import StreamingData, scaled, world
from probgen.summaries import posterior_means

__all__ = ["SVI"]

_AUTOGUIDES = {
    "normal": AutoNormal,
    "diagonal": AutoDiagonalNormal,
    "mvn": AutoMultivariateNormal,
    "delta": AutoDelta,
}
#: name -> (pyro.optim wrapper, torch optimiser class, the optimiser's own per-step lr decay argument)
_OPTIMS: dict[str, tuple[Any, Any, str | None]] = {
    "adam": (pyro.optim.Adam, torch.optim.Adam, None),  # type: ignore[attr-defined]
    "clipped_adam": (pyro.optim.ClippedAdam, ClippedAdamOptimizer, "lrd"),
}
#: ``elbo=`` choices: Pyro's ELBOs by name ("analytic": the model's own objective, its fast path).
_ELBOS = ("analytic", "jit", "meanfield", "trace")
#: Windows in a row without improvement before the loss may be called settled.
_PATIENCE = 5
#: Loss evaluations at the window-averaged parameters (their mean and standard error).
_AVERAGE_EVALS = 30


def _accepts(fn: Callable[..., Any], name: str) -> bool:
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    return name in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


def _empty_guide(*args: Any, **kwargs: Any) -> None:
    """The guide of a model whose unknowns are all pyro.param sites or enumerated latents."""
    return None


class _ObjectiveSVI:
    """Pyro's ``SVI`` interface (``step``, ``evaluate_loss``) over a model's own objective.

    One plain PyTorch loop: no Pyro traces.  Minibatches are fused: one permutation of the items
    per epoch, sliced in order, so every item is seen once an epoch (Pyro's plate draws a fresh
    subsample each step; both are unbiased for the same ELBO).
    """

    def __init__(
        self,
        objective: Any,
        optim: Any,
        n: int,
        subsample_size: int | None,
        num_particles: int,
        lr_decay: float,
        num_steps: int,
        scale: float = 1.0,
    ) -> None:
        self.objective = objective
        self.params = list(objective.parameters())
        self.scale = float(scale)  # the shard's share of the whole data under torch.distributed
        world.broadcast(self.params)
        self.n, self.size, self.num_particles = n, subsample_size, num_particles
        self.scheduler: Any = None
        if isinstance(optim, pyro.optim.PyroOptim | pyro.optim.PyroLRScheduler):
            self.optim, self.torch_optim = optim, None  # steps each param-store tensor itself
        else:
            _, torch_optim, decay_arg = _OPTIMS[optim[0]]
            factor = lr_decay ** (1.0 / num_steps)
            args: dict[str, Any] = {"lr": optim[1]}
            if decay_arg is not None and lr_decay != 1.0:
                args[decay_arg] = factor
            self.torch_optim = torch_optim(self.params, **args)
            if decay_arg is None and lr_decay != 1.0:
                self.scheduler = torch.optim.lr_scheduler.ExponentialLR(self.torch_optim, gamma=factor)
            self.optim = self.torch_optim
        self.perm = torch.arange(n)
        self.pos = n

    def _index(self) -> torch.Tensor | None:
        if self.size is None or self.size == self.n:
            return None
        if self.pos + self.size > self.n:
            self.perm, self.pos = torch.randperm(self.n), 0
        index = self.perm[self.pos : self.pos + self.size]
        self.pos += self.size
        return index

    def step(self, *args: Any, **kwargs: Any) -> float:
        loss = self.objective.loss(self._index(), self.num_particles)
        if self.scale != 1.0:
            loss = loss * self.scale
        if self.torch_optim is not None:
            self.torch_optim.zero_grad(set_to_none=True)
            loss.backward()
            world.average_gradients(self.params)
            self.torch_optim.step()
            if self.scheduler is not None:
                self.scheduler.step()
        else:
            for p in self.params:
                p.grad = None
            loss.backward()
            world.average_gradients(self.params)
            self.optim([p for p in self.params if p.grad is not None])
            if isinstance(self.optim, pyro.optim.PyroLRScheduler):
                self.optim.step()
        return float(loss.detach())

    def evaluate_loss(self, *args: Any, **kwargs: Any) -> float:
        with torch.no_grad():
            return float(self.objective.loss(self._index(), self.num_particles)) * self.scale


class _ReducedSVI:
    """Pyro's ``SVI.step`` with the gradients averaged over the ranks of a process group.

    Written out because Pyro's ``SVI.step`` computes the gradients and applies them in one call,
    with no place to all-reduce in between.  On the first step every rank takes rank 0's
    freshly initialised parameters.
    """

    def __init__(self, model: Callable[..., Any], guide: Callable[..., Any], optim: Any, loss: Any) -> None:
        self.model, self.guide, self.optim, self.loss = model, guide, optim, loss
        self.synced = False

    def step(self, *args: Any, **kwargs: Any) -> float:
        if not self.synced:
            with torch.no_grad():  # creates every parameter, then all ranks take rank 0's values
                self.loss.loss(self.model, self.guide, *args, **kwargs)
            world.broadcast([p for _, p in sorted(pyro.get_param_store().named_parameters())])
            self.synced = True
        with poutine.trace(param_only=True) as capture:
            loss = self.loss.loss_and_grads(self.model, self.guide, *args, **kwargs)
        names = sorted(capture.trace.nodes)
        params = [capture.trace.nodes[n]["value"].unconstrained() for n in names]  # type: ignore[union-attr]
        world.average_gradients(params)
        self.optim(params)
        pyro.infer.util.zero_grads(set(params))
        return float(loss)

    def evaluate_loss(self, *args: Any, **kwargs: Any) -> float:
        with torch.no_grad():
            return float(self.loss.loss(self.model, self.guide, *args, **kwargs))


class _ParamAverage:
    """Running average of every parameter in Pyro's param store (unconstrained), over one window."""

    def __init__(self) -> None:
        self.sums: dict[str, torch.Tensor] = {}
        self.counts: dict[str, int] = {}

    def add(self) -> None:
        with torch.no_grad():
            for name, p in pyro.get_param_store().named_parameters():
                if name in self.sums:
                    self.sums[name] += p.detach()
                    self.counts[name] += 1
                else:
                    self.sums[name] = p.detach().clone()
                    self.counts[name] = 1

    @contextlib.contextmanager
    def applied(self) -> Iterator[None]:
        """Temporarily set every parameter to its average."""
        saved: dict[str, torch.Tensor] = {}
        params = dict(pyro.get_param_store().named_parameters())
        try:
            with torch.no_grad():
                for name, total in self.sums.items():
                    if name in params:
                        saved[name] = params[name].detach().clone()
                        params[name].copy_(total / self.counts[name])
            yield
        finally:
            with torch.no_grad():
                for name, value in saved.items():
                    params[name].copy_(value)


def _unsettled(
    means: list[float],
    sds: list[float],
    best: int,
    window: int,
    tol: float,
    at_average: tuple[float, float],
) -> list[str]:
    """Why the windowed loss has not settled (empty when it has); see `SVI` for the rule.

    ``at_average`` is the loss at the last window's averaged parameters: its mean and standard
    error over repeated evaluations.
    """
    se = [s / math.sqrt(window) for s in sds]
    last, prev = means[-1], means[-2]
    problems = []
    if abs(last - prev) > 2.0 * math.hypot(se[-1], se[-2]) + tol * abs(last):
        problems.append(
            f"the window-averaged loss still moves beyond its noise ({prev:.6g} then {last:.6g}); "
            "raise num_steps"
        )
    if last > means[best] + 2.0 * math.hypot(se[-1], se[best]) + tol * abs(means[best]):
        problems.append(
            f"the window-averaged loss rose from its best {means[best]:.6g} to {last:.6g}; lower lr"
        )
    avg_mean, avg_se = at_average
    if last - avg_mean > 2.0 * math.hypot(se[-1], avg_se) + tol * abs(last):
        problems.append(
            f"the loss averaged over the last window's steps ({last:.6g}) is above the loss at the "
            f"window's average parameters ({avg_mean:.6g}) by more than noise: the optimiser is "
            "bouncing around the optimum; lower lr"
        )
    return problems


class SVI(BackendBase):
    """Stochastic variational inference.

    Options (Pyro's names, with defaults):

    ``num_steps`` : int, default 3000
        Largest number of optimisation steps.
    ``lr`` : float, default 0.01
        Learning rate.
    ``optim`` : {"adam", "clipped_adam"} or pyro.optim instance, default "adam"
        Optimiser; an instance is used as given (with its own learning rate and schedule).
    ``lr_decay`` : float in (0, 1], default 1.0
        The learning rate is multiplied by this over the whole run, keeping the chosen optimiser:
        ClippedAdam through its own per-step factor ``lrd = lr_decay ** (1 / num_steps)``, Adam
        through ``pyro.optim.ExponentialLR`` with that factor as ``gamma``.  Not for instances.
    ``num_particles`` : int, default 1
        Monte Carlo samples per ELBO estimate.
    ``subsample_size`` : int or None, default None
        Minibatch size (None: full batch); needs a model that takes a ``subsample_size`` keyword.
    ``guide`` : {"normal", "diagonal", "mvn", "delta"} or callable or None, default None
        The variational family over the continuous latents: the model's own guide when it has
        one, else "normal" (``AutoNormal``).  A model with no continuous latents (its parameters
        all ``pyro.param`` sites, its latents all discrete and enumerated) gets an empty guide:
        SVI then maximises the likelihood.
    ``tol`` : float or None, default 1e-4
        Early stopping (0 or None runs every step and reports ``converged=False``).  The loss is
        averaged over windows of ``window`` steps; the fit has converged when (1) ``patience`` (5)
        windows in a row fail to lower the best window mean by the fraction ``tol``, (2) the last
        two window means differ by at most two standard errors plus ``tol`` relative, (3) the last
        window mean is not above the best by more than two standard errors plus ``tol`` relative
        (a rising loss), and (4) the loss varies across the last window's steps by at most twice
        its Monte Carlo noise at fixed parameters (30 evaluations without a step) plus ``tol``
        relative (an optimiser bouncing around, its learning rate too large).
    ``window`` : int, default 100
        Steps per window of the early-stopping rule.
    ``num_samples`` : int, default 1000
        Posterior draws from the guide (``fit.posterior``, one chain).
    ``elbo`` : {"analytic", "trace", "meanfield", "jit"} or None, default None
        The objective's estimator.  None: the model's own objective when it offers one (the
        ``svi_objective`` hook: a plain PyTorch loop with, e.g., an analytic KL; the fast path
        of neural families), else "trace".  "trace": ``Trace_ELBO`` (``TraceEnum_ELBO`` when the
        model has discrete latents); "meanfield": ``TraceMeanField_ELBO`` (analytic KL where
        Pyro knows it); "jit": ``JitTrace_ELBO`` (``JitTraceEnum_ELBO``).  All estimate the same
        ELBO.  With a model's own objective, ``fit.params`` holds its weights and the local
        latents are amortised by its guide (no posterior draws of them).

    ``fit.params`` holds the posterior mean of each global latent site and the final
    (constrained) value of each ``pyro.param`` site the model declares; the guide's own
    parameters stay in ``fit.extras["guide"]``.  ``fit.extras["convergence"]`` lists why the fit
    did not converge (empty when it did), ``fit.extras["optim"]`` is the optimiser used.
    """

    name = "svi"
    label = "SVI"
    #: fits from a stream of minibatches (``probgen.fit(model, loader, num_items=N)``)
    accepts_streams = True

    options = (
        Option("num_steps", "int", 3000, "optimisation steps at most"),
        Option("lr", "float", 0.01, "learning rate"),
        Option("optim", "any", "adam", '"adam", "clipped_adam" or a pyro.optim instance'),
        Option("lr_decay", "(0, 1]", 1.0, "learning-rate factor over the whole run"),
        Option("num_particles", "int", 1, "ELBO particles per step"),
        Option(
            "subsample_size",
            "any",
            None,
            "items per minibatch of the data plate",
            none=True,
            aliases=("batch_size",),
        ),
        Option("guide", "any", None, '"normal", "diagonal", "mvn", "delta" or a callable', none=True),
        Option("tol", "float0", 1e-4, "convergence: relative change of the windowed loss", none=True),
        Option("window", "int", 100, "steps per window of the convergence rule"),
        Option("num_samples", "int", 1000, "posterior draws from the fitted guide"),
        Option(
            "elbo", "str", None, "None: the model's own objective, else Pyro's", none=True, choices=_ELBOS
        ),
    )

    def refusal(self, model: GenerativeModel, data: Any) -> str | None:
        roles = model.roles(data)
        if not roles.continuous_sites and not model.has_guide and not roles.param_sites:
            return (
                "it has no continuous latent sites for a variational guide and no pyro.param sites "
                "to learn (use 'enum' for all-discrete models)"
            )
        return None

    def fit(self, model: GenerativeModel, data: Any, *, seed: int, progress: bool, **options: Any) -> Fit:
        defaults: dict[str, Any] = self.defaults()
        options = self.check_options(options)
        if not isinstance(data, StreamingData) and isinstance(model, SVIDefaults):
            defaults.update(model.svi_defaults(data))
        o = {**defaults, **options}
        own = isinstance(model, OwnSVIObjective)
        if o["elbo"] == "analytic" and not own:
            raise ValueError(
                f"elbo='analytic' needs a model with its own objective (the OwnSVIObjective capability); "
                f"{model.name} has none. Use one of: jit, meanfield, trace."
            )
        stream = data if isinstance(data, StreamingData) else None
        example = stream.first if stream is not None else data
        roles = model.roles(example)
        model_kwargs: dict[str, Any] = {}
        if stream is not None:
            own = False  # a model's own objective indexes in-memory data; minibatches go through Pyro
            if o["elbo"] == "analytic":
                raise ValueError(
                    "elbo='analytic' needs the data in memory; streamed minibatches use 'trace'."
                )
            if o["subsample_size"] is not None:
                raise ValueError(
                    "subsample_size does not apply to streamed data: the source's batches are the minibatches."
                )
            if roles.local_sites and not (model.has_guide or callable(o["guide"])):
                raise ValueError(
                    f"streamed data need a guide that amortises the per-item latents {list(roles.local_sites)} "
                    "(an encoder); an autoguide would need parameters for every item. Give the model a guide."
                )
        if o["subsample_size"] is not None:
            s = o["subsample_size"]
            n = model.num_items(data)
            if isinstance(s, bool) or not isinstance(s, int) or not 1 <= s <= n:
                raise ValueError(
                    f"subsample_size must be an int in [1, {n}] (the number of items); got {s!r}."
                )
            if not _accepts(getattr(model, "fn", model.model), "subsample_size"):
                raise ValueError(
                    f"subsample_size needs a model that takes a 'subsample_size' keyword and passes it to "
                    f"pyro.plate({roles.data_plate!r}, ..., subsample_size=subsample_size); {model.name} does not."
                )
            model_kwargs["subsample_size"] = s

        objective = (
            model.svi_objective(data) if isinstance(model, OwnSVIObjective) and own else None
        )  # fresh weights, in the param store
        model_fn = config_enumerate(model.model, default="parallel") if roles.discrete_sites else model.model
        guide = self._guide(model, roles, o["guide"], model_fn)
        # The data plate's scale: N / batch for streamed minibatches, and under torch.distributed the
        # whole data's N (the sum of the shards) over this shard's items.
        n_local = stream.num_items if stream is not None else model.num_items(data)
        n_total = int(round(world.sum(n_local)))
        distributed = world.size() > 1
        factor = {"value": n_total / n_local}
        train_model, train_guide = model_fn, guide
        if stream is not None or distributed:
            train_model = scaled(model_fn, roles.data_plate, lambda: factor["value"])
            train_guide = scaled(guide, roles.data_plate, lambda: factor["value"])
        batches = stream.batches() if stream is not None else None

        def next_data() -> Any:
            if batches is None:
                return data
            batch = next(batches)
            factor["value"] = n_total / model.num_items(batch)
            return batch

        svi: Any
        if objective is not None and o["elbo"] in (None, "analytic"):
            named = isinstance(o["optim"], str)
            optim = (
                (o["optim"], o["lr"])
                if named and o["optim"] in _OPTIMS
                else self._optim(o["optim"], o["lr"], o["lr_decay"], o["num_steps"])
            )
            svi = _ObjectiveSVI(
                objective,
                optim,
                model.num_items(data),
                o["subsample_size"],
                o["num_particles"],
                o["lr_decay"],
                o["num_steps"],
                scale=n_total / n_local,
            )
            optim = svi.optim
        else:
            elbo = self._elbo(
                o["elbo"], bool(roles.discrete_sites), roles.max_plate_nesting, o["num_particles"]
            )
            optim = self._optim(o["optim"], o["lr"], o["lr_decay"], o["num_steps"])
            if distributed:
                svi = _ReducedSVI(train_model, train_guide, optim, elbo)
            else:
                svi = PyroSVI(train_model, train_guide, optim, loss=elbo)

        losses: list[float] = []
        converged = False
        problems: list[str] = []
        window, tol = o["window"], o["tol"]
        means: list[float] = []
        sds: list[float] = []
        best, stale = -1, 0
        average: _ParamAverage | None = None
        with tqdm(total=o["num_steps"], disable=not progress, desc="SVI", leave=False) as bar:
            for step in range(o["num_steps"]):
                loss = world.mean(float(svi.step(next_data(), **model_kwargs)))
                if not math.isfinite(loss):
                    raise FloatingPointError(
                        f"SVI loss became {loss} at step {step}; lower lr (now {o['lr']}) or check the model."
                    )
                losses.append(loss)
                if isinstance(optim, pyro.optim.PyroLRScheduler) and isinstance(svi, PyroSVI):
                    optim.step()
                if average is not None:
                    average.add()
                bar.update(1)
                if (step + 1) % window == 0 or step + 1 == o["num_steps"]:
                    bar.set_postfix(elbo=f"{-float(np.mean(losses[-window:])):.5g}")  # running ELBO
                if tol and (step + 1) % window == 0:
                    w = np.asarray(losses[-window:])
                    means.append(float(w.mean()))
                    sds.append(float(w.std(ddof=1)) if window > 1 else 0.0)
                    if best < 0 or means[-1] < means[best] - tol * abs(means[best]):
                        best, stale, problems = len(means) - 1, 0, []
                    else:
                        stale += 1
                    if stale >= _PATIENCE and average is not None:
                        with average.applied():
                            at_average = self._loss_at(svi, next_data, model_kwargs)
                        problems = _unsettled(means, sds, best, window, tol, at_average)
                        if not problems:
                            converged = True
                            break
                    # average the parameters over the next window when it may end in a check
                    average = _ParamAverage() if stale >= _PATIENCE - 1 else None
        if not converged and not problems:
            if not tol:
                problems = ["early stopping is off (tol=0), so convergence was not assessed"]
            elif len(means) <= _PATIENCE:
                problems = [
                    f"only {len(means)} window(s) of {window} steps: too few to judge convergence (it takes "
                    f"{_PATIENCE + 1}); raise num_steps or lower window"
                ]
            else:
                problems = [
                    f"the loss was still improving by more than tol={tol} per window of {window} steps "
                    f"when num_steps={o['num_steps']} ran out; raise num_steps or lr"
                ]

        params: dict[str, torch.Tensor] = {}
        posterior = None
        # a model's own objective amortises its local latents: draws of the global sites only
        drawn = roles.global_sites if objective is not None or stream is not None else roles.continuous_sites
        if drawn:
            posterior = self._draws(model_fn, guide, example, roles, o["num_samples"], model_kwargs, drawn)
            params = posterior_means(model, example, posterior, roles.global_sites)
        if objective is not None:
            params.update({k: v.detach().clone() for k, v in objective.params().items()})
        store = pyro.get_param_store()
        for name in roles.param_sites:  # learned in Pyro's param store while SVI ran
            if name in store:
                params[name] = store[name].detach().clone()
        if stream is not None and model.has_guide and objective is None:
            for name in store.keys():  # the guide's own networks (an encoder), as the fast path keeps them
                params.setdefault(name, store[name].detach().clone())
        return Fit(
            model=model,
            data=None if stream is not None else data,
            method=self.name,
            params=params,
            posterior=posterior,
            history=np.asarray(losses),
            converged=converged,
            extras={
                "guide": guide,
                "optim": optim,
                "convergence": [] if converged else problems,
                "num_items": n_total,
                "world_size": world.size(),
            },
            seed=seed,
        )

    @staticmethod
    def _loss_at(svi: Any, next_data: Callable[[], Any], model_kwargs: dict[str, Any]) -> tuple[float, float]:
        """Mean and standard error of the loss at the current parameters (no step taken)."""
        values = np.asarray(
            [world.mean(float(svi.evaluate_loss(next_data(), **model_kwargs))) for _ in range(_AVERAGE_EVALS)]
        )
        return float(values.mean()), float(values.std(ddof=1) / math.sqrt(len(values)))

    @staticmethod
    def _elbo(name: str | None, discrete: bool, nesting: int, num_particles: int) -> Any:
        if name == "meanfield":
            if discrete:
                raise ValueError("elbo='meanfield' cannot enumerate discrete latents; use 'trace' or 'jit'.")
            return TraceMeanField_ELBO(num_particles=num_particles)
        if name == "jit":
            if discrete:
                return JitTraceEnum_ELBO(max_plate_nesting=nesting, num_particles=num_particles)
            return JitTrace_ELBO(num_particles=num_particles)
        if discrete:
            return TraceEnum_ELBO(max_plate_nesting=nesting, num_particles=num_particles)
        return Trace_ELBO(num_particles=num_particles)

    @staticmethod
    def _guide(
        model: GenerativeModel, roles: Any, choice: Any, model_fn: Callable[..., Any]
    ) -> Callable[..., Any]:
        if choice is None and model.has_guide:
            return model.guide
        if callable(choice) and not isinstance(choice, type):
            return choice
        name = "normal" if choice is None else choice
        if name not in _AUTOGUIDES:
            raise ValueError(
                f"guide={choice!r} is not known; expected a callable or one of: {', '.join(_AUTOGUIDES)}."
            )
        if not roles.continuous_sites:  # pyro.param sites and enumerated latents: maximum likelihood
            return _empty_guide
        exposed = poutine.block(model_fn, expose=list(roles.continuous_sites))
        return _AUTOGUIDES[name](exposed)

    @staticmethod
    def _optim(optim: Any, lr: float, lr_decay: float, num_steps: int) -> Any:
        if isinstance(optim, pyro.optim.PyroOptim | pyro.optim.PyroLRScheduler):
            if lr_decay != 1.0:
                raise ValueError(
                    f"lr_decay={lr_decay} applies to an optimiser chosen by name ({', '.join(_OPTIMS)}); "
                    "a pyro.optim instance carries its own schedule (e.g. pyro.optim.ExponentialLR)."
                )
            return optim
        if optim not in _OPTIMS:
            raise ValueError(
                f"optim={optim!r} is not known; expected a pyro.optim instance or one of: {', '.join(_OPTIMS)}."
            )
        wrapper, torch_optim, decay_arg = _OPTIMS[optim]
        if lr_decay == 1.0:
            return wrapper({"lr": lr})
        factor = lr_decay ** (1.0 / num_steps)  # per step, so the whole run multiplies lr by lr_decay
        if decay_arg is not None:
            return wrapper({"lr": lr, decay_arg: factor})
        return getattr(pyro.optim, "ExponentialLR")(  # noqa: B009
            {"optimizer": torch_optim, "optim_args": {"lr": lr}, "gamma": factor}
        )

    @staticmethod
    def _draws(
        model_fn: Callable[..., Any],
        guide: Callable[..., Any],
        data: Any,
        roles: Any,
        num_samples: int,
        kwargs: dict[str, Any],
        drawn: tuple[str, ...] | None = None,
    ) -> dict[str, torch.Tensor]:
        sites = list(roles.continuous_sites if drawn is None else drawn)
        # Autoguides are built to vectorise over an outer plate; a hand-written guide may not,
        # so it is sampled one draw at a time (never a vectorised attempt that might misshape).
        parallel = isinstance(guide, AutoGuide)
        with torch.no_grad():
            pred = Predictive(guide, num_samples=num_samples, return_sites=sites, parallel=parallel)
            draws = pred(data, **kwargs)
        shapes: dict[str, Any]
        with poutine.block(), torch.no_grad():
            shapes = {
                n: s["value"].shape  # type: ignore[union-attr]
                for n, s in poutine.trace(guide).get_trace(data, **kwargs).nodes.items()
                if n in sites
            }
        return {k: v.reshape((1, num_samples) + tuple(shapes[k])) for k, v in draws.items() if k in sites}


register_backend("svi", SVI)
