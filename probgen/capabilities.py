"""Capabilities: what a backend or a tool may ask of a model beyond the model protocol.

Every model has the small protocol of :class:`probgen.GenerativeModel` (its Pyro pair, data
preparation, per-item scores, latent posterior and MAP, generation, its configuration).  Anything
more is a capability: a ``runtime_checkable`` Protocol below.  A family offers one by defining its
methods (no registration, no flags); a backend lists the capabilities it requires in its
``requires`` and :func:`missing` names those a model lacks, so a refusal says what is missing.

==========================  =====================================================================
capability                  who uses it
==========================  =====================================================================
:class:`StartingValues`     ``"mcmc"`` (``init="auto"``): a start per chain from the family
:class:`ClosedFormEM`       ``"em"``: closed-form E and M steps (else EM's generic path)
:class:`ChunkedEM`          ``"em"`` with ``chunk_size=``: additive sufficient statistics
:class:`ScaledConvergence`  ``"em"``: what its ``tol`` is relative to (items by default)
:class:`OwnSVIObjective`    ``"svi"``: the model's own plain-PyTorch estimate of its ELBO
:class:`SVIDefaults`        ``"svi"``: options the model prefers on its data
:class:`EnergyBased`        ``"cd"``: free energy and a Gibbs sweep (contrastive divergence)
:class:`FreeEnergyGradient` ``"cd"``: the free energy's gradient in closed form
:class:`Implicit`           ``"adversarial"``: generator and discriminator networks
:class:`Exchangeable`       posterior tools: components that may swap labels
:class:`AlignsPosterior`    posterior tools: the family relabels its own draws
:class:`MissingValues`      ``probgen.fit(..., missing="marginalize")``: NaN read as missing
:class:`MasksObserved`      every Pyro backend with ``missing="marginalize"``: the model masks
                            the missing cells of its observed sites itself (user models)
:class:`Imputes`            ``fit.impute``: missing cells filled given the observed ones
:class:`ImputesLike`        ``fit.impute``: completed data in the form they were given
:class:`ImputesOverDraws`   ``fit.impute``: one posterior answer over all parameter draws
:class:`Plottable`          ``fit.plot``
:class:`DataArrays`         ``fit.save``/``probgen.load``: prepared data that are not one tensor
:class:`PreparesLike`       every tool of a fit: new data read as the training data were
:class:`ObservedArrays`     ``fit.to_arviz``: the observed data by variable name
:class:`EventDims`          ``fit.to_arviz``: names of the event dims that no plate names
==========================  =====================================================================
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor

__all__ = [
    "AdversarialObjective",
    "AlignsPosterior",
    "ChunkedEM",
    "ClosedFormEM",
    "DataArrays",
    "EnergyBased",
    "EventDims",
    "Exchangeable",
    "FreeEnergyGradient",
    "Implicit",
    "Imputes",
    "ImputesLike",
    "ImputesOverDraws",
    "MasksObserved",
    "MissingValues",
    "ObservedArrays",
    "OwnSVIObjective",
    "Plottable",
    "PreparesLike",
    "SVIDefaults",
    "SVIObjective",
    "ScaledConvergence",
    "StartingValues",
    "likelihood_problem",
    "missing",
]


@runtime_checkable
class StartingValues(Protocol):
    """Starting values of the global sites: EM's start, and MCMC's per chain (``init="auto"``)."""

    def init_params(self, data: Any, *, init: Any, generator: torch.Generator) -> dict[str, Tensor]:
        """Starting values (``init``: a strategy name or a dict by site) drawn with ``generator``."""
        ...


@runtime_checkable
class ClosedFormEM(Protocol):
    """Closed-form expectation-maximisation."""

    def init_params(self, data: Any, *, init: Any, generator: torch.Generator) -> dict[str, Tensor]:
        """Starting values of the global sites (``init``: a strategy name or a dict by site)."""
        ...

    def e_step(self, data: Any, params: Mapping[str, Tensor]) -> tuple[Any, float]:
        """Expected sufficient statistics and the total log-likelihood at ``params``."""
        ...

    def m_step(self, data: Any, stats: Any) -> dict[str, Tensor]:
        """The maximiser of the expected complete-data log-likelihood."""
        ...

    def em_defaults(self) -> dict[str, Any]:
        """EM options this model prefers (``max_iter``, ``tol``, ``n_init``, ``init``)."""
        ...


@runtime_checkable
class ScaledConvergence(Protocol):
    """EM's ``tol`` applies to the log-likelihood change divided by this (default: items)."""

    def em_convergence_scale(self, data: Any) -> float: ...


@runtime_checkable
class ChunkedEM(Protocol):
    """EM over data read chunk by chunk: statistics that add up over items."""

    def init_params(self, data: Any, *, init: Any, generator: torch.Generator) -> dict[str, Tensor]: ...

    def chunk_stats(self, data: Any, params: Mapping[str, Tensor]) -> tuple[dict[str, Tensor], float]:
        """``(stats, log_lik)`` of one chunk: every tensor a sum over the chunk's items."""
        ...

    def m_step_from_stats(
        self,
        stats: Mapping[str, Tensor],
        num_items: int,
        *,
        previous: Mapping[str, Tensor] | None = None,
    ) -> dict[str, Tensor]:
        """The M-step from statistics summed over ``num_items`` items (``previous``: the
        parameters they were computed at, e.g. to keep an emptied component)."""
        ...


