"""Covariance structures of :class:`probgen.models.GaussianMixture`, one class per ``covariance_type``.

:class:`_Full` and :class:`_Tied` keep standard deviations and a correlation Cholesky factor
(sites ``"scale"`` and ``"corr_cholesky"``), :class:`_Diag` and :class:`_Spherical` standard
deviations alone (site ``"scale"``).  Each owns what depends on the structure: the site names
and shapes, conversions between sites and scikit-learn's ``covariances_``, the full ``(K, d, d)``
matrices, the free-parameter count, the quadratic form and log-determinant of the E-step, the
moments of the M-step (in memory and over chunks), sampling, and the prior sites and component
distribution of the Pyro model.  :class:`probgen.models.GaussianMixture` picks one in its
constructor (:data:`_COVARIANCES`) and never asks which it holds.

Every structure works on :class:`_GaussianCache`: the data centred once per tensor, with the
products that let each moment be one GEMM.
"""

from __future__ import annotations

import abc
import weakref
from collections.abc import Mapping
from typing import Any, ClassVar

import pyro
import pyro.distributions as dist
import torch
from pyro.ops.indexing import Vindex
from torch import Tensor

__all__: list[str] = []

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


def _unpack(packed: Tensor, tril: Tensor, d: int) -> Tensor:
    """``(K, d, d)`` symmetric matrices from their packed lower triangles ``(K, d(d+1)/2)``."""
    out = torch.zeros(packed.shape[0], d, d, dtype=torch.float64)
    out[:, tril[0], tril[1]] = packed
    return out + torch.tril(out, -1).transpose(1, 2)


def _unpack_cached(packed: Tensor, cache: _GaussianCache, d: int) -> Tensor:
    """:func:`_unpack` by one gather with the cache's index (the E-/M-step path)."""
    return torch.index_select(packed, 1, cache.unpack_index).view(packed.shape[0], d, d)


def _scale_tril(p: Mapping[str, Tensor]) -> Tensor:
    """Cholesky factor of the covariance, ``diag(scale) @ corr_cholesky``."""
    scale = p["scale"]
    if "corr_cholesky" in p:
        return scale[..., :, None] * p["corr_cholesky"]
    return torch.diag_embed(scale)


def _sample_scale(std: Tensor) -> Tensor:
    """Per-feature standard deviations, log-normal about the data's."""
    return pyro.sample("scale", dist.LogNormal(std.log(), torch.ones_like(std)).to_event(1))


def _sample_corr(d: int, lkj_concentration: float) -> Tensor:
    return pyro.sample(
        "corr_cholesky",
        dist.LKJCholesky(d, torch.tensor(lkj_concentration, dtype=torch.float64), validate_args=False),
    )


def _mvn(loc: Tensor, scale: Tensor, corr: Tensor | None) -> Any:
    """``MultivariateNormal`` with Cholesky factor ``diag(scale) corr`` (``corr`` None: d == 1)."""
    tril = scale.unsqueeze(-1) * corr if corr is not None else scale.unsqueeze(-1)
    return dist.MultivariateNormal(loc, scale_tril=tril, validate_args=False)


