"""Hidden Markov models: Gaussian, categorical and Poisson emissions, one or many sequences.

The exact computations (forward-backward, Viterbi, Baum-Welch) run in float64 on the blocked
scans of :mod:`probgen.models._hmm_engine`; this module adds the emission families, the EM hooks,
the Pyro model and the fit tools.

The Pyro model sums the hidden states out with :class:`pyro.distributions.DiscreteHMM`, whose
forward pass is a parallel (log-depth) scan, so SVI and NUTS fit a Bayesian HMM directly.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pyro
import pyro.distributions as dist
import torch
from pyro.distributions import constraints
from torch import Tensor

from probgen.model import GenerativeModel, as_tensor
from probgen.models._hmm_engine import _forward_backward, _forward_backward_log, _scan_layout, _small_problem
from probgen.models._hmm_layout import SequenceData, _Layout, _layout, _pad_time, _padded_length, _scratch
from probgen.models._hmm_viterbi import _LOG_FLOOR, _viterbi, _viterbi_block_length, _ViterbiEmission
from probgen.models.kmeans import _kmeans

# The compiled categorical E-step runs on up to this many sequences per squared state (whatever
# their lengths); past it the blocked engine, vectorised across sequences, is as fast or faster.
# Measured on one thread (compiled / engine time): 0.5x on one sequence of 200,000 steps with
# 16 states, 0.6x on 300 sequences of 100 steps with 4 or 8 states, 0.85-1.0x on 1,000-3,000
# with 8 or 16, 1.1-1.8x on 1,000-10,000 short ones with 4.
_COMPILED_SEQUENCES_PER_STATE_SQ = 64


def _as_kernel_array(x: Tensor) -> np.ndarray:
    """A contiguous float64 NumPy array of a CPU tensor, as the compiled kernels read them."""
    return np.ascontiguousarray(x.detach().to(_F64).numpy())


def _chain_arrays(params: Mapping[str, Tensor]) -> tuple[np.ndarray, np.ndarray]:
    """The chain's ``initial`` and ``transition`` probabilities for the compiled kernels."""
    return _as_kernel_array(params["initial"]), _as_kernel_array(params["transition"])


def _cpu_scratch(name: str, shape: tuple[int, ...]) -> np.ndarray:
    """A kept float64 NumPy buffer (:func:`_scratch`) for the compiled kernels, whatever the
    default device."""
    if torch.get_default_device().type == "cpu":
        return _scratch(name, shape).numpy()
    return np.empty(shape)


__all__ = ["HiddenMarkovModel", "SequenceData"]

_F64 = torch.float64
_EMISSIONS = ("gaussian", "categorical", "poisson")
_COVARIANCE_TYPES = ("spherical", "diag", "full", "tied")
_INIT_STRATEGIES = ("kmeans", "random")
_ROW_SUM_ATOL = 1e-6
_DEFAULT_MAX_ITER = 1000
_DEFAULT_TOL = 1e-8  # nats per time step
_EMISSION_CHUNK = 8192  # rows of emission densities computed at a time
_EXPANDED_MIN = 20000  # steps x features x states from which the expanded Gaussian form pays
_KMEANS_MAX_POINTS = 20000  # k-means for starting means runs on a subsample of long series


