"""Finite mixture models: Gaussian, Bernoulli, categorical and Poisson components.

Every family here is a Pyro model (priors on every global site, a component label ``"z"``
per item marked for parallel enumeration) plus closed-form EM hooks in float64, so the same
object is fitted by ``probgen.fit(..., method="em" | "svi" | "mcmc")``.

The EM fast path follows scikit-learn's ``GaussianMixture`` conventions exactly: an E-step
then an M-step per iteration, the lower bound is the mean log-likelihood per item, ``tol`` is
applied to its change, ``reg_covar`` is added to covariance diagonals, and component sums get
``10 * eps`` so an empty component never divides by zero.  A component that still empties is
re-seeded on the worst-explained item and reported with a ``ConvergenceWarning``.
"""

from __future__ import annotations

import abc
import math
import warnings
import weakref
from collections.abc import Mapping
from typing import Any

import numpy as np
import pyro
import pyro.distributions as dist
import torch
from pyro.ops.indexing import Vindex
from torch import Tensor

from probgen.errors import ConvergenceWarning
from probgen.model import GenerativeModel, as_tensor
from probgen.models.kmeans import _kmeans, _kmeanspp_indices

__all__ = ["BernoulliMixture", "CategoricalMixture", "GaussianMixture", "PoissonMixture"]

_COVARIANCE_TYPES = ("full", "diag", "spherical", "tied")
_INIT_STRATEGIES = ("kmeans", "k-means++", "random", "random_from_data")
_EPS = float(torch.finfo(torch.float64).eps)
# Rows per block in the Gaussian E-step: keeps the (rows, K*d) product cache-resident.
_BLOCK_ELEMENTS = 1 << 17


# --------------------------------------------------------------------------------- helpers
def _check_positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise ValueError(f"{name} must be a positive int; got {value!r}.")
    return int(value)


