"""Mixtures of discrete components: Bernoulli (binary features), categorical, Poisson (counts).

Closed-form float64 M-steps with a small pseudo-count ``reg`` (so no probability or rate is
exactly zero), or posterior modes under the conjugate priors with ``map_estimate=True``.  The
shared EM driver, fit tools and Pyro data plate live in :mod:`probgen.models.mixture`.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from typing import Any

import numpy as np
import pyro
import pyro.distributions as dist
import torch
from pyro.ops.indexing import Vindex
from torch import Tensor

from probgen.models import _mixture_plots
from probgen.models._missing import _Patterns
from probgen.models.mixture import (
    _check_positive_float,
    _check_positive_int,
    _Mixture,
    _per_data,
)
from probgen.models.plotting import _axes, _colors, _no_options
from probgen.validation import check_counts_exact, check_inferred_code

__all__ = ["BernoulliMixture", "CategoricalMixture", "PoissonMixture"]


def _check_integral(t: Tensor, family: str) -> None:
    frac = t != torch.round(t)
    if frac.any():
        bad = t[frac][:3].tolist()
        raise ValueError(f"{family}: data must hold whole numbers; got non-integer values such as {bad}.")


class _DiscreteMixture(_Mixture):
    """What the discrete families share: a picture of their component parameters."""

    @abc.abstractmethod
    def _component_table(self, params: Mapping[str, Tensor]) -> tuple[np.ndarray, str, float | None]:
        """``(K, m)`` parameters to show, the colour bar's label and its upper limit (or None)."""

    def plot_fit(self, data: Any, params: Mapping[str, Tensor], *, ax: Any = None, **kwargs: Any) -> Any:
        """Picture of the fit: a heat map of every component's parameters.

        One row per component (labelled with its weight), one column per feature (per feature
        and category for :class:`CategoricalMixture`).  A Poisson mixture of a single count
        feature shows the counts' frequencies with the fitted probabilities instead.

        Parameters
        ----------
        data : array-like
            ``(n_items, n_features)`` items (``fit.plot()`` passes the training data).
        params : dict of str to Tensor
            Parameters to draw (``fit.params``).
        ax : matplotlib.axes.Axes, optional
            Where to draw; a new figure when None.

        Returns
        -------
        matplotlib.axes.Axes
        """
        _no_options(kwargs, f"{self.name}.plot_fit", ("ax=",))
        x = data if isinstance(data, Tensor) else self.prepare_data(data)
        return self._draw(_axes(ax), x, self._point(params))

    def _draw(self, ax: Any, x: Tensor, p: Mapping[str, Tensor]) -> Any:
        """The picture of :meth:`plot_fit` for the items ``x`` and parameters ``p``: a heat map."""
        table, label, vmax = self._component_table(p)
        title = f"{self.name}, {table.shape[0]} components, {len(x)} items"
        return _mixture_plots.component_heatmap(ax, table, label, vmax, p["weights"].numpy(), title)