class _Covariance(abc.ABC):
    """One covariance structure (scikit-learn's ``covariance_type``).

    ``params`` hold the float64 sites, ``k`` is the number of components, ``d`` of features;
    ``resp_t`` is the ``(K, n)`` transposed responsibilities and ``nk`` their column sums.
    """

    name: ClassVar[str]  # the constructor's covariance_type
    #: Sites indexed by component (besides ``"weights"`` and ``"locs"``), relabelled with them.
    component_sites: ClassVar[tuple[str, ...]]
    #: Whether the structure has a correlation factor (site ``"corr_cholesky"`` when ``d > 1``).
    correlated: ClassVar[bool] = False

    def site_names(self, d: int) -> tuple[str, ...]:
        """Global sample sites, in order."""
        has_corr = self.correlated and d > 1
        return ("weights", "locs", "scale") + (("corr_cholesky",) if has_corr else ())

    @abc.abstractmethod
    def shapes(self, k: int, d: int) -> dict[str, tuple[int, ...]]:
        """Shapes of ``"scale"`` and, where present, ``"corr_cholesky"``."""

    @abc.abstractmethod
    def covariances(self, p: Mapping[str, Tensor]) -> Tensor:
        """scikit-learn's ``covariances_`` from the sites."""

    @abc.abstractmethod
    def to_sites(self, cov: Tensor, d: int) -> dict[str, Tensor]:
        """The sites from scikit-learn's ``covariances_``."""

    @abc.abstractmethod
    def full(self, cov: Tensor, k: int, d: int) -> Tensor:
        """``(K, d, d)`` matrices from :meth:`covariances`' value."""

    @abc.abstractmethod
    def num_parameters(self, k: int, d: int) -> int:
        """Free covariance parameters (scikit-learn's ``_n_parameters``)."""

    @abc.abstractmethod
    def quad_log_det(
        self, cache: _GaussianCache, locs: Tensor, params: Mapping[str, Tensor], k: int
    ) -> tuple[Tensor, Tensor]:
        """``(n, K)`` squared Mahalanobis distances of the centred items from ``locs`` (centred
        too), and ``(K,)`` ``-log det`` of the Cholesky factors."""

    @abc.abstractmethod
    def moments(self, cache: _GaussianCache, resp_t: Tensor) -> dict[str, Tensor]:
        """The M-step's ``"x"`` and ``"xx"`` about the data's centre."""

    @abc.abstractmethod
    def chunk_moments(
        self, cache: _GaussianCache, resp_t: Tensor, nk: Tensor, delta: Tensor
    ) -> tuple[Tensor, Tensor]:
        """``sum_i r_ik (x_i - c)`` and the second moments about ``s = c - delta`` of a chunk
        centred on ``c``."""

    @abc.abstractmethod
    def covariance(self, stats: Mapping[str, Tensor], nk: Tensor, mu: Tensor, reg_covar: float) -> Tensor:
        """scikit-learn's ``covariances_`` from the moments ``stats`` about the means ``mu``."""

    @abc.abstractmethod
    def sample(self, locs: Tensor, params: Mapping[str, Tensor], z: Tensor, eps: Tensor) -> Tensor:
        """Items of components ``z`` from standard normal noise ``eps`` ``(n, d)``."""

    @abc.abstractmethod
    def from_full_moments(self, xx: Tensor) -> Tensor:
        """The M-step's ``"xx"`` from ``(K, d, d)`` second moments per component (data with
        missing cells: expected moments come as full matrices)."""

    @abc.abstractmethod
    def component_prior(self, std: Tensor, d: int, lkj_concentration: float) -> dict[str, Tensor]:
        """Pyro sample sites inside the components plate."""

    def shared_prior(self, std: Tensor, d: int, lkj_concentration: float) -> dict[str, Tensor]:
        """Pyro sample sites shared by the components (outside their plate)."""
        return {}

    @abc.abstractmethod
    def component(self, loc: Tensor, sites: Mapping[str, Tensor], z: Tensor, d: int) -> Any:
        """The distribution of items of the (enumerated) components ``z``; ``loc`` is indexed."""


