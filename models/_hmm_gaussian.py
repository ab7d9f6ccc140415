"""Gaussian emissions of :class:`probgen.models.HiddenMarkovModel`.

:class:`_GaussianEmission` owns what every Gaussian state shares (means and their priors, the
expanded quadratic form of long series, moments about the data mean, the state-major E-step); a
covariance strategy of :mod:`probgen.models._hmm_covariance` owns what depends on hmmlearn's
``covariance_type``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import pyro.distributions as dist
import torch
from torch import Tensor

from probgen.models._hmm_covariance import _Covariance
from probgen.models._hmm_emissions import (
    Params,
    Stats,
    _expect_shape,
    _VectorEmission,
)
from probgen.models._hmm_engine import _forward_backward
from probgen.models._hmm_layout import SequenceData, _Layout, _layout, _pad_time, _padded_length, _scratch
from probgen.models._hmm_missing import (
    gaussian_completed,
    gaussian_draw,
    gaussian_log_density,
    gaussian_moments,
)
from probgen.models._hmm_viterbi import _ViterbiEmission

__all__: list[str] = []

_F64 = torch.float64
_EXPANDED_MIN = 20000  # steps x features x states from which the expanded Gaussian form pays
_LOG_2PI = math.log(2 * math.pi)


# ------------------------------------------------------------------------ the emissions
@dataclass(frozen=True)
class _GaussianEmission(_VectorEmission):
    """Gaussian emissions: state ``k`` emits ``N(locs[k], Sigma_k)``, ``Sigma`` as ``covariance`` keeps it.

    Long series get their log-densities from an expanded quadratic form: cached features of the
    steps (``[1, x - c, second-order terms]`` about the data mean ``c``) times per-state weights,
    one small GEMM, when that is accurate (:meth:`_expanded_weights`).
    """

    covariance: _Covariance
    min_covar: float = 1e-3
    covars_prior: float = 1e-2

    name: ClassVar[str] = "gaussian"
    mean_site: ClassVar[str] = "locs"

    @property
    def sites(self) -> tuple[str, ...]:
        return ("locs", self.covariance.site)

    @property
    def state_sites(self) -> tuple[str, ...]:
        return ("locs", *self.covariance.state_sites)

    @property
    def init_sites(self) -> tuple[str, ...]:
        return (*self.sites, "covars")

    def options(self) -> str:
        return f", covariance_type={self.covariance.name!r}"

    def _value(self, params: Params) -> Tensor:
        return params[self.covariance.site].to(_F64)

    # ------------------------------------------------------------------- densities
    def log_density(
        self, values: Tensor, params: Params, *, data: SequenceData | None = None, block_length: int = 0
    ) -> Tensor:
        """With ``data``, from the cached step features (:meth:`_log_density_expanded`) when accurate."""
        K = self.n_states
        lead = values.shape[:-1]
        X = values.reshape(-1, values.shape[-1])
        if data is not None and X.numel() * K >= _EXPANDED_MIN:
            out = self._log_density_expanded(data, params, block_length)
            if out is not None:
                return out.view(lead + (K,))
        return self.covariance.log_density(X, params["locs"].to(_F64), self._value(params), K).view(
            lead + (K,)
        )

    def _expanded_features(self, data: SequenceData, lay: _Layout) -> tuple[Tensor, Tensor, float]:
        """Features of every step for the expanded quadratic form, cached per data and blocking.

        ``[1, x - c, second-order terms of x - c]`` about the data mean ``c``, in block layout
        ``(L, M, P)`` of ``lay``.  Returns the features, ``c`` and the largest squared norm of a
        centred real step.
        """
        if "features/center" not in data.cache:
            d = data.n_features
            real = data.values.reshape(-1, d)
            if data.lengths.shape[0] > 1 or int(data.lengths[0]) != data.values.shape[1]:
                steps = torch.arange(data.values.shape[1])
                real = data.values[steps[None, :] < data.lengths[:, None]]
            center = real.mean(0)
            data.cache["features/center"] = center
            data.cache["features/max_sq"] = ((real - center) ** 2).sum(1).max()
        center = data.cache["features/center"]
        key = f"features/{self.covariance.features}/{lay.L}/{lay.Tp}"
        if key not in data.cache:
            Xc = lay.to_blocks(_pad_time(data.values, lay.Tp, 0)) - center  # (L, M, d)
            second = self.covariance.second_order(Xc)
            data.cache[key] = torch.cat([torch.ones_like(Xc[..., :1]), Xc, second], -1)
        return data.cache[key], center, float(data.cache["features/max_sq"])

    def _expanded_weights(self, params: Params, center: Tensor, max_sq: float) -> Tensor | None:
        """``(K, P)`` weights: features times weights are the Gaussian log-densities, or ``None``.

        ``-(x - mu)' P (x - mu) / 2 = -x'Px / 2 + (P mu)'x - mu'P mu / 2`` (``x``, ``mu`` centred),
        plus the normalising constant on the feature ``1``.  The expanded form rounds with an
        absolute error near ``eps |x|^2 |P|``; when that could reach 1e-9 (states far apart
        relative to their spread) this returns ``None`` and callers use the whitened residuals,
        exact to rounding of the result itself.
        """
        locs = params["locs"].to(_F64) - center
        terms = self.covariance.precision_terms(self._value(params), locs, self.n_states, max_sq)
        if terms is None:
            return None
        second, pm, logdet = terms
        const = -0.5 * (pm * locs).sum(1) - logdet - 0.5 * locs.shape[-1] * _LOG_2PI
        return torch.cat([const[:, None], pm, second], 1)

    def _log_density_expanded(self, data: SequenceData, params: Params, L: int) -> Tensor | None:
        """Log-densities ``(n, K)`` of the blocked steps as one small GEMM, or ``None``.

        The cached features of :meth:`_expanded_features` times :meth:`_expanded_weights`:
        ``(n, P) x (P, K)`` instead of ``n x K d`` whitened residuals squared and summed along
        a short axis.
        """
        lay = _layout(data.lengths, _padded_length(data.values.shape[1]), L)
        feats, center, max_sq = self._expanded_features(data, lay)
        weights = self._expanded_weights(params, center, max_sq)
        if weights is None:
            return None
        return feats.reshape(-1, feats.shape[-1]) @ weights.T

    # --------------------------------------------------------------------------- EM
    def moments(self, G: Tensor, X: Tensor, data: SequenceData, block_length: int) -> Stats:
        return self.covariance.moments(G, X, data, block_length)

    def compiled_e_step(
        self, data: SequenceData, params: Params, *, few_sequences: bool
    ) -> tuple[Stats, float] | None:
        return self.covariance.compiled_e_step(data, params, self.n_states)

    def state_major_e_step(
        self, data: SequenceData, params: Params, lay: _Layout
    ) -> tuple[Stats, Tensor, Tensor, Tensor] | None:
        """One batched product of the expansion weights with the cached step features gives the
        log-densities, and one of the marginals with the same features gives the state
        occupancies and the first and second moments; ``None`` when the expanded form would
        round (:meth:`_expanded_weights`)."""
        K, L = self.n_states, lay.L
        feats, center, max_sq = self._expanded_features(data, lay)  # (L, Mb, P)
        weights = self._expanded_weights(params, center, max_sq)  # (K, P)
        if weights is None:
            return None
        # emissions go into the engine's own buffer: a fresh 8 T K bytes would fault a page per 4 kB
        e = _scratch("fb_e", (L, K, lay.M))
        torch.bmm(weights.expand(L, -1, -1), feats.transpose(1, 2), out=e)  # log-densities
        if lay.ragged:
            e.masked_fill_(~lay.mask[:, None, :], 0.0)
        mx = e.amax(1)
        e.sub_(mx[:, None, :]).exp_()
        initial, transition = params["initial"].to(_F64), params["transition"].to(_F64)
        ll, gamma, xi = _forward_backward(e, mx, lay, initial, transition, state_major=True)
        assert gamma is not None and xi is not None
        moments = torch.bmm(gamma, feats).sum(0)  # (K, P): occupancy, then centred moments
        d = center.shape[0]
        post, first = moments[:, 0], moments[:, 1 : d + 1]
        stats = {"post": post, "obs": first + post[:, None] * center}
        stats.update(self.covariance.raw_second(moments[:, d + 1 :], first, post, center))
        return stats, ll, gamma, xi

    def m_step(self, stats: Mapping[str, Tensor]) -> dict[str, Tensor]:
        post = stats["post"]
        means = stats["obs"] / post[:, None]
        return {"locs": means, **self.covariance.m_step(stats, means, post, self.covars_prior)}

    def log_density_missing(self, values: Tensor, observed: Tensor, params: Params) -> Tensor:
        d = values.shape[-1]
        locs, cov = self._moments(params, d)
        out = gaussian_log_density(values.reshape(-1, d), observed.reshape(-1, d), locs, cov)
        return out.view(values.shape[:-1] + (self.n_states,))

    def statistics_missing(self, X: Tensor, observed: Tensor, G: Tensor, params: Params) -> Stats:
        locs, cov = self._moments(params, X.shape[-1])
        first, second = gaussian_moments(X, observed, G, locs, cov)
        return {"obs": first, **self.covariance.second_moments(second)}

    def impute_mean(self, X: Tensor, observed: Tensor, G: Tensor, params: Params) -> Tensor:
        locs, cov = self._moments(params, X.shape[-1])
        full, _ = gaussian_completed(X, observed, locs, cov)
        return torch.where(observed, X, (G[:, :, None] * full).sum(1))

    def impute_sample(
        self, X: Tensor, observed: Tensor, states: Tensor, params: Params, generator: torch.Generator
    ) -> Tensor:
        locs, cov = self._moments(params, X.shape[-1])
        return gaussian_draw(X, observed, states, locs, cov, generator)

    def _moments(self, params: Params, d: int) -> tuple[Tensor, Tensor]:
        """Means ``(K, d)`` and full covariance matrices ``(K, d, d)`` of the states."""
        return params["locs"].to(_F64), self.covariance.matrices(self._value(params), self.n_states, d)

    def init_spread(self, X: Tensor, given: Mapping[str, Any]) -> dict[str, Tensor]:
        """Every state's covariance the data covariance plus ``min_covar`` (hmmlearn)."""
        if {self.covariance.site, "covars"} & set(given):
            return {}
        d = X.shape[1]
        cv = torch.cov(X.T).reshape(d, d) if X.shape[0] > 1 else torch.zeros(d, d, dtype=_F64)
        cv = cv + self.min_covar * torch.eye(d, dtype=_F64)
        return self.covariance.from_matrices(cv.expand(self.n_states, d, d))

    def validate_init(self, name: str, value: Tensor, data: SequenceData) -> dict[str, Tensor]:
        K, d = self.n_states, data.n_features
        if name == "covars":
            return self.covariance.from_hmmlearn(value, K, d)
        if name == self.mean_site:
            _expect_shape(value, (K, d), name)
            return {name: value}
        return {name: self.covariance.validate(value, K, d)}

    # ----------------------------------------------------------------- the rest
    def viterbi_emission(self, vals: Tensor, params: Params, lay: _Layout) -> _ViterbiEmission:
        locs = params["locs"].to(_F64)
        whitened = self.covariance.viterbi_emission(vals, locs, self._value(params), lay, self.n_states)
        return super().viterbi_emission(vals, params, lay) if whitened is None else whitened

    def priors(self, data: SequenceData | None) -> dict[str, Any]:
        center, spread = self.hyper(data)
        K, d = self.n_states, center.shape[0]
        return {
            "locs": dist.Normal(center.expand(K, d), 10.0 * spread.expand(K, d)).to_event(2),
            self.covariance.site: self.covariance.prior(spread, K, d),
        }

    def distribution(self, em: Params) -> Any:
        return self.covariance.distribution(em["locs"], em[self.covariance.site])

    def state_distribution(self, em: Params, z: Tensor) -> Any:
        return self.covariance.state_distribution(em["locs"][z], em[self.covariance.site], z)

    def sample(self, states: Tensor, params: Params, generator: torch.Generator) -> Tensor:
        locs = params["locs"].to(_F64)
        eps = torch.randn((states.shape[0], locs.shape[-1]), generator=generator, dtype=_F64)
        return locs[states] + self.covariance.noise(eps, self._value(params), states)

    def n_parameters(self, params: Params) -> int:
        d = params["locs"].shape[-1]
        return self.n_states * d + self.covariance.n_parameters(self.n_states, d)

    def covariances(self, params: Mapping[str, Any]) -> Tensor:
        needed = self.sites
        missing = [k for k in needed if k not in params]
        if missing:
            raise ValueError(f"params lacks site(s) {missing}; expected {list(needed)} (fit.params).")
        value = torch.as_tensor(params[self.covariance.site], dtype=_F64)
        return self.covariance.matrices(value, self.n_states, int(params["locs"].shape[-1]))