# ------------------------------------------------------------------------- Pyro helpers
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
class HiddenMarkovModel(GenerativeModel):
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
        if isinstance(n_states, bool) or not isinstance(n_states, int | np.integer) or n_states < 1:
            raise ValueError(f"n_states must be a positive int; got {n_states!r}.")
        if emission not in _EMISSIONS:
            raise ValueError(f"emission must be one of {', '.join(map(repr, _EMISSIONS))}; got {emission!r}.")
        if covariance_type not in _COVARIANCE_TYPES:
            raise ValueError(
                f"covariance_type must be one of {', '.join(map(repr, _COVARIANCE_TYPES))}; got {covariance_type!r}."
            )
        if n_symbols is not None and (
            isinstance(n_symbols, bool) or not isinstance(n_symbols, int | np.integer) or n_symbols < 1
        ):
            raise ValueError(f"n_symbols must be a positive int or None; got {n_symbols!r}.")
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

    def __repr__(self) -> str:
        extra = f", covariance_type={self.covariance_type!r}" if self.emission == "gaussian" else ""
        return f"HiddenMarkovModel(n_states={self.n_states}, emission={self.emission!r}{extra})"

    @property
    def emission_sites(self) -> tuple[str, ...]:
        """Names of the emission parameter sites."""
        if self.emission == "categorical":
            return ("probs",)
        if self.emission == "poisson":
            return ("rates",)
        return ("locs", "scale_tril") if self.covariance_type in ("full", "tied") else ("locs", "scales")

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
        if self.emission != "gaussian":
            raise TypeError(
                f"covariances needs Gaussian emissions; this model has emission={self.emission!r}."
            )
        needed = self.emission_sites
        missing = [k for k in needed if k not in params]
        if missing:
            raise ValueError(f"params lacks site(s) {missing}; expected {list(needed)} (fit.params).")
        K, ct = self.n_states, self.covariance_type
        d = int(params["locs"].shape[-1])
        if ct in ("full", "tied"):
            tril = torch.as_tensor(params["scale_tril"], dtype=_F64)
            cov = tril @ tril.transpose(-1, -2)
            return cov.unsqueeze(-3).expand(cov.shape[:-2] + (K, d, d)).clone() if ct == "tied" else cov
        var = torch.as_tensor(params["scales"], dtype=_F64) ** 2
        if ct == "spherical":
            var = var[..., None].expand(var.shape + (d,))
        return torch.diag_embed(var)

    # ------------------------------------------------------------------------------ data
    def prepare_data(self, data: Any, argname: str = "data") -> SequenceData:
        """Validate sequences and pad them into a :class:`SequenceData`.

        Parameters
        ----------
        data : array-like, list of array-like, or SequenceData
            One sequence ``(T,)`` or ``(T, d)``, or a list of them (lengths may differ).

        Returns
        -------
        SequenceData

        Raises
        ------
        TypeError
            When ``data`` is not numeric array-like.
        ValueError
            Wrong dimension, empty sequences, NaN/inf, differing feature counts, symbols
            outside the alphabet, negative or non-integer counts.
        """
        if isinstance(data, SequenceData):
            self._check_values(data.values, data.lengths, argname)
            return data
        if data is None:
            raise ValueError(f"{argname} is None; expected a sequence (T,) or (T, d), or a list of them.")
        if isinstance(data, list | tuple) and len(data) == 0:
            raise ValueError(
                f"{argname} is an empty list; expected a sequence (T,) or (T, d), or a list of them."
            )
        if isinstance(data, list | tuple) and not _is_scalar(data[0]):
            seqs, single = list(data), False
        else:
            seqs, single = [data], True
        tensors = []
        for i, s in enumerate(seqs):
            name = argname if single else f"{argname}[{i}]"
            if hasattr(s, "to_numpy") and not isinstance(s, Tensor):  # pandas: may be read-only
                s = s.to_numpy()
            if isinstance(s, np.ndarray) and not s.flags.writeable:
                s = s.copy()
            try:
                t = as_tensor(s, name, dtype=_F64)
            except ValueError as err:
                if "empty" in str(err):
                    raise ValueError(
                        f"{name} is an empty sequence (length 0); every sequence needs at least one time step."
                    ) from None
                raise
            if t.dim() == 1:
                t = t[:, None]
            elif t.dim() != 2:
                raise ValueError(
                    f"{name} has shape {tuple(t.shape)}; expected one sequence of shape (T,) or (T, n_features), "
                    "or a list of such sequences."
                )
            if t.shape[0] == 0:
                raise ValueError(
                    f"{name} is an empty sequence (length 0); every sequence needs at least one time step."
                )
            tensors.append(t)
        if not tensors:
            raise ValueError(f"{argname} is an empty list; expected at least one sequence.")
        d = tensors[0].shape[1]
        for i, t in enumerate(tensors):
            if t.shape[1] != d:
                raise ValueError(
                    f"{argname}[{i}] has {t.shape[1]} features but {argname}[0] has {d}; "
                    "every sequence needs the same number of features."
                )
        if self.emission == "categorical" and d != 1:
            raise ValueError(
                f"{argname} has {d} columns; categorical emissions expect one symbol per step, shape (T,) or (T, 1)."
            )
        lengths = torch.tensor([t.shape[0] for t in tensors], dtype=torch.long)
        values = torch.nn.utils.rnn.pad_sequence(tensors, batch_first=True)
        values = _pad_time(values, _padded_length(values.shape[1]), 0.0)
        if self.emission == "categorical":
            self._check_symbols(values, argname)
            values = values[..., 0].long()
        elif self.emission == "poisson":
            bad = (values < 0) | (values != torch.round(values))
            if bool(bad.any()):
                raise ValueError(
                    f"{argname} has {int(bad.sum())} entries that are not non-negative integers "
                    f"(e.g. {values[bad][0].item()!r}); Poisson emissions expect counts."
                )
        return SequenceData(values, lengths, single)

    def _check_symbols(self, values: Tensor, argname: str) -> None:
        bad = (values < 0) | (values != torch.round(values))
        if bool(bad.any()):
            raise ValueError(
                f"{argname} holds {int(bad.sum())} values that are not symbols (non-negative integers), "
                f"e.g. {values[bad][0].item()!r}."
            )
        if self.n_symbols is not None and bool((values >= self.n_symbols).any()):
            raise ValueError(
                f"{argname} holds symbol {int(values.max())}, outside the alphabet 0..{self.n_symbols - 1} "
                f"(n_symbols={self.n_symbols})."
            )

    def _check_values(self, values: Tensor, lengths: Tensor, argname: str) -> None:
        if bool((lengths < 1).any()):
            raise ValueError(f"{argname} has an empty sequence; every sequence needs at least one time step.")

    def num_items(self, data: Any) -> int:
        """Number of sequences."""
        return len(self._prepared(data))

    def num_observations(self, data: Any) -> int:
        """Total number of time steps (the ``n`` of hmmlearn's BIC)."""
        return int(self._prepared(data).lengths.sum())

    def data_to_arrays(self, data: Any) -> dict[str, Tensor]:
        """Padded values and lengths (for saving a fit with its training sequences)."""
        d = self._prepared(data)
        return {"values": d.values, "lengths": d.lengths, "single": torch.tensor(int(d.single))}

    def data_from_arrays(self, arrays: Mapping[str, Tensor]) -> SequenceData | None:
        """The :class:`SequenceData` that :meth:`data_to_arrays` saved."""
        if "values" not in arrays:
            return None
        return SequenceData(arrays["values"], arrays["lengths"], bool(arrays["single"]))

    def observed_arrays(self, data: Any) -> dict[str, Tensor]:
        """Observed data for ArviZ: the padded values (padded steps hold zeros)."""
        return {"obs": self._prepared(data).values}

    def _prepared(self, data: Any) -> SequenceData:
        return data if isinstance(data, SequenceData) else self.prepare_data(data)

    # ------------------------------------------------------------------------ emissions
    def _check_params(self, data: SequenceData, params: Mapping[str, Tensor]) -> None:
        missing = [k for k in ("initial", "transition", *self.emission_sites) if k not in params]
        if missing:
            raise ValueError(
                f"params lacks site(s) {missing}; expected {['initial', 'transition', *self.emission_sites]}."
            )
        if self.emission == "categorical":
            M = params["probs"].shape[-1]
            top = int(data.values.max())
            if top >= M:
                raise ValueError(
                    f"data holds symbol {top}, outside the fitted alphabet 0..{M - 1} ({M} symbols)."
                )
        else:
            d = params["rates" if self.emission == "poisson" else "locs"].shape[-1]
            if data.n_features != d:
                raise ValueError(f"data has {data.n_features} features; the model was fitted with {d}.")

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

    def _expanded_features(self, data: SequenceData, lay: _Layout) -> tuple[Tensor, Tensor, float]:
        """Features of every step for the expanded Gaussian quadratic form, cached per data and blocking.

        ``[1, x - c, (x - c)_i (x - c)_j for i <= j]`` (full, tied) or ``[1, x - c, (x - c) ** 2]``
        (diag, spherical) about the data mean ``c``, in block layout ``(L, M, P)`` of ``lay``.
        Returns the features, ``c`` and the largest squared norm of a centred real step.
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
        pairs = self.covariance_type in ("full", "tied")
        key = f"features/{'pairs' if pairs else 'squares'}/{lay.L}/{lay.Tp}"
        if key not in data.cache:
            Xc = lay.to_blocks(_pad_time(data.values, lay.Tp, 0)) - center  # (L, M, d)
            if pairs:
                i, j = torch.triu_indices(Xc.shape[-1], Xc.shape[-1])
                second = Xc[..., i] * Xc[..., j]
            else:
                second = Xc * Xc
            data.cache[key] = torch.cat([torch.ones_like(Xc[..., :1]), Xc, second], -1)
        return data.cache[key], center, float(data.cache["features/max_sq"])

    def _expanded_weights(self, params: Mapping[str, Tensor], center: Tensor, max_sq: float) -> Tensor | None:
        """``(K, P)`` weights: features times weights are the Gaussian log-densities, or ``None``.

        ``-(x - mu)' P (x - mu) / 2 = -x'Px / 2 + (P mu)'x - mu'P mu / 2`` (``x``, ``mu`` centred),
        plus the normalising constant on the feature ``1``.  The expanded form rounds with an
        absolute error near ``eps |x|^2 |P|``; when that could reach 1e-9 (states far apart
        relative to their spread) this returns ``None`` and callers use the whitened residuals,
        exact to rounding of the result itself.
        """
        K = self.n_states
        locs = params["locs"].to(_F64) - center
        d = locs.shape[-1]
        if self.covariance_type in ("full", "tied"):
            Lc = params["scale_tril"].to(_F64).expand(K, d, d)
            inv = torch.linalg.solve_triangular(Lc, torch.eye(d, dtype=_F64).expand(K, d, d), upper=False)
            if max_sq * float((inv * inv).sum((1, 2)).max().detach()) >= 1e7:  # trace of P bounds eigenvalues
                return None
            prec = inv.transpose(1, 2) @ inv  # (K, d, d)
            i, j = torch.triu_indices(d, d)
            second = -0.5 * prec[:, i, j] * torch.where(i == j, 1.0, 2.0).to(_F64)  # x'Px counts i != j twice
            pm = torch.bmm(prec, locs[:, :, None]).view(K, d)
            logdet = torch.log(torch.diagonal(Lc, dim1=-2, dim2=-1)).sum(-1)
        else:
            scales = params["scales"].to(_F64)
            if self.covariance_type == "spherical":
                scales = scales[:, None].expand(K, d)
            prec_d = scales.pow(-2)  # (K, d)
            if max_sq * float(prec_d.sum(1).max().detach()) >= 1e7:
                return None
            second = -0.5 * prec_d
            pm = locs * prec_d
            logdet = torch.log(scales).sum(-1)
        const = -0.5 * (pm * locs).sum(1) - logdet - 0.5 * d * math.log(2 * math.pi)
        return torch.cat([const[:, None], pm, second], 1)

    def _log_emission(
        self,
        values: Tensor,
        params: Mapping[str, Tensor],
        *,
        data: SequenceData | None = None,
        block_length: int = 0,
    ) -> Tensor:
        """Emission log-densities ``(..., K)`` of observations ``(..., d)`` (categorical: ``(...)``).

        With ``data`` (whose blocked values, of ``block_length`` steps a block, are ``values``),
        Gaussian densities come from cached features of the steps (one small GEMM,
        :meth:`_log_emission_expanded`) when that is accurate.
        """
        K = self.n_states
        if self.emission == "categorical":
            return torch.log(params["probs"].to(_F64)).T.contiguous()[values]
        lead = values.shape[:-1]
        X = values.reshape(-1, values.shape[-1])
        if data is not None and self.emission == "gaussian" and X.numel() * K >= _EXPANDED_MIN:
            out = self._log_emission_expanded(data, params, block_length)
            if out is not None:
                return out.view(lead + (K,))
        if self.emission == "poisson":
            rates = params["rates"].to(_F64)
            out = X @ torch.log(rates).T - rates.sum(-1) - torch.lgamma(X + 1.0).sum(-1, keepdim=True)
            return out.view(lead + (K,))
        locs = params["locs"].to(_F64)
        d = locs.shape[-1]
        if self.covariance_type in ("full", "tied"):
            Lc = params["scale_tril"].to(_F64).expand(K, d, d)
            eye = torch.eye(d, dtype=_F64).expand(K, d, d)
            Linv_t = torch.linalg.solve_triangular(Lc, eye, upper=False).transpose(-1, -2)  # (K, d, d)
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
            logdet = torch.log(torch.diagonal(Lc, dim1=-2, dim2=-1)).sum(-1)
            out.mul_(-0.5).sub_(logdet + 0.5 * d * math.log(2 * math.pi))
        else:
            scales = params["scales"].to(_F64)
            if self.covariance_type == "spherical":
                scales = scales[:, None].expand(K, d)
            # residuals feature by feature (exact; the fast expanded form is _log_emission_expanded)
            inv = scales.reciprocal()  # (K, d)
            out = torch.zeros((X.shape[0], K), dtype=_F64)
            for j in range(d):
                out.add_(((X[:, j : j + 1] - locs[:, j]) * inv[:, j]).square_())
            out.mul_(-0.5).sub_(torch.log(scales).sum(-1) + 0.5 * d * math.log(2 * math.pi))
        return out.view(lead + (K,))

    def _log_emission_expanded(
        self, data: SequenceData, params: Mapping[str, Tensor], L: int
    ) -> Tensor | None:
        """Gaussian log-densities ``(n, K)`` of the blocked steps as one small GEMM, or ``None``.

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

    def _run_forward_backward(
        self, data: SequenceData, params: Mapping[str, Tensor], *, posteriors: bool
    ) -> tuple[_Layout, Tensor, Tensor, Tensor | None, Tensor | None]:
        self._check_params(data, params)
        lay, vals = self._blocked(data)
        initial, transition = params["initial"].to(_F64), params["transition"].to(_F64)
        scan = _scan_layout(lay, self.n_states) if self.emission == "categorical" and not posteriors else None
        if scan is not None:  # long series scored: emissions gathered straight into the scan's layout
            e = _scratch("fb_e", (scan.L, self.n_states, scan.M))
            self._table_emissions(data, params, scan, e)
            ll = _forward_backward(e, None, scan, initial, transition, posteriors=False, state_major=True)[0]
            return lay, vals, ll, None, None
        if self.emission == "categorical":  # probabilities already: no log/exp round trip
            e = params["probs"].to(_F64).T.contiguous()[vals]
            if lay.ragged:
                e[~lay.mask] = 1.0
            mx = None
        else:
            log_e = self._log_emission(vals, params, data=data, block_length=lay.L)
            ll, gamma, xi = _forward_backward_log(
                log_e, lay, params["initial"].to(_F64), params["transition"].to(_F64), posteriors=posteriors
            )
            return lay, vals, ll, gamma, xi
        ll, gamma, xi = _forward_backward(
            e, mx, lay, params["initial"].to(_F64), params["transition"].to(_F64), posteriors=posteriors
        )
        return lay, vals, ll, gamma, xi

    # -------------------------------------------------------------------------- EM hooks
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
            "init": "random" if self.emission == "categorical" else "kmeans",
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
        params: dict[str, Tensor] = {
            "initial": torch.full((K,), 1.0 / K, dtype=_F64),
            "transition": torch.full((K, K), 1.0 / K, dtype=_F64),
        }
        mask = data.mask
        if self.emission == "categorical":
            M = self.n_symbols or int(data.values.max()) + 1
            if "probs" not in given:
                p = torch.rand((K, M), generator=g, dtype=_F64)
                params["probs"] = p / p.sum(-1, keepdim=True)
        else:
            X = data.values[mask]  # (n_steps, d)
            if not ({"locs", "rates"} & set(given)):
                centers = (
                    _kmeans(X, min(K, X.shape[0]), g, max_points=_KMEANS_MAX_POINTS)[1]
                    if strategy == "kmeans"
                    else X[torch.randperm(X.shape[0], generator=g)[:K]]
                )
                if centers.shape[0] < K:
                    centers = centers[torch.arange(K) % centers.shape[0]]
                if self.emission == "poisson":
                    params["rates"] = centers.clamp_min(1e-3)
                else:
                    params["locs"] = centers
            if self.emission == "gaussian" and not ({"scale_tril", "scales", "covars"} & set(given)):
                d = X.shape[1]
                cv = torch.cov(X.T).reshape(d, d) if X.shape[0] > 1 else torch.zeros(d, d, dtype=_F64)
                cv = cv + self.min_covar * torch.eye(d, dtype=_F64)
                params.update(self._covariance_sites(cv.expand(K, d, d)))
        params.update(self._validate_init(given, data))
        return params

    def _covariance_sites(self, cov: Tensor) -> dict[str, Tensor]:
        """Sites for per-state covariance matrices ``(K, d, d)`` (or ``(d, d)`` for tied)."""
        if self.covariance_type == "full":
            return {"scale_tril": torch.linalg.cholesky(cov)}
        if self.covariance_type == "tied":
            return {"scale_tril": torch.linalg.cholesky(cov if cov.dim() == 2 else cov[0])}
        var = torch.diagonal(cov, dim1=-2, dim2=-1)
        if self.covariance_type == "diag":
            return {"scales": var.sqrt()}
        return {"scales": var.mean(-1).sqrt()}

    def _validate_init(self, given: Mapping[str, Any], data: SequenceData) -> dict[str, Tensor]:
        K = self.n_states
        allowed = {"initial", "transition", *self.emission_sites}
        if self.emission == "gaussian":
            allowed.add("covars")
        unknown = set(given) - allowed
        if unknown:
            raise ValueError(
                f"init has unknown site(s) {sorted(unknown)}; expected some of {sorted(allowed)}."
            )
        out: dict[str, Tensor] = {}
        d = data.n_features
        for name, value in given.items():
            v = as_tensor(value, f"init[{name!r}]", dtype=_F64)
            if name == "initial":
                _expect_shape(v, (K,), name)
                _expect_stochastic(v[None], name)
            elif name == "transition":
                _expect_shape(v, (K, K), name)
                _expect_stochastic(v, name)
            elif name == "probs":
                M = self.n_symbols or v.shape[-1]
                _expect_shape(v, (K, M), name)
                _expect_stochastic(v, name)
                if int(data.values.max()) >= M:
                    raise ValueError(
                        f"init['probs'] has {M} symbols but the data hold symbol {int(data.values.max())}."
                    )
            elif name in ("locs", "rates"):
                _expect_shape(v, (K, d), name)
                if name == "rates" and bool((v <= 0).any()):
                    raise ValueError(f"init['rates'] must be positive; got min {float(v.min())!r}.")
            elif name == "scales":
                _expect_shape(v, (K, d) if self.covariance_type == "diag" else (K,), name)
                if bool((v <= 0).any()):
                    raise ValueError(f"init['scales'] must be positive; got min {float(v.min())!r}.")
            elif name == "scale_tril":
                _expect_shape(v, (K, d, d) if self.covariance_type == "full" else (d, d), name)
                diag = torch.diagonal(v, dim1=-2, dim2=-1)
                if bool((diag <= 0).any()) or not torch.equal(v, torch.tril(v)):
                    raise ValueError("init['scale_tril'] must be lower triangular with a positive diagonal.")
            elif name == "covars":
                out.update(self._covars_from_hmmlearn(v, d))
                continue
            out[name] = v
        return out

    def _covars_from_hmmlearn(self, v: Tensor, d: int) -> dict[str, Tensor]:
        K, ct = self.n_states, self.covariance_type
        expected = {"full": (K, d, d), "tied": (d, d), "diag": (K, d), "spherical": (K,)}[ct]
        _expect_shape(v, expected, "covars")
        if ct in ("diag", "spherical"):
            if bool((v <= 0).any()):
                raise ValueError(
                    f"init['covars'] must be positive for covariance_type={ct!r}; got min {float(v.min())!r}."
                )
            return {"scales": v.sqrt()}
        chol, info = torch.linalg.cholesky_ex(v)
        if bool((info != 0).any()):
            raise ValueError(f"init['covars'] must be symmetric positive definite (shape {expected}).")
        return {"scale_tril": chol}

    def e_step(self, data: Any, params: Mapping[str, Tensor]) -> tuple[dict[str, Tensor], float]:
        """Expected sufficient statistics and total log-likelihood at ``params``."""
        data = self._prepared(data)
        small = self._e_step_compiled(data, params)
        if small is not None:
            return small
        state_major = self._e_step_state_major(data, params)
        if state_major is not None:
            return state_major
        lay, vals, ll, gamma, xi = self._run_forward_backward(data, params, posteriors=True)
        assert gamma is not None and xi is not None
        K = self.n_states
        G = gamma.reshape(-1, K)  # block layout throughout: the sums do not care
        stats: dict[str, Tensor] = {
            "start": gamma[0].view(lay.N, lay.Bs, K)[:, 0].sum(0),  # first block of every sequence
            "trans": xi,
            "post": G.sum(0),
            "prev_initial": params["initial"],
            "prev_transition": params["transition"],
        }
        if self.emission == "categorical":
            M = params["probs"].shape[-1]
            stats["counts"] = torch.zeros((M, K), dtype=_F64).index_add_(0, vals.reshape(-1), G).T
            stats["prev_probs"] = params["probs"]
        else:
            X = vals.reshape(-1, data.n_features)
            if self.emission == "gaussian" and self.covariance_type in ("full", "tied"):
                d = X.shape[1]
                i, j = torch.triu_indices(d, d)
                key = f"x_xx/{lay.L}"  # x and the products x_i x_j (i <= j) in block layout, once per data
                if key not in data.cache:
                    data.cache[key] = torch.cat([X, X[:, i] * X[:, j]], 1)
                both = G.T @ data.cache[key]  # first and second moments in one product
                stats["obs"] = both[:, :d]
            else:
                stats["obs"] = G.T @ X
            if self.emission == "gaussian":
                if self.covariance_type in ("full", "tied"):
                    upper = both[:, d:]  # (K, d (d + 1) / 2)
                    outer = torch.empty((K, d, d), dtype=_F64)
                    outer[:, i, j] = upper
                    outer[:, j, i] = upper
                    stats["obs_outer"] = outer
                else:
                    stats["obs_sq"] = G.T @ (X * X)
        return stats, float(ll.sum())

    def _e_step_compiled(
        self, data: SequenceData, params: Mapping[str, Tensor]
    ) -> tuple[dict[str, Tensor], float] | None:
        """The whole E-step of a small diagonal/spherical Gaussian HMM in one compiled call
        (:func:`probgen.models._hmm_kernels.gaussian_diag_e_step`), or ``None`` (other families,
        larger problems, or data on an accelerator).

        On a few hundred steps the separate emission, scaling, forward-backward and statistics
        operations cost several times the arithmetic; in one loop they cost the arithmetic.
        """
        if self.emission == "categorical":
            return self._e_step_compiled_categorical(data, params)
        if self.emission != "gaussian" or self.covariance_type not in ("diag", "spherical"):
            return None
        N, T, d = data.values.shape
        K = self.n_states
        if not _small_problem(N, T, K) or data.values.device.type != "cpu":
            return None
        from probgen.models._hmm_kernels import gaussian_diag_e_step

        self._check_params(data, params)
        scales = params["scales"].to(_F64)
        if self.covariance_type == "spherical":
            scales = scales[:, None].expand(K, d)
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
            "prev_initial": params["initial"],
            "prev_transition": params["transition"],
        }
        return stats, float(ll)

    def _e_step_compiled_categorical(
        self, data: SequenceData, params: Mapping[str, Tensor]
    ) -> tuple[dict[str, Tensor], float] | None:
        """The whole E-step of a categorical HMM in one compiled call
        (:func:`probgen.models._hmm_kernels.categorical_e_step`), or ``None`` (data on an
        accelerator, or many sequences, where the blocked engine vectorises across them).

        The kernel reads the emission probabilities from the table by symbol (no ``T K``
        emission array) and adds each sequence's marginals, kept in one sequence's scratch, to
        the symbol counts before the next sequence.
        """
        if not self._compiled_categorical(data):
            return None
        from probgen.models._hmm_kernels import categorical_e_step

        self._check_params(data, params)
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
            "prev_initial": params["initial"],
            "prev_transition": params["transition"],
        }
        return stats, float(ll)

    def _e_step_state_major(
        self, data: SequenceData, params: Mapping[str, Tensor]
    ) -> tuple[dict[str, Tensor], float] | None:
        """E-step on long series in the engine's state-major layout, or ``None`` (then the
        block-layout path runs: short series, Poisson emissions, or an expanded Gaussian form
        that would round, see :meth:`_expanded_weights`).

        The emissions are built directly as ``(L, K, blocks)`` slabs and the engine returns the
        state marginals alike, which saves two transposing copies of ``T K`` numbers.
        Categorical: one index into the emission table, kept per data, serves twice, a gather
        for the emission probabilities and a scatter-add of the marginals at the same positions
        for the expected symbol counts.  Gaussian: one batched product of the expansion weights
        with the cached step features gives the log-densities, and one of the marginals with the
        same features gives the state occupancies and the first and second moments.
        """
        if self.emission == "poisson":
            return None
        K = self.n_states
        scan = _scan_layout(self._blocked(data)[0], K)
        if scan is None:
            return None
        self._check_params(data, params)
        lay = scan
        L, Mb = lay.L, lay.M
        initial, transition = params["initial"].to(_F64), params["transition"].to(_F64)
        # emissions go into the engine's own buffer: a fresh 8 T K bytes would fault a page per 4 kB
        e = _scratch("fb_e", (L, K, Mb))
        stats: dict[str, Tensor] = {
            "prev_initial": params["initial"],
            "prev_transition": params["transition"],
        }
        if self.emission == "categorical":
            M = params["probs"].shape[-1]
            index = self._table_emissions(data, params, lay, e)
            ll, gamma, xi = _forward_backward(e, None, lay, initial, transition, state_major=True)
            assert gamma is not None and xi is not None
            counts = torch.zeros(K * (M + 1), dtype=_F64).index_add_(0, index, gamma.view(-1)).view(K, M + 1)
            stats.update(post=counts.sum(1), counts=counts[:, :M], prev_probs=params["probs"])
        else:
            feats, center, max_sq = self._expanded_features(data, lay)  # (L, Mb, P)
            weights = self._expanded_weights(params, center, max_sq)  # (K, P)
            if weights is None:
                return None
            torch.bmm(weights.expand(L, -1, -1), feats.transpose(1, 2), out=e)  # log-densities
            if lay.ragged:
                e.masked_fill_(~lay.mask[:, None, :], 0.0)
            mx = e.amax(1)
            e.sub_(mx[:, None, :]).exp_()
            ll, gamma, xi = _forward_backward(e, mx, lay, initial, transition, state_major=True)
            assert gamma is not None and xi is not None
            moments = torch.bmm(gamma, feats).sum(0)  # (K, P): occupancy, then centred moments
            self._raw_moments(moments, center, stats)
        stats["start"] = gamma[0].view(K, lay.N, lay.Bs)[:, :, 0].sum(1)  # first block of every sequence
        stats["trans"] = xi
        return stats, float(ll.sum())

    def _table_emissions(
        self, data: SequenceData, params: Mapping[str, Tensor], lay: _Layout, out: Tensor
    ) -> Tensor:
        """Categorical emission probabilities of every step written state-major into ``out``
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

    def _raw_moments(self, moments: Tensor, center: Tensor, stats: dict[str, Tensor]) -> None:
        """The M-step's statistics about the origin from moments ``[n_k, sum g (x - c), second]``
        about ``c`` (:meth:`_expanded_features`), written into ``stats``."""
        K, d = moments.shape[0], center.shape[0]
        post, first = moments[:, 0], moments[:, 1 : d + 1]
        stats["post"] = post
        stats["obs"] = first + post[:, None] * center
        if self.covariance_type in ("full", "tied"):
            i, j = torch.triu_indices(d, d)
            outer = torch.empty((K, d, d), dtype=_F64)
            outer[:, i, j] = moments[:, d + 1 :]
            outer[:, j, i] = moments[:, d + 1 :]
            cross = first[:, :, None] * center[None, None, :]
            stats["obs_outer"] = (
                outer + cross + cross.transpose(1, 2) + post[:, None, None] * torch.outer(center, center)
            )
        else:
            stats["obs_sq"] = moments[:, d + 1 :] + 2.0 * first * center + post[:, None] * center * center

    def m_step(self, data: Any, stats: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Closed-form maximiser (hmmlearn's update, with its ``covars_prior``)."""
        # the expected counts are products with the previous probabilities, so a zero start or
        # transition probability has an exactly zero count and stays zero
        params = {
            "initial": _normalise(stats["start"], stats["prev_initial"]),
            "transition": _normalise(stats["trans"], stats["prev_transition"]),
        }
        post = stats["post"]
        if self.emission == "categorical":
            params["probs"] = _normalise(stats["counts"].clamp_min(0), stats["prev_probs"])
            return params
        if self.emission == "poisson":
            params["rates"] = stats["obs"] / post[:, None]
            return params
        means = stats["obs"] / post[:, None]
        params["locs"] = means
        prior = self.covars_prior
        if self.covariance_type in ("full", "tied"):
            om = stats["obs"][:, :, None] * means[:, None, :]
            c_n = (
                stats["obs_outer"]
                - om
                - om.transpose(-1, -2)
                + means[:, :, None] * means[:, None, :] * post[:, None, None]
            )
            if self.covariance_type == "full":
                cov = (prior + c_n) / post[:, None, None]
            else:
                cov = (prior + c_n.sum(0)) / post.sum()
            params["scale_tril"] = torch.linalg.cholesky(cov)
        else:
            # sum_t g_t (x_t - m)^2 = obs_sq - 2 m obs + m^2 post = obs_sq - m obs (m = obs / post)
            var = (stats["obs_sq"] - means * stats["obs"] + prior) / post[:, None].clamp_min(1e-5)
            params["scales"] = (var.mean(-1) if self.covariance_type == "spherical" else var).sqrt()
        return params

    # ---------------------------------------------------------------------- fit tools
    def log_prob_items(self, data: Any, params: Mapping[str, Tensor]) -> Tensor:
        """``(n_sequences,)`` log-likelihood of every sequence, states summed out."""
        data = self._prepared(data)
        if self._compiled_categorical(data):
            return self._categorical_forward_backward(data, params, posteriors=False)[0]
        return self._run_forward_backward(data, params, posteriors=False)[2]

    def latent_posterior(self, data: Any, params: Mapping[str, Tensor]) -> dict[str, Any]:
        """``{"states": [ (T_i, n_states) marginals per sequence ]}`` (one tensor if one sequence)."""
        data = self._prepared(data)
        if self._compiled_categorical(data):
            gamma = self._categorical_forward_backward(data, params, posteriors=True)[1]
        else:
            lay, _, _, blocked, _ = self._run_forward_backward(data, params, posteriors=True)
            assert blocked is not None
            gamma = lay.from_blocks(blocked)
        out = [gamma[i, :n] for i, n in enumerate(data.lengths.tolist())]
        return {"states": out[0] if data.single else out}

    def _compiled_categorical(self, data: SequenceData) -> bool:
        """Whether the compiled categorical kernels serve ``data``: CPU, and at most
        :data:`_COMPILED_SEQUENCES_PER_STATE_SQ` sequences per squared state count."""
        return (
            self.emission == "categorical"
            and data.values.device.type == "cpu"
            and data.lengths.numel() <= _COMPILED_SEQUENCES_PER_STATE_SQ * self.n_states**2
        )

    def _categorical_forward_backward(
        self, data: SequenceData, params: Mapping[str, Tensor], *, posteriors: bool
    ) -> tuple[Tensor, Tensor]:
        """Per-sequence log-likelihoods and (with ``posteriors``, else an empty tensor) the state
        marginals ``(N, T, K)``, by :func:`probgen.models._hmm_kernels.categorical_forward_backward`:
        emissions read from the table by symbol, nothing of size ``T K`` built to score."""
        from probgen.models._hmm_kernels import categorical_forward_backward

        self._check_params(data, params)
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

    def _viterbi_compiled(
        self, data: SequenceData, params: Mapping[str, Tensor]
    ) -> tuple[list[Tensor], Tensor]:
        """:meth:`viterbi` by the compiled kernels of :mod:`probgen.models._hmm_kernels` (CPU).

        The max-product recursion keeps every step's scores and no backpointers (the backtrace
        recomputes its one argmax a step); PyTorch has no fused max-plus step, and its blocked
        scan (the path for accelerators) pays a ``(K, K, blocks)`` temporary per step.
        """
        from probgen.models._hmm_kernels import viterbi_dense, viterbi_table

        N, T = data.values.shape[:2]
        lengths_list = data.lengths.tolist()
        paths = np.empty(sum(lengths_list), dtype=np.int64)
        scores = np.empty(N)
        K = self.n_states
        log_pi = torch.log(params["initial"].to(_F64)).clamp_min(_LOG_FLOOR).numpy()
        log_A = torch.log(params["transition"].to(_F64)).clamp_min(_LOG_FLOOR).contiguous().numpy()
        lengths = data.lengths.numpy()
        if self.emission == "categorical":
            table = torch.log(params["probs"].to(_F64)).clamp_min(_LOG_FLOOR).contiguous().numpy()
            delta = _cpu_scratch("vit_delta", (T, K))  # kept: no fresh pages per call
            viterbi_table(
                data.values.contiguous().numpy(), lengths, table, log_pi, log_A, delta, paths, scores
            )
        else:
            log_e = self._log_emission(data.values, params).clamp_min(_LOG_FLOOR).contiguous()
            viterbi_dense(log_e.numpy(), lengths, log_pi, log_A, paths, scores)  # overwrites log_e
        return list(torch.from_numpy(paths).split(lengths_list)), torch.from_numpy(scores)

    def viterbi(self, data: Any, params: Mapping[str, Tensor]) -> tuple[list[Tensor], Tensor]:
        """Viterbi paths and their joint log-probabilities ``log p(x, z*)`` per sequence."""
        data = self._prepared(data)
        self._check_params(data, params)
        if data.values.device.type == "cpu":
            return self._viterbi_compiled(data, params)
        # Viterbi's own blocking (not forward-backward's), whole blocks straight from the data
        L = _viterbi_block_length(data.values.shape[1], float(data.lengths.sum()) * self.n_states**2)
        Tp = _padded_length(data.values.shape[1], L)
        lay = _layout(data.lengths, Tp, L)
        vals = lay.to_blocks(_pad_time(data.values, Tp, 0))
        K = self.n_states
        if self.emission == "categorical":
            em = _ViterbiEmission.from_table(torch.log(params["probs"].to(_F64)), vals, lay)
        elif self.emission == "gaussian" and self.covariance_type in ("full", "tied"):
            # state-major whitened residuals, as _log_emission computes them row-major
            locs = params["locs"].to(_F64)
            d = locs.shape[-1]
            Lc = params["scale_tril"].to(_F64).expand(K, d, d)
            W = torch.linalg.solve_triangular(Lc, torch.eye(d, dtype=_F64).expand(K, d, d), upper=False)
            logdet = torch.log(torch.diagonal(Lc, dim1=-2, dim2=-1)).sum(-1)
            const = logdet + 0.5 * d * math.log(2 * math.pi)
            em = _ViterbiEmission.from_whitened(vals, W, -(W @ locs[:, :, None])[..., 0], const, lay)
        else:
            em = _ViterbiEmission.from_array(self._log_emission(vals, params).transpose(1, 2), lay)
        paths, scores = _viterbi(
            em,
            lay,
            torch.log(params["initial"].to(_F64)),
            torch.log(params["transition"].to(_F64)),
            block_length=L,
        )
        return [paths[i, : int(n)] for i, n in enumerate(data.lengths)], scores

    def latent_map(self, data: Any, params: Mapping[str, Tensor]) -> dict[str, Any]:
        """``{"states": [Viterbi path per sequence]}`` (the path itself if one sequence)."""
        data = self._prepared(data)
        paths, _ = self.viterbi(data, params)
        return {"states": paths[0] if data.single else paths}

    def plot_fit(
        self,
        data: Any,
        params: Mapping[str, Tensor],
        *,
        ax: Any = None,
        sequence: int = 0,
        feature: int = 0,
        posteriors: bool = True,
        **kwargs: Any,
    ) -> Any:
        """Picture of the fit: one sequence over its Viterbi states, and their probabilities.

        The series (feature ``feature`` of sequence ``sequence``) is drawn over strips coloured
        by its Viterbi state (:meth:`latent_map`); below it, a panel appended to the same figure
        stacks the posterior probability of every state at every step (:meth:`latent_posterior`).

        Parameters
        ----------
        data : sequence or list of sequences
            As for fitting (``fit.plot()`` passes the training data).
        params : dict of str to Tensor
            Parameters to draw (``fit.params``).
        ax : matplotlib.axes.Axes, optional
            Axes for the series; a new figure when None.  The probability panel is carved out
            of the bottom of ``ax`` (``ax.figure.axes[-1]``).
        sequence : int, default 0
            Which sequence of a list to draw.
        feature : int, default 0
            Which feature to draw (Gaussian and Poisson emissions with several features).
        posteriors : bool, default True
            Add the panel of posterior state probabilities.

        Returns
        -------
        matplotlib.axes.Axes
            The axes of the series.

        Raises
        ------
        TypeError
            Unknown options, ``ax`` not matplotlib axes, ``sequence``/``feature`` not ints.
        ValueError
            ``sequence`` or ``feature`` out of range.
        """
        from probgen.models.plotting import _axes, _colors, _index, _no_options

        _no_options(kwargs, "HiddenMarkovModel.plot_fit", ("ax=", "sequence=", "feature=", "posteriors="))
        if not isinstance(posteriors, bool):
            raise TypeError(f"posteriors must be a bool; got {type(posteriors).__name__}.")
        data = self._prepared(data)
        n = _index(sequence, "sequence", len(data), "sequences")
        f = _index(feature, "feature", data.n_features, "features")
        T = int(data.lengths[n])
        one = SequenceData(data.values[n : n + 1, :T], data.lengths[n : n + 1], single=True)
        path = self.latent_map(one, params)["states"].numpy()
        ax = _axes(ax, figsize=(10.0, 4.5))
        from matplotlib.collections import PolyCollection
        from matplotlib.patches import Patch

        K = self.n_states
        colors = _colors(K)
        t = np.arange(T)
        # one rectangle per run of equal states, spanning the axes' height (x: data, y: axes)
        starts = np.flatnonzero(np.r_[True, path[1:] != path[:-1]])
        ends = np.r_[starts[1:], T]
        x0, x1 = starts - 0.5, ends - 0.5
        verts = np.stack(
            [
                np.c_[x0, np.zeros_like(x0)],
                np.c_[x0, np.ones_like(x0)],
                np.c_[x1, np.ones_like(x1)],
                np.c_[x1, np.zeros_like(x1)],
            ],
            1,
        )
        strips = PolyCollection(
            list(verts),
            facecolors=colors[path[starts]],
            alpha=0.3,
            edgecolors="none",
            transform=ax.get_xaxis_transform(),
            zorder=0,
        )
        ax.add_collection(strips, autolim=False)
        y = one.values[0].numpy()
        y = y if y.ndim == 1 else y[:, f]
        ax.plot(t, y, color="k", linewidth=0.8, marker="." if T <= 500 else None, markersize=3)
        ax.set_xlim(-0.5, T - 0.5)
        what = (
            "symbol"
            if self.emission == "categorical"
            else ("count" if self.emission == "poisson" else "value")
        )
        name = f"sequence {n}, " if len(data) > 1 else ""
        ax.set(
            ylabel=what if data.n_features == 1 else f"feature {f}",
            title=f"{name}Viterbi states of a {K}-state HMM",
        )
        ax.legend(
            handles=[Patch(color=colors[k], alpha=0.5, label=f"state {k}") for k in range(K)],
            fontsize=8,
            loc="upper right",
            ncols=min(K, 5),
        )
        if posteriors:
            from mpl_toolkits.axes_grid1 import make_axes_locatable

            gamma = self.latent_posterior(one, params)["states"].numpy()
            panel = make_axes_locatable(ax).append_axes("bottom", size="45%", pad=0.15, sharex=ax)
            panel.stackplot(t, gamma.T, colors=colors, alpha=0.8, step="mid")
            panel.set(ylim=(0.0, 1.0), ylabel="p(state | data)", xlabel="step")
            ax.tick_params(labelbottom=False)
        else:
            ax.set_xlabel("step")
        return ax

    def num_parameters(self, params: Mapping[str, Tensor], data: Any) -> int:
        """Free parameters, counted as hmmlearn's ``_get_n_fit_scalars_per_param``."""
        K = self.n_states
        k = (K - 1) + K * (K - 1)
        if self.emission == "categorical":
            return k + K * (params["probs"].shape[-1] - 1)
        if self.emission == "poisson":
            return k + K * params["rates"].shape[-1]
        d = params["locs"].shape[-1]
        cov = {"spherical": K, "diag": K * d, "full": K * d * (d + 1) // 2, "tied": d * (d + 1) // 2}
        return k + K * d + cov[self.covariance_type]

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
        if isinstance(length, bool) or not isinstance(length, int | np.integer) or length < 1:
            raise ValueError(f"length must be a positive int; got {length!r}.")
        g = generator if generator is not None else torch.Generator().manual_seed(0)
        init = params["initial"].to(_F64)
        cum = torch.cumsum(params["transition"].to(_F64), -1)
        z = torch.multinomial(init.expand(n, -1), 1, generator=g)[:, 0]
        u = torch.rand((n, int(length)), generator=g, dtype=_F64)
        states = torch.empty((n, int(length)), dtype=torch.long)
        states[:, 0] = z
        K = self.n_states
        for t in range(1, int(length)):
            z = torch.searchsorted(cum[z], u[:, t : t + 1].contiguous())[:, 0].clamp_max(K - 1)
            states[:, t] = z
        flat = states.reshape(-1)
        if self.emission == "categorical":
            y = torch.multinomial(params["probs"].to(_F64)[flat], 1, generator=g)[:, 0].reshape(n, -1)
        elif self.emission == "poisson":
            y = torch.poisson(params["rates"].to(_F64)[flat], generator=g).reshape(n, int(length), -1)
        else:
            locs = params["locs"].to(_F64)
            d = locs.shape[-1]
            eps = torch.randn((flat.shape[0], d), generator=g, dtype=_F64)
            if self.covariance_type == "full":
                noise = (params["scale_tril"].to(_F64)[flat] @ eps[:, :, None])[..., 0]
            elif self.covariance_type == "tied":
                noise = eps @ params["scale_tril"].to(_F64).T
            elif self.covariance_type == "diag":
                noise = eps * params["scales"].to(_F64)[flat]
            else:
                noise = eps * params["scales"].to(_F64)[flat][:, None]
            y = (locs[flat] + noise).reshape(n, int(length), d)
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
        if self.emission == "categorical":
            p = flat["probs"]
            key = (p * torch.arange(p.shape[-1], dtype=p.dtype)).sum(-1)
        else:
            key = flat["rates" if self.emission == "poisson" else "locs"][..., 0]
        perm = torch.argsort(key, -1)  # (S, K)
        S = perm.shape[0]
        ar = torch.arange(S)[:, None]
        out = dict(flat)
        out["initial"] = flat["initial"][ar, perm]
        out["transition"] = flat["transition"][ar[:, :, None], perm[:, :, None], perm[:, None, :]]
        for name in self.emission_sites:
            v = flat[name]
            if name == "scale_tril" and self.covariance_type == "tied":
                continue
            out[name] = v[ar, perm]
        return {k: v.reshape(tuple(lead) + tuple(v.shape[1:])) for k, v in out.items()}

    # ----------------------------------------------------------------------- Pyro pair
    def _hyper(self, data: SequenceData | None) -> dict[str, Tensor]:
        if data is None or self.emission == "categorical":
            d = 1 if data is None else data.n_features
            return {"center": torch.zeros(d, dtype=_F64), "spread": torch.ones(d, dtype=_F64)}
        X = data.values[data.mask]
        center = X.mean(0)
        spread = X.std(0) if X.shape[0] > 1 else torch.ones_like(center)
        spread = torch.where(spread > 0, spread, 1e-3 * (1.0 + center.abs()))
        return {"center": center, "spread": spread}

    def _emission_priors(self, hyper: Mapping[str, Tensor], n_symbols: int) -> dict[str, Any]:
        K = self.n_states
        center, spread = hyper["center"], hyper["spread"]
        d = center.shape[0]
        if self.emission == "categorical":
            conc = torch.full((K, n_symbols), self.prior_concentration, dtype=_F64)
            return {"probs": dist.Dirichlet(conc).to_event(1)}
        if self.emission == "poisson":
            mean = center.clamp_min(1e-3).expand(K, d)
            return {"rates": dist.Gamma(torch.full_like(mean, 2.0), 2.0 / mean).to_event(2)}
        priors: dict[str, Any] = {
            "locs": dist.Normal(center.expand(K, d), 10.0 * spread.expand(K, d)).to_event(2)
        }
        if self.covariance_type == "full":
            priors["scale_tril"] = _CholeskyPrior(spread).expand((K,)).to_event(1)
        elif self.covariance_type == "tied":
            priors["scale_tril"] = _CholeskyPrior(spread)
        elif self.covariance_type == "diag":
            priors["scales"] = dist.LogNormal(torch.log(spread).expand(K, d), 1.0).to_event(2)
        else:
            priors["scales"] = dist.LogNormal(torch.log(spread).mean().expand(K), 1.0).to_event(1)
        return priors

    def _emission_dist(self, em: Mapping[str, Tensor]) -> Any:
        """Observation distribution with batch shape ``(K,)``."""
        if self.emission == "categorical":
            return dist.Categorical(probs=em["probs"])
        if self.emission == "poisson":
            return dist.Poisson(em["rates"]).to_event(1)
        locs = em["locs"]
        K, d = locs.shape
        if self.covariance_type in ("full", "tied"):
            return dist.MultivariateNormal(locs, scale_tril=em["scale_tril"].expand(K, d, d))
        scales = em["scales"] if self.covariance_type == "diag" else em["scales"][:, None].expand(K, d)
        return dist.Normal(locs, scales).to_event(1)

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
        if self.emission == "categorical":
            M = self.n_symbols or (int(data.values.max()) + 1 if data is not None else 2)
        else:
            M = 0
        em = {
            name: pyro.sample(name, prior)
            for name, prior in self._emission_priors(self._hyper(data), M).items()
        }
        obs_dist = self._emission_dist(em)
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
                if self.emission == "categorical":
                    fn = dist.Categorical(probs=em["probs"][z])
                elif self.emission == "poisson":
                    fn = dist.Poisson(em["rates"][z]).to_event(1)
                else:
                    sub = {
                        k: (v[z] if not (k == "scale_tril" and self.covariance_type == "tied") else v)
                        for k, v in em.items()
                    }
                    if self.covariance_type in ("full", "tied"):
                        fn = dist.MultivariateNormal(sub["locs"], scale_tril=sub["scale_tril"])
                    else:
                        sc = (
                            sub["scales"]
                            if self.covariance_type == "diag"
                            else sub["scales"][:, None].expand_as(sub["locs"])
                        )
                        fn = dist.Normal(sub["locs"], sc).to_event(1)
                ys.append(pyro.sample(f"obs_{t}", fn))
        return torch.stack(ys, 1)


# ----------------------------------------------------------------------------- helpers
def _is_scalar(x: Any) -> bool:
    if isinstance(x, Tensor | np.ndarray):
        return x.ndim == 0
    return isinstance(x, int | float | np.number)


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


def _normalise(x: Tensor, fallback: Tensor) -> Tensor:
    """Rows of ``x`` divided by their sums; rows summing to zero (never visited) keep ``fallback``."""
    s = x.sum(-1, keepdim=True)
    if bool((s > 0).all()):  # the usual case, in two operations
        return x / s
    return torch.where(s > 0, x / torch.where(s > 0, s, torch.ones_like(s)), fallback.to(x.dtype))