# ----------------------------------------------------------------- standard deviations only
class _Independent(_Covariance):
    """Features independent within a component: ``"scale"`` alone ("diag", "spherical")."""

    @abc.abstractmethod
    def per_feature(self, scale: Tensor, k: int, d: int) -> Tensor:
        """``(K, d)`` standard deviations."""

    def covariances(self, p: Mapping[str, Tensor]) -> Tensor:
        return p["scale"] ** 2

    def to_sites(self, cov: Tensor, d: int) -> dict[str, Tensor]:
        return {"scale": cov.sqrt()}

    def quad_log_det(
        self, cache: _GaussianCache, locs: Tensor, params: Mapping[str, Tensor], k: int
    ) -> tuple[Tensor, Tensor]:
        xc = cache.xc
        s = self.per_feature(params["scale"], k, xc.shape[1])
        prec = s.pow(-2)  # (K, d)
        quad = cache.sq @ prec.T - 2.0 * (xc @ (locs * prec).T) + (locs * locs * prec).sum(1)
        return quad, -torch.log(s).sum(1)

    def moments(self, cache: _GaussianCache, resp_t: Tensor) -> dict[str, Tensor]:
        return {"x": resp_t @ cache.xc, "xx": resp_t @ cache.sq}

    def chunk_moments(
        self, cache: _GaussianCache, resp_t: Tensor, nk: Tensor, delta: Tensor
    ) -> tuple[Tensor, Tensor]:
        s1 = resp_t @ cache.xc
        return s1, resp_t @ cache.sq + 2.0 * s1 * delta + nk[:, None] * delta * delta

    def covariance(self, stats: Mapping[str, Tensor], nk: Tensor, mu: Tensor, reg_covar: float) -> Tensor:
        return self.reduce(stats["xx"] / nk[:, None] - mu * mu + reg_covar)

    def from_full_moments(self, xx: Tensor) -> Tensor:
        return torch.diagonal(xx, dim1=1, dim2=2)

    @abc.abstractmethod
    def reduce(self, var: Tensor) -> Tensor:
        """scikit-learn's ``covariances_`` from ``(K, d)`` variances."""

    def sample(self, locs: Tensor, params: Mapping[str, Tensor], z: Tensor, eps: Tensor) -> Tensor:
        s = self.per_feature(params["scale"], -1, locs.shape[-1])
        return locs[z] + s[z] * eps


class _Diag(_Independent):
    name = "diag"
    component_sites = ("scale",)

    def shapes(self, k: int, d: int) -> dict[str, tuple[int, ...]]:
        return {"scale": (k, d)}

    def per_feature(self, scale: Tensor, k: int, d: int) -> Tensor:
        return scale

    def reduce(self, var: Tensor) -> Tensor:
        return var

    def full(self, cov: Tensor, k: int, d: int) -> Tensor:
        return torch.diag_embed(cov)

    def num_parameters(self, k: int, d: int) -> int:
        return k * d

    def component_prior(self, std: Tensor, d: int, lkj_concentration: float) -> dict[str, Tensor]:
        return {"scale": _sample_scale(std)}

    def component(self, loc: Tensor, sites: Mapping[str, Tensor], z: Tensor, d: int) -> Any:
        return dist.Normal(loc, Vindex(sites["scale"])[..., z, :]).to_event(1)


class _Spherical(_Independent):
    name = "spherical"
    component_sites = ("scale",)

    def shapes(self, k: int, d: int) -> dict[str, tuple[int, ...]]:
        return {"scale": (k,)}

    def per_feature(self, scale: Tensor, k: int, d: int) -> Tensor:
        return scale[:, None].expand(k, d)

    def reduce(self, var: Tensor) -> Tensor:
        return var.mean(1)

    def full(self, cov: Tensor, k: int, d: int) -> Tensor:
        return cov[:, None, None] * torch.eye(d, dtype=torch.float64)

    def num_parameters(self, k: int, d: int) -> int:
        return k

    def component_prior(self, std: Tensor, d: int, lkj_concentration: float) -> dict[str, Tensor]:
        ms = std.log().mean()
        return {"scale": pyro.sample("scale", dist.LogNormal(ms, torch.ones_like(ms)))}

    def component(self, loc: Tensor, sites: Mapping[str, Tensor], z: Tensor, d: int) -> Any:
        return dist.Normal(loc, Vindex(sites["scale"])[..., z].unsqueeze(-1).expand(loc.shape)).to_event(1)


