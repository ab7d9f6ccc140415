"""Missing cells of mixture data: NaN read as missing at random.

``probgen.fit(model, X, method="em", missing="marginalize")`` prepares data with NaN kept as
the mark of a missing cell.  :class:`_Patterns` holds what every mixture needs of such a tensor,
computed once per tensor: which cells are observed, the data with missing cells set to zero or
to their column's observed mean, and the items grouped by missingness pattern, so that a family
computes per pattern (one batched operation over the pattern's items) and never per item.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

__all__: list[str] = []


@dataclass(frozen=True)
class _Group:
    """Items with the same number of observed cells: ``observed`` ``(m, q)`` and ``missing``
    ``(m, r)`` feature indices per item (ascending), and the rows ``items`` ``(m,)``.  ``shared``:
    every item has the same pattern (the complete rows), so blocks are computed once."""

    observed: Tensor
    missing: Tensor
    items: Tensor
    shared: bool


class _Patterns:
    """Observed cells and missingness patterns of one ``(n, d)`` tensor holding NaN.

    Attributes
    ----------
    observed : Tensor
        ``(n, d)`` bool, True where a cell holds a value.
    zero_filled : Tensor
        ``(n, d)`` float64, missing cells set to 0 (observed cells unchanged).
    mean_filled : Tensor
        ``(n, d)`` float64, missing cells set to their column's observed mean (0 for a column
        with no observed cell): the space of k-means starts.
    center : Tensor
        ``(d,)`` the columns' observed means.
    groups : list of _Group
        One per distinct pattern, complete rows included.
    """

    def __init__(self, data: Tensor) -> None:
        self.observed = ~torch.isnan(data)
        self.zero_filled = torch.where(self.observed, data, torch.zeros((), dtype=data.dtype))
        counts = self.observed.sum(0)
        self.center = self.zero_filled.sum(0) / counts.clamp_min(1)
        self.mean_filled = torch.where(self.observed, data, self.center)
        # items by number of observed cells: one batch each, whatever their patterns (a pattern
        # of its own per item is common with many features)
        seen = self.observed.sum(1)
        d = data.shape[1]
        columns = torch.arange(d).expand(data.shape[0], d)
        order = torch.argsort((~self.observed).to(torch.int8), dim=1, stable=True)  # observed first
        self.groups = []
        for q in torch.unique(seen).tolist():
            items = torch.nonzero(seen == q).flatten()
            ordered = columns[items].gather(1, order[items])
            self.groups.append(
                _Group(
                    observed=ordered[:, :q],
                    missing=ordered[:, q:],
                    items=items,
                    shared=q == d,
                )
            )


def _patterns_of(data: Tensor) -> _Patterns | None:
    """The patterns of ``data``, or None when it has no missing cell."""
    if not bool(torch.isnan(data).any()):
        return None
    return _Patterns(data)


def _check_finite_observed(t: Tensor, argname: str) -> None:
    """Refuse infinite values (NaN marks a missing cell and is allowed)."""
    inf = torch.isinf(t)
    if bool(inf.any()):
        raise ValueError(
            f"{argname} has {int(inf.sum())} infinite value(s); NaN marks a missing cell, but an "
            "infinite value is not a measurement: replace it (e.g. by NaN) before fitting."
        )


# ------------------------------------------------------------------ Gaussian components
@dataclass(frozen=True)
class _Block:
    """A group's items under every component: ``quad`` ``(m, K)`` squared Mahalanobis distances
    of the observed cells, ``log_det`` ``(m, K)`` half log-determinants of the observed blocks'
    covariances, and (when asked) the missing cells' conditional means ``(K, m, r)`` and
    covariances ``(K, m, r, r)`` given the observed ones."""

    quad: Tensor
    log_det: Tensor
    cond_mean: Tensor | None = None
    cond_cov: Tensor | None = None


def _gaussian_block(group: _Group, x: Tensor, locs: Tensor, cov: Tensor, conditionals: bool) -> _Block:
    """The Gaussian pieces of one group, batched over its items and the components: ``x``
    ``(n, d)`` zero-filled items, ``locs`` ``(K, d)``, ``cov`` ``(K, d, d)`` full covariances
    (any ``covariance_type`` expanded)."""
    k, m = locs.shape[0], len(group.items)
    o, mis = group.observed, group.missing  # (m, q), (m, r)
    if group.shared:  # one pattern: the blocks of the first item serve every item
        o, mis = o[:1], mis[:1]
    q, r = o.shape[1], mis.shape[1]
    if q == 0:  # nothing observed: the marginal of no cell is 1
        zeros = torch.zeros(m, k, dtype=x.dtype)
        if not conditionals:
            return _Block(zeros, zeros)
        cond_mean = locs[:, mis].expand(k, m, r)
        return _Block(zeros, zeros, cond_mean, cov[:, mis[:, :, None], mis[:, None, :]].expand(k, m, r, r))
    chol = torch.linalg.cholesky(cov[:, o[:, :, None], o[:, None, :]])  # (K, m or 1, q, q)
    xo = x[group.items[:, None], group.observed]  # (m, q)
    diff = xo[None] - locs[:, o]  # (K, m, q)
    white = torch.linalg.solve_triangular(chol, diff[..., None], upper=False)[..., 0]
    quad = (white * white).sum(-1).T
    log_det = torch.log(torch.diagonal(chol, dim1=-2, dim2=-1)).sum(-1).T.expand(m, k)
    if not conditionals or r == 0:
        return _Block(quad, log_det)
    cross = cov[:, o[:, :, None], mis[:, None, :]]  # (K, m or 1, q, r): Sigma_om
    gain = torch.cholesky_solve(cross, chol)  # Sigma_oo^-1 Sigma_om
    cond_mean = locs[:, mis] + (diff[:, :, None, :] @ gain)[:, :, 0, :]
    cond_cov = cov[:, mis[:, :, None], mis[:, None, :]] - cross.transpose(-1, -2) @ gain
    return _Block(quad, log_det, cond_mean, cond_cov.expand(k, m, r, r))


def _gaussian_log_joint(pats: _Patterns, locs: Tensor, cov: Tensor, log_weights: Tensor) -> Tensor:
    """``(n, K)`` ``log weights[k] + log N(x_io | locs[k]_o, Sigma[k]_oo)``: each item's observed
    cells under each component, the missing ones integrated out (one batch per group)."""
    n = pats.observed.shape[0]
    out = torch.empty(n, locs.shape[0], dtype=locs.dtype)
    for group in pats.groups:
        block = _gaussian_block(group, pats.zero_filled, locs, cov, conditionals=False)
        const = -0.5 * group.observed.shape[1] * math.log(2.0 * math.pi)
        out[group.items] = -0.5 * block.quad - block.log_det + const + log_weights
    return out


def _filled(group: _Group, pats: _Patterns, block: _Block) -> Tensor:
    """``(K, m, d)`` the group's items, centred on ``pats.center``, missing cells at their
    conditional means under each component."""
    assert block.cond_mean is not None
    xc = pats.zero_filled[group.items] - pats.center
    k = block.cond_mean.shape[0]
    filled = xc[None].repeat(k, 1, 1)
    mis = group.missing[None].expand(k, -1, -1)
    return filled.scatter_(2, mis, block.cond_mean - pats.center[group.missing])


def _gaussian_moments(
    pats: _Patterns, resp: Tensor, locs: Tensor | None, cov: Tensor | None
) -> tuple[Tensor, Tensor]:
    """Expected moments about ``pats.center``: ``(K, d)`` ``sum_i r_ik E[x_i - c | x_io, k]`` and
    ``(K, d, d)`` ``sum_i r_ik E[(x_i - c)(x_i - c)^T | x_io, k]`` (the conditional covariance of
    the missing block added).  Without ``locs``/``cov`` (the start) missing cells take their
    column's mean with no spread."""
    c = pats.center
    if locs is None or cov is None:
        xc = pats.mean_filled - c
        resp_t = resp.T
        return resp_t @ xc, (resp_t[:, :, None] * xc[None]).transpose(1, 2) @ xc
    k, d = locs.shape
    s1 = torch.zeros(k, d, dtype=locs.dtype)
    s2 = torch.zeros(k, d, d, dtype=locs.dtype)
    for group in pats.groups:
        r = resp[group.items].T  # (K, m)
        if group.missing.shape[1] == 0:
            xc = pats.zero_filled[group.items] - c
            s1 += r @ xc
            s2 += (r[:, :, None] * xc[None]).transpose(1, 2) @ xc
            continue
        block = _gaussian_block(group, pats.zero_filled, locs, cov, conditionals=True)
        assert block.cond_cov is not None
        filled = _filled(group, pats, block)  # (K, m, d)
        weighted = r[:, :, None] * filled
        s1 += weighted.sum(1)
        s2 += weighted.transpose(1, 2) @ filled
        # sum_i r_ik C_ik, each item's conditional covariance at its own missing cells
        mis = group.missing  # (m, rr)
        rows = mis[:, :, None].expand(-1, -1, mis.shape[1])
        cols = mis[:, None, :].expand(-1, mis.shape[1], -1)
        values = r[:, :, None, None] * block.cond_cov  # (K, m, rr, rr)
        comps = torch.arange(k)[:, None, None, None].expand(values.shape)
        s2.index_put_(
            (
                comps.reshape(-1),
                rows.expand(k, -1, -1, -1).reshape(-1),
                cols.expand(k, -1, -1, -1).reshape(-1),
            ),
            values.reshape(-1),
            accumulate=True,
        )
    return s1, s2


