"""NaN in a user model's observed data read as missing cells (``missing="marginalize"``).

A user's Pyro model observes its data with ``pyro.sample(name, fn, obs=data)``.  When the data
hold NaN, :class:`MaskMissing` (which :func:`probgen.model` installs around the model whenever
its data hold NaN) turns every such site into a masked observation: the NaN cells are replaced
by a value in the distribution's support and their log-probability is masked out, so every
backend that runs the model through Pyro (SVI, MCMC, enumeration, the generic EM) fits the
observed cells only.  Masking a cell is marginalising it exactly when the cells of a site are
independent given the latents: a batch dim of the site, or an event dim of an
``Independent``/``.to_event`` distribution.  A distribution that couples the cells of an event
(a ``MultivariateNormal``) is refused when only some of an event's cells are missing.

PyMC and NumPyro's ``obs_mask`` instead make the missing cells latent sites of their own; the
masked likelihood here leaves the posterior of every other site the same (the missing cells
integrate to one), and :func:`impute` recovers the cells afterwards from the fitted model:
conditional means (exact, discrete latents summed out) or draws.

Pyro has the masking (``mask``, ``MaskedDistribution``) but no handler that finds NaN in
observations, and no imputation of the cells given the observed ones; both are written here.
"""

from __future__ import annotations

import weakref
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any, cast

import torch
from pyro import poutine
from pyro.distributions import Independent
from pyro.infer import config_enumerate, infer_discrete
from pyro.ops import packed
from pyro.poutine.messenger import Messenger
from torch import Tensor

from probgen.arguments import ModelArgs
from probgen.posterior import _model_with, enum_factors, split_params
from probgen.state import isolated_rng

__all__ = ["MaskMissing", "has_missing", "impute", "masked_view", "nan_cells"]

#: keys this module adds to an observed site's ``infer`` dict
MISSING_KEY = "_probgen_missing_cells"
SOURCE_KEY = "_probgen_missing_source"

_MEMO: dict[int, tuple[weakref.ref[Tensor], int, Tensor | None]] = {}
_MEMO_SIZE = 256


def nan_cells(t: Tensor) -> Tensor | None:
    """The NaN cells of ``t`` (a bool tensor), or None when it has none.

    Remembered per tensor (and its version), so a model run many times on the same data (MCMC's
    leapfrog steps) asks the data once.
    """
    key = id(t)
    hit = _MEMO.get(key)
    if hit is not None and hit[0]() is t and hit[1] == t._version:
        return hit[2]
    nan = torch.isnan(t)
    out = nan if bool(nan.any()) else None
    if len(_MEMO) >= _MEMO_SIZE:
        _MEMO.clear()
    _MEMO[key] = (weakref.ref(t), t._version, out)
    return out


def has_missing(data: Any) -> bool:
    """Whether ``data`` (a tensor, or a model's arguments) holds NaN in a floating tensor."""
    values = getattr(data, "values", None)
    tensors = list(values.values()) if isinstance(values, Mapping) else [data]
    return any(isinstance(t, Tensor) and t.is_floating_point() and nan_cells(t) is not None for t in tensors)


def _filler(fn: Any, value: Tensor, name: str) -> Tensor:
    """A value inside ``fn``'s support to stand in the missing cells (its log-probability is
    masked out, so only finiteness matters)."""
    for c in (0.0, 1.0, 0.5):
        candidate = torch.full_like(value, c)
        if bool(torch.as_tensor(fn.support.check(candidate)).all()):
            return candidate
    raise ValueError(
        f"observed site {name!r} has missing cells (NaN), but none of 0, 1, 0.5 lies in the support "
        f"of its distribution ({type(fn).__name__}, support {fn.support}) to stand in for them; "
        "drop the incomplete items instead."
    )


def _independent_base(fn: Any) -> tuple[Any, int]:
    """The distribution under ``Independent`` wrappers and the event dims they reinterpret."""
    dims = 0
    while isinstance(fn, Independent | torch.distributions.Independent):
        dims += fn.reinterpreted_batch_ndims
        fn = fn.base_dist
    return fn, dims


class MaskMissing(Messenger):
    """Observed sites whose value holds NaN become masked observations of the observed cells."""

    def _pyro_sample(self, msg: dict[str, Any]) -> None:
        value = msg["value"]
        if not msg["is_observed"] or not isinstance(value, Tensor) or not value.is_floating_point():
            return
        nan = nan_cells(value)
        if nan is None:
            return
        fn = msg["fn"]
        k = len(fn.event_shape)
        filled = torch.where(nan, _filler(fn, value, msg["name"]), value)
        whole = nan if k == 0 else nan.flatten(-k).all(-1)
        if k and bool((nan.flatten(-k).any(-1) & ~whole).any()):
            base, dims = _independent_base(fn)
            if dims != k or len(base.event_shape):
                raise ValueError(
                    f"observed site {msg['name']!r} has items with some but not all cells missing "
                    f"(NaN), and its distribution {type(fn).__name__} couples the cells of an item, so "
                    "one cell cannot be dropped alone.  Write the likelihood cell by cell (e.g. "
                    "Normal(loc, scale).to_event(1)), or drop the incomplete items."
                )
            shape = torch.broadcast_shapes(base.batch_shape, nan.shape)
            masked = base.expand(shape).mask(~nan).to_event(k)
        else:
            shape = torch.broadcast_shapes(fn.batch_shape, whole.shape)
            masked = fn.expand(shape).mask(~whole)
        msg["fn"] = masked
        msg["value"] = filled
        msg["infer"] = {**msg["infer"], MISSING_KEY: nan, SOURCE_KEY: value}


