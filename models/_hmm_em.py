"""Baum-Welch for hidden Markov models: starting values, the E-step and the closed-form M-step.

:class:`_BaumWelch` gives :class:`probgen.models.HiddenMarkovModel` its closed-form EM hooks.  The
chain's parts (uniform start and transitions, expected start and transition counts, normalised
rows) are here; the emission strategy adds its own starting values, sufficient statistics and
M-step, and the fast E-steps where it has them (a compiled kernel, the state-major scan).  The
forward-backward scans come from the model (:meth:`_BaumWelch._run_forward_backward`).
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from probgen.model import as_tensor
from probgen.models._hmm_emissions import _expect_shape, _expect_stochastic, _normalise
from probgen.models._hmm_engine import _scan_layout
from probgen.models._hmm_layout import SequenceData, _Layout
from probgen.models._hmm_sequences import _SequenceModel

__all__: list[str] = []

_F64 = torch.float64
_INIT_STRATEGIES = ("kmeans", "random")
_DEFAULT_MAX_ITER = 1000
_DEFAULT_TOL = 1e-8  # nats per time step


class _BaumWelch(_SequenceModel):
    """Closed-form EM of a hidden Markov chain over sequences, on the scans the model provides."""

    @abc.abstractmethod
    def _blocked(self, data: SequenceData) -> tuple[_Layout, Tensor]:
        """The blocking of ``data`` and its values in block layout ``(L, M, ...)``."""

    @abc.abstractmethod
    def _few_sequences(self, data: SequenceData) -> bool:
        """Whether the per-sequence compiled kernels serve ``data``."""

    @abc.abstractmethod
    def _run_forward_backward(
        self, data: SequenceData, params: Mapping[str, Tensor], *, posteriors: bool
    ) -> tuple[_Layout, Tensor, Tensor, Tensor | None, Tensor | None]:
        """Forward-backward in block layout: the layout, blocked values, log-likelihoods, and
        with ``posteriors`` the marginals and transition counts (``params`` checked)."""

    def em_defaults(self) -> dict[str, Any]:
        """Defaults that converge: ``max_iter=1000``, ``tol=1e-8`` nats per time step.

        hmmlearn's ``n_iter=10, tol=1e-2`` (on the total log-likelihood) stop Baum-Welch on real
        series short of the optimum: 0.008 nats per step for 3 states on the geyser waiting
        times.  Here ``tol`` applies to the change of the log-likelihood per time step (see
        :meth:`em_convergence_scale`), and ``1e-8`` leaves the final log-likelihood well within
        1e-6 nats per step of the optimum.  hmmlearn's defaults on data of ``n`` steps are
        ``max_iter=10, tol=1e-2 / n``.
        """
        return {
            "max_iter": _DEFAULT_MAX_ITER,
            "tol": _DEFAULT_TOL,
            "n_init": 1,
            "init": self._emissions.default_init,
        }

    def em_convergence_scale(self, data: Any) -> float:
        """Total number of time steps: ``tol`` is in nats per observed step."""
        return float(self.num_observations(data))

    def init_params(
        self, data: Any, *, init: Any = "kmeans", generator: torch.Generator | None = None
    ) -> dict[str, Tensor]:
        """Starting values for Baum-Welch.

        Parameters
        ----------
        data : SequenceData or array-like
            Training sequences.
        init : {"kmeans", "random"} or dict, default "kmeans"
            ``"kmeans"``: uniform start and transitions (hmmlearn), Gaussian/Poisson means from
            k-means++ and Lloyd iterations on all steps, every state's covariance the data
            covariance plus ``min_covar``; ``"random"``: means drawn from the data.  Categorical
            emission probabilities are uniform random rows normalised (either strategy).  A dict
            gives starting values by site name; missing sites come from ``"kmeans"``.
        generator : torch.Generator, optional
            Source of randomness.

        Raises
        ------
        ValueError
            Unknown strategy, unknown site name, wrong shape, rows not summing to one,
            non-positive-definite covariances.
        """
        data = self._prepared(data)
        g = generator if generator is not None else torch.Generator().manual_seed(0)
        given: dict[str, Any] = {}
        if isinstance(init, Mapping):
            given = dict(init)
            strategy = "kmeans"
        elif isinstance(init, str):
            if init not in _INIT_STRATEGIES:
                raise ValueError(
                    f"init={init!r} is not a strategy; expected one of {_INIT_STRATEGIES} or a dict of starting values."
                )
            strategy = init
        else:
            raise TypeError(
                f"init must be a strategy name or a dict of starting values; got {type(init).__name__}."
            )
        K = self.n_states
        steps = self.num_observations(data)
        if steps < K and not set(self._emissions.init_sites) <= set(given):
            # a data-driven start needs a step per state; with fewer, states copy each other
            # and the likelihood of a few points under many states means nothing
            raise ValueError(
                f"n_states={K} is larger than the number of observed time steps in data ({steps}); "
                f"use at most {steps} states or more data (or give init= values for every "
                "emission site)."
            )
        params: dict[str, Tensor] = {
            "initial": torch.full((K,), 1.0 / K, dtype=_F64),
            "transition": torch.full((K, K), 1.0 / K, dtype=_F64),
        }
        params.update(self._emissions.init_params(data, strategy, given, g))
        params.update(self._validate_init(given, data))
        return params

    def _validate_init(self, given: Mapping[str, Any], data: SequenceData) -> dict[str, Tensor]:
        K = self.n_states
        allowed = {"initial", "transition", *self._emissions.init_sites}
        unknown = set(given) - allowed
        if unknown:
            raise ValueError(
                f"init has unknown site(s) {sorted(unknown)}; expected some of {sorted(allowed)}."
            )
        out: dict[str, Tensor] = {}
        for name, value in given.items():
            v = as_tensor(value, f"init[{name!r}]", dtype=_F64)
            if name == "initial":
                _expect_shape(v, (K,), name)
                _expect_stochastic(v[None], name)
            elif name == "transition":
                _expect_shape(v, (K, K), name)
                _expect_stochastic(v, name)
            else:
                out.update(self._emissions.validate_init(name, v, data))
                continue
            out[name] = v
        return out

    def e_step(self, data: Any, params: Mapping[str, Tensor]) -> tuple[dict[str, Tensor], float]:
        """Expected sufficient statistics and total log-likelihood at ``params``.

        The emissions' compiled E-step where it serves (small problems, few categorical
        sequences), else the state-major scan of long series, else forward-backward in block
        layout.
        """
        data = self._prepared(data)
        self._check_params(data, params)
        chain = {"prev_initial": params["initial"], "prev_transition": params["transition"]}
        if data.observed is None:  # the fast paths read complete data only
            done = self._emissions.compiled_e_step(data, params, few_sequences=self._few_sequences(data))
            if done is None:
                done = self._e_step_state_major(data, params)
            if done is not None:
                return {**done[0], **chain}, done[1]
        lay, vals, ll, gamma, xi = self._run_forward_backward(data, params, posteriors=True)
        assert gamma is not None and xi is not None
        K = self.n_states
        G = gamma.reshape(-1, K)  # block layout throughout: the sums do not care
        stats: dict[str, Tensor] = {
            "start": gamma[0].view(lay.N, lay.Bs, K)[:, 0].sum(0),  # first block of every sequence
            "trans": xi,
            "post": G.sum(0),
            **chain,
            **self._emission_statistics(data, vals, G, lay, params),
        }
        return stats, float(ll.sum())

    def _emission_statistics(
        self, data: SequenceData, vals: Tensor, G: Tensor, lay: _Layout, params: Mapping[str, Tensor]
    ) -> dict[str, Tensor]:
        """The emissions' expected statistics; with missing cells, from the observed cells only
        (Gaussian: the missing features' conditional moments, exact EM)."""
        if data.observed is None:
            return self._emissions.statistics(data, vals, G, lay, params)
        observed = self._blocked_observed(data, lay)
        if vals.dim() == 2:  # categorical: one symbol a step
            return self._emissions.statistics_missing(vals.reshape(-1), observed.reshape(-1), G, params)
        d = data.n_features
        return self._emissions.statistics_missing(vals.reshape(-1, d), observed.reshape(-1, d), G, params)

    @abc.abstractmethod
    def _blocked_observed(self, data: SequenceData, lay: _Layout) -> Tensor:
        """:attr:`SequenceData.observed` in the block layout ``lay``."""

    def _e_step_state_major(
        self, data: SequenceData, params: Mapping[str, Tensor]
    ) -> tuple[dict[str, Tensor], float] | None:
        """E-step on long series in the engine's state-major layout, or ``None`` (then the
        block-layout path runs: short series, or emissions without that path).

        The emissions build their densities directly as ``(L, K, blocks)`` slabs and the engine
        returns the state marginals alike, which saves two transposing copies of ``T K`` numbers.
        """
        K = self.n_states
        scan = _scan_layout(self._blocked(data)[0], K)
        if scan is None:
            return None
        done = self._emissions.state_major_e_step(data, params, scan)
        if done is None:
            return None
        stats, ll, gamma, xi = done
        stats["start"] = gamma[0].view(K, scan.N, scan.Bs)[:, :, 0].sum(1)  # first block of every sequence
        stats["trans"] = xi
        return stats, float(ll.sum())

    def m_step(self, data: Any, stats: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Closed-form maximiser (hmmlearn's update, with its ``covars_prior``)."""
        # the expected counts are products with the previous probabilities, so a zero start or
        # transition probability has an exactly zero count and stays zero
        params = {
            "initial": _normalise(stats["start"], stats["prev_initial"]),
            "transition": _normalise(stats["trans"], stats["prev_transition"]),
        }
        params.update(self._emissions.m_step(stats))
        return params
