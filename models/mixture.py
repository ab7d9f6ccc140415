"""Finite mixture models: the machinery the four families share.

Every family (:mod:`probgen.models.gaussian_mixture`, :mod:`probgen.models.discrete_mixture`) is
a Pyro model (priors on every global site, a component label ``"z"`` per item marked for
parallel enumeration) plus closed-form EM hooks in float64, so the same object is fitted by
``probgen.fit(..., method="em" | "svi" | "mcmc")``.  The base class here holds what they have
in common: data validation, starting values, the E-step, the M-step driver, the fit tools,
relabelling of posterior draws and the data plate of the Pyro model.

The EM fast path follows scikit-learn's ``GaussianMixture`` conventions exactly: an E-step
then an M-step per iteration, the lower bound is the mean log-likelihood per item, ``tol`` is
applied to its change, and component sums get ``10 * eps`` so an empty component never divides
by zero.  A component that still empties is re-seeded on the worst-explained item and reported
with a ``ConvergenceWarning``.
"""

from __future__ import annotations

import abc
import importlib
import math
import warnings
import weakref
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import pyro
import pyro.distributions as dist
import torch
from torch import Tensor

from probgen.errors import ConvergenceWarning
from probgen.model import GenerativeModel
from probgen.models._missing import _Patterns, _patterns_of
from probgen.models._mixture_data import _as_matrix
from probgen.models.kmeans import _kmeans, _kmeanspp_indices
from probgen.relabel import relabel
from probgen.roles import slot
from probgen.validation import positive_int

__all__: list[str] = []  # the families live in gaussian_mixture.py and discrete_mixture.py

_INIT_STRATEGIES = ("kmeans", "k-means++", "random", "random_from_data")
_EPS = float(torch.finfo(torch.float64).eps)
_DEFAULT_MAX_ITER = 1000
_DEFAULT_TOL = 1e-8  # nats per item


# --------------------------------------------------------------------------------- helpers
def _check_positive_int(value: Any, name: str) -> int:
    out: int = positive_int(value, name)
    return out


