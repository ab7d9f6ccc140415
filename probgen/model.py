"""Generative models: a Pyro model/guide pair plus the site roles the backends need.

A model is anything with ``model(data)`` and ``guide(data)`` Pyro functions.  The roles of its
sample sites (global parameters, local discrete latents, the plate over data items) are found by
tracing the model once on the data, so a user never declares them by hand.  Families in
``probgen.models`` subclass :class:`GenerativeModel` and override the optional fast-path hooks
(closed-form E/M steps, exact per-item log-likelihoods, ...); every hook has a generic default
here built on Pyro's enumeration machinery, so a user-written model gets every tool too.
"""

from __future__ import annotations

import abc
import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyro
import pyro.distributions as dist
import pyro.poutine as poutine
import torch
from pyro.infer import config_enumerate
from pyro.poutine.util import site_is_subsample
from torch import Tensor

__all__ = ["GenerativeModel", "SiteRoles", "model"]


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
        Name of the plate over data items; ``None`` when the model has no plate.
    max_plate_nesting : int
        Deepest plate nesting seen in the trace.
    param_sites : tuple of str
        ``pyro.param`` sites the model declares (learned by EM/SVI/enum, part of ``fit.params``).
    """

    global_sites: tuple[str, ...]
    local_sites: tuple[str, ...]
    discrete_sites: tuple[str, ...]
    observed_sites: tuple[str, ...]
    data_plate: str | None
    max_plate_nesting: int
    param_sites: tuple[str, ...] = ()

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


def find_roles(model_fn: Callable[..., Any], data: Any, data_plate: str | None = None) -> SiteRoles:
    """Trace ``model_fn(data)`` once and sort its sample sites into roles.

    The data plate is the one named by ``data_plate`` or, when not given, the outermost
    vectorised plate that holds an observed site.
    """
    with pyro.poutine.block(), torch.no_grad():
        trace = poutine.trace(model_fn).get_trace(data)
    sites = sample_sites(trace)
    if not sites:
        raise ValueError(
            "the model has no pyro.sample sites; a probgen model needs at least one sample "
            "statement (an observed site for the data)."
        )
    observed = [s for s in sites if s["is_observed"]]
    if data_plate is None:
        for s in observed:
            frames = [f for f in s["cond_indep_stack"] if f.vectorized]
            if frames:
                data_plate = max(frames, key=lambda f: f.dim).name  # outermost: dim closest to 0
                break
    # plates may sit at explicit dims: the nesting is the deepest dim any plate uses
    nesting = max((-f.dim for s in sites for f in s["cond_indep_stack"] if f.vectorized), default=0)
    global_sites, local_sites, discrete_sites = [], [], []
    for s in sites:
        if s["is_observed"]:
            continue
        if _is_discrete(s):
            discrete_sites.append(s["name"])
        elif any(f.name == data_plate for f in s["cond_indep_stack"]):
            local_sites.append(s["name"])
        else:
            global_sites.append(s["name"])
    return SiteRoles(
        tuple(global_sites),
        tuple(local_sites),
        tuple(discrete_sites),
        tuple(s["name"] for s in observed),
        data_plate,
        nesting,
        tuple(n for n, s in trace.nodes.items() if s["type"] == "param"),
    )


class GenerativeModel(abc.ABC):
    """A Pyro model/guide pair plus the hooks probgen's backends and tools use.

    Subclasses implement :meth:`model` (and optionally :meth:`guide`).  ``model(data)`` scores
    data; ``model(None)`` generates.  Discrete latent sites should carry
    ``infer={"enumerate": "parallel"}`` (or be left unmarked: probgen enumerates every
    discrete latent it finds).  The optional hooks below have generic defaults built on Pyro
    and are overridden by families that have closed forms.

    Hooks a family may add (the EM backend looks for them by name):

    ``init_params(data, *, init, generator) -> dict``
        Starting values of the global sites for EM (strategy name or dict of values).
    ``e_step(data, params) -> (stats, log_lik)``
        Expected sufficient statistics and the total log-likelihood at ``params``.
    ``m_step(data, stats) -> dict``
        Closed-form maximiser of the expected complete-data log-likelihood.

    Examples
    --------
    >>> import pyro, pyro.distributions as dist, torch
    >>> class Coin(GenerativeModel):
    ...     def model(self, data=None):
    ...         p = pyro.sample("p", dist.Beta(1.0, 1.0))
    ...         with pyro.plate("flips", 4 if data is None else len(data)):
    ...             return pyro.sample("obs", dist.Bernoulli(p), obs=data)
    >>> Coin().roles(torch.ones(4)).global_sites
    ('p',)
    """

    #: Name of the plate over data items; ``None`` lets tracing find it.
    data_plate_name: str | None = None
    #: Whether tensors are float64 (classical families) or the torch default (neural, user).
    dtype: torch.dtype | None = None

    # ----------------------------------------------------------------------------- Pyro pair
    @abc.abstractmethod
    def model(self, data: Any = None) -> Any:
        """The Pyro model: scores ``data``, generates when ``data`` is None."""

    def guide(self, data: Any = None) -> Any:
        """The variational family; ``None`` means backends build an autoguide."""
        return None

    @property
    def has_guide(self) -> bool:
        """True when the model supplies its own guide."""
        return type(self).guide is not GenerativeModel.guide

    @property
    def name(self) -> str:
        return type(self).__name__

    # ------------------------------------------------------------------------------- roles
    def roles(self, data: Any) -> SiteRoles:
        """Site roles found by tracing :meth:`model` on ``data`` (cached per data shape)."""
        key = _shape_key(data)
        cache = self.__dict__.setdefault("_roles_cache", {})
        if key not in cache:
            cache[key] = find_roles(self.model, data, self.data_plate_name)
        return cache[key]

    @property
    def global_sites(self) -> tuple[str, ...]:
        return self._last_roles().global_sites

    @property
    def discrete_sites(self) -> tuple[str, ...]:
        return self._last_roles().discrete_sites

    @property
    def data_plate(self) -> str | None:
        return self._last_roles().data_plate

    def _last_roles(self) -> SiteRoles:
        cache = self.__dict__.get("_roles_cache")
        if not cache:
            raise ValueError(
                f"{self.name}: site roles are found by tracing the model on data; "
                "call model.roles(data) or fit the model first."
            )
        return next(reversed(cache.values()))

    def enumerated_model(self) -> Callable[..., Any]:
        """``model`` with every discrete latent marked for parallel enumeration."""
        return config_enumerate(self.model, default="parallel")

    # ---------------------------------------------------------------------------- data
    def prepare_data(self, data: Any) -> Any:
        """Validate ``data`` and convert it to what :meth:`model` takes.

        The default accepts numpy arrays, torch tensors, pandas objects and nested lists, and
        returns a tensor of ``self.dtype`` (the torch default when unset) for floating data.
        Raises ``ValueError`` on NaN/inf and on empty data.
        """
        return as_tensor(data, "data", dtype=self.dtype)

    def num_items(self, data: Any) -> int:
        """Number of items in the data plate."""
        return len(data)

    def num_observations(self, data: Any) -> int:
        """The ``n`` in BIC's ``k log n`` (items by default; HMMs count time steps)."""
        return self.num_items(data)

    # -------------------------------------------------------------------- fast-path hooks
    def log_prob_items(self, data: Any, params: Mapping[str, Tensor]) -> Tensor:
        """Per-item log-likelihood with discrete latents summed out, at ``params``.

        Generic default: Pyro enumeration contracted down to the data plate.
        """
        from probgen.posterior import pointwise_log_likelihood

        draws = {k: v.unsqueeze(0) for k, v in params.items()}
        return pointwise_log_likelihood(self, data, draws)[0]

    def latent_posterior(self, data: Any, params: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Posterior probabilities of each discrete latent site, per item, at ``params``."""
        from probgen.posterior import discrete_marginals

        return discrete_marginals(self, data, params)

    def latent_map(self, data: Any, params: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Jointly most probable discrete latents (Viterbi for chains) at ``params``."""
        from probgen.posterior import discrete_map

        return discrete_map(self, data, params)

    def sample_items(
        self, n: int, params: Mapping[str, Tensor], *, generator: torch.Generator | None = None, **kwargs: Any
    ) -> dict[str, Any]:
        """Draw ``n`` new items; returns ``{"data": ..., <latent site>: ...}``."""
        from probgen.posterior import generate

        return generate(self, n, params, **kwargs)

    def num_parameters(self, params: Mapping[str, Tensor], data: Any) -> int:
        """Free parameters among the global sites (for BIC/AIC), from their supports."""
        roles = self.roles(data)
        trace = _trace_with(self.model, params, data)
        return sum(free_parameters(trace.nodes[n]["fn"], params[n]) for n in roles.global_sites)

    def plot_fit(self, data: Any, params: Mapping[str, Tensor], *, ax: Any = None, **kwargs: Any) -> Any:
        """Draw the fitted model over ``data`` on matplotlib axes ``ax`` (created when None).

        Families override this (mixture ellipses over the data, HMM state strips); the default
        refuses with a clear message, so ``fit.plot`` says which models offer a picture.
        """
        raise TypeError(
            f"{self.name} has no built-in picture; use ArviZ on fit.to_arviz() (e.g. arviz.plot_trace)."
        )

    def __repr__(self) -> str:
        return f"{self.name}()"


def free_parameters(fn: Any, value: Tensor) -> int:
    """Number of free parameters a value of ``fn``'s support carries."""
    support = fn.support
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


def _trace_with(model_fn: Callable[..., Any], params: Mapping[str, Tensor], data: Any) -> Any:
    with pyro.poutine.block(), torch.no_grad():
        return poutine.trace(poutine.condition(model_fn, data=dict(params))).get_trace(data)


def _shape_key(data: Any) -> Any:
    if isinstance(data, Tensor):
        return ("tensor", tuple(data.shape))
    if isinstance(data, list | tuple):
        return ("seq", len(data), tuple(_shape_key(d) for d in data[:3]))
    if isinstance(data, Mapping):
        return ("map", tuple(sorted((k, _shape_key(v)) for k, v in data.items())))
    return (type(data).__name__, getattr(data, "shape", None))


def as_tensor(
    data: Any, argname: str, *, dtype: torch.dtype | None = None, allow_nan: bool = False
) -> Tensor:
    """Convert array-like ``data`` to a tensor, validating it at the public boundary.

    Raises
    ------
    TypeError
        When ``data`` is not array-like.
    ValueError
        When it is empty, ragged, or holds NaN/inf (unless ``allow_nan``).
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
        t = t.to(
            dtype or (t.dtype if t.dtype == torch.float64 and dtype is None else torch.get_default_dtype())
        )
    if t.is_floating_point() and not allow_nan:
        bad = ~torch.isfinite(t)
        if bad.any():
            n_nan = int(torch.isnan(t).sum())
            n_inf = int(bad.sum()) - n_nan
            raise ValueError(
                f"{argname} has {n_nan} NaN and {n_inf} infinite values; drop or impute them before fitting."
            )
    return t


class _FunctionModel(GenerativeModel):
    """A user's Pyro function (and optional guide) as a :class:`GenerativeModel`."""

    def __init__(
        self,
        fn: Callable[..., Any],
        guide: Callable[..., Any] | None = None,
        *,
        data_plate: str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        if not callable(fn):
            raise TypeError(f"probgen.model expects a callable Pyro model; got {type(fn).__name__}.")
        if guide is not None and not callable(guide):
            raise TypeError(f"guide must be a callable Pyro guide or None; got {type(guide).__name__}.")
        self.fn = fn
        self._guide = guide
        self.data_plate_name = data_plate
        self.dtype = dtype
        functools.update_wrapper(self, fn, updated=())

    def model(self, data: Any = None, **kwargs: Any) -> Any:
        return self.fn(data, **kwargs)

    def guide(self, data: Any = None, **kwargs: Any) -> Any:
        if self._guide is None:
            return None
        return self._guide(data, **kwargs)

    @property
    def has_guide(self) -> bool:
        return self._guide is not None

    @property
    def name(self) -> str:
        return getattr(self.fn, "__name__", "model")

    def __call__(self, data: Any = None, **kwargs: Any) -> Any:
        return self.fn(data, **kwargs)

    def __repr__(self) -> str:
        return f"probgen.model({self.name})"


def model(
    fn: Callable[..., Any] | None = None,
    guide: Callable[..., Any] | None = None,
    *,
    data_plate: str | None = None,
    dtype: torch.dtype | None = None,
) -> Any:
    """Turn a Pyro function ``fn(data=None)`` into a :class:`GenerativeModel`.

    Usable as ``probgen.model(fn)``, ``probgen.model(fn, guide)`` or as a decorator
    (``@probgen.model`` / ``@probgen.model(data_plate="items")``).

    Parameters
    ----------
    fn : callable
        A Pyro model taking the data as its first argument; ``fn(None)`` should generate.
    guide : callable, optional
        A Pyro guide with the same signature; when omitted, backends build an autoguide
        for the continuous latents and enumerate the discrete ones.
    data_plate : str, optional
        Name of the plate over data items (found by tracing when omitted).
    dtype : torch.dtype, optional
        Floating type data are converted to (default: torch's default dtype).

    Returns
    -------
    GenerativeModel

    Examples
    --------
    >>> import pyro, pyro.distributions as dist, torch, probgen as pg
    >>> @pg.model
    ... def coin(data=None):
    ...     p = pyro.sample("p", dist.Beta(1.0, 1.0))
    ...     with pyro.plate("flips", 4 if data is None else len(data)):
    ...         pyro.sample("obs", dist.Bernoulli(p), obs=data)
    >>> coin.roles(torch.ones(4)).data_plate
    'flips'
    """
    if fn is None:
        return functools.partial(model, guide=guide, data_plate=data_plate, dtype=dtype)
    if isinstance(fn, GenerativeModel):
        return fn
    return _FunctionModel(fn, guide, data_plate=data_plate, dtype=dtype)
