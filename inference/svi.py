"""Stochastic variational inference (``method="svi"``).

Trace_ELBO, or TraceEnum_ELBO when the model has discrete latents (they are enumerated, not
sampled); ``elbo=`` picks TraceMeanField_ELBO or the JIT-compiled ELBOs instead.  A model that
offers its own objective (the ``svi_objective`` hook: the same ELBO in plain PyTorch, e.g. with
an analytic KL, as the VAE families do) is trained by one plain PyTorch loop with no Pyro traces.  With no guide of the model's own, an ``AutoNormal`` guide is built over the continuous
latent sites (an empty guide when there are none: ``pyro.param`` sites are then fitted by maximum
likelihood).  Stops early when the windowed loss has settled, flat within its noise, not above
its best and not bouncing, and an autoguide's parameters have stopped drifting after a refinement
phase at a lower learning rate; posterior draws come from the guide (averaged over the last
windows).  ``subsample_size`` feeds any model random minibatches, scaled by N / B.
"""

from __future__ import annotations

import math
from collections.abc import Callable
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
from pyro.infer.autoguide import (
    AutoContinuous,
    AutoDelta,
    AutoDiagonalNormal,
    AutoGuide,
    AutoMultivariateNormal,
    AutoNormal,
)
from pyro.infer.autoguide.initialization import init_to_feasible, init_to_value
from tqdm.auto import tqdm

from probgen.backend import BackendBase, Option, register_backend
from probgen.capabilities import (
    ClosedFormEM,
    MasksObserved,
    MissingValues,
    OwnSVIObjective,
    StartingValues,
    SVIDefaults,
)
from probgen.fit import Fit
from probgen.inference._svi_convergence import (
    _AVERAGE_EVALS,
    _GUIDE_SPAN,
    _PATIENCE,
    _REFINE_LR,
    _REFINING,
    _GuideWindows,
    _ParamAverage,
    _refine,
    _unsettled,
)
from probgen.inference._svi_minibatch import _check_plate_subsample, _Minibatches, _PlateSubsample, _take
from probgen.inference._svi_optim import OPTIMS, build_optim, scheduled
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
#: ``elbo=`` choices: Pyro's ELBOs by name ("analytic": the model's own objective, its fast path).
_ELBOS = ("analytic", "jit", "meanfield", "trace")


def _init_scale(n_items: int) -> float:
    """The autoguides' initial scale: Pyro's 0.1, or 1 / sqrt(N) when smaller.

    Posterior standard deviations of global parameters shrink as 1 / sqrt(N).  Starting the scale
    below its target is cheap (the entropy's gradient pulls it up at a steady pace), while starting
    far above it leaves Adam's second moments dominated by early, large gradients, and the scale
    then creeps down for thousands of steps.
    """
    return min(0.1, 1.0 / math.sqrt(max(int(n_items), 1)))


