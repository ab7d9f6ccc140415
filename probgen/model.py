"""The model protocol: a Pyro model/guide pair plus the few methods every tool uses.

A model is anything with ``model(data)`` and ``guide(data)`` Pyro functions.  The roles of its
sample sites (global parameters, local discrete latents, the plate over data items) are found by
tracing the model once on the data (:mod:`probgen.roles`), so a user never declares them by hand.

:class:`GenerativeModel` is the whole protocol every model has, each method with a generic
default built on Pyro's enumeration (:mod:`probgen.posterior`), so a user-written model gets every
tool.  What a backend needs beyond it (closed-form EM, an SVI objective of its own, an energy, a
picture, ...) is a capability in :mod:`probgen.capabilities`: a family offers one by defining its
methods.
"""

from __future__ import annotations

import abc
import functools
import importlib
import importlib.util
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import pyro
import pyro.distributions as dist
import torch
from pyro.infer import config_enumerate
from torch import Tensor

from probgen.arguments import ModelArgs, bind_arguments, is_argument_data, like_input, with_dtypes
from probgen.masking import MaskMissing, has_missing, impute, masked_view, nan_cells
from probgen.posterior import (
    discrete_map,
    discrete_marginals,
    generate,
    pointwise_log_likelihood,
    split_params,
    traced_with,
)
from probgen.roles import (
    SiteRoles,
    as_observed,
    as_tensor,
    find_roles,
    free_parameters,
    last_memo,
    memo,
    sample_sites,
    shape_key,
)
from probgen.state import isolated_rng

__all__ = [
    "GenerativeModel",
    "SiteRoles",
    "as_tensor",
    "free_parameters",
    "model",
    "register_model",
    "registered_model",
    "sample_sites",
]


