"""Label switching: finding exchangeable components and relabelling posterior draws.

A mixture's likelihood does not change when its components are permuted, so MCMC chains may
visit the same mode under different labels and every summary (means, R-hat) of the component
sites becomes meaningless.  ``find_exchangeable`` finds the sites that are permuted together
(the global sites indexed by an enumerated discrete latent, checked by permuting them and
comparing the log evidence), and ``relabel`` undoes the permutations draw by draw.  Written
here rather than taken from a library: ArviZ and Pyro have no relabelling.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor

from probgen.capabilities import AlignsPosterior, Exchangeable
from probgen.posterior import log_evidence, split_params, traced_with

if TYPE_CHECKING:  # pragma: no cover  (the model protocol stands on this module)
    from probgen.model import GenerativeModel

__all__ = ["align_posterior", "exchangeable_sites", "find_exchangeable", "relabel"]


def exchangeable_sites(gm: GenerativeModel, data: Any, params: Mapping[str, Tensor]) -> dict[str, int]:
    """Sites whose components may swap labels, with the component axis of each value.

    The family's own answer when it offers :class:`~probgen.capabilities.Exchangeable`, else
    :func:`find_exchangeable`: the global sites indexed by an enumerated discrete site, kept only
    when permuting them together leaves the likelihood unchanged at ``params``.
    """
    if isinstance(gm, Exchangeable):
        return gm.exchangeable_sites(data, params)
    return find_exchangeable(gm, data, params)


def align_posterior(
    gm: GenerativeModel,
    posterior: Mapping[str, Tensor],
    data: Any = None,
    params: Mapping[str, Tensor] | None = None,
) -> dict[str, Tensor]:
    """Relabel draws ``(chain, draw, ...)`` so that component ``k`` means one thing.

    The family's own relabelling when it offers :class:`~probgen.capabilities.AlignsPosterior`,
    else :func:`relabel` over :func:`exchangeable_sites` found at one posterior draw (``params``
    supplies the ``pyro.param`` values, if any).
    """
    if isinstance(gm, AlignsPosterior):
        return gm.align_posterior(posterior, data, params)
    if data is None or not posterior:
        return dict(posterior)
    one = {k: v[0, -1] for k, v in posterior.items()}
    axes = exchangeable_sites(gm, data, {**(params or {}), **one})
    return relabel(posterior, axes) if axes else dict(posterior)


def _support_size(site: Mapping[str, Any]) -> int | None:
    fn = site["fn"]
    try:
        support = fn.enumerate_support(expand=False)
    except NotImplementedError:
        return None
    return int(support.shape[0])


def find_exchangeable(
    gm: GenerativeModel, data: Any, params: Mapping[str, Tensor], *, any_axis: bool = False
) -> dict[str, int]:
    """Global sites whose components may swap labels, with the component axis of each.

    For every enumerated discrete site with ``K`` values, the candidates are the global sample
    sites with an axis of size ``K``; the largest set of candidates whose joint cyclic
    permutation leaves ``log p(data | params)`` unchanged is returned (``{}`` when none).
    ``any_axis=True`` tries every axis size of the global sites instead (models whose
    components are not indexed by a discrete latent, e.g. written with ``MixtureSameFamily``).
    """
    roles = gm.roles(data)
    if not roles.global_sites or not (roles.discrete_sites or any_axis):
        return {}
    values, fixed = split_params(gm, data, params)
    if set(values) != set(roles.continuous_sites):
        return {}
    trace = traced_with(gm, data, values, fixed)
    sizes = {k for k in (_support_size(trace.nodes[s]) for s in roles.discrete_sites) if k and k > 1}
    if any_axis:
        sizes |= {k for s in roles.global_sites for k in values[s].shape if k > 1}
    base = float(log_evidence(gm, data, values, fixed))
    if not math.isfinite(base):
        return {}
    tol = (1e-6 if values[roles.global_sites[0]].dtype == torch.float64 else 1e-4) * max(1.0, abs(base))
    for K in sorted(sizes, reverse=True):
        cands = {}
        for s in roles.global_sites:
            shape = tuple(values[s].shape)
            if K in shape:
                cands[s] = shape.index(K)
        if not cands:
            continue
        names = list(cands)
        for r in range(len(names), 0, -1):
            for subset in itertools.combinations(names, r):
                moved = dict(values)
                for s in subset:
                    moved[s] = torch.roll(values[s], 1, dims=cands[s])
                try:
                    moved_ll = float(log_evidence(gm, data, moved, fixed))
                except ValueError:  # the rolled value left its support (a matrix's rows): not exchangeable
                    continue
                if abs(moved_ll - base) <= tol:
                    simplex_last = sorted(subset, key=lambda s: _is_simplex(trace.nodes[s]))
                    return {s: cands[s] for s in simplex_last}
    return {}


def _is_simplex(site: Mapping[str, Any]) -> bool:
    support = site["fn"].support
    while hasattr(support, "base_constraint"):
        support = support.base_constraint
    return support is torch.distributions.constraints.simplex


def _hungarian(cost: np.ndarray) -> np.ndarray:
    rows, cols = linear_sum_assignment(cost)
    return cols[np.argsort(rows)]


def relabel(
    posterior: Mapping[str, Tensor],
    axes: Mapping[str, int],
    *,
    order_by: str | None = None,
    descending: bool = False,
    max_rounds: int = 20,
) -> dict[str, Tensor]:
    """Permute the components of every draw ``(chain, draw, ...)`` so labels agree across draws.

    Method: iterative relabelling to a pivot (Stephens 2000, "Dealing with label switching in
    mixture models").  The pivot starts as one draw; every draw is permuted by the Hungarian
    algorithm to minimise its squared distance to the pivot over all exchangeable sites (each
    standardised by its spread across draws); the pivot becomes the mean of the relabelled
    draws; repeat until no label changes.  Components are finally ordered by the posterior mean
    of the first element of ``order_by`` (default: the first site), ascending unless
    ``descending`` (mixtures order by decreasing weight).

    Parameters
    ----------
    posterior : dict of str to Tensor
        Draws with leading ``(chain, draw)`` dims.
    axes : dict of str to int
        Component axis of each exchangeable site, counted in the value (without the two
        leading dims).
    order_by : str, optional
        Site whose posterior mean orders the relabelled components.
    descending : bool, default False
    max_rounds : int, default 20
        Largest number of relabelling rounds.
    """
    sites = [s for s in axes if s in posterior]
    if not sites:
        return dict(posterior)
    first = posterior[sites[0]]
    chains, draws = first.shape[:2]
    k = first.shape[2 + axes[sites[0]]]
    S = chains * draws
    moved = {s: posterior[s].detach().movedim(2 + axes[s], 2) for s in sites}
    flat = {s: moved[s].to(torch.float64).reshape(S, k, -1) for s in sites}
    spread = {s: flat[s].std(dim=(0, 1)).clamp_min(1e-12) for s in sites}
    feats = torch.cat([flat[s] / spread[s] for s in sites], dim=-1)  # (S, K, F)
    perm = torch.arange(k).expand(S, k).clone()
    pivot = feats[draws - 1]  # the last draw of the first chain
    for _ in range(max_rounds):
        cost = ((feats[:, :, None, :] - pivot[None, None, :, :]) ** 2).sum(-1)  # (S, K_draw, K_pivot)
        cost_np = cost.transpose(1, 2).numpy()  # rows: pivot label, cols: draw component
        new = torch.as_tensor(np.stack([_hungarian(c) for c in cost_np]), dtype=torch.long)
        relabelled = torch.gather(feats, 1, new[:, :, None].expand_as(feats))
        pivot = relabelled.mean(0)
        if torch.equal(new, perm):
            break
        perm = new
    key = torch.gather(flat[order_by if order_by in flat else sites[0]][..., 0], 1, perm).mean(0)
    perm = perm[:, torch.argsort(key, descending=descending)]
    out = dict(posterior)
    for s in sites:
        v = moved[s]
        tail = tuple(v.shape[3:])
        vf = v.reshape((S, k) + tail)
        idx = perm.reshape((S, k) + (1,) * len(tail)).expand_as(vf)
        out[s] = torch.gather(vf, 1, idx).reshape(v.shape).movedim(2, 2 + axes[s])
    return out
