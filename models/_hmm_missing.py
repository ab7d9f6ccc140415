"""Missing cells of Gaussian HMM emissions: the observed block's density and the conditional moments.

With ``missing="marginalize"`` a step's missing features are integrated out of its emission
density: the observed features ``o`` of a state ``k`` are ``N(mu_o, Sigma_oo)``.  Steps are grouped
by their pattern of observed features (one batched Cholesky factorisation per pattern, never a
loop over steps); a step missing whole emits with probability one.  Baum-Welch then needs the
missing features' conditional mean ``mu_m + Sigma_mo Sigma_oo^-1 (x_o - mu_o)`` and covariance
``Sigma_mm - Sigma_mo Sigma_oo^-1 Sigma_om`` given each state (exact EM).
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
from torch import Tensor

__all__: list[str] = []

_F64 = torch.float64
_LOG_2PI = math.log(2 * math.pi)


def _patterns(observed: Tensor) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
    """Observed features, missing features and the rows of every pattern of ``observed`` ``(n, d)``."""
    pats, inverse = torch.unique(observed, dim=0, return_inverse=True)
    for p in range(pats.shape[0]):
        yield pats[p].nonzero()[:, 0], (~pats[p]).nonzero()[:, 0], (inverse == p).nonzero()[:, 0]


def _conditional(
    Xo: Tensor, locs: Tensor, cov: Tensor, o: Tensor, m: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """For steps sharing one pattern: log-densities ``(n, K)`` of their observed features ``Xo``
    ``(n, |o|)``, the missing features' conditional means ``(n, K, |m|)`` and covariances
    ``(K, |m|, |m|)`` given every state."""
    n, K = Xo.shape[0], locs.shape[0]
    S_mm = cov[:, m][:, :, m]
    if o.numel() == 0:
        return Xo.new_zeros((n, K)), locs[:, m].expand(n, K, m.numel()), S_mm
    chol = torch.linalg.cholesky(cov[:, o][:, :, o])  # (K, |o|, |o|)
    resid = (Xo[None, :, :] - locs[:, None, o]).transpose(1, 2)  # (K, |o|, n)
    z = torch.linalg.solve_triangular(chol, resid, upper=False)
    logdet = torch.log(torch.diagonal(chol, dim1=-2, dim2=-1)).sum(-1)
    log_e = (-0.5 * z.square().sum(1) - logdet[:, None] - 0.5 * o.numel() * _LOG_2PI).T
    if m.numel() == 0:
        return log_e, Xo.new_zeros((n, K, 0)), S_mm
    S_om = cov[:, o][:, :, m]  # (K, |o|, |m|)
    w = torch.linalg.solve_triangular(chol.transpose(-1, -2), z, upper=True)  # Sigma_oo^-1 (x_o - mu_o)
    means = (locs[:, m, None] + S_om.transpose(-1, -2) @ w).permute(2, 0, 1)  # (n, K, |m|)
    B = torch.linalg.solve_triangular(chol, S_om, upper=False)
    return log_e, means, S_mm - B.transpose(-1, -2) @ B


def gaussian_log_density(X: Tensor, observed: Tensor, locs: Tensor, cov: Tensor) -> Tensor:
    """Log-densities ``(n, K)`` of the observed features of steps ``X`` ``(n, d)`` under
    ``N(locs[k], cov[k])`` (``cov`` ``(K, d, d)``); zero for a step missing whole."""
    out = X.new_zeros((X.shape[0], locs.shape[0]))
    for o, m, rows in _patterns(observed):
        out[rows] = _conditional(X[rows][:, o], locs, cov, o, m)[0]
    return out


def gaussian_completed(
    X: Tensor, observed: Tensor, locs: Tensor, cov: Tensor
) -> tuple[Tensor, list[tuple[Tensor, Tensor, Tensor]]]:
    """Steps completed per state ``(n, K, d)`` (missing features at their conditional means)
    and, per pattern, its rows, missing features and conditional covariances ``(K, |m|, |m|)``."""
    n, K, d = X.shape[0], locs.shape[0], X.shape[1]
    full = X[:, None, :].expand(n, K, d).clone()
    extra = []
    for o, m, rows in _patterns(observed):
        if m.numel() == 0:
            continue
        _, means, C = _conditional(X[rows][:, o], locs, cov, o, m)
        full[rows[:, None], :, m[None, :]] = means.permute(0, 2, 1)
        extra.append((rows, m, C))
    return full, extra


def gaussian_moments(
    X: Tensor, observed: Tensor, G: Tensor, locs: Tensor, cov: Tensor
) -> tuple[Tensor, Tensor]:
    """Expected first ``(K, d)`` and second ``(K, d, d)`` moments about the origin of the
    complete steps under the state marginals ``G`` ``(n, K)``, the missing features given the
    observed ones in every state (exact EM)."""
    full, extra = gaussian_completed(X, observed, locs, cov)
    weighted = G[:, :, None] * full  # (n, K, d)
    first = weighted.sum(0)
    second = weighted.permute(1, 2, 0) @ full.transpose(0, 1)  # (K, d, d)
    for rows, m, C in extra:
        mass = G[rows].sum(0)  # (K,)
        second[:, m[:, None], m[None, :]] += mass[:, None, None] * C
    return first, second


def gaussian_draw(
    X: Tensor, observed: Tensor, states: Tensor, locs: Tensor, cov: Tensor, generator: torch.Generator
) -> Tensor:
    """Copies ``(S, n, d)`` of the steps ``X`` ``(n, d)``, every missing cell of copy ``s`` drawn
    from ``N(mean, C)`` of its state ``states[s, i]`` given the step's observed features: the
    conditional mean and covariance of :func:`gaussian_completed`, computed once for all copies
    (a diagonal covariance makes the missing features independent of the observed ones)."""
    full, extra = gaussian_completed(X, observed, locs, cov)  # (n, K, d)
    S, n = states.shape
    means = full.gather(1, states.T[:, :, None].expand(n, S, X.shape[1])).transpose(0, 1)  # (S, n, d)
    out = torch.where(observed, X, means)
    for rows, m, C in extra:
        chol = torch.linalg.cholesky(C)  # (K, |m|, |m|): one factor per state and pattern
        eps = torch.randn((S, rows.numel(), m.numel(), 1), generator=generator, dtype=X.dtype)
        noise = (chol[states[:, rows]] @ eps)[..., 0]  # (S, rows, |m|)
        out[:, rows[:, None], m[None, :]] += noise
    return out