class BernoulliMixture(_DiscreteMixture):
    r"""Mixture of independent Bernoullis over ``d`` binary features (binarised images, yes/no answers).

    Generative model::

        weights ~ Dirichlet(weight_concentration * 1_K)
        probs[k, j] ~ Beta(prior_a, prior_b)
        z_i ~ Categorical(weights)                   enumerated
        x_ij ~ Bernoulli(probs[z_i, j])

    Sample sites: ``"weights"`` (K,), ``"probs"`` (K, d), ``"z"`` (n,).

    The EM M-step is ``probs = (sum_i r_ik x_ij + reg) / (N_k + 2 reg)`` (``reg`` keeps every
    probability strictly inside (0, 1), so no item ever gets log-likelihood minus infinity);
    with ``map_estimate=True`` it is the posterior mode under the Beta and Dirichlet priors.

    Parameters
    ----------
    n_components : int
        Number of components ``K``.
    reg : float, default 1e-6
        Pseudo-count added to both outcomes in the M-step.
    prior_a, prior_b : float, default 1.0
        Beta prior of each probability.
    weight_concentration : float, default 1.0
        Dirichlet concentration of the weights prior.
    map_estimate : bool, default False
        EM returns the posterior mode instead of the (regularised) MLE.

    Examples
    --------
    >>> import torch
    >>> bm = BernoulliMixture(2)
    >>> x = bm.prepare_data([[0, 1, 1], [1, 0, 0], [0, 1, 1]])
    >>> p = bm.init_params(x, init="random", generator=torch.Generator().manual_seed(0))
    >>> p["probs"].shape
    torch.Size([2, 3])
    """

    _component_sites = ("weights", "probs")

    def __init__(
        self,
        n_components: int,
        *,
        reg: float = 1e-6,
        prior_a: float = 1.0,
        prior_b: float = 1.0,
        weight_concentration: float = 1.0,
        map_estimate: bool = False,
    ) -> None:
        super().__init__(n_components, weight_concentration=weight_concentration, map_estimate=map_estimate)
        self.reg = _check_positive_float(reg, "reg", allow_zero=True)
        self.prior_a = _check_positive_float(prior_a, "prior_a")
        self.prior_b = _check_positive_float(prior_b, "prior_b")

    def _config(self) -> dict[str, Any]:
        return {
            "n_components": self.n_components,
            "reg": self.reg,
            "prior_a": self.prior_a,
            "prior_b": self.prior_b,
            "weight_concentration": self.weight_concentration,
            "map_estimate": self.map_estimate,
        }

    def _readable(self, data: Any) -> Any:
        """Booleans as 0/1."""
        if isinstance(data, Tensor) and data.dtype == torch.bool:
            return data.to(torch.float64)
        if isinstance(data, np.ndarray) and data.dtype == bool:
            return data.astype(np.float64)
        return data

    def _check_values(self, t: Tensor) -> Tensor:
        """Refuse values other than 0 and 1 (binarise first)."""
        bad = (t != 0) & (t != 1)
        if bad.any():
            vals = torch.unique(t[bad])[:5].tolist()
            raise ValueError(
                f"{self.name}: data must be binary (0/1 or bool); got {int(bad.sum())} other value(s), "
                f"e.g. {vals}. Binarise it first, e.g. (x > threshold)."
            )
        return t

    def _site_names(self, data: Tensor) -> tuple[str, ...]:
        return ("weights", "probs")

    def _param_shapes(self, data: Tensor) -> dict[str, tuple[int, ...]]:
        return {"weights": (self.n_components,), "probs": (self.n_components, data.shape[1])}

    def _log_joint(self, data: Tensor, params: Mapping[str, Tensor]) -> Tensor:
        p = params["probs"]
        log_w = torch.log(params["weights"])
        x, seen = self._observed_cells(data)  # a missing cell contributes probability one
        if bool(((p == 0) | (p == 1)).any()):  # 0 log 0 is 0: item by item, never 0 * -inf
            terms = torch.xlogy(x[:, None, :], p) + torch.xlogy(1 - x[:, None, :], 1 - p)
            return (terms if seen is None else terms * seen[:, None, :]).sum(-1) + log_w
        log_p, log_q = torch.log(p), torch.log1p(-p)
        absent = log_q.sum(1) if seen is None else seen @ log_q.T
        return x @ (log_p - log_q).T + absent + log_w

    def _m_step_counts(
        self, data: Tensor, resp: Tensor, nk: Tensor, at: Mapping[str, Tensor] | None = None
    ) -> dict[str, Tensor]:
        return self._m_step_stats(self._chunk_moments(data, resp), nk)

    def _chunk_moments(self, data: Tensor, resp: Tensor, params: Any = None) -> dict[str, Tensor]:
        x, seen = self._observed_cells(data)
        stats = {"x": resp.T @ x}  # (K, d) expected counts of ones
        if seen is not None:
            stats["seen"] = resp.T @ seen  # (K, d) expected items observed per feature
        return stats

    def _m_step_stats(self, stats: Mapping[str, Tensor], nk: Tensor) -> dict[str, Tensor]:
        s = stats["x"]
        seen = stats["seen"] if "seen" in stats else nk[:, None]
        if self.map_estimate:
            a, b = self.prior_a - 1.0 + self.reg, self.prior_b - 1.0 + self.reg
            probs = ((s + a) / (seen + a + b)).clamp(1e-12, 1 - 1e-12)
        else:
            probs = (s + self.reg) / (seen + 2.0 * self.reg)
        return {"weights": self._weights_from_counts(nk), "probs": probs}

    def _sample_given(self, z: Tensor, params: Mapping[str, Tensor], generator: Any) -> Tensor:
        return torch.bernoulli(params["probs"][z], generator=generator)

    def _component_means(self, params: Mapping[str, Tensor]) -> Tensor:
        return params["probs"]

    def _component_table(self, params: Mapping[str, Tensor]) -> tuple[np.ndarray, str, float | None]:
        return params["probs"].numpy(), "p(x = 1)", 1.0

    def num_parameters(self, params: Mapping[str, Tensor], data: Any) -> int:
        """``K d`` probabilities plus ``K - 1`` weights."""
        k, d = torch.as_tensor(params["probs"]).shape[-2:]
        return int(k * d + k - 1)

    def model(
        self,
        data: Tensor | None = None,
        *,
        num_items: int | None = None,
        num_features: int | None = None,
        subsample_size: int | None = None,
    ) -> Tensor:
        """Pyro model; ``data=None`` generates ``num_items`` items (default 1)."""
        k, d = self.n_components, self._num_features(data, num_features)
        weights = self._sample_weights()
        with pyro.plate("components", k):
            a = torch.full((d,), self.prior_a, dtype=torch.float64)
            probs = pyro.sample("probs", dist.Beta(a, torch.full_like(a, self.prior_b)).to_event(1))
        return self._observe(
            data,
            num_items,
            subsample_size,
            weights,
            lambda z: dist.Bernoulli(Vindex(probs)[..., z, :]).to_event(1),
        )