def _check_positive_float(value: Any, name: str, *, allow_zero: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise TypeError(f"{name} must be a number; got {type(value).__name__}.")
    ok = value >= 0 if allow_zero else value > 0
    if not ok or not math.isfinite(value):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be a finite number {bound}; got {value!r}.")
    return float(value)


def _per_data(owner: Any, name: str, data: Tensor, compute: Callable[[], Any], *extra: Any) -> Any:
    """``compute()``, kept beside ``owner`` (:func:`probgen.roles.slot`) while the same ``data``
    tensor, unchanged, comes again with the same ``extra`` key (a freed tensor's memory may be
    reused by the next one: its address alone does not name it)."""
    key = (data.data_ptr(), data._version, tuple(data.shape), *extra)
    kept = slot(
        owner, name, lambda v: v[0]() is data and v[1] == key, lambda: (weakref.ref(data), key, compute())
    )
    return kept[2]


def _subsample(data: Tensor | None, idx: Any, subsample_size: int | None) -> Tensor | None:
    """The items of a subsampled data plate (all of them when not subsampling)."""
    return data if data is None or subsample_size is None else data[idx]


def _logsumexp_rows(log_joint: Tensor) -> tuple[Tensor, Tensor]:
    """Per-row log-normaliser and responsibilities of an ``(n, K)`` log-joint."""
    top = log_joint.amax(1, keepdim=True)
    resp = log_joint - top
    # exp of inputs far below -745 (underflow to 0) takes a slow path in the vectorised exp, up to
    # ten times the normal cost; clamped at -708, the smallest responsibility is 2e-308 instead of 0
    resp.clamp_min_(-708.0).exp_()
    total = resp @ torch.ones(resp.shape[1], 1, dtype=resp.dtype)  # a GEMV beats a row reduction here
    resp.div_(total)
    return (top + total.log_()).squeeze(1), resp


def _initial_resp(x: Tensor, k: int, init: str, generator: torch.Generator) -> Tensor:
    """Starting responsibilities ``(n, K)`` of the strategy ``init`` on the points ``x``."""
    n = len(x)
    if init == "kmeans":
        labels, _ = _kmeans(x, k, generator)
        return torch.nn.functional.one_hot(labels, k).to(torch.float64)
    if init == "random":
        resp = torch.rand(n, k, generator=generator, dtype=torch.float64)
        return resp / resp.sum(1, keepdim=True)
    if init == "k-means++":
        idx = _kmeanspp_indices(x, k, generator)
    else:  # random_from_data
        idx = torch.randperm(n, generator=generator)[:k]
    resp = torch.zeros(n, k, dtype=torch.float64)
    resp[idx, torch.arange(k)] = 1.0
    return resp


def _reseed(resp: Tensor, log_prob: Tensor, empty: Tensor, family: str) -> Tensor:
    """Responsibilities with each ``empty`` component moved onto a worst-explained item (warned)."""
    comps = torch.nonzero(empty).flatten()
    worst = torch.argsort(log_prob)[: len(comps)]
    warnings.warn(
        f"{family}: component(s) {comps.tolist()} emptied during EM (no item assigned); "
        "re-seeded on the worst-explained item(s). Consider fewer components.",
        ConvergenceWarning,
        stacklevel=4,
    )
    resp = resp.clone()
    resp[worst] = 0.0
    resp[worst, comps] = 1.0
    return resp


# ------------------------------------------------------------------------------ base class
class _Mixture(GenerativeModel, abc.ABC):
    """Shared machinery of the finite mixtures (validation, EM driver hooks, relabelling)."""

    dtype = torch.float64
    data_plate_name = "data"
    #: Sites with a leading component dimension (permuted together by :meth:`align_posterior`).
    _component_sites: tuple[str, ...] = ("weights",)

    def __init__(self, n_components: int, *, weight_concentration: float = 1.0, map_estimate: bool = False):
        self.n_components = _check_positive_int(n_components, "n_components")
        self.weight_concentration = _check_positive_float(weight_concentration, "weight_concentration")
        if not isinstance(map_estimate, bool):
            raise TypeError(f"map_estimate must be a bool; got {type(map_estimate).__name__}.")
        self.map_estimate = map_estimate

    # ---------------------------------------------------------------------------- data
    def _check_items(self, t: Tensor) -> Tensor:
        """Refuse fewer training items than components (scoring any number of items is fine)."""
        if len(t) < self.n_components:
            raise ValueError(
                f"n_components={self.n_components} is larger than the number of items in data "
                f"({len(t)}); use at most {len(t)} components or more data."
            )
        return t

    def num_items(self, data: Any) -> int:
        return int(len(data))

    def prepare_data(self, data: Any) -> Tensor:
        """Validate ``data`` as a float64 ``(n_items, n_features)`` tensor of the family's values.

        Accepts numpy arrays, torch tensors, nested lists and pandas DataFrames.

        Raises
        ------
        TypeError
            Non-numeric data or DataFrame columns.
        ValueError
            Missing values (NaN: the message names ``missing="marginalize"``), infinite values,
            data that is not 2-D, or values outside the family's support.
        """
        return self._check_values(_as_matrix(self._readable(data), self.name))

    def prepare_missing(self, data: Any) -> Tensor:
        """As :meth:`prepare_data`, with NaN kept as the mark of a missing cell (the capability
        :class:`probgen.capabilities.MissingValues`, used by ``missing="marginalize"``).

        Every observed cell is checked as :meth:`prepare_data` checks it; a row may be wholly
        missing (it then informs nothing but the weights' denominator).

        Examples
        --------
        >>> from probgen.models import PoissonMixture
        >>> PoissonMixture(2).prepare_missing([[0.0, float("nan")], [3.0, 1.0]]).isnan().sum().item()
        1
        """
        t = _as_matrix(self._readable(data), self.name, missing=True)
        pats = self._patterns(t)
        if pats is None:
            return self._check_values(t)
        self._check_values(torch.where(pats.observed, t, self._fill_value(t, pats)))
        return t

    def _fill_value(self, t: Tensor, pats: _Patterns) -> Tensor:
        """A valid value for the missing cells when checking the observed ones (the first observed
        value of each column, so that a family's range checks see only real values)."""
        first = pats.observed.to(torch.int8).argmax(0)
        return pats.zero_filled[first, torch.arange(t.shape[1])]

    def _readable(self, data: Any) -> Any:
        """``data`` as :func:`~probgen.models._mixture_data._as_matrix` reads it (a family may convert, e.g. booleans)."""
        return data

    @abc.abstractmethod
    def _check_values(self, t: Tensor) -> Tensor:
        """``t`` after checking the family's support (binary, codes, counts), else a ValueError."""

    def _observed_cells(self, data: Tensor) -> tuple[Tensor, Tensor | None]:
        """``data`` with missing cells set to 0, and ``(n, d)`` float 1/0 marks of the observed
        cells (None when every cell is observed)."""
        pats = self._patterns(data)
        if pats is None:
            return data, None
        seen: Tensor = _per_data(self, "seen", data, lambda: pats.observed.to(data.dtype))
        return pats.zero_filled, seen

    def _patterns(self, data: Tensor) -> _Patterns | None:
        """Missingness patterns of ``data`` (None when it has no NaN), kept per data tensor."""
        found: _Patterns | None = _per_data(self, "patterns", data, lambda: _patterns_of(data))
        return found

    def num_observations(self, data: Any) -> int:
        return int(len(data))

    # ---------------------------------------------------------------------- EM defaults
    def em_defaults(self) -> dict[str, Any]:
        """Defaults that converge: ``max_iter=1000, tol=1e-8, n_init=1, init="kmeans"``.

        ``tol`` is in nats per item, as scikit-learn's, but far smaller than its ``1e-3``, which
        stops EM on real data thousandths of a nat short of the optimum (a 3-component
        Poisson mixture of yearly doctor visits stopped after 11 iterations, 0.0026 nats per
        item short).  EM's remaining gain shrinks geometrically, and on real data it stays below
        ``5 * tol`` once a step gains less than ``tol``: ``1e-8`` leaves it far below 1e-6 nats
        per item.  Pass ``max_iter=100, tol=1e-3`` to reproduce scikit-learn's defaults.
        """
        return {"max_iter": _DEFAULT_MAX_ITER, "tol": _DEFAULT_TOL, "n_init": 1, "init": "kmeans"}

    def em_convergence_scale(self, data: Any) -> float:
        """EM stops when the change of the mean log-likelihood per item is below ``tol``."""
        return float(len(data))

    def init_params(
        self, data: Tensor, *, init: Any = "kmeans", generator: torch.Generator
    ) -> dict[str, Tensor]:
        """Starting values for EM.

        Parameters
        ----------
        data : Tensor
            Prepared data ``(n_items, n_features)``.
        init : str or dict, default "kmeans"
            ``"kmeans"`` (k-means++ seeded Lloyd, responsibilities from its labels),
            ``"k-means++"`` (the seeds alone), ``"random"`` (random responsibilities),
            ``"random_from_data"`` (random items as seeds); or a dict of starting values by
            site name.  Missing sites are filled by one M-step from the nearest given
            ``locs`` (or the default strategy).
        generator : torch.Generator
            Source of randomness.

        Returns
        -------
        dict of str to Tensor
        """
        if isinstance(init, Mapping):
            return self._init_from_dict(data, dict(init), generator)
        self._check_items(data)  # the data-driven starts need a seed item per component
        if init not in _INIT_STRATEGIES:
            raise ValueError(
                f"init must be one of {', '.join(repr(s) for s in _INIT_STRATEGIES)} or a dict of "
                f"starting values by site name; got {init!r}."
            )
        resp = self._init_resp(data, init, generator)
        return self._m_step_resp(data, resp, log_prob=None)

    def _init_resp(self, data: Tensor, init: str, generator: torch.Generator) -> Tensor:
        return _initial_resp(self._kmeans_space(data), self.n_components, init, generator)

    def _kmeans_space(self, data: Tensor) -> Tensor:
        pats = self._patterns(data)
        return data if pats is None else pats.mean_filled

    def _init_from_dict(
        self, data: Tensor, init: dict[str, Any], generator: torch.Generator
    ) -> dict[str, Tensor]:
        names = self._site_names(data)
        unknown = sorted(set(init) - set(names))
        if unknown:
            raise ValueError(f"init has unknown site(s) {unknown}; expected site names among {list(names)}.")
        given = {k: torch.as_tensor(v, dtype=torch.float64).clone() for k, v in init.items()}
        shapes = self._param_shapes(data)
        for name, value in given.items():
            if tuple(value.shape) != shapes[name]:
                raise ValueError(f"init[{name!r}] must have shape {shapes[name]}; got {tuple(value.shape)}.")
        if set(names) <= set(given):
            params = given
        else:
            center_site = next((s for s in ("locs", "rates", "probs") if s in given), None)
            if center_site is not None:  # hard assignment of every item to its nearest given center
                c = given[center_site].reshape(self.n_components, -1)
                xv = self._kmeans_space(data)
                d2 = (xv * xv).sum(1)[:, None] - 2.0 * xv @ c.T + (c * c).sum(1)[None, :]
                resp = torch.nn.functional.one_hot(d2.argmin(1), self.n_components).to(torch.float64)
            else:
                resp = self._init_resp(data, self.em_defaults()["init"], generator)
            params = {**self._m_step_resp(data, resp, log_prob=None), **given}
        self._validate_params(params, data)
        return {k: params[k] for k in names}

    def _validate_params(self, params: Mapping[str, Tensor], data: Tensor) -> None:
        w = params["weights"]
        if w.shape != (self.n_components,):
            raise ValueError(f"init['weights'] must have shape ({self.n_components},); got {tuple(w.shape)}.")
        if (w < 0).any() or abs(float(w.sum()) - 1.0) > 1e-6:
            raise ValueError("init['weights'] must be non-negative and sum to 1.")
        expected = self._param_shapes(data)
        for name, shape in expected.items():
            if tuple(params[name].shape) != shape:
                raise ValueError(f"init[{name!r}] must have shape {shape}; got {tuple(params[name].shape)}.")

    def _weights_from_counts(self, nk: Tensor) -> Tensor:
        if self.map_estimate:
            a = self.weight_concentration
            w = (nk + (a - 1.0)).clamp_min(0.0)
            return w / w.sum()
        return nk / nk.sum()

    # ----------------------------------------------------------------------- EM hooks
    def e_step(self, data: Tensor, params: Mapping[str, Tensor]) -> tuple[dict[str, Any], float]:
        """Responsibilities and the total log-likelihood at ``params``.

        Items with missing cells (NaN) are scored on their observed cells alone.

        Returns
        -------
        stats : dict
            ``{"resp": (n, K) responsibilities, "log_prob": (n,) per-item log-likelihood}``, and
            with missing cells ``"at"``: ``params`` (the M-step's expectations of the missing
            cells are taken under them).
        log_lik : float
            Sum of the per-item log-likelihoods.
        """
        norm, resp = _logsumexp_rows(self._log_joint(data, params))
        stats: dict[str, Any] = {"resp": resp, "log_prob": norm}
        if self._patterns(data) is not None:
            stats["at"] = dict(params)
        return stats, float(norm.sum())

    def m_step(self, data: Tensor, stats: Mapping[str, Any]) -> dict[str, Tensor]:
        """Closed-form maximiser given the responsibilities of :meth:`e_step`."""
        return self._m_step_resp(data, stats["resp"], log_prob=stats.get("log_prob"), at=stats.get("at"))

    def _m_step_resp(
        self,
        data: Tensor,
        resp: Tensor,
        log_prob: Tensor | None,
        at: Mapping[str, Tensor] | None = None,
    ) -> dict[str, Tensor]:
        nk = resp.sum(0) + 10.0 * _EPS
        if log_prob is not None:
            empty = nk < 1e-6  # under a millionth of an item: the component has emptied
            if empty.any():
                resp = _reseed(resp, log_prob, empty, self.name)
                nk = resp.sum(0) + 10.0 * _EPS
        return self._m_step_counts(data, resp, nk, at)

    # ------------------------------------------------------- EM over data in chunks
    def chunk_stats(self, data: Tensor, params: Mapping[str, Tensor]) -> tuple[dict[str, Tensor], float]:
        """Additive expected sufficient statistics of one chunk of items at ``params``.

        Every tensor is a sum over the chunk's items, so the statistics of the whole data are the
        key-wise sums over chunks: ``"n"`` (items), ``"resp"`` ``(K,)`` (responsibility sums) and the
        family's responsibility-weighted moments (see :meth:`_chunk_moments`).

        Parameters
        ----------
        data : Tensor
            One prepared chunk ``(n_chunk, n_features)``.
        params : dict of str to Tensor
            Current parameters.

        Returns
        -------
        stats : dict of str to Tensor
        log_lik : float
            The chunk's total log-likelihood at ``params``.

        Examples
        --------
        >>> import torch
        >>> from probgen.models.discrete_mixture import PoissonMixture
        >>> pm = PoissonMixture(2)
        >>> x = pm.prepare_data([[0, 3], [1, 4], [9, 0], [8, 1]])
        >>> p = pm.init_params(x, init="kmeans", generator=torch.Generator().manual_seed(0))
        >>> a, _ = pm.chunk_stats(x[:2], p)
        >>> b, _ = pm.chunk_stats(x[2:], p)
        >>> whole, _ = pm.chunk_stats(x, p)
        >>> bool(torch.allclose(a["x"] + b["x"], whole["x"]))
        True
        """
        params = self._point(params)
        norm, resp = _logsumexp_rows(self._log_joint(data, params))
        stats = {"n": torch.tensor(float(len(data)), dtype=torch.float64), "resp": resp.sum(0)}
        stats.update(self._chunk_moments(data, resp, params))
        return stats, float(norm.sum())

    def m_step_from_stats(
        self,
        stats: Mapping[str, Tensor],
        num_items: int,
        *,
        previous: Mapping[str, Tensor] | None = None,
    ) -> dict[str, Tensor]:
        """The closed-form M-step from summed :meth:`chunk_stats`: the same update as :meth:`m_step`.

        A component whose responsibilities sum to under a millionth of an item has emptied.  In
        memory, EM re-seeds it on the worst-explained item; over chunks no item is at hand, so
        when ``previous`` parameters are given the component keeps them (its weight included,
        the weights renormalised) and a ``ConvergenceWarning`` is issued.  Without ``previous``
        the plain update is returned.

        Parameters
        ----------
        stats : dict of str to Tensor
            Key-wise sums of :meth:`chunk_stats` over the chunks (or a scaled running average).
        num_items : int
            Items in the whole data set.
        previous : dict of str to Tensor, optional
            The parameters the statistics were computed at.

        Returns
        -------
        dict of str to Tensor
        """
        missing = sorted({"n", "resp"} - set(stats))
        if missing:
            raise ValueError(f"stats lacks {missing}; pass the summed output of chunk_stats.")
        nk = stats["resp"] + 10.0 * _EPS
        out = self._m_step_stats(stats, nk)
        empty = nk < 1e-6
        if previous is not None and bool(empty.any()):
            comps = torch.nonzero(empty).flatten()
            warnings.warn(
                f"{self.name}: component(s) {comps.tolist()} emptied during EM over chunks (no item "
                "assigned); they keep their previous parameters. Consider fewer components.",
                ConvergenceWarning,
                stacklevel=3,
            )
            prev = self._point(previous)
            for site in self._component_sites:
                if site in out and site in prev and out[site].shape == prev[site].shape:
                    out[site] = torch.where(
                        empty.reshape((-1,) + (1,) * (out[site].dim() - 1)), prev[site], out[site]
                    )
            out["weights"] = out["weights"] / out["weights"].sum()
        return out

    @abc.abstractmethod
    def _chunk_moments(self, data: Tensor, resp: Tensor, params: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Responsibility-weighted sums of the family's sufficient statistics over a chunk."""

    @abc.abstractmethod
    def _m_step_stats(self, stats: Mapping[str, Tensor], nk: Tensor) -> dict[str, Tensor]:
        """Parameters from summed statistics and counts ``nk`` (``10 eps`` added)."""

    # ------------------------------------------------------------------ Fit tools
    def log_prob_items(self, data: Tensor, params: Mapping[str, Tensor]) -> Tensor:
        """Per-item marginal log-likelihood ``(n,)`` (components summed out): anomaly scores."""
        return torch.logsumexp(self._log_joint(data, self._point(params)), dim=1)

    def latent_posterior(self, data: Tensor, params: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """``{"z": (n, K)}`` posterior component probabilities per item."""
        return {"z": _logsumexp_rows(self._log_joint(data, self._point(params)))[1]}

    def latent_map(self, data: Tensor, params: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """``{"z": (n,)}`` most probable component per item."""
        return {"z": self._log_joint(data, self._point(params)).argmax(1)}

    def sample_items(
        self, n: int, params: Mapping[str, Tensor], *, generator: torch.Generator | None = None, **kwargs: Any
    ) -> dict[str, Tensor]:
        """Draw ``n`` items: ``{"data": (n, d), "z": (n,) component of each draw}``."""
        if kwargs:
            raise TypeError(f"{self.name}.sample takes no options; got {sorted(kwargs)}.")
        params = self._point(params)
        z = torch.multinomial(params["weights"], int(n), replacement=True, generator=generator)
        return {"data": self._sample_given(z, params, generator), "z": z}

    def impute_items(
        self,
        data: Tensor,
        params: Mapping[str, Tensor],
        *,
        method: str = "mean",
        num_samples: int = 1,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """``(num_samples, n, d)`` copies of ``data`` with the missing cells (NaN) filled (the
        capability :class:`probgen.capabilities.Imputes`).

        ``"mean"``: the conditional mean given the item's observed cells,
        ``sum_k p(k | x_o) E[x_m | x_o, k]`` (one copy).  ``"sample"``: draws of the missing
        cells given the observed ones, a component from ``p(k | x_o)`` then the cells from it.
        Observed cells are returned unchanged.

        Parameters
        ----------
        data : Tensor
            Prepared items ``(n, d)``, NaN where a cell is missing.
        params : dict of str to Tensor
            Parameters (``fit.params``).
        method : {"mean", "sample"}, default "mean"
        num_samples : int, default 1
            Copies drawn (``"sample"`` only).
        generator : torch.Generator, optional
            Source of randomness of ``"sample"``.

        Returns
        -------
        Tensor
        """
        params = self._point(params)
        pats = self._patterns(data)
        if pats is None:
            return data.expand(num_samples, *data.shape).clone()
        resp = _logsumexp_rows(self._log_joint(data, params))[1]
        if method == "mean":
            copies = [self._conditional_mean(pats, params, resp)]
        else:
            copies = []
            for _ in range(num_samples):
                z = torch.multinomial(resp, 1, generator=generator).squeeze(1)
                copies.append(self._conditional_draw(pats, params, z, generator))
        return torch.stack([torch.where(pats.observed, data, c) for c in copies])

    def _conditional_mean(self, pats: _Patterns, params: Mapping[str, Tensor], resp: Tensor) -> Tensor:
        """``(n, d)`` ``sum_k resp[i, k] E[x_ij | k]`` (features independent given the component);
        only the missing cells are read."""
        return resp @ self._component_means(params)

    def _conditional_draw(
        self, pats: _Patterns, params: Mapping[str, Tensor], z: Tensor, generator: torch.Generator | None
    ) -> Tensor:
        """``(n, d)`` items drawn from the components ``z`` (features independent given the
        component); only the missing cells are read."""
        return self._sample_given(z, params, generator)

    def _component_means(self, params: Mapping[str, Tensor]) -> Tensor:
        """``(K, d)`` mean of each feature under each component."""
        raise ValueError(f"{self.name} has no conditional mean of its cells; use method='sample'.")

    @staticmethod
    def _point(params: Mapping[str, Tensor]) -> dict[str, Tensor]:
        return {k: torch.as_tensor(v, dtype=torch.float64) for k, v in params.items()}

    # ---------------------------------------------------------------- label switching
    def exchangeable_sites(self, data: Any, params: Mapping[str, Tensor]) -> dict[str, int]:
        """The component-indexed sites (leading axis), permuted together against label switching."""
        if self.n_components == 1:
            return {}
        return {
            s: 0
            for s in self._component_sites
            if s in params and params[s].dim() >= 1 and params[s].shape[0] == self.n_components
        }

    def align_posterior(
        self, posterior: Mapping[str, Tensor], data: Any = None, params: Mapping[str, Tensor] | None = None
    ) -> dict[str, Tensor]:
        """Relabel draws ``(chain, draw, ...)`` so component ``k`` means the same everywhere.

        The core's relabelling (:func:`probgen.relabel.relabel`, Stephens 2000) over the
        component-indexed sites, with components ordered by decreasing posterior-mean weight.
        """
        one = {k: v[0, -1] for k, v in posterior.items()}
        axes = self.exchangeable_sites(data, one)
        return relabel(posterior, axes, order_by="weights", descending=True) if axes else dict(posterior)

    # ------------------------------------------------------------------- Pyro helpers
    def _num_gen(self, data: Tensor | None, num_items: int | None) -> int:
        if data is not None:
            return len(data)
        return 1 if num_items is None else _check_positive_int(num_items, "num_items")

    def _num_features(self, data: Tensor | None, num_features: int | None) -> int:
        if data is not None:
            return int(data.shape[-1])
        return 1 if num_features is None else _check_positive_int(num_features, "num_features")

    def _sample_weights(self) -> Tensor:
        concentration = torch.full((self.n_components,), self.weight_concentration, dtype=torch.float64)
        return pyro.sample("weights", dist.Dirichlet(concentration))

    def _observe(
        self,
        data: Tensor | None,
        num_items: int | None,
        subsample_size: int | None,
        weights: Tensor,
        component: Any,
    ) -> Tensor:
        """The data plate: an enumerated component ``z`` per item, then ``obs ~ component(z)``."""
        with pyro.plate("data", self._num_gen(data, num_items), subsample_size=subsample_size) as idx:
            data = _subsample(data, idx, subsample_size)
            z = pyro.sample("z", dist.Categorical(weights), infer={"enumerate": "parallel"})
            return pyro.sample("obs", component(z), obs=self._as_obs(data))

    def _as_obs(self, data: Tensor | None) -> Tensor | None:
        return data

    def get_config(self) -> dict[str, Any]:
        return dict(self._config())

    @abc.abstractmethod
    def _config(self) -> dict[str, Any]:
        """JSON-able constructor arguments."""

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self._config().items())
        return f"{self.name}({args})"

    # abstract pieces
    @abc.abstractmethod
    def _site_names(self, data: Tensor) -> tuple[str, ...]:
        """Global sample sites of this family, in order."""

    @abc.abstractmethod
    def _param_shapes(self, data: Tensor) -> dict[str, tuple[int, ...]]:
        """Shape of every global site for ``data``."""

    @abc.abstractmethod
    def _log_joint(self, data: Tensor, params: Mapping[str, Tensor]) -> Tensor:
        """``(n, K)`` log p(x_i, z_i = k) at ``params``."""

    @abc.abstractmethod
    def _m_step_counts(
        self, data: Tensor, resp: Tensor, nk: Tensor, at: Mapping[str, Tensor] | None = None
    ) -> dict[str, Tensor]:
        """Closed-form component parameters from responsibilities and counts (``at``: the
        parameters of the E-step, under which missing cells are expected; None at the start)."""

    @abc.abstractmethod
    def _sample_given(self, z: Tensor, params: Mapping[str, Tensor], generator: Any) -> Tensor:
        """Items drawn from the components ``z``."""


_MOVED = {
    "GaussianMixture": "probgen.models.gaussian_mixture",
    "BernoulliMixture": "probgen.models.discrete_mixture",
    "CategoricalMixture": "probgen.models.discrete_mixture",
    "PoissonMixture": "probgen.models.discrete_mixture",
}


def __getattr__(name: str) -> Any:
    """Keep ``from probgen.models.mixture import GaussianMixture`` working after the split."""
    if name in _MOVED:
        return getattr(importlib.import_module(_MOVED[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
