"""Hidden Markov models: Gaussian, categorical and Poisson emissions, one or many sequences.

The exact computations (forward-backward, Viterbi, Baum-Welch) run in float64 on the blocked
scans of :mod:`probgen.models._hmm_engine` and :mod:`probgen.models._hmm_viterbi`, or on the
compiled kernels of :mod:`probgen.models._hmm_kernels` on the CPU.  This module holds the chain:
the constructor, the forward-backward and Viterbi orchestration, the fit tools and the Pyro
model.  :class:`HiddenMarkovModel` builds on two private layers, the data boundary and picture
of sequence models (:mod:`probgen.models._hmm_sequences`) and Baum-Welch's hooks
(:mod:`probgen.models._hmm_em`); what a state emits is one emission strategy per kind
(:mod:`probgen.models._hmm_emissions`, :mod:`probgen.models._hmm_gaussian` with the covariance
structures of :mod:`probgen.models._hmm_covariance`), picked once by the constructor.

The Pyro model sums the hidden states out with :class:`pyro.distributions.DiscreteHMM`, whose
forward pass is a parallel (log-depth) scan, so SVI and NUTS fit a Bayesian HMM directly.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import pyro
import pyro.distributions as dist
import torch
from torch import Tensor

from probgen.models._hmm_covariance import _COVARIANCES
from probgen.models._hmm_em import _BaumWelch
from probgen.models._hmm_emissions import _CategoricalEmission, _Emission, _PoissonEmission
from probgen.models._hmm_engine import _forward_backward_log, _small_problem
from probgen.models._hmm_gaussian import _GaussianEmission
from probgen.models._hmm_impute import sample_paths
from probgen.models._hmm_layout import SequenceData, _Layout, _layout, _pad_time, _padded_length
from probgen.models._hmm_viterbi import _LOG_FLOOR, _viterbi, _viterbi_block_length, _ViterbiEmission
from probgen.validation import positive_int

# The compiled categorical E-step runs on up to this many sequences per squared state (whatever
# their lengths); past it the blocked engine, vectorised across sequences, is as fast or faster.
# Measured on one thread (compiled / engine time): 0.5x on one sequence of 200,000 steps with
# 16 states, 0.6x on 300 sequences of 100 steps with 4 or 8 states, 0.85-1.0x on 1,000-3,000
# with 8 or 16, 1.1-1.8x on 1,000-10,000 short ones with 4.
_COMPILED_SEQUENCES_PER_STATE_SQ = 64

__all__ = ["HiddenMarkovModel", "SequenceData"]

_F64 = torch.float64
_EMISSIONS = ("gaussian", "categorical", "poisson")
_COVARIANCE_TYPES = ("spherical", "diag", "full", "tied")


def _emission_strategy(
    n_states: int,
    emission: str,
    covariance_type: str,
    n_symbols: int | None,
    min_covar: float,
    covars_prior: float,
    prior_concentration: float,
) -> _Emission:
    """The emission strategy that ``emission`` and ``covariance_type`` name (checked names).

    The one place where those names pick code: everything else asks the strategy.
    """
    if emission == "categorical":
        return _CategoricalEmission(n_states, n_symbols, prior_concentration)
    if emission == "poisson":
        return _PoissonEmission(n_states)
    return _GaussianEmission(n_states, _COVARIANCES[covariance_type](), min_covar, covars_prior)


# ------------------------------------------------------------------------- Pyro helpers
class _SequenceHMM(dist.DiscreteHMM):
    """:class:`~pyro.distributions.DiscreteHMM` that can also draw sequences (for replicates)."""

    def sample(self, sample_shape: torch.Size = torch.Size()) -> Tensor:  # type: ignore[override]  # noqa: B008
        with torch.no_grad():
            shape = tuple(sample_shape) + tuple(self.batch_shape)
            T = self.event_shape[0]
            K = self.initial_logits.shape[-1]
            trans = self.transition_logits.expand(shape + (T, K, K))
            ys = self.observation_dist.expand(shape + (T, K)).sample()  # (..., T, K, *event)
            z = dist.Categorical(logits=self.initial_logits.expand(shape + (K,))).sample()
            states = []
            for t in range(T):
                z = dist.Categorical(
                    logits=trans[..., t, :, :]
                    .gather(-2, z[..., None, None].expand(shape + (1, K)))
                    .squeeze(-2)
                ).sample()
                states.append(z)
            zs = torch.stack(states, -1)  # (..., T)
            ev = len(self.observation_dist.event_shape)
            idx = (
                zs[..., None]
                .reshape(zs.shape + (1,) + (1,) * ev)
                .expand(zs.shape + (1,) + ys.shape[len(zs.shape) + 1 :])
            )
            return ys.gather(len(zs.shape), idx).squeeze(len(zs.shape))


# ---------------------------------------------------------------------------- the family
class HiddenMarkovModel(_BaumWelch):
    """Hidden Markov model with Gaussian, categorical or Poisson emissions.

    A chain of hidden states ``z_t`` in ``{0, ..., n_states - 1}`` starts from ``initial`` and
    moves by ``transition``; each step emits an observation from its state's distribution.
    Fitted on one sequence or a list of sequences of different lengths.

    Sample sites (the names of ``fit.params``, ``fit.posterior`` and ``init=dict(...)``):

    ``"initial"`` : (n_states,)
        Initial state distribution; prior ``Dirichlet(prior_concentration)``.
    ``"transition"`` : (n_states, n_states)
        Row-stochastic transition matrix, ``transition[i, j] = p(z_t = j | z_{t-1} = i)``; each
        row ``Dirichlet(prior_concentration)``.
    ``"locs"`` : (n_states, n_features), Gaussian
        State means; prior normal around the data mean, 10 data standard deviations wide.
    ``"scale_tril"`` : (n_states, d, d) for ``"full"``, (d, d) for ``"tied"``, Gaussian
        Cholesky factor of the covariance; weakly informative prior scaled to the data.
    ``"scales"`` : (n_states, d) for ``"diag"``, (n_states,) for ``"spherical"``, Gaussian
        Standard deviations; log-normal prior around the data standard deviation.
    ``"probs"`` : (n_states, n_symbols), categorical
        Emission probabilities; each row ``Dirichlet(prior_concentration)``.
    ``"rates"`` : (n_states, n_features), Poisson
        Emission rates; ``Gamma(2, 2 / data mean)`` prior.

    ``"obs"`` is the observed site: a :class:`pyro.distributions.DiscreteHMM` per sequence inside
    the plate ``"sequences"``, with the hidden states summed out by its parallel-scan forward
    pass, so ``method="svi"`` and ``method="mcmc"`` fit a Bayesian HMM.  ``method="em"`` runs
    Baum-Welch on a blocked, rescaled forward-backward in float64, following hmmlearn's
    conventions (maximum-likelihood start and transitions, ``covars_prior`` added to the
    covariance numerators, ``min_covar`` on the starting covariance), but stops only when the
    log-likelihood gains less than ``tol=1e-8`` nats per time step (at most ``max_iter=1000``
    iterations): hmmlearn's ``n_iter=10, tol=1e-2`` stop short of the optimum on real series.

    Parameters
    ----------
    n_states : int
        Number of hidden states.
    emission : {"gaussian", "categorical", "poisson"}, default "gaussian"
        Emission family.
    covariance_type : {"diag", "full", "spherical", "tied"}, default "diag"
        Gaussian covariance structure (hmmlearn's names and default).
    n_symbols : int, optional
        Alphabet size for categorical emissions; symbols are ``0 .. n_symbols - 1``.  Inferred
        from the data (largest symbol + 1) when omitted.
    min_covar : float, default 1e-3
        Added to the diagonal of the starting covariance (hmmlearn's ``min_covar``).
    covars_prior : float, default 1e-2
        Added to every covariance numerator in the M-step (hmmlearn's ``covars_prior``).
    prior_concentration : float, default 1.0
        Dirichlet concentration of the priors on ``initial``, ``transition`` and ``probs``.

    Notes
    -----
    Data: one array ``(T,)`` or ``(T, d)``, or a list of such arrays (lengths may differ), or a
    :class:`SequenceData`.  ``init=dict(...)`` in ``pg.fit(..., method="em")`` takes starting
    values by site name; for Gaussians ``"covars"`` in hmmlearn's layout (``(K, d, d)`` full,
    ``(K, d)`` diag, ``(K,)`` spherical, ``(d, d)`` tied) is accepted in place of
    ``"scale_tril"``/``"scales"``.

    Examples
    --------
    >>> import torch, probgen as pg
    >>> from probgen.models import HiddenMarkovModel
    >>> g = torch.Generator().manual_seed(0)
    >>> x = torch.cat([torch.randn(50, generator=g) - 3, torch.randn(50, generator=g) + 3]).double()
    >>> fit = pg.fit(HiddenMarkovModel(2), x, method="em", progress=False, max_iter=50)
    >>> path = fit.predict(x)            # Viterbi path
    >>> bool(path[0] != path[-1])
    True
    """

    dtype = _F64
    data_plate_name = "sequences"

    def __init__(
        self,
        n_states: int,
        emission: str = "gaussian",
        covariance_type: str = "diag",
        *,
        n_symbols: int | None = None,
        min_covar: float = 1e-3,
        covars_prior: float = 1e-2,
        prior_concentration: float = 1.0,
    ) -> None:
        positive_int(n_states, "n_states")
        if emission not in _EMISSIONS:
            raise ValueError(f"emission must be one of {', '.join(map(repr, _EMISSIONS))}; got {emission!r}.")
        if covariance_type not in _COVARIANCE_TYPES:
            raise ValueError(
                f"covariance_type must be one of {', '.join(map(repr, _COVARIANCE_TYPES))}; got {covariance_type!r}."
            )
        positive_int(n_symbols, "n_symbols", allow_none=True)
        for name, v in (("min_covar", min_covar), ("covars_prior", covars_prior)):
            if not isinstance(v, int | float) or isinstance(v, bool) or v < 0 or not math.isfinite(v):
                raise ValueError(f"{name} must be a non-negative number; got {v!r}.")
        if not isinstance(prior_concentration, int | float) or not prior_concentration > 0:
            raise ValueError(f"prior_concentration must be a positive number; got {prior_concentration!r}.")
        self.n_states = int(n_states)
        self.emission = emission
        self.covariance_type = covariance_type
        self.n_symbols = None if n_symbols is None else int(n_symbols)
        self.min_covar = float(min_covar)
        self.covars_prior = float(covars_prior)
        self.prior_concentration = float(prior_concentration)
        self._emissions = _emission_strategy(
            self.n_states,
            emission,
            covariance_type,
            self.n_symbols,
            self.min_covar,
            self.covars_prior,
            self.prior_concentration,
        )

    def get_config(self) -> dict[str, Any]:
        """JSON-able constructor arguments."""
        return {
            "n_states": self.n_states,
            "emission": self.emission,
            "covariance_type": self.covariance_type,
            "n_symbols": self.n_symbols,
            "min_covar": self.min_covar,
            "covars_prior": self.covars_prior,
            "prior_concentration": self.prior_concentration,
        }

    def event_dims(self, data: Any) -> dict[str, tuple[str | None, ...]]:
        """Names of the sites' event dims for ArviZ (the capability EventDims): ``states`` for
        the hidden states (``next_states`` for the row a transition goes to), ``time`` along a
        sequence, ``features`` (``features_bis``) for a vector emission's values, ``categories``
        for a categorical emission's symbols."""
        em = self._emissions
        rest: tuple[str, ...] = ("categories",) if em.name == "categorical" else ("features", "features_bis")
        names: dict[str, tuple[str | None, ...]] = {
            "initial": ("states",),
            "transition": ("states", "next_states"),
            "obs": ("time",) if em.name == "categorical" else ("time", "features"),
        }
        for site in em.sites:
            names[site] = ("states", *rest) if site in em.state_sites else rest
        return names

    def __repr__(self) -> str:
        return f"HiddenMarkovModel(n_states={self.n_states}, emission={self.emission!r}{self._emissions.options()})"

    @property
    def emission_sites(self) -> tuple[str, ...]:
        """Names of the emission parameter sites."""
        return self._emissions.sites

    def covariances(self, params: Mapping[str, Any]) -> Tensor:
        """Full covariance matrices of the Gaussian emissions, whatever the ``covariance_type``.

        The same matrices as hmmlearn's ``covars_``: ``"diag"`` and ``"spherical"`` are made
        diagonal, ``"tied"`` is repeated for every state.

        Parameters
        ----------
        params : dict of str to Tensor
            ``fit.params`` (or posterior draws, with any leading dimensions).

        Returns
        -------
        Tensor
            ``(..., n_states, d, d)`` float64.

        Raises
        ------
        TypeError
            For categorical or Poisson emissions (they have no covariance).
        ValueError
            When ``params`` lacks the covariance site or ``locs``.

        Examples
        --------
        >>> import torch
        >>> hmm = HiddenMarkovModel(2, covariance_type="spherical")
        >>> p = {"locs": torch.zeros(2, 3), "scales": torch.tensor([1.0, 2.0])}
        >>> hmm.covariances(p)[1].diagonal()
        tensor([4., 4., 4.], dtype=torch.float64)
        """
        return self._emissions.covariances(params)

    # ------------------------------------------------------------------ the chain's scans
    def _blocked(self, data: SequenceData) -> tuple[_Layout, Tensor]:
        """The blocking of ``data`` and its values in block layout ``(L, M, ...)``."""
        values = data.values
        T = values.shape[1]
        if _small_problem(values.shape[0], T, self.n_states):
            # small problems run the sequential kernel, which reads sequences whole: one block
            # a sequence is that layout as it is (no padding, no copies)
            Tp, L = T, T
        else:
            Tp, L = _padded_length(T), None
        lay = _layout(data.lengths, Tp, L)
        key = f"blocks/{lay.L}/{Tp}"  # EM asks at every iteration: block the data once (never written to)
        if key not in data.cache:
            if Tp != values.shape[1]:
                values = _pad_time(values, Tp, 0)
            data.cache[key] = lay.to_blocks(values)
        return lay, data.cache[key]

    def _log_emission(
        self,
        values: Tensor,
        params: Mapping[str, Tensor],
        *,
        data: SequenceData | None = None,
        block_length: int = 0,
    ) -> Tensor:
        """Emission log-densities ``(..., K)`` of observations ``(..., d)`` (categorical: ``(...)``),
        from blocked ``data`` of ``block_length`` steps a block when given."""
        return self._emissions.log_density(values, params, data=data, block_length=block_length)

    def _few_sequences(self, data: SequenceData) -> bool:
        """Whether the per-sequence compiled kernels serve ``data``: CPU, and at most
        :data:`_COMPILED_SEQUENCES_PER_STATE_SQ` sequences per squared state count."""
        return (
            data.values.device.type == "cpu"
            and data.lengths.numel() <= _COMPILED_SEQUENCES_PER_STATE_SQ * self.n_states**2
        )

    def _compiled_forward_backward(
        self, data: SequenceData, params: Mapping[str, Tensor], *, posteriors: bool
    ) -> tuple[Tensor, Tensor] | None:
        """Scores and marginals ``(N, T, K)`` by the emissions' compiled kernel, or ``None``."""
        if not self._few_sequences(data) or data.observed is not None:
            return None
        return self._emissions.compiled_forward_backward(data, params, posteriors=posteriors)

    def _run_forward_backward(
        self, data: SequenceData, params: Mapping[str, Tensor], *, posteriors: bool
    ) -> tuple[_Layout, Tensor, Tensor, Tensor | None, Tensor | None]:
        """Forward-backward in block layout: the layout, blocked values, log-likelihoods, and
        with ``posteriors`` the marginals and transition counts (``params`` checked)."""
        lay, vals = self._blocked(data)
        if data.observed is not None:  # missing cells marginalised: the general route
            log_e = self._emissions.log_density_missing(vals, self._blocked_observed(data, lay), params)
            initial, transition = params["initial"].to(_F64), params["transition"].to(_F64)
            ll, gamma, xi = _forward_backward_log(log_e, lay, initial, transition, posteriors=posteriors)
            return lay, vals, ll, gamma, xi
        ll, gamma, xi = self._emissions.forward_backward(data, vals, lay, params, posteriors=posteriors)
        return lay, vals, ll, gamma, xi

    def _blocked_observed(self, data: SequenceData, lay: _Layout) -> Tensor:
        """:attr:`SequenceData.observed` in the block layout ``lay`` (cached per data)."""
        assert data.observed is not None
        key = f"observed/{lay.L}/{lay.Tp}"
        if key not in data.cache:
            data.cache[key] = lay.to_blocks(_pad_time(data.observed, lay.Tp, False))
        return data.cache[key]

    # ---------------------------------------------------------------------- fit tools
    def log_prob_items(self, data: Any, params: Mapping[str, Tensor]) -> Tensor:
        """``(n_sequences,)`` log-likelihood of every sequence, states summed out."""
        data = self._prepared(data)
        self._check_params(data, params)
        compiled = self._compiled_forward_backward(data, params, posteriors=False)
        if compiled is not None:
            return compiled[0]
        return self._run_forward_backward(data, params, posteriors=False)[2]

    def latent_posterior(self, data: Any, params: Mapping[str, Tensor]) -> dict[str, Any]:
        """``{"states": [ (T_i, n_states) marginals per sequence ]}`` (one tensor if one sequence)."""
        data = self._prepared(data)
        self._check_params(data, params)
        compiled = self._compiled_forward_backward(data, params, posteriors=True)
        if compiled is not None:
            gamma = compiled[1]
        else:
            lay, _, _, blocked, _ = self._run_forward_backward(data, params, posteriors=True)
            assert blocked is not None
            gamma = lay.from_blocks(blocked)
        out = [gamma[i, :n] for i, n in enumerate(data.lengths.tolist())]
        return {"states": out[0] if data.single else out}

    def _viterbi_compiled(
        self, data: SequenceData, params: Mapping[str, Tensor]
    ) -> tuple[list[Tensor], Tensor]:
        """:meth:`viterbi` by the compiled kernels of :mod:`probgen.models._hmm_kernels` (CPU).

        The max-product recursion keeps every step's scores and no backpointers (the backtrace
        recomputes its one argmax a step); PyTorch has no fused max-plus step, and its blocked
        scan (the path for accelerators) pays a ``(K, K, blocks)`` temporary per step.
        """
        lengths_list = data.lengths.tolist()
        paths = np.empty(sum(lengths_list), dtype=np.int64)
        scores = np.empty(len(lengths_list))
        log_pi = torch.log(params["initial"].to(_F64)).clamp_min(_LOG_FLOOR).numpy()
        log_A = torch.log(params["transition"].to(_F64)).clamp_min(_LOG_FLOOR).contiguous().numpy()
        self._emissions.viterbi_compiled(data, params, log_pi, log_A, paths, scores)
        return list(torch.from_numpy(paths).split(lengths_list)), torch.from_numpy(scores)

    def viterbi(self, data: Any, params: Mapping[str, Tensor]) -> tuple[list[Tensor], Tensor]:
        """Viterbi paths and their joint log-probabilities ``log p(x, z*)`` per sequence."""
        data = self._prepared(data)
        self._check_params(data, params)
        if data.observed is not None:
            return self._viterbi_missing(data, params)
        if data.values.device.type == "cpu":
            return self._viterbi_compiled(data, params)
        # Viterbi's own blocking (not forward-backward's), whole blocks straight from the data
        L = _viterbi_block_length(data.values.shape[1], float(data.lengths.sum()) * self.n_states**2)
        Tp = _padded_length(data.values.shape[1], L)
        lay = _layout(data.lengths, Tp, L)
        vals = lay.to_blocks(_pad_time(data.values, Tp, 0))
        paths, scores = _viterbi(
            self._emissions.viterbi_emission(vals, params, lay),
            lay,
            torch.log(params["initial"].to(_F64)),
            torch.log(params["transition"].to(_F64)),
            block_length=L,
        )
        return [paths[i, : int(n)] for i, n in enumerate(data.lengths)], scores

    def _viterbi_missing(
        self, data: SequenceData, params: Mapping[str, Tensor]
    ) -> tuple[list[Tensor], Tensor]:
        """:meth:`viterbi` with missing cells marginalised out of the emissions (a step missing
        whole emits with probability one in every state)."""
        assert data.observed is not None
        log_e = self._emissions.log_density_missing(data.values, data.observed, params)
        log_pi = torch.log(params["initial"].to(_F64)).clamp_min(_LOG_FLOOR)
        log_A = torch.log(params["transition"].to(_F64)).clamp_min(_LOG_FLOOR)
        if data.values.device.type == "cpu":
            # the compiled kernels load on first use: importing numba costs about a second
            from probgen.models._hmm_kernels import viterbi_dense

            lengths = data.lengths.tolist()
            paths = np.empty(sum(lengths), dtype=np.int64)
            scores = np.empty(len(lengths))
            le = log_e.clamp_min(_LOG_FLOOR).contiguous().numpy()
            viterbi_dense(le, data.lengths.numpy(), log_pi.numpy(), log_A.contiguous().numpy(), paths, scores)
            return list(torch.from_numpy(paths).split(lengths)), torch.from_numpy(scores)
        L = _viterbi_block_length(data.values.shape[1], float(data.lengths.sum()) * self.n_states**2)
        Tp = _padded_length(data.values.shape[1], L)
        lay = _layout(data.lengths, Tp, L)
        blocked = lay.to_blocks(_pad_time(log_e, Tp, 0.0))
        paths, scores = _viterbi(
            _ViterbiEmission.from_array(blocked.transpose(1, 2), lay), lay, log_pi, log_A, block_length=L
        )
        return [paths[i, : int(n)] for i, n in enumerate(data.lengths)], scores

    def impute_items(
        self,
        data: Any,
        params: Mapping[str, Tensor],
        *,
        method: str = "mean",
        num_samples: int = 1,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Missing cells filled given the whole sequence (the capability
        :class:`probgen.capabilities.Imputes`): conditional means or posterior draws.

        ``method="mean"``: a missing cell of step ``t`` becomes ``sum_k gamma_t(k) E[x_t | z_t = k,
        observed cells of x_t]`` with the smoothing marginals ``gamma`` of forward-backward; a
        categorical step its most probable symbol.  ``method="sample"``: every copy draws each
        sequence's state path from its posterior given the observed cells (forward filtering,
        backward sampling, :mod:`probgen.models._hmm_impute`), then every missing cell from its
        drawn state's emission given the observed cells of the same step (Gaussian: the
        conditional Gaussian of the missing features given the observed ones).  Observed cells
        and padded steps keep their values.

        Parameters
        ----------
        data : array-like, list of array-like, or SequenceData
            Sequences with NaN where a cell is missing.
        params : dict of str to Tensor
            ``fit.params`` (or one posterior draw).
        method : {"mean", "sample"}, default "mean"
            Conditional means, or draws from the conditional distribution.
        num_samples : int, default 1
            Completed copies drawn (``method="sample"``; ``"mean"`` gives one).
        generator : torch.Generator, optional
            Source of every draw of ``"sample"`` (default: seeded with 0).

        Returns
        -------
        Tensor
            ``(num_samples, *data.values.shape)`` float64: completed copies of the padded values.

        Raises
        ------
        ValueError
            ``method`` not ``"mean"`` or ``"sample"``, ``num_samples`` not a positive integer, or
            ``num_samples > 1`` with ``"mean"``.
        """
        if method not in ("mean", "sample"):
            raise ValueError(f"method must be 'mean' or 'sample'; got {method!r}.")
        positive_int(num_samples, "num_samples")
        if method == "mean" and num_samples != 1:
            raise ValueError(
                f"num_samples={num_samples} applies to method='sample'; method='mean' gives one copy."
            )
        data = self.prepare_missing(data) if not isinstance(data, SequenceData) else data
        self._check_params(data, params)
        if data.observed is None:
            return data.values[None].expand((int(num_samples),) + tuple(data.values.shape)).to(_F64)
        if method == "sample":
            g = generator if generator is not None else torch.Generator().manual_seed(0)
            return self._impute_sample(data, params, int(num_samples), g)
        lay, _, _, blocked, _ = self._run_forward_backward(data, params, posteriors=True)
        assert blocked is not None
        K = self.n_states
        Tp = data.values.shape[1]
        G = lay.from_blocks(blocked)[:, :Tp].reshape(-1, K)
        X, seen = self._flat_steps(data)
        filled = self._emissions.impute_mean(X, seen, G, params).view(data.values.shape)
        return filled[None].to(_F64)  # categorical symbols too: NaN came in floating arrays

    def _flat_steps(self, data: SequenceData) -> tuple[Tensor, Tensor]:
        """Every padded step's values ``(N T, d)`` (categorical ``(N T,)``) and the cells that keep
        their value: the observed ones and those of padded steps."""
        assert data.observed is not None
        keep = data.observed | ~data.mask.view(data.mask.shape + (1,) * (data.values.dim() - 2))
        if data.values.dim() == 2:  # categorical
            return data.values.reshape(-1), keep.reshape(-1)
        return data.values.reshape(-1, data.n_features), keep.reshape(-1, data.n_features)

    def _impute_sample(
        self, data: SequenceData, params: Mapping[str, Tensor], num_samples: int, generator: torch.Generator
    ) -> Tensor:
        """``num_samples`` completed copies: state paths drawn from their posterior, then the
        missing cells from the drawn states' emissions given each step's observed cells."""
        assert data.observed is not None
        log_e = self._emissions.log_density_missing(data.values, data.observed, params)
        log_e = log_e.masked_fill(~data.mask[..., None], 0.0)  # padded steps observe nothing
        initial, transition = params["initial"].to(_F64), params["transition"].to(_F64)
        states = sample_paths(log_e, initial, transition, num_samples, generator)  # (S, N, T)
        X, keep = self._flat_steps(data)
        filled = self._emissions.impute_sample(X, keep, states.reshape(num_samples, -1), params, generator)
        return filled.reshape((num_samples,) + tuple(data.values.shape)).to(_F64)

    def imputed_like(self, given: Any, data: SequenceData, filled: Tensor) -> Any:
        """The padded values ``filled`` as sequences in the form ``given`` came in (``fit.impute``):
        a list of sequences for a list, one sequence otherwise; numpy arrays unless tensors were
        given, ``(T,)`` when one feature was given that way."""
        seqs = [filled[i, : int(n)] for i, n in enumerate(data.lengths)]
        first = given[0] if isinstance(given, list | tuple) and not data.single else given
        if filled.dim() == 3 and data.n_features == 1 and np.ndim(first) == 1:
            seqs = [q[:, 0] for q in seqs]
        if not isinstance(first, Tensor):
            out: list[Any] = [q.numpy() for q in seqs]
        else:
            out = [q.to(first.dtype) if first.is_floating_point() else q for q in seqs]
        return out[0] if data.single else out

    def latent_map(self, data: Any, params: Mapping[str, Tensor]) -> dict[str, Any]:
        """``{"states": [Viterbi path per sequence]}`` (the path itself if one sequence)."""
        data = self._prepared(data)
        paths, _ = self.viterbi(data, params)
        return {"states": paths[0] if data.single else paths}

    def num_parameters(self, params: Mapping[str, Tensor], data: Any) -> int:
        """Free parameters, counted as hmmlearn's ``_get_n_fit_scalars_per_param``."""
        K = self.n_states
        return (K - 1) + K * (K - 1) + self._emissions.n_parameters(params)

    def sample_items(
        self,
        n: int,
        params: Mapping[str, Tensor],
        *,
        generator: torch.Generator | None = None,
        length: int = 100,
        **kwargs: Any,
    ) -> dict[str, Any]:
        """Draw ``n`` sequences of ``length`` steps.

        Returns
        -------
        dict
            ``{"data": list of n tensors, "states": list of n int64 paths}``; each sequence has
            shape ``(length,)`` (categorical, or one feature) or ``(length, n_features)``.
        """
        if kwargs:
            raise TypeError(f"unexpected option(s) {sorted(kwargs)}; HiddenMarkovModel.sample takes length=.")
        positive_int(length, "length")
        g = generator if generator is not None else torch.Generator().manual_seed(0)
        states = _sample_chain(params["initial"].to(_F64), params["transition"].to(_F64), n, int(length), g)
        y = self._emissions.sample(states.reshape(-1), params, g)
        y = y.reshape((n, int(length)) + tuple(y.shape[1:]))
        if y.dim() == 3 and y.shape[-1] == 1:
            y = y[..., 0]
        return {"data": list(y.unbind(0)), "states": list(states.unbind(0))}

    def align_posterior(
        self, posterior: Mapping[str, Tensor], data: Any = None, params: Mapping[str, Tensor] | None = None
    ) -> dict[str, Tensor]:
        """Relabel every draw's states in a canonical order (against label switching).

        States are sorted by the first coordinate of their mean (Gaussian ``locs``, Poisson
        ``rates``) or by their mean symbol (categorical).
        """
        if "transition" not in posterior:
            return dict(posterior)
        lead = posterior["transition"].shape[:-2]
        flat = {k: v.reshape((-1,) + tuple(v.shape[len(lead) :])) for k, v in posterior.items()}
        perm = torch.argsort(self._emissions.order_key(flat), -1)  # (S, K)
        S = perm.shape[0]
        ar = torch.arange(S)[:, None]
        out = dict(flat)
        out["initial"] = flat["initial"][ar, perm]
        out["transition"] = flat["transition"][ar[:, :, None], perm[:, :, None], perm[:, None, :]]
        for name in self._emissions.state_sites:
            out[name] = flat[name][ar, perm]
        return {k: v.reshape(tuple(lead) + tuple(v.shape[1:])) for k, v in out.items()}

    # ----------------------------------------------------------------------- Pyro pair
    def model(self, data: Any = None, *, length: int = 100, num_sequences: int = 1) -> Tensor:
        """Pyro model: priors on every site, hidden states summed out by ``DiscreteHMM``.

        With ``data=None`` it generates ``num_sequences`` sequences of ``length`` steps (states
        sampled as ``"states_{t}"``, observations as ``"obs_{t}"``) and returns them stacked.
        """
        if data is not None and not isinstance(data, SequenceData):
            data = self.prepare_data(data)
        K = self.n_states
        conc = self.prior_concentration
        initial = pyro.sample("initial", dist.Dirichlet(torch.full((K,), conc, dtype=_F64)))
        transition = pyro.sample(
            "transition", dist.Dirichlet(torch.full((K, K), conc, dtype=_F64)).to_event(1)
        )
        em = {name: pyro.sample(name, prior) for name, prior in self._emissions.priors(data).items()}
        obs_dist = self._emissions.distribution(em)
        if data is None:
            return self._generate(initial, transition, em, length, num_sequences)
        N, T = data.values.shape[:2]
        mask = data.mask
        log_trans = torch.log(transition)
        log_eye = torch.full((K, K), -1e30, dtype=_F64).fill_diagonal_(0.0)
        steps = torch.where(mask[:, :, None, None], log_trans, log_eye)
        first = torch.log(initial).expand(N, 1, K, K)
        steps = torch.cat([first, steps[:, 1:]], 1)
        hmm = _SequenceHMM(torch.zeros(K, dtype=_F64), steps, obs_dist.mask(mask[..., None]))
        with pyro.plate("sequences", N):
            return pyro.sample("obs", hmm, obs=data.values)

    def _generate(
        self, initial: Tensor, transition: Tensor, em: Mapping[str, Tensor], length: int, n: int
    ) -> Tensor:
        ys = []
        with pyro.plate("sequences", n):
            z = None
            for t in pyro.markov(range(int(length))):
                probs = initial if z is None else transition[z]
                z = pyro.sample(f"states_{t}", dist.Categorical(probs))
                ys.append(pyro.sample(f"obs_{t}", self._emissions.state_distribution(em, z)))
        return torch.stack(ys, 1)


# ----------------------------------------------------------------------------- helpers


def _sample_chain(
    initial: Tensor, transition: Tensor, n: int, length: int, generator: torch.Generator
) -> Tensor:
    """``(n, length)`` state paths of the chain, every step by one uniform draw per path."""
    cum = torch.cumsum(transition, -1)
    z = torch.multinomial(initial.expand(n, -1), 1, generator=generator)[:, 0]
    u = torch.rand((n, length), generator=generator, dtype=_F64)
    states = torch.empty((n, length), dtype=torch.long)
    states[:, 0] = z
    K = initial.shape[0]
    for t in range(1, length):
        z = torch.searchsorted(cum[z], u[:, t : t + 1].contiguous())[:, 0].clamp_max(K - 1)
        states[:, t] = z
    return states
