"""Covariance structures of the Gaussian emissions of :class:`probgen.models.HiddenMarkovModel`.

One strategy per ``covariance_type`` (hmmlearn's names): :class:`_FullCovariance` and
:class:`_TiedCovariance` keep lower Cholesky factors (site ``"scale_tril"``),
:class:`_DiagCovariance` and :class:`_SphericalCovariance` standard deviations (site
``"scales"``).  Each owns what depends on the structure: densities (whitened residuals, or
residuals feature by feature), the weights of the expanded quadratic form, second moments and
the M-step, starting values and hmmlearn's ``covars_``, priors and distributions for the Pyro
model, sampling noise and the parameter count.  :class:`probgen.models._hmm_gaussian._GaussianEmission`
holds one.
"""

from __future__ import annotations

import abc
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import pyro.distributions as dist
import torch
from pyro.distributions import constraints
from torch import Tensor

from probgen.models._hmm_emissions import (
    Params,
    Stats,
    _as_kernel_array,
    _chain_arrays,
    _expect_positive,
    _expect_shape,
)
from probgen.models._hmm_engine import _small_problem
from probgen.models._hmm_layout import SequenceData, _Layout
from probgen.models._hmm_viterbi import _ViterbiEmission

__all__: list[str] = []

_F64 = torch.float64
_EMISSION_CHUNK = 8192  # rows of emission densities computed at a time
_LOG_2PI = math.log(2 * math.pi)


def _cholesky(cov: Tensor) -> Tensor:
    """The Cholesky factor of an M-step's covariance; ``torch.linalg.LinAlgError`` also where it is
    singular to rounding: a pivot at or under ``d * eps`` of the largest variance, where the
    factorisation passes or fails on the last bits (constant data give ``[[a, a], [a, a]]``, as
    hmmlearn adds its scalar ``covars_prior`` to every cell)."""
    chol, info = torch.linalg.cholesky_ex(cov)
    pivots = torch.diagonal(chol, dim1=-2, dim2=-1) ** 2
    largest = torch.diagonal(cov, dim1=-2, dim2=-1).amax(-1, keepdim=True)
    if bool((info != 0).any()) or bool(
        (pivots <= cov.shape[-1] * torch.finfo(cov.dtype).eps * largest).any()
    ):
        raise torch.linalg.LinAlgError("linalg.cholesky: the covariance is not positive definite (singular)")
    return chol


class _CholeskyPrior(dist.TorchDistribution):
    """Independent prior on the free entries of a lower Cholesky factor.

    Diagonal entries are log-normal around ``scale``, entries below the diagonal normal with
    standard deviation ``scale`` of their row: a proper, weakly informative prior on covariances
    parametrised by their Cholesky factor (Pyro's ``MultivariateNormal(scale_tril=...)``).
    """

    arg_constraints = {"scale": constraints.positive}
    support = constraints.lower_cholesky

    def __init__(self, scale: Tensor, batch_shape: tuple[int, ...] = (), validate_args: bool | None = None):
        self.scale = scale
        d = scale.shape[-1]
        super().__init__(torch.Size(batch_shape), torch.Size((d, d)), validate_args=validate_args)

    def sample(self, sample_shape: torch.Size = torch.Size()) -> Tensor:  # type: ignore[override]  # noqa: B008
        d = self.scale.shape[-1]
        shape = tuple(sample_shape) + tuple(self.batch_shape) + (d, d)
        with torch.no_grad():
            z = torch.randn(shape, dtype=self.scale.dtype) * self.scale[..., :, None]
            diag = self.scale * torch.exp(torch.randn(shape[:-1], dtype=self.scale.dtype))
            return torch.tril(z, -1) + torch.diag_embed(diag)

    def log_prob(self, value: Tensor) -> Tensor:
        d = self.scale.shape[-1]
        diag = torch.diagonal(value, dim1=-2, dim2=-1)
        lp = dist.LogNormal(torch.log(self.scale), 1.0).log_prob(diag).sum(-1)
        low = torch.tril(torch.ones(d, d, dtype=torch.bool), -1)
        off = dist.Normal(0.0, self.scale[..., :, None].expand(value.shape)).log_prob(value)
        return lp + torch.where(low, off, torch.zeros((), dtype=value.dtype)).sum((-2, -1))

    def expand(self, batch_shape: Any, _instance: Any = None) -> _CholeskyPrior:
        return _CholeskyPrior(self.scale, tuple(batch_shape), validate_args=False)


