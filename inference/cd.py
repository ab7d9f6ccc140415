"""Contrastive divergence (``method="cd"``): maximum likelihood for energy-based models.

For ``p(x) = exp(-F(x)) / Z`` the log-likelihood gradient is ``-E_data[dF/dtheta] +
E_model[dF/dtheta]``; contrastive divergence (Hinton 2002) replaces the model expectation by
negative particles from ``k`` Gibbs sweeps started at the minibatch (CD-k) or carried over from
step to step (persistent CD, Tieleman 2008).  The backend serves any model offering the hooks
``free_energy``, ``gibbs_step`` and ``init_params`` (declared on ``GenerativeModel``); it knows
no family by name.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from tqdm.auto import tqdm

from probgen.backend import BackendBase, Option, register_backend
from probgen.capabilities import EnergyBased, FreeEnergyGradient
from probgen.errors import ModelNotSupportedError
from probgen.fit import Fit
from probgen.model import GenerativeModel

__all__ = ["CD", "CDUpdater", "FusedCD"]

_HOOKS = ("free_energy", "gibbs_step", "init_params")
#: Items (at most) on which the per-epoch pseudo-log-likelihood is computed.
_MONITOR_ITEMS = 1000
#: Epochs in a row without a better pseudo-log-likelihood before the fit is called converged.
_PATIENCE = 5


class CDUpdater(Protocol):
    """Runs of contrastive-divergence updates that a model carries out itself (see :class:`FusedCD`)."""

    def run(self, data: torch.Tensor, order: torch.Tensor, lrs: Sequence[float]) -> None:
        """``len(lrs)`` updates; update ``i`` takes the rows ``order[i * b:(i + 1) * b]`` of
        ``data`` (``b`` the batch size; the last minibatch may be shorter) at rate ``lrs[i]``."""
        ...

    def params(self) -> dict[str, torch.Tensor]:
        """The current parameters by name (may be views of the updater's state)."""
        ...


@runtime_checkable
class FusedCD(Protocol):
    """An energy-based model that runs contrastive-divergence updates itself.

    What the backend would do step by step (a Gibbs sweep, the free-energy gradient of positives
    and negatives, an SGD step with momentum and weight decay) in one loop of the model's own,
    with the gradient in closed form and buffers reused: for small minibatches the per-step
    Python and dispatch of the generic loop cost far more than the arithmetic.  The backend keeps
    the epochs, the learning-rate schedule, the monitor and the convergence rule.
    """

    def cd_updater(
        self,
        params: Mapping[str, torch.Tensor],
        chains: torch.Tensor | None,
        *,
        batch_size: int,
        k: int,
        momentum: float,
        weight_decay: float,
        generator: torch.Generator,
    ) -> CDUpdater: ...


def _is_binary(x: Any) -> bool:
    return isinstance(x, torch.Tensor) and x.dim() == 2 and bool(((x == 0) | (x == 1)).all())


def _signs(n_pos: int, n_neg: int) -> torch.Tensor:
    """Weights turning free energies of ``[positives; negatives]`` into mean(pos) - mean(neg)."""
    return torch.cat([torch.full((n_pos,), 1.0 / n_pos), torch.full((n_neg,), -1.0 / n_neg)])


class CD(BackendBase):
    """Contrastive divergence and persistent contrastive divergence.

    Each step takes a minibatch, draws negative particles by ``k`` Gibbs sweeps
    (``model.gibbs_step``) and takes a gradient step on ``mean F(batch) - mean F(negatives)``
    (autograd of ``model.free_energy``; the negatives are constants), by SGD with momentum.  A
    model with the free energy's gradient in closed form (``FreeEnergyGradient``) gives it
    instead of autograd; a model offering :class:`FusedCD` (the RBM) runs each epoch's updates
    itself, the backend keeping the epochs, the learning rates, the monitor and the convergence
    rule.

    Options (with defaults):

    ``num_steps`` : int, default 3000
        Gradient steps (minibatch updates).
    ``lr`` : float, default 0.05
        Learning rate, decayed linearly to ``lr * lr_decay`` over the run.
    ``lr_decay`` : float in (0, 1], default 0.1
        Final learning rate as a fraction of ``lr`` (1.0: constant).
    ``k`` : int, default 1
        Gibbs sweeps per update.
    ``persistent`` : bool, default True
        Persistent chains (PCD; one chain per minibatch item, started at random training items)
        rather than chains restarted at the minibatch (CD-k).
    ``subsample_size`` : int or None, default 20
        Minibatch size, capped at the number of items (None: full batch).  Each epoch visits
        every item once in a fresh random order.
    ``momentum`` : float in [0, 1), default 0.5
        SGD momentum.
    ``weight_decay`` : float >= 0, default 0.0
        L2 penalty on every parameter: ``weight_decay * theta`` is added to each gradient.
    ``init`` : str or dict, default "random"
        Passed to ``model.init_params`` (a strategy name, or starting values by parameter name).
    ``tol`` : float >= 0, default 1e-2
        Convergence rule (reported, no early stopping): the fit has converged when the best
        per-epoch history value of the last ``5`` epochs is no better than the best before them
        by more than ``tol`` times its magnitude (the monitored quantity has plateaued).  CD
        follows no objective it can evaluate, so this is a plateau of the monitor, not a
        certificate of a maximum likelihood.

    ``fit.history`` holds one value per epoch (``ceil(items / subsample_size)`` steps, the last
    partial epoch included): for binary data the pseudo-log-likelihood per item, ``n_features *
    mean log sigmoid(F(x~) - F(x))`` with one feature of each item flipped in ``x~`` (one fixed
    feature per item, on up to 1000 fixed training items, so epochs compare like with like;
    higher is better; ``fit.extras["history"] == "pseudo_log_likelihood"``), otherwise the mean
    squared reconstruction error of one Gibbs sweep on the same items (lower is better,
    ``"reconstruction_error"``).  ``fit.extras["convergence"]`` says why the fit did not converge.

    Examples
    --------
    >>> import torch, probgen as pg
    >>> from probgen.models import RBM
    >>> x = (torch.rand(100, 5, generator=torch.Generator().manual_seed(0)) > 0.5).float()
    >>> fit = pg.fit(RBM(5, 2), x, method="cd", num_steps=50, progress=False)
    >>> fit.method, fit.params["W"].shape
    ('cd', torch.Size([2, 5]))
    """

    name = "cd"
    label = "CD"
    requires = (EnergyBased,)
    likelihood = False
    options = (
        Option("num_steps", "int", 3000, "parameter updates at most"),
        Option("lr", "float", 0.05, "learning rate"),
        Option("lr_decay", "(0, 1]", 0.1, "learning-rate factor reached at the last step"),
        Option("k", "int", 1, "Gibbs sweeps per negative phase"),
        Option("persistent", "bool", True, "persistent chains (PCD) rather than restarts at the data"),
        Option("subsample_size", "int", 20, "items per minibatch", none=True, aliases=("batch_size",)),
        Option("momentum", "[0, 1)", 0.5, "SGD momentum"),
        Option("weight_decay", "float0", 0.0, "L2 penalty on the weights"),
        Option("init", "any", "random", '"random" or a dict of starting values'),
        Option("tol", "float0", 1e-2, "convergence: change of the per-epoch history"),
    )

    def fit(self, model: GenerativeModel, data: Any, *, seed: int, progress: bool, **options: Any) -> Fit:
        if not isinstance(model, EnergyBased):
            raise ModelNotSupportedError(
                f"method='cd' cannot fit {model.name}: {self.supports(model, data)}."
            )
        defaults: dict[str, Any] = self.defaults()
        options = self.check_options(options)
        o = {**defaults, **options}
        wd = o["weight_decay"]
        n = model.num_items(data)
        size = o["subsample_size"]
        size = n if size is None else min(int(size), n)

        gen = torch.Generator().manual_seed(int(seed))
        start = model.init_params(data, init=o["init"], generator=gen)
        params = {k: v.detach().clone().requires_grad_(True) for k, v in start.items()}
        velocity = {k: torch.zeros_like(v) for k, v in params.items()}
        steps, lr0, final = int(o["num_steps"]), float(o["lr"]), float(o["lr_decay"])
        momentum = float(o["momentum"])

        binary = _is_binary(data)
        monitor_idx = torch.randperm(n, generator=gen)[: min(n, _MONITOR_ITEMS)]
        monitor = data.index_select(0, monitor_idx)
        n_monitor = len(monitor)
        if binary:
            # the flipped items are the same every epoch: built once, scored beside the monitored
            # items in one call per epoch (the first half flipped, the second as they are)
            flip = torch.randint(monitor.shape[1], (n_monitor,), generator=gen)
            rows = torch.arange(n_monitor)
            scored = torch.cat([monitor, monitor])
            scored[rows, flip] = 1.0 - scored[rows, flip]
        history: list[float] = []

        def record() -> float:
            with torch.no_grad():
                if binary:
                    energy = model.free_energy(scored, params)
                    gap = energy[:n_monitor] - energy[n_monitor:]
                    return float(monitor.shape[1] * torch.nn.functional.logsigmoid(gap).mean())
                recon = model.gibbs_step(monitor, params, generator=gen)
                return float(((recon - monitor) ** 2).mean())

        chains = data.index_select(0, torch.randint(n, (size,), generator=gen)) if o["persistent"] else None
        perm, pos = torch.randperm(n, generator=gen), 0
        steps_per_epoch = math.ceil(n / size)
        if isinstance(model, FusedCD) and data.device.type == "cpu":
            updater = model.cd_updater(
                params,
                chains,
                batch_size=size,
                k=int(o["k"]),
                momentum=momentum,
                weight_decay=wd,
                generator=gen,
            )
            done = 0
            with tqdm(total=steps, disable=not progress, desc="CD", leave=False) as bar:
                while done < steps:  # one epoch per pass: the updater runs its minibatches
                    if done:
                        perm = torch.randperm(n, generator=gen)
                    m = min(steps_per_epoch, steps - done)
                    updater.run(
                        data, perm, [lr0 * (1.0 - (1.0 - final) * (done + i) / steps) for i in range(m)]
                    )
                    done += m
                    params = updater.params()
                    # one number per tensor and epoch: a non-finite entry makes its tensor's sum non-finite
                    if not math.isfinite(sum(float(p.sum()) for p in params.values())):
                        raise FloatingPointError(
                            f"CD parameters became non-finite by step {done}; lower lr (now {o['lr']})."
                        )
                    history.append(record())
                    bar.update(m)
                    bar.set_postfix({"pll" if binary else "recon": f"{history[-1]:.4g}"})
            return self._result(model, data, params, history, o["tol"], binary, seed)
        sign = _signs(size, size)
        own_grad = model if isinstance(model, FreeEnergyGradient) else None  # closed form, else autograd
        with tqdm(total=steps, disable=not progress, desc="CD", leave=False) as bar:
            for step in range(steps):
                if pos >= n:
                    perm, pos = torch.randperm(n, generator=gen), 0
                    history.append(record())
                    bar.set_postfix({"pll" if binary else "recon": f"{history[-1]:.4g}"})
                batch = data.index_select(0, perm[pos : pos + size])
                pos += size
                neg = chains if chains is not None else batch
                for _ in range(o["k"]):
                    neg = model.gibbs_step(neg, params, generator=gen)
                if chains is not None:
                    chains = neg
                # one pass over [batch; negatives]: mean F(batch) - mean F(negatives)
                both = torch.cat([batch, neg.detach()])
                weights = sign if len(batch) == size else _signs(len(batch), len(neg))
                if own_grad is not None:
                    by_name = own_grad.free_energy_grad(both, weights, params)
                    grads = tuple(by_name[k] for k in params)
                else:
                    energy = model.free_energy(both, params)
                    grads = torch.autograd.grad(energy @ weights.to(energy.dtype), list(params.values()))
                lr = lr0 * (1.0 - (1.0 - final) * step / steps)
                with torch.no_grad():
                    for (name, p), g in zip(params.items(), grads, strict=True):
                        if wd:
                            g = g.add(p, alpha=wd)
                        buf = velocity[name].mul_(momentum).add_(g)
                        p.sub_(buf, alpha=lr)
                if (step + 1) % steps_per_epoch == 0 and not all(
                    bool(torch.isfinite(g).all()) for g in grads
                ):
                    raise FloatingPointError(
                        f"CD gradient became non-finite at step {step}; lower lr (now {o['lr']})."
                    )
                bar.update(1)
        history.append(record())
        return self._result(model, data, params, history, o["tol"], binary, seed)

    def _result(
        self,
        model: GenerativeModel,
        data: Any,
        params: Mapping[str, torch.Tensor],
        history: list[float],
        tol: float,
        binary: bool,
        seed: int,
    ) -> Fit:
        converged, problems = self._converged(history, tol, higher_is_better=binary)
        return Fit(
            model=model,
            data=data,
            method=self.name,
            params={k: v.detach().clone(memory_format=torch.contiguous_format) for k, v in params.items()},
            history=np.asarray(history, dtype=float),
            converged=converged,
            extras={
                "history": "pseudo_log_likelihood" if binary else "reconstruction_error",
                "convergence": problems,
            },
            seed=seed,
        )

    @staticmethod
    def _converged(history: list[float], tol: float, *, higher_is_better: bool) -> tuple[bool, list[str]]:
        """The plateau rule of the class docstring: (converged, reasons it did not)."""
        if len(history) <= _PATIENCE:
            return False, [
                f"only {len(history)} epoch(s): too few to judge convergence (it takes {_PATIENCE + 1}); "
                "raise num_steps"
            ]
        h = np.asarray(history) if higher_is_better else -np.asarray(history)
        before, recent = float(h[:-_PATIENCE].max()), float(h[-_PATIENCE:].max())
        if recent > before + tol * abs(before):
            return False, [
                f"the per-epoch monitor still improved over the last {_PATIENCE} epochs "
                f"(best {abs(before):.6g} before, {abs(recent):.6g} since); raise num_steps"
            ]
        return True, []


register_backend("cd", CD)
