"""Draws of an HMM's missing cells: state paths from their exact posterior, then the cells.

``fit.impute(data, method="sample")`` completes every copy in two stages.  First a state path
per sequence from ``p(z | observed cells)`` by forward filtering, backward sampling: the
filters ``alpha_t(i) = p(z_t = i | x_0 .. x_t)`` come from the engine's parallel prefix
products of the step matrices (:func:`probgen.models._hmm_engine._prefix_products`, ``log2 T``
batched levels, no Python loop over steps), and the backward draws
``z_t ~ alpha_t(i) A[i, z_{t+1}]`` are composed the same way: with its uniform fixed, step
``t``'s draw is a map ``f_t`` from ``z_{t+1}`` to ``z_t``, maps compose associatively, and the
suffix compositions ``f_t o ... o f_{T-1}`` of all steps take ``log2 T`` levels of gathers.
Then every missing cell from its state's emission given the step's observed cells (each
emission's ``impute_sample``).  Padded steps emit with probability one: appending steps that
observe nothing leaves the posterior of the real steps unchanged, so the chain runs through the
padding and its padded states are simply not used.
"""

from __future__ import annotations

import torch
from torch import Tensor

from probgen.models._hmm_engine import _prefix_products

__all__: list[str] = []

_F64 = torch.float64


def _filters(log_e: Tensor, initial: Tensor, transition: Tensor) -> Tensor:
    """Filtered state probabilities ``(N, T, K)`` from emission log-densities ``(N, T, K)``.

    ``alpha_t`` is the first row of the product ``P_0 M_1 ... M_t`` (``P_0`` with every row
    ``pi * e_0``, ``M_t = A diag(e_t)``) up to a positive factor, normalised here.
    """
    N, T, K = log_e.shape
    # each step's densities divided by their largest: the filter is unchanged, nothing underflows
    e = (log_e - log_e.amax(-1, keepdim=True).clamp_min(-1e300)).exp()
    E = e.permute(2, 1, 0)  # (K, T, N)
    X = transition[:, :, None, None] * E[None]  # (K, K, T, N): A_ij e_t(j)
    X[:, :, 0] = (initial[:, None] * E[:, 0])[None]
    alpha = _prefix_products(X)[0].permute(2, 1, 0)  # (N, T, K)
    return alpha / alpha.sum(-1, keepdim=True)


def _inverse_cdf(probs: Tensor, u: Tensor) -> Tensor:
    """Index drawn from each row of ``probs`` ``(..., K)`` (not normalised) by uniforms ``u`` ``(...)``
    in (0, 1]: the first index whose cumulative share reaches ``u`` (never one of weight zero)."""
    cum = probs.cumsum(-1)
    cum = cum / cum[..., -1:]
    return (cum < u[..., None]).sum(-1).clamp_max(probs.shape[-1] - 1)


def sample_paths(
    log_e: Tensor, initial: Tensor, transition: Tensor, num_samples: int, generator: torch.Generator
) -> Tensor:
    """``(num_samples, N, T)`` state paths drawn from their posterior given the emissions.

    Parameters
    ----------
    log_e : Tensor
        ``(N, T, K)`` emission log-densities of every step (the missing cells marginalised;
        zero on padded steps and steps missing whole).
    initial, transition : Tensor
        ``(K,)`` and ``(K, K)`` probabilities of the chain.
    num_samples : int
        Paths drawn per sequence.
    generator : torch.Generator
        Source of every uniform used.

    Returns
    -------
    Tensor
        int64 states, independent draws of ``p(z_0 .. z_{T-1} | x)`` for every sequence.
    """
    N, T, K = log_e.shape
    alpha = _filters(log_e, initial, transition)  # (N, T, K)
    # one uniform per copy, sequence and step, in (0, 1] (rand gives [0, 1))
    u = 1.0 - torch.rand((num_samples, N, T), generator=generator, dtype=_F64)
    # f_t(j) = the draw of z_t given z_{t+1} = j, weights alpha_t(i) A[i, j] over i
    back = alpha[:, :-1, None, :] * transition.T[None, None]  # (N, T - 1, j, i)
    maps = torch.empty((num_samples, N, T, K), dtype=torch.long)
    maps[:, :, :-1] = _inverse_cdf(back[None], u[:, :, :-1, None].expand(-1, -1, -1, K))
    maps[:, :, -1] = _inverse_cdf(alpha[None, :, -1], u[:, :, -1])[..., None]  # constant: z_{T-1}
    # suffix compositions: after the level of span s, maps[t] = f_t o ... o f_{t+2s-1}
    s = 1
    while s < T:
        maps[:, :, :-s] = maps[:, :, :-s].gather(-1, maps[:, :, s:])
        s *= 2
    return maps[..., 0]  # every map is constant now: its value is z_t
