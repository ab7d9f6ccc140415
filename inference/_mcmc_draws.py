"""What an MCMC run hands back besides its draws: typed sampler statistics and warm-up draws."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

__all__ = ["typed_stats", "warmup_groups"]


def typed_stats(stats: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Sampler statistics with ArviZ's types: ``diverging`` bool (ArviZ indexes draws with it),
    ``n_steps`` and ``tree_depth`` integers (the depth derived from the steps where missing, as
    ``arviz.from_numpyro`` derives it for every kernel: ``floor(log2(n_steps)) + 1``)."""
    stats["diverging"] = np.asarray(stats["diverging"]).astype(bool)
    if "n_steps" in stats and "tree_depth" not in stats:
        steps = np.maximum(np.asarray(stats["n_steps"], dtype=np.int64), 1)
        stats["tree_depth"] = np.floor(np.log2(steps)).astype(np.int64) + 1
    for key in ("tree_depth", "n_steps"):
        if key in stats:
            stats[key] = stats[key].astype(np.int64)
    return stats


def warmup_groups(pot: Any, extra: dict[str, Any]) -> dict[str, Any]:
    """``save_warmup``: the warm-up draws a batched run kept (``extra["warmup_draws"]``, ``(C, W,
    D)`` unconstrained), constrained by site like the draws kept, and their statistics; empty
    when the run kept none."""
    if "warmup_draws" not in extra:
        return {}
    warm: torch.Tensor = extra["warmup_draws"]
    values = pot.constrained(warm.reshape(-1, pot.dim))
    draws = {k: v.reshape(tuple(warm.shape[:2]) + tuple(v.shape[1:])).detach() for k, v in values.items()}
    return {"warmup_posterior": draws, "warmup_sample_stats": typed_stats(dict(extra["warmup_stats"]))}