def _starting_values(model: GenerativeModel, roles: Any, data: Any, seed: int) -> Callable[..., Any]:
    """Where the autoguide's locations start: the model's own starting values when it offers them
    (a mixture's k-means start, as EM and MCMC use: from Pyro's default start, on unscaled data,
    the components of a mixture collapse onto one mode), Pyro's default elsewhere."""
    if not isinstance(model, StartingValues) or data is None:
        return init_to_feasible
    strategy = model.em_defaults().get("init", "random") if isinstance(model, ClosedFormEM) else "random"
    start = model.init_params(data, init=strategy, generator=torch.Generator().manual_seed(seed))
    values = {k: torch.as_tensor(v) for k, v in start.items() if k in roles.continuous_sites}
    return init_to_value(values=values, fallback=init_to_feasible)


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
        lr_schedule: Callable[[int, int], float] | None = None,
        clip_norm: float | None = None,
    ) -> None:
        self.objective = objective
        self.params = list(objective.parameters())
        self.scale = float(scale)  # the shard's share of the whole data under torch.distributed
        world.broadcast(self.params)
        self.n, self.size, self.num_particles = n, subsample_size, num_particles
        self.clip_norm = clip_norm
        self.scheduler: Any = None
        if isinstance(optim, pyro.optim.PyroOptim | pyro.optim.PyroLRScheduler):
            self.optim, self.torch_optim = optim, None  # steps each param-store tensor itself
        else:
            _, torch_optim, decay_arg = OPTIMS[optim[0]]
            factor = lr_decay ** (1.0 / num_steps)
            args: dict[str, Any] = {"lr": optim[1]}
            if decay_arg is not None and lr_decay != 1.0 and lr_schedule is None:
                args[decay_arg] = factor
            self.torch_optim = torch_optim(self.params, **args)
            if lr_schedule is not None:  # the decay folded into the schedule's factor
                self.scheduler = torch.optim.lr_scheduler.LambdaLR(
                    self.torch_optim, scheduled(lr_schedule, lr_decay, num_steps)
                )
            elif decay_arg is None and lr_decay != 1.0:
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
            if self.clip_norm is not None:
                torch.nn.utils.clip_grad_norm_(self.params, self.clip_norm)
            self.torch_optim.step()
            if self.scheduler is not None:
                self.scheduler.step()
        else:
            for p in self.params:
                p.grad = None
            loss.backward()
            world.average_gradients(self.params)
            if self.clip_norm is not None:
                torch.nn.utils.clip_grad_norm_(self.params, self.clip_norm)
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
    ``lr_schedule`` : callable or None, default None
        ``lr_schedule(step, num_steps)``: the factor of ``lr`` at step ``step`` (from 0), e.g. a
        warm-up then a decay (times ``lr_decay ** (step / num_steps)`` when both are given);
        through ``torch.optim.lr_scheduler.LambdaLR`` (``pyro.optim.LambdaLR`` on Pyro's path).
        Not for instances (a model's default one is then dropped).
    ``clip_norm`` : float or None, default None
        Largest L2 norm of the gradient (``torch.nn.utils.clip_grad_norm_``): of all the weights
        at once with a model's own objective, of each parameter tensor on Pyro's path.  Not for
        instances (a model's default one is then dropped).
    ``num_particles`` : int, default 1
        Monte Carlo samples per ELBO estimate.
    ``subsample_size`` : int or None, default None
        Minibatch size (None: full batch), for any model: each step feeds the model a random
        minibatch (a fresh permutation of the items per epoch, sliced in order) and scales the
        data plate's sites by N / B.  Data held as a tensor, model arguments (per-item arguments
        sliced, constants kept) or a tuple of tensors are sliced; other prepared data are
        subsampled by the data plate itself, for models that index their data by the plate's
        indices.  Per-item continuous latents need an amortising guide of the model's own (an
        autoguide would keep parameters for every item): refused otherwise.  A model with its own
        objective minibatches inside it.
    ``guide`` : {"normal", "diagonal", "mvn", "delta"} or callable or None, default None
        The variational family over the continuous latents: the model's own guide when it has
        one, else "normal" (``AutoNormal``).  A model with no continuous latents (its parameters
        all ``pyro.param`` sites, its latents all discrete and enumerated) gets an empty guide:
        SVI then maximises the likelihood.  The autoguides start at scale ``min(0.1, 1 / sqrt(N))``
        (posterior sds of global parameters shrink as ``1 / sqrt(N)``; a scale started far above
        its target creeps down for thousands of Adam steps).
    ``tol`` : float or None, default 1e-4
        Early stopping (0 or None runs every step and reports ``converged=False``).  The loss is
        averaged over windows of ``window`` steps; the fit has converged when (1) ``patience`` (5)
        windows in a row fail to lower the best window mean by the fraction ``tol``, (2) the last
        two window means differ by at most two standard errors plus ``tol`` relative, (3) the last
        window mean is not above the best by more than two standard errors plus ``tol`` relative
        (a rising loss), and (4) the loss varies across the last window's steps by at most twice
        its Monte Carlo noise at fixed parameters (30 evaluations without a step) plus ``tol``
        relative (an optimiser bouncing around, its learning rate too large).  A window improves
        on the best only by more than ``tol`` and two standard errors (a minibatch loss is noisy).
        With an autoguide ("normal", "diagonal", "mvn"), the loss settling starts a refinement
        phase: the learning rate times 0.3 and Adam's moment estimates restarted; the fit has
        converged once, over the 6 windows after that, the window means of the guide's
        unconstrained parameters drift by no more than their window-to-window noise plus 0.02
        (locations in units of the guide's sd of their latent, log-scales relative, a
        full-covariance factor in its implied correlation), and their average is known to 0.1 of
        those units.  The fitted guide is then that average (iterate averaging over the 6
        windows); without convergence, the average of the last window.
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
    accepts_missing = True  # through a MissingValues model's own objective, which masks the cells

    options = (
        Option("num_steps", "int", 3000, "optimisation steps at most"),
        Option("lr", "float", 0.01, "learning rate"),
        Option("optim", "any", "adam", '"adam", "clipped_adam" or a pyro.optim instance'),
        Option("lr_decay", "(0, 1]", 1.0, "learning-rate factor over the whole run"),
        Option("lr_schedule", "any", None, "callable (step, num_steps) -> factor of lr", none=True),
        Option("clip_norm", "float", None, "largest L2 norm of the gradient", none=True),
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

    def missing_refusal(self, model: GenerativeModel) -> str | None:
        """Missing cells are served by a model's own objective (it masks them) or by a model that
        masks its observed sites (a user's model); Pyro's ELBOs would otherwise observe NaN."""
        if isinstance(model, OwnSVIObjective | MasksObserved):
            return None
        return (
            f"{model.name} has no objective of its own (OwnSVIObjective) and does not mask its "
            "observed sites (MasksObserved)"
        )

    def fit(self, model: GenerativeModel, data: Any, *, seed: int, progress: bool, **options: Any) -> Fit:
        defaults: dict[str, Any] = self.defaults()
        options = self.check_options(options)
        if not isinstance(data, StreamingData) and isinstance(model, SVIDefaults):
            defaults.update(model.svi_defaults(data))
        o = {**defaults, **options}
        if not isinstance(o["optim"], str):  # an instance carries its own schedule: a model's default yields
            o.update({k: None for k in ("lr_schedule", "clip_norm") if k not in options})
        own = isinstance(model, OwnSVIObjective)
        if o["elbo"] == "analytic" and not own:
            raise ValueError(
                f"elbo='analytic' needs a model with its own objective (the OwnSVIObjective capability); "
                f"{model.name} has none. Use one of: jit, meanfield, trace."
            )
        stream = data if isinstance(data, StreamingData) else None
        example = stream.first if stream is not None else data
        roles = model.roles(example)
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
        n_local = stream.num_items if stream is not None else model.num_items(data)
        size = o["subsample_size"]
        if size is not None:
            if isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= n_local:
                raise ValueError(
                    f"subsample_size must be an int in [1, {n_local}] (the number of items); got {size!r}."
                )
            if size == n_local:
                size = None  # the whole data every step
        objective = (
            model.svi_objective(data) if isinstance(model, OwnSVIObjective) and own else None
        )  # fresh weights, in the param store
        fused = objective is not None and o["elbo"] in (None, "analytic")  # minibatches its own way
        if (
            not fused
            and isinstance(model, MissingValues)  # its NaN are cells that only its objective masks
            and not isinstance(model, MasksObserved)  # (a user's model masks them in its sites)
            and isinstance(data, torch.Tensor)
            and data.is_floating_point()
            and bool(data.isnan().any())
        ):
            raise ValueError(
                f"data have missing cells (missing='marginalize'), which only {model.name}'s own objective "
                f"masks; elbo={o['elbo']!r} would observe NaN. Leave elbo unset (or 'analytic')."
            )
        model_fn = config_enumerate(model.model, default="parallel") if roles.discrete_sites else model.model
        minibatches: _Minibatches | None = None
        slicing = False
        if size is not None and not fused:
            if roles.data_plate is None:
                raise ValueError(
                    f"subsample_size={size} needs a plate over the data items; {model.name} has none."
                )
            if roles.local_sites and not (model.has_guide or callable(o["guide"])):
                raise ValueError(
                    f"subsample_size={size} needs a guide that amortises the per-item latents "
                    f"{list(roles.local_sites)} (an encoder): an autoguide has parameters for every item, "
                    "and a minibatch would train them on other items. Give the model a guide, or fit "
                    "without subsample_size."
                )
            minibatches = _Minibatches(n_local, size)
            slicing = _take(data, minibatches.index, n_local) is not None
            if not slicing:
                _check_plate_subsample(model_fn, roles.data_plate, data, minibatches, model.name)

        # The data plate's scale: N / batch for minibatches (streamed, or sliced from data in memory),
        # and under torch.distributed the whole data's N (the sum of the shards) over this shard's items.
        n_total = int(round(world.sum(n_local)))
        distributed = world.size() > 1
        factor = {"value": n_total / n_local}
        guide = self._guide(model, roles, o["guide"], model_fn, n_total, example, seed)
        train_model, train_guide = model_fn, guide
        if minibatches is not None and not slicing and roles.data_plate is not None:
            # the plate itself subsamples, scaling by n_local / B
            train_model = _PlateSubsample(roles.data_plate, minibatches)(train_model)
            train_guide = _PlateSubsample(roles.data_plate, minibatches)(train_guide)
        if stream is not None or distributed or slicing:
            train_model = scaled(train_model, roles.data_plate, lambda: factor["value"])
            train_guide = scaled(train_guide, roles.data_plate, lambda: factor["value"])
        batches = stream.batches() if stream is not None else None

        def next_data() -> Any:
            if batches is not None:
                batch = next(batches)
                factor["value"] = n_total / model.num_items(batch)
                return batch
            if minibatches is None:
                return data
            index = minibatches.next_index()
            if not slicing:
                return data  # the plate takes the items ``index``
            factor["value"] = n_total / len(index)
            return _take(data, index, n_local)

        svi: Any
        if fused:
            named = isinstance(o["optim"], str)
            optim = (
                (o["optim"], o["lr"])
                if named and o["optim"] in OPTIMS
                else build_optim(
                    o["optim"], o["lr"], o["lr_decay"], o["num_steps"], o["lr_schedule"], o["clip_norm"]
                )
            )
            svi = _ObjectiveSVI(
                objective,
                optim,
                model.num_items(data),
                size,
                o["num_particles"],
                o["lr_decay"],
                o["num_steps"],
                scale=n_total / n_local,
                lr_schedule=o["lr_schedule"],
                clip_norm=o["clip_norm"],
            )
            optim = svi.optim
        else:
            elbo = self._elbo(
                o["elbo"], bool(roles.discrete_sites), roles.max_plate_nesting, o["num_particles"]
            )
            optim = build_optim(
                o["optim"], o["lr"], o["lr_decay"], o["num_steps"], o["lr_schedule"], o["clip_norm"]
            )
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
        refined: int | None = None  # the window after which the refinement phase began
        average: _ParamAverage | None = None
        # an autoguide with a scale (not a point mass): its parameters must settle too
        watched = (
            _GuideWindows(guide, _GUIDE_SPAN)
            if isinstance(guide, AutoNormal | AutoContinuous) and not distributed
            else None
        )
        with tqdm(total=o["num_steps"], disable=not progress, desc="SVI", leave=False) as bar:
            for step in range(o["num_steps"]):
                loss = world.mean(float(svi.step(next_data())))
                if not math.isfinite(loss):
                    raise FloatingPointError(
                        f"SVI loss became {loss} at step {step}; lower lr (now {o['lr']}) or check the model."
                    )
                losses.append(loss)
                if isinstance(optim, pyro.optim.PyroLRScheduler) and isinstance(svi, PyroSVI):
                    optim.step()
                if average is not None:
                    average.add()
                if watched is not None:
                    watched.add()
                bar.update(1)
                if (step + 1) % window == 0 or step + 1 == o["num_steps"]:
                    bar.set_postfix(elbo=f"{-float(np.mean(losses[-window:])):.5g}")  # running ELBO
                if watched is not None and (step + 1) % window == 0:
                    watched.end_window()
                if tol and (step + 1) % window == 0:
                    w = np.asarray(losses[-window:])
                    means.append(float(w.mean()))
                    sds.append(float(w.std(ddof=1)) if window > 1 else 0.0)
                    # a new best must beat the old by tol and by its noise (a minibatch loss is noisy)
                    noise = 2.0 * math.hypot(sds[-1], sds[best]) / math.sqrt(window) if best >= 0 else 0.0
                    if best < 0 or means[-1] < means[best] - tol * abs(means[best]) - noise:
                        best, stale, problems = len(means) - 1, 0, []
                    else:
                        stale += 1
                    if stale >= _PATIENCE and average is not None:
                        with average.applied():
                            at_average = self._loss_at(svi, next_data)
                        problems = _unsettled(means, sds, best, window, tol, at_average)
                        if not problems and watched is not None:
                            if refined is None:  # the loss has settled: refine from here
                                refined = len(means)
                                _refine(optim, _REFINE_LR)
                            if len(means) - refined < _GUIDE_SPAN:
                                problems = [_REFINING]
                            else:
                                problems = watched.problems()
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

        if watched is not None:  # the result: the guide averaged over the settled windows (or the last)
            watched.apply(_GUIDE_SPAN if converged else 1)

        params: dict[str, torch.Tensor] = {}
        posterior = None
        # a model's own objective amortises its local latents: draws of the global sites only
        drawn = roles.global_sites if objective is not None or stream is not None else roles.continuous_sites
        if drawn:
            posterior = self._draws(model_fn, guide, example, roles, o["num_samples"], drawn)
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
    def _loss_at(svi: Any, next_data: Callable[[], Any]) -> tuple[float, float]:
        """Mean and standard error of the loss at the current parameters (no step taken), each
        evaluation on the next minibatch (scaled to the whole data) as the training steps are."""
        values = np.asarray(
            [world.mean(float(svi.evaluate_loss(next_data()))) for _ in range(_AVERAGE_EVALS)]
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
        model: GenerativeModel,
        roles: Any,
        choice: Any,
        model_fn: Callable[..., Any],
        n_items: int,
        data: Any = None,
        seed: int = 0,
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
        init_loc = _starting_values(model, roles, data, seed)
        if name == "delta":
            return _AUTOGUIDES[name](exposed, init_loc_fn=init_loc)
        return _AUTOGUIDES[name](exposed, init_loc_fn=init_loc, init_scale=_init_scale(n_items))

    @staticmethod
    def _draws(
        model_fn: Callable[..., Any],
        guide: Callable[..., Any],
        data: Any,
        roles: Any,
        num_samples: int,
        drawn: tuple[str, ...] | None = None,
    ) -> dict[str, torch.Tensor]:
        sites = list(roles.continuous_sites if drawn is None else drawn)
        # Autoguides are built to vectorise over an outer plate; a hand-written guide may not,
        # so it is sampled one draw at a time (never a vectorised attempt that might misshape).
        parallel = isinstance(guide, AutoGuide)
        with torch.no_grad():
            pred = Predictive(guide, num_samples=num_samples, return_sites=sites, parallel=parallel)
            draws = pred(data)
        shapes: dict[str, Any]
        with poutine.block(), torch.no_grad():
            shapes = {
                n: s["value"].shape  # type: ignore[union-attr]
                for n, s in poutine.trace(guide).get_trace(data).nodes.items()
                if n in sites
            }
        return {k: v.reshape((1, num_samples) + tuple(shapes[k])) for k, v in draws.items() if k in sites}


register_backend("svi", SVI)