class CategoricalMixture(_DiscreteMixture):
    r"""Mixture of independent categoricals over ``d`` features with ``C`` categories (survey answers).

    Generative model::

        weights ~ Dirichlet(weight_concentration * 1_K)
        probs[k, j] ~ Dirichlet(prior_concentration * 1_C)
        z_i ~ Categorical(weights)                   enumerated
        x_ij ~ Categorical(probs[z_i, j])

    Sample sites: ``"weights"`` (K,), ``"probs"`` (K, d, C), ``"z"`` (n,).  Data are integer
    codes ``0 .. C-1``.  Without ``n_categories``, ``C`` is read off the parameters where they
    are given (the last axis of ``probs``), else learned from the data at hand (``max(data) + 1``,
    at least 2); pass it when fitting with ``chunk_size=`` (EM's starting sample alone would set
    it) or to generate with ``model(None)``.  The M-step is ``probs = (counts + reg) / (N_k + C reg)``.

    Parameters
    ----------
    n_components : int
        Number of components ``K``.
    n_categories : int, optional
        Number of categories ``C`` (shared by every feature).
    reg : float, default 1e-6
        Pseudo-count added to every category in the M-step.
    prior_concentration : float, default 1.0
        Dirichlet concentration of each feature's category probabilities.
    weight_concentration : float, default 1.0
        Dirichlet concentration of the weights prior.
    map_estimate : bool, default False
        EM returns the posterior mode instead of the (regularised) MLE.

    Examples
    --------
    >>> import torch
    >>> cm = CategoricalMixture(2, n_categories=3)
    >>> x = cm.prepare_data([[0, 2], [1, 2], [2, 0]])
    >>> cm.init_params(x, init="random", generator=torch.Generator().manual_seed(0))["probs"].shape
    torch.Size([2, 2, 3])
    """

    _component_sites = ("weights", "probs")

    def __init__(
        self,
        n_components: int,
        n_categories: int | None = None,
        *,
        reg: float = 1e-6,
        prior_concentration: float = 1.0,
        weight_concentration: float = 1.0,
        map_estimate: bool = False,
    ) -> None:
        super().__init__(n_components, weight_concentration=weight_concentration, map_estimate=map_estimate)
        self.n_categories = (
            None if n_categories is None else _check_positive_int(n_categories, "n_categories")
        )
        self.reg = _check_positive_float(reg, "reg", allow_zero=True)
        self.prior_concentration = _check_positive_float(prior_concentration, "prior_concentration")

    def _config(self) -> dict[str, Any]:
        return {
            "n_components": self.n_components,
            "n_categories": self.n_categories,
            "reg": self.reg,
            "prior_concentration": self.prior_concentration,
            "weight_concentration": self.weight_concentration,
            "map_estimate": self.map_estimate,
        }

    def _check_values(self, t: Tensor) -> Tensor:
        """Refuse anything but whole codes ``0 .. n_categories - 1``."""
        _check_integral(t, self.name)
        if (t < 0).any():
            raise ValueError(
                f"{self.name}: data must hold category codes >= 0; got minimum {t.min().item():g}."
            )
        if self.n_categories is None:
            check_inferred_code(float(t.max()), f"{self.name}: data", "n_categories")
        top = int(t.max().item())
        if self.n_categories is not None and top >= self.n_categories:
            raise ValueError(
                f"{self.name}: data holds category code {top}, but n_categories={self.n_categories} "
                f"allows codes 0..{self.n_categories - 1}."
            )
        return t

    def _c(self, data: Tensor | None = None, params: Mapping[str, Tensor] | None = None) -> int:
        """Number of categories: ``n_categories``, else the last axis of ``params["probs"]``, else
        learned from ``data`` (its largest code plus one, at least 2)."""
        if self.n_categories is not None:
            return self.n_categories
        if params is not None and "probs" in params:
            return int(params["probs"].shape[-1])
        if data is None:
            raise ValueError(
                f"{self.name}: n_categories is unknown; pass it to the constructor to generate without data."
            )
        return int(_per_data(self, "categories", data, lambda: max(int(data.nan_to_num(0.0).max()) + 1, 2)))

    def _site_names(self, data: Tensor) -> tuple[str, ...]:
        return ("weights", "probs")

    def _param_shapes(self, data: Tensor) -> dict[str, tuple[int, ...]]:
        return {"weights": (self.n_components,), "probs": (self.n_components, data.shape[1], self._c(data))}

    def _one_hot(self, data: Tensor, params: Mapping[str, Tensor] | None = None) -> Tensor:
        """``(n, d C)`` indicators of the codes, kept beside the model per data tensor."""
        c = self._c(data, params)

        def encode() -> Tensor:
            x, seen = self._observed_cells(data)
            top = int(x.max())
            if top >= c:
                raise ValueError(
                    f"{self.name}: data holds category code {top}, but the parameters have {c} categories "
                    f"(codes 0..{c - 1}); pass n_categories to the constructor to fit every code."
                )
            one_hot = torch.nn.functional.one_hot(x.long(), c).to(torch.float64)
            if seen is not None:  # a missing cell indicates no category: it contributes nothing
                one_hot = one_hot * seen[:, :, None]
            return one_hot.reshape(len(data), -1)

        one_hot: Tensor = _per_data(self, "one_hot", data, encode, c)
        return one_hot

    def _kmeans_space(self, data: Tensor) -> Tensor:
        return self._one_hot(data)

    def _log_joint(self, data: Tensor, params: Mapping[str, Tensor]) -> Tensor:
        # log 0 held finite so that a category no item takes contributes 0, not 0 * -inf
        logp = torch.log(params["probs"]).clamp_min(-1e250).reshape(self.n_components, -1)
        return self._one_hot(data, params) @ logp.T + torch.log(params["weights"])

    def _m_step_counts(
        self, data: Tensor, resp: Tensor, nk: Tensor, at: Mapping[str, Tensor] | None = None
    ) -> dict[str, Tensor]:
        return self._m_step_stats(self._chunk_moments(data, resp), nk)

    def _conditional_mean(self, pats: _Patterns, params: Mapping[str, Tensor], resp: Tensor) -> Tensor:
        """Codes have no mean: the most probable category of each cell given the observed ones."""
        return torch.einsum("nk,kdc->ndc", resp, params["probs"]).argmax(-1).to(torch.float64)

    def _chunk_moments(
        self, data: Tensor, resp: Tensor, params: Mapping[str, Tensor] | None = None
    ) -> dict[str, Tensor]:
        one_hot = self._one_hot(data, params)
        counts = (resp.T @ one_hot).reshape(
            self.n_components, data.shape[1], one_hot.shape[1] // data.shape[1]
        )
        return {"counts": counts}  # (K, d, C) expected category counts

    def _m_step_stats(self, stats: Mapping[str, Tensor], nk: Tensor) -> dict[str, Tensor]:
        counts = stats["counts"]
        extra = (self.prior_concentration - 1.0 + self.reg) if self.map_estimate else self.reg
        probs = (counts + extra).clamp_min(0.0)
        probs = probs / probs.sum(-1, keepdim=True)
        if self.map_estimate:
            probs = probs.clamp_min(1e-12)
        return {"weights": self._weights_from_counts(nk), "probs": probs}

    def _component_table(self, params: Mapping[str, Tensor]) -> tuple[np.ndarray, str, float | None]:
        probs = params["probs"]  # (K, d, C): features side by side, C columns each
        return probs.reshape(probs.shape[0], -1).numpy(), "p(category)", 1.0

    def _draw(self, ax: Any, x: Tensor, p: Mapping[str, Tensor]) -> Any:
        ax = super()._draw(ax, x, p)
        _mixture_plots.category_columns(ax, *p["probs"].shape[-2:])
        return ax

    def _sample_given(self, z: Tensor, params: Mapping[str, Tensor], generator: Any) -> Tensor:
        p = params["probs"][z]  # (n, d, C)
        n, d, c = p.shape
        draws = torch.multinomial(p.reshape(n * d, c), 1, generator=generator)
        return draws.reshape(n, d).to(torch.float64)

    def num_parameters(self, params: Mapping[str, Tensor], data: Any) -> int:
        """``K d (C - 1)`` probabilities plus ``K - 1`` weights."""
        k, d, c = torch.as_tensor(params["probs"]).shape[-3:]
        return int(k * d * (c - 1) + k - 1)

    def model(
        self,
        data: Tensor | None = None,
        *,
        num_items: int | None = None,
        num_features: int | None = None,
        subsample_size: int | None = None,
    ) -> Tensor:
        """Pyro model; ``data=None`` generates ``num_items`` items (default 1)."""
        k, c = self.n_components, self._c(data)
        d = self._num_features(data, num_features)
        weights = self._sample_weights()
        with pyro.plate("components", k):
            conc = torch.full((d, c), self.prior_concentration, dtype=torch.float64)
            probs = pyro.sample("probs", dist.Dirichlet(conc).to_event(1))
        return self._observe(
            data,
            num_items,
            subsample_size,
            weights,
            lambda z: dist.Categorical(Vindex(probs)[..., z, :, :]).to_event(1),
        )

    def _as_obs(self, data: Tensor | None) -> Tensor | None:
        return None if data is None else data.long()


