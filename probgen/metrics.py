"""Two-sample comparison of generated and held-out items: maximum mean discrepancy (MMD).

Works on any family's samples (``fit.sample(n)`` against held-out data), and is the way to score
models with no likelihood, such as GANs.  The kernel is Gaussian,
``k(a, b) = exp(-||a - b||^2 / (2 h^2))``; its bandwidth ``h`` is, unless given, the median
heuristic: the median Euclidean distance between distinct items of the pooled sample.
Computation is in float64; memory grows as ``(m + n)^2``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from probgen.model import as_tensor
from probgen.validation import positive_int

__all__ = ["MMDTestResult", "mmd", "mmd_test"]

#: Permutations scored together (one matrix product each batch).
_BATCH = 128


@dataclass(frozen=True)
class MMDTestResult:
    """Result of :func:`mmd_test`.

    Attributes
    ----------
    statistic : float
        The unbiased estimate of MMD^2 between the two samples (may be slightly negative).
    p_value : float
        Permutation p-value of "both samples come from one distribution", in ``(0, 1]``.
    bandwidth : float
        The Gaussian kernel's bandwidth ``h`` that was used.
    """

    statistic: float
    p_value: float
    bandwidth: float


def _sample(a: Any, argname: str) -> Tensor:
    t = as_tensor(a, argname, dtype=torch.float64)
    if t.dim() == 1:
        t = t.unsqueeze(-1)
    if t.dim() != 2:
        raise ValueError(f"{argname} must be 2-D (n_items, n_features) or 1-D; got shape {tuple(t.shape)}.")
    if len(t) < 2:
        raise ValueError(f"{argname} must have at least 2 items for the unbiased MMD; got {len(t)}.")
    return t


def _validate(x: Any, y: Any, bandwidth: Any) -> tuple[Tensor, Tensor, float | None]:
    xs, ys = _sample(x, "x"), _sample(y, "y")
    if xs.shape[1] != ys.shape[1]:
        raise ValueError(
            f"x and y must have the same number of features (columns); got {xs.shape[1]} and {ys.shape[1]}."
        )
    if bandwidth is not None:
        if isinstance(bandwidth, bool) or not isinstance(bandwidth, int | float | np.floating | np.integer):
            raise TypeError(f"bandwidth must be a positive number or None; got {type(bandwidth).__name__}.")
        if not 0 < float(bandwidth) < math.inf:
            raise ValueError(f"bandwidth must be a positive finite number or None; got {bandwidth!r}.")
        return xs, ys, float(bandwidth)
    return xs, ys, None


def _median_bandwidth(sq: Tensor) -> float:
    """Median distance between distinct items (pairs ``i < j``) from squared distances ``sq``."""
    i, j = torch.triu_indices(len(sq), len(sq), offset=1)
    d = sq[i, j].clamp_min(0).sqrt()
    h = float(d.median())
    if h > 0:
        return h
    positive = d[d > 0]
    return float(positive.median()) if positive.numel() else 1.0  # all items equal: any h gives 0


def _kernel(x: Tensor, y: Tensor, bandwidth: float | None) -> tuple[Tensor, float]:
    """Gaussian kernel matrix of the pooled sample ``[x; y]`` and the bandwidth used."""
    z = torch.cat([x, y])
    sq = torch.cdist(z, z).pow(2)
    h = _median_bandwidth(sq) if bandwidth is None else bandwidth
    return torch.exp(-sq / (2.0 * h * h)), h


def _statistic(k: Tensor, wx: Tensor, m: int, n: int) -> Tensor:
    """Unbiased MMD^2 for each row of ``wx`` (0/1 weights marking the ``m`` items of ``x``)."""
    k0 = k - torch.diag(torch.diagonal(k))  # the unbiased estimate leaves out i == j
    wy = 1.0 - wx
    kx = wx @ k0
    xx = (kx * wx).sum(-1)
    xy = (kx * wy).sum(-1)
    yy = ((wy @ k0) * wy).sum(-1)
    return xx / (m * (m - 1)) + yy / (n * (n - 1)) - 2.0 * xy / (m * n)


def mmd(x: Any, y: Any, *, bandwidth: float | None = None) -> float:
    """Unbiased estimate of the squared maximum mean discrepancy between two samples.

    ``MMD^2 = E k(x, x') + E k(y, y') - 2 E k(x, y)`` with a Gaussian kernel, estimated without
    the ``i == j`` terms (Gretton et al. 2012), so it is unbiased and may be slightly negative
    when both samples come from one distribution.  Smaller is closer.

    Parameters
    ----------
    x, y : array-like, shape (m, d) and (n, d)
        The two samples (numpy, torch, pandas, nested lists; 1-D means one feature), at least
        2 items each, the same number of features.
    bandwidth : float, optional
        Kernel bandwidth ``h``; default: the median distance between distinct items of the
        pooled sample.  Pass one fixed value to compare several models against one sample.

    Returns
    -------
    float

    Raises
    ------
    ValueError
        Empty, non-finite or too small samples, different feature counts, a bad bandwidth.
    TypeError
        Non-numeric samples or bandwidth.

    Examples
    --------
    >>> import numpy as np
    >>> from probgen.metrics import mmd
    >>> rng = np.random.default_rng(0)
    >>> a, b = rng.normal(size=(200, 2)), rng.normal(size=(200, 2))
    >>> abs(mmd(a, b)) < 0.02, mmd(a, b + 3.0) > 0.5
    (True, True)
    """
    xs, ys, h = _validate(x, y, bandwidth)
    k, _ = _kernel(xs, ys, h)
    m, n = len(xs), len(ys)
    wx = torch.cat([torch.ones(m, dtype=k.dtype), torch.zeros(n, dtype=k.dtype)])
    return float(_statistic(k, wx.unsqueeze(0), m, n)[0])


def mmd_test(
    x: Any, y: Any, *, bandwidth: float | None = None, num_permutations: int = 500, seed: int = 0
) -> MMDTestResult:
    """Permutation test of "``x`` and ``y`` come from one distribution", by the unbiased MMD^2.

    The pooled items are relabelled at random ``num_permutations`` times (in batches, one matrix
    product each); the p-value is ``(1 + #{permuted statistic >= observed}) / (1 +
    num_permutations)``, valid at every sample size.  The bandwidth (median heuristic unless
    given) is chosen once from the pooled sample, which the permutations leave unchanged.

    Parameters
    ----------
    x, y : array-like, shape (m, d) and (n, d)
        The two samples, as for :func:`mmd`.
    bandwidth : float, optional
        Kernel bandwidth (default: median heuristic on the pooled sample).
    num_permutations : int, default 500
        Random relabellings; the smallest possible p-value is ``1 / (1 + num_permutations)``.
    seed : int, default 0
        Seed of the permutations (the global random state is not touched).

    Returns
    -------
    MMDTestResult
        ``statistic`` (as :func:`mmd`), ``p_value``, ``bandwidth``.

    Examples
    --------
    >>> import numpy as np
    >>> from probgen.metrics import mmd_test
    >>> rng = np.random.default_rng(0)
    >>> result = mmd_test(rng.normal(size=(100, 2)), rng.normal(size=(100, 2)) + 1.0)
    >>> result.p_value < 0.01
    True
    """
    positive_int(num_permutations, "num_permutations", type_error=True)
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer):
        raise TypeError(f"seed must be an int; got {type(seed).__name__}.")
    xs, ys, h = _validate(x, y, bandwidth)
    k, used = _kernel(xs, ys, h)
    m, n = len(xs), len(ys)
    total = m + n
    observed = _statistic(k, torch.cat([torch.ones(m), torch.zeros(n)]).to(k).unsqueeze(0), m, n)[0]
    gen = torch.Generator().manual_seed(int(seed))
    exceed = 0
    for start in range(0, int(num_permutations), _BATCH):
        b = min(_BATCH, int(num_permutations) - start)
        order = torch.argsort(torch.rand(b, total, generator=gen), dim=-1)
        wx = torch.zeros(b, total, dtype=k.dtype).scatter_(1, order[:, :m], 1.0)
        # a relative margin keeps ties (the identity relabelling) counted despite rounding
        exceed += int((_statistic(k, wx, m, n) >= observed - 1e-12 * max(1.0, abs(float(observed)))).sum())
    p = (1 + exceed) / (1 + int(num_permutations))
    return MMDTestResult(statistic=float(observed), p_value=float(p), bandwidth=float(used))
