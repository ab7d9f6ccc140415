"""Posterior tools written once for every backend and every model.

* pointwise log-likelihood with enumerated discrete latents summed out (for ArviZ LOO/WAIC);
* exact posterior marginals of discrete sites and the joint MAP assignment;
* posterior predictive replicates and new data from the fitted model.

Pyro computes a total log evidence by tensor variable elimination (``TraceEnum_ELBO``) but has
no public call that stops the contraction at the data plate, which is what a *pointwise*
log-likelihood needs; nor one that returns the marginals of every factor at once.  Both are
built here on ``pyro.ops.contract.contract_to_tensor``: the enumerated trace's packed log-prob
terms are contracted down to the data plate's ordinal, and the marginals are the gradients of
the log evidence with respect to each log-factor (the classic identity
``d log Z / d log f = p(scope of f | data)``).

Draws of the continuous sites are evaluated together under an outer plate when the model
broadcasts over it, and one at a time, with no extra plate, when it does not (``locs[z]``,
``X @ beta``, ``to_event`` sites in plates).  Which path a model takes is decided once per model
and data shape by a check that cannot hide a shape bug: the vectorised result for two draws
must equal the one-at-a-time result for each.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pyro
import pyro.poutine as poutine
import torch
from pyro.infer import config_enumerate, infer_discrete
from pyro.ops import packed
from pyro.ops.contract import contract_to_tensor
from pyro.ops.rings import LogRing
from pyro.poutine.util import site_is_subsample
from torch import Tensor

from probgen.roles import memo, sample_sites, shape_key
from probgen.state import isolated_rng

if TYPE_CHECKING:  # pragma: no cover  (the model protocol stands on this module)
    from probgen.model import GenerativeModel

__all__ = [
    "EnumFactors",
    "discrete_map",
    "discrete_marginals",
    "enum_factors",
    "generate",
    "log_evidence",
    "pointwise_log_likelihood",
    "pointwise_log_likelihood_draws",
    "posterior_predictive",
    "sample_discrete",
    "total_log_likelihood",
    "split_params",
    "traced_with",
]

_DRAWS_PLATE = "_pg_draws"


def split_params(
    gm: GenerativeModel, data: Any, params: Mapping[str, Tensor] | None
) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """Split ``params`` into continuous sample-site values and ``pyro.param`` values."""
    roles = gm.roles(data)
    params = params or {}
    draws = {k: v for k, v in params.items() if k in roles.continuous_sites}
    fixed = {k: v for k, v in params.items() if k in roles.param_sites}
    return draws, fixed


def _model_with(
    gm: GenerativeModel,
    values: Mapping[str, Tensor] | None,
    fixed: Mapping[str, Tensor] | None,
    model_fn: Callable[..., Any] | None = None,
) -> Callable[..., Any]:
    """The model with sample sites conditioned on ``values`` and ``pyro.param`` sites fixed."""
    fn = model_fn or gm.model
    if values:
        fn = poutine.condition(fn, data=dict(values))
    # substitute answers pyro.param from these values without touching the param store; the
    # parameters of a pyro.module network (named "<module>$$$<param>") are read from the network
    # itself, which substitute does not reach (Pyro warns of every such name it misses)
    plain = {k: v for k, v in (fixed or {}).items() if "$$$" not in k}
    if plain:
        fn = poutine.substitute(fn, data=plain)
    return fn


def traced_with(
    gm: GenerativeModel,
    data: Any,
    values: Mapping[str, Tensor] | None,
    fixed: Mapping[str, Tensor] | None = None,
) -> Any:
    """One trace of the model on ``data`` at the given site values (no enumeration).

    Latents left free are drawn; the user's random state is restored afterwards.
    """
    with isolated_rng(None), poutine.block(), torch.no_grad():
        return poutine.trace(_model_with(gm, values, fixed)).get_trace(data)


@dataclass
class EnumFactors:
    """The packed log-factors of one enumerated trace of a model, ready to contract.

    ``tree`` maps plate ordinals to packed log-prob tensors of the observed and discrete sites
    (the likelihood part; priors of conditioned continuous sites are left out); ``sites`` names
    them in the tree's order.  ``items`` gives each site's item when the data plate is
    sequential (``for i in pyro.plate(...)``): items then share no enumerated latent and each
    is contracted alone.
    """

    trace: Any
    tree: OrderedDict[frozenset[str], list[Tensor]]
    sites: list[str]
    sum_dims: set[str]
    data_symbol: str | None
    draws_symbol: str | None
    dim_to_size: dict[str, int]
    outer_symbols: dict[str, str]  # outer discrete site -> its enumeration symbol
    items: dict[str, int] = field(default_factory=dict)  # site -> item of a sequential data plate

    def contract(
        self, tree: OrderedDict[frozenset[str], list[Tensor]] | None = None, *, pointwise: bool = True
    ) -> Tensor:
        """Sum out the discrete latents; pointwise keeps the draws and data plates.

        Pointwise with a discrete latent outside the data plate gives each item its posterior
        predictive log density ``log sum_u p(u | data) p(x_i | u)``; the total (not pointwise)
        contraction is the exact log evidence either way.
        """
        tree = self.tree if tree is None else tree
        if not any(tree.values()):
            return torch.zeros(())
        ring = LogRing(dim_to_size=self.dim_to_size)
        if pointwise and self.items:
            return self._contract_items(tree)
        if pointwise and self.outer_symbols and self.data_symbol is not None:
            return self._contract_outer(tree, ring)
        target = frozenset(s for s in (self.draws_symbol, self.data_symbol if pointwise else None) if s)
        result = contract_to_tensor(tree, set(self.sum_dims), target_ordinal=target, ring=ring)
        return packed.unpack(result, self.trace.symbol_to_dim)

    def _contract_outer(self, tree: OrderedDict[frozenset[str], list[Tensor]], ring: LogRing) -> Tensor:
        outer_syms = set(self.outer_symbols.values())
        outer_terms = {id(self.trace.nodes[s]["packed"]["log_prob"]) for s in self.outer_symbols}
        prior: OrderedDict[frozenset[str], list[Tensor]] = OrderedDict()
        rest: OrderedDict[frozenset[str], list[Tensor]] = OrderedDict()
        for ordinal, terms in tree.items():
            for t in terms:
                (prior if id(t) in outer_terms else rest).setdefault(ordinal, []).append(t)
        draws = frozenset(s for s in (self.draws_symbol,) if s)
        keep = set(self.sum_dims) - outer_syms
        # log p(x_i | u), local latents summed out, the outer latents u kept
        per_item = contract_to_tensor(
            rest,
            keep | outer_syms,
            target_ordinal=draws | {self.data_symbol},
            target_dims=outer_syms,
            ring=ring,
        )
        log_prior = contract_to_tensor(
            prior, keep | outer_syms, target_ordinal=draws, target_dims=outer_syms, ring=ring
        )
        per_item = packed.unpack(per_item, self.trace.symbol_to_dim)
        log_prior = packed.unpack(log_prior, self.trace.symbol_to_dim)
        data_dim = self.trace.symbol_to_dim[self.data_symbol]
        enum_dims = sorted(self.trace.symbol_to_dim[s] for s in outer_syms)
        width = max(per_item.dim(), log_prior.dim(), -min(enum_dims))
        per_item = per_item.reshape((1,) * (width - per_item.dim()) + tuple(per_item.shape))
        log_prior = log_prior.reshape((1,) * (width - log_prior.dim()) + tuple(log_prior.shape))
        joint = log_prior + per_item.sum(data_dim, keepdim=True)  # log p(x, u)
        norm = joint
        for d in enum_dims:
            norm = torch.logsumexp(norm, d, keepdim=True)
        log_post = joint - norm  # log p(u | x)
        out = log_post + per_item
        for d in enum_dims:
            out = torch.logsumexp(out, d, keepdim=True)
        return out

    def _contract_items(self, tree: OrderedDict[frozenset[str], list[Tensor]]) -> Tensor:
        """One value per item of a sequential data plate (and per draw): each item's factors
        contracted alone, stacked along the last dim in the order of the items."""
        groups: dict[int, OrderedDict[frozenset[str], list[Tensor]]] = {}
        flat = ((ordinal, t) for ordinal, terms in tree.items() for t in terms)
        for name, (ordinal, term) in zip(self.sites, flat, strict=True):
            if name not in self.items:
                raise ValueError(
                    f"site {name!r} lies outside the sequential data plate, whose items must not share "
                    "a site; per-item scores cannot split it.  Name the plate over items with "
                    "probgen.model(fn, data_plate=...), or move the site into the loop."
                )
            groups.setdefault(self.items[name], OrderedDict()).setdefault(ordinal, []).append(term)
        target = frozenset(s for s in (self.draws_symbol,) if s)
        out = []
        for item in sorted(groups):
            group = groups[item]
            dims = {d for terms in group.values() for t in terms for d in t._pyro_dims}  # type: ignore[attr-defined]
            fresh = LogRing(dim_to_size=self.dim_to_size)  # a cache of its own per item
            result = contract_to_tensor(group, dims & self.sum_dims, target_ordinal=target, ring=fresh)
            out.append(packed.unpack(result, self.trace.symbol_to_dim).reshape(-1))
        return torch.stack(out, -1)

    def leaf_tree(self) -> tuple[OrderedDict[frozenset[str], list[Tensor]], list[Tensor]]:
        """A copy of the tree whose tensors are fresh autograd leaves (for marginals)."""
        leaves: list[Tensor] = []
        tree: OrderedDict[frozenset[str], list[Tensor]] = OrderedDict()
        for ordinal, terms in self.tree.items():
            for term in terms:
                leaf = term.detach().requires_grad_()
                leaf._pyro_dims = term._pyro_dims  # type: ignore[attr-defined]
                leaves.append(leaf)
                tree.setdefault(ordinal, []).append(leaf)
        return tree, leaves


def _expand_draws(trace: Any, draws: Mapping[str, Tensor], nesting: int) -> dict[str, Tensor]:
    """Reshape flat draws ``(S, *value_shape)`` so they broadcast against plate dim -(nesting+1)."""
    out = {}
    for name, value in draws.items():
        site = trace.nodes[name]
        batch = tuple(site["fn"].batch_shape)
        event = tuple(site["fn"].event_shape)
        S = value.shape[0]
        out[name] = value.reshape((S,) + (1,) * (nesting - len(batch)) + batch + event)
    return out


def enum_factors(
    gm: GenerativeModel,
    data: Any,
    draws: Mapping[str, Tensor] | None = None,
    fixed: Mapping[str, Tensor] | None = None,
    *,
    vectorized: bool = True,
    model_fn: Callable[..., Any] | None = None,
    keep_priors: tuple[str, ...] = (),
) -> EnumFactors:
    """Trace ``gm`` under parallel enumeration with its continuous sites set to ``draws``.

    ``draws`` maps site names to values with a leading draws dim ``(S, ...)``.  Vectorised,
    the draws sit in an outer plate; otherwise ``S`` must be 1 and the model runs on the
    draw's own shapes with no extra plate.  ``fixed`` gives ``pyro.param`` values.  With
    ``draws=None`` nothing is conditioned (models whose latents are all discrete).
    ``keep_priors``: conditioned sites whose prior terms stay in the tree (local latents, for
    the joint ``log p(x_i, z_i)`` of importance sampling).
    """
    roles = gm.roles(data)
    nesting = roles.max_plate_nesting
    draws = dict(draws) if draws else {}
    if draws and vectorized:
        S = next(iter(draws.values())).shape[0]
        with isolated_rng(None), poutine.block(), torch.no_grad():
            first = {k: v[0] for k, v in draws.items()}
            shape_trace = poutine.trace(_model_with(gm, first, fixed, model_fn)).get_trace(data)
        conditioned = _model_with(gm, _expand_draws(shape_trace, draws, nesting), fixed, model_fn)

        def vectorised(d: Any) -> Any:
            with pyro.plate(_DRAWS_PLATE, S, dim=-(nesting + 1)):
                return conditioned(d)

        run: Callable[..., Any] = vectorised
        first_dim = -(nesting + 2)
    else:
        if draws and next(iter(draws.values())).shape[0] != 1:
            raise ValueError("enum_factors(vectorized=False) evaluates one draw at a time.")
        run = _model_with(gm, {k: v[0] for k, v in draws.items()}, fixed, model_fn)
        first_dim = -(nesting + 1)
    enumerated = poutine.enum(config_enumerate(run, default="parallel"), first_available_dim=first_dim)
    with poutine.block(hide_fn=lambda msg: msg["type"] == "sample"):
        trace = poutine.trace(enumerated).get_trace(data)
    trace.compute_log_prob()
    _uniform_where_masked(trace)
    trace.pack_tensors()
    skip = set(roles.continuous_sites) - set(keep_priors) if draws else set()
    tree: OrderedDict[frozenset[str], list[Tensor]] = OrderedDict()
    names: OrderedDict[frozenset[str], list[str]] = OrderedDict()
    items: dict[str, int] = {}
    plate_symbols = set(trace.plate_to_symbol.values())
    sum_dims: set[str] = set()
    for name, site in trace.nodes.items():
        if site["type"] != "sample" or name in skip or site_is_subsample(site):
            continue
        if not site["is_observed"] and site["infer"].get("_enumerate_dim") is None:
            raise ValueError(
                f"site {name!r} is a latent that is neither enumerated nor given a value; "
                f"the continuous latent sites are {list(roles.continuous_sites)}."
            )
        term = site["packed"]["log_prob"]
        ordinal = frozenset(trace.plate_to_symbol[f.name] for f in site["cond_indep_stack"] if f.vectorized)
        tree.setdefault(ordinal, []).append(term)
        names.setdefault(ordinal, []).append(name)
        for f in site["cond_indep_stack"]:
            if not f.vectorized and f.name == roles.data_plate:  # a sequential plate's item
                items[name] = f.counter - 1  # the counter is 1 in the first iteration
        sum_dims.update(set(term._pyro_dims) - plate_symbols)
    data_symbol = trace.plate_to_symbol.get(roles.data_plate) if roles.data_plate else None
    draws_symbol = trace.plate_to_symbol.get(_DRAWS_PLATE) if draws and vectorized else None
    outer: dict[str, str] = {}
    for name in roles.outer_discrete_sites:
        site = trace.nodes[name]
        plates = [f.name for f in site["cond_indep_stack"] if f.vectorized and f.name != _DRAWS_PLATE]
        if plates:
            raise ValueError(
                f"discrete site {name!r} sits outside the data plate {roles.data_plate!r} but inside "
                f"plate(s) {plates}; per-item scores cannot weight it.  Name the plate over items "
                "with probgen.model(fn, data_plate=...), or move the site."
            )
        dim_to_symbol = {d: sym for sym, d in trace.symbol_to_dim.items()}
        outer[name] = dim_to_symbol[site["infer"]["_enumerate_dim"]]
    dim_to_size = {
        trace.plate_to_symbol[f.name]: f.size
        for site in trace.nodes.values()
        if site["type"] == "sample"
        for f in site["cond_indep_stack"]
        if f.vectorized
    }
    for terms in tree.values():
        for term in terms:
            dim_to_size.update(zip(term._pyro_dims, term.shape, strict=True))  # type: ignore[attr-defined]
    sites = [name for group in names.values() for name in group]  # the order of the tree's terms
    return EnumFactors(trace, tree, sites, sum_dims, data_symbol, draws_symbol, dim_to_size, outer, items)


def _uniform_where_masked(trace: Any) -> None:
    """Give an enumerated site the factor ``1/K`` where it is masked out, not Pyro's ``1``.

    A step masked out (past a sequence's end in a padded batch) does not exist for that item.
    Pyro's mask sets its log-factor to 0, so summing the latent out gives ``K``: the evidence
    grows by ``log K`` per masked step, a constant to an ELBO's gradients but not to a score.
    A uniform factor sums to one, so each item scores as a sequence of its own length.
    """
    for site in trace.nodes.values():
        if site["type"] != "sample" or site["is_observed"] or site.get("mask") is None:
            continue
        if site["infer"].get("_enumerate_dim") is None or "log_prob" not in site:
            continue
        k = site["fn"].enumerate_support(expand=False).shape[0]
        lp = site["log_prob"]
        mask = torch.as_tensor(site["mask"], dtype=torch.bool, device=lp.device)
        uniform = torch.as_tensor(site["scale"], dtype=lp.dtype, device=lp.device) * -math.log(k)
        site["log_prob"] = torch.where(mask, lp, uniform)


def _flatten_pointwise(result: Tensor, S: int, n_items: int) -> Tensor:
    if result.numel() == S * n_items:
        return result.reshape(S, n_items)
    if result.numel() == S:  # no data plate: one "item"
        return result.reshape(S, 1)
    raise ValueError(
        f"the per-item log-likelihood has {result.numel()} values; expected {S} draws x {n_items} items. "
        "Does the data plate's size equal the number of items (len(data))?"
    )


def _pointwise_one(
    gm: GenerativeModel, data: Any, draw: Mapping[str, Tensor], fixed: Any, n: int, keep: tuple[str, ...] = ()
) -> Tensor:
    one = {k: v.unsqueeze(0) for k, v in draw.items()}
    f = enum_factors(gm, data, one, fixed, vectorized=False, keep_priors=keep)
    return _flatten_pointwise(f.contract(), 1, n)


def _pointwise_vectorised(
    gm: GenerativeModel,
    data: Any,
    draws: Mapping[str, Tensor],
    fixed: Any,
    n: int,
    keep: tuple[str, ...] = (),
) -> Tensor:
    S = next(iter(draws.values())).shape[0]
    return _flatten_pointwise(enum_factors(gm, data, draws, fixed, keep_priors=keep).contract(), S, n)


def broadcasts_over_draws(
    gm: GenerativeModel,
    data: Any,
    draws: Mapping[str, Tensor],
    fixed: Mapping[str, Tensor] | None = None,
    keep: tuple[str, ...] = (),
) -> bool:
    """Whether ``gm`` evaluates a batch of draws correctly under an outer plate.

    Decided once per model and data shape: the vectorised result for two draws must equal the
    one-at-a-time result for each.  A model that raises under the extra plate is not vectorised;
    its one-at-a-time evaluation, which runs next and raises whatever the model raises, is the
    reference, so no shape error is hidden.
    """
    key = ("broadcasts", shape_key(data), tuple(sorted(draws)), keep)
    return bool(memo(gm, key, lambda: _broadcast_probe(gm, data, draws, fixed, keep)))


def _broadcast_probe(
    gm: GenerativeModel,
    data: Any,
    draws: Mapping[str, Tensor],
    fixed: Mapping[str, Tensor] | None,
    keep: tuple[str, ...] = (),
) -> bool:
    n = gm.num_items(data)
    two = {k: v[:2] if v.shape[0] >= 2 else torch.cat([v, v]) for k, v in draws.items()}
    one_at_a_time = torch.cat(
        [_pointwise_one(gm, data, {k: v[s] for k, v in two.items()}, fixed, n, keep) for s in range(2)]
    )
    # the probe only: a shape mismatch under the extra plate raises one of these (torch's
    # RuntimeError/IndexError, Pyro's ValueError for shapes, and the AssertionError of Pyro's
    # Categorical on logits that grew a dim: a pyro.markov chain indexed probs_x[x]); the
    # one-at-a-time evaluation above already ran and raised whatever the model raises
    try:
        together = _pointwise_vectorised(gm, data, two, fixed, n, keep)
    except (RuntimeError, ValueError, IndexError, AssertionError):
        together = None
    ok = together is not None and bool(
        torch.allclose(
            together, one_at_a_time, rtol=1e-4, atol=1e-4 * float(one_at_a_time.abs().max().clamp_min(1))
        )
    )
    return ok


def pointwise_log_likelihood(
    gm: GenerativeModel,
    data: Any,
    draws: Mapping[str, Tensor],
    fixed: Mapping[str, Tensor] | None = None,
    *,
    keep_priors: tuple[str, ...] = (),
) -> Tensor:
    """Log-likelihood of each data item under each draw, discrete latents summed out.

    A discrete latent outside the data plate (a change point) is weighted by its posterior
    given the data and the draw: item ``i`` gets ``log sum_u p(u | data) p(x_i | u)``.

    Parameters
    ----------
    gm : GenerativeModel
    data : object
        Prepared data.
    draws : dict of str to Tensor
        Values of the model's continuous latent sites with a leading draws dim ``(S, ...)``.
    fixed : dict of str to Tensor, optional
        Values of the model's ``pyro.param`` sites.
    keep_priors : tuple of str
        Local latent sites whose prior stays in: item ``i`` then gets the joint
        ``log p(x_i, z_i)`` at the drawn ``z_i`` rather than ``log p(x_i | z_i)``.

    Returns
    -------
    Tensor of shape ``(S, n_items)``.
    """
    roles = gm.roles(data)
    missing = [s for s in roles.continuous_sites if s not in draws]
    if missing:
        raise ValueError(f"draws lack the continuous latent site(s) {missing}; got {sorted(draws)}.")
    draws = {k: v for k, v in draws.items() if k in roles.continuous_sites}
    n_items = gm.num_items(data)
    with torch.no_grad():
        if not draws:
            return _flatten_pointwise(enum_factors(gm, data, None, fixed).contract(), 1, n_items)
        S = next(iter(draws.values())).shape[0]
        keep = tuple(keep_priors)
        if S > 1 and broadcasts_over_draws(gm, data, draws, fixed, keep):
            return _pointwise_vectorised(gm, data, draws, fixed, n_items, keep)
        return torch.cat(
            [
                _pointwise_one(gm, data, {k: v[s] for k, v in draws.items()}, fixed, n_items, keep)
                for s in range(S)
            ]
        )


def pointwise_log_likelihood_draws(
    gm: GenerativeModel, data: Any, draws: Mapping[str, Tensor], fixed: Mapping[str, Tensor] | None = None
) -> Tensor:
    """``(S, n_items)`` log-likelihoods: the model's :meth:`~probgen.GenerativeModel.log_prob_draws`."""
    return gm.log_prob_draws(data, draws, fixed)


def log_evidence(
    gm: GenerativeModel,
    data: Any,
    params: Mapping[str, Tensor] | None = None,
    fixed: Mapping[str, Tensor] | None = None,
) -> Tensor:
    """Exact log marginal likelihood with every discrete latent summed out, at ``params``."""
    draws = {k: v.unsqueeze(0) for k, v in (params or {}).items()} or None
    with torch.no_grad():
        f = enum_factors(gm, data, draws, fixed, vectorized=False)
        return f.contract(pointwise=False).reshape(-1)[0]


def total_log_likelihood(gm: GenerativeModel, data: Any, params: Mapping[str, Tensor]) -> float:
    """``log p(data | params)``, every discrete latent summed out (BIC's and AIC's ``log L``).

    The sum of :meth:`~probgen.GenerativeModel.log_prob_items` unless a discrete latent sits
    outside the data plate, where the per-item scores weight it by its posterior and do not add
    up to the evidence.
    """
    if not gm.roles(data).outer_discrete_sites:
        return float(gm.log_prob_items(data, params).sum())
    draws, fixed = split_params(gm, data, params)
    return float(log_evidence(gm, data, draws, fixed))


def _plate_shape(site: Mapping[str, Any]) -> tuple[int, ...]:
    """Batch shape a site has from its plates alone (no enumeration or draws dims)."""
    frames = [f for f in site["cond_indep_stack"] if f.vectorized and f.name != _DRAWS_PLATE]
    depth = max((-f.dim for f in frames), default=0)
    shape = [1] * depth
    for f in frames:
        shape[f.dim] = f.size
    return tuple(shape)


def _site_marginal(trace: Any, name: str, grad: Tensor, sum_dims: set[str]) -> Tensor:
    site = trace.nodes[name]
    own = site["infer"]["_enumerate_dim"]
    g = packed.unpack(grad, trace.symbol_to_dim)
    if g.dim() < -own:
        g = g.reshape((1,) * (-own - g.dim()) + tuple(g.shape))
    for sym in sum_dims:
        dim = trace.symbol_to_dim[sym]
        if dim != own and g.dim() >= -dim:
            g = g.sum(dim, keepdim=True)
    g = g.movedim(own, -1)
    batch = _plate_shape(site)
    K = g.shape[-1]
    g = g.reshape(tuple(g.shape[g.dim() - len(batch) - 1 :]))
    return g.expand(batch + (K,)).clone()


def discrete_marginals(
    gm: GenerativeModel, data: Any, params: Mapping[str, Tensor] | None = None, *, filtering: bool = False
) -> dict[str, Tensor]:
    """Exact posterior marginals ``p(site | data, params)`` of every discrete latent site.

    Returns a dict ``site -> probs`` of shape ``batch_shape + (K,)`` (K values in the order of
    the distribution's ``enumerate_support``).  For a chain written step by step these are the
    smoothing marginals ``p(x_t | y_1..T)``.  With ``filtering=True`` each site is conditioned
    only on the sites traced before the next discrete latent: ``p(x_t | y_1..t)`` for a chain
    that samples ``x_t`` then ``y_t`` (one contraction per discrete site).
    """
    roles = gm.roles(data)
    values, fixed = split_params(gm, data, params)
    f = enum_factors(
        gm, data, {k: v.unsqueeze(0) for k, v in values.items()} or None, fixed, vectorized=False
    )
    tree, leaves = f.leaf_tree()
    grads: Sequence[Tensor | None]
    if filtering:
        grads = _filtering_grads(f, tree, leaves, roles.discrete_sites)
    else:
        with torch.enable_grad():
            total = f.contract(tree, pointwise=False).sum()
            grads = torch.autograd.grad(total, leaves, allow_unused=True)
    out = {}
    for name, term, grad in zip(f.sites, (t for ts in f.tree.values() for t in ts), grads, strict=True):
        if name not in roles.discrete_sites or grad is None:
            continue
        grad = grad.detach()
        grad._pyro_dims = term._pyro_dims  # type: ignore[attr-defined]
        out[name] = _site_marginal(f.trace, name, grad, f.sum_dims)
    return out


def _filtering_grads(
    f: EnumFactors,
    tree: OrderedDict[frozenset[str], list[Tensor]],
    leaves: list[Tensor],
    discrete: tuple[str, ...],
) -> list[Tensor | None]:
    """Per leaf: the gradient of the log evidence of the sites traced before the next discrete
    latent after it (discrete sites only; None for the others)."""
    order = {name: i for i, name in enumerate(f.trace.nodes)}
    starts = sorted(order[n] for n in f.sites if n in discrete)
    flat = [(ordinal, term) for ordinal, terms in tree.items() for term in terms]
    grads: list[Tensor | None] = []
    for name, leaf in zip(f.sites, leaves, strict=True):
        if name not in discrete:
            grads.append(None)
            continue
        cut = next((p for p in starts if p > order[name]), len(order))
        seen: OrderedDict[frozenset[str], list[Tensor]] = OrderedDict()
        for n, (ordinal, term) in zip(f.sites, flat, strict=True):
            if order[n] < cut:
                seen.setdefault(ordinal, []).append(term)
        dims = {d for terms in seen.values() for t in terms for d in t._pyro_dims} & f.sum_dims  # type: ignore[attr-defined]
        with torch.enable_grad():
            ring = LogRing(dim_to_size=f.dim_to_size)  # a fresh cache per contraction
            total = contract_to_tensor(seen, dims, target_ordinal=frozenset(), ring=ring).sum()
            grads.append(torch.autograd.grad(total, leaf)[0])
    return grads


def discrete_map(
    gm: GenerativeModel, data: Any, params: Mapping[str, Tensor] | None = None
) -> dict[str, Tensor]:
    """The jointly most probable assignment of the discrete latents (Pyro's ``infer_discrete``)."""
    return sample_discrete(gm, data, params, temperature=0)


def sample_discrete(
    gm: GenerativeModel, data: Any, params: Mapping[str, Tensor] | None = None, *, temperature: int = 1
) -> dict[str, Tensor]:
    """Draw the discrete latents from ``p(z | data, params)`` (``temperature=0``: joint MAP)."""
    roles = gm.roles(data)
    values, fixed = split_params(gm, data, params)
    fn = config_enumerate(_model_with(gm, values, fixed), default="parallel")
    decoder = infer_discrete(fn, first_available_dim=-(roles.max_plate_nesting + 1), temperature=temperature)
    with poutine.block(), torch.no_grad():
        trace = poutine.trace(decoder).get_trace(data)
    out = {}
    for name in roles.discrete_sites:
        value, shape = trace.nodes[name]["value"], _plate_shape(trace.nodes[name])
        out[name] = value.reshape(shape) if value.numel() == math.prod(shape) else value
    return out


def generate(gm: GenerativeModel, n: int, params: Mapping[str, Tensor], **kwargs: Any) -> dict[str, Tensor]:
    """``n`` new items from ``model(None)`` with the global sites fixed at ``params``.

    ``model(None)`` generates a batch of the model's own default size; as many batches as
    needed are drawn and concatenated along the first dim.
    """
    roles = gm.last_roles()
    fixed = {k: v for k, v in params.items() if k in roles.param_sites}
    # per-item latents of the training items are not the new items': those come from the prior
    values = {k: v for k, v in params.items() if k not in roles.param_sites and k not in roles.local_sites}
    fn = _model_with(gm, values, fixed)
    chunks: dict[str, list[Tensor]] = {}
    total = 0
    with poutine.block(), torch.no_grad():
        while total < n:
            trace = poutine.trace(fn).get_trace(None, **kwargs)
            got = 0
            for s in sample_sites(trace):
                if s["name"] in params or s["name"] in roles.continuous_sites:
                    continue
                v = s["value"]
                chunks.setdefault(s["name"], []).append(v if v.dim() else v.reshape(1))
                got = max(got, v.shape[0] if v.dim() else 1)
            if got == 0:
                raise ValueError(f"{gm.name}(None) produced no sample sites to generate from.")
            total += got
    out = {k: torch.cat(v, 0)[:n] for k, v in chunks.items()}
    observed = [k for k in out if k in roles.observed_sites]
    if len(observed) > 1 and roles.data_plate is None and len({out[k].shape for k in observed}) == 1:
        # one sequence of scalar sites (a pyro.markov loop with no plate): an item is the sequence
        out["data"] = torch.stack([out.pop(k) for k in observed], 1)
        return out
    key = observed[-1] if observed else next(reversed(out))
    out["data"] = out.pop(key)
    return out


def posterior_predictive(
    gm: GenerativeModel,
    data: Any,
    draws: Mapping[str, Tensor],
    fixed: Mapping[str, Tensor] | None = None,
    *,
    seed: int = 0,
    sites: tuple[str, ...] | None = None,
    keep_local: bool = True,
) -> dict[str, Tensor]:
    """One replicate of every observed site per draw, same shape as the observed data.

    Discrete latents are drawn afresh from their prior given the draw (a replicated dataset),
    continuous latents are set to the draw (with ``keep_local=False`` only the global ones: new
    items draw their own from the prior).  ``sites``: the sites to replicate (default: the
    observed sites of ``data``; new data may leave the response out); those the model does not
    trace on ``data`` are left out (a chain of new lengths has steps of its own).  The user's
    random state is left as it was.
    """
    roles = gm.roles(data)
    S = next(iter(draws.values())).shape[0] if draws else 1
    fn = poutine.uncondition(gm.model)
    kept = roles.continuous_sites if keep_local else roles.global_sites
    reps: dict[str, list[Any]] = {name: [] for name in (sites or roles.observed_sites)}
    with isolated_rng(seed), poutine.block(), torch.no_grad():
        for s in range(S):
            values = {k: v[s] for k, v in draws.items() if k in kept}
            trace = poutine.trace(_model_with(gm, values, fixed, fn)).get_trace(data)
            for name in reps:
                if name in trace.nodes:
                    reps[name].append(trace.nodes[name]["value"])
    if not any(reps.values()):
        raise ValueError(
            f"data makes {gm.name} trace none of the sites to replicate ({', '.join(reps)}); "
            "pass the inputs the model was fitted with, leaving the response out."
        )
    return {k: torch.stack(v) for k, v in reps.items() if v}
