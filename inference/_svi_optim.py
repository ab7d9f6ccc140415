"""The optimisers of SVI: by name, with a decay, a schedule and clipping, or a ``pyro.optim`` instance."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pyro
import pyro.optim
import torch
from pyro.optim.clipped_adam import ClippedAdam as ClippedAdamOptimizer

__all__ = ["build_optim", "scheduled"]

#: name -> (pyro.optim wrapper, torch optimiser class, the optimiser's own per-step lr decay argument)
OPTIMS: dict[str, tuple[Any, Any, str | None]] = {
    "adam": (pyro.optim.Adam, torch.optim.Adam, None),  # type: ignore[attr-defined]
    "clipped_adam": (pyro.optim.ClippedAdam, ClippedAdamOptimizer, "lrd"),
}


def scheduled(
    lr_schedule: Callable[[int, int], float], lr_decay: float, num_steps: int
) -> Callable[[int], float]:
    """The learning-rate factor of step ``s``: ``lr_schedule(s, num_steps) * lr_decay ** (s / num_steps)``."""
    return lambda s: float(lr_schedule(s, num_steps)) * lr_decay ** (s / num_steps)


def build_optim(
    optim: Any,
    lr: float,
    lr_decay: float,
    num_steps: int,
    lr_schedule: Callable[[int, int], float] | None = None,
    clip_norm: float | None = None,
) -> Any:
    """The optimiser of an SVI run: a ``pyro.optim`` instance as given (refusing a schedule or
    clipping beside it, which it carries itself), or the one named in ``OPTIMS`` with ``lr``,
    its decay over ``num_steps``, an ``lr_schedule`` and per-tensor ``clip_norm``."""
    if isinstance(optim, pyro.optim.PyroOptim | pyro.optim.PyroLRScheduler):
        given = {
            "lr_decay": lr_decay if lr_decay != 1.0 else None,
            "lr_schedule": lr_schedule,
            "clip_norm": clip_norm,
        }
        for name, value in given.items():
            if value is not None:
                raise ValueError(
                    f"{name}={value} applies to an optimiser chosen by name ({', '.join(OPTIMS)}); a "
                    "pyro.optim instance carries its own schedule (e.g. pyro.optim.ExponentialLR)."
                )
        return optim
    if optim not in OPTIMS:
        raise ValueError(
            f"optim={optim!r} is not known; expected a pyro.optim instance or one of: {', '.join(OPTIMS)}."
        )
    wrapper, torch_optim, decay_arg = OPTIMS[optim]
    # Pyro clips each parameter tensor on its own
    clip: dict[str, Any] = {} if clip_norm is None else {"clip_args": {"clip_norm": clip_norm}}
    if lr_schedule is not None:
        return getattr(pyro.optim, "LambdaLR")(  # noqa: B009
            {
                "optimizer": torch_optim,
                "optim_args": {"lr": lr},
                "lr_lambda": scheduled(lr_schedule, lr_decay, num_steps),
            },
            **clip,
        )
    if lr_decay == 1.0:
        return wrapper({"lr": lr}, **clip)
    factor = lr_decay ** (1.0 / num_steps)  # per step, so the whole run multiplies lr by lr_decay
    if decay_arg is not None:
        return wrapper({"lr": lr, decay_arg: factor}, **clip)
    return getattr(pyro.optim, "ExponentialLR")(  # noqa: B009
        {"optimizer": torch_optim, "optim_args": {"lr": lr}, "gamma": factor}, **clip
    )