class SVIObjective(Protocol):
    """What :meth:`OwnSVIObjective.svi_objective` returns.

    Its loss must have the expectation of the model's Pyro ``model``/``guide`` loss under
    ``Trace_ELBO`` (an analytic KL in place of a sampled one, say): only the speed changes.
    """

    def parameters(self) -> Iterable[Tensor]:
        """Trainable leaf tensors, registered in Pyro's param store, freshly initialised."""
        ...

    def loss(self, index: Tensor | None, num_particles: int) -> Tensor:
        """Differentiable negative ELBO of the whole data from the items at ``index`` (every
        item when None), scaled up as Pyro's subsampled plate scales them."""
        ...

    def params(self) -> dict[str, Tensor]:
        """The fit's point estimates: every weight by its param-store name."""
        ...


@runtime_checkable
class OwnSVIObjective(Protocol):
    """The model's own ELBO estimate in plain PyTorch (no Pyro traces per step)."""

    def svi_objective(self, data: Any) -> SVIObjective: ...


@runtime_checkable
class SVIDefaults(Protocol):
    """SVI options the model prefers on ``data``; the user's options override them."""

    def svi_defaults(self, data: Any) -> dict[str, Any]: ...


@runtime_checkable
class EnergyBased(Protocol):
    """An energy-based model, ``p(x) = exp(-F(x)) / Z``, fitted by contrastive divergence."""

    def free_energy(self, data: Any, params: Any = None) -> Tensor:
        """``F(x)`` per item, differentiable in ``params``."""
        ...

    def gibbs_step(
        self, data: Tensor, params: Mapping[str, Tensor], *, generator: torch.Generator | None = None
    ) -> Tensor:
        """One full Gibbs sweep from items ``data`` that leaves ``p(x)`` invariant."""
        ...

    def init_params(self, data: Any, *, init: Any, generator: torch.Generator) -> dict[str, Tensor]: ...


@runtime_checkable
class FreeEnergyGradient(Protocol):
    """The gradient of ``sum_i weights[i] F(data[i])`` in closed form (in place of autograd)."""

    def free_energy_grad(
        self, data: Tensor, weights: Tensor, params: Mapping[str, Tensor]
    ) -> dict[str, Tensor]: ...


class AdversarialObjective(Protocol):
    """What :meth:`Implicit.adversarial_objective` returns."""

    def generator_parameters(self) -> Iterable[Tensor]: ...

    def discriminator_parameters(self) -> Iterable[Tensor]: ...

    def generate(self, n: int) -> Tensor:
        """``n`` fake items, differentiable in the generator's parameters."""
        ...

    def discriminate(self, x: Tensor) -> Tensor:
        """A logit per item: real against fake."""
        ...

    def params(self) -> dict[str, Tensor]: ...


@runtime_checkable
class Implicit(Protocol):
    """An implicit model (no likelihood) trained generator against discriminator."""

    def adversarial_objective(self, data: Any) -> AdversarialObjective: ...


@runtime_checkable
class Exchangeable(Protocol):
    """Sites whose components may swap labels, with the component axis of each value."""

    def exchangeable_sites(self, data: Any, params: Mapping[str, Tensor]) -> dict[str, int]: ...


@runtime_checkable
class AlignsPosterior(Protocol):
    """The family relabels draws ``(chain, draw, ...)`` so that component ``k`` means one thing."""

    def align_posterior(
        self,
        posterior: Mapping[str, Tensor],
        data: Any = None,
        params: Mapping[str, Tensor] | None = None,
    ) -> dict[str, Tensor]: ...


@runtime_checkable
class MissingValues(Protocol):
    """NaN in the data read as a cell missing at random, marginalised out of every score.

    ``probgen.fit(model, X, method="em", missing="marginalize")`` prepares the data with
    ``prepare_missing`` instead of ``prepare_data``, and the fit prepares new data the same way;
    the model's scores (``log_prob_items``, ``latent_posterior``, ...) and its EM hooks then treat
    a NaN cell as missing.  A minimal implementation::

        class Coins(GenerativeModel):
            def prepare_missing(self, data):
                t = torch.as_tensor(data, dtype=torch.float64)
                if torch.isinf(t).any():
                    raise ValueError("data has infinite values; NaN marks a missing cell.")
                return t  # every score skips NaN cells (they contribute probability one)
    """

    def prepare_missing(self, data: Any) -> Any:
        """``data`` validated as :meth:`~probgen.GenerativeModel.prepare_data` does, NaN kept."""
        ...


