"""Site roles found by tracing a Pyro model, and the data conversion at the public boundary.

The bottom layer of the core: it knows Pyro and torch, and nothing of models, backends or fits.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np
import pyro
import pyro.distributions as dist
import pyro.poutine as poutine
import torch
from pyro.poutine.util import site_is_subsample
from torch import Tensor

from probgen.state import isolated_rng

__all__ = [
    "SiteRoles",
    "as_observed",
    "as_tensor",
    "find_roles",
    "free_parameters",
    "memo",
    "sample_sites",
    "shape_key",
    "slot",
]

# What tracing taught about a model (its roles per data shape, whether it broadcasts over draws),
# kept beside the model rather than in it: a model is a value, and its cache goes when it does.
_MEMO: weakref.WeakKeyDictionary[Any, dict[Any, Any]] = weakref.WeakKeyDictionary()


def memo(owner: Any, key: Any, compute: Callable[[], Any]) -> Any:
    """``compute()`` once per ``(owner, key)``; the entry lives as long as ``owner``."""
    table = _MEMO.setdefault(owner, {})
    if key not in table:
        table[key] = compute()
    return table[key]


def slot(owner: Any, name: str, valid: Callable[[Any], bool], compute: Callable[[], Any]) -> Any:
    """One kept value of ``owner`` (e.g. per-data work): recomputed when ``valid(value)`` fails."""
    table = _MEMO.setdefault(owner, {})
    value = table.get(("slot", name))
    if value is None or not valid(value):
        value = table[("slot", name)] = compute()
    return value


def last_memo(owner: Any, kind: str) -> Any:
    """The most recent entry of ``owner`` whose key starts with ``kind`` (None when none)."""
    table = _MEMO.get(owner, {})
    for key in reversed(table):
        if isinstance(key, tuple) and key and key[0] == kind:
            return table[key]
    return None


@dataclass(frozen=True)
class SiteRoles:
    """What tracing a model on its data tells the backends.

    Attributes
    ----------
    global_sites : tuple of str
        Continuous latent sites outside the data plate (parameters shared by every item).
    local_sites : tuple of str
        Continuous latent sites inside the data plate (per-item, e.g. ``theta`` in eight schools).
    discrete_sites : tuple of str
        Latent sites with a discrete, enumerable support (summed out by enumeration).
    observed_sites : tuple of str
        Observed sample sites (including ``pyro.factor`` sites).
    data_plate : str or None
        Name of the plate over data items (vectorised, or sequential: ``for i in pyro.plate(...)``);
        ``None`` when the model has no plate.
    max_plate_nesting : int
        Deepest plate nesting seen in the trace.
    param_sites : tuple of str
        ``pyro.param`` sites the model declares (learned by EM/SVI/enum, part of ``fit.params``).
    outer_discrete_sites : tuple of str
        Discrete latents outside the data plate (a change point, a regime of the whole series):
        per-item scores weight them by their posterior.
    model_dtype : torch.dtype or None
        Floating type the model computes in (found from its latent and generated values; None when
        the model declares its ``dtype``, which then needs no probe).
    data_dtype : torch.dtype or None
        Type data are converted to: ``model_dtype``, or ``torch.long`` when every observed site
        generates integers (categorical observations).
    """

    global_sites: tuple[str, ...]
    local_sites: tuple[str, ...]
    discrete_sites: tuple[str, ...]
    observed_sites: tuple[str, ...]
    data_plate: str | None
    max_plate_nesting: int
    param_sites: tuple[str, ...] = ()
    outer_discrete_sites: tuple[str, ...] = ()
    model_dtype: torch.dtype | None = None
    data_dtype: torch.dtype | None = None

    @property
    def continuous_sites(self) -> tuple[str, ...]:
        """Every continuous latent site, global and local."""
        return self.global_sites + self.local_sites


def _is_discrete(site: Mapping[str, Any]) -> bool:
    fn = site["fn"]
    while isinstance(fn, dist.MaskedDistribution | dist.Independent):
        fn = fn.base_dist
    return bool(getattr(fn.support, "is_discrete", False)) and bool(
        getattr(fn, "has_enumerate_support", False)
    )


def sample_sites(trace: Any) -> list[dict[str, Any]]:
    """The real sample sites of a trace (plates' subsample sites left out)."""
    return [s for s in trace.nodes.values() if s["type"] == "sample" and not site_is_subsample(s)]


def _site_dim_of_items(site: Mapping[str, Any]) -> int | None:
    """The batch dim that the leading axis of an observed value falls on."""
    value = site["value"]
    if not isinstance(value, Tensor):
        return None
    batch_dims = value.dim() - len(site["fn"].event_shape)
    return -batch_dims if batch_dims > 0 else None


def _choose_data_plate(observed: list[dict[str, Any]], n_items: int | None) -> str | None:
    """The plate over data items, when the user did not name it.

    Candidates are the vectorised plates of the observed sites.  The plate whose size is the
    number of items wins; among several such plates (``N == D``) the one the data's leading
    axis falls on, then the one that encloses the others (first in the plate stack).  When no
    vectorised plate has that size, a sequential plate that has (items one after another,
    ``for i in pyro.plate(...)``); else the enclosing plate of the first observed site.
    """
    fallback = None
    for s in observed:
        frames = [f for f in s["cond_indep_stack"] if f.vectorized]
        if not frames:
            continue
        sized = [f for f in frames if n_items is not None and f.size == n_items]
        if len(sized) > 1:
            lead = _site_dim_of_items(s)
            on_lead = [f for f in sized if f.dim == lead]
            sized = on_lead or sized
        if sized:
            return sized[0].name
        fallback = frames[0].name
        break
    for s in observed:
        sequential = [f for f in s["cond_indep_stack"] if not f.vectorized and f.size == n_items]
        if sequential:
            return sequential[0].name
    return fallback


def _model_dtypes(trace: Any, sites: list[dict[str, Any]]) -> tuple[torch.dtype | None, torch.dtype | None]:
    """(floating dtype the model computes in, dtype its observed sites generate), by tracing."""
    floats = {
        s["value"].dtype
        for s in trace.nodes.values()
        if s["type"] in ("sample", "param")
        and not s.get("is_observed", False)
        and isinstance(s["value"], Tensor)
        and s["value"].is_floating_point()
    }
    obs_dtypes = set()
    for s in sites:
        if s["is_observed"] and isinstance(s["fn"], dist.Distribution):
            try:
                with torch.no_grad():
                    obs_dtypes.add(s["fn"].sample().dtype)
            except NotImplementedError:  # a distribution that cannot generate: no type to learn
                continue
    floats |= {d for d in obs_dtypes if d.is_floating_point}
    model_float = torch.float64 if torch.float64 in floats else (next(iter(floats)) if floats else None)
    if obs_dtypes and all(not d.is_floating_point for d in obs_dtypes):
        return model_float, torch.long
    return model_float, model_float


def _check_observed_shapes(observed: list[dict[str, Any]]) -> None:
    """Refuse data that cannot broadcast against its site's distribution, before any fit starts.

    Pyro finds this only when a backend first scores the trace, deep in its own stack.
    """
    for s in observed:
        value, fn = s["value"], s["fn"]
        if not isinstance(value, Tensor):
            continue
        expected = tuple(fn.batch_shape + fn.event_shape)
        in_plate = any(f.vectorized for f in s["cond_indep_stack"])
        try:
            fits = torch.broadcast_shapes(tuple(value.shape), expected) == expected or not in_plate
        except RuntimeError:
            fits = False
        # in a plate, data with more dims than the site would make the plate index the wrong axis
        if not fits:
            raise ValueError(
                f"data: the observed site {s['name']!r} generates values of shape {expected} here, "
                f"but the data give it shape {tuple(value.shape)}; pass data shaped like the site "
                "(e.g. a 1-D array for a site of one number per item) or change the model "
                "(a plate over the extra dim, or `.to_event(1)`)."
            ) from None


def find_roles(
    model_fn: Callable[..., Any],
    data: Any,
    data_plate: str | None = None,
    n_items: int | None = None,
    *,
    probe_dtypes: bool = True,
) -> SiteRoles:
    """Trace ``model_fn(data)`` once and sort its sample sites into roles.

    The data plate is the one named by ``data_plate`` or, when not given, the plate of the
    observed sites whose size is ``n_items`` (the number of items in the data) and that
    encloses the others.
    """
    with isolated_rng(None), pyro.poutine.block(), torch.no_grad():
        trace = poutine.trace(model_fn).get_trace(data)
    sites = sample_sites(trace)
    if not sites:
        raise ValueError(
            "the model has no pyro.sample sites; a probgen model needs at least one sample "
            "statement (an observed site for the data)."
        )
    observed = [s for s in sites if s["is_observed"]]
    _check_observed_shapes(observed)
    plates = {f.name for s in sites for f in s["cond_indep_stack"]}  # sequential ones too
    if data_plate is None:
        data_plate = _choose_data_plate(observed, n_items)
    elif data_plate not in plates:
        raise ValueError(
            f"data_plate={data_plate!r} is not a plate of the model; its plates are "
            f"{sorted(plates) or 'none'}."
        )
    # plates may sit at explicit dims: the nesting is the deepest dim any plate uses
    nesting = max((-f.dim for s in sites for f in s["cond_indep_stack"] if f.vectorized), default=0)
    global_sites, local_sites, discrete_sites, outer = [], [], [], []
    for s in sites:
        if s["is_observed"]:
            continue
        in_items = any(f.name == data_plate for f in s["cond_indep_stack"])
        if _is_discrete(s):
            discrete_sites.append(s["name"])
            if not in_items:
                outer.append(s["name"])
        elif in_items:
            local_sites.append(s["name"])
        else:
            global_sites.append(s["name"])
    model_dtype = data_dtype = None
    if probe_dtypes:  # a model that declares its dtype needs no probe (generating may be costly)
        with isolated_rng(None):  # generating a value to learn its type draws random numbers
            model_dtype, data_dtype = _model_dtypes(trace, sites)
    return SiteRoles(
        tuple(global_sites),
        tuple(local_sites),
        tuple(discrete_sites),
        tuple(s["name"] for s in observed),
        data_plate,
        nesting,
        tuple(n for n, s in trace.nodes.items() if s["type"] == "param"),
        tuple(outer),
        model_dtype,
        data_dtype,
    )


def free_parameters(support: Any, value: Tensor) -> int:
    """Number of free parameters a value in ``support`` carries."""
    while isinstance(support, torch.distributions.constraints.independent):
        support = support.base_constraint
    numel = value.numel()
    if isinstance(support, type(dist.constraints.simplex)):
        return numel - numel // max(value.shape[-1], 1)
    if support in (dist.constraints.positive_definite, dist.constraints.lower_cholesky):
        d = value.shape[-1]
        return numel // (d * d) * d * (d + 1) // 2
    if support is dist.constraints.corr_cholesky or support is dist.constraints.corr_matrix:
        d = value.shape[-1]
        return numel // (d * d) * d * (d - 1) // 2
    return numel


@runtime_checkable
class KeyedData(Protocol):
    """Prepared data that say what they look like (e.g. a model's bound arguments)."""

    def shape_key(self) -> Any: ...


def shape_key(data: Any) -> Any:
    if isinstance(data, Tensor):
        return ("tensor", tuple(data.shape))
    if isinstance(data, list | tuple):
        return ("seq", len(data), tuple(shape_key(d) for d in data[:3]))
    if isinstance(data, KeyedData):
        return data.shape_key()
    if isinstance(data, Mapping):
        return ("map", tuple(sorted((k, shape_key(v)) for k, v in data.items())))
    return (type(data).__name__, getattr(data, "shape", None))


def as_observed(t: Tensor, want: torch.dtype, what: str) -> Tensor:
    """``t`` in the type an observed site generates; whole numbers only when that is an integer
    type (``what`` names the data and the model in the message)."""
    if not want.is_floating_point and t.is_floating_point():
        frac = t != torch.round(t)
        if frac.any():
            raise ValueError(
                f"{what} non-integer values ({int(frac.sum())}, e.g. {float(t[frac][0])!r}) where integer "
                "categories are observed; pass integer labels."
            )
    out = t.to(want)
    _check_range(t, out, what.rsplit(" ", 1)[0] if what.endswith(" holds") else what)
    return out


def _check_range(before: Tensor, after: Tensor, argname: str) -> None:
    """Refuse finite values that a conversion to a narrower type turned infinite (1e150 in float32)."""
    if not (before.is_floating_point() and after.is_floating_point()) or after.dtype == before.dtype:
        return
    grew = torch.isfinite(before) & ~torch.isfinite(after)
    if bool(grew.any()):
        example = float(before[grew].reshape(-1)[0])
        raise ValueError(
            f"{argname} holds {int(grew.sum())} value(s) too large for {str(after.dtype).replace('torch.', '')} "
            f"(e.g. {example:.3g}); rescale the data, or use a float64 model."
        )


def as_tensor(
    data: Any, argname: str, *, dtype: torch.dtype | None = None, allow_nan: bool = False, nan_hint: str = ""
) -> Tensor:
    """Convert array-like ``data`` to a tensor, validating it at the public boundary.

    Raises
    ------
    TypeError
        When ``data`` is not array-like.
    ValueError
        When it is empty, ragged, or holds NaN (unless ``allow_nan``; ``nan_hint`` ends the
        message, naming what else the caller offers) or infinities.
    """
    if data is None:
        raise ValueError(f"{argname} is None; expected an array of data items.")
    if hasattr(data, "to_numpy") and not isinstance(data, Tensor):  # pandas
        data = data.to_numpy()
    if isinstance(data, Tensor):
        t = data.detach()
    else:
        try:
            arr = np.asarray(data)
        except ValueError as err:
            raise ValueError(f"{argname} could not be read as a rectangular array: {err}") from None
        if arr.dtype == object:
            raise TypeError(
                f"{argname} must be numeric array-like (numpy, torch, pandas, nested lists); "
                f"got {type(data).__name__} holding non-numeric or ragged values."
            )
        if arr.dtype.kind not in "biuf":
            raise TypeError(f"{argname} must be numeric; got dtype {arr.dtype}.")
        if not arr.flags.writeable:  # e.g. pandas' read-only views; torch warns on those
            arr = arr.copy()
        t = torch.as_tensor(arr)
    if t.numel() == 0:
        raise ValueError(f"{argname} is empty (shape {tuple(t.shape)}); expected at least one item.")
    if t.is_floating_point() or dtype is not None:
        before = t
        t = t.to(
            dtype or (t.dtype if t.dtype == torch.float64 and dtype is None else torch.get_default_dtype())
        )
        _check_range(before, t, argname)
    if t.is_floating_point() and allow_nan:  # NaN marks a missing cell; an infinity is no value
        inf = torch.isinf(t)
        if inf.any():
            raise ValueError(
                f"{argname} has {int(inf.sum())} infinite values; NaN marks a missing cell, an "
                "infinity is not a value. Drop or replace them."
            )
    if t.is_floating_point() and not allow_nan:
        bad = ~torch.isfinite(t)
        if bad.any():
            n_nan = int(torch.isnan(t).sum())
            n_inf = int(bad.sum()) - n_nan
            raise ValueError(
                f"{argname} has {n_nan} NaN and {n_inf} infinite values; drop or impute them before fitting."
                + (f" {nan_hint}" if n_nan and nan_hint else "")
            )
    return t
