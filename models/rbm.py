"""Restricted Boltzmann machines: the Bernoulli-Bernoulli ``RBM``, an energy-based model.

``p(v, h) = exp(v.b + h.c + h.W v) / Z`` over binary visible units ``v`` (``n_visible``) and hidden
units ``h`` (``n_hidden``).  Summing out ``h`` gives ``p(v) = exp(-F(v)) / Z`` with the free energy
``F(v) = -v.b - sum_j softplus(c_j + W_j v)``.  The normaliser ``Z`` is a sum over every state of
either layer, so the likelihood is known only up to a constant (``density = "unnormalised"``):
likelihood-based backends refuse the model and the contrastive-divergence backend ``"cd"`` fits
it through the hooks :meth:`RBM.free_energy`, :meth:`RBM.gibbs_step` and :meth:`RBM.init_params`.

Parameters (``fit.params``, also the Pyro ``pyro.param`` sites of :meth:`RBM.model`): ``"W"``
(``n_hidden x n_visible``), ``"visible_bias"`` (``n_visible``) and ``"hidden_bias"``
(``n_hidden``).  Training computes in float32; ``log Z`` is computed in float64.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any, ClassVar, NamedTuple, cast

import numpy as np
import pyro
import torch
import torch.nn.functional as F
from torch import Tensor

from probgen.fit import Fit
from probgen.model import GenerativeModel, as_tensor
from probgen.models._rbm_pcd import PCDUpdater
from probgen.models.plotting import _image_grid, _no_options, _panels, _positive, _square_side
from probgen.roles import slot
from probgen.validation import non_negative_int, positive_int

__all__ = ["LogPartition", "RBM"]

_DTYPE = torch.float32
_PARAMS = ("W", "visible_bias", "hidden_bias")
_PARTITIONS = ("auto", "exact", "ais")
#: Largest layer (in units) whose states are enumerated for an exact ``log Z``.
_MAX_EXACT_UNITS = 20
#: States summed at once by the exact ``log Z`` (bounds its memory).
_CHUNK_STATES = 1 << 14
#: Clipping of the data's pixel means before their logit (initial visible biases, AIS base rates).
_CLIP = 1e-3


class LogPartition(NamedTuple):
    """``log Z`` of a fitted RBM: the value, its standard error (0 when exact) and how it was found."""

    value: float
    stderr: float
    method: str


def _positive_int(name: str, v: Any) -> int:
    out: int = positive_int(v, name)
    return out


def _free_energy(v: Tensor, W: Tensor, b: Tensor, c: Tensor) -> Tensor:
    """``F(v) = -v.b - sum_j softplus(c_j + W_j v)`` per row of ``v`` (any float type)."""
    return -(v @ b) - F.softplus(F.linear(v, W, c)).sum(-1)


def _states(n: int, start: int, stop: int, dtype: torch.dtype) -> Tensor:
    """Binary states ``start..stop-1`` of ``n`` units, one per row (bit ``i`` of the index is unit ``i``)."""
    idx = torch.arange(start, stop, dtype=torch.long).unsqueeze(-1)
    return ((idx >> torch.arange(n, dtype=torch.long)) & 1).to(dtype)


def _exact_log_z(W: Tensor, b: Tensor, c: Tensor) -> float:
    """``log Z`` by summing over every state of the smaller layer, in float64, chunked."""
    W, b, c = W.double(), b.double(), c.double()
    n_h, n_v = W.shape
    if n_h <= n_v:  # sum over h: log Z = logsumexp_h [h.c + sum_i softplus(b_i + (W^T h)_i)]
        n, other = n_h, lambda s: s @ c + F.softplus(s @ W + b).sum(-1)
    else:  # sum over v: log Z = logsumexp_v [-F(v)]
        n, other = n_v, lambda s: -_free_energy(s, W, b, c)
    parts = [
        torch.logsumexp(other(_states(n, a, min(a + _CHUNK_STATES, 1 << n), torch.float64)), 0)
        for a in range(0, 1 << n, _CHUNK_STATES)
    ]
    return float(torch.logsumexp(torch.stack(parts), 0))


def _ais_log_z(
    W: Tensor, b: Tensor, c: Tensor, base: Tensor, runs: int, steps: int, seed: int
) -> tuple[float, float]:
    """Annealed importance sampling estimate of ``log Z`` and its standard error (float64).

    Salakhutdinov & Murray (2008): from the base-rate model ``p_0(v) ∝ exp(v.base)`` (no
    couplings; its hidden units, biases 0, contribute ``2^n_hidden``) to the RBM through
    ``log p*_k(v) = (1 - beta_k) v.base + beta_k v.b + sum_j softplus(beta_k (c_j + W_j v))``, with
    ``steps`` inverse temperatures evenly spaced in [0, 1] and one Gibbs sweep at each; ``runs``
    independent runs.  The standard error is the delta-method one of ``log mean(w)``.
    """
    gen = torch.Generator().manual_seed(int(seed))
    W, b, c, base = W.double(), b.double(), c.double(), base.double()
    n_h = W.shape[0]
    log_z0 = float(F.softplus(base).sum()) + n_h * math.log(2.0)
    betas = torch.linspace(0.0, 1.0, steps + 1, dtype=torch.float64)
    v = torch.bernoulli(torch.sigmoid(base).expand(runs, -1).contiguous(), generator=gen)
    log_w = torch.zeros(runs, dtype=torch.float64)

    def log_p(v: Tensor, beta: float, act: Tensor) -> Tensor:
        return (1.0 - beta) * (v @ base) + beta * (v @ b) + F.softplus(beta * act).sum(-1)

    for k in range(1, steps + 1):
        beta_prev, beta = float(betas[k - 1]), float(betas[k])
        act = v @ W.T + c
        log_w += log_p(v, beta, act) - log_p(v, beta_prev, act)
        h = torch.bernoulli(torch.sigmoid(beta * act), generator=gen)
        v = torch.bernoulli(torch.sigmoid((1.0 - beta) * base + beta * (b + h @ W)), generator=gen)
    log_mean = float(torch.logsumexp(log_w, 0)) - math.log(runs)
    w = torch.exp(log_w - log_w.max())
    stderr = float(w.std() / (w.mean() * math.sqrt(runs))) if runs > 1 else float("inf")
    return log_z0 + log_mean, stderr


@dataclasses.dataclass(frozen=True, eq=False, repr=False)
class RBMFit(Fit):
    """A fitted :class:`RBM`: free energies, the log partition function, hidden activations."""

    @property
    def rbm(self) -> RBM:
        """The fitted RBM."""
        return cast(RBM, self.model)

    def free_energy(self, x: Any = None) -> Tensor:
        """``F(x)`` per item at the fitted parameters (``x``: default the training data)."""
        v = self._data(x)
        with torch.no_grad():
            return self.rbm.free_energy(v, self.params)

    def log_partition(
        self,
        method: str = "auto",
        *,
        num_runs: int | None = None,
        num_steps: int | None = None,
        seed: int = 0,
    ) -> LogPartition:
        """``log Z`` at the fitted parameters: see :meth:`RBM.log_partition`."""
        return self.rbm.log_partition(self, method, num_runs=num_runs, num_steps=num_steps, seed=seed)

    def transform(self, x: Any = None) -> Tensor:
        """Hidden activation probabilities ``p(h_j = 1 | v)``, ``(n, n_hidden)``."""
        return self.rbm.transform(self, x)


class RBM(GenerativeModel):
    """Bernoulli-Bernoulli restricted Boltzmann machine, fitted by contrastive divergence.

    ``p(v) = exp(-F(v)) / Z`` with ``F(v) = -v.b - sum_j softplus(c_j + W_j v)`` over binary
    data ``v`` of ``n_visible`` columns.  Fitted by ``method="cd"`` (``pg.fit(RBM(64, 100), x,
    method="cd")``); likelihood-based backends (``"em"``, ``"svi"``, ``"mcmc"``, ``"enum"``)
    refuse it, because its likelihood is known only up to ``Z``.

    ``fit.log_prob(x) = -F(x) - log Z``.  ``log Z`` is exact when the smaller layer has at most
    20 units (a float64 sum over every state of that layer), otherwise an annealed importance
    sampling estimate (``ais_runs`` runs of ``ais_steps`` temperatures, fixed seed, so scores are
    deterministic); AIS tends to underestimate ``log Z`` (so log-probabilities read a little
    high), and ``fit.log_partition()`` reports its standard error.  The last ``log Z`` is cached
    per parameter values.  ``fit.sample(n, burn_in=1000)`` runs ``n`` independent Gibbs chains.

    Parameters
    ----------
    n_visible : int
        Visible units (columns of the data).
    n_hidden : int
        Hidden units.
    partition : {"auto", "exact", "ais"}, default "auto"
        How ``fit.log_prob`` finds ``log Z``: "auto" is exact when the smaller layer has at most
        20 units, AIS otherwise; "exact" refuses larger layers; "ais" always estimates.
    ais_runs : int, default 100
        Independent AIS runs.
    ais_steps : int, default 10000
        Intermediate distributions (inverse temperatures) per AIS run.

    Its fits are :class:`RBMFit`: ``fit.free_energy(x)``, ``fit.log_partition(method=...)``,
    ``fit.transform(x)`` (hidden activation probabilities, as scikit-learn's
    ``BernoulliRBM.transform``).

    Examples
    --------
    >>> import torch, probgen as pg
    >>> from probgen.models import RBM
    >>> x = (torch.rand(200, 6, generator=torch.Generator().manual_seed(0)) > 0.5).float()
    >>> fit = pg.fit(RBM(6, 3), x, method="cd", num_steps=200, progress=False)
    >>> fit.log_prob(x).shape, fit.log_partition().method
    (torch.Size([200]), 'exact')
    """

    data_plate_name = "data"
    dtype = _DTYPE
    density = "unnormalised"
    fit_class: ClassVar[type[RBMFit]] = RBMFit

    def __init__(
        self,
        n_visible: int,
        n_hidden: int,
        *,
        partition: str = "auto",
        ais_runs: int = 100,
        ais_steps: int = 10000,
    ) -> None:
        self.n_visible = _positive_int("n_visible", n_visible)
        self.n_hidden = _positive_int("n_hidden", n_hidden)
        if partition not in _PARTITIONS:
            raise ValueError(
                f"partition={partition!r} is not known; expected one of: {', '.join(_PARTITIONS)}."
            )
        self.partition = partition
        self.ais_runs = _positive_int("ais_runs", ais_runs)
        self.ais_steps = _positive_int("ais_steps", ais_steps)
        if partition == "exact" and min(self.n_visible, self.n_hidden) > _MAX_EXACT_UNITS:
            raise ValueError(
                f"partition='exact' needs a layer of at most {_MAX_EXACT_UNITS} units; this RBM has "
                f"{self.n_visible} visible and {self.n_hidden} hidden units. Use partition='auto' or 'ais'."
            )

    # ------------------------------------------------------------------ Pyro pair
    def _default_params(self) -> dict[str, Tensor]:
        gen = torch.Generator().manual_seed(0)
        return {
            "W": 0.01 * torch.randn(self.n_hidden, self.n_visible, generator=gen, dtype=_DTYPE),
            "visible_bias": torch.zeros(self.n_visible, dtype=_DTYPE),
            "hidden_bias": torch.zeros(self.n_hidden, dtype=_DTYPE),
        }

    def model(
        self,
        data: Tensor | None = None,
        subsample_size: int | None = None,
        num_samples: int = 1,
        burn_in: int = 1000,
    ) -> Tensor:
        """Score ``data`` with ``pyro.factor("x", -F(x))`` per item (the unnormalised log density);
        with ``data=None`` draw ``num_samples`` items by Gibbs chains of ``burn_in`` sweeps."""
        init = self._default_params()
        params = {k: pyro.param(k, lambda k=k: init[k]) for k in _PARAMS}  # type: ignore[misc]
        if data is None:
            with torch.no_grad():
                v = self._chains(int(num_samples), params, int(burn_in), None)[0]
            with pyro.plate("data", int(num_samples)):
                return pyro.deterministic("x", v, event_dim=1)
        with pyro.plate("data", data.shape[0], subsample_size=subsample_size) as plate_idx:
            idx: Tensor = plate_idx  # type: ignore[assignment]
            x = data.index_select(0, idx)
            pyro.factor("x", -self.free_energy(x, params))
            return x

    def roles(self, data: Any) -> Any:
        # tracing declares the pyro.param sites: keep the user's param store untouched
        with pyro.get_param_store().scope():
            return super().roles(data)

    # ------------------------------------------------------------------ data
    def prepare_data(self, data: Any) -> Tensor:
        """Binary data of shape ``(n_items, n_visible)`` as float32 (bool, int, float, lists, pandas, tensors)."""
        x = as_tensor(data, "data", dtype=_DTYPE)
        if x.dim() != 2 or x.shape[1] != self.n_visible:
            raise ValueError(
                f"data must have shape (n_items, {self.n_visible}) (n_visible={self.n_visible}); "
                f"got {tuple(x.shape)}."
            )
        bad = (x != 0) & (x != 1)
        if bad.any():
            raise ValueError(
                f"data holds {int(bad.sum())} values other than 0 and 1 (e.g. {float(x[bad][0])!r}), but "
                "an RBM has binary visible units; binarise the data first (e.g. x > 0.5)."
            )
        return x

    def get_config(self) -> dict[str, Any]:
        return {
            "n_visible": self.n_visible,
            "n_hidden": self.n_hidden,
            "partition": self.partition,
            "ais_runs": self.ais_runs,
            "ais_steps": self.ais_steps,
        }

    def num_parameters(self, params: Mapping[str, Tensor], data: Any) -> int:
        return self.n_hidden * self.n_visible + self.n_visible + self.n_hidden

    def _params(self, params: Mapping[str, Tensor]) -> tuple[Tensor, Tensor, Tensor]:
        missing = [k for k in _PARAMS if k not in params]
        if missing:
            raise ValueError(f"params lacks {missing}; an RBM needs {list(_PARAMS)}.")
        return params["W"], params["visible_bias"], params["hidden_bias"]

    # ------------------------------------------------------------------ energy hooks
    def free_energy(self, data: Any, params: Any = None) -> Tensor:
        """Free energy ``F(v) = -v.b - sum_j softplus(c_j + W_j v)`` per item.

        The energy hook (what ``"cd"`` calls): ``v`` a prepared ``(n, n_visible)`` tensor (or any
        binary array-like), differentiable in ``params``; :meth:`RBMFit.free_energy` evaluates it
        at a fit's parameters.
        """
        if not isinstance(params, Mapping):
            raise TypeError(f"params must be a mapping of parameter tensors; got {type(params).__name__}.")
        W, b, c = self._params(params)
        v = data if isinstance(data, Tensor) else self.prepare_data(data)
        return _free_energy(v.to(W.dtype), W, b, c)

    def free_energy_grad(
        self, data: Tensor, weights: Tensor, params: Mapping[str, Tensor]
    ) -> dict[str, Tensor]:
        """Closed-form gradient of ``sum_i weights[i] F(v_i)``: ``dF/db = -v``,
        ``dF/dc = -p``, ``dF/dW = -p v^T`` with ``p = sigmoid(c + W v)``."""
        W, b, c = self._params(params)
        with torch.no_grad():
            v = data.to(W.dtype)
            w = weights.to(W.dtype)
            p = torch.sigmoid(F.linear(v, W, c))
            pw = p * w[:, None]
            return {"W": -(pw.T @ v), "visible_bias": -(w @ v), "hidden_bias": -pw.sum(0)}

    def cd_updater(
        self,
        params: Mapping[str, Tensor],
        chains: Tensor | None,
        *,
        batch_size: int,
        k: int,
        momentum: float,
        weight_decay: float,
        generator: torch.Generator,
    ) -> PCDUpdater:
        """Contrastive-divergence updates in one loop of preallocated buffers (what ``"cd"`` runs).

        The gradient is closed form and the updates reuse every buffer, so a minibatch costs a few
        kernels rather than a generic step's dozens: see :class:`probgen.models._rbm_pcd.PCDUpdater`
        (``chains``: starting visible states of the persistent chains, None for CD-k).
        """
        W, b, c = (t.detach().to(_DTYPE) for t in self._params(params))
        return PCDUpdater(
            W,
            b,
            c,
            None if chains is None else chains.to(_DTYPE),
            batch_size=batch_size,
            k=k,
            momentum=momentum,
            weight_decay=weight_decay,
            generator=generator,
        )

    def gibbs_step(
        self, data: Tensor, params: Mapping[str, Tensor], *, generator: torch.Generator | None = None
    ) -> Tensor:
        """One sweep ``h ~ p(h | v)``, ``v ~ p(v | h)`` from the rows of ``data`` (no gradient)."""
        W, b, c = self._params(params)
        with torch.no_grad():
            W, b, c = W.detach(), b.detach(), c.detach()
            h = torch.bernoulli(torch.sigmoid(F.linear(data, W, c)), generator=generator)
            return torch.bernoulli(torch.sigmoid(torch.addmm(b, h, W)), generator=generator)

    def init_params(
        self, data: Any, *, init: Any = "random", generator: torch.Generator
    ) -> dict[str, Tensor]:
        """Starting values: ``W ~ N(0, 0.01^2)``, visible bias the logit of the data's pixel means
        (clipped to [1e-3, 1 - 1e-3]), hidden bias 0 (``init="random"``); or ``init`` a dict of
        the three arrays (e.g. another library's starting point)."""
        if isinstance(init, Mapping):
            missing = [k for k in _PARAMS if k not in init]
            unknown = [k for k in init if k not in _PARAMS]
            if missing or unknown:
                raise ValueError(
                    f"init must give exactly {list(_PARAMS)}; missing {missing}, unknown {unknown}."
                )
            shapes = {
                "W": (self.n_hidden, self.n_visible),
                "visible_bias": (self.n_visible,),
                "hidden_bias": (self.n_hidden,),
            }
            out = {k: as_tensor(init[k], f"init[{k!r}]", dtype=_DTYPE).clone() for k in _PARAMS}
            for k, t in out.items():
                if tuple(t.shape) != shapes[k]:
                    raise ValueError(f"init[{k!r}] must have shape {shapes[k]}; got {tuple(t.shape)}.")
            return out
        if init != "random":
            raise ValueError(f"init must be 'random' or a dict of {list(_PARAMS)}; got {init!r}.")
        mean = data.to(_DTYPE).mean(0).clamp(_CLIP, 1.0 - _CLIP)
        return {
            "W": 0.01 * torch.randn(self.n_hidden, self.n_visible, generator=generator, dtype=_DTYPE),
            "visible_bias": torch.logit(mean),
            "hidden_bias": torch.zeros(self.n_hidden, dtype=_DTYPE),
        }

    # ------------------------------------------------------------------ scoring
    def _log_z(
        self,
        params: Mapping[str, Tensor],
        method: str,
        runs: int,
        steps: int,
        seed: int = 0,
    ) -> LogPartition:
        W, b, c = (t.detach() for t in self._params(params))
        if method == "auto":
            method = "exact" if min(self.n_visible, self.n_hidden) <= _MAX_EXACT_UNITS else "ais"
        if method == "exact" and min(self.n_visible, self.n_hidden) > _MAX_EXACT_UNITS:
            raise ValueError(
                f"an exact log Z needs a layer of at most {_MAX_EXACT_UNITS} units; this RBM has "
                f"{self.n_visible} visible and {self.n_hidden} hidden units. Use method='ais'."
            )
        key = (
            method,
            runs,
            steps,
            seed,
            W.numpy().tobytes(),
            b.numpy().tobytes(),
            c.numpy().tobytes(),
        )

        def compute() -> tuple[Any, LogPartition]:
            if method == "exact":
                return key, LogPartition(_exact_log_z(W, b, c), 0.0, "exact")
            value, se = _ais_log_z(W, b, c, b, runs, steps, seed)
            return key, LogPartition(value, se, "ais")

        # the last log Z is kept beside the model (a model is a value): scoring new items reuses it
        kept: tuple[Any, LogPartition] = slot(self, "log_z", lambda v: v[0] == key, compute)
        return kept[1]

    def log_prob_items(self, data: Any, params: Mapping[str, Tensor]) -> Tensor:
        """``log p(v) = -F(v) - log Z`` per item, in float64 (``log Z`` as ``partition`` says)."""
        W, b, c = (t.detach().double() for t in self._params(params))
        z = self._log_z(params, self.partition, self.ais_runs, self.ais_steps)
        with torch.no_grad():
            return -_free_energy(data.double(), W, b, c) - z.value

    def _chains(
        self, n: int, params: Mapping[str, Tensor], burn_in: int, generator: torch.Generator | None
    ) -> tuple[Tensor, Tensor]:
        W, b, c = (t.detach().to(_DTYPE) for t in self._params(params))
        v = torch.bernoulli(torch.sigmoid(b).expand(n, -1).contiguous(), generator=generator)
        for _ in range(burn_in):
            v = self.gibbs_step(v, {"W": W, "visible_bias": b, "hidden_bias": c}, generator=generator)
        h = torch.bernoulli(torch.sigmoid(v @ W.T + c), generator=generator)
        return v, h

    def sample_items(
        self, n: int, params: Mapping[str, Tensor], *, generator: torch.Generator | None = None, **kwargs: Any
    ) -> dict[str, Any]:
        """``n`` items from ``n`` independent Gibbs chains; ``burn_in`` (default 1000) sweeps each,
        started from ``v ~ Bernoulli(sigmoid(visible_bias))``.  Returns ``{"data": v, "h": h}``."""
        burn_in = kwargs.pop("burn_in", 1000)
        if kwargs:
            raise ValueError(f"unknown sampling option(s) {sorted(kwargs)}; an RBM takes: burn_in.")
        non_negative_int(burn_in, "burn_in")
        v, h = self._chains(int(n), params, int(burn_in), generator)
        return {"data": v, "h": h}

    # ------------------------------------------------------------------ fit helpers
    def log_partition(
        self,
        fit: Any,
        method: str = "auto",
        *,
        num_runs: int | None = None,
        num_steps: int | None = None,
        seed: int = 0,
    ) -> LogPartition:
        """``log Z`` at ``fit.params``: ``LogPartition(value, stderr, method)``.

        ``method="exact"`` sums over every state of the smaller layer (at most 20 units; stderr 0);
        ``"ais"`` runs annealed importance sampling (``num_runs`` runs, default ``ais_runs``, of
        ``num_steps`` temperatures, default ``ais_steps``) from the base-rate model with the RBM's
        own visible biases and no couplings; ``"auto"`` is exact when it can.  ``fit.log_prob(x)``
        is ``-fit.free_energy(x) - fit.log_partition(method=partition).value`` (seed 0).
        """
        if method not in _PARTITIONS:
            raise ValueError(f"method={method!r} is not known; expected one of: {', '.join(_PARTITIONS)}.")
        runs = _positive_int("num_runs", self.ais_runs if num_runs is None else num_runs)
        steps = _positive_int("num_steps", self.ais_steps if num_steps is None else num_steps)
        return self._log_z(fit.params, method, runs, steps, int(seed))

    def transform(self, fit: Any, x: Any = None) -> Tensor:
        """Hidden activation probabilities ``p(h_j = 1 | v)``, ``(n, n_hidden)``."""
        v = fit._data(x)
        W, b, c = self._params(fit.params)
        with torch.no_grad():
            return torch.sigmoid(v @ W.T + c)

    # ------------------------------------------------------------------ picture
    def plot_fit(
        self,
        data: Any,
        params: Mapping[str, Tensor],
        *,
        ax: Any = None,
        max_filters: int = 64,
        samples: int = 200,
        burn_in: int = 200,
        seed: int = 0,
        **kwargs: Any,
    ) -> Any:
        """Picture of the fit: the hidden units' filters and the free energy of data and samples.

        Left, each hidden unit's weights ``W[j]`` (its filter): one image per unit when
        ``n_visible`` is a square number of pixels (the first ``max_filters`` units, red positive,
        blue negative, one colour scale), else a heat map of ``W`` (units by visible columns).
        Right, histograms of the free energy ``F(v)`` of the data and of ``samples`` items drawn
        by Gibbs chains of ``burn_in`` sweeps (lower is more probable: the samples should sit
        where the data do).

        Parameters
        ----------
        data : array-like
            ``(n_items, n_visible)`` binary items (``fit.plot()`` passes the training data).
        params : dict of str to Tensor
            Parameters to draw (``fit.params``).
        ax : matplotlib.axes.Axes, optional
            Axes of the filters; a new figure when None.  The histogram panel is carved out of
            its right-hand side (``ax.figure.axes``).
        max_filters : int, default 64
            Most filter images drawn.
        samples : int, default 200
            Model samples whose free energy is drawn (0: the data only).
        burn_in : int, default 200
            Gibbs sweeps per sample.
        seed : int, default 0
            Seed of the Gibbs chains.

        Returns
        -------
        matplotlib.axes.Axes
            The axes of the filters (the histogram is on the same figure).

        Raises
        ------
        TypeError
            Unknown options, ``ax`` not matplotlib axes, counts not ints.
        ValueError
            Negative counts, data not binary or of the wrong width.
        """
        _no_options(kwargs, "RBM.plot_fit", ("ax=", "max_filters=", "samples=", "burn_in=", "seed="))
        max_filters = _positive(max_filters, "max_filters")
        samples, burn_in = non_negative_int(samples, "samples"), non_negative_int(burn_in, "burn_in")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise TypeError(f"seed must be an int; got {type(seed).__name__}.")
        x = data if isinstance(data, Tensor) else self.prepare_data(data)
        W = self._params(params)[0].detach().to(_DTYPE)
        left, right = _panels(ax, 2)
        side = _square_side(self.n_visible)
        top = float(W.abs().max()) or 1.0
        if side is not None:
            m = min(max_filters, self.n_hidden)
            images = W[:m].reshape(m, side, side).numpy()
            _image_grid(left, images, max(1, math.ceil(math.sqrt(m))), vmin=-top, vmax=top, cmap="RdBu_r")
            shown = f"{m} of {self.n_hidden}" if m < self.n_hidden else f"{m}"
            left.set_title(f"RBM filters W[j] ({shown} hidden units, {side}x{side})")
        else:
            im = left.imshow(
                W.numpy(), aspect="auto", cmap="RdBu_r", vmin=-top, vmax=top, interpolation="nearest"
            )
            left.figure.colorbar(im, ax=left, label="W")
            left.set(
                xlabel="visible unit",
                ylabel="hidden unit",
                title=f"RBM weights ({self.n_hidden} x {self.n_visible})",
            )
        with torch.no_grad():
            energy = self.free_energy(x, params).numpy()
            pooled = [energy]
            if samples:
                gen = torch.Generator().manual_seed(seed)
                v = self._chains(samples, params, burn_in, gen)[0]
                model_energy = self.free_energy(v, params).numpy()
                pooled.append(model_energy)
        bins = np.histogram_bin_edges(np.concatenate(pooled), bins="auto")
        right.hist(energy, bins=bins, density=True, color="0.7", label=f"data ({len(energy)})")
        if samples:
            right.hist(
                model_energy,
                bins=bins,
                density=True,
                histtype="step",
                color="C3",
                linewidth=1.5,
                label=f"model samples ({samples}, {burn_in} sweeps)",
            )
        right.legend(fontsize=8, loc="upper left", bbox_to_anchor=(0.0, -0.15))
        right.set(xlabel="free energy F(v) (lower: more probable)", ylabel="density", title="free energy")
        return left

    def __repr__(self) -> str:
        return f"RBM(n_visible={self.n_visible}, n_hidden={self.n_hidden})"