def _check_positive_float(value: Any, name: str, *, allow_zero: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise TypeError(f"{name} must be a number; got {type(value).__name__}.")
    ok = value >= 0 if allow_zero else value > 0
    if not ok or not math.isfinite(value):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be a finite number {bound}; got {value!r}.")
    return float(value)


def _frame_to_array(data: Any) -> Any:
    """Turn a pandas DataFrame into a numeric array with errors naming columns and rows."""
    if not hasattr(data, "columns") or not hasattr(data, "isna"):
        return data
    non_numeric = [
        str(c) for c, kind in zip(data.columns, data.dtypes, strict=True) if kind.kind not in "biuf"
    ]
    if non_numeric:
        raise TypeError(
            f"data must hold numeric columns only; got non-numeric column(s) {non_numeric}. "
            "Select the measurement columns, e.g. frame[[...]]."
        )
    missing = data.isna().any(axis=1)
    if bool(missing.any()):
        rows = list(data.index[missing.to_numpy()][:5])
        raise ValueError(
            f"data has {int(missing.sum())} row(s) with missing values (first: {rows}); "
            "drop or impute them before fitting, e.g. frame.dropna()."
        )
    return np.array(data.to_numpy(dtype=np.float64))  # a writable copy


def _as_matrix(data: Any, family: str) -> Tensor:
    """Validate ``data`` as a 2-D float64 tensor ``(n_items, n_features)``."""
    if isinstance(data, str | bytes):
        raise TypeError(f"data must be a 2-D numeric array (n_items, n_features); got {type(data).__name__}.")
    data = _frame_to_array(data)
    if hasattr(data, "to_numpy") and not isinstance(data, Tensor):  # pandas Series
        data = data.to_numpy()
    if isinstance(data, np.ndarray) and not data.flags.writeable:
        data = data.copy()  # torch cannot wrap read-only memory
    t = as_tensor(data, "data", dtype=torch.float64)
    if t.dim() != 2:
        hint = " For a single feature pass data.reshape(-1, 1)." if t.dim() == 1 else ""
        raise ValueError(
            f"{family}: data must be 2-D (n_items, n_features); got {t.dim()}-D data of shape "
            f"{tuple(t.shape)}.{hint}"
        )
    return t.contiguous()


def _subsample(data: Tensor | None, idx: Any, subsample_size: int | None) -> Tensor | None:
    """The items of a subsampled data plate (all of them when not subsampling)."""
    return data if data is None or subsample_size is None else data[idx]


def _logsumexp_rows(log_joint: Tensor) -> tuple[Tensor, Tensor]:
    """Per-row log-normaliser and responsibilities of an ``(n, K)`` log-joint."""
    top = log_joint.amax(1, keepdim=True)
    resp = log_joint - top
    resp.exp_()
    total = resp @ torch.ones(resp.shape[1], 1, dtype=resp.dtype)  # a GEMV beats a row reduction here
    resp.div_(total)
    return (top + total.log_()).squeeze(1), resp


def _hungarian(cost: np.ndarray) -> np.ndarray:
    """Column assigned to each row minimising the total cost (square matrix)."""
    from scipy.optimize import linear_sum_assignment

    return linear_sum_assignment(cost)[1]


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
        self._prior_data: Tensor | None = None

    # ---------------------------------------------------------------------------- data
    def _check_items(self, t: Tensor) -> Tensor:
        if len(t) < self.n_components:
            raise ValueError(
                f"n_components={self.n_components} is larger than the number of items in data "
                f"({len(t)}); use at most {len(t)} components or more data."
            )
        return t

    def num_items(self, data: Any) -> int:
        return int(len(data))

    def num_observations(self, data: Any) -> int:
        return int(len(data))

    # ---------------------------------------------------------------------- EM defaults
    def em_defaults(self) -> dict[str, Any]:
        """scikit-learn's defaults: ``max_iter=100, tol=1e-3, n_init=1, init="kmeans"``."""
        return {"max_iter": 100, "tol": 1e-3, "n_init": 1, "init": "kmeans"}

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
        if init not in _INIT_STRATEGIES:
            raise ValueError(
                f"init must be one of {', '.join(repr(s) for s in _INIT_STRATEGIES)} or a dict of "
                f"starting values by site name; got {init!r}."
            )
        resp = self._init_resp(data, init, generator)
        return self._m_step_resp(data, resp, log_prob=None)

    def _init_resp(self, data: Tensor, init: str, generator: torch.Generator) -> Tensor:
        n, k = len(data), self.n_components
        x = self._kmeans_space(data)
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

    def _kmeans_space(self, data: Tensor) -> Tensor:
        return data

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
    def e_step(self, data: Tensor, params: Mapping[str, Tensor]) -> tuple[dict[str, Tensor], float]:
        """Responsibilities and the total log-likelihood at ``params``.

        Returns
        -------
        stats : dict
            ``{"resp": (n, K) responsibilities, "log_prob": (n,) per-item log-likelihood}``.
        log_lik : float
            Sum of the per-item log-likelihoods.
        """
        norm, resp = _logsumexp_rows(self._log_joint(data, params))
        return {"resp": resp, "log_prob": norm}, float(norm.sum())

    def m_step(self, data: Tensor, stats: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Closed-form maximiser given the responsibilities of :meth:`e_step`."""
        return self._m_step_resp(data, stats["resp"], log_prob=stats.get("log_prob"))

    def _m_step_resp(self, data: Tensor, resp: Tensor, log_prob: Tensor | None) -> dict[str, Tensor]:
        nk = resp.sum(0) + 10.0 * _EPS
        if log_prob is not None:
            empty = nk < 1e-6  # under a millionth of an item: the component has emptied
            if empty.any():
                resp = self._reseed(resp, log_prob, empty)
                nk = resp.sum(0) + 10.0 * _EPS
        return self._m_step_counts(data, resp, nk)

    def _reseed(self, resp: Tensor, log_prob: Tensor, empty: Tensor) -> Tensor:
        comps = torch.nonzero(empty).flatten()
        worst = torch.argsort(log_prob)[: len(comps)]
        warnings.warn(
            f"{self.name}: component(s) {comps.tolist()} emptied during EM (no item assigned); "
            "re-seeded on the worst-explained item(s). Consider fewer components.",
            ConvergenceWarning,
            stacklevel=4,
        )
        resp = resp.clone()
        resp[worst] = 0.0
        resp[worst, comps] = 1.0
        return resp

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

    @staticmethod
    def _point(params: Mapping[str, Tensor]) -> dict[str, Tensor]:
        return {k: torch.as_tensor(v, dtype=torch.float64) for k, v in params.items()}

    # ---------------------------------------------------------------- label switching
    def align_posterior(self, posterior: Mapping[str, Tensor], *, max_rounds: int = 20) -> dict[str, Tensor]:
        """Relabel MCMC draws ``(chain, draw, ...)`` so component ``k`` means the same everywhere.

        Method: iterative relabelling to a pivot (Stephens 2000, "Dealing with label switching
        in mixture models").  The pivot starts as the last draw of the first chain; every draw
        of every chain is permuted by the Hungarian algorithm to minimise its squared distance
        to the pivot over all component-indexed sites (each standardised by its spread across
        draws); the pivot becomes the mean of the relabelled draws; repeat until no label
        changes.  Components are finally ordered by decreasing posterior-mean weight.

        Parameters
        ----------
        posterior : dict of str to Tensor
            Draws with leading ``(chain, draw)`` dims.
        max_rounds : int, default 20
            Largest number of relabelling rounds.

        Returns
        -------
        dict of str to Tensor
            The same sites, with component dimensions permuted per draw.
        """
        sites = [
            s for s in self._component_sites if s in posterior and self._is_component_indexed(s, posterior[s])
        ]
        if not sites or self.n_components == 1:
            return dict(posterior)
        k = self.n_components
        first = posterior[sites[0]]
        chains, draws = first.shape[:2]
        flat = {s: posterior[s].detach().to(torch.float64).reshape(chains * draws, k, -1) for s in sites}
        spread = {s: flat[s].std(dim=(0, 1)).clamp_min(1e-12) for s in sites}
        feats = torch.cat([flat[s] / spread[s] for s in sites], dim=-1)  # (S, K, F)
        perm = torch.arange(k).expand(len(feats), k).clone()
        pivot = feats[-1 if chains == 1 else draws - 1]
        for _ in range(max_rounds):
            cost = ((feats[:, :, None, :] - pivot[None, None, :, :]) ** 2).sum(-1)  # (S, K_draw, K_pivot)
            cost_np = cost.transpose(1, 2).numpy()  # rows: pivot label, cols: draw component
            new = torch.as_tensor(np.stack([_hungarian(c) for c in cost_np]), dtype=torch.long)
            relabelled = torch.gather(feats, 1, new[:, :, None].expand_as(feats))
            pivot = relabelled.mean(0)
            if torch.equal(new, perm):
                break
            perm = new
        w = torch.gather(flat["weights"][..., 0], 1, perm) if "weights" in flat else None
        if w is not None:
            order = torch.argsort(w.mean(0), descending=True)
            perm = perm[:, order]
        out = dict(posterior)
        for s in sites:
            v = posterior[s]
            tail = v.shape[3:]
            vf = v.reshape((chains * draws, k) + tuple(tail))
            idx = perm.reshape((chains * draws, k) + (1,) * len(tail)).expand_as(vf)
            out[s] = torch.gather(vf, 1, idx).reshape(v.shape)
        return out

    def _is_component_indexed(self, site: str, value: Tensor) -> bool:
        return value.dim() >= 3 and value.shape[2] == self.n_components

    # ------------------------------------------------------------------- Pyro helpers
    def _data_stats(self, data: Tensor | None) -> Tensor | None:
        if data is not None:
            return data
        return self._prior_data

    def _num_gen(self, data: Tensor | None, num_items: int | None) -> int:
        if data is not None:
            return len(data)
        return 1 if num_items is None else _check_positive_int(num_items, "num_items")

    def _num_features(self, data: Tensor | None, num_features: int | None) -> int:
        if data is not None:
            return int(data.shape[-1])
        if num_features is not None:
            return _check_positive_int(num_features, "num_features")
        return int(self._prior_data.shape[-1]) if self._prior_data is not None else 1

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
    def _m_step_counts(self, data: Tensor, resp: Tensor, nk: Tensor) -> dict[str, Tensor]:
        """Closed-form component parameters from responsibilities and counts."""

    @abc.abstractmethod
    def _sample_given(self, z: Tensor, params: Mapping[str, Tensor], generator: Any) -> Tensor:
        """Items drawn from the components ``z``."""


# ------------------------------------------------------------------------ Gaussian mixture
class _GaussianCache:
    """Centred data and its products, computed once per data tensor (EM reuses them)."""

    def __init__(self, data: Tensor) -> None:
        self.ref = weakref.ref(data)
        self.key = (data.data_ptr(), data._version, tuple(data.shape))
        self.center = data.mean(0)
        self.xc = data - self.center
        d = data.shape[1]
        self.tril = torch.tril_indices(d, d)
        self._xx: Tensor | None = None
        self._sq: Tensor | None = None

    def matches(self, data: Tensor) -> bool:
        return self.ref() is data and self.key == (data.data_ptr(), data._version, tuple(data.shape))

    @property
    def x_xx(self) -> Tensor:
        """Centred data and its products ``x_i x_j`` (i >= j) side by side, ``(n, d + d(d+1)/2)``.

        One GEMM with the responsibilities then gives every component's first and second moments.
        """
        if self._xx is None:
            self._xx = torch.cat([self.xc, self.xc[:, self.tril[0]] * self.xc[:, self.tril[1]]], dim=1)
        return self._xx

    @property
    def sq(self) -> Tensor:
        """Squares of the centred data, ``(n, d)``."""
        if self._sq is None:
            self._sq = self.xc * self.xc
        return self._sq


class GaussianMixture(_Mixture):
    r"""Mixture of multivariate normals, fitted by EM (float64, scikit-learn-exact), SVI or MCMC.

    Generative model, for items :math:`x_i \in \mathbb{R}^d`::

        weights ~ Dirichlet(weight_concentration * 1_K)
        locs[k] ~ Normal(mean(x), loc_scale * std(x))          per feature
        scale[k] ~ LogNormal(log std(x), 1)                    per feature ("diag", "full")
        corr_cholesky[k] ~ LKJCholesky(d, lkj_concentration)   ("full"; shared when "tied")
        z_i ~ Categorical(weights)                             enumerated, never sampled
        x_i ~ Normal(locs[z_i], Sigma[z_i])

    with ``Sigma = diag(scale) C diag(scale)`` and ``C = corr_cholesky corr_cholesky^T``.  The
    priors are centred on the data's mean and spread (empirical Bayes), so they are weak on
    any measurement scale.

    Sample sites (also the keys of ``fit.params`` and of ``init=dict(...)``):

    ``"weights"`` : (K,)
        Mixing proportions.
    ``"locs"`` : (K, d)
        Component means.
    ``"scale"`` : (K, d) for "full" and "diag"; (K,) for "spherical"; (d,) for "tied"
        Standard deviations (square roots of the covariance diagonals).
    ``"corr_cholesky"`` : (K, d, d) for "full"; (d, d) for "tied"; absent otherwise and when d == 1
        Cholesky factor of the correlation matrix.
    ``"z"`` : (n,)
        Component of each item (a local discrete latent, summed out by every backend).

    :meth:`covariances` turns these into covariance matrices and :meth:`params_from_covariances`
    goes back, so scikit-learn's ``means_``/``covariances_`` and probgen's sites convert both ways.

    Parameters
    ----------
    n_components : int
        Number of components ``K``.
    covariance_type : {"full", "diag", "spherical", "tied"}, default "full"
        Same meaning as in scikit-learn.
    reg_covar : float, default 1e-6
        Added to every covariance diagonal in the M-step (scikit-learn's ``reg_covar``), so
        duplicate items or a one-item component never make a singular covariance.
    weight_concentration : float, default 1.0
        Dirichlet concentration of the weights prior.
    loc_scale : float, default 2.0
        Prior standard deviation of the locations, in units of the data's standard deviation.
    lkj_concentration : float, default 2.0
        LKJ concentration of the correlation prior (1 is uniform over correlations).
    map_estimate : bool, default False
        EM maximises the posterior of the weights (Dirichlet prior) instead of the likelihood;
        the Gaussian parameters keep their regularised maximum-likelihood M-step.

    Examples
    --------
    >>> import torch
    >>> gm = GaussianMixture(2, covariance_type="diag")
    >>> x = gm.prepare_data(torch.randn(50, 2, generator=torch.Generator().manual_seed(0)))
    >>> params = gm.init_params(x, init="kmeans", generator=torch.Generator().manual_seed(0))
    >>> sorted(params)
    ['locs', 'scale', 'weights']
    >>> gm.log_prob_items(x, params).shape
    torch.Size([50])
    """

    def __init__(
        self,
        n_components: int,
        covariance_type: str = "full",
        *,
        reg_covar: float = 1e-6,
        weight_concentration: float = 1.0,
        loc_scale: float = 2.0,
        lkj_concentration: float = 2.0,
        map_estimate: bool = False,
    ) -> None:
        super().__init__(n_components, weight_concentration=weight_concentration, map_estimate=map_estimate)
        if covariance_type not in _COVARIANCE_TYPES:
            raise ValueError(
                f"covariance_type must be one of {', '.join(repr(c) for c in _COVARIANCE_TYPES)}; "
                f"got {covariance_type!r}."
            )
        self.covariance_type = covariance_type
        self.reg_covar = _check_positive_float(reg_covar, "reg_covar", allow_zero=True)
        self.loc_scale = _check_positive_float(loc_scale, "loc_scale")
        self.lkj_concentration = _check_positive_float(lkj_concentration, "lkj_concentration")
        self._cache: _GaussianCache | None = None
        self._component_sites = ("weights", "locs") + (
            ("scale", "corr_cholesky")
            if covariance_type == "full"
            else ("scale",)
            if covariance_type != "tied"
            else ()
        )

    def _config(self) -> dict[str, Any]:
        return {
            "n_components": self.n_components,
            "covariance_type": self.covariance_type,
            "reg_covar": self.reg_covar,
            "weight_concentration": self.weight_concentration,
            "loc_scale": self.loc_scale,
            "lkj_concentration": self.lkj_concentration,
            "map_estimate": self.map_estimate,
        }

    # ---------------------------------------------------------------------------- data
    def prepare_data(self, data: Any) -> Tensor:
        """Validate ``data`` as a float64 ``(n_items, n_features)`` tensor.

        Accepts numpy arrays, torch tensors, nested lists and pandas DataFrames.

        Raises
        ------
        TypeError
            Non-numeric data or DataFrame columns.
        ValueError
            Missing values, NaN/inf, data that is not 2-D, or fewer items than components.
        """
        t = self._check_items(_as_matrix(data, self.name))
        self._prior_data = t
        return t

    def _site_names(self, data: Tensor) -> tuple[str, ...]:
        d = data.shape[1]
        has_corr = self.covariance_type in ("full", "tied") and d > 1
        return ("weights", "locs", "scale") + (("corr_cholesky",) if has_corr else ())

    def _param_shapes(self, data: Tensor) -> dict[str, tuple[int, ...]]:
        k, d = self.n_components, data.shape[1]
        scale = {"full": (k, d), "diag": (k, d), "spherical": (k,), "tied": (d,)}[self.covariance_type]
        shapes = {"weights": (k,), "locs": (k, d), "scale": scale}
        if "corr_cholesky" in self._site_names(data):
            shapes["corr_cholesky"] = (k, d, d) if self.covariance_type == "full" else (d, d)
        return shapes

    def _cached(self, data: Tensor) -> _GaussianCache:
        if self._cache is None or not self._cache.matches(data):
            self._cache = _GaussianCache(data)
        return self._cache

    # ------------------------------------------------------------- parameter conversions
    def covariances(self, params: Mapping[str, Tensor]) -> Tensor:
        """Covariance matrices from the sites: ``(K, d, d)`` ("full"), ``(d, d)`` ("tied"),
        ``(K, d)`` ("diag") or ``(K,)`` ("spherical"), scikit-learn's ``covariances_`` shapes."""
        p = self._point(params)
        scale = p["scale"]
        if self.covariance_type in ("diag", "spherical"):
            return scale**2
        tril = self._scale_tril(p)
        return tril @ tril.transpose(-1, -2)

    def params_from_covariances(self, weights: Any, locs: Any, covariances: Any) -> dict[str, Tensor]:
        """Sites from weights, means and covariances in scikit-learn's shapes (its ``covariances_``)."""
        cov = torch.as_tensor(covariances, dtype=torch.float64)
        out = {
            "weights": torch.as_tensor(weights, dtype=torch.float64),
            "locs": torch.as_tensor(locs, dtype=torch.float64),
        }
        out.update(self._cov_to_sites(cov, out["locs"].shape[-1]))
        return out

    def _cov_to_sites(self, cov: Tensor, d: int) -> dict[str, Tensor]:
        if self.covariance_type in ("diag", "spherical"):
            return {"scale": cov.sqrt()}
        chol = torch.linalg.cholesky(cov)
        scale = chol.norm(dim=-1)
        out = {"scale": scale}
        if d > 1:
            out["corr_cholesky"] = chol / scale[..., :, None]
        return out

    def _scale_tril(self, p: Mapping[str, Tensor]) -> Tensor:
        scale = p["scale"]
        if "corr_cholesky" in p:
            return scale[..., :, None] * p["corr_cholesky"]
        return torch.diag_embed(scale)

    # -------------------------------------------------------------------- log density
    def _log_joint(self, data: Tensor, params: Mapping[str, Tensor]) -> Tensor:
        """``log weights[k] + log N(x_i | locs[k], Sigma[k])``, shape ``(n, K)``."""
        cache = self._cached(data)
        xc, center = cache.xc, cache.center
        n, d = xc.shape
        k = self.n_components
        locs = params["locs"] - center
        scale = params["scale"]
        const = -0.5 * d * math.log(2.0 * math.pi)
        if self.covariance_type in ("diag", "spherical"):
            s = scale if self.covariance_type == "diag" else scale[:, None].expand(k, d)
            prec = s.pow(-2)  # (K, d)
            quad = cache.sq @ prec.T - 2.0 * (xc @ (locs * prec).T) + (locs * locs * prec).sum(1)
            log_det = -torch.log(s).sum(1)
        else:
            tril = self._scale_tril(params)
            eye = torch.eye(d, dtype=torch.float64)
            if self.covariance_type == "tied":
                inv = torch.linalg.solve_triangular(tril, eye, upper=False)  # L^-1
                w = inv.T  # (d, d): y = (x - mu) @ L^-T
                y = xc @ w
                b = locs @ w  # (K, d)
                quad = (y * y).sum(1)[:, None] - 2.0 * y @ b.T + (b * b).sum(1)[None, :]
                quad = quad.clamp_min_(0.0)
                log_det = -torch.log(torch.diagonal(tril)).sum().expand(k)
            else:
                inv = torch.linalg.solve_triangular(tril, eye.expand(k, d, d), upper=False)
                w = inv.transpose(1, 2)  # (K, d, d)
                stacked = w.permute(1, 0, 2).reshape(d, k * d)  # (d, K*d)
                b = torch.einsum("kd,kde->ke", locs, w).reshape(1, k * d)
                quad = torch.empty(n, k, dtype=torch.float64)
                rows = max(1, _BLOCK_ELEMENTS // (k * d))
                for start in range(0, n, rows):  # blocks of rows, not items: keeps y in cache
                    y = torch.addmm(b, xc[start : start + rows], stacked, alpha=1.0, beta=-1.0)
                    y.square_()
                    torch.sum(y.view(-1, k, d), dim=2, out=quad[start : start + rows])
                log_det = -torch.log(torch.diagonal(tril, dim1=-2, dim2=-1)).sum(1)
        return const - 0.5 * quad + log_det + torch.log(params["weights"])

    # -------------------------------------------------------------------------- M-step
    def _m_step_counts(self, data: Tensor, resp: Tensor, nk: Tensor) -> dict[str, Tensor]:
        cache = self._cached(data)
        xc, center = cache.xc, cache.center
        d = xc.shape[1]
        k = self.n_components
        ct = self.covariance_type
        resp_t = resp.T.contiguous()  # (K, n): the GEMMs below run faster on this layout
        if ct == "full":
            moments = resp_t @ cache.x_xx / nk[:, None]  # (K, d + d(d+1)/2)
            mu, m2 = moments[:, :d], moments[:, d:]
        else:
            mu = resp_t @ xc / nk[:, None]  # centred means
        out = {"weights": self._weights_from_counts(nk), "locs": mu + center}
        if ct == "full":
            cov = torch.zeros(k, d, d, dtype=torch.float64)
            cov[:, cache.tril[0], cache.tril[1]] = m2
            cov = cov + torch.tril(cov, -1).transpose(1, 2)
            cov = cov - mu[:, :, None] * mu[:, None, :]
            cov.diagonal(dim1=1, dim2=2).add_(self.reg_covar)
        elif ct == "tied":
            cov = xc.T @ xc - (nk[:, None] * mu).T @ mu
            cov = cov / nk.sum()
            cov.diagonal().add_(self.reg_covar)
        else:
            var = resp_t @ cache.sq / nk[:, None] - mu * mu + self.reg_covar
            cov = var if ct == "diag" else var.mean(1)
        out.update(self._cov_to_sites(cov, d))
        return out

    def _sample_given(self, z: Tensor, params: Mapping[str, Tensor], generator: Any) -> Tensor:
        locs = params["locs"]
        n, d = len(z), locs.shape[-1]
        eps = torch.randn(n, d, generator=generator, dtype=torch.float64)
        if self.covariance_type in ("diag", "spherical"):
            s = params["scale"] if self.covariance_type == "diag" else params["scale"][:, None].expand(-1, d)
            return locs[z] + s[z] * eps
        tril = self._scale_tril(params)
        if self.covariance_type == "tied":
            return locs[z] + eps @ tril.T
        return locs[z] + torch.einsum("nde,ne->nd", tril[z], eps)

    def num_parameters(self, params: Mapping[str, Tensor], data: Any) -> int:
        """scikit-learn's ``_n_parameters``: covariance, mean and ``K - 1`` weight parameters."""
        k, d = self.n_components, int(torch.as_tensor(params["locs"]).shape[-1])
        cov = {"full": k * d * (d + 1) // 2, "diag": k * d, "tied": d * (d + 1) // 2, "spherical": k}
        return cov[self.covariance_type] + k * d + k - 1

    # -------------------------------------------------------------------------- Pyro
    def _priors(self, data: Tensor | None, d: int) -> tuple[Tensor, Tensor]:
        ref = self._data_stats(data)
        if ref is None or ref.shape[-1] != d:
            return torch.zeros(d, dtype=torch.float64), torch.ones(d, dtype=torch.float64)
        mean = ref.mean(0)
        std = ref.std(0, unbiased=False) if len(ref) > 1 else torch.ones(d, dtype=torch.float64)
        return mean, std.clamp_min(1e-6)

    def model(
        self,
        data: Tensor | None = None,
        *,
        num_items: int | None = None,
        num_features: int | None = None,
        subsample_size: int | None = None,
    ) -> Tensor:
        """Pyro model; ``data=None`` generates ``num_items`` items (default 1).

        Parameters
        ----------
        data : Tensor, optional
            ``(n_items, n_features)`` observations.
        num_items : int, optional
            Items to generate when ``data`` is None.
        num_features : int, optional
            Features when ``data`` is None and no data has been seen (default 1).
        subsample_size : int, optional
            Items per minibatch for stochastic variational inference.

        Returns
        -------
        Tensor
            The observed (or generated) items.
        """
        k = self.n_components
        d = self._num_features(data, num_features)
        mean, std = self._priors(data, d)
        ct = self.covariance_type
        weights = self._sample_weights()
        with pyro.plate("components", k):
            locs = pyro.sample("locs", dist.Normal(mean, self.loc_scale * std).to_event(1))
            if ct in ("full", "diag"):
                scale = pyro.sample("scale", dist.LogNormal(std.log(), torch.ones_like(std)).to_event(1))
            elif ct == "spherical":
                ms = std.log().mean()
                scale = pyro.sample("scale", dist.LogNormal(ms, torch.ones_like(ms)))
            if ct == "full" and d > 1:
                corr = pyro.sample(
                    "corr_cholesky",
                    dist.LKJCholesky(
                        d, torch.tensor(self.lkj_concentration, dtype=torch.float64), validate_args=False
                    ),
                )
        if ct == "tied":
            scale = pyro.sample("scale", dist.LogNormal(std.log(), torch.ones_like(std)).to_event(1))
            if d > 1:
                corr = pyro.sample(
                    "corr_cholesky",
                    dist.LKJCholesky(
                        d, torch.tensor(self.lkj_concentration, dtype=torch.float64), validate_args=False
                    ),
                )

        def component(z: Tensor) -> Any:
            loc = Vindex(locs)[..., z, :]
            if ct in ("diag", "spherical"):
                s = (
                    Vindex(scale)[..., z, :]
                    if ct == "diag"
                    else Vindex(scale)[..., z].unsqueeze(-1).expand(loc.shape)
                )
                obs_dist = dist.Normal(loc, s).to_event(1)
            elif ct == "full":
                s = Vindex(scale)[..., z, :]
                tril = s.unsqueeze(-1) * Vindex(corr)[..., z, :, :] if d > 1 else s.unsqueeze(-1)
                obs_dist = dist.MultivariateNormal(loc, scale_tril=tril, validate_args=False)
            else:
                tril = scale.unsqueeze(-1) * corr if d > 1 else scale.unsqueeze(-1)
                obs_dist = dist.MultivariateNormal(loc, scale_tril=tril, validate_args=False)
            return obs_dist

        return self._observe(data, num_items, subsample_size, weights, component)

    def _kmeans_space(self, data: Tensor) -> Tensor:
        return data


# ---------------------------------------------------------------------- discrete mixtures
def _check_integral(t: Tensor, family: str) -> None:
    frac = t != torch.round(t)
    if frac.any():
        bad = t[frac][:3].tolist()
        raise ValueError(f"{family}: data must hold whole numbers; got non-integer values such as {bad}.")


class BernoulliMixture(_Mixture):
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

    def prepare_data(self, data: Any) -> Tensor:
        """Validate ``data`` as a float64 ``(n_items, n_features)`` tensor of 0/1 values.

        Booleans are accepted.  Raises ``ValueError`` for values other than 0 and 1.
        """
        if isinstance(data, Tensor) and data.dtype == torch.bool:
            data = data.to(torch.float64)
        elif isinstance(data, np.ndarray) and data.dtype == bool:
            data = data.astype(np.float64)
        t = self._check_items(_as_matrix(data, self.name))
        bad = (t != 0) & (t != 1)
        if bad.any():
            vals = torch.unique(t[bad])[:5].tolist()
            raise ValueError(
                f"{self.name}: data must be binary (0/1 or bool); got {int(bad.sum())} other value(s), "
                f"e.g. {vals}. Binarise it first, e.g. (x > threshold)."
            )
        self._prior_data = t
        return t

    def _site_names(self, data: Tensor) -> tuple[str, ...]:
        return ("weights", "probs")

    def _param_shapes(self, data: Tensor) -> dict[str, tuple[int, ...]]:
        return {"weights": (self.n_components,), "probs": (self.n_components, data.shape[1])}

    def _log_joint(self, data: Tensor, params: Mapping[str, Tensor]) -> Tensor:
        p = params["probs"]
        log_p, log_q = torch.log(p), torch.log1p(-p)
        return data @ (log_p - log_q).T + log_q.sum(1) + torch.log(params["weights"])

    def _m_step_counts(self, data: Tensor, resp: Tensor, nk: Tensor) -> dict[str, Tensor]:
        s = resp.T @ data
        if self.map_estimate:
            a, b = self.prior_a - 1.0 + self.reg, self.prior_b - 1.0 + self.reg
            probs = ((s + a) / (nk[:, None] + a + b)).clamp(1e-12, 1 - 1e-12)
        else:
            probs = (s + self.reg) / (nk[:, None] + 2.0 * self.reg)
        return {"weights": self._weights_from_counts(nk), "probs": probs}

    def _sample_given(self, z: Tensor, params: Mapping[str, Tensor], generator: Any) -> Tensor:
        return torch.bernoulli(params["probs"][z], generator=generator)

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


class CategoricalMixture(_Mixture):
    r"""Mixture of independent categoricals over ``d`` features with ``C`` categories (survey answers).

    Generative model::

        weights ~ Dirichlet(weight_concentration * 1_K)
        probs[k, j] ~ Dirichlet(prior_concentration * 1_C)
        z_i ~ Categorical(weights)                   enumerated
        x_ij ~ Categorical(probs[z_i, j])

    Sample sites: ``"weights"`` (K,), ``"probs"`` (K, d, C), ``"z"`` (n,).  Data are integer
    codes ``0 .. C-1``; ``n_categories`` defaults to ``max(data) + 1`` at the first fit.  The
    M-step is ``probs = (counts + reg) / (N_k + C reg)``.

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
        self._onehot: tuple[Any, Tensor] | None = None

    def _config(self) -> dict[str, Any]:
        return {
            "n_components": self.n_components,
            "n_categories": self.n_categories,
            "reg": self.reg,
            "prior_concentration": self.prior_concentration,
            "weight_concentration": self.weight_concentration,
            "map_estimate": self.map_estimate,
        }

    def prepare_data(self, data: Any) -> Tensor:
        """Validate ``data`` as integer codes ``(n_items, n_features)`` in ``0 .. n_categories-1``.

        Returned as a float64 tensor of whole numbers (for Pyro, cast per use).
        """
        t = self._check_items(_as_matrix(data, self.name))
        _check_integral(t, self.name)
        if (t < 0).any():
            raise ValueError(
                f"{self.name}: data must hold category codes >= 0; got minimum {t.min().item():g}."
            )
        top = int(t.max().item())
        if self.n_categories is None:
            self.n_categories = max(top + 1, 2)
        elif top >= self.n_categories:
            raise ValueError(
                f"{self.name}: data holds category code {top}, but n_categories={self.n_categories} "
                f"allows codes 0..{self.n_categories - 1}."
            )
        self._prior_data = t
        return t

    def _c(self, data: Tensor | None = None) -> int:
        if self.n_categories is None:
            raise ValueError(f"{self.name}: n_categories is unknown; pass it or fit on data first.")
        return self.n_categories

    def _site_names(self, data: Tensor) -> tuple[str, ...]:
        return ("weights", "probs")

    def _param_shapes(self, data: Tensor) -> dict[str, tuple[int, ...]]:
        return {"weights": (self.n_components,), "probs": (self.n_components, data.shape[1], self._c())}

    def _one_hot(self, data: Tensor) -> Tensor:
        key = (data.data_ptr(), data._version, tuple(data.shape), self._c())
        if self._onehot is None or self._onehot[0] != key:
            oh = torch.nn.functional.one_hot(data.long(), self._c()).to(torch.float64)
            self._onehot = (key, oh.reshape(len(data), -1))
        return self._onehot[1]

    def _kmeans_space(self, data: Tensor) -> Tensor:
        return self._one_hot(data)

    def _log_joint(self, data: Tensor, params: Mapping[str, Tensor]) -> Tensor:
        logp = torch.log(params["probs"]).reshape(self.n_components, -1)
        return self._one_hot(data) @ logp.T + torch.log(params["weights"])

    def _m_step_counts(self, data: Tensor, resp: Tensor, nk: Tensor) -> dict[str, Tensor]:
        c = self._c()
        counts = (resp.T @ self._one_hot(data)).reshape(self.n_components, data.shape[1], c)
        extra = (self.prior_concentration - 1.0 + self.reg) if self.map_estimate else self.reg
        probs = (counts + extra).clamp_min(0.0)
        probs = probs / probs.sum(-1, keepdim=True)
        if self.map_estimate:
            probs = probs.clamp_min(1e-12)
        return {"weights": self._weights_from_counts(nk), "probs": probs}

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
        k, c = self.n_components, self._c()
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


class PoissonMixture(_Mixture):
    r"""Mixture of independent Poissons over ``d`` count features.

    Generative model::

        weights ~ Dirichlet(weight_concentration * 1_K)
        rates[k, j] ~ Gamma(prior_shape, prior_shape / mean(x_j))     prior mean = data mean
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
        self._lgamma: tuple[Any, Tensor] | None = None

    def _config(self) -> dict[str, Any]:
        return {
            "n_components": self.n_components,
            "reg": self.reg,
            "prior_shape": self.prior_shape,
            "weight_concentration": self.weight_concentration,
            "map_estimate": self.map_estimate,
        }

    def prepare_data(self, data: Any) -> Tensor:
        """Validate ``data`` as non-negative whole-number counts ``(n_items, n_features)``, float64."""
        t = self._check_items(_as_matrix(data, self.name))
        if (t < 0).any():
            raise ValueError(
                f"{self.name}: data must be non-negative counts; got {int((t < 0).sum())} negative "
                f"value(s), minimum {t.min().item():g}."
            )
        _check_integral(t, self.name)
        self._prior_data = t
        return t

    def _site_names(self, data: Tensor) -> tuple[str, ...]:
        return ("weights", "rates")

    def _param_shapes(self, data: Tensor) -> dict[str, tuple[int, ...]]:
        return {"weights": (self.n_components,), "rates": (self.n_components, data.shape[1])}

    def _log_factorial(self, data: Tensor) -> Tensor:
        key = (data.data_ptr(), data._version, tuple(data.shape))
        if self._lgamma is None or self._lgamma[0] != key:
            self._lgamma = (key, torch.lgamma(data + 1.0).sum(1))
        return self._lgamma[1]

    def _log_joint(self, data: Tensor, params: Mapping[str, Tensor]) -> Tensor:
        r = params["rates"]
        return (
            data @ torch.log(r).T
            - r.sum(1)
            - self._log_factorial(data)[:, None]
            + torch.log(params["weights"])
        )

    def _m_step_counts(self, data: Tensor, resp: Tensor, nk: Tensor) -> dict[str, Tensor]:
        s = resp.T @ data
        if self.map_estimate:
            mean = data.mean(0).clamp_min(1e-6)
            a, b = self.prior_shape, self.prior_shape / mean
            rates = ((s + a - 1.0) / (nk[:, None] + b)).clamp_min(0.0) + self.reg
        else:
            rates = s / nk[:, None] + self.reg
        return {"weights": self._weights_from_counts(nk), "rates": rates}

    def _sample_given(self, z: Tensor, params: Mapping[str, Tensor], generator: Any) -> Tensor:
        return torch.poisson(params["rates"][z], generator=generator)

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
        ref = self._data_stats(data)
        d = self._num_features(data, num_features)
        mean = (
            ref.mean(0).clamp_min(1e-3)
            if ref is not None and ref.shape[-1] == d
            else torch.ones(d, dtype=torch.float64)
        )
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
