"""Stochastic variational inference (``method="svi"``).

Trace_ELBO, or TraceEnum_ELBO when the model has discrete latents (they are enumerated, not
sampled).  With no guide of the model's own, an ``AutoNormal`` guide is built over the continuous
latent sites.  Stops early when the smoothed loss stops improving; posterior draws come from the
guide.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pyro
import pyro.optim
import pyro.poutine as poutine
import torch
from pyro.infer import SVI as PyroSVI
from pyro.infer import Predictive, Trace_ELBO, TraceEnum_ELBO, config_enumerate
from pyro.infer.autoguide import AutoDelta, AutoDiagonalNormal, AutoMultivariateNormal, AutoNormal
from tqdm.auto import tqdm

from probgen.fit import Fit, register_backend
from probgen.model import GenerativeModel

__all__ = ["SVI"]

_AUTOGUIDES = {
    "normal": AutoNormal,
    "diagonal": AutoDiagonalNormal,
    "mvn": AutoMultivariateNormal,
    "delta": AutoDelta,
}
_OPTIMS: dict[str, Any] = {
    "adam": pyro.optim.Adam,  # type: ignore[attr-defined]
    "clipped_adam": pyro.optim.ClippedAdam,
}


def _accepts(fn: Callable[..., Any], name: str) -> bool:
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    return name in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


class SVI:
    """Stochastic variational inference.

    Options (Pyro's names): ``num_steps`` (3000), ``lr`` (0.01), ``optim`` ("adam",
    "clipped_adam" or a ``pyro.optim`` instance), ``lr_decay`` (1.0: the learning rate is
    multiplied by this over the whole run), ``num_particles`` (1), ``subsample_size`` (None: full
    batch; needs a model that takes a ``subsample_size`` keyword), ``guide`` ("normal",
    "diagonal", "mvn", "delta" or a callable), ``tol`` (1e-4: stop when five windows in a row fail
    to lower the window-averaged loss by this fraction; 0 or None runs every step), ``window`` (100), ``num_samples`` (1000
    posterior draws from the guide).
    """

    name = "svi"

    def supports(self, model: GenerativeModel, data: Any) -> str | None:
        roles = model.roles(data)
        if not roles.continuous_sites and not model.has_guide:
            return "it has no continuous latent sites for a variational guide (use 'enum' for all-discrete models)"
        return None

    def fit(self, model: GenerativeModel, data: Any, *, seed: int, progress: bool, **options: Any) -> Fit:
        defaults: dict[str, Any] = {
            "num_steps": 3000,
            "lr": 0.01,
            "optim": "adam",
            "lr_decay": 1.0,
            "num_particles": 1,
            "subsample_size": None,
            "guide": None,
            "tol": 1e-4,
            "window": 100,
            "num_samples": 1000,
        }
        unknown = set(options) - set(defaults)
        if unknown:
            raise ValueError(
                f"Unknown SVI option(s) {sorted(unknown)}; expected some of: {', '.join(sorted(defaults))}."
            )
        o = {**defaults, **options}
        for key in ("num_steps", "num_particles", "window", "num_samples"):
            if isinstance(o[key], bool) or not isinstance(o[key], int) or o[key] < 1:
                raise ValueError(f"{key} must be a positive int; got {o[key]!r}.")
        if not isinstance(o["lr"], int | float) or not o["lr"] > 0:
            raise ValueError(f"lr must be a positive number; got {o['lr']!r}.")
        if not isinstance(o["lr_decay"], int | float) or not 0 < o["lr_decay"] <= 1:
            raise ValueError(f"lr_decay must be in (0, 1]; got {o['lr_decay']!r}.")
        roles = model.roles(data)
        model_kwargs: dict[str, Any] = {}
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

        model_fn = config_enumerate(model.model, default="parallel") if roles.discrete_sites else model.model
        guide = self._guide(model, roles, o["guide"], model_fn)
        if roles.discrete_sites:
            elbo: Any = TraceEnum_ELBO(
                max_plate_nesting=roles.max_plate_nesting, num_particles=o["num_particles"]
            )
        else:
            elbo = Trace_ELBO(num_particles=o["num_particles"])
        optim = self._optim(o["optim"], o["lr"], o["lr_decay"], o["num_steps"])
        svi = PyroSVI(model_fn, guide, optim, loss=elbo)

        losses: list[float] = []
        converged = False
        window, tol, patience = o["window"], o["tol"], 5
        best, stale = math.inf, 0
        with tqdm(total=o["num_steps"], disable=not progress, desc="SVI", leave=False) as bar:
            for step in range(o["num_steps"]):
                loss = float(svi.step(data, **model_kwargs))
                if not math.isfinite(loss):
                    raise FloatingPointError(
                        f"SVI loss became {loss} at step {step}; lower lr (now {o['lr']}) or check the model."
                    )
                losses.append(loss)
                if isinstance(optim, pyro.optim.PyroLRScheduler):
                    optim.step()
                bar.update(1)
                if tol and (step + 1) % window == 0:
                    # Early stopping on the loss averaged over windows: converged when `patience`
                    # windows in a row fail to improve on the best by a fraction `tol`.
                    cur = float(np.mean(losses[-window:]))
                    bar.set_postfix(loss=f"{cur:.4g}")
                    if cur < best - tol * abs(best) or not math.isfinite(best):
                        best, stale = cur, 0
                    else:
                        stale += 1
                        if stale >= patience:
                            converged = True
                            break

        posterior = self._draws(model_fn, guide, data, roles, o["num_samples"], model_kwargs)
        params = {k: v.mean((0, 1)) for k, v in posterior.items() if k in roles.global_sites}
        return Fit(
            model=model,
            data=data,
            method=self.name,
            params=params,
            posterior=posterior,
            history=np.asarray(losses),
            converged=converged,
            extras={"guide": guide},
            seed=seed,
        )

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
        exposed = poutine.block(model_fn, expose=list(roles.continuous_sites))
        return _AUTOGUIDES[name](exposed)

    @staticmethod
    def _optim(optim: Any, lr: float, lr_decay: float, num_steps: int) -> Any:
        if isinstance(optim, pyro.optim.PyroOptim):
            return optim
        if optim not in _OPTIMS:
            raise ValueError(
                f"optim={optim!r} is not known; expected a pyro.optim instance or one of: {', '.join(_OPTIMS)}."
            )
        if lr_decay == 1.0:
            return _OPTIMS[optim]({"lr": lr})
        gamma = lr_decay ** (1.0 / num_steps)
        torch_optim = torch.optim.Adam
        return getattr(pyro.optim, "ExponentialLR")(  # noqa: B009
            {"optimizer": torch_optim, "optim_args": {"lr": lr}, "gamma": gamma}
        )

    @staticmethod
    def _draws(
        model_fn: Callable[..., Any],
        guide: Callable[..., Any],
        data: Any,
        roles: Any,
        num_samples: int,
        kwargs: dict[str, Any],
    ) -> dict[str, torch.Tensor]:
        sites = list(roles.continuous_sites)
        with torch.no_grad():
            try:
                pred = Predictive(guide, num_samples=num_samples, return_sites=sites, parallel=True)
                draws = pred(data, **kwargs)
            except (RuntimeError, ValueError, NotImplementedError):
                pred = Predictive(guide, num_samples=num_samples, return_sites=sites, parallel=False)
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