# ------------------------------------------------------------------ covariance structures
@dataclass(frozen=True)
class _Covariance(abc.ABC):
    """One covariance structure of Gaussian emissions (hmmlearn's ``covariance_type``).

    ``value`` is the covariance site's tensor (float64), ``K`` the number of states and ``d``
    the number of features; ``locs`` ``(K, d)``.
    """

    name: ClassVar[str]  # the constructor's covariance_type
    site: ClassVar[str]  # the sample site holding it
    state_sites: ClassVar[tuple[str, ...]]  # the site when indexed by state (relabelled with them)
    features: ClassVar[str]  # second-order step features of the expanded form: cache key

    @abc.abstractmethod
    def shape(self, K: int, d: int) -> tuple[int, ...]:
        """Shape of the site's value, and of hmmlearn's ``covars_`` for this structure."""

    @abc.abstractmethod
    def matrices(self, value: Tensor, K: int, d: int) -> Tensor:
        """Full covariance matrices ``(..., K, d, d)`` (hmmlearn's ``covars_``)."""

    @abc.abstractmethod
    def log_density(self, X: Tensor, locs: Tensor, value: Tensor, K: int) -> Tensor:
        """Log-densities ``(n, K)`` of the steps ``X`` ``(n, d)``, exact to rounding."""

    @abc.abstractmethod
    def second_order(self, Xc: Tensor) -> Tensor:
        """Second-order features of centred steps ``Xc`` ``(..., d)`` for the expanded form."""

    @abc.abstractmethod
    def precision_terms(
        self, value: Tensor, locs: Tensor, K: int, max_sq: float
    ) -> tuple[Tensor, Tensor, Tensor] | None:
        """Weights of the expanded form: on the second-order features, on the centred step
        (``P mu``), and ``log det`` of the Cholesky factor; ``None`` when the expanded form
        could round by 1e-9 (precisions large relative to the spread of the data)."""

    @abc.abstractmethod
    def moments(self, G: Tensor, X: Tensor, data: SequenceData, block_length: int) -> Stats:
        """``"obs"`` and the second moments of the steps ``X`` under the marginals ``G``."""

    @abc.abstractmethod
    def raw_second(self, second: Tensor, first: Tensor, post: Tensor, center: Tensor) -> Stats:
        """Second moments about the origin from moments about ``center``."""

    @abc.abstractmethod
    def m_step(
        self, stats: Mapping[str, Tensor], means: Tensor, post: Tensor, prior: float
    ) -> dict[str, Tensor]:
        """hmmlearn's covariance update, ``prior`` (``covars_prior``) added to the numerators."""

    @abc.abstractmethod
    def second_moments(self, second: Tensor) -> Stats:
        """The second-moment statistics :meth:`m_step` reads, from full ``(K, d, d)`` moments."""

    @abc.abstractmethod
    def from_matrices(self, cov: Tensor) -> dict[str, Tensor]:
        """The site for per-state covariance matrices ``(K, d, d)``."""

    @abc.abstractmethod
    def validate(self, value: Tensor, K: int, d: int) -> Tensor:
        """Check a starting value of the site."""

    @abc.abstractmethod
    def from_hmmlearn(self, value: Tensor, K: int, d: int) -> dict[str, Tensor]:
        """The site from hmmlearn's ``covars_`` (``init["covars"]``)."""

    @abc.abstractmethod
    def n_parameters(self, K: int, d: int) -> int:
        """Free covariance parameters."""

    @abc.abstractmethod
    def noise(self, eps: Tensor, value: Tensor, states: Tensor) -> Tensor:
        """Standard normal draws ``eps`` ``(n, d)`` coloured by the covariance of ``states``."""

    @abc.abstractmethod
    def prior(self, spread: Tensor, K: int, d: int) -> Any:
        """Weakly informative prior of the site, scaled by the data's spread."""

    @abc.abstractmethod
    def distribution(self, locs: Tensor, value: Tensor) -> Any:
        """Observation distribution with means ``locs`` ``(K, d)``."""

    @abc.abstractmethod
    def state_distribution(self, locs: Tensor, value: Tensor, z: Tensor) -> Any:
        """Observation distribution of states ``z`` whose means are ``locs``."""

    def compiled_e_step(self, data: SequenceData, params: Params, K: int) -> tuple[Stats, float] | None:
        """Optional: the whole E-step of a small problem in one compiled call."""
        return None

    def viterbi_emission(
        self, vals: Tensor, locs: Tensor, value: Tensor, lay: _Layout, K: int
    ) -> _ViterbiEmission | None:
        """Optional: state-major log-densities for the PyTorch Viterbi decoder."""
        return None


