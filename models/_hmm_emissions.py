"""Emission strategies of :class:`probgen.models.HiddenMarkovModel`: one small class per emission kind.

The model keeps the chain (``initial``, ``transition``, the forward-backward and Viterbi
orchestration, the Pyro model); what a state emits lives here, as hmmlearn cuts its models: an
emission kind owns its log-densities, its sufficient statistics and M-step, its starting
values, its priors and distributions for the Pyro model, sampling, parameter counting, the
hand-off of its densities to the engine and the compiled kernels, and what a picture calls its
values.  :class:`_Emission` states that contract; :class:`_CategoricalEmission` and
:class:`_PoissonEmission` implement it here, the Gaussian emissions and their covariance
structures in :mod:`probgen.models._hmm_gaussian`.  Strategies are frozen values: whatever they
keep between calls lives in the data's cache (:attr:`SequenceData.cache`), never on them.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import pyro.distributions as dist
import torch
from torch import Tensor

from probgen.models._hmm_engine import _forward_backward, _forward_backward_log, _scan_layout
from probgen.models._hmm_layout import SequenceData, _Layout, _pad_time, _scratch
from probgen.models._hmm_viterbi import _LOG_FLOOR, _ViterbiEmission
from probgen.models.kmeans import _kmeans
from probgen.validation import check_counts_exact, check_inferred_code

__all__: list[str] = []

_F64 = torch.float64
_ROW_SUM_ATOL = 1e-6
_KMEANS_MAX_POINTS = 20000  # k-means for starting means runs on a subsample of long series

Params = Mapping[str, Tensor]
Stats = dict[str, Tensor]


# ------------------------------------------------------------------------------ helpers
def _as_kernel_array(x: Tensor) -> np.ndarray:
    """A contiguous float64 NumPy array of a CPU tensor, as the compiled kernels read them."""
    return np.ascontiguousarray(x.detach().to(_F64).numpy())


def _chain_arrays(params: Params) -> tuple[np.ndarray, np.ndarray]:
    """The chain's ``initial`` and ``transition`` probabilities for the compiled kernels."""
    return _as_kernel_array(params["initial"]), _as_kernel_array(params["transition"])


def _cpu_scratch(name: str, shape: tuple[int, ...]) -> np.ndarray:
    """A kept float64 NumPy buffer (:func:`_scratch`) for the compiled kernels, whatever the
    default device."""
    if torch.get_default_device().type == "cpu":
        return _scratch(name, shape).numpy()
    return np.empty(shape)


def _expect_shape(v: Tensor, shape: Sequence[int], name: str) -> None:
    if tuple(v.shape) != tuple(shape):
        raise ValueError(f"init[{name!r}] has shape {tuple(v.shape)}; expected {tuple(shape)}.")


def _expect_stochastic(v: Tensor, name: str) -> None:
    if bool((v < 0).any()):
        raise ValueError(
            f"init[{name!r}] has negative entries (min {float(v.min())!r}); probabilities must be >= 0."
        )
    sums = v.sum(-1)
    bad = (sums - 1).abs() > _ROW_SUM_ATOL
    if bool(bad.any()):
        i = int(bad.nonzero()[0, 0])
        what = "sums" if v.shape[0] == 1 else f"row {i} sums"
        raise ValueError(
            f"init[{name!r}] must have rows summing to 1 (within {_ROW_SUM_ATOL:g}); {what} to {float(sums[i]):.6g}."
        )


def _expect_positive(v: Tensor, name: str) -> None:
    if bool((v <= 0).any()):
        raise ValueError(f"init[{name!r}] must be positive; got min {float(v.min())!r}.")


def _normalise(x: Tensor, fallback: Tensor) -> Tensor:
    """Rows of ``x`` divided by their sums; rows summing to zero (never visited) keep ``fallback``."""
    s = x.sum(-1, keepdim=True)
    if bool((s > 0).all()):  # the usual case, in two operations
        return x / s
    return torch.where(s > 0, x / torch.where(s > 0, s, torch.ones_like(s)), fallback.to(x.dtype))


