"""Point summaries of posterior draws that lie in each site's support.

``fit.params`` of a posterior fit (MCMC, SVI) is the posterior mean of every site, and tools that
evaluate the model "at the parameters" trace it there.  The element-wise mean is kept wherever it
is a valid value of the site (real, positive, interval, simplex, ...: every convex support, up to
rounding).  Where it is not, the summary is taken where the mean is well defined:

- ``simplex``: the mean is on the simplex up to rounding, so it is projected back (clamped at zero
  and renormalised), the usual convention for averaged probability vectors;
- any other support whose check fails on the mean (the Cholesky factor of a correlation matrix,
  ``corr_cholesky``, is the common case: rows of unit norm do not average to rows of unit norm;
  also ``lower_cholesky``, ``positive_definite``, ``corr_matrix`` after rounding): the mean in
  the unconstrained space, ``t(mean_s t^{-1}(x_s))`` with ``t = biject_to(support)``, the same
  space in which NUTS and the autoguides work.

A support with tensor parameters (``interval(low, high)`` where the bounds may be other sites)
may differ from draw to draw; the element-wise mean is then kept (for bounds linear in the sites
it lies between the mean bounds).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor
from torch.distributions import biject_to, constraints

from probgen.posterior import traced_with
from probgen.roles import memo, sample_sites, shape_key

if TYPE_CHECKING:  # pragma: no cover  (the model protocol stands on this module)
    from probgen.model import GenerativeModel

__all__ = ["constrained_mean", "inside", "posterior_means", "site_supports", "unconstrained_mean"]


def _base(support: constraints.Constraint) -> constraints.Constraint:
    while isinstance(support, constraints.independent):
        support = support.base_constraint
    return support


def _fixed_support(support: constraints.Constraint) -> bool:
    """Whether ``support`` is the same for every draw (no tensor parameters such as bounds)."""
    base = _base(support)
    return not constraints.is_dependent(base) and not any(isinstance(v, Tensor) for v in vars(base).values())


def inside(support: constraints.Constraint, value: Tensor) -> bool:
    """Whether every element of ``value`` is finite and lies in ``support``."""
    if constraints.is_dependent(_base(support)):
        return bool(torch.isfinite(value).all())
    return bool(torch.isfinite(value).all()) and bool(support.check(value).all())


def unconstrained_mean(draws: Tensor, support: constraints.Constraint, sample_dims: int = 2) -> Tensor:
    """Mean of ``draws`` taken in the unconstrained space of ``support``, mapped back into it.

    Parameters
    ----------
    draws : Tensor
        Values in ``support`` with ``sample_dims`` leading sample dimensions, e.g.
        ``(chain, draw, ...)``.
    support : torch.distributions.constraints.Constraint
        The site's support; ``biject_to(support)`` is the map from the unconstrained space.
    sample_dims : int, default 2
        Number of leading dimensions averaged over.

    Returns
    -------
    Tensor
        ``t(mean_s t^{-1}(draws_s))`` with ``t = biject_to(support)``; shape ``draws.shape[sample_dims:]``.

    Examples
    --------
    >>> import torch
    >>> from torch.distributions import constraints
    >>> x = torch.tensor([[1.0], [4.0]])
    >>> unconstrained_mean(x, constraints.positive, sample_dims=1)  # geometric mean
    tensor([2.])
    """
    t = biject_to(support)
    return t(t.inv(draws).mean(tuple(range(sample_dims))))


def constrained_mean(draws: Tensor, support: constraints.Constraint, sample_dims: int = 2) -> Tensor:
    """Posterior mean of ``draws`` when it lies in ``support``, else a summary that does.

    The element-wise mean is returned when ``support`` holds it; a simplex mean off the simplex
    by rounding is renormalised; otherwise the mean in the unconstrained space
    (:func:`unconstrained_mean`).  A support with tensor parameters (bounds that may be other
    sites) keeps the element-wise mean.

    Parameters
    ----------
    draws : Tensor
        Values in ``support`` with ``sample_dims`` leading sample dimensions.
    support : torch.distributions.constraints.Constraint
        The site's support.
    sample_dims : int, default 2
        Number of leading dimensions averaged over, ``(chain, draw)`` by default.

    Returns
    -------
    Tensor
        Shape ``draws.shape[sample_dims:]``.
    """
    mean = draws.mean(tuple(range(sample_dims)))
    if not _fixed_support(support) or inside(support, mean):
        return mean
    if _base(support) is constraints.simplex:
        clamped = mean.clamp_min(0.0)
        return clamped / clamped.sum(-1, keepdim=True)
    summary = unconstrained_mean(draws, support, sample_dims)
    return summary if bool(torch.isfinite(summary).all()) else mean


def site_supports(
    gm: GenerativeModel, data: Any, fixed: Mapping[str, Tensor] | None = None
) -> dict[str, constraints.Constraint]:
    """Support of every sample site of the model on ``data``, traced once per data shape.

    The latents of that one trace are drawn from the prior (the user's random state is left as
    it was); ``fixed`` gives ``pyro.param`` values the model reads.  A support with tensor
    parameters is read at those draws: :func:`constrained_mean` keeps the element-wise mean
    there.
    """

    def trace() -> dict[str, constraints.Constraint]:
        nodes = sample_sites(traced_with(gm, data, None, fixed))
        return {site["name"]: site["fn"].support for site in nodes}

    result: dict[str, constraints.Constraint] = memo(
        gm, ("supports", shape_key(data), torch.get_default_dtype()), trace
    )
    return result


def posterior_means(
    gm: GenerativeModel,
    data: Any,
    posterior: Mapping[str, Tensor],
    sites: Sequence[str] | None = None,
    fixed: Mapping[str, Tensor] | None = None,
    supports: Mapping[str, constraints.Constraint] | None = None,
) -> dict[str, Tensor]:
    """Point summaries of posterior draws ``(chain, draw, ...)``, each in its site's support.

    The posterior mean of every site where it is a valid value (the usual case), else the
    summary :func:`constrained_mean` gives.  The supports are those of :func:`site_supports`.

    Parameters
    ----------
    gm : GenerativeModel
        The fitted model.
    data : Any
        Prepared data the model is traced on.
    posterior : dict of str to Tensor
        Draws with leading ``(chain, draw)`` dimensions.
    sites : sequence of str, optional
        Sites to summarise (default: every site of ``posterior``).
    fixed : dict of str to Tensor, optional
        ``pyro.param`` values the model reads.
    supports : dict of str to Constraint, optional
        The sites' supports when already known (default: :func:`site_supports`).

    Returns
    -------
    dict of str to Tensor
        Site name -> summary, shape of one draw.
    """
    names = [k for k in (posterior if sites is None else sites) if k in posterior]
    if not names:
        return {}
    means = {k: posterior[k].mean((0, 1)) for k in names}
    if supports is None:
        supports = site_supports(gm, data, fixed)
    for k in names:
        if k in supports and not inside(supports[k], means[k]):
            means[k] = constrained_mean(posterior[k], supports[k])
    return means
