"""SVI's convergence rule: windowed loss means, iterate averaging and the guide's own parameters.

A fit has converged when the windowed loss has settled within its noise and, for an autoguide,
its parameters have stopped drifting over a refinement phase at a lower learning rate (see
:class:`probgen.inference.svi.SVI` for the rule in words).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from operator import attrgetter
from typing import Any

import pyro
import pyro.optim
import torch
from pyro.infer.autoguide import AutoContinuous, AutoGuide, AutoNormal

#: Windows in a row without improvement before the loss may be called settled.
_PATIENCE = 5
#: Windows over which an autoguide's parameters are judged and averaged (the fit's result).
_GUIDE_SPAN = 6
#: Largest drift of an autoguide's parameters over the span, in posterior sd (locations) or relative (scales).
_GUIDE_DRIFT = 0.02
#: Largest standard error of their average over the span, in the same units.
_GUIDE_PRECISION = 0.1
#: Learning-rate factor of the refinement phase that follows the loss's first settling.
_REFINE_LR = 0.3
#: Loss evaluations at the window-averaged parameters (their mean and standard error).
_AVERAGE_EVALS = 30


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


class _GuideWindows:
    """Window means of an autoguide's unconstrained parameters: its drift rule and its average.

    Every step adds the guide's parameters to the current window's sum; the means of the last
    ``span`` windows are kept.  Each parameter is judged on the scale of the posterior it describes:
    a location in units of the guide's standard deviation of that latent, every other parameter (log
    scales, a scale factor's unconstrained entries) as it is, a relative change.
    """

    def __init__(self, guide: AutoGuide, span: int) -> None:
        self.guide, self.span = guide, span
        self.total: torch.Tensor | None = None
        self.count = 0
        self.means: list[torch.Tensor] = []

    def _params(self) -> list[tuple[str, torch.Tensor]]:
        prefix = f"{self.guide._pyro_name}."
        store = pyro.get_param_store()
        return sorted((n, p) for n, p in store.named_parameters() if n.startswith(prefix))

    def add(self) -> None:
        with torch.no_grad():
            flat = torch.cat([p.detach().reshape(-1) for _, p in self._params()])
            self.total = flat.clone() if self.total is None or self.count == 0 else self.total + flat
            self.count += 1

    def end_window(self) -> None:
        if self.total is None or not self.count:
            return
        self.means = (
            [*self.means[-(self.span - 1) :], self.total / self.count]
            if self.span > 1
            else [self.total / self.count]
        )
        self.count = 0

    def _references(self) -> tuple[list[str], torch.Tensor]:
        """Each element's label and the scale its change is judged on."""
        guide = self.guide
        prefix = f"{guide._pyro_name}."
        labels: list[str] = []
        refs: list[torch.Tensor] = []
        with torch.no_grad():
            for name, p in self._params():
                short = name[len(prefix) :]
                ref = torch.ones_like(p)
                if isinstance(guide, AutoNormal) and short.startswith("locs."):
                    ref = attrgetter(short[len("locs.") :])(guide.scales).detach()
                elif isinstance(guide, AutoContinuous) and short == "loc":
                    ref = guide.get_posterior().variance.detach().sqrt()
                elif short == "scale_tril":  # a unit lower-triangular factor: a change of its entry l
                    ref = (1.0 + p.detach() ** 2) ** 1.5  # moves the implied correlation by ~ dl / ref
                refs.append(ref.reshape(-1).to(p.dtype).expand(p.numel()))
                labels += [short] * p.numel()
        return labels, torch.cat(refs)

    def problems(self) -> list[str]:
        """Why the guide has not settled over the last ``span`` windows (empty when it has)."""
        if len(self.means) < self.span:
            return []
        m = torch.stack(self.means).double()
        labels, ref = self._references()
        ref = ref.double().clamp_min(1e-12)
        k = len(m)
        t = torch.arange(k, dtype=m.dtype) - (k - 1) / 2
        slope = (t[:, None] * m).sum(0) / (t**2).sum()
        resid = m - m.mean(0) - slope * t[:, None]
        noise = ((resid**2).sum(0) / (k - 2)).sqrt()  # window-to-window scatter about the trend
        drift = slope * (k - 1) / ref
        se_drift = noise / (t**2).sum().sqrt() * (k - 1) / ref
        se_mean = noise / math.sqrt(k) / ref
        z = max(2.0, math.sqrt(2.0 * math.log(m.shape[1])))  # a bound for many parameters at once
        problems = []
        moving = drift.abs() - z * se_drift - _GUIDE_DRIFT
        if bool((moving > 0).any()):
            i = int(moving.argmax())
            problems.append(
                f"the guide's parameters still drift: {labels[i]!r} moved by {float(drift[i]):+.3g} "
                f"{'posterior sd' if labels[i].startswith(('locs.', 'loc')) else '(unconstrained)'} over the "
                f"last {k} windows, beyond its noise; raise num_steps"
            )
        if bool((se_mean > _GUIDE_PRECISION).any()):
            i = int(se_mean.argmax())
            problems.append(
                f"the guide's parameters are not yet pinned down: the average of {labels[i]!r} over the last "
                f"{k} windows has a standard error of {float(se_mean[i]):.3g} posterior sd (at most "
                f"{_GUIDE_PRECISION} wanted); raise num_steps or lower lr"
            )
        return problems

    def apply(self, windows: int) -> None:
        """Set the guide's parameters to their average over the last ``windows`` windows."""
        if not self.means:
            return
        average = torch.stack(self.means[-windows:]).mean(0)
        offset = 0
        with torch.no_grad():
            for _, p in self._params():
                k = p.numel()
                p.copy_(average[offset : offset + k].view_as(p))
                offset += k


_REFINING = (
    "the loss settled, and the refinement phase at a lower learning rate was cut short; raise num_steps"
)


def _refine(optim: Any, factor: float) -> None:
    """Start the refinement phase: every learning rate times ``factor``, the optimiser's moment
    estimates forgotten (Adam's second moments still carry the large gradients of the first steps,
    which would hold the guide's scales back for thousands of steps)."""
    for obj in getattr(optim, "optim_objs", {}).values():
        torch_optim = getattr(obj, "optimizer", obj)  # a scheduler wraps its optimiser
        for group in torch_optim.param_groups:
            group["lr"] *= factor
        torch_optim.state.clear()


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