# ------------------------------------------------------------- with a correlation factor
class _Correlated(_Covariance):
    """Standard deviations and a correlation Cholesky factor ("full", "tied")."""

    correlated = True

    def covariances(self, p: Mapping[str, Tensor]) -> Tensor:
        tril = _scale_tril(p)
        return tril @ tril.transpose(-1, -2)

    def to_sites(self, cov: Tensor, d: int) -> dict[str, Tensor]:
        chol, info = torch.linalg.cholesky_ex(cov)
        if bool((info != 0).any()) or not bool(torch.isfinite(chol).all()):
            raise ValueError(
                f"a {self.name} covariance computed from the data is not positive definite (or not "
                "finite): the data are degenerate for this model (repeated or constant items, a feature "
                "with no spread, or values so large that their squares overflow). Raise the covariance "
                "floor (reg_covar / min_covar), use covariance_type='diag', rescale the data, or fit "
                "fewer components or states."
            )
        scale = torch.linalg.vector_norm(chol, dim=-1)
        out = {"scale": scale}
        if d > 1:
            out["corr_cholesky"] = chol / scale[..., :, None]
        return out


class _Full(_Correlated):
    name = "full"
    component_sites = ("scale", "corr_cholesky")

    def shapes(self, k: int, d: int) -> dict[str, tuple[int, ...]]:
        return {"scale": (k, d), "corr_cholesky": (k, d, d)}

    def full(self, cov: Tensor, k: int, d: int) -> Tensor:
        return cov

    def num_parameters(self, k: int, d: int) -> int:
        return k * d * (d + 1) // 2

    def quad_log_det(
        self, cache: _GaussianCache, locs: Tensor, params: Mapping[str, Tensor], k: int
    ) -> tuple[Tensor, Tensor]:
        xc = cache.xc
        n, d = xc.shape
        tril = _scale_tril(params)
        # The expanded form below rounds with an absolute error near eps * |x|^2 * |P|; when that
        # could reach 1e-9 (clusters far apart relative to their spread) the whitened
        # residuals are used instead, exact to rounding of the result itself.
        inv = torch.linalg.solve_triangular(tril, cache.eye.expand(k, d, d), upper=False)  # L^-1
        prec_bound = float((inv * inv).sum((1, 2)).max())  # trace of P bounds its eigenvalues
        if cache.max_sq_norm * prec_bound < 1e7:
            prec = inv.transpose(1, 2) @ inv  # (K, d, d) precision matrices
            # (x - mu)' P (x - mu) = x'Px - 2 (P mu)'x + mu'P mu, with x'Px read off the cached
            # products x_i x_j (i >= j, as the M-step uses them): the whole E-step is one GEMM
            # on the centred data (no (n, K d) intermediate)
            coef = torch.index_select(prec.reshape(k, d * d), 1, cache.tril_flat).mul_(cache.pair_weight)
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
        return quad, -torch.log(torch.diagonal(tril, dim1=-2, dim2=-1)).sum(1)

    def moments(self, cache: _GaussianCache, resp_t: Tensor) -> dict[str, Tensor]:
        d = cache.xc.shape[1]
        moments = resp_t @ cache.x_xx  # (K, d + d(d+1)/2): first and second moments in one GEMM
        return {"x": moments[:, :d], "xx": _unpack_cached(moments[:, d:], cache, d)}

    def chunk_moments(
        self, cache: _GaussianCache, resp_t: Tensor, nk: Tensor, delta: Tensor
    ) -> tuple[Tensor, Tensor]:
        d = cache.xc.shape[1]
        moments = resp_t @ cache.x_xx
        s1 = moments[:, :d]
        s2 = _unpack(moments[:, d:], cache.tril, d)
        cross = s1[:, :, None] * delta[None, None, :]
        return s1, s2 + cross + cross.transpose(1, 2) + nk[:, None, None] * torch.outer(delta, delta)

    def covariance(self, stats: Mapping[str, Tensor], nk: Tensor, mu: Tensor, reg_covar: float) -> Tensor:
        cov = stats["xx"] / nk[:, None, None] - mu[:, :, None] * mu[:, None, :]
        cov.diagonal(dim1=1, dim2=2).add_(reg_covar)
        return cov

    def from_full_moments(self, xx: Tensor) -> Tensor:
        return xx

    def sample(self, locs: Tensor, params: Mapping[str, Tensor], z: Tensor, eps: Tensor) -> Tensor:
        return locs[z] + torch.einsum("nde,ne->nd", _scale_tril(params)[z], eps)

    def component_prior(self, std: Tensor, d: int, lkj_concentration: float) -> dict[str, Tensor]:
        sites = {"scale": _sample_scale(std)}
        if d > 1:
            sites["corr_cholesky"] = _sample_corr(d, lkj_concentration)
        return sites

    def component(self, loc: Tensor, sites: Mapping[str, Tensor], z: Tensor, d: int) -> Any:
        corr = Vindex(sites["corr_cholesky"])[..., z, :, :] if d > 1 else None
        return _mvn(loc, Vindex(sites["scale"])[..., z, :], corr)


