"""Gaussian mixture: multivariate normal components, float64 EM exact to scikit-learn.

The M-step follows scikit-learn's ``GaussianMixture``: ``reg_covar`` is added to every
covariance diagonal, and the E-step and M-step run on data centred once per tensor (cached), as
one GEMM per moment.  What differs between covariance types lives in one strategy per type
(:mod:`probgen.models._covariance`); the shared EM driver, fit tools and Pyro data plate live in
:mod:`probgen.models.mixture`, the pictures in :mod:`probgen.models._mixture_plots`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import pyro
import pyro.distributions as dist
import torch
from pyro.ops.indexing import Vindex
from torch import Tensor

from probgen.models import _mixture_plots
from probgen.models._covariance import _COVARIANCES, _Covariance, _GaussianCache
from probgen.models._missing import _gaussian_fill, _gaussian_log_joint, _gaussian_moments, _Patterns
from probgen.models._shrinkage import _check_shrinkage, _pseudo_items, _shrink_correlations
from probgen.models.mixture import _check_positive_float, _Mixture
from probgen.models.plotting import _axes, _colors, _index, _no_options
from probgen.roles import slot

__all__ = ["GaussianMixture"]


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
    priors are centred on the mean and spread of the data the model is given (empirical Bayes),
    so they are weak on any measurement scale; ``model(None)`` generates under mean 0, spread 1.

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

    Missing cells (NaN) are read as missing at random with ``probgen.fit(..., method="em",
    missing="marginalize")``, and ``fit.impute(X)`` fills them with their conditional means given
    each item's observed cells.  With the default ``covariance_shrinkage="auto"`` a user's plain
    ``GaussianMixture(3)`` imputes standardised iris, wine and penguins (20% of cells removed at
    random) with a smaller RMSE than scikit-learn's ``IterativeImputer`` and ``KNNImputer``.

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
    covariance_shrinkage : float or "auto", default "auto"
        ``nu`` pseudo-items of uncorrelated features weighed against each component's
        correlations in the EM M-step: the covariance keeps its variances and its off-diagonal
        entries are multiplied by ``n_k / (n_k + nu)`` (``n_k`` the component's items; all items
        for "tied"; "diag" and "spherical" have nothing to shrink).  ``"auto"``: ``nu = n_features``
        when the data have missing cells (``missing="marginalize"``), where imputation regresses
        missing cells on observed ones through the correlations and unshrunk ones overfit, and
        ``nu = 0`` on complete data (scikit-learn's M-step exactly).  Pass ``0.0`` for the plain
        maximum-likelihood fit with missing cells.
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
        covariance_shrinkage: float | str = "auto",
        weight_concentration: float = 1.0,
        loc_scale: float = 2.0,
        lkj_concentration: float = 2.0,
        map_estimate: bool = False,
    ) -> None:
        super().__init__(n_components, weight_concentration=weight_concentration, map_estimate=map_estimate)
        if covariance_type not in _COVARIANCES:
            raise ValueError(
                f"covariance_type must be one of {', '.join(repr(c) for c in _COVARIANCES)}; "
                f"got {covariance_type!r}."
            )
        self.covariance_type = covariance_type
        self._covariance: _Covariance = _COVARIANCES[covariance_type]()
        self.reg_covar = _check_positive_float(reg_covar, "reg_covar", allow_zero=True)
        self.covariance_shrinkage = _check_shrinkage(covariance_shrinkage)
        self.loc_scale = _check_positive_float(loc_scale, "loc_scale")
        self.lkj_concentration = _check_positive_float(lkj_concentration, "lkj_concentration")
        self._component_sites = ("weights", "locs") + self._covariance.component_sites

    def _config(self) -> dict[str, Any]:
        return {
            "n_components": self.n_components,
            "covariance_type": self.covariance_type,
            "reg_covar": self.reg_covar,
            "covariance_shrinkage": self.covariance_shrinkage,
            "weight_concentration": self.weight_concentration,
            "loc_scale": self.loc_scale,
            "lkj_concentration": self.lkj_concentration,
            "map_estimate": self.map_estimate,
        }

    # ---------------------------------------------------------------------------- data
    def _check_values(self, t: Tensor) -> Tensor:
        return t

    def event_dims(self, data: Any) -> dict[str, tuple[str | None, ...]]:
        """Names of the sites' event dims for ArviZ (the capability EventDims): the weights run
        over ``components`` (the plate of the other component sites), a location, a scale and an
        item over ``features``, a correlation factor over ``features`` and ``features_bis``."""
        features = ("features", "features_bis")
        return {
            "weights": ("components",),
            "locs": features,
            "scale": features,
            "corr_cholesky": features,
            "obs": features,
        }

    def _site_names(self, data: Tensor) -> tuple[str, ...]:
        return self._covariance.site_names(data.shape[1])

    def _param_shapes(self, data: Tensor) -> dict[str, tuple[int, ...]]:
        k, d = self.n_components, data.shape[1]
        shapes = {"weights": (k,), "locs": (k, d), **self._covariance.shapes(k, d)}
        return {name: shapes[name] for name in self._site_names(data)}

    def _cached(self, data: Tensor) -> _GaussianCache:
        """Work on ``data`` reused across E/M steps, kept beside the model (a model is a value)."""
        cache: _GaussianCache = slot(
            self, "gaussian", lambda c: c.matches(data), lambda: _GaussianCache(data)
        )
        return cache

    # ------------------------------------------------------------- parameter conversions
    def covariances(self, params: Mapping[str, Tensor]) -> Tensor:
        """Covariance matrices from the sites: ``(K, d, d)`` ("full"), ``(d, d)`` ("tied"),
        ``(K, d)`` ("diag") or ``(K,)`` ("spherical"), scikit-learn's ``covariances_`` shapes."""
        return self._covariance.covariances(self._point(params))

    def params_from_covariances(self, weights: Any, locs: Any, covariances: Any) -> dict[str, Tensor]:
        """Sites from weights, means and covariances in scikit-learn's shapes (its ``covariances_``)."""
        cov = torch.as_tensor(covariances, dtype=torch.float64)
        out = {
            "weights": torch.as_tensor(weights, dtype=torch.float64),
            "locs": torch.as_tensor(locs, dtype=torch.float64),
        }
        out.update(self._covariance.to_sites(cov, out["locs"].shape[-1]))
        return out

    # -------------------------------------------------------------------- log density
    def _log_joint(self, data: Tensor, params: Mapping[str, Tensor]) -> Tensor:
        """``log weights[k] + log N(x_i | locs[k], Sigma[k])``, shape ``(n, K)``."""
        pats = self._patterns(data)
        if pats is not None:
            cov = self._full_covariances(params)
            return _gaussian_log_joint(pats, params["locs"], cov, torch.log(params["weights"]))
        cache = self._cached(data)
        d = cache.xc.shape[1]
        locs = params["locs"] - cache.center
        const = -0.5 * d * math.log(2.0 * math.pi)
        quad, log_det = self._covariance.quad_log_det(cache, locs, params, self.n_components)
        return quad.mul_(-0.5).add_(const + log_det + torch.log(params["weights"]))

    # -------------------------------------------------------------------------- M-step
    def _m_step_counts(
        self, data: Tensor, resp: Tensor, nk: Tensor, at: Mapping[str, Tensor] | None = None
    ) -> dict[str, Tensor]:
        pats = self._patterns(data)
        if pats is not None:  # expected moments: missing cells given the observed, under ``at``
            p = None if at is None else self._point(at)
            cov = None if p is None else self._full_covariances(p)
            s1, s2 = _gaussian_moments(pats, resp, None if p is None else p["locs"], cov)
            stats = {"x": s1, "xx": self._covariance.from_full_moments(s2)}
            return self._m_step_stats(stats, nk, shift=pats.center, missing=True)
        cache = self._cached(data)
        resp_t = resp.T.contiguous()  # (K, n): the GEMMs below run faster on this layout
        return self._m_step_stats(self._covariance.moments(cache, resp_t), nk, shift=cache.center)

    def _chunk_moments(self, data: Tensor, resp: Tensor, params: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Moments about the mixture's mean ``s`` at ``params``: ``"shift"`` ``n s``, ``"x"`` ``(K, d)``
        ``sum_i r_ik (x_i - s)``, and ``"xx"``: ``(K, d, d)`` ``sum_i r_ik (x_i - s)(x_i - s)^T``
        ("full"), their diagonals ``(K, d)`` ("diag", "spherical") or ``(d, d)``
        ``sum_i (x_i - s)(x_i - s)^T`` ("tied").

        ``s`` depends on ``params`` alone, so every chunk of one pass shares it, and it lies near
        the data: second moments summed over chunks keep their digits far from the origin."""
        cache = self._cached(data)  # the E-step's centring on the chunk mean c, reused
        n = cache.xc.shape[0]
        shift = params["weights"] @ params["locs"]
        delta = cache.center - shift  # x - s = xc + delta: small, so no digits are lost
        resp_t = resp.T.contiguous()
        nk = resp.sum(0)
        s1, xx = self._covariance.chunk_moments(cache, resp_t, nk, delta)
        x = s1 + nk[:, None] * delta
        return {"shift": n * shift, "x": x, "xx": xx}

    def _m_step_stats(
        self,
        stats: Mapping[str, Tensor],
        nk: Tensor,
        *,
        shift: Tensor | None = None,
        missing: bool = False,
    ) -> dict[str, Tensor]:
        """The M-step from moments about ``shift`` (``missing``: the moments are expected ones,
        of data with missing cells, for ``covariance_shrinkage="auto"``)."""
        if shift is None:
            shift = stats["shift"] / stats["n"]
        d = stats["x"].shape[1]
        mu = stats["x"] / nk[:, None]  # means about the shift
        out = {"weights": self._weights_from_counts(nk), "locs": mu + shift}
        cov = self._covariance.covariance(stats, nk, mu, self.reg_covar)
        nu = _pseudo_items(self.covariance_shrinkage, d, missing)
        if nu > 0:
            cov = _shrink_correlations(self.covariance_type, cov, nk, nu)
        out.update(self._covariance.to_sites(cov, d))
        return out

    def _sample_given(self, z: Tensor, params: Mapping[str, Tensor], generator: Any) -> Tensor:
        locs = params["locs"]
        eps = torch.randn(len(z), locs.shape[-1], generator=generator, dtype=torch.float64)
        return self._covariance.sample(locs, params, z, eps)

    def _conditional_mean(self, pats: _Patterns, params: Mapping[str, Tensor], resp: Tensor) -> Tensor:
        return _gaussian_fill(pats, params["locs"], self._full_covariances(params), resp, None, None)

    def _conditional_draw(
        self, pats: _Patterns, params: Mapping[str, Tensor], z: Tensor, generator: torch.Generator | None
    ) -> Tensor:
        return _gaussian_fill(pats, params["locs"], self._full_covariances(params), None, z, generator)

    def num_parameters(self, params: Mapping[str, Tensor], data: Any) -> int:
        """scikit-learn's ``_n_parameters``: covariance, mean and ``K - 1`` weight parameters."""
        k, d = self.n_components, int(torch.as_tensor(params["locs"]).shape[-1])
        return self._covariance.num_parameters(k, d) + k * d + k - 1

    # ------------------------------------------------------------------------- picture
    def _full_covariances(self, params: Mapping[str, Tensor]) -> Tensor:
        """``(K, d, d)`` covariance matrices whatever the ``covariance_type``."""
        p = self._point(params)
        return self._covariance.full(self.covariances(p), self.n_components, int(p["locs"].shape[-1]))

    def plot_fit(
        self,
        data: Any,
        params: Mapping[str, Tensor],
        *,
        ax: Any = None,
        features: tuple[int, int] = (0, 1),
        **kwargs: Any,
    ) -> Any:
        """Picture of the fit: the items coloured by component, with covariance ellipses.

        Two or more features: a scatter of features ``features`` coloured by the most probable
        component of each item (:meth:`latent_map`), each component's mean (``x``) and its 1- and
        2-standard-deviation ellipses (of the two features' marginal covariance).  One feature: a
        histogram with the fitted density and each component's weighted density.

        Parameters
        ----------
        data : array-like
            ``(n_items, n_features)`` items (``fit.plot()`` passes the training data).
        params : dict of str to Tensor
            Parameters to draw (``fit.params``).
        ax : matplotlib.axes.Axes, optional
            Where to draw; a new figure when None.
        features : tuple of two int, default (0, 1)
            Columns on the horizontal and vertical axes (two or more features).

        Returns
        -------
        matplotlib.axes.Axes

        Raises
        ------
        TypeError
            Unknown options, ``ax`` not matplotlib axes, ``features`` not a pair of ints.
        ValueError
            ``features`` out of range or equal.
        """
        _no_options(kwargs, "GaussianMixture.plot_fit", ("ax=", "features="))
        x = data if isinstance(data, Tensor) else self.prepare_data(data)
        d = int(x.shape[1])
        if d > 1:
            if not isinstance(features, tuple | list) or len(features) != 2:
                raise TypeError(f"features must be a pair of column indices (i, j); got {features!r}.")
            i, j = (_index(f, "features", d, "features") for f in features)
            if i == j:
                raise ValueError(f"features must name two different columns; got {features!r}.")
        ax = _axes(ax)
        p = self._point(params)
        k = self.n_components
        colors = _colors(k)
        xs = x.numpy()
        title = f"{self.name}, {k} components"
        if d == 1:
            grid = _mixture_plots.density_grid(xs[:, 0])
            log_joint = self._log_joint(torch.as_tensor(grid, dtype=torch.float64)[:, None], p).numpy()
            return _mixture_plots.gaussian_density(ax, xs[:, 0], grid, log_joint, colors, title)
        z = self.latent_map(x, p)["z"].numpy()
        locs = p["locs"].numpy()[:, [i, j]]
        cov = self._full_covariances(p).numpy()[:, [i, j]][:, :, [i, j]]
        weights = p["weights"].numpy()
        return _mixture_plots.gaussian_scatter(ax, xs, z, locs, cov, weights, colors, (i, j), title)

    # -------------------------------------------------------------------------- Pyro
    def _priors(self, data: Tensor | None, d: int) -> tuple[Tensor, Tensor]:
        """The priors' centre and spread: the data's mean and standard deviation per feature
        (0 and 1 when generating without data)."""
        if data is None or data.shape[-1] != d:
            return torch.zeros(d, dtype=torch.float64), torch.ones(d, dtype=torch.float64)
        pats = self._patterns(data)
        if pats is not None:  # the observed cells' mean and spread, column by column
            mean = pats.center
            dev = torch.where(pats.observed, data - mean, torch.zeros((), dtype=torch.float64))
            var = (dev * dev).sum(0) / pats.observed.sum(0).clamp_min(1)
            return mean, torch.where(var > 0, var.sqrt(), torch.ones_like(var)).clamp_min(1e-6)
        mean = data.mean(0)
        std = data.std(0, unbiased=False) if len(data) > 1 else torch.ones(d, dtype=torch.float64)
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
            Features when ``data`` is None (default 1).
        subsample_size : int, optional
            Items per minibatch for stochastic variational inference.

        Returns
        -------
        Tensor
            The observed (or generated) items.
        """
        d = self._num_features(data, num_features)
        mean, std = self._priors(data, d)
        cov, lkj = self._covariance, self.lkj_concentration
        weights = self._sample_weights()
        with pyro.plate("components", self.n_components):
            locs = pyro.sample("locs", dist.Normal(mean, self.loc_scale * std).to_event(1))
            sites = cov.component_prior(std, d, lkj)
        sites.update(cov.shared_prior(std, d, lkj))

        def component(z: Tensor) -> Any:
            return cov.component(Vindex(locs)[..., z, :], sites, z, d)

        return self._observe(data, num_items, subsample_size, weights, component)