def _symmetric(upper: Tensor, d: int) -> Tensor:
    """``(K, d, d)`` symmetric matrices from their upper triangles ``(K, d (d + 1) / 2)``."""
    i, j = torch.triu_indices(d, d)
    outer = torch.empty((upper.shape[0], d, d), dtype=_F64)
    outer[:, i, j] = upper
    outer[:, j, i] = upper
    return outer


@dataclass(frozen=True)
class _CholeskyCovariance(_Covariance):
    """Covariances kept as lower Cholesky factors (``"full"``, ``"tied"``)."""

    site: ClassVar[str] = "scale_tril"
    features: ClassVar[str] = "pairs"

    @abc.abstractmethod
    def per_state(self, cov: Tensor, K: int, d: int) -> Tensor:
        """Matrices of the site's layout as one per state."""

    @abc.abstractmethod
    def pooled(self, c_n: Tensor, post: Tensor, prior: float) -> Tensor:
        """Covariances from the scatter matrices ``c_n`` ``(K, d, d)`` and occupancies ``post``."""

    @abc.abstractmethod
    def of_states(self, value: Tensor, z: Tensor) -> Tensor:
        """The factors of states ``z``."""

    def _whitening(self, value: Tensor, K: int, d: int) -> tuple[Tensor, Tensor]:
        """Inverse Cholesky factors ``(K, d, d)`` and the log-determinants of the factors ``(K,)``."""
        Lc = value.expand(K, d, d)
        inv = torch.linalg.solve_triangular(Lc, torch.eye(d, dtype=_F64).expand(K, d, d), upper=False)
        return inv, torch.log(torch.diagonal(Lc, dim1=-2, dim2=-1)).sum(-1)

    def matrices(self, value: Tensor, K: int, d: int) -> Tensor:
        return self.per_state(value @ value.transpose(-1, -2), K, d)

    def log_density(self, X: Tensor, locs: Tensor, value: Tensor, K: int) -> Tensor:
        d = locs.shape[-1]
        inv, logdet = self._whitening(value, K, d)
        Linv_t = inv.transpose(-1, -2)  # (K, d, d)
        # whitened residuals of every state side by side: one (n, d) x (d, K d) product
        W = Linv_t.permute(1, 0, 2).reshape(d, K * d)
        shift = -torch.matmul(locs[:, None, :], Linv_t).reshape(K * d)
        n = X.shape[0]
        out = torch.empty((n, K), dtype=_F64)
        buf = torch.empty((min(n, _EMISSION_CHUNK), K * d), dtype=_F64)
        for s in range(0, n, _EMISSION_CHUNK):  # cache-sized pieces: no (n, K d) intermediate
            b = buf[: min(n - s, _EMISSION_CHUNK)]
            torch.addmm(shift, X[s : s + _EMISSION_CHUNK], W, out=b).square_()
            torch.sum(b.view(-1, K, d), -1, out=out[s : s + _EMISSION_CHUNK])
        return out.mul_(-0.5).sub_(logdet + 0.5 * d * _LOG_2PI)

    def second_order(self, Xc: Tensor) -> Tensor:
        i, j = torch.triu_indices(Xc.shape[-1], Xc.shape[-1])
        return Xc[..., i] * Xc[..., j]

    def precision_terms(
        self, value: Tensor, locs: Tensor, K: int, max_sq: float
    ) -> tuple[Tensor, Tensor, Tensor] | None:
        d = locs.shape[-1]
        inv, logdet = self._whitening(value, K, d)
        if max_sq * float((inv * inv).sum((1, 2)).max().detach()) >= 1e7:  # trace of P bounds eigenvalues
            return None
        prec = inv.transpose(1, 2) @ inv  # (K, d, d)
        i, j = torch.triu_indices(d, d)
        second = -0.5 * prec[:, i, j] * torch.where(i == j, 1.0, 2.0).to(_F64)  # x'Px counts i != j twice
        return second, torch.bmm(prec, locs[:, :, None]).view(K, d), logdet

    def moments(self, G: Tensor, X: Tensor, data: SequenceData, block_length: int) -> Stats:
        d = X.shape[1]
        key = f"x_xx/{block_length}"  # x and the products x_i x_j (i <= j) in block layout, once per data
        if key not in data.cache:
            i, j = torch.triu_indices(d, d)
            data.cache[key] = torch.cat([X, X[:, i] * X[:, j]], 1)
        both = G.T @ data.cache[key]  # first and second moments in one product
        return {"obs": both[:, :d], "obs_outer": _symmetric(both[:, d:], d)}

    def second_moments(self, second: Tensor) -> Stats:
        return {"obs_outer": second}

    def raw_second(self, second: Tensor, first: Tensor, post: Tensor, center: Tensor) -> Stats:
        cross = first[:, :, None] * center[None, None, :]
        outer = _symmetric(second, center.shape[0])
        return {
            "obs_outer": outer
            + cross
            + cross.transpose(1, 2)
            + post[:, None, None] * torch.outer(center, center)
        }

    def m_step(
        self, stats: Mapping[str, Tensor], means: Tensor, post: Tensor, prior: float
    ) -> dict[str, Tensor]:
        om = stats["obs"][:, :, None] * means[:, None, :]
        c_n = (
            stats["obs_outer"]
            - om
            - om.transpose(-1, -2)
            + means[:, :, None] * means[:, None, :] * post[:, None, None]
        )
        return {"scale_tril": _cholesky(self.pooled(c_n, post, prior))}

    def validate(self, value: Tensor, K: int, d: int) -> Tensor:
        _expect_shape(value, self.shape(K, d), self.site)
        diag = torch.diagonal(value, dim1=-2, dim2=-1)
        if bool((diag <= 0).any()) or not torch.equal(value, torch.tril(value)):
            raise ValueError("init['scale_tril'] must be lower triangular with a positive diagonal.")
        return value

    def from_hmmlearn(self, value: Tensor, K: int, d: int) -> dict[str, Tensor]:
        expected = self.shape(K, d)
        _expect_shape(value, expected, "covars")
        chol, info = torch.linalg.cholesky_ex(value)
        if bool((info != 0).any()):
            raise ValueError(f"init['covars'] must be symmetric positive definite (shape {expected}).")
        return {"scale_tril": chol}

    def n_parameters(self, K: int, d: int) -> int:
        return math.prod(self.shape(K, d)[:-2]) * (d * (d + 1) // 2)

    def distribution(self, locs: Tensor, value: Tensor) -> Any:
        K, d = locs.shape
        return dist.MultivariateNormal(locs, scale_tril=value.expand(K, d, d))

    def state_distribution(self, locs: Tensor, value: Tensor, z: Tensor) -> Any:
        return dist.MultivariateNormal(locs, scale_tril=self.of_states(value, z))

    def viterbi_emission(
        self, vals: Tensor, locs: Tensor, value: Tensor, lay: _Layout, K: int
    ) -> _ViterbiEmission | None:
        """State-major whitened residuals, as :meth:`log_density` computes them row-major."""
        d = locs.shape[-1]
        W, logdet = self._whitening(value, K, d)
        const = logdet + 0.5 * d * _LOG_2PI
        return _ViterbiEmission.from_whitened(vals, W, -(W @ locs[:, :, None])[..., 0], const, lay)


@dataclass(frozen=True)
class _FullCovariance(_CholeskyCovariance):
    """A covariance matrix per state: ``scale_tril`` ``(K, d, d)``."""

    name: ClassVar[str] = "full"
    state_sites: ClassVar[tuple[str, ...]] = ("scale_tril",)

    def shape(self, K: int, d: int) -> tuple[int, ...]:
        return (K, d, d)

    def per_state(self, cov: Tensor, K: int, d: int) -> Tensor:
        return cov

    def pooled(self, c_n: Tensor, post: Tensor, prior: float) -> Tensor:
        return (prior + c_n) / post[:, None, None]

    def of_states(self, value: Tensor, z: Tensor) -> Tensor:
        return value[z]

    def from_matrices(self, cov: Tensor) -> dict[str, Tensor]:
        return {"scale_tril": torch.linalg.cholesky(cov)}

    def noise(self, eps: Tensor, value: Tensor, states: Tensor) -> Tensor:
        return (value[states] @ eps[:, :, None])[..., 0]

    def prior(self, spread: Tensor, K: int, d: int) -> Any:
        return _CholeskyPrior(spread).expand((K,)).to_event(1)


@dataclass(frozen=True)
class _TiedCovariance(_CholeskyCovariance):
    """One covariance matrix shared by every state: ``scale_tril`` ``(d, d)``."""

    name: ClassVar[str] = "tied"
    state_sites: ClassVar[tuple[str, ...]] = ()

    def shape(self, K: int, d: int) -> tuple[int, ...]:
        return (d, d)

    def per_state(self, cov: Tensor, K: int, d: int) -> Tensor:
        return cov.unsqueeze(-3).expand(cov.shape[:-2] + (K, d, d)).clone()

    def pooled(self, c_n: Tensor, post: Tensor, prior: float) -> Tensor:
        return (prior + c_n.sum(0)) / post.sum()

    def of_states(self, value: Tensor, z: Tensor) -> Tensor:
        return value

    def from_matrices(self, cov: Tensor) -> dict[str, Tensor]:
        return {"scale_tril": torch.linalg.cholesky(cov if cov.dim() == 2 else cov[0])}

    def noise(self, eps: Tensor, value: Tensor, states: Tensor) -> Tensor:
        return eps @ value.T

    def prior(self, spread: Tensor, K: int, d: int) -> Any:
        return _CholeskyPrior(spread)


@dataclass(frozen=True)
class _ScaleCovariance(_Covariance):
    """Diagonal covariances kept as standard deviations (``"diag"``, ``"spherical"``)."""

    site: ClassVar[str] = "scales"
    state_sites: ClassVar[tuple[str, ...]] = ("scales",)
    features: ClassVar[str] = "squares"

    @abc.abstractmethod
    def widen(self, s: Tensor, d: int) -> Tensor:
        """Per-feature values ``(..., d)`` from the site's layout."""

    @abc.abstractmethod
    def narrow(self, var: Tensor) -> Tensor:
        """The site's layout from per-feature values ``(..., d)``."""

    def matrices(self, value: Tensor, K: int, d: int) -> Tensor:
        return torch.diag_embed(self.widen(value**2, d))

    def log_density(self, X: Tensor, locs: Tensor, value: Tensor, K: int) -> Tensor:
        d = locs.shape[-1]
        scales = self.widen(value, d)
        # residuals feature by feature (exact; the fast expanded form is precision_terms')
        inv = scales.reciprocal()  # (K, d)
        out = torch.zeros((X.shape[0], K), dtype=_F64)
        for j in range(d):
            out.add_(((X[:, j : j + 1] - locs[:, j]) * inv[:, j]).square_())
        return out.mul_(-0.5).sub_(torch.log(scales).sum(-1) + 0.5 * d * _LOG_2PI)

    def second_order(self, Xc: Tensor) -> Tensor:
        return Xc * Xc

    def precision_terms(
        self, value: Tensor, locs: Tensor, K: int, max_sq: float
    ) -> tuple[Tensor, Tensor, Tensor] | None:
        scales = self.widen(value, locs.shape[-1])
        prec_d = scales.pow(-2)  # (K, d)
        if max_sq * float(prec_d.sum(1).max().detach()) >= 1e7:
            return None
        return -0.5 * prec_d, locs * prec_d, torch.log(scales).sum(-1)

    def moments(self, G: Tensor, X: Tensor, data: SequenceData, block_length: int) -> Stats:
        return {"obs": G.T @ X, "obs_sq": G.T @ (X * X)}

    def second_moments(self, second: Tensor) -> Stats:
        return {"obs_sq": torch.diagonal(second, dim1=-2, dim2=-1)}

    def raw_second(self, second: Tensor, first: Tensor, post: Tensor, center: Tensor) -> Stats:
        return {"obs_sq": second + 2.0 * first * center + post[:, None] * center * center}

    def m_step(
        self, stats: Mapping[str, Tensor], means: Tensor, post: Tensor, prior: float
    ) -> dict[str, Tensor]:
        # sum_t g_t (x_t - m)^2 = obs_sq - 2 m obs + m^2 post = obs_sq - m obs (m = obs / post)
        var = (stats["obs_sq"] - means * stats["obs"] + prior) / post[:, None].clamp_min(1e-5)
        return {"scales": self.narrow(var).sqrt()}

    def from_matrices(self, cov: Tensor) -> dict[str, Tensor]:
        return {"scales": self.narrow(torch.diagonal(cov, dim1=-2, dim2=-1)).sqrt()}

    def validate(self, value: Tensor, K: int, d: int) -> Tensor:
        _expect_shape(value, self.shape(K, d), self.site)
        _expect_positive(value, self.site)
        return value

    def from_hmmlearn(self, value: Tensor, K: int, d: int) -> dict[str, Tensor]:
        _expect_shape(value, self.shape(K, d), "covars")
        if bool((value <= 0).any()):
            raise ValueError(
                f"init['covars'] must be positive for covariance_type={self.name!r}; got min {float(value.min())!r}."
            )
        return {"scales": value.sqrt()}

    def n_parameters(self, K: int, d: int) -> int:
        return math.prod(self.shape(K, d))

    def noise(self, eps: Tensor, value: Tensor, states: Tensor) -> Tensor:
        return eps * self.widen(value[states], eps.shape[1])

    def prior(self, spread: Tensor, K: int, d: int) -> Any:
        shape = self.shape(K, d)
        return dist.LogNormal(self.narrow(torch.log(spread)).expand(shape), 1.0).to_event(len(shape))

    def distribution(self, locs: Tensor, value: Tensor) -> Any:
        return dist.Normal(locs, self.widen(value, locs.shape[-1])).to_event(1)

    def state_distribution(self, locs: Tensor, value: Tensor, z: Tensor) -> Any:
        return dist.Normal(locs, self.widen(value[z], locs.shape[-1])).to_event(1)

    def compiled_e_step(self, data: SequenceData, params: Params, K: int) -> tuple[Stats, float] | None:
        """By :func:`probgen.models._hmm_kernels.gaussian_diag_e_step` on small problems on the
        CPU: on a few hundred steps the separate emission, scaling, forward-backward and
        statistics operations cost several times the arithmetic; in one loop they cost the
        arithmetic."""
        N, T, d = data.values.shape
        if not _small_problem(N, T, K) or data.values.device.type != "cpu":
            return None
        # the compiled kernels load on first use: importing numba costs about a second
        from probgen.models._hmm_kernels import gaussian_diag_e_step

        scales = self.widen(params["scales"].to(_F64), d)
        gamma = np.empty((N, T, K))
        xi = np.empty((K, K))
        moments = np.empty((K, 2 * d + 2))
        ll = gaussian_diag_e_step(
            np.ascontiguousarray(data.values.numpy()),
            data.lengths.numpy(),
            _as_kernel_array(params["locs"]),
            _as_kernel_array(scales),
            *_chain_arrays(params),
            np.empty((N, T, K)),
            np.empty((N, T)),
            gamma,
            xi,
            moments,
        )
        m = torch.from_numpy(moments)
        stats = {
            "start": m[:, 2 * d + 1],
            "trans": torch.from_numpy(xi),
            "post": m[:, 0],
            "obs": m[:, 1 : d + 1],
            "obs_sq": m[:, d + 1 : 2 * d + 1],
        }
        return stats, float(ll)


@dataclass(frozen=True)
class _DiagCovariance(_ScaleCovariance):
    """A standard deviation per state and feature: ``scales`` ``(K, d)``."""

    name: ClassVar[str] = "diag"

    def shape(self, K: int, d: int) -> tuple[int, ...]:
        return (K, d)

    def widen(self, s: Tensor, d: int) -> Tensor:
        return s

    def narrow(self, var: Tensor) -> Tensor:
        return var


@dataclass(frozen=True)
class _SphericalCovariance(_ScaleCovariance):
    """One standard deviation per state, every feature alike: ``scales`` ``(K,)``."""

    name: ClassVar[str] = "spherical"

    def shape(self, K: int, d: int) -> tuple[int, ...]:
        return (K,)

    def widen(self, s: Tensor, d: int) -> Tensor:
        return s[..., None].expand(s.shape + (d,))

    def narrow(self, var: Tensor) -> Tensor:
        return var.mean(-1)


_COVARIANCES: dict[str, type[_Covariance]] = {
    c.name: c for c in (_FullCovariance, _TiedCovariance, _DiagCovariance, _SphericalCovariance)
}
