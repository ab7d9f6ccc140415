"""k-means for starting values: k-means++ seeding and Lloyd's iterations, vectorised, float64.

Shared by the mixtures (whose ``init="kmeans"`` reproduces scikit-learn's start) and the hidden
Markov models (state means from k-means over every time step).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__: list[str] = []


def _kmeans(
    x: Tensor,
    k: int,
    generator: torch.Generator,
    *,
    max_iter: int = 300,
    tol: float = 1e-4,
    max_points: int | None = None,
) -> tuple[Tensor, Tensor]:
    """Lloyd's k-means with k-means++ seeding; returns ``(labels, centers)``.

    Vectorised over items and centers.  ``tol`` is relative to the mean per-feature variance,
    as in scikit-learn; a cluster that empties is moved to the farthest item.

    Parameters
    ----------
    x : Tensor
        ``(n, d)`` float64 points, ``n >= k``.
    k : int
        Number of clusters.
    generator : torch.Generator
        Source of randomness (seeding, and the subsample when ``max_points`` applies).
    max_iter : int, default 300
        Largest number of Lloyd iterations.
    tol : float, default 1e-4
        Stop when the squared shift of the centers is below ``tol`` times the mean variance.
    max_points : int, optional
        Run on a random subsample of at most this many points (long sequences); the returned
        labels still cover every point.

    Returns
    -------
    labels : Tensor
        ``(n,)`` int64 nearest center of every point.
    centers : Tensor
        ``(k, d)`` centers.
    """
    full = x
    if max_points is not None and x.shape[0] > max_points:
        x = x[torch.randperm(x.shape[0], generator=generator)[:max_points]]
    centers = x[_kmeanspp_indices(x, k, generator)].clone()
    x_sq = (x * x).sum(1)
    scale = float(x.var(0, unbiased=False).mean()) * tol
    labels = torch.zeros(len(x), dtype=torch.long)
    for _ in range(max_iter):
        d2 = (x_sq[:, None] - 2.0 * x @ centers.T + (centers * centers).sum(1)[None, :]).clamp_min_(0.0)
        d2min, labels = d2.min(1)
        counts = torch.bincount(labels, minlength=k).to(x.dtype)
        sums = torch.zeros_like(centers).index_add_(0, labels, x)
        new = sums / counts.clamp_min(1.0)[:, None]
        empty = counts == 0
        if empty.any():
            far = torch.argsort(d2min, descending=True)[: int(empty.sum())]
            new[empty] = x[far]
        shift = float(((new - centers) ** 2).sum())
        centers = new
        if shift <= scale:
            break
    x = full
    d2 = (x * x).sum(1)[:, None] - 2.0 * x @ centers.T + (centers * centers).sum(1)[None, :]
    labels = d2.argmin(1)
    return labels, centers


def _kmeanspp_indices(x: Tensor, k: int, generator: torch.Generator) -> Tensor:
    """Greedy k-means++ seeding (``2 + log k`` candidates per step); item indices ``(k,)``."""
    n = len(x)
    trials = 2 + int(math.log(k))
    first = int(torch.randint(n, (1,), generator=generator))
    idx = [first]
    x_sq = (x * x).sum(1)
    closest = (x_sq - 2.0 * x @ x[first] + x_sq[first]).clamp_min_(0.0)
    for _ in range(1, k):
        total = float(closest.sum())
        if total <= 0.0:  # every item already coincides with a center
            cand = torch.randint(n, (trials,), generator=generator)
        else:
            cand = torch.multinomial(closest, trials, replacement=True, generator=generator)
        d2 = (x_sq[None, :] - 2.0 * x[cand] @ x.T + x_sq[cand][:, None]).clamp_min_(0.0)
        pot = torch.minimum(closest[None, :], d2)
        best = int(pot.sum(1).argmin())
        closest = pot[best]
        idx.append(int(cand[best]))
    return torch.tensor(idx, dtype=torch.long)
