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
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import pyro
import pyro.poutine as poutine
import torch
from pyro.infer import config_enumerate, infer_discrete
from pyro.ops import packed
from pyro.ops.contract import contract_to_tensor
from pyro.ops.rings import LogRing
from pyro.poutine.util import site_is_subsample
from torch import Tensor

from probgen.model import GenerativeModel, sample_sites

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
]

_DRAWS_PLATE = "_pg_draws"


def _conditioning_sites(gm: GenerativeModel, data: Any) -> tuple[str, ...]:
    return gm.roles(data).continuous_sites


@dataclass
class EnumFactors:
    """The packed log-factors of one enumerated trace of a model, ready to contract.

    ``tree`` maps plate ordinals to packed log-prob tensors of the observed and discrete sites
    (the likelihood part; priors of conditioned continuous sites are left out).
    """

    trace: Any
    tree: OrderedDict[frozenset[str], list[Tensor]]
    sites: list[str]
    sum_dims: set[str]
    data_symbol: str | None
    draws_symbol: str | None
    dim_to_size: dict[str, int]

    def contract(
        self, tree: OrderedDict[frozenset[str], list[Tensor]] | None = None, *, pointwise: bool = True
    ) -> Tensor:
        """Sum out the discrete latents; pointwise keeps the draws and data plates."""
        tree = self.tree if tree is None else tree
        target = frozenset(s for s in (self.draws_symbol, self.data_symbol if pointwise else None) if s)
        if not any(tree.values()):
            return torch.zeros(())
        ring = LogRing(dim_to_size=self.dim_to_size)
        result = contract_to_tensor(tree, set(self.sum_dims), target_ordinal=target, ring=ring)
        return packed.unpack(result, self.trace.symbol_to_dim)

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
    *,
    model_fn: Callable[..., Any] | None = None,
) -> EnumFactors:
    """Trace ``gm`` under parallel enumeration with its continuous sites set to ``draws``.

    ``draws`` maps site names to values with a leading draws dim ``(S, ...)``; the draws are
    vectorised through an outer plate.  With ``draws=None`` nothing is conditioned (models whose
    latents are all discrete, or that hold their parameters in ``pyro.param``).
    """
    roles = gm.roles(data)
    fn = model_fn or gm.model
    nesting = roles.max_plate_nesting
    if draws:
        S = next(iter(draws.values())).shape[0]
        with poutine.block(), torch.no_grad():
            first = {k: v[0] for k, v in draws.items()}
            shape_trace = poutine.trace(poutine.condition(fn, data=first)).get_trace(data)
        values = _expand_draws(shape_trace, draws, nesting)
        conditioned = poutine.condition(fn, data=values)

        def vectorized(d: Any) -> Any:
            with pyro.plate(_DRAWS_PLATE, S, dim=-(nesting + 1)):
                return conditioned(d)

        run: Callable[..., Any] = vectorized
        first_dim = -(nesting + 2)
    else:
        run = fn
        first_dim = -(nesting + 1)
    enumerated = poutine.enum(config_enumerate(run, default="parallel"), first_available_dim=first_dim)
    with poutine.block(hide_fn=lambda msg: msg["type"] == "sample"):
        trace = poutine.trace(enumerated).get_trace(data)
    trace.compute_log_prob()
    trace.pack_tensors()
    skip = set(roles.continuous_sites) if draws else set()
    tree: OrderedDict[frozenset[str], list[Tensor]] = OrderedDict()
    sites = []
    plate_symbols = set(trace.plate_to_symbol.values())
    sum_dims: set[str] = set()
    for name, site in trace.nodes.items():
        if site["type"] != "sample" or name in skip or site_is_subsample(site):
            continue
        if not site["is_observed"] and site["infer"].get("_enumerate_dim") is None:
            continue  # a latent we do not condition nor enumerate (none in supported models)
        term = site["packed"]["log_prob"]
        ordinal = frozenset(trace.plate_to_symbol[f.name] for f in site["cond_indep_stack"] if f.vectorized)
        tree.setdefault(ordinal, []).append(term)
        sites.append(name)
        sum_dims.update(set(term._pyro_dims) - plate_symbols)
    data_symbol = trace.plate_to_symbol.get(roles.data_plate) if roles.data_plate else None
    draws_symbol = trace.plate_to_symbol.get(_DRAWS_PLATE) if draws else None
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
    return EnumFactors(trace, tree, sites, sum_dims, data_symbol, draws_symbol, dim_to_size)


def _flatten_pointwise(result: Tensor, S: int, n_items: int) -> Tensor:
    result = result.reshape(-1) if S == 1 and result.numel() == n_items else result
    if result.numel() == S * n_items:
        return result.reshape(S, n_items)
    if result.numel() == S:  # no data plate: one "item"
        return result.reshape(S, 1)
    return result.expand(*result.shape[:-1], n_items).reshape(S, n_items)