class PoissonMixture(_DiscreteMixture):
    r"""Mixture of independent Poissons over ``d`` count features.

    Generative model::

        weights ~ Dirichlet(weight_concentration * 1_K)
        rates[k, j] ~ Gamma(prior_shape, prior_shape / mean(x_j))     prior mean = data mean (1 without data)
        z_i ~ Categorical(weights)                                   enumerated
        x_ij ~ Poisson(rates[z_i, j])

    Sample sites: ``"weights"`` (K,), ``"rates"`` (K, d), ``"z"`` (n,).  The M-step is
    ``rates = sum_i r_ik x_ij / N_k + reg`` (``reg`` keeps a rate positive when a component
    only sees zeros).

    Parameters
    ----------
    n_components : int
        Number of components ``K``.
    reg : float, default 1e-6
        Added to every rate in the M-step.
    prior_shape : float, default 2.0
        Shape of the Gamma prior on each rate.
    weight_concentration : float, default 1.0
        Dirichlet concentration of the weights prior.
    map_estimate : bool, default False
        EM returns the posterior mode under the Gamma and Dirichlet priors.

    Examples
    --------
    >>> import torch
    >>> pm = PoissonMixture(2)
    >>> x = pm.prepare_data([[0, 3], [1, 4], [9, 0], [8, 1]])
    >>> pm.init_params(x, init="kmeans", generator=torch.Generator().manual_seed(0))["rates"].shape
    torch.Size([2, 2])
    """

    _component_sites = ("weights", "rates")

    def __init__(
        self,
        n_components: int,
        *,
        reg: float = 1e-6,
        prior_shape: float = 2.0,
        weight_concentration: float = 1.0,
        map_estimate: bool = False,
    ) -> None:
        super().__init__(n_components, weight_concentration=weight_concentration, map_estimate=map_estimate)
        self.reg = _check_positive_float(reg, "reg", allow_zero=True)
        self.prior_shape = _check_positive_float(prior_shape, "prior_shape")

    def _config(self) -> dict[str, Any]:
        return {
            "n_components": self.n_components,
            "reg": self.reg,
            "prior_shape": self.prior_shape,
            "weight_concentration": self.weight_concentration,
            "map_estimate": self.map_estimate,
        }

    def _check_values(self, t: Tensor) -> Tensor:
        """Refuse anything but non-negative whole-number counts."""
        if (t < 0).any():
            raise ValueError(
                f"{self.name}: data must be non-negative counts; got {int((t < 0).sum())} negative "
                f"value(s), minimum {t.min().item():g}."
            )
        _check_integral(t, self.name)
        check_counts_exact(t, f"{self.name}: data")
        return t

    def _site_names(self, data: Tensor) -> tuple[str, ...]:
        return ("weights", "rates")

    def _param_shapes(self, data: Tensor) -> dict[str, tuple[int, ...]]:
        return {"weights": (self.n_components,), "rates": (self.n_components, data.shape[1])}

    def _log_factorial(self, data: Tensor) -> Tensor:
        def compute() -> Tensor:
            x, _ = self._observed_cells(data)  # a missing cell counts as 0: log 0! = 0
            return torch.lgamma(x + 1.0).sum(1)

        log_factorial: Tensor = _per_data(self, "log_factorial", data, compute)
        return log_factorial

    def _log_joint(self, data: Tensor, params: Mapping[str, Tensor]) -> Tensor:
        r = params["rates"]
        x, seen = self._observed_cells(data)  # a missing cell contributes probability one
        return (
            x @ torch.log(r).clamp_min(-1e250).T  # a count of 0 at rate 0: 0, not 0 * -inf
            - (r.sum(1) if seen is None else seen @ r.T)
            - self._log_factorial(data)[:, None]
            + torch.log(params["weights"])
        )

    def _m_step_counts(
        self, data: Tensor, resp: Tensor, nk: Tensor, at: Mapping[str, Tensor] | None = None
    ) -> dict[str, Tensor]:
        stats = self._chunk_moments(data, resp)
        stats["n"] = torch.tensor(float(len(data)), dtype=torch.float64)
        return self._m_step_stats(stats, nk)

    def _chunk_moments(self, data: Tensor, resp: Tensor, params: Any = None) -> dict[str, Tensor]:
        # (K, d) expected count sums, and the plain sums for the prior's data mean (MAP)
        x, seen = self._observed_cells(data)
        stats = {"x": resp.T @ x, "sum": x.sum(0)}
        if seen is not None:  # expected items observed per feature, and per feature in all
            stats["seen"] = resp.T @ seen
            stats["count"] = seen.sum(0)
        return stats

    def _m_step_stats(self, stats: Mapping[str, Tensor], nk: Tensor) -> dict[str, Tensor]:
        s = stats["x"]
        seen = stats["seen"] if "seen" in stats else nk[:, None]
        if self.map_estimate:
            mean = (stats["sum"] / (stats["count"] if "count" in stats else stats["n"])).clamp_min(1e-6)
            a, b = self.prior_shape, self.prior_shape / mean
            rates = ((s + a - 1.0) / (seen + b)).clamp_min(0.0) + self.reg
        else:
            rates = s / seen + self.reg
        return {"weights": self._weights_from_counts(nk), "rates": rates}

    def _sample_given(self, z: Tensor, params: Mapping[str, Tensor], generator: Any) -> Tensor:
        return torch.poisson(params["rates"][z], generator=generator)

    def _component_means(self, params: Mapping[str, Tensor]) -> Tensor:
        return params["rates"]

    def _component_table(self, params: Mapping[str, Tensor]) -> tuple[np.ndarray, str, float | None]:
        return params["rates"].numpy(), "rate", None

    def _draw(self, ax: Any, x: Tensor, p: Mapping[str, Tensor]) -> Any:
        """One count feature: the counts' frequencies with the fitted probabilities (mixture and
        weighted components); several: the heat map of the rates."""
        if x.shape[1] > 1:
            return super()._draw(ax, x, p)
        k = self.n_components
        counts = x[:, 0].long()
        support = torch.arange(int(counts.max()) + 1, dtype=torch.float64)[:, None]
        log_joint = self._log_joint(support, p).numpy()  # (top + 1, K)
        title = f"{self.name}, {k} components, {len(x)} items"
        rates = p["rates"][:, 0].numpy()
        return _mixture_plots.count_frequencies(ax, counts.numpy(), log_joint, rates, _colors(k), title)

    def num_parameters(self, params: Mapping[str, Tensor], data: Any) -> int:
        """``K d`` rates plus ``K - 1`` weights."""
        k, d = torch.as_tensor(params["rates"]).shape[-2:]
        return int(k * d + k - 1)

    def model(
        self,
        data: Tensor | None = None,
        *,
        num_items: int | None = None,
        num_features: int | None = None,
        subsample_size: int | None = None,
    ) -> Tensor:
        """Pyro model; ``data=None`` generates ``num_items`` items (default 1)."""
        k = self.n_components
        d = self._num_features(data, num_features)
        # the prior's mean rate: the data's (1 when generating without data)
        mean = data.nanmean(0).clamp_min(1e-3) if data is not None else torch.ones(d, dtype=torch.float64)
        weights = self._sample_weights()
        with pyro.plate("components", k):
            shape = torch.full((d,), self.prior_shape, dtype=torch.float64)
            rates = pyro.sample("rates", dist.Gamma(shape, shape / mean).to_event(1))
        return self._observe(
            data,
            num_items,
            subsample_size,
            weights,
            lambda z: dist.Poisson(Vindex(rates)[..., z, :]).to_event(1),
        )