def _gaussian_fill(
    pats: _Patterns,
    locs: Tensor,
    cov: Tensor,
    resp: Tensor | None,
    z: Tensor | None,
    generator: torch.Generator | None,
) -> Tensor:
    """The items with missing cells filled: by their conditional mean given the observed cells
    (``resp``: ``(n, K)`` posterior weights of the components) or by a draw from the component
    ``z`` ``(n,)`` (conditional mean plus Cholesky-scaled noise)."""
    out = pats.zero_filled.clone()
    for group in pats.groups:
        rr = group.missing.shape[1]
        if rr == 0:
            continue
        block = _gaussian_block(group, pats.zero_filled, locs, cov, conditionals=True)
        assert block.cond_mean is not None and block.cond_cov is not None
        items = group.items
        rows = torch.arange(len(items))
        if z is None:
            assert resp is not None
            value = torch.einsum("mk,kmr->mr", resp[items], block.cond_mean)
        else:
            zi = z[items]
            chol = torch.linalg.cholesky(block.cond_cov[zi, rows])  # (m, r, r)
            eps = torch.randn(len(items), rr, generator=generator, dtype=locs.dtype)
            value = block.cond_mean[zi, rows] + (chol @ eps[:, :, None])[:, :, 0]
        out[items[:, None], group.missing] = value
    return out