def masked_view(site: Mapping[str, Any], target: Tensor) -> Tensor | None:
    """The data a masked observed ``site`` reads when that is ``target`` or a view of it (a step
    ``y[t]`` of a series observed in a ``pyro.markov`` loop); None otherwise."""
    src = site["infer"].get(SOURCE_KEY) if site["type"] == "sample" else None
    if src is None or src.untyped_storage().data_ptr() != target.untyped_storage().data_ptr():
        return None
    return cast(Tensor, src)


def _views_of(trace: Any, target: Tensor) -> list[tuple[str, Tensor, Tensor]]:
    """``(site, source, nan)`` for each masked site that reads ``target`` or a view of it."""
    out = []
    for name, site in trace.nodes.items():
        src = masked_view(site, target)
        if src is not None:
            out.append((name, src, site["infer"][MISSING_KEY]))
    return out


def _write(src: Tensor, nan: Tensor, cells: Tensor) -> None:
    """Fill the NaN cells of ``src`` (a view of the copy being imputed) in place."""
    src.copy_(torch.where(nan, cells.expand(src.shape).to(src.dtype), src))


def impute(
    gm: Any,
    data: Any,
    target: Tensor,
    params: Mapping[str, Tensor],
    *,
    method: str,
    generator: torch.Generator | None,
) -> Tensor:
    """``target`` (the observed tensor of ``data`` with NaN: the data, or one of the model's
    arguments) with its missing cells filled.

    ``method="mean"``: the conditional mean of each missing cell given the observed cells, at
    ``params``, the discrete latents summed out exactly: each cell's mean under its site's
    distribution, averaged over the posterior of the discrete latents (the derivative of the log
    evidence with respect to a tilt ``t * mean`` added to the site's log-factor, at ``t = 0``).
    ``method="sample"``: the discrete latents drawn from their posterior
    (:func:`pyro.infer.infer_discrete`), then the cells from their sites' distributions.

    The model runs on a copy of ``target`` whose NaN cells are written in place through the
    sites' views of it, so a series observed step by step is filled step by step.
    """
    if nan_cells(target) is None:
        return target.clone()
    copy = target.clone()
    if isinstance(data, ModelArgs):
        data = data.replace(values={k: copy if v is target else v for k, v in data.values.items()})
    else:
        data = copy
    roles = gm.roles(data)
    values, fixed = split_params(gm, data, params)
    lacking = [s for s in roles.local_sites if s not in values]
    if lacking:
        raise ValueError(
            f"imputing needs the values of the per-item latent site(s) {lacking} for these items; "
            "impute the data the fit was made on (its posterior holds them), or write the model "
            "without continuous per-item latents."
        )
    seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator))
    with torch.no_grad(), isolated_rng(seed), poutine.block():
        if method == "mean" and roles.discrete_sites:
            _exact_means(gm, data, copy, values, fixed)
            return copy
        run = _model_with(gm, values, fixed)
        if roles.discrete_sites:
            run = infer_discrete(
                config_enumerate(run, default="parallel"),
                first_available_dim=-(roles.max_plate_nesting + 1),
                temperature=1,
            )
        trace = poutine.trace(run).get_trace(data)
        for name, src, nan in _views_of(trace, copy):
            site_fn: Any = trace.nodes[name]["fn"]
            _write(src, nan, site_fn.sample() if method == "sample" else _mean(site_fn, name))
    return copy


def _mean(fn: Any, name: str) -> Tensor:
    try:
        return fn.mean
    except NotImplementedError:
        raise ValueError(
            f"observed site {name!r}'s distribution ({type(fn).__name__}) has no mean; impute with "
            "method='sample'."
        ) from None


def _exact_means(
    gm: Any,
    data: Any,
    copy: Tensor,
    values: Mapping[str, Tensor],
    fixed: Mapping[str, Tensor],
) -> None:
    """Conditional means of the missing cells of ``copy``, discrete latents summed out (see
    :func:`impute`), written into ``copy``."""
    f = enum_factors(
        gm, data, {k: v.unsqueeze(0) for k, v in values.items()} or None, fixed, vectorized=False
    )
    trace = f.trace
    views = {name: (src, nan) for name, src, nan in _views_of(trace, copy)}
    tilts: list[tuple[Tensor, Tensor, Tensor]] = []
    tree: OrderedDict[frozenset[str], list[Tensor]] = OrderedDict()
    flat = ((ordinal, t) for ordinal, terms in f.tree.items() for t in terms)
    for name, (ordinal, term) in zip(f.sites, flat, strict=True):
        if name in views:
            src, nan = views[name]
            fn = trace.nodes[name]["fn"]
            k = len(fn.event_shape)
            mean = _mean(fn, name)
            t = torch.zeros(nan.shape, dtype=mean.dtype, requires_grad=True)
            with torch.enable_grad():
                extra = t * torch.where(nan, mean, torch.zeros((), dtype=mean.dtype))
                if k:
                    extra = extra.flatten(-k).sum(-1)
                # the site's own dims: pyro.markov reuses a dim for several symbols
                local = {trace.symbol_to_dim[sym]: sym for sym in term._pyro_dims}  # type: ignore[attr-defined]
                term = packed.pack(packed.unpack(term, trace.symbol_to_dim) + extra, local)
            tilts.append((t, src, nan))
        tree.setdefault(ordinal, []).append(term)
    if not tilts:
        raise ValueError("no observed site reads the data with missing cells; nothing to impute.")
    with torch.enable_grad():
        total = f.contract(tree, pointwise=False).sum()
        grads = torch.autograd.grad(total, [t for t, _, _ in tilts])
    for (_, src, nan), g in zip(tilts, grads, strict=True):
        _write(src, nan, g)
