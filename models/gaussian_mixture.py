"""Gaussian mixture: multivariate normal components, float64 EM exact to scikit-learn.

The M-step follows scikit-learn's ``GaussianMixture``: ``reg_covar`` is added to every
covariance diagonal, and the E-step and M-step run on data centred once per tensor (cached), as
one GEMM per moment.  The shared EM driver, fit tools and Pyro data plate live in
:mod:`probgen.models.mixture`.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Mapping
from typing import Any

import numpy as np
import pyro
import pyro.distributions as dist
import torch
from pyro.ops.indexing import Vindex
from torch import Tensor

from probgen.models.mixture import _as_matrix, _check_positive_float, _Mixture
from probgen.roles import slot

__all__ = ["GaussianMixture"]

_COVARIANCE_TYPES = ("full", "diag", "spherical", "tied")
# Rows per block in the Gaussian E-step: keeps the (rows, K*d) product cache-resident.
_BLOCK_ELEMENTS = 1 << 17


class _GaussianCache:
    """Centred data and its products, computed once per data tensor (EM reuses them)."""

    def __init__(self, data: Tensor) -> None:
        self.ref = weakref.ref(data)
        self.key = (data.data_ptr(), data._version, tuple(data.shape))
        self.center = data.mean(0)
        self.xc = data - self.center
        d = data.shape[1]
        self.tril = torch.tril_indices(d, d)
        i, j = self.tril
        self.eye = torch.eye(d, dtype=torch.float64)
        self.tril_flat = i * d + j  # positions of the packed pairs in a flattened (d, d) matrix
        self.pair_weight = torch.where(i == j, 1.0, 2.0).to(torch.float64)  # x'Px counts i != j twice
        packed = torch.empty((d, d), dtype=torch.long)
        packed[i, j] = torch.arange(i.shape[0])
        packed[j, i] = torch.arange(i.shape[0])
        self.unpack_index = packed.reshape(-1)  # packed position of every entry of a (d, d) matrix
        self._xx: Tensor | None = None
        self._sq: Tensor | None = None
        self._max_sq: float | None = None

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
    def max_sq_norm(self) -> float:
        """Largest squared norm of a centred item (bounds the rounding of expanded quadratic forms)."""
        if self._max_sq is None:
            self._max_sq = float((self.xc * self.xc).sum(1).max())
        return self._max_sq

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
        self._stats_shift: Tensor | None = None  # reference point of chunk_stats (set by init_params)
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
        """Work on ``data`` reused across E/M steps, kept beside the model (a model is a value)."""
        cache: _GaussianCache = slot(
            self, "gaussian", lambda c: c.matches(data), lambda: _GaussianCache(data)
        )
        return cache

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
        scale = torch.linalg.vector_norm(chol, dim=-1)
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
            eye = cache.eye
            if self.covariance_type == "tied":
                inv = torch.linalg.solve_triangular(tril, eye, upper=False)  # L^-1
                w = inv.T  # (d, d): y = (x - mu) @ L^-T
                y = xc @ w
                b = locs @ w  # (K, d)
                quad = (y * y).sum(1)[:, None] - 2.0 * y @ b.T + (b * b).sum(1)[None, :]
                quad = quad.clamp_min_(0.0)
                log_det = -torch.log(torch.diagonal(tril)).sum().expand(k)
            else:
                # The expanded form below rounds with an absolute error near eps * |x|^2 * |P|; when that
                # could reach 1e-9 (clusters far apart relative to their spread) the whitened
                # residuals are used instead, exact to rounding of the result itself.
                inv = torch.linalg.solve_triangular(tril, eye.expand(k, d, d), upper=False)  # L^-1
                prec_bound = float((inv * inv).sum((1, 2)).max())  # trace of P bounds its eigenvalues
                if cache.max_sq_norm * prec_bound < 1e7:
                    prec = inv.transpose(1, 2) @ inv  # (K, d, d) precision matrices
                    # (x - mu)' P (x - mu) = x'Px - 2 (P mu)'x + mu'P mu, with x'Px read off the cached
                    # products x_i x_j (i >= j, as the M-step uses them): the whole E-step is one GEMM
                    # on the centred data (no (n, K d) intermediate)
                    coef = torch.index_select(prec.reshape(k, d * d), 1, cache.tril_flat).mul_(
                        cache.pair_weight
                    )
                    pm = torch.bmm(prec, locs[:, :, None]).view(k, d)  # (K, d): P mu
                    weights_mat = torch.cat([-2.0 * pm, coef], dim=1).T.contiguous()  # (d + pairs, K)
                    quad = torch.addmm((pm * locs).sum(1), cache.x_xx, weights_mat).clamp_min_(0.0)
                else:
                    w = inv.transpose(1, 2)  # (K, d, d)
                    stacked = w.permute(1, 0, 2).reshape(d, k * d)  # (d, K*d)
                    b = torch.einsum("kd,kde->ke", locs, w).reshape(1, k * d)
                    quad = torch.empty(n, k, dtype=torch.float64)
                    rows = max(1, _BLOCK_ELEMENTS // (k * d))
                    # sums of squares over each component's d columns as a GEMM with a 0/1 block matrix:
                    # BLAS beats a reduction along a short innermost axis
                    blocks = torch.eye(k, dtype=torch.float64).repeat_interleave(d, 0)  # (K d, K)
                    for start in range(0, n, rows):  # blocks of rows, not items: keeps y in cache
                        y = torch.addmm(b, xc[start : start + rows], stacked, alpha=1.0, beta=-1.0)
                        y.square_()
                        torch.mm(y, blocks, out=quad[start : start + rows])
                log_det = -torch.log(torch.diagonal(tril, dim1=-2, dim2=-1)).sum(1)
        return quad.mul_(-0.5).add_(const + log_det + torch.log(params["weights"]))

    # -------------------------------------------------------------------------- M-step
    def _m_step_counts(self, data: Tensor, resp: Tensor, nk: Tensor) -> dict[str, Tensor]:
        cache = self._cached(data)
        xc = cache.xc
        d = xc.shape[1]
        ct = self.covariance_type
        resp_t = resp.T.contiguous()  # (K, n): the GEMMs below run faster on this layout
        if ct == "full":
            moments = resp_t @ cache.x_xx  # (K, d + d(d+1)/2): first and second moments in one GEMM
            stats = {"x": moments[:, :d], "xx": self._unpack_cached(moments[:, d:], cache, d)}
        elif ct == "tied":
            stats = {"x": resp_t @ xc, "xx": xc.T @ xc}
        else:
            stats = {"x": resp_t @ xc, "xx": resp_t @ cache.sq}
        return self._m_step_stats(stats, nk, shift=cache.center)

    @staticmethod
    def _unpack(packed: Tensor, tril: Tensor, d: int) -> Tensor:
        """``(K, d, d)`` symmetric matrices from their packed lower triangles ``(K, d(d+1)/2)``."""
        out = torch.zeros(packed.shape[0], d, d, dtype=torch.float64)
        out[:, tril[0], tril[1]] = packed
        return out + torch.tril(out, -1).transpose(1, 2)

    @staticmethod
    def _unpack_cached(packed: Tensor, cache: _GaussianCache, d: int) -> Tensor:
        """:meth:`_unpack` by one gather with the cache's index (the E-/M-step path)."""
        return torch.index_select(packed, 1, cache.unpack_index).view(packed.shape[0], d, d)

    def init_params(
        self, data: Tensor, *, init: Any = "kmeans", generator: torch.Generator
    ) -> dict[str, Tensor]:
        """Starting values for EM (see :meth:`probgen.models.mixture._Mixture.init_params`).

        Also fixes the reference point of :meth:`chunk_stats` (the mean of ``data``), so that
        second moments summed over chunks are taken about a point near the data and keep their
        digits when the data sit far from the origin.

        Examples
        --------
        >>> import torch
        >>> gm = GaussianMixture(2, covariance_type="spherical")
        >>> x = gm.prepare_data(torch.randn(40, 2, generator=torch.Generator().manual_seed(1)) + 1e4)
        >>> p = gm.init_params(x, init="kmeans", generator=torch.Generator().manual_seed(0))
        >>> p["scale"].shape
        torch.Size([2])
        """
        params = super().init_params(data, init=init, generator=generator)
        self._stats_shift = data.mean(0)
        return params

    def _shift(self, params: Mapping[str, Tensor], d: int) -> Tensor:
        """Reference point of the chunk moments: fixed at :meth:`init_params`, else the mixture mean."""
        shift = self._stats_shift
        if shift is not None and tuple(shift.shape) == (d,):
            return shift
        return params["weights"] @ params["locs"]

    def _chunk_moments(self, data: Tensor, resp: Tensor, params: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Moments about a fixed point ``s``: ``"shift"`` ``n s``, ``"x"`` ``(K, d)``
        ``sum_i r_ik (x_i - s)``, and ``"xx"``: ``(K, d, d)`` ``sum_i r_ik (x_i - s)(x_i - s)^T``
        ("full"), their diagonals ``(K, d)`` ("diag", "spherical") or ``(d, d)``
        ``sum_i (x_i - s)(x_i - s)^T`` ("tied")."""
        cache = self._cached(data)  # the E-step's centring on the chunk mean c, reused
        xc = cache.xc
        n, d = xc.shape
        shift = self._shift(params, d)
        delta = cache.center - shift  # x - s = xc + delta: small, so no digits are lost
        ct = self.covariance_type
        resp_t = resp.T.contiguous()
        nk = resp.sum(0)
        if ct == "full":
            moments = resp_t @ cache.x_xx
            s1 = moments[:, :d]
            s2 = self._unpack(moments[:, d:], cache.tril, d)
            cross = s1[:, :, None] * delta[None, None, :]
            xx = s2 + cross + cross.transpose(1, 2) + nk[:, None, None] * torch.outer(delta, delta)
        elif ct == "tied":
            s1 = resp_t @ xc
            a = xc.sum(0)
            cross = torch.outer(a, delta)
            xx = xc.T @ xc + cross + cross.T + n * torch.outer(delta, delta)
        else:
            s1 = resp_t @ xc
            xx = resp_t @ cache.sq + 2.0 * s1 * delta + nk[:, None] * delta * delta
        x = s1 + nk[:, None] * delta
        return {"shift": n * shift, "x": x, "xx": xx}

    def _m_step_stats(
        self, stats: Mapping[str, Tensor], nk: Tensor, *, shift: Tensor | None = None
    ) -> dict[str, Tensor]:
        if shift is None:
            shift = stats["shift"] / stats["n"]
        d = stats["x"].shape[1]
        ct = self.covariance_type
        mu = stats["x"] / nk[:, None]  # means about the shift
        out = {"weights": self._weights_from_counts(nk), "locs": mu + shift}
        if ct == "full":
            cov = stats["xx"] / nk[:, None, None] - mu[:, :, None] * mu[:, None, :]
            cov.diagonal(dim1=1, dim2=2).add_(self.reg_covar)
        elif ct == "tied":
            cov = (stats["xx"] - (nk[:, None] * mu).T @ mu) / nk.sum()
            cov.diagonal().add_(self.reg_covar)
        else:
            var = stats["xx"] / nk[:, None] - mu * mu + self.reg_covar
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

    # ------------------------------------------------------------------------- picture
    def _full_covariances(self, params: Mapping[str, Tensor]) -> Tensor:
        """``(K, d, d)`` covariance matrices whatever the ``covariance_type``."""
        p = self._point(params)
        k, d = self.n_components, int(p["locs"].shape[-1])
        cov = self.covariances(p)
        if self.covariance_type == "diag":
            return torch.diag_embed(cov)
        if self.covariance_type == "spherical":
            return cov[:, None, None] * torch.eye(d, dtype=torch.float64)
        if self.covariance_type == "tied":
            return cov.expand(k, d, d)
        return cov

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
        from probgen.models.plotting import _axes, _colors, _index, _no_options

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
        if d == 1:
            return self._plot_density(ax, xs[:, 0], p, colors)
        from matplotlib.lines import Line2D
        from matplotlib.patches import Ellipse

        z = self.latent_map(x, p)["z"].numpy()
        ax.scatter(xs[:, i], xs[:, j], c=colors[z], s=10, alpha=0.7, linewidths=0)
        locs = p["locs"].numpy()[:, [i, j]]
        cov = self._full_covariances(p).numpy()[:, [i, j]][:, :, [i, j]]
        vals, vecs = np.linalg.eigh(cov)  # ascending eigenvalues, (K, 2) and (K, 2, 2)
        angles = np.degrees(np.arctan2(vecs[:, 1, 1], vecs[:, 0, 1]))  # direction of the larger axis
        sd = np.sqrt(np.clip(vals, 0.0, None))
        for c in range(k):
            for n_sd, style in ((1, "-"), (2, "--")):
                ax.add_patch(
                    Ellipse(
                        locs[c],
                        2 * n_sd * sd[c, 1],
                        2 * n_sd * sd[c, 0],
                        angle=angles[c],
                        fill=False,
                        edgecolor=colors[c],
                        linestyle=style,
                        linewidth=1.5,
                    )
                )
        ax.scatter(locs[:, 0], locs[:, 1], c=colors, marker="x", s=60, linewidths=2)
        weights = p["weights"].numpy()
        handles = [
            Line2D([], [], color=colors[c], label=f"component {c} ({weights[c]:.2f})") for c in range(k)
        ]
        handles += [
            Line2D([], [], color="0.3", linestyle="-", label="1 sd"),
            Line2D([], [], color="0.3", linestyle="--", label="2 sd"),
        ]
        ax.legend(handles=handles, fontsize=8, loc="best")
        ax.set(xlabel=f"feature {i}", ylabel=f"feature {j}", title=f"{self.name}, {k} components")
        return ax

    def _plot_density(self, ax: Any, x: np.ndarray, p: Mapping[str, Tensor], colors: np.ndarray) -> Any:
        """Histogram of one feature with the fitted mixture density and its components."""
        ax.hist(x, bins="auto", density=True, color="0.8", label="data")
        pad = 0.05 * (x.max() - x.min() + 1e-12)
        grid = np.linspace(x.min() - pad, x.max() + pad, 400)
        g = torch.as_tensor(grid, dtype=torch.float64)[:, None]
        log_joint = self._log_joint(g, p).numpy()  # (grid, K): log w_k N(x | k)
        for c in range(self.n_components):
            ax.plot(grid, np.exp(log_joint[:, c]), color=colors[c], linestyle="--", label=f"component {c}")
        ax.plot(grid, np.exp(np.logaddexp.reduce(log_joint, axis=1)), color="k", label="mixture")
        ax.legend(fontsize=8, loc="best")
        ax.set(xlabel="feature 0", ylabel="density", title=f"{self.name}, {self.n_components} components")
        return ax

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