def pointwise_log_likelihood(gm: GenerativeModel, data: Any, draws: Mapping[str, Tensor]) -> Tensor:
    """Log-likelihood of each data item under each draw, discrete latents summed out.

    Parameters
    ----------
    gm : GenerativeModel
    data : object
        Prepared data.
    draws : dict of str to Tensor
        Values of the model's continuous latent sites with a leading draws dim ``(S, ...)``.

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
    if not draws:
        with torch.no_grad():
            f = enum_factors(gm, data, None)
            return _flatten_pointwise(f.contract(), 1, n_items)
    S = next(iter(draws.values())).shape[0]
    with torch.no_grad():
        try:
            f = enum_factors(gm, data, draws)
            return _flatten_pointwise(f.contract(), S, n_items)
        except (RuntimeError, ValueError, IndexError):
            # Models that do not broadcast over an extra batch dim: one draw at a time.
            rows = []
            for s in range(S):
                f = enum_factors(gm, data, {k: v[s : s + 1] for k, v in draws.items()})
                rows.append(_flatten_pointwise(f.contract(), 1, n_items))
            return torch.cat(rows, 0)


def _has_fast_log_prob(gm: GenerativeModel) -> bool:
    return type(gm).log_prob_items is not GenerativeModel.log_prob_items


def pointwise_log_likelihood_draws(gm: GenerativeModel, data: Any, draws: Mapping[str, Tensor]) -> Tensor:
    """``(S, n_items)`` log-likelihoods, through a family's fast path when it has one."""
    if _has_fast_log_prob(gm):
        S = next(iter(draws.values())).shape[0] if draws else 1
        with torch.no_grad():
            return torch.stack(
                [gm.log_prob_items(data, {k: v[s] for k, v in draws.items()}) for s in range(S)]
            )
    return pointwise_log_likelihood(gm, data, draws)


def log_evidence(gm: GenerativeModel, data: Any, params: Mapping[str, Tensor] | None = None) -> Tensor:
    """Exact log marginal likelihood with every discrete latent summed out."""
    draws = {k: v.unsqueeze(0) for k, v in (params or {}).items()} or None
    with torch.no_grad():
        f = enum_factors(gm, data, draws)
        return f.contract(pointwise=False).reshape(-1)[0]


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
    gm: GenerativeModel, data: Any, params: Mapping[str, Tensor] | None = None
) -> dict[str, Tensor]:
    """Exact posterior marginals ``p(site | data, params)`` of every discrete latent site.

    Returns a dict ``site -> probs`` of shape ``batch_shape + (K,)`` (K values in the order of
    the distribution's ``enumerate_support``).
    """
    roles = gm.roles(data)
    draws = {k: v.unsqueeze(0) for k, v in (params or {}).items() if k in roles.continuous_sites} or None
    f = enum_factors(gm, data, draws)
    tree, leaves = f.leaf_tree()
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
    cond = {k: v for k, v in (params or {}).items() if k in roles.continuous_sites}
    fn = config_enumerate(poutine.condition(gm.model, data=cond), default="parallel")
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
    roles = gm._last_roles()
    fn = poutine.condition(gm.model, data=dict(params))
    chunks: dict[str, list[Tensor]] = {}
    total = 0
    with poutine.block(), torch.no_grad():
        while total < n:
            trace = poutine.trace(fn).get_trace(None, **kwargs)
            obs = [s for s in sample_sites(trace) if s["name"] not in params]
            got = 0
            for s in obs:
                if s["name"] in roles.continuous_sites:
                    continue
                v = s["value"]
                chunks.setdefault(s["name"], []).append(v if v.dim() else v.reshape(1))
                got = max(got, v.shape[0] if v.dim() else 1)
            if got == 0:
                raise ValueError(f"{gm.name}(None) produced no sample sites to generate from.")
            total += got
    out = {k: torch.cat(v, 0)[:n] for k, v in chunks.items()}
    observed = [k for k in out if k in roles.observed_sites]
    key = observed[-1] if observed else next(reversed(out))
    out["data"] = out.pop(key)
    return out


def posterior_predictive(
    gm: GenerativeModel, data: Any, draws: Mapping[str, Tensor], *, seed: int = 0
) -> dict[str, Tensor]:
    """One replicate of every observed site per draw, same shape as the observed data.

    Discrete latents are drawn afresh from their prior given the draw (a replicated dataset),
    continuous latents are set to the draw.
    """
    roles = gm.roles(data)
    S = next(iter(draws.values())).shape[0]
    fn = poutine.uncondition(gm.model)
    reps: dict[str, list[Any]] = {name: [] for name in roles.observed_sites}
    pyro.set_rng_seed(seed)
    with poutine.block(), torch.no_grad():
        for s in range(S):
            cond = poutine.condition(
                fn, data={k: v[s] for k, v in draws.items() if k in roles.continuous_sites}
            )
            trace = poutine.trace(cond).get_trace(data)
            for name in reps:
                reps[name].append(trace.nodes[name]["value"])
    return {k: torch.stack(v) for k, v in reps.items()}
