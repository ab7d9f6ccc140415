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

from probgen.state import isolated_rng

__all__ = ["GenerativeModel", "SiteRoles", "model", "register_model"]


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
    axis falls on, then the one that encloses the others (first in the plate stack).  With no
    size match, the enclosing plate of the first observed site.
    """
    for s in observed:
        frames = [f for f in s["cond_indep_stack"] if f.vectorized]
        if not frames:
            continue
        sized = [f for f in frames if n_items is not None and f.size == n_items]
        if len(sized) > 1:
            lead = _site_dim_of_items(s)
            on_lead = [f for f in sized if f.dim == lead]
            sized = on_lead or sized
        return (sized or frames)[0].name
    return None


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
    plates = {f.name for s in sites for f in s["cond_indep_stack"] if f.vectorized}
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


class GenerativeModel(abc.ABC):
    """A Pyro model/guide pair plus the hooks probgen's backends and tools use.

    Subclasses implement :meth:`model` (and optionally :meth:`guide`).  ``model(data)`` scores
    data; ``model(None)`` generates.  Discrete latent sites are enumerated by every backend
    (mark them ``infer={"enumerate": "parallel"}`` or leave them unmarked).  This class is the
    whole protocol: every hook a backend or a tool may call is declared here with its generic
    default, and families override the ones they have closed forms for.

    Data and roles
        :meth:`prepare_data` (validate and convert at the public boundary), :meth:`num_items`,
        :meth:`num_observations` (BIC's ``n``), :meth:`roles` (site roles found by tracing).
    Scoring and latents (generic defaults built on Pyro's enumeration)
        :meth:`log_prob_items`, :meth:`latent_posterior`, :meth:`latent_map`,
        :meth:`sample_items`, :meth:`num_parameters`.
    Closed-form EM (optional; ``offers("m_step")`` tells whether a model has them)
        :meth:`init_params`, :meth:`e_step`, :meth:`m_step`, :meth:`em_defaults`,
        :meth:`em_convergence_scale`.
    SVI fast path (optional)
        :meth:`svi_objective` (a plain-PyTorch ELBO estimate over the model's own weights).
    Posterior draws
        :meth:`exchangeable_sites` (components that may swap labels) and
        :meth:`align_posterior` (relabel draws so component ``k`` means one thing).
    ArviZ, persistence, pictures
        :meth:`observed_arrays`, :meth:`data_to_arrays`/:meth:`data_from_arrays` (the training
        data in a saved fit), :meth:`get_config` (constructor arguments, so ``probgen.load``
        can rebuild a registered family), :meth:`plot_fit`.
    Family helpers on the fit
        :attr:`fit_helpers`: methods ``name(fit, ...)`` reachable as ``fit.name(...)``.

    Every concrete subclass is registered by class name so that ``probgen.load`` rebuilds it
    from its saved configuration (no code is stored in the file).

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
    #: Names of methods ``name(self, fit, *args, **kwargs)`` that fits of this model expose as
    #: ``fit.name(*args, **kwargs)`` (``encode``/``decode`` for VAEs, ``query`` for networks).
    fit_helpers: tuple[str, ...] = ()
    #: True when NaN in the data means a missing value the model sums out (Bayesian networks)
    #: rather than bad input; ``probgen.testing.check_model`` then skips its NaN-refusal check.
    accepts_missing: bool = False
    #: What the model's likelihood is: ``"normalised"`` (a proper density, every backend's
    #: default), ``"unnormalised"`` (known up to its normalising constant, e.g. an energy-based
    #: RBM: likelihood-based backends refuse it, ``"cd"`` serves it) or ``"none"`` (an implicit
    #: model that only generates, e.g. a GAN: served by ``"adversarial"``).
    density: str = "normalised"

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

    def offers(self, hook: str) -> bool:
        """Whether this model overrides the protocol hook ``hook`` (a closed form, a fast path)."""
        mine = getattr(type(self), hook, None)
        return mine is not None and mine is not getattr(GenerativeModel, hook, None)

    # ------------------------------------------------------------------------------- roles
    def roles(self, data: Any) -> SiteRoles:
        """Site roles found by tracing :meth:`model` on ``data`` (cached per data shape).

        The cache is per torch default dtype too: a model's tensors follow it.
        """
        key = (_shape_key(data), torch.get_default_dtype())
        cache = self.__dict__.setdefault("_roles_cache", {})
        if key not in cache:
            n_items = self.num_items(data) if data is not None else None
            cache[key] = find_roles(
                self.model, data, self.data_plate_name, n_items, probe_dtypes=self.dtype is None
            )
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

        Accepts numpy arrays of any numeric dtype, torch tensors, pandas objects and nested
        lists.  With ``self.dtype`` set, floating data become that type; otherwise the type is
        the model's own, found by tracing it once on the data (a float32 model gets float32
        data whatever the input, a float64 model float64, categorical observations integers).
        Raises ``ValueError`` on NaN/inf and on empty data, ``TypeError`` on non-numeric data.
        """
        if self.dtype is not None:
            return as_tensor(data, "data", dtype=self.dtype)
        t = as_tensor(data, "data")
        probe = t.to(torch.get_default_dtype()) if t.dtype != torch.get_default_dtype() else t
        want = self.roles(probe).data_dtype or torch.get_default_dtype()
        if want == t.dtype:
            return t
        if not want.is_floating_point and t.is_floating_point():
            frac = t != torch.round(t)
            if frac.any():
                raise ValueError(
                    f"data holds {int(frac.sum())} non-integer values, but {self.name} observes "
                    f"integer categories (e.g. {float(t[frac][0])!r}); pass integer labels."
                )
        return t.to(want)

    def num_items(self, data: Any) -> int:
        """Number of items in the data plate (the data's leading axis)."""
        return len(data)

    def num_observations(self, data: Any) -> int:
        """The ``n`` in BIC's ``k log n`` (items by default; HMMs count time steps)."""
        return self.num_items(data)

    # -------------------------------------------------------------------- scoring hooks
    def log_prob_items(self, data: Any, params: Mapping[str, Tensor]) -> Tensor:
        """Per-item log-likelihood with discrete latents summed out, at ``params``.

        Generic default: Pyro enumeration contracted down to the data plate; a discrete latent
        outside the data plate is weighted by its posterior (see
        :func:`probgen.posterior.pointwise_log_likelihood`).
        """
        from probgen.posterior import pointwise_log_likelihood, split_params

        draws, fixed = split_params(self, data, params)
        return pointwise_log_likelihood(self, data, {k: v.unsqueeze(0) for k, v in draws.items()}, fixed)[0]

    def log_evidence(self, data: Any, params: Mapping[str, Tensor]) -> float:
        """Total log-likelihood ``log p(data | params)``, every discrete latent summed out.

        Equals ``log_prob_items(...).sum()`` unless a discrete latent sits outside the data
        plate; BIC and AIC use this.
        """
        roles = self.roles(data)
        if not roles.outer_discrete_sites or self.offers("log_prob_items"):
            return float(self.log_prob_items(data, params).sum())
        from probgen.posterior import log_evidence, split_params

        draws, fixed = split_params(self, data, params)
        return float(log_evidence(self, data, draws, fixed))

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
        """Free parameters among the global sites and ``pyro.param`` sites (for BIC/AIC)."""
        roles = self.roles(data)
        from probgen.posterior import split_params, traced_with

        draws, fixed = split_params(self, data, params)
        trace = traced_with(self, data, draws, fixed)
        k = sum(free_parameters(trace.nodes[n]["fn"].support, params[n]) for n in roles.global_sites)
        for n in roles.param_sites:
            k += free_parameters(trace.nodes[n]["kwargs"].get("constraint", dist.constraints.real), params[n])
        return k

    # ------------------------------------------------------------------ SVI fast path
    def svi_objective(self, data: Any) -> Any:
        """Optional SVI fast path: the model's own plain-PyTorch estimate of its ELBO.

        Called by the SVI backend inside the fit (seeded, with a fresh Pyro param store), before
        any step.  Returns an object with

        ``parameters()``
            The trainable leaf tensors, registered in Pyro's param store (the same objects,
            e.g. through ``pyro.module``), freshly initialised for this fit.
        ``loss(index, num_particles)``
            A differentiable estimate of the negative ELBO of the whole ``data``, from the
            items at ``index`` (a long tensor; ``None`` for every item) scaled up as Pyro's
            subsampled data plate scales them.  Its expectation must equal the loss of the
            model's Pyro ``model``/``guide`` pair under ``Trace_ELBO`` (e.g. an analytic KL
            in place of a sampled one): what is optimised does not change, only its speed.
        ``params()``
            The fit's point estimates (``fit.params``): every weight, by its param-store name.

        With it, SVI runs one plain PyTorch loop (no Pyro traces) unless ``elbo=`` names a Pyro
        ELBO; either way ``fit.params`` comes from ``params()`` and the local latents are treated
        as amortised by the guide (no posterior draws of them).  Default: no fast path.
        """
        raise TypeError(f"{self.name} offers no SVI objective of its own; SVI uses Pyro's ELBO.")

    def likelihood_problem(self) -> str | None:
        """Why likelihood-based backends (EM, SVI, MCMC, enumeration) cannot serve this model, or None."""
        if self.density == "unnormalised":
            return (
                "its likelihood is known only up to a normalising constant (an energy-based model), "
                "so maximising it would ignore that constant"
            )
        if self.density == "none":
            return "it has no likelihood (an implicit model that only generates)"
        return None

    # ------------------------------------------------------------------ energy models
    def free_energy(self, data: Any, params: Mapping[str, Tensor]) -> Tensor:
        """Optional, for energy-based models: the free energy ``F(x)`` per item, differentiable.

        ``p(x) = exp(-F(x)) / Z``.  The contrastive-divergence backend ``"cd"`` serves any model
        offering this hook, :meth:`gibbs_step` and :meth:`init_params`: it ascends
        ``-mean F(data) + mean F(negative particles)`` with respect to ``params`` (leaf tensors
        with ``requires_grad``), the negative particles coming from :meth:`gibbs_step` chains.
        """
        raise TypeError(f"{self.name} is not an energy-based model (no free energy).")

    def free_energy_grad(
        self, data: Tensor, weights: Tensor, params: Mapping[str, Tensor]
    ) -> dict[str, Tensor]:
        """Optional: the gradient of ``sum_i weights[i] * F(data[i])`` with respect to each of ``params``.

        The ``"cd"`` backend uses it when offered, in place of autograd through :meth:`free_energy`
        (same numbers; on small minibatches autograd's bookkeeping costs more than the algebra).
        """
        raise TypeError(f"{self.name} offers no closed-form free-energy gradient; CD uses autograd.")

    def gibbs_step(
        self, data: Tensor, params: Mapping[str, Tensor], *, generator: torch.Generator | None = None
    ) -> Tensor:
        """Optional, for energy-based models: one full Gibbs sweep from items ``data`` (no gradient).

        Returns new items of the same shape whose distribution leaves ``p(x)`` invariant (for an RBM,
        sample the hidden layer given the visible one, then the visible given the hidden).
        """
        raise TypeError(f"{self.name} is not an energy-based model (no Gibbs step).")

    # ------------------------------------------------------------------ implicit models
    def adversarial_objective(self, data: Any) -> Any:
        """Optional, for implicit models: the networks the ``"adversarial"`` backend trains.

        Called inside the fit (seeded, with a fresh Pyro param store) before any step.  Returns an
        object with ``generator_parameters()`` and ``discriminator_parameters()`` (trainable leaf
        tensors, freshly initialised), ``generate(n)`` (``n`` differentiable fake items),
        ``discriminate(x)`` (a logit per item: real vs fake) and ``params()`` (every weight by
        name: ``fit.params``).  Default: not an implicit model.
        """
        raise TypeError(f"{self.name} offers no adversarial objective.")

    # ------------------------------------------------------------------ closed-form EM
    def init_params(self, data: Any, *, init: Any, generator: torch.Generator) -> dict[str, Tensor]:
        """Starting values of the global sites for closed-form EM (strategy name or dict)."""
        raise TypeError(f"{self.name} offers no closed-form EM start; EM uses its generic path.")

    def e_step(self, data: Any, params: Mapping[str, Tensor]) -> tuple[Any, float]:
        """Expected sufficient statistics and the total log-likelihood at ``params``."""
        raise TypeError(f"{self.name} offers no closed-form E-step; EM uses its generic path.")

    def m_step(self, data: Any, stats: Any) -> dict[str, Tensor]:
        """Closed-form maximiser of the expected complete-data log-likelihood."""
        raise TypeError(f"{self.name} offers no closed-form M-step; EM uses its generic path.")

    def chunk_stats(self, data: Any, params: Mapping[str, Tensor]) -> tuple[dict[str, Tensor], float]:
        """Optional, for EM over data in chunks: additive expected sufficient statistics.

        Returns ``(stats, log_lik)`` for the items in ``data`` (one chunk) at ``params``: every
        tensor in ``stats`` is a sum over the chunk's items, so the statistics of the whole data
        are the key-wise sums over chunks, and ``log_lik`` is the chunk's total log-likelihood.
        EM with ``chunk_size=`` calls this with :meth:`m_step_from_stats`.
        """
        raise TypeError(f"{self.name} offers no additive sufficient statistics; EM needs the data in memory.")

    def m_step_from_stats(self, stats: Mapping[str, Tensor], num_items: int) -> dict[str, Tensor]:
        """Optional: the closed-form M-step from summed :meth:`chunk_stats` over ``num_items`` items.

        May take a keyword ``previous`` (the parameters the statistics were computed at, e.g. to
        keep an emptied component); EM passes it when the hook's signature has it.
        """
        raise TypeError(f"{self.name} offers no M-step from sufficient statistics.")

    def svi_defaults(self, data: Any) -> dict[str, Any]:
        """SVI options this model prefers on ``data`` (e.g. minibatches for a network on a long
        text); the user's options override them.  Default: none."""
        return {}

    def em_defaults(self) -> dict[str, Any]:
        """EM options this model prefers (``max_iter``, ``tol``, ``n_init``, ``init``)."""
        return {}

    def em_convergence_scale(self, data: Any) -> float:
        """EM's ``tol`` applies to the log-likelihood change divided by this (items by default)."""
        return float(self.num_items(data))

    # ------------------------------------------------------------------ posterior draws
    def exchangeable_sites(self, data: Any, params: Mapping[str, Tensor]) -> dict[str, int]:
        """Sites whose components may swap labels, with the component axis of each value.

        Generic default (:func:`probgen.relabel.find_exchangeable`): the global sites indexed
        by an enumerated discrete site, kept only when permuting them together leaves the
        likelihood unchanged at ``params``.  Families name theirs directly.
        """
        from probgen.relabel import find_exchangeable

        return find_exchangeable(self, data, params)

    def align_posterior(
        self, posterior: Mapping[str, Tensor], data: Any = None, params: Mapping[str, Tensor] | None = None
    ) -> dict[str, Tensor]:
        """Relabel draws ``(chain, draw, ...)`` so that component ``k`` means one thing.

        Generic default: :func:`probgen.relabel.relabel` over :meth:`exchangeable_sites`, found
        at one posterior draw (``params`` supplies the ``pyro.param`` values, if any).
        """
        from probgen.relabel import relabel

        if data is None or not posterior:
            return dict(posterior)
        one = {k: v[0, -1] for k, v in posterior.items()}
        axes = self.exchangeable_sites(data, {**(params or {}), **one})
        return relabel(posterior, axes) if axes else dict(posterior)

    # ------------------------------------------------------------ ArviZ, saving, pictures
    def observed_arrays(self, data: Any) -> dict[str, Tensor]:
        """Observed data by variable name for ArviZ's ``observed_data`` group."""
        observed = self.roles(data).observed_sites
        return {observed[0] if len(observed) == 1 else "obs": data} if isinstance(data, Tensor) else {}

    def data_to_arrays(self, data: Any) -> dict[str, Tensor]:
        """The prepared data as named tensors, for saving (default: one tensor, ``"data"``)."""
        return {"data": data} if isinstance(data, Tensor) else {}

    def data_from_arrays(self, arrays: Mapping[str, Tensor]) -> Any:
        """Rebuild prepared data from :meth:`data_to_arrays`' tensors (``None`` when absent)."""
        return self.prepare_data(arrays["data"]) if "data" in arrays else None

    def get_config(self) -> dict[str, Any] | None:
        """Constructor arguments that rebuild this model (``None``: the code is the user's)."""
        return None

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


_MODELS: dict[str, type[GenerativeModel]] = {}


def register_model(cls: type[GenerativeModel]) -> None:
    """Register a model class by name so ``probgen.load`` can rebuild it from its config."""
    _MODELS[cls.__name__] = cls


def registered_model(name: str) -> type[GenerativeModel] | None:
    """The registered model class called ``name`` (families register on import)."""
    if name not in _MODELS:
        import importlib.util

        if importlib.util.find_spec("probgen.models") is not None:
            importlib.import_module("probgen.models")  # families register themselves on import
    return _MODELS.get(name)


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
        cache = self.__dict__.get("_roles_cache")
        plate = next(reversed(cache.values())).data_plate if cache else self.data_plate_name
        how = "given" if self.data_plate_name else "found by tracing"
        return f"probgen.model({self.name}, data_plate={plate!r} ({how}))"


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
