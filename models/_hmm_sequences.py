"""Hidden-state models of variable-length sequences: the data boundary and the picture of a fit.

:class:`_SequenceModel` is the base of :class:`probgen.models.HiddenMarkovModel`: it validates one
sequence or a list of sequences of different lengths and pads them into a :class:`SequenceData`
(the emission strategy checks and converts the values it observes), counts items and steps,
saves and restores the data, and draws one sequence over its most probable states.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import Tensor

from probgen.model import GenerativeModel, as_tensor
from probgen.models._hmm_emissions import _Emission
from probgen.models._hmm_layout import SequenceData, _pad_time, _padded_length
from probgen.models.plotting import _axes, _colors, _index, _no_options

__all__: list[str] = []

_F64 = torch.float64


class _SequenceModel(GenerativeModel):
    """A model of one or several variable-length sequences with one of ``n_states`` hidden states
    per step, whose observations the emission strategy ``_emissions`` describes (both set by the
    subclass's constructor)."""

    n_states: int
    _emissions: _Emission

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
            if bool((data.lengths < 1).any()):
                raise ValueError(
                    f"{argname} has an empty sequence; every sequence needs at least one time step."
                )
            return data
        tensors, single = _sequence_tensors(data, argname)
        lengths = torch.tensor([t.shape[0] for t in tensors], dtype=torch.long)
        values = torch.nn.utils.rnn.pad_sequence(tensors, batch_first=True)
        values = _pad_time(values, _padded_length(values.shape[1]), 0.0)
        return SequenceData(self._emissions.prepare_values(values, argname), lengths, single)

    def prepare_missing(self, data: Any, argname: str = "data") -> SequenceData:
        """As :meth:`prepare_data`, with NaN read as a missing cell (the capability
        :class:`probgen.capabilities.MissingValues`, used by ``missing="marginalize"``).

        A step may be missing whole (it then emits with probability one in every state) or, for
        Gaussian and Poisson emissions of several features, in part.  The observed cells are
        checked as :meth:`prepare_data` checks them; the missing ones hold a placeholder in
        :attr:`SequenceData.values` and are marked in :attr:`SequenceData.observed`.

        Parameters
        ----------
        data : array-like, list of array-like, or SequenceData
            One sequence ``(T,)`` or ``(T, d)``, or a list of them, NaN where a cell is missing.

        Returns
        -------
        SequenceData
            With ``observed`` set when some cell is missing (``None`` otherwise).

        Raises
        ------
        ValueError
            As :meth:`prepare_data` (infinite values among them), or a feature never observed.

        Examples
        --------
        >>> from probgen.models import HiddenMarkovModel
        >>> d = HiddenMarkovModel(2).prepare_missing([1.0, float("nan"), 3.0])
        >>> d.observed[0, :3, 0].tolist()
        [True, False, True]
        """
        if isinstance(data, SequenceData):
            return self.prepare_data(data, argname)
        tensors, single = _sequence_tensors(data, argname, missing=True)
        lengths = torch.tensor([t.shape[0] for t in tensors], dtype=torch.long)
        values = torch.nn.utils.rnn.pad_sequence(tensors, batch_first=True)
        values = _pad_time(values, _padded_length(values.shape[1]), 0.0)
        seen = ~torch.isnan(values)
        if bool(seen.all()):
            return SequenceData(self._emissions.prepare_values(values, argname), lengths, single)
        real = torch.arange(values.shape[1])[None, :] < lengths[:, None]
        observed = seen & real[:, :, None]
        never = ~(observed.any((0, 1)))
        if bool(never.any()):
            raise ValueError(
                f"{argname} has no observed value of feature(s) {never.nonzero()[:, 0].tolist()}; "
                "every feature needs an observed value somewhere."
            )
        # placeholder: each feature's first observed value, so the emissions' range checks see real values
        d = values.shape[-1]
        first = observed.reshape(-1, d).to(torch.int8).argmax(0)
        cols = values.reshape(-1, d)[first, torch.arange(d)]
        filled = torch.where(seen, values, cols)
        prepared = self._emissions.prepare_values(filled, argname)
        if prepared.dim() == 2:  # categorical: one symbol a step
            observed = observed[..., 0]
        return SequenceData(prepared, lengths, single, observed)

    def num_items(self, data: Any) -> int:
        """Number of sequences."""
        return len(self._prepared(data))

    def num_observations(self, data: Any) -> int:
        """Total number of time steps (the ``n`` of hmmlearn's BIC)."""
        return int(self._prepared(data).lengths.sum())

    def data_to_arrays(self, data: Any) -> dict[str, Tensor]:
        """Padded values and lengths (for saving a fit with its training sequences)."""
        d = self._prepared(data)
        arrays = {"values": d.values, "lengths": d.lengths, "single": torch.tensor(int(d.single))}
        if d.observed is not None:
            arrays["observed"] = d.observed
        return arrays

    def data_from_arrays(self, arrays: Mapping[str, Tensor]) -> SequenceData | None:
        """The :class:`SequenceData` that :meth:`data_to_arrays` saved."""
        if "values" not in arrays:
            return None
        observed = arrays.get("observed")
        return SequenceData(
            arrays["values"],
            arrays["lengths"],
            bool(arrays["single"]),
            None if observed is None else observed.bool(),
        )

    def observed_arrays(self, data: Any) -> dict[str, Tensor]:
        """Observed data for ArviZ: the padded values (padded steps hold zeros)."""
        return {"obs": self._prepared(data).values}

    def _prepared(self, data: Any) -> SequenceData:
        return data if isinstance(data, SequenceData) else self.prepare_data(data)

    def _check_params(self, data: SequenceData, params: Mapping[str, Tensor]) -> None:
        expected = ["initial", "transition", *self._emissions.sites]
        missing = [k for k in expected if k not in params]
        if missing:
            raise ValueError(f"params lacks site(s) {missing}; expected {expected}.")
        self._emissions.check_params(data, params)

    # --------------------------------------------------------------------------- picture
    def plot_fit(
        self,
        data: Any,
        params: Mapping[str, Tensor],
        *,
        ax: Any = None,
        sequence: int = 0,
        feature: int = 0,
        posteriors: bool = True,
        window: tuple[int, int] | None = None,
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
        window : tuple of two int, optional
            Steps ``start, stop`` to draw (as a slice; default: all).  The states are decoded
            on the whole sequence; a window of a hundred or so steps keeps runs visible.

        Returns
        -------
        matplotlib.axes.Axes
            The axes of the series.

        Raises
        ------
        TypeError
            Unknown options, ``ax`` not matplotlib axes, ``sequence``/``feature`` not ints,
            ``window`` not a pair of ints.
        ValueError
            ``sequence`` or ``feature`` out of range, an empty ``window``.
        """
        from matplotlib.patches import Patch

        _no_options(
            kwargs, "HiddenMarkovModel.plot_fit", ("ax=", "sequence=", "feature=", "posteriors=", "window=")
        )
        if not isinstance(posteriors, bool):
            raise TypeError(f"posteriors must be a bool; got {type(posteriors).__name__}.")
        data = self._prepared(data)
        n = _index(sequence, "sequence", len(data), "sequences")
        f = _index(feature, "feature", data.n_features, "features")
        T = int(data.lengths[n])
        seen = None if data.observed is None else data.observed[n : n + 1, :T]
        one = SequenceData(data.values[n : n + 1, :T], data.lengths[n : n + 1], True, seen)
        lo, hi = _window(window, T)
        path = self.latent_map(one, params)["states"].numpy()[lo:hi]
        ax = _axes(ax, figsize=(10.0, 4.5))
        K = self.n_states
        colors = _colors(K)
        y = one.values[0].numpy()[lo:hi]
        _draw_path(ax, path, y if y.ndim == 1 else y[:, f], colors, lo)
        name = f"sequence {n}, " if len(data) > 1 else ""
        what = self._emissions.value_label
        ax.set(
            ylabel=what if data.n_features == 1 else f"feature {f}",
            title=f"{name}Viterbi states of a {K}-state HMM",
        )
        ax.legend(  # outside the data, to the right
            handles=[Patch(color=colors[k], alpha=0.5, label=f"state {k}") for k in range(K)],
            fontsize=8,
            loc="upper left",
            bbox_to_anchor=(1.005, 1.0),
        )
        if posteriors:
            gamma = self.latent_posterior(one, params)["states"].numpy()[lo:hi]
            _draw_posteriors(ax, gamma, colors, lo)
        else:
            ax.set_xlabel("step")
        return ax


# ----------------------------------------------------------------------------- helpers
def _is_scalar(x: Any) -> bool:
    if isinstance(x, Tensor | np.ndarray):
        return x.ndim == 0
    return isinstance(x, int | float | np.number)


def _sequence_tensors(data: Any, argname: str, *, missing: bool = False) -> tuple[list[Tensor], bool]:
    """The sequences of ``data`` as ``(T_i, d)`` float64 tensors, and whether it held one sequence.

    Raises ``ValueError`` on ``None``, empty lists or sequences, NaN (kept with ``missing``;
    otherwise the message names ``missing="marginalize"``), inf, a wrong dimension or differing
    feature counts; ``TypeError`` on non-numeric data.
    """
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
            t = as_tensor(s, name, dtype=_F64, allow_nan=True)
        except ValueError as err:
            if "empty" in str(err):
                raise ValueError(
                    f"{name} is an empty sequence (length 0); every sequence needs at least one time step."
                ) from None
            raise
        if bool(torch.isinf(t).any()):
            raise ValueError(
                f"{name} has {int(torch.isinf(t).sum())} infinite values; drop or impute them before fitting."
            )
        if not missing and bool(torch.isnan(t).any()):
            raise ValueError(
                f"{name} has {int(torch.isnan(t).sum())} NaN values; drop or impute them before fitting, "
                "or pass missing='marginalize' to probgen.fit (method='em') to read NaN as missing at random."
            )
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
    return tensors, single


def _window(window: Any, T: int) -> tuple[int, int]:
    """Validate ``window=`` (a slice ``start, stop`` of ``T`` steps, negatives from the end)."""
    if window is None:
        return 0, T
    if (
        not isinstance(window, tuple | list)
        or len(window) != 2
        or any(isinstance(w, bool) or not isinstance(w, int | np.integer) for w in window)
    ):
        raise TypeError(f"window must be a pair of ints (start, stop); got {window!r}.")
    lo, hi, _ = slice(int(window[0]), int(window[1])).indices(T)
    if hi <= lo:
        raise ValueError(f"window={tuple(window)!r} holds no step of a sequence of {T} steps.")
    return lo, hi


def _draw_path(ax: Any, path: np.ndarray, y: np.ndarray, colors: np.ndarray, t0: int = 0) -> None:
    """The series ``y`` over strips coloured by the states ``path``, one strip per run of a state
    (steps numbered from ``t0``)."""
    from matplotlib.collections import PolyCollection

    T = len(path)
    # one rectangle per run of equal states, spanning the axes' height (x: data, y: axes)
    starts = np.flatnonzero(np.r_[True, path[1:] != path[:-1]])
    ends = np.r_[starts[1:], T]
    x0, x1 = starts - 0.5 + t0, ends - 0.5 + t0
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
    ax.plot(t0 + np.arange(T), y, color="k", linewidth=0.8, marker="." if T <= 500 else None, markersize=3)
    ax.set_xlim(t0 - 0.5, t0 + T - 0.5)


def _draw_posteriors(ax: Any, gamma: np.ndarray, colors: np.ndarray, t0: int = 0) -> None:
    """A panel carved out of the bottom of ``ax`` stacking the state probabilities ``gamma`` ``(T, K)``
    (steps numbered from ``t0``)."""
    from mpl_toolkits.axes_grid1 import make_axes_locatable

    panel = make_axes_locatable(ax).append_axes("bottom", size="45%", pad=0.15, sharex=ax)
    panel.stackplot(t0 + np.arange(len(gamma)), gamma.T, colors=colors, alpha=0.8, step="mid")
    panel.set(ylim=(0.0, 1.0), ylabel="p(state | data)", xlabel="step")
    ax.tick_params(labelbottom=False)