class GenerativeModel(abc.ABC):
    """A Pyro model/guide pair plus what every tool asks of a model.

    Subclasses implement :meth:`model` (and optionally :meth:`guide`).  ``model(data)`` scores
    data; ``model(None)`` generates.  Discrete latent sites are enumerated by every backend
    (mark them ``infer={"enumerate": "parallel"}`` or leave them unmarked).

    The protocol
        :meth:`model`, :meth:`guide`, :meth:`prepare_data` (validate and convert at the public
        boundary), :meth:`log_prob_items` (per-item log-likelihood, discrete latents summed out),
        :meth:`latent_posterior` and :meth:`latent_map` (the discrete latents given the data),
        :meth:`sample_items` (generation), :meth:`get_config` (constructor arguments, for
        ``probgen.load``).  Around them, with generic defaults: :meth:`roles` (site roles found
        by tracing), :meth:`num_items`, :meth:`num_observations` (BIC's ``n``),
        :meth:`num_parameters` (BIC's ``k``) and :meth:`log_prob_draws` (scores under many
        parameter draws at once).
    Capabilities
        Everything else a backend or tool may use is a Protocol of :mod:`probgen.capabilities`
        (``ClosedFormEM``, ``ChunkedEM``, ``OwnSVIObjective``, ``EnergyBased``, ``Implicit``,
        ``Exchangeable``, ``Plottable``, ...): define its methods and the backends that need it
        serve the model.
    Class attributes
        :attr:`data_plate_name`, :attr:`dtype`, :attr:`density`, :attr:`accepts_missing` and
        :attr:`fit_class` (the :class:`probgen.Fit` subclass with the family's helpers).

    Every concrete subclass is registered by class name so that ``probgen.load`` rebuilds it
    from its saved configuration (no code is stored in the file).  A model is a value: nothing
    learned from data is written into it (tracing results are kept beside it, by identity).

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
    #: Floating type of the model's tensors: float64 for classical families; ``None`` finds it
    #: by tracing (user models).
    dtype: torch.dtype | None = None
    #: The class of this model's fits: a :class:`probgen.Fit` subclass whose methods are the
    #: family's helpers (``fit.query`` for networks, ``fit.encode`` for VAEs), typed and listed
    #: by ``dir``; None for a plain ``Fit``.
    fit_class: ClassVar[type[Any] | None] = None
    #: True when NaN in the data means a missing value the model sums out (Bayesian networks)
    #: rather than bad input; ``probgen.testing.check_model`` then skips its NaN-refusal check.
    accepts_missing: ClassVar[bool] = False
    #: What the refusal of NaN in the data adds (the option that reads NaN otherwise), if any.
    nan_hint: ClassVar[str] = ""
    #: What the model's likelihood is: ``"normalised"`` (a proper density, every backend's
    #: default), ``"unnormalised"`` (known up to its normalising constant, e.g. an energy-based
    #: RBM: likelihood-based backends refuse it, ``"cd"`` serves it) or ``"none"`` (an implicit
    #: model that only generates, e.g. a GAN: served by ``"adversarial"``).
    density: ClassVar[str] = "normalised"

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if not cls.__name__.startswith("_"):
            register_model(cls)

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
        """Site roles found by tracing :meth:`model` on ``data`` (kept per data shape).

        Kept per torch default dtype too: a model's tensors follow it.
        """
        key = ("roles", shape_key(data), torch.get_default_dtype())

        def trace() -> SiteRoles:
            n_items = len(data) if data is not None and hasattr(data, "__len__") else None
            return find_roles(
                self.model, data, self.data_plate_name, n_items, probe_dtypes=self.dtype is None
            )

        found: SiteRoles = memo(self, key, trace)
        return found

    def last_roles(self) -> SiteRoles:
        """The roles found by the most recent tracing (raises when the model was never traced)."""
        found = last_memo(self, "roles")
        if found is None:
            raise ValueError(
                f"{self.name}: site roles are found by tracing the model on data; "
                "call model.roles(data) or fit the model first."
            )
        return found

    @property
    def global_sites(self) -> tuple[str, ...]:
        return self.last_roles().global_sites

    @property
    def discrete_sites(self) -> tuple[str, ...]:
        return self.last_roles().discrete_sites

    @property
    def data_plate(self) -> str | None:
        return self.last_roles().data_plate

    def enumerated_model(self) -> Callable[..., Any]:
        """``model`` with every discrete latent marked for parallel enumeration."""
        return config_enumerate(self.model, default="parallel")

    # ---------------------------------------------------------------------------- data
    def prepare_data(self, data: Any) -> Any:
        """Validate ``data`` and convert it to what :meth:`model` takes.

        Accepts numpy arrays of any numeric dtype, torch tensors, pandas objects and nested
        lists.  With ``self.dtype`` set, floating data become that type; otherwise the type is
        the model's own, found by tracing it once on the data (a float32 model gets float32
        data whatever the input, a float64 model float64, categorical observations integers).
        Raises ``ValueError`` on NaN/inf and on empty data, ``TypeError`` on non-numeric data.
        """
        t = as_tensor(data, "data", dtype=self.dtype, nan_hint=self.nan_hint)
        if t.dim() == 0:
            raise ValueError(
                f"data is a single number ({t.item()!r}); pass an array of items, e.g. [{t.item()!r}]."
            )
        if self.dtype is not None:
            return t
        probe = t.to(torch.get_default_dtype()) if t.dtype != torch.get_default_dtype() else t
        want = self.roles(probe).data_dtype or torch.get_default_dtype()
        return t if want == t.dtype else as_observed(t, want, f"data for {self.name} holds")

    def num_items(self, data: Any) -> int:
        """Number of items in the data plate (the data's leading axis)."""
        return len(data)

    def num_observations(self, data: Any) -> int:
        """The ``n`` in BIC's ``k log n`` (items by default; HMMs count time steps)."""
        return self.num_items(data)

    # --------------------------------------------------------------------------- scoring
    def log_prob_items(self, data: Any, params: Mapping[str, Tensor]) -> Tensor:
        """Per-item log-likelihood with discrete latents summed out, at ``params``.

        Generic default: Pyro enumeration contracted down to the data plate; a discrete latent
        outside the data plate is weighted by its posterior (see
        :func:`probgen.posterior.pointwise_log_likelihood`).
        """
        draws, fixed = split_params(self, data, params)
        return pointwise_log_likelihood(self, data, {k: v.unsqueeze(0) for k, v in draws.items()}, fixed)[0]

    def log_prob_draws(
        self, data: Any, draws: Mapping[str, Tensor], fixed: Mapping[str, Tensor] | None = None
    ) -> Tensor:
        """``(S, n_items)`` log-likelihoods under ``S`` draws (leading dim of each value).

        Default: :meth:`log_prob_items` once per draw.  Models scored by Pyro's enumeration (user
        models) evaluate every draw at once under an outer plate where the model broadcasts.
        """
        S = next(iter(draws.values())).shape[0] if draws else 1
        with torch.no_grad():
            return torch.stack(
                [
                    self.log_prob_items(data, {**(fixed or {}), **{k: v[s] for k, v in draws.items()}})
                    for s in range(S)
                ]
            )

    def latent_posterior(self, data: Any, params: Mapping[str, Tensor]) -> dict[str, Any]:
        """Posterior probabilities of each discrete latent site, per item, at ``params``."""
        self._require_discrete(data)
        return discrete_marginals(self, data, params)

    def latent_map(self, data: Any, params: Mapping[str, Tensor]) -> dict[str, Any]:
        """Jointly most probable discrete latents (Viterbi for chains) at ``params``."""
        self._require_discrete(data)
        return discrete_map(self, data, params)

    def _require_discrete(self, data: Any) -> None:
        if not self.roles(data).discrete_sites:
            raise ValueError(
                "predict needs a discrete latent site (a cluster, a state, a class), as do "
                f"predict_proba and marginals; {self.name} has none.  Use fit.sample or fit.posterior "
                "for continuous latents."
            )

    def sample_items(
        self, n: int, params: Mapping[str, Tensor], *, generator: torch.Generator | None = None, **kwargs: Any
    ) -> dict[str, Any]:
        """Draw ``n`` new items; returns ``{"data": ..., <latent site>: ...}``."""
        return generate(self, n, params, **kwargs)

    def num_parameters(self, params: Mapping[str, Tensor], data: Any) -> int:
        """Free parameters among the global sites and ``pyro.param`` sites (for BIC/AIC)."""
        roles = self.roles(data)
        draws, fixed = split_params(self, data, params)
        trace = traced_with(self, data, draws, fixed)
        k = sum(free_parameters(trace.nodes[n]["fn"].support, params[n]) for n in roles.global_sites)
        for n in roles.param_sites:
            k += free_parameters(trace.nodes[n]["kwargs"].get("constraint", dist.constraints.real), params[n])
        return k

    # ------------------------------------------------------------------------------ saving
    def get_config(self) -> dict[str, Any] | None:
        """Constructor arguments that rebuild this model (``None``: the code is the user's)."""
        return None

    def __repr__(self) -> str:
        return f"{self.name}()"


def scores_local_latents_generically(gm: GenerativeModel) -> bool:
    """Whether ``gm``'s scores come from the generic enumeration (its continuous latents inside
    the data plate then need integrating out by :mod:`probgen.marginal`), not its own code (a
    family such as the VAE integrates them itself)."""
    cls = type(gm)
    return cls.log_prob_items is GenerativeModel.log_prob_items and cls.log_prob_draws in (
        GenerativeModel.log_prob_draws,
        _FunctionModel.log_prob_draws,
    )


_MODELS: dict[str, type[GenerativeModel]] = {}


def register_model(cls: type[GenerativeModel]) -> None:
    """Register a model class by name so ``probgen.load`` can rebuild it from its config."""
    _MODELS[cls.__name__] = cls


def registered_model(name: str) -> type[GenerativeModel] | None:
    """The registered model class called ``name`` (families register on import)."""
    if name not in _MODELS and importlib.util.find_spec("probgen.models") is not None:
        importlib.import_module("probgen.models")  # families register themselves on import
    return _MODELS.get(name)


class _FunctionModel(GenerativeModel):
    """A user's Pyro function (and optional guide) as a :class:`GenerativeModel`."""

    nan_hint = (
        "Or pass missing='marginalize' to probgen.fit to read NaN in the observed data as missing "
        "cells (masked observations)."
    )

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
        # NaN reaches the model only from missing="marginalize" (prepare_data refuses it): the
        # observed sites then mask their missing cells (probgen.masking)
        if data is not None and has_missing(data):
            with MaskMissing():
                return self._call(self.fn, data, kwargs)
        return self._call(self.fn, data, kwargs)

    def guide(self, data: Any = None, **kwargs: Any) -> Any:
        if self._guide is None:
            return None
        if data is not None and has_missing(data):
            with MaskMissing():
                return self._call(self._guide, data, kwargs)
        return self._call(self._guide, data, kwargs)

    @staticmethod
    def _call(fn: Callable[..., Any], data: Any, kwargs: Mapping[str, Any]) -> Any:
        if isinstance(data, ModelArgs):
            return data.call(fn, **kwargs)
        return fn(data, **kwargs)

    def prepare_data(self, data: Any) -> Any:
        """One data array (see :meth:`GenerativeModel.prepare_data`), or the model's arguments: a
        mapping bound by name (a DataFrame's columns too) or a tuple bound positionally, each
        argument converted (floats to the model's type, integer codes kept, the observed response
        to the type its site generates)."""
        if isinstance(data, ModelArgs):
            return data
        if not is_argument_data(self.fn, data):
            return super().prepare_data(data)
        return self._prepare_args(data, allow_nan=False)

    def _prepare_args(self, data: Any, *, allow_nan: bool) -> ModelArgs:
        args = bind_arguments(
            self.fn, data, dtype=self.dtype or torch.get_default_dtype(), allow_nan=allow_nan
        )
        gappy = [
            k
            for k, v in args.values.items()
            if isinstance(v, Tensor) and v.is_floating_point() and nan_cells(v) is not None
        ]
        # which arguments the observed sites read; unvalidated, so NaN in a covariate reaches
        # the check below rather than a distribution's argument check
        with isolated_rng(None), pyro.poutine.block(), torch.no_grad(), pyro.validation_enabled(False):
            try:
                trace = pyro.poutine.trace(self.model).get_trace(args)
            except (ValueError, RuntimeError, IndexError) as err:
                if not gappy:
                    raise
                first = str(err).split(chr(10))[0]
                raise ValueError(
                    f"{self.name} fails on data whose argument(s) {gappy} hold NaN ({first}); NaN may "
                    "mark missing cells of observed data only (missing='marginalize'), not of covariates."
                ) from None
        sites = [s for s in sample_sites(trace) if s["is_observed"]]
        reads = [
            k for k, v in args.values.items() if isinstance(v, Tensor) and any(_reads(s, v) for s in sites)
        ]
        for k in gappy:
            if k not in reads:
                raise ValueError(
                    f"data[{k!r}] has {int(torch.isnan(args.values[k]).sum())} NaN values, but no observed "
                    "site reads it (a covariate); missing='marginalize' masks missing cells of observed "
                    "data only. Drop or impute the covariate's missing values."
                )
        roles = self.roles(args)
        observed = {k: (roles.data_dtype or args.values[k].dtype) for k in reads}
        # an integer-valued response with missing cells stays floating (NaN has no integer code);
        # its sites read the filled cells as whole numbers
        observed = {
            k: (
                args.values[k].dtype
                if not want.is_floating_point and nan_cells(args.values[k]) is not None
                else want
            )
            for k, want in observed.items()
        }
        return with_dtypes(args, self.dtype or roles.model_dtype, observed)

    # ------------------------------------------------------------------- missing values
    def prepare_missing(self, data: Any) -> Any:
        """Data prepared as :meth:`prepare_data` does, NaN kept in the observed data (a masked
        observation: each missing cell drops out of the likelihood, see :mod:`probgen.masking`).
        NaN in a covariate is refused."""
        if isinstance(data, ModelArgs):
            return data
        if is_argument_data(self.fn, data):
            return self._prepare_args(data, allow_nan=True)
        t = as_tensor(data, "data", dtype=self.dtype, allow_nan=True)
        if nan_cells(t) is None or not t.is_floating_point():
            return self.prepare_data(t)
        if t.dim() == 0:
            raise ValueError("data is a single missing number (NaN); pass an array of items.")
        if self.dtype is None and t.dtype != torch.get_default_dtype():
            t = t.to(torch.get_default_dtype())
        with isolated_rng(None), pyro.poutine.block(), torch.no_grad():
            trace = pyro.poutine.trace(self.model).get_trace(t)
        if not any(_reads(s, t) for s in sample_sites(trace) if s["is_observed"]):
            raise ValueError(
                f"data has missing cells (NaN), but no observed site of {self.name} reads the data "
                "whole or as its slices; missing='marginalize' masks the cells of observed data."
            )
        want = self.roles(t).data_dtype
        return t.to(want) if want is not None and want.is_floating_point and want != t.dtype else t

    def missing_cells(self, data: Any) -> Tensor | None:
        """The NaN cells of the observed data in prepared ``data`` (None when complete)."""
        target = self._missing_target(data, required=False)
        return None if target is None else nan_cells(target)

    def _missing_target(self, data: Any, *, required: bool = True) -> Tensor | None:
        if isinstance(data, ModelArgs):
            found = [
                k
                for k in data.observed
                if isinstance(data.values[k], Tensor)
                and data.values[k].is_floating_point()
                and nan_cells(data.values[k]) is not None
            ]
            if len(found) > 1:
                raise ValueError(
                    f"data has missing cells in {len(found)} observed arguments ({', '.join(found)}); "
                    "impute fills one observed argument at a time: pass the others complete."
                )
            return data.values[found[0]] if found else None
        if isinstance(data, Tensor) and data.is_floating_point() and nan_cells(data) is not None:
            return data
        return None

    def impute_items(
        self,
        data: Any,
        params: Mapping[str, Tensor],
        *,
        method: str = "mean",
        num_samples: int = 1,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Copies of the observed data with the missing cells filled (see :func:`probgen.masking.impute`)."""
        target = self._missing_target(data)
        if target is None:
            whole = data if isinstance(data, Tensor) else next(iter(data.values[k] for k in data.observed))
            return whole.clone().unsqueeze(0).expand(num_samples, *whole.shape).clone()
        return torch.stack(
            [
                impute(self, data, target, params, method=method, generator=generator)
                for _ in range(num_samples)
            ]
        )

    def imputed_like(self, given: Any, data: Any, filled: Tensor) -> Any:
        """``filled`` (the completed observed data) in the form ``given`` came in: a model's
        arguments come back as given (a dict, DataFrame or tuple), the completed argument in place."""
        if not isinstance(data, ModelArgs):
            return like_input(given, filled)
        target = self._missing_target(data)
        name = next(k for k, v in data.values.items() if v is target) if target is not None else None
        if given is None:  # the training data: the arguments as a dict of prepared tensors
            return {**data.values, name: filled} if name else dict(data.values)
        if name is None:
            return given
        column = filled.detach().cpu().numpy()
        if hasattr(given, "columns") and hasattr(given, "copy"):
            out = given.copy()
            out[name] = column
            return out
        if isinstance(given, tuple):
            names = list(data.values)
            return tuple(column if names[i] == name else v for i, v in enumerate(given))
        out_map = dict(given)
        out_map[name] = filled if isinstance(given[name], Tensor) else column
        return out_map

    @property
    def has_guide(self) -> bool:
        return self._guide is not None

    @property
    def name(self) -> str:
        return getattr(self.fn, "__name__", "model")

    def __call__(self, data: Any = None, **kwargs: Any) -> Any:
        return self.fn(data, **kwargs)

    def num_items(self, data: Any) -> int:
        """Items of the data plate; a model with no plate over its data (one sequence in a
        ``pyro.markov`` loop) has one item, the whole data."""
        if self.roles(data).data_plate is None:
            return 1
        return len(data)

    def log_prob_draws(
        self, data: Any, draws: Mapping[str, Tensor], fixed: Mapping[str, Tensor] | None = None
    ) -> Tensor:
        """Every draw at once under an outer plate where the model broadcasts (else one by one)."""
        return pointwise_log_likelihood(self, data, draws, fixed)

    def __repr__(self) -> str:
        found = last_memo(self, "roles")
        if self.data_plate_name:
            return f"probgen.model({self.name}, data_plate={self.data_plate_name!r} (given))"
        if found is None:
            return f"probgen.model({self.name}, data plate found by tracing at the first fit)"
        return f"probgen.model({self.name}, data_plate={found.data_plate!r} (found by tracing))"


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


def _reads(site: Mapping[str, Any], v: Tensor) -> bool:
    """Whether observed ``site`` reads ``v`` (itself, or a view of it once its NaN are masked)."""
    return site["value"] is v or masked_view(site, v) is not None