class _Tied(_Correlated):
    name = "tied"
    component_sites = ()

    def shapes(self, k: int, d: int) -> dict[str, tuple[int, ...]]:
        return {"scale": (d,), "corr_cholesky": (d, d)}

    def full(self, cov: Tensor, k: int, d: int) -> Tensor:
        return cov.expand(k, d, d)

    def num_parameters(self, k: int, d: int) -> int:
        return d * (d + 1) // 2

    def quad_log_det(
        self, cache: _GaussianCache, locs: Tensor, params: Mapping[str, Tensor], k: int
    ) -> tuple[Tensor, Tensor]:
        tril = _scale_tril(params)
        inv = torch.linalg.solve_triangular(tril, cache.eye, upper=False)  # L^-1
        w = inv.T  # (d, d): y = (x - mu) @ L^-T
        y = cache.xc @ w
        b = locs @ w  # (K, d)
        quad = (y * y).sum(1)[:, None] - 2.0 * y @ b.T + (b * b).sum(1)[None, :]
        quad = quad.clamp_min_(0.0)
        return quad, -torch.log(torch.diagonal(tril)).sum().expand(k)

    def moments(self, cache: _GaussianCache, resp_t: Tensor) -> dict[str, Tensor]:
        xc = cache.xc
        return {"x": resp_t @ xc, "xx": xc.T @ xc}

    def chunk_moments(
        self, cache: _GaussianCache, resp_t: Tensor, nk: Tensor, delta: Tensor
    ) -> tuple[Tensor, Tensor]:
        xc = cache.xc
        s1 = resp_t @ xc
        a = xc.sum(0)
        cross = torch.outer(a, delta)
        return s1, xc.T @ xc + cross + cross.T + xc.shape[0] * torch.outer(delta, delta)

    def covariance(self, stats: Mapping[str, Tensor], nk: Tensor, mu: Tensor, reg_covar: float) -> Tensor:
        cov = (stats["xx"] - (nk[:, None] * mu).T @ mu) / nk.sum()
        cov.diagonal().add_(reg_covar)
        return cov

    def from_full_moments(self, xx: Tensor) -> Tensor:
        return xx.sum(0)  # every item's moments, whatever its component

    def sample(self, locs: Tensor, params: Mapping[str, Tensor], z: Tensor, eps: Tensor) -> Tensor:
        return locs[z] + eps @ _scale_tril(params).T

    def component_prior(self, std: Tensor, d: int, lkj_concentration: float) -> dict[str, Tensor]:
        return {}

    def shared_prior(self, std: Tensor, d: int, lkj_concentration: float) -> dict[str, Tensor]:
        sites = {"scale": _sample_scale(std)}
        if d > 1:
            sites["corr_cholesky"] = _sample_corr(d, lkj_concentration)
        return sites

    def component(self, loc: Tensor, sites: Mapping[str, Tensor], z: Tensor, d: int) -> Any:
        return _mvn(loc, sites["scale"], sites.get("corr_cholesky") if d > 1 else None)


#: The structure of each ``covariance_type``.
_COVARIANCES: dict[str, type[_Covariance]] = {c.name: c for c in (_Full, _Diag, _Spherical, _Tied)}