def _centers(X: Tensor, K: int, strategy: str, generator: torch.Generator) -> Tensor:
    """``K`` starting means from the steps ``X``: k-means++ and Lloyd, or steps drawn at random."""
    centers = (
        _kmeans(X, min(K, X.shape[0]), generator, max_points=_KMEANS_MAX_POINTS)[1]
        if strategy == "kmeans"
        else X[torch.randperm(X.shape[0], generator=generator)[:K]]
    )
    if centers.shape[0] < K:
        centers = centers[torch.arange(K) % centers.shape[0]]
    return centers


def _observed_steps(data: SequenceData) -> Tensor:
    """The real steps ``(n, d)``; missing cells at their feature's mean over the observed cells."""
    X = data.values[data.mask]
    if data.observed is None:
        return X
    seen = data.observed[data.mask]
    mean = (X * seen).sum(0) / seen.sum(0)
    return torch.where(seen, X, mean)


# --------------------------------------------------------------------------- the contract
@dataclass(frozen=True)
class _Emission(abc.ABC):
    """What one emission kind of an HMM with ``n_states`` states owns.

    Shapes: ``K`` states; block layout ``(L, M, ...)`` as :class:`_Layout` describes; ``params``
    hold the chain's ``"initial"`` and ``"transition"`` besides the emission's own sites.
    Optional fast paths return ``None`` when the emission kind has none (the model then takes
    the general route).
    """

    n_states: int

    #: The constructor's ``emission`` that picks this class.
    name: ClassVar[str]
    #: What a picture of the fit calls the observed values.
    value_label: ClassVar[str] = "value"
    #: EM's default starting strategy.
    default_init: ClassVar[str] = "kmeans"

    @property
    @abc.abstractmethod
    def sites(self) -> tuple[str, ...]:
        """Names of the emission's parameter sites."""

    @property
    def state_sites(self) -> tuple[str, ...]:
        """The sites indexed by state first (relabelled with the states)."""
        return self.sites

    @property
    def init_sites(self) -> tuple[str, ...]:
        """Names ``init=dict(...)`` may give for the emissions."""
        return self.sites

    def options(self) -> str:
        """Constructor options beyond ``emission`` for the model's repr (``", name=value"``)."""
        return ""

    # ------------------------------------------------------------------------ data
    def prepare_values(self, values: Tensor, argname: str) -> Tensor:
        """Padded sequences ``(N, T, d)`` float64, checked and converted to what is observed."""
        return values

    @abc.abstractmethod
    def check_params(self, data: SequenceData, params: Params) -> None:
        """Raise ``ValueError`` when ``params`` cannot score ``data`` (alphabet, features)."""

    # ------------------------------------------------------------------- densities
    @abc.abstractmethod
    def log_density(
        self, values: Tensor, params: Params, *, data: SequenceData | None = None, block_length: int = 0
    ) -> Tensor:
        """Log-densities ``(..., K)`` of observations ``(..., d)`` (categorical: ``(...)``).

        With ``data`` (whose blocked values, of ``block_length`` steps a block, are ``values``),
        an emission kind may use what it keeps in the data's cache.
        """

    def forward_backward(
        self, data: SequenceData, vals: Tensor, lay: _Layout, params: Params, *, posteriors: bool
    ) -> tuple[Tensor, Tensor | None, Tensor | None]:
        """The engine's forward-backward over blocked values ``vals``: log-likelihoods per
        sequence and, with ``posteriors``, state marginals in block layout and transition counts."""
        log_e = self.log_density(vals, params, data=data, block_length=lay.L)
        initial, transition = params["initial"].to(_F64), params["transition"].to(_F64)
        return _forward_backward_log(log_e, lay, initial, transition, posteriors=posteriors)

    def compiled_forward_backward(
        self, data: SequenceData, params: Params, *, posteriors: bool
    ) -> tuple[Tensor, Tensor] | None:
        """Optional: per-sequence log-likelihoods and state marginals ``(N, T, K)`` by a compiled
        kernel (called on the CPU with few sequences)."""
        return None

    # ------------------------------------------------------------------------- EM
    @abc.abstractmethod
    def statistics(self, data: SequenceData, vals: Tensor, G: Tensor, lay: _Layout, params: Params) -> Stats:
        """Expected sufficient statistics from the state marginals ``G`` ``(L M, K)`` of the
        blocked values ``vals``."""

    def compiled_e_step(
        self, data: SequenceData, params: Params, *, few_sequences: bool
    ) -> tuple[Stats, float] | None:
        """Optional: the whole E-step by one compiled call, statistics with the chain's
        ``"start"``, ``"trans"`` and ``"post"``, and the log-likelihood.  ``few_sequences`` tells
        whether the model's rule for per-sequence kernels holds (an emission kind may have its own)."""
        return None

    def state_major_e_step(
        self, data: SequenceData, params: Params, lay: _Layout
    ) -> tuple[Stats, Tensor, Tensor, Tensor] | None:
        """Optional: the E-step on the engine's state-major scan layout ``lay``: statistics,
        log-likelihoods, state marginals ``(L, K, blocks)`` and transition counts."""
        return None

    @abc.abstractmethod
    def m_step(self, stats: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Closed-form maximiser of the emission sites."""

    @abc.abstractmethod
    def init_params(
        self, data: SequenceData, strategy: str, given: Mapping[str, Any], generator: torch.Generator
    ) -> dict[str, Tensor]:
        """Starting values of the sites ``given`` does not hold (``"kmeans"`` or ``"random"``)."""

    @abc.abstractmethod
    def validate_init(self, name: str, value: Tensor, data: SequenceData) -> dict[str, Tensor]:
        """Check a starting value the user gave for site ``name``; the sites it sets."""

    # ------------------------------------------------------------------- missing cells
    @abc.abstractmethod
    def log_density_missing(self, values: Tensor, observed: Tensor, params: Params) -> Tensor:
        """Log-densities ``(..., K)`` of the observed cells of ``values`` (``observed`` marks
        them, same shape): the missing cells marginalised, zero for a step missing whole."""

    @abc.abstractmethod
    def statistics_missing(self, X: Tensor, observed: Tensor, G: Tensor, params: Params) -> Stats:
        """:meth:`statistics` of the steps ``X`` ``(n, d)`` (categorical ``(n,)``) whose cells
        ``observed`` marks, under the marginals ``G`` ``(n, K)``: what :meth:`m_step` needs for
        exact EM with the missing cells marginalised."""

    @abc.abstractmethod
    def impute_mean(self, X: Tensor, observed: Tensor, G: Tensor, params: Params) -> Tensor:
        """``X`` with its missing cells at their conditional means given the step's observed
        cells and the state marginals ``G`` ``(n, K)``: ``sum_k G[t, k] E[x_t | z_t = k, x_o]``
        (categorical: the most probable symbol)."""

    def impute_sample(
        self, X: Tensor, observed: Tensor, states: Tensor, params: Params, generator: torch.Generator
    ) -> Tensor:
        """Copies ``(S, *X.shape)`` of ``X``, the missing cells of copy ``s`` drawn from the emission
        of their step's state ``states[s]`` (``(S, n)``) given the step's observed cells: here
        the state's own emission (categorical; Poisson features are independent given the state)."""
        draws = self.sample(states.reshape(-1), params, generator).view(states.shape + X.shape[1:])
        return torch.where(observed, X, draws)

    # ------------------------------------------------------------------------ Viterbi
    def viterbi_compiled(
        self,
        data: SequenceData,
        params: Params,
        log_pi: np.ndarray,
        log_A: np.ndarray,
        paths: np.ndarray,
        scores: np.ndarray,
    ) -> None:
        """Viterbi on the CPU by the compiled decoder, writing ``paths`` and ``scores``."""
        # the compiled kernels load on first use: importing numba costs about a second
        from probgen.models._hmm_kernels import viterbi_dense

        log_e = self.log_density(data.values, params).clamp_min(_LOG_FLOOR).contiguous()
        viterbi_dense(log_e.numpy(), data.lengths.numpy(), log_pi, log_A, paths, scores)  # overwrites log_e

    def viterbi_emission(self, vals: Tensor, params: Params, lay: _Layout) -> _ViterbiEmission:
        """Log-densities of blocked values for the PyTorch decoder (accelerators)."""
        return _ViterbiEmission.from_array(self.log_density(vals, params).transpose(1, 2), lay)

    # ------------------------------------------------------------ Pyro model, sampling
    @abc.abstractmethod
    def priors(self, data: SequenceData | None) -> dict[str, Any]:
        """Prior distribution of every emission site, scaled to ``data`` when given."""

    @abc.abstractmethod
    def distribution(self, em: Params) -> Any:
        """Observation distribution of every state, batch shape ``(K,)``."""

    @abc.abstractmethod
    def state_distribution(self, em: Params, z: Tensor) -> Any:
        """Observation distribution of states ``z`` ``(n,)``, batch shape ``(n,)``."""

    @abc.abstractmethod
    def sample(self, states: Tensor, params: Params, generator: torch.Generator) -> Tensor:
        """One observation per state of ``states`` ``(n,)``: ``(n,)`` symbols or ``(n, d)``."""

    # -------------------------------------------------------------------- fit tools
    @abc.abstractmethod
    def n_parameters(self, params: Params) -> int:
        """Free emission parameters (hmmlearn's count)."""

    @abc.abstractmethod
    def order_key(self, flat: Params) -> Tensor:
        """``(S, K)`` key sorting the states of every draw in a canonical order."""

    def covariances(self, params: Mapping[str, Any]) -> Tensor:
        """Full covariance matrices of Gaussian emissions; other kinds have none."""
        raise TypeError(f"covariances needs Gaussian emissions; this model has emission={self.name!r}.")


# ------------------------------------------------------------------------- categorical
@dataclass(frozen=True)
class _CategoricalEmission(_Emission):
    """Categorical emissions: state ``k`` emits symbol ``x`` with probability ``probs[k, x]``.

    Densities are probabilities read from the table by symbol: no log/exp round trip, and the
    compiled kernels and the state-major E-step never build a ``T K`` emission array of logs.
    """

    n_symbols: int | None = None
    prior_concentration: float = 1.0

    name: ClassVar[str] = "categorical"
    value_label: ClassVar[str] = "symbol"
    default_init: ClassVar[str] = "random"

    @property
    def sites(self) -> tuple[str, ...]:
        return ("probs",)

    def prepare_values(self, values: Tensor, argname: str) -> Tensor:
        d = values.shape[-1]
        if d != 1:
            raise ValueError(
                f"{argname} has {d} columns; categorical emissions expect one symbol per step, shape (T,) or (T, 1)."
            )
        bad = (values < 0) | (values != torch.round(values))
        if bool(bad.any()):
            raise ValueError(
                f"{argname} holds {int(bad.sum())} values that are not symbols (non-negative integers), "
                f"e.g. {values[bad][0].item()!r}."
            )
        if self.n_symbols is None:
            check_inferred_code(float(values.max()), argname, "n_symbols")
        if self.n_symbols is not None and bool((values >= self.n_symbols).any()):
            raise ValueError(
                f"{argname} holds symbol {int(values.max())}, outside the alphabet 0..{self.n_symbols - 1} "
                f"(n_symbols={self.n_symbols})."
            )
        return values[..., 0].long()

    def check_params(self, data: SequenceData, params: Params) -> None:
        M = params["probs"].shape[-1]
        top = int(data.values.max())
        if top >= M:
            raise ValueError(
                f"data holds symbol {top}, outside the fitted alphabet 0..{M - 1} ({M} symbols)."
            )

    def log_density(
        self, values: Tensor, params: Params, *, data: SequenceData | None = None, block_length: int = 0
    ) -> Tensor:
        return torch.log(params["probs"].to(_F64)).T.contiguous()[values]

    def forward_backward(
        self, data: SequenceData, vals: Tensor, lay: _Layout, params: Params, *, posteriors: bool
    ) -> tuple[Tensor, Tensor | None, Tensor | None]:
        initial, transition = params["initial"].to(_F64), params["transition"].to(_F64)
        scan = None if posteriors else _scan_layout(lay, self.n_states)
        if scan is not None:  # long series scored: emissions gathered straight into the scan's layout
            e = _scratch("fb_e", (scan.L, self.n_states, scan.M))
            self._table_emissions(data, params, scan, e)
            ll = _forward_backward(e, None, scan, initial, transition, posteriors=False, state_major=True)[0]
            return ll, None, None
        e = params["probs"].to(_F64).T.contiguous()[vals]  # probabilities already: no log/exp round trip
        if lay.ragged:
            e[~lay.mask] = 1.0
        return _forward_backward(e, None, lay, initial, transition, posteriors=posteriors)

    def compiled_forward_backward(
        self, data: SequenceData, params: Params, *, posteriors: bool
    ) -> tuple[Tensor, Tensor] | None:
        """By :func:`probgen.models._hmm_kernels.categorical_forward_backward`: emissions read
        from the table by symbol, nothing of size ``T K`` built to score (the marginals are an
        empty tensor without ``posteriors``)."""
        # the compiled kernels load on first use: importing numba costs about a second
        from probgen.models._hmm_kernels import categorical_forward_backward

        K, (N, T) = self.n_states, data.values.shape
        if posteriors:
            gamma, log_c = np.empty((N, T, K)), np.empty((N, T))
        else:
            gamma, log_c = _cpu_scratch("cat_gamma", (1, T, K)), _cpu_scratch("cat_log_c", (1, T))
        log_lik = np.empty(N)
        categorical_forward_backward(
            data.values.contiguous().numpy(),
            data.lengths.numpy(),
            _as_kernel_array(params["probs"]),
            *_chain_arrays(params),
            posteriors,
            log_c,
            gamma,
            log_lik,
        )
        return torch.from_numpy(log_lik), torch.from_numpy(gamma) if posteriors else torch.empty(0)

    def statistics(self, data: SequenceData, vals: Tensor, G: Tensor, lay: _Layout, params: Params) -> Stats:
        M = params["probs"].shape[-1]
        counts = torch.zeros((M, self.n_states), dtype=_F64).index_add_(0, vals.reshape(-1), G).T
        return {"counts": counts, "prev_probs": params["probs"]}

    def compiled_e_step(
        self, data: SequenceData, params: Params, *, few_sequences: bool
    ) -> tuple[Stats, float] | None:
        """By :func:`probgen.models._hmm_kernels.categorical_e_step` on few sequences (the
        blocked engine, vectorised across sequences, serves many).

        The kernel reads the emission probabilities from the table by symbol (no ``T K``
        emission array) and adds each sequence's marginals, kept in one sequence's scratch, to
        the symbol counts before the next sequence.
        """
        if not few_sequences:
            return None
        # the compiled kernels load on first use: importing numba costs about a second
        from probgen.models._hmm_kernels import categorical_e_step

        K, T = self.n_states, data.values.shape[1]
        counts = np.empty((params["probs"].shape[-1], K))
        xi = np.empty((K, K))
        start = np.empty(K)
        gamma = _cpu_scratch("cat_gamma", (T, K))
        log_c = _cpu_scratch("cat_log_c", (T,))
        ll = categorical_e_step(
            data.values.contiguous().numpy(),
            data.lengths.numpy(),
            _as_kernel_array(params["probs"]),
            *_chain_arrays(params),
            gamma,
            log_c,
            counts,
            xi,
            start,
        )
        counts_t = torch.from_numpy(counts).T
        stats = {
            "start": torch.from_numpy(start),
            "trans": torch.from_numpy(xi),
            "post": counts_t.sum(1),
            "counts": counts_t,
            "prev_probs": params["probs"],
        }
        return stats, float(ll)

    def state_major_e_step(
        self, data: SequenceData, params: Params, lay: _Layout
    ) -> tuple[Stats, Tensor, Tensor, Tensor] | None:
        """One index into the emission table, kept per data, serves twice: a gather for the
        emission probabilities and a scatter-add of the marginals at the same positions for the
        expected symbol counts."""
        K, M = self.n_states, params["probs"].shape[-1]
        # emissions go into the engine's own buffer: a fresh 8 T K bytes would fault a page per 4 kB
        e = _scratch("fb_e", (lay.L, K, lay.M))
        index = self._table_emissions(data, params, lay, e)
        initial, transition = params["initial"].to(_F64), params["transition"].to(_F64)
        ll, gamma, xi = _forward_backward(e, None, lay, initial, transition, state_major=True)
        assert gamma is not None and xi is not None
        counts = torch.zeros(K * (M + 1), dtype=_F64).index_add_(0, index, gamma.view(-1)).view(K, M + 1)
        stats = {"post": counts.sum(1), "counts": counts[:, :M], "prev_probs": params["probs"]}
        return stats, ll, gamma, xi

    def _table_emissions(self, data: SequenceData, params: Params, lay: _Layout, out: Tensor) -> Tensor:
        """Emission probabilities of every step written state-major into ``out``
        ``(L, K, blocks)``; returns the index into the flattened table ``[probs, 1]`` that did it
        (kept per data; padded steps read the column of ones)."""
        K, M = self.n_states, params["probs"].shape[-1]
        key = f"state_major_index/{lay.L}/{lay.Tp}/{K}/{M}"
        if key not in data.cache:  # position of (state k, symbol x_t) in the table, (L, K, blocks)
            vals = lay.to_blocks(_pad_time(data.values, lay.Tp, 0))
            sym = torch.where(lay.mask, vals, M) if lay.ragged else vals
            index = torch.arange(K, dtype=torch.int32)[None, :, None] * (M + 1) + sym[:, None, :].to(
                torch.int32
            )
            data.cache[key] = index.reshape(-1)
        index = data.cache[key]
        probs = params["probs"].to(_F64)
        table = torch.cat([probs, probs.new_ones((K, 1))], 1).reshape(-1)  # (K (M + 1),)
        torch.index_select(table, 0, index, out=out.view(-1))
        return index

    def m_step(self, stats: Mapping[str, Tensor]) -> dict[str, Tensor]:
        return {"probs": _normalise(stats["counts"].clamp_min(0), stats["prev_probs"])}

    def log_density_missing(self, values: Tensor, observed: Tensor, params: Params) -> Tensor:
        log_e = self.log_density(values, params)
        return torch.where(observed[..., None], log_e, 0.0)

    def statistics_missing(self, X: Tensor, observed: Tensor, G: Tensor, params: Params) -> Stats:
        M = params["probs"].shape[-1]
        seen = G * observed[:, None]  # a missing step counts no symbol
        counts = torch.zeros((M, self.n_states), dtype=_F64).index_add_(0, X, seen).T
        return {"counts": counts, "prev_probs": params["probs"]}

    def impute_mean(self, X: Tensor, observed: Tensor, G: Tensor, params: Params) -> Tensor:
        likely = (G @ params["probs"].to(_F64)).argmax(-1)
        return torch.where(observed, X, likely)

    def init_params(
        self, data: SequenceData, strategy: str, given: Mapping[str, Any], generator: torch.Generator
    ) -> dict[str, Tensor]:
        """Uniform random rows, normalised (either strategy)."""
        if "probs" in given:
            return {}
        M = self.n_symbols or int(data.values.max()) + 1
        p = torch.rand((self.n_states, M), generator=generator, dtype=_F64)
        return {"probs": p / p.sum(-1, keepdim=True)}

    def validate_init(self, name: str, value: Tensor, data: SequenceData) -> dict[str, Tensor]:
        M = self.n_symbols or value.shape[-1]
        _expect_shape(value, (self.n_states, M), name)
        _expect_stochastic(value, name)
        if int(data.values.max()) >= M:
            raise ValueError(
                f"init['probs'] has {M} symbols but the data hold symbol {int(data.values.max())}."
            )
        return {name: value}

    def viterbi_compiled(
        self,
        data: SequenceData,
        params: Params,
        log_pi: np.ndarray,
        log_A: np.ndarray,
        paths: np.ndarray,
        scores: np.ndarray,
    ) -> None:
        # the compiled kernels load on first use: importing numba costs about a second
        from probgen.models._hmm_kernels import viterbi_table

        table = torch.log(params["probs"].to(_F64)).clamp_min(_LOG_FLOOR).contiguous().numpy()
        delta = _cpu_scratch("vit_delta", (data.values.shape[1], self.n_states))  # kept: no fresh pages
        lengths = data.lengths.numpy()
        viterbi_table(data.values.contiguous().numpy(), lengths, table, log_pi, log_A, delta, paths, scores)

    def viterbi_emission(self, vals: Tensor, params: Params, lay: _Layout) -> _ViterbiEmission:
        return _ViterbiEmission.from_table(torch.log(params["probs"].to(_F64)), vals, lay)

    def priors(self, data: SequenceData | None) -> dict[str, Any]:
        M = self.n_symbols or (int(data.values.max()) + 1 if data is not None else 2)
        conc = torch.full((self.n_states, M), self.prior_concentration, dtype=_F64)
        return {"probs": dist.Dirichlet(conc).to_event(1)}

    def distribution(self, em: Params) -> Any:
        return dist.Categorical(probs=em["probs"])

    def state_distribution(self, em: Params, z: Tensor) -> Any:
        return dist.Categorical(probs=em["probs"][z])

    def sample(self, states: Tensor, params: Params, generator: torch.Generator) -> Tensor:
        return torch.multinomial(params["probs"].to(_F64)[states], 1, generator=generator)[:, 0]

    def n_parameters(self, params: Params) -> int:
        return self.n_states * (params["probs"].shape[-1] - 1)

    def order_key(self, flat: Params) -> Tensor:
        """The mean symbol of every state."""
        p = flat["probs"]
        return (p * torch.arange(p.shape[-1], dtype=p.dtype)).sum(-1)


# ------------------------------------------------------------------ vector observations
@dataclass(frozen=True)
class _VectorEmission(_Emission):
    """Emissions of ``d`` features a step with a mean per state (Gaussian, Poisson)."""

    #: The site of the state means, which start from k-means and order the states.
    mean_site: ClassVar[str]

    def check_params(self, data: SequenceData, params: Params) -> None:
        d = params[self.mean_site].shape[-1]
        if data.n_features != d:
            raise ValueError(f"data has {data.n_features} features; the model was fitted with {d}.")

    def statistics(self, data: SequenceData, vals: Tensor, G: Tensor, lay: _Layout, params: Params) -> Stats:
        return self.moments(G, vals.reshape(-1, data.n_features), data, lay.L)

    def moments(self, G: Tensor, X: Tensor, data: SequenceData, block_length: int) -> Stats:
        """Weighted moments of the steps ``X`` ``(n, d)`` under the marginals ``G`` ``(n, K)``."""
        return {"obs": G.T @ X}

    def init_params(
        self, data: SequenceData, strategy: str, given: Mapping[str, Any], generator: torch.Generator
    ) -> dict[str, Tensor]:
        """Means from k-means++ and Lloyd iterations on all steps (``"kmeans"``) or drawn from them."""
        X = _observed_steps(data)  # (n_steps, d)
        params: dict[str, Tensor] = {}
        if self.mean_site not in given:
            params[self.mean_site] = self.means_from_centers(_centers(X, self.n_states, strategy, generator))
        params.update(self.init_spread(X, given))
        return params

    def means_from_centers(self, centers: Tensor) -> Tensor:
        return centers

    def init_spread(self, X: Tensor, given: Mapping[str, Any]) -> dict[str, Tensor]:
        """Starting values of the sites beyond the means."""
        return {}

    def hyper(self, data: SequenceData | None) -> tuple[Tensor, Tensor]:
        """Centre and spread of the data per feature, which scale the priors."""
        if data is None:
            return torch.zeros(1, dtype=_F64), torch.ones(1, dtype=_F64)
        X = _observed_steps(data)
        center = X.mean(0)
        spread = X.std(0) if X.shape[0] > 1 else torch.ones_like(center)
        spread = torch.where(spread > 0, spread, 1e-3 * (1.0 + center.abs()))
        return center, spread

    def order_key(self, flat: Params) -> Tensor:
        """The first coordinate of every state's mean."""
        return flat[self.mean_site][..., 0]


# ----------------------------------------------------------------------------- Poisson
@dataclass(frozen=True)
class _PoissonEmission(_VectorEmission):
    """Poisson emissions: feature ``j`` of a step in state ``k`` counts at rate ``rates[k, j]``."""

    name: ClassVar[str] = "poisson"
    value_label: ClassVar[str] = "count"
    mean_site: ClassVar[str] = "rates"

    @property
    def sites(self) -> tuple[str, ...]:
        return ("rates",)

    def prepare_values(self, values: Tensor, argname: str) -> Tensor:
        bad = (values < 0) | (values != torch.round(values))
        if bool(bad.any()):
            raise ValueError(
                f"{argname} has {int(bad.sum())} entries that are not non-negative integers "
                f"(e.g. {values[bad][0].item()!r}); Poisson emissions expect counts."
            )
        check_counts_exact(values, argname)
        return values

    def log_density(
        self, values: Tensor, params: Params, *, data: SequenceData | None = None, block_length: int = 0
    ) -> Tensor:
        X = values.reshape(-1, values.shape[-1])
        rates = params["rates"].to(_F64)
        # log 0 held finite so that 0 * log 0 is 0 (a count of 0 where the rate is 0 has probability 1)
        out = (
            X @ torch.log(rates).clamp_min(-1e250).T
            - rates.sum(-1)
            - torch.lgamma(X + 1.0).sum(-1, keepdim=True)
        )
        return out.view(values.shape[:-1] + (self.n_states,))

    def m_step(self, stats: Mapping[str, Tensor]) -> dict[str, Tensor]:
        # with missing cells, each feature's occupancy counts the steps where it is observed
        post = stats["post_obs"] if "post_obs" in stats else stats["post"][:, None]
        return {"rates": stats["obs"] / post}

    def log_density_missing(self, values: Tensor, observed: Tensor, params: Params) -> Tensor:
        d = values.shape[-1]
        X, seen = values.reshape(-1, d), observed.reshape(-1, d).to(_F64)
        rates = params["rates"].to(_F64)
        out = (
            (seen * X) @ torch.log(rates).clamp_min(-1e250).T
            - seen @ rates.T
            - (torch.lgamma(X + 1.0) * seen).sum(-1, keepdim=True)
        )
        return out.view(values.shape[:-1] + (self.n_states,))

    def statistics_missing(self, X: Tensor, observed: Tensor, G: Tensor, params: Params) -> Stats:
        seen = observed.to(_F64)  # the features factorise: each rate from the steps observing it
        return {"obs": G.T @ (seen * X), "post_obs": G.T @ seen}

    def impute_mean(self, X: Tensor, observed: Tensor, G: Tensor, params: Params) -> Tensor:
        return torch.where(observed, X, G @ params["rates"].to(_F64))

    def means_from_centers(self, centers: Tensor) -> Tensor:
        return centers.clamp_min(1e-3)

    def validate_init(self, name: str, value: Tensor, data: SequenceData) -> dict[str, Tensor]:
        _expect_shape(value, (self.n_states, data.n_features), name)
        _expect_positive(value, name)
        return {name: value}

    def priors(self, data: SequenceData | None) -> dict[str, Any]:
        center, _ = self.hyper(data)
        mean = center.clamp_min(1e-3).expand(self.n_states, center.shape[0])
        return {"rates": dist.Gamma(torch.full_like(mean, 2.0), 2.0 / mean).to_event(2)}

    def distribution(self, em: Params) -> Any:
        return dist.Poisson(em["rates"]).to_event(1)

    def state_distribution(self, em: Params, z: Tensor) -> Any:
        return dist.Poisson(em["rates"][z]).to_event(1)

    def sample(self, states: Tensor, params: Params, generator: torch.Generator) -> Tensor:
        return torch.poisson(params["rates"].to(_F64)[states], generator=generator)

    def n_parameters(self, params: Params) -> int:
        return self.n_states * params["rates"].shape[-1]
