"""Per-item scores of models with continuous latents inside the data plate, those latents integrated out.

A model with a continuous latent per item (``z_i`` of probabilistic PCA or a VAE, ``theta_j`` of
eight schools) has two per-item log-likelihoods:

* the *conditional* ``log p(x_i | z_i, theta)`` at posterior draws of ``z_i``: defined for the
  training items only, and what ArviZ's LOO reads (``fit.pointwise_log_likelihood``,
  ``fit.to_arviz``);
* the *marginal* ``log p(x_i | theta) = log integral p(x_i, z_i | theta) dz_i``: defined for any item,
  comparable across models (it is what a mixture's or an HMM's score is), and what
  ``fit.log_prob`` returns by default.

The marginal has no closed form in general; it is estimated by importance sampling with ``K``
particles per item, ``log (1/K) sum_k p(x_i, z_ik | theta_k) / q(z_ik | x_i)`` (the importance
weighted bound of Burda et al. 2016: a lower bound in expectation that tightens as ``K`` grows).
The proposal ``q`` is the model's own guide when it amortises the latents (an encoder that maps
any item to its ``q(z_i | x_i)``), else the prior ``p(z_i | theta)``.  For posterior fits each
particle takes its own posterior draw of the global sites, so the estimate is of the posterior
predictive density ``mean_s p(x_i | theta_s)``.  The joint ``p(x_i, z_ik | theta)`` is Pyro's
enumerated trace contracted to the data plate (:func:`probgen.posterior.pointwise_log_likelihood`
with the local priors kept), so discrete latents beside ``z`` are summed out exactly.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pyro
import pyro.poutine as poutine
import torch
from torch import Tensor

from probgen.posterior import _model_with, enum_factors, pointwise_log_likelihood, traced_with
from probgen.state import isolated_rng

if TYPE_CHECKING:  # pragma: no cover
    from probgen.model import GenerativeModel

__all__ = ["MarginalScores", "marginal_log_likelihood"]

#: Particles evaluated together in one vectorised trace of the model.
_CHUNK = 64
#: What a guide that fails on the items may raise; the prior is then the proposal.
_GUIDE_ERRORS = (RuntimeError, ValueError, IndexError, TypeError, KeyError, AssertionError)


@dataclass(frozen=True)
class MarginalScores:
    """Importance-sampled per-item marginal log-likelihoods.

    Attributes
    ----------
    log_prob : Tensor
        ``(n_items,)`` estimates of ``log p(x_i | theta)`` (averaged over posterior draws of the
        global sites for posterior fits).
    se : Tensor
        ``(n_items,)`` Monte Carlo standard errors of ``log_prob`` (delta method on the mean of the
        importance weights).
    proposal : str
        ``"guide"`` (the model's amortised guide) or ``"prior"``.
    num_particles : int
        Particles per item.
    note : str
        Why the prior was the proposal (empty when the guide was).
    """

    log_prob: Tensor
    se: Tensor
    proposal: str
    num_particles: int
    note: str = ""


def _per_item(site: Mapping[str, Any], plate: str | None, n: int) -> Tensor:
    """A site's log-density summed to one value per item of ``plate``."""
    lp = site["fn"].log_prob(site["value"])
    frame = next((f for f in site["cond_indep_stack"] if f.vectorized and f.name == plate), None)
    if frame is None:
        raise ValueError(f"site {site['name']!r} is not inside the plate {plate!r}")
    d = frame.dim
    if lp.dim() < -d:
        lp = lp.reshape((1,) * (-d - lp.dim()) + tuple(lp.shape))
    lp = lp.movedim(d, 0)
    out = lp.reshape(lp.shape[0], -1).sum(1)
    if out.shape[0] != n:
        out = out.expand(n) if out.shape[0] == 1 else out
    return out


def _guide_trace(
    gm: GenerativeModel, data: Any, theta: Mapping[str, Tensor], guide_params: Mapping[str, Tensor]
) -> Any:
    """One trace of the model's guide on ``data`` with its global sites at ``theta``.

    Run in a param store of its own holding the fitted guide parameters, so the user's store is
    neither read nor written.  ``pyro.module`` networks use their own (trained) weights.
    """
    with pyro.get_param_store().scope():
        store = pyro.get_param_store()
        for name, value in guide_params.items():
            store[name] = value
        fn = poutine.condition(gm.guide, data=dict(theta)) if theta else gm.guide
        return poutine.trace(fn).get_trace(data)


def _guide_amortises(
    gm: GenerativeModel,
    data: Any,
    theta: Mapping[str, Tensor],
    fixed: Mapping[str, Tensor],
    guide_params: Mapping[str, Tensor],
) -> str:
    """Empty when the model's guide gives every local site for these items, else why not."""
    roles = gm.roles(data)
    if not gm.has_guide:
        return "the model has no guide of its own"
    n = gm.num_items(data)
    try:
        with isolated_rng(0), torch.no_grad():
            g = _guide_trace(gm, data, theta, guide_params)
        m = traced_with(gm, data, theta, fixed)
    except _GUIDE_ERRORS as e:
        return f"its guide does not run on these items ({type(e).__name__}: {str(e).splitlines()[0][:200]})"
    for name in roles.local_sites:
        site = g.nodes.get(name)
        if site is None or site["type"] != "sample":
            return f"its guide has no site {name!r}"
        if tuple(site["value"].shape) != tuple(m.nodes[name]["value"].shape):
            return (
                f"its guide's {name!r} has shape {tuple(site['value'].shape)} on these items, the model's "
                f"{tuple(m.nodes[name]['value'].shape)} (per-item parameters of other items?)"
            )
        if not any(
            f.vectorized and f.name == roles.data_plate and f.size == n for f in site["cond_indep_stack"]
        ):
            return f"its guide's {name!r} is not inside a plate {roles.data_plate!r} of {n} items"
    return ""


def _prior_independent_of_discrete(
    gm: GenerativeModel, data: Any, theta: Mapping[str, Tensor], fixed: Any
) -> bool:
    """Whether every local continuous site's prior is free of the enumerated discrete latents."""
    roles = gm.roles(data)
    if not roles.discrete_sites:
        return True
    one = {k: v[:1] for k, v in theta.items()}
    trace = traced_with(gm, data, {k: v[0] for k, v in one.items()}, fixed)
    local = {k: trace.nodes[k]["value"].unsqueeze(0) for k in roles.local_sites}
    f = enum_factors(gm, data, {**one, **local}, fixed, vectorized=False, keep_priors=roles.local_sites)
    for name in roles.local_sites:
        dims = set(getattr(f.trace.nodes[name]["packed"]["log_prob"], "_pyro_dims", ""))
        if dims & f.sum_dims:
            return False
    return True


def marginal_log_likelihood(
    gm: GenerativeModel,
    data: Any,
    draws: Mapping[str, Tensor] | None,
    fixed: Mapping[str, Tensor] | None = None,
    *,
    num_particles: int = 256,
    seed: int = 0,
    guide_params: Mapping[str, Tensor] | None = None,
) -> MarginalScores:
    """``log p(x_i | theta)`` per item with the local continuous latents integrated out.

    Parameters
    ----------
    gm : GenerativeModel
    data : object
        Prepared data (training or new items).
    draws : dict of str to Tensor or None
        Draws ``(S, ...)`` of the global sites (more may be given; local ones are ignored).
        Particle ``k`` uses draw ``k mod S`` (an evenly spaced subset when ``S > num_particles``).
    fixed : dict of str to Tensor, optional
        Values of the model's ``pyro.param`` sites.
    num_particles : int, default 256
        Importance samples per item.
    seed : int, default 0
        Seed of the particles (scores repeat); the user's random state is left as it was.
    guide_params : dict of str to Tensor, optional
        Fitted values of the guide's own ``pyro.param`` sites.
    """
    roles = gm.roles(data)
    local = roles.local_sites
    if not local:
        raise ValueError(f"{gm.name} has no continuous latent inside its data plate to integrate out.")
    fixed = dict(fixed or {})
    n = gm.num_items(data)
    K = int(num_particles)
    globals_ = {k: v for k, v in (draws or {}).items() if k in roles.global_sites}
    S = next(iter(globals_.values())).shape[0] if globals_ else 1
    which = (torch.arange(K) % S) if S <= K else torch.linspace(0, S - 1, K).round().long()
    theta_all = {k: v[which] for k, v in globals_.items()}
    guide_params = dict(guide_params or {})
    first = {k: v[0] for k, v in theta_all.items()}
    note = _guide_amortises(gm, data, first, fixed, guide_params)
    proposal = "prior" if note else "guide"
    if proposal == "prior" and not _prior_independent_of_discrete(gm, data, theta_all, fixed):
        raise ValueError(
            f"the prior of {list(local)} depends on a discrete latent that is summed out, so it cannot be "
            f"the importance proposal, and {note}. Give the model a guide that amortises {list(local)} "
            "(an encoder of each item), or score the training items with local='conditional'."
        )
    log_w: list[Tensor] = []
    with isolated_rng(seed), torch.no_grad():
        for start in range(0, K, _CHUNK):
            idx = range(start, min(K, start + _CHUNK))
            zs: dict[str, list[Tensor]] = {name: [] for name in local}
            log_q: list[Tensor] = []
            for k in idx:  # one proposal trace per particle: a guide need not vectorise
                theta = {name: v[k] for name, v in theta_all.items()}
                if proposal == "guide":
                    trace = _guide_trace(gm, data, theta, guide_params)
                else:  # drawn from the prior (traced_with would restore the random state each time)
                    with poutine.block():
                        trace = poutine.trace(_model_with(gm, theta, fixed)).get_trace(data)
                lq = torch.zeros(n, dtype=torch.float64)
                for name in local:
                    zs[name].append(trace.nodes[name]["value"])
                    lq = lq + _per_item(trace.nodes[name], roles.data_plate, n).double()
                log_q.append(lq)
            values = {
                **{k: v[list(idx)] for k, v in theta_all.items()},
                **{k: torch.stack(v) for k, v in zs.items()},
            }
            joint = pointwise_log_likelihood(gm, data, values, fixed, keep_priors=local).double()
            log_w.append(joint - torch.stack(log_q))
    lw = torch.cat(log_w)  # (K, n)
    if not bool(torch.isfinite(lw).any(0).all()):
        raise FloatingPointError(
            f"every importance weight of some item is zero or not finite under the {proposal} proposal; "
            "the model gives those items no density."
        )
    top = lw.max(0).values
    w = torch.exp(lw - top)
    mean = w.mean(0)
    est = top + torch.log(mean)
    se = w.std(0, unbiased=True) / (math.sqrt(K) * mean) if K > 1 else torch.full_like(mean, math.inf)
    return MarginalScores(est, se, proposal, K, note)
