"""k-means for starting values: k-means++ seeding and Lloyd's iterations, vectorised, float64.

Shared by the mixtures (whose ``init="kmeans"`` reproduces scikit-learn's start) and the hidden
Markov models (state means from k-means over every time step).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

__all__: list[str] = []

_NUMPY_MAX = 50_000  # data of at most this many numbers run Lloyd's iterations in NumPy


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
    scale = float(x.var(0, unbiased=False).mean()) * tol
    if x.numel() <= _NUMPY_MAX and x.device.type == "cpu":
        centers = torch.from_numpy(_lloyd_numpy(x.numpy(), centers.numpy(), max_iter, scale))
        max_iter = 0
    x_sq: Tensor | None = None
    for _ in range(max_iter):
        # |x|^2 is the same for every center: the nearest center needs |c|^2 - 2 x.c only (few
        # operations per iteration matter on small data, where each costs more than its arithmetic)
        d2 = torch.addmm((centers * centers).sum(1), x, centers.T, alpha=-2.0)
        d2min, labels = d2.min(1)
        counts = torch.bincount(labels, minlength=k).to(x.dtype)
        new = torch.zeros_like(centers).index_add_(0, labels, x).div_(counts.clamp_min(1.0)[:, None])
        if int(counts.min()) == 0:  # move emptied clusters to the farthest items
            empty = counts == 0
            if x_sq is None:
                x_sq = (x * x).sum(1)
            far = torch.argsort(d2min + x_sq, descending=True)[: int(empty.sum())]
            new[empty] = x[far]
        shift = float(torch.sub(new, centers).square_().sum())
        centers = new
        if shift <= scale:
            break
    x = full
    d2 = (x * x).sum(1)[:, None] - 2.0 * x @ centers.T + (centers * centers).sum(1)[None, :]
    labels = d2.argmin(1)
    return labels, centers


def _lloyd_numpy(x: np.ndarray, centers: np.ndarray, max_iter: int, scale: float) -> np.ndarray:
    """The Lloyd iterations of :func:`_kmeans` in NumPy, for small data (``n d <= _NUMPY_MAX``).

    The same steps; written a second time because on a few hundred items each iteration is a
    dozen operations on tiny arrays, where NumPy's per-operation cost is a third of PyTorch's.
    """
    k = centers.shape[0]
    for _ in range(max_iter):
        d2 = (centers * centers).sum(1) - 2.0 * (x @ centers.T)  # |x|^2 is the same for every center
        labels = d2.argmin(1)
        counts = np.bincount(labels, minlength=k).astype(x.dtype)
        onehot = (labels[:, None] == np.arange(k)).astype(x.dtype)
        new = (onehot.T @ x) / np.maximum(counts, 1.0)[:, None]
        if counts.min() == 0:  # move emptied clusters to the farthest items
            far = np.argsort(-(d2.min(1) + (x * x).sum(1)), kind="stable")[: int((counts == 0).sum())]
            new[counts == 0] = x[far]
        shift = float(((new - centers) ** 2).sum())
        centers = new
        if shift <= scale:
            break
    return centers


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