@runtime_checkable
class MasksObserved(Protocol):
    """Missing cells masked inside the model: its observed sites drop their NaN cells from the
    likelihood (a user's model, through :class:`probgen.masking.MaskMissing`), so every backend
    that runs the model through Pyro (SVI, MCMC, enumeration, EM's generic path) fits the
    observed cells with ``missing="marginalize"``."""

    def prepare_missing(self, data: Any) -> Any: ...

    def missing_cells(self, data: Any) -> Tensor | None:
        """The NaN cells of the observed data in prepared ``data`` (None when complete)."""
        ...


@runtime_checkable
class Imputes(Protocol):
    """Missing cells (NaN) filled given the observed cells of their item (``fit.impute``).

    ``impute_items`` returns ``(num_samples, *data.shape)`` copies of the prepared ``data``, the
    observed cells unchanged: ``method="mean"`` the conditional means (one copy),
    ``method="sample"`` draws from the conditional distribution of the missing cells.  A model
    whose items are not rows of a matrix (sequences) also offers :class:`ImputesLike`; one whose
    ``"mean"`` over posterior draws is not the mean of each draw's answer offers
    :class:`ImputesOverDraws`.
    """

    def impute_items(
        self,
        data: Any,
        params: Mapping[str, Tensor],
        *,
        method: str = "mean",
        num_samples: int = 1,
        generator: torch.Generator | None = None,
    ) -> Tensor: ...


@runtime_checkable
class ImputesLike(Protocol):
    """``fit.impute``: completed data returned in the form the user gave them, for items that are
    not rows of a matrix (sequences, a model's named arguments)."""

    def imputed_like(self, given: Any, data: Any, filled: Tensor) -> Any: ...


@runtime_checkable
class ImputesOverDraws(Protocol):
    """``fit.impute(method="mean")`` of a posterior fit: one answer over all parameter draws,
    where it is not the mean of each draw's answer (the most probable state under the
    posterior predictive)."""

    def impute_over_draws(self, data: Any, param_sets: Sequence[Mapping[str, Tensor]]) -> Tensor: ...


@runtime_checkable
class Plottable(Protocol):
    """A picture of the fitted model over ``data`` on matplotlib axes (created when None)."""

    def plot_fit(self, data: Any, params: Mapping[str, Tensor], *, ax: Any = None, **kwargs: Any) -> Any: ...


@runtime_checkable
class DataArrays(Protocol):
    """Prepared data as named tensors for a saved fit, and back (default: one tensor)."""

    def data_to_arrays(self, data: Any) -> dict[str, Tensor]: ...

    def data_from_arrays(self, arrays: Mapping[str, Tensor]) -> Any: ...


@runtime_checkable
class PreparesLike(Protocol):
    """New data read as the training data were: states, vocabularies, columns learnt from them.

    A model that learns part of how it reads data (a network's states when not given) keeps that
    in its prepared data, never in itself; a fit then prepares new data, and generates, against
    its training data ``like``.
    """

    def prepare_like(self, data: Any, like: Any) -> Any:
        """``data`` validated and converted as ``like`` (prepared training data) were."""
        ...

    def sample_like(
        self,
        n: int,
        params: Mapping[str, Tensor],
        like: Any,
        *,
        generator: torch.Generator | None = None,
        **kwargs: Any,
    ) -> dict[str, Any]:
        """:meth:`~probgen.GenerativeModel.sample_items` in the terms of the training data ``like``."""
        ...


@runtime_checkable
class ObservedArrays(Protocol):
    """The observed data by variable name, for ArviZ's ``observed_data`` group."""

    def observed_arrays(self, data: Any) -> dict[str, Tensor]: ...


@runtime_checkable
class EventDims(Protocol):
    """Names of the event dims of sample sites, for ArviZ's dims (plates name the batch dims).

    ``event_dims(data)`` maps a site name to the names of that site's event dims, left to right
    (``{"locs": ("features",), "weights": ("components",)}``); a name of None, a shorter tuple or
    a site left out keeps ArviZ's default ``<site>_dim_<k>``.
    """

    def event_dims(self, data: Any) -> Mapping[str, tuple[str | None, ...]]: ...


def missing(model: Any, *capabilities: type) -> list[str]:
    """The ``capabilities`` that ``model`` does not offer, each with the methods it lacks, e.g.
    ``"EnergyBased (gibbs_step, init_params)"`` (empty when it offers them all)."""
    out = []
    for c in capabilities:
        if isinstance(model, c):
            continue
        members = [n for n, v in vars(c).items() if callable(v) and not n.startswith("_")]
        absent = [n for n in members if getattr(model, n, None) is None]
        out.append(f"{c.__name__} ({', '.join(absent)})" if absent else c.__name__)
    return out


def likelihood_problem(model: Any) -> str | None:
    """Why likelihood-based backends (EM, SVI, MCMC, enumeration) cannot serve ``model``, or None."""
    density = model.density
    if density == "unnormalised":
        return (
            "its likelihood is known only up to a normalising constant (an energy-based model), "
            "so maximising it would ignore that constant"
        )
    if density == "none":
        return "it has no likelihood (an implicit model that only generates)"
    return None
