"""The one module of probgen that calls ArviZ: the conversion of a fit and the diagnostics.

ArviZ comes in two lines: 0.x (``arviz`` 0.23, ``InferenceData``) and the arviz-base /
arviz-stats line (0.8 on Python 3.11, ArviZ 1.x on 3.12 and later; ``xarray.DataTree``).  Every
group is built here as an ``xarray.Dataset`` with its dims named, then put together by the line
that is installed; R-hat, ESS, BFMI, PSIS, summaries and LOO comparison are called through the
functions below, so no other module of probgen names either line.

ArviZ's own Pyro converter drops the log-likelihood group for models with enumerated discrete
latents and carries only ``diverging`` in sample_stats; this converter fills both, names dims after
the model's plates (traced on the data), and adds the prior and the objective's history.
"""

from __future__ import annotations

import datetime
import importlib
import json
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyro.poutine as poutine
import torch
import xarray as xr
from pyro.infer import Predictive
from torch import Tensor

from probgen.arguments import ModelArgs
from probgen.capabilities import EventDims, MasksObserved, ObservedArrays
from probgen.posterior import _model_with, split_params, traced_with
from probgen.roles import sample_sites
from probgen.state import isolated_rng

if TYPE_CHECKING:  # pragma: no cover
    from probgen.model import GenerativeModel
    from probgen.result import FitResult as Fit

__all__ = [
    "ARVIZ_SWITCH",
    "LEGACY",
    "bfmi",
    "compare",
    "ess",
    "group_names",
    "log_likelihood_name",
    "loo",
    "pareto_khat",
    "plot_forest",
    "point_summary",
    "posterior_dataset",
    "rhat",
    "summary",
    "to_inference_data",
]


def _optional(name: str) -> Any:
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


#: The environment variable that picks the ArviZ line when both are installed: "base" (the
#: arviz-base / arviz-stats line), "legacy" (arviz 0.x), or unset / "auto" (arviz 0.x when
#: installed, else the arviz-base line).
ARVIZ_SWITCH = "PROBGEN_ARVIZ"
_CHOICES = ("auto", "base", "legacy")


def _line() -> str:
    """The ArviZ line asked for by :data:`ARVIZ_SWITCH` ("auto" when unset or empty)."""
    choice = os.environ.get(ARVIZ_SWITCH, "").strip().lower() or "auto"
    if choice not in _CHOICES:
        raise ValueError(
            f"{ARVIZ_SWITCH}={os.environ[ARVIZ_SWITCH]!r}; expected one of: {', '.join(_CHOICES)} (or unset)."
        )
    return choice


_LINE = _line()
_az: Any = None if _LINE == "base" else _optional("arviz")
#: True with ArviZ 0.x (``InferenceData``); False with the arviz-base / arviz-stats line.
LEGACY: bool = _az is not None and int(str(_az.__version__).split(".")[0]) < 1
if _LINE == "legacy" and not LEGACY:  # pragma: no cover - an install problem
    raise ImportError(f"{ARVIZ_SWITCH}=legacy needs arviz 0.x installed (pip install 'arviz>=0.23,<0.24').")
_base: Any = None if LEGACY else _optional("arviz_base")
_stats: Any = None if LEGACY else _optional("arviz_stats")
if not LEGACY and (_base is None or _stats is None):  # pragma: no cover - an install problem
    raise ImportError(
        "probgen needs ArviZ: either arviz 0.23, or arviz-base and arviz-stats (the ArviZ 1.x line)"
        + (f"; {ARVIZ_SWITCH}=base asks for the latter." if _LINE == "base" else ".")
    )

#: The objective a backend's ``fit.history`` holds, and the dim it runs over, for sample_stats.
_HISTORY = {
    "em": ("log_likelihood", "iteration"),
    "svi": ("loss", "step"),
    "enum": ("log_evidence", "iteration"),
    "cd": ("objective", "epoch"),
    "adversarial": ("generator_loss", "step"),
}
#: Prior draws when ``prior=True`` and no number is given.
_PRIOR_SAMPLES = 500
_SAMPLE_DIMS = ("chain", "draw")


# ------------------------------------------------------------------------- statistics
def _numpy(d: Mapping[str, Any]) -> dict[str, np.ndarray]:
    out = {}
    for k, v in d.items():
        out[k] = v.detach().cpu().numpy() if isinstance(v, Tensor) else np.asarray(v)
    return out


def _draws_dataset(draws: Mapping[str, Any]) -> xr.Dataset:
    return _dataset(_numpy(draws), {}, {}, _SAMPLE_DIMS)


def rhat(draws: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Rank-normalised split R-hat of each ``(chain, draw, ...)`` array, by name."""
    ds = _draws_dataset(draws)
    out = _az.rhat(ds) if LEGACY else _stats.rhat(ds)
    return {k: np.asarray(out[k]) for k in draws}


def ess(draws: Mapping[str, Any], method: str = "bulk") -> dict[str, np.ndarray]:
    """Effective sample size (``method`` "bulk" or "tail") of each ``(chain, draw, ...)`` array."""
    ds = _draws_dataset(draws)
    out = _az.ess(ds, method=method) if LEGACY else _stats.ess(ds, method=method)
    return {k: np.asarray(out[k]) for k in draws}


def bfmi(energy: Any) -> np.ndarray:
    """E-BFMI of each chain from the Hamiltonian at each draw, ``(chain, draw) -> (chain,)``."""
    e = np.asarray(energy, dtype=float)
    if e.ndim != 2:
        raise ValueError(f"energy must be a (chain, draw) array; got shape {e.shape}.")
    if LEGACY:
        return np.asarray(_az.bfmi(e), dtype=float).reshape(-1)
    out = _stats.bfmi(_dataset({"energy": e}, {}, {}, _SAMPLE_DIMS))
    return np.asarray(out["energy"], dtype=float).reshape(-1)


def summary(draws: Mapping[str, Any] | xr.Dataset, **kwargs: Any) -> pd.DataFrame:
    """ArviZ's summary table of ``(chain, draw, ...)`` draws (keyword arguments go to ArviZ).

    ``draws`` is a mapping of arrays (rows labelled by position, ``locs[0, 1]``) or a dataset
    whose dims carry coordinates (rows labelled by them, ``locs[0, waiting]``).
    """
    ds = draws if isinstance(draws, xr.Dataset) else _draws_dataset(draws)
    table = _az.summary(ds, **kwargs) if LEGACY else _stats.summary(ds, **kwargs)
    return pd.DataFrame(table)


def point_summary(estimates: xr.Dataset) -> pd.DataFrame:
    """Table of point estimates, one row per element, labelled by the coordinates of its dims
    (``locs[0, waiting]``) as ArviZ labels the rows of its summary; ``estimates`` has one chain
    of one draw."""
    labels: list[str] = []
    values: list[float] = []
    for name, var in estimates.data_vars.items():
        arr = np.asarray(var.values).reshape(var.shape[len(_SAMPLE_DIMS) :])
        if arr.ndim == 0:
            labels.append(str(name))
            values.append(float(arr))
            continue
        axes = [np.asarray(var.coords[d].values) for d in var.dims[len(_SAMPLE_DIMS) :]]
        for idx in np.ndindex(*arr.shape):
            labels.append(f"{name}[{', '.join(str(ax[i]) for ax, i in zip(axes, idx, strict=True))}]")
            values.append(float(arr[idx]))
    return pd.DataFrame({"estimate": values}, index=labels)


def loo(idata: Any) -> pd.Series:
    """PSIS-LOO of a converted posterior fit, as a labelled series.

    Returns ``elpd_loo`` (expected log pointwise predictive density), its standard error ``se``,
    the effective number of parameters ``p_loo``, ``n_samples``, ``n_data_points``,
    ``max_pareto_k`` (the largest Pareto k-hat over items) and ``warning`` (ArviZ's flag that
    some k-hat is too high for the estimate to be trusted), the same with either ArviZ line.
    """
    if LEGACY:
        out = _az.loo(idata, pointwise=True)
        elpd, p = float(out["elpd_loo"]), float(out["p_loo"])
    else:
        out = _stats.loo(idata, pointwise=True)
        elpd, p = float(out.elpd), float(out.p)
    return pd.Series(
        {
            "elpd_loo": elpd,
            "se": float(out["se"] if LEGACY else out.se),
            "p_loo": p,
            "n_samples": int(out["n_samples"] if LEGACY else out.n_samples),
            "n_data_points": int(out["n_data_points"] if LEGACY else out.n_data_points),
            "max_pareto_k": float(np.max(np.asarray(out["pareto_k"] if LEGACY else out.pareto_k))),
            "warning": bool(out["warning"] if LEGACY else out.warning),
        },
        name="loo",
        dtype=object,
    )


#: arviz-stats' names of the comparison columns that ArviZ 0.x calls by the criterion.
_COMPARE_COLUMNS = {"elpd": "elpd_loo", "p": "p_loo"}


def compare(idatas: Mapping[str, Any], ic: str = "loo") -> pd.DataFrame:
    """ArviZ's ranking of converted fits by ``ic`` ("loo", or "waic" with ArviZ 0.x); the
    columns are named as ArviZ 0.x names them (``elpd_loo``, ``p_loo``) with either line."""
    if LEGACY:
        return pd.DataFrame(_az.compare(dict(idatas), ic=ic))
    if ic != "loo":
        raise ValueError(f"ic={ic!r}: arviz-stats compares by PSIS-LOO only; use ic='loo'.")
    return pd.DataFrame(_stats.compare(dict(idatas))).rename(columns=_COMPARE_COLUMNS)


def group_names(idata: Any) -> list[str]:
    """Names of the groups of a converted fit (``InferenceData`` or ``DataTree``), in order."""
    if LEGACY:
        return list(idata.groups())
    return list(idata.children)


def pareto_khat(log_weights: np.ndarray) -> float:
    """Pareto k-hat of Pareto-smoothed importance sampling for one set of log weights."""
    lw = np.asarray(log_weights, dtype=float).reshape(-1)
    if LEGACY:
        _, k = _az.psislw(lw)
    else:
        _, k = _stats.base.array_stats.psislw(lw)
    return float(np.asarray(k).reshape(-1)[0])


# --------------------------------------------------------------------- datasets and dims
def _dataset(
    arrays: Mapping[str, np.ndarray],
    dims: Mapping[str, list[str | None]],
    coords: Mapping[str, Any],
    sample_dims: tuple[str, ...],
    attrs: Mapping[str, Any] | None = None,
) -> xr.Dataset:
    """One group: each array's dims are ``sample_dims`` then its named dims (None: ArviZ's
    default ``<var>_dim_<k>``); a name whose size disagrees with an earlier use in the group, or
    that names a variable of the group (a model argument called like its plate), falls back to
    the default.  Every dim gets coordinates: ``coords`` where given and of the right
    length, else 0, 1, ... as ArviZ gives them."""
    sizes: dict[str, int] = {}
    variables: dict[str, tuple[list[str], np.ndarray]] = {}
    for name, arr in arrays.items():
        arr = np.asarray(arr)
        rest = arr.ndim - len(sample_dims)
        if rest < 0:
            raise ValueError(f"{name!r} has shape {arr.shape}; expected leading dims {sample_dims}.")
        named: list[str | None] = list(dims.get(name, []))[-rest:] if rest else []
        padding: list[str | None] = [None] * (rest - len(named))
        given = padding + named
        full = list(sample_dims)
        for k, dim in enumerate(given):
            size = arr.shape[len(sample_dims) + k]
            default = f"{name}_dim_{k}"
            if dim is None or dim in arrays or dim in full or sizes.get(dim, size) != size:
                dim = default
            sizes[dim] = size
            full.append(dim)
        for d, size in zip(sample_dims, arr.shape, strict=False):
            sizes[d] = size
        variables[name] = (full, arr)
    coord_values: dict[str, Any] = {}
    for dim, size in sizes.items():
        labels = coords.get(dim)
        coord_values[dim] = list(labels) if labels is not None and len(labels) == size else np.arange(size)
    return xr.Dataset(variables, coords=coord_values, attrs=dict(attrs or {}))


def _assemble(groups: Mapping[str, xr.Dataset]) -> Any:
    """The installed line's container of the groups (``InferenceData`` or ``DataTree``)."""
    if LEGACY:
        return _az.InferenceData(**groups)
    return xr.DataTree.from_dict(dict(groups))


class _Dims:
    """Names of each sample site's dims (its plates; the family's names for event dims), read
    from one trace of the model on the data at the fit's estimates."""

    def __init__(self, gm: GenerativeModel, data: Any, params: Mapping[str, Tensor]) -> None:
        values, fixed = split_params(gm, data, params)
        trace = traced_with(gm, data, values, fixed)
        event_names = dict(gm.event_dims(data)) if isinstance(gm, EventDims) else {}
        self.names: dict[str, list[str | None]] = {}
        self.shapes: dict[str, tuple[int, ...]] = {}
        self.plates: dict[str, int] = {}
        for site in sample_sites(trace):
            value = site["value"]
            if not isinstance(value, Tensor):
                continue
            shape = tuple(value.shape)
            batch = len(shape) - len(site["fn"].event_shape)
            frames = {f.dim: f for f in site["cond_indep_stack"] if f.vectorized and f.dim is not None}
            for f in site["cond_indep_stack"]:
                self.plates.setdefault(f.name, int(f.size))
            given = tuple(event_names.get(site["name"], ()))
            row: list[str | None] = []
            for i, size in enumerate(shape):
                if i < batch:
                    frame = frames.get(i - batch)
                    row.append(frame.name if frame is not None and frame.size == size else None)
                else:
                    j = i - batch
                    row.append(given[j] if j < len(given) else None)
            self.names[site["name"]] = row
            self.shapes[site["name"]] = shape

    def of(self, site: str, tail: tuple[int, ...]) -> list[str | None]:
        """Names for an array whose dims after the sample dims are ``tail``, aligned on the right
        with the site's traced value (a dim of another size, or beyond the value, is unnamed)."""
        row, shape = self.names.get(site, []), self.shapes.get(site, ())
        out: list[str | None] = [None] * len(tail)
        for j in range(1, min(len(tail), len(row)) + 1):
            if tail[-j] == shape[-j]:
                out[-j] = row[-j]
        return out

    def group(self, arrays: Mapping[str, np.ndarray], lead: int) -> dict[str, list[str | None]]:
        return {k: self.of(k, tuple(v.shape[lead:])) for k, v in arrays.items()}


# ------------------------------------------------------------------------- conversion
def _labels(fit: Fit) -> tuple[_Dims | None, dict[str, np.ndarray], dict[str, list[str]]]:
    """The dims traced on the fit's data (None without data), the observed data by name, and
    the coordinates the data's column names give the feature dims."""
    gm, data = fit.model, fit.data
    if data is None:
        return None, {}, {}
    dims = _Dims(gm, data, fit.params)
    observed = _numpy(observed_arrays(gm, data))
    return dims, observed, _feature_coords(fit, observed, dims.group(observed, 0))


def _estimates(fit: Fit) -> dict[str, np.ndarray]:
    """The posterior draws, or the point estimates as one chain of one draw."""
    if fit.posterior:
        return _numpy(fit.posterior)
    return _numpy({k: v[None, None] for k, v in fit.params.items()})


def posterior_dataset(fit: Fit) -> xr.Dataset:
    """The fit's posterior group alone (point estimates as one chain of one draw), its dims
    named after the model's plates and the features labelled by the data's column names."""
    dims, _, coords = _labels(fit)
    draws = _estimates(fit)
    return _dataset(draws, dims.group(draws, 2) if dims else {}, coords, _SAMPLE_DIMS)


def _observed_items(fit: Fit, data: Any, n_items: int) -> Tensor | None:
    """Which items have an observed cell, when a user model masked wholly missing items (None
    when every item has one): PSIS-LOO's data points are the items observed."""
    gm = fit.model
    if fit.extras.get("missing") != "marginalize" or not isinstance(gm, MasksObserved):
        return None
    cells = gm.missing_cells(data)
    if cells is None or cells.dim() == 0 or len(cells) != n_items:
        return None
    whole = cells.reshape(n_items, -1).all(1)
    return ~whole if bool(whole.any()) else None


def log_likelihood_name(fit: Fit) -> str:
    """Variable name of the pointwise log-likelihood (the observed site, or ``"obs"``)."""
    observed = fit.model.roles(fit.data).observed_sites
    return observed[0] if len(observed) == 1 else "obs"


def observed_arrays(gm: GenerativeModel, data: Any) -> dict[str, torch.Tensor]:
    """The observed data by variable name (the family's own when it offers ObservedArrays)."""
    if isinstance(gm, ObservedArrays):
        return gm.observed_arrays(data)
    observed = gm.roles(data).observed_sites
    if isinstance(data, ModelArgs):  # the response arguments, named after the site that reads each
        named = {k: data.values[k] for k in data.observed}
        if len(named) == 1 and len(observed) == 1:
            return {observed[0]: next(iter(named.values()))}
        return named
    return {observed[0] if len(observed) == 1 else "obs": data} if isinstance(data, torch.Tensor) else {}


def _feature_coords(
    fit: Fit, observed: Mapping[str, np.ndarray], dims: Mapping[str, list[str | None]]
) -> dict[str, list[str]]:
    """The data's column names (recorded at fit time) as coordinates of the observed data's last
    dim, when that dim is as long as the list of names."""
    names = fit.extras.get("feature_names")
    labels = json.loads(names) if isinstance(names, str) else names
    if not isinstance(labels, list | tuple) or not observed:
        return {}
    name, arr = next(iter(observed.items()))
    if arr.ndim < 2 or arr.shape[-1] != len(labels):
        return {}
    last = dims.get(name, [None])[-1] or f"{name}_dim_{arr.ndim - 1}"
    names = [str(x) for x in labels]
    return {last: names, f"{last}_bis": names}  # a matrix over the features: both its dims


def _history(fit: Fit) -> tuple[dict[str, np.ndarray], dict[str, list[str | None]], dict[str, Any]]:
    """The objective's history as a sample_stats variable over its own dim (no chain or draw)."""
    history = np.asarray(fit.history, dtype=float).reshape(-1)
    if history.size == 0:
        return {}, {}, {}
    name, dim = _HISTORY.get(fit.method, ("objective", "step"))
    described = fit.extras.get("history")
    if isinstance(described, str):
        name = described
    return {name: history}, {name: [dim]}, {"objective": name, "method": fit.method}


def _prior(fit: Fit, num_samples: int, dims: _Dims) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Draws of the latent sites and of the observed sites from the model's prior, ``(1, S, ...)``,
    by Pyro's ``Predictive`` on the model with its observed sites set free (``pyro.param`` sites at
    the fit's values)."""
    gm, data = fit.model, fit.data
    roles = gm.roles(data)
    _, fixed = split_params(gm, data, fit.params)
    fn = _model_with(gm, None, fixed, poutine.uncondition(gm.model))
    predictive = Predictive(fn, num_samples=num_samples, parallel=False)
    with isolated_rng(fit.seed), poutine.block():
        out = predictive(data)
    latents, predicted = {}, {}
    for name, value in out.items():
        shape = dims.shapes.get(name)
        if shape is None:
            continue
        v = value.detach().reshape(num_samples, -1).reshape((1, num_samples) + shape)
        if name in roles.continuous_sites:
            latents[name] = v.cpu().numpy()
        elif name in roles.observed_sites:
            predicted[name] = v.cpu().numpy()
    return latents, predicted


def to_inference_data(
    fit: Fit,
    *,
    posterior_predictive: bool = False,
    num_ppc_samples: int | None = None,
    prior: bool = False,
    num_prior_samples: int | None = None,
    warmup: bool = False,
) -> Any:
    """Convert ``fit`` to ArviZ (``InferenceData`` with ArviZ 0.x, ``DataTree`` with 1.x).

    Groups: ``posterior`` (draws; point estimates as one chain of one draw), ``sample_stats``
    (MCMC: per-draw sampler statistics; other backends: the objective's history over a dim of
    its own, ``step`` for SVI's loss, ``iteration`` for EM's log-likelihood), ``log_likelihood``
    (chain, draw, item) with discrete latents summed out, ``observed_data``, ``constant_data``
    (the covariates of a model of several arguments), ``posterior_predictive`` when asked, and
    ``prior`` with ``prior_predictive`` when ``prior=True``, ``warmup_posterior`` with
    ``warmup_sample_stats`` when ``warmup=True`` (an MCMC fit run with ``save_warmup=True``).  Dims are named after the model's
    plates (the item dim after the data plate), event dims by the family where it names them
    (else ``<var>_dim_<k>``); the data's column names are the coordinates of the feature dim.
    """
    if num_prior_samples is not None and (
        not isinstance(num_prior_samples, int | np.integer)
        or isinstance(num_prior_samples, bool)
        or num_prior_samples < 1
    ):
        raise ValueError(f"num_prior_samples must be a positive int; got {num_prior_samples!r}.")
    if not isinstance(prior, bool):
        raise TypeError(f"prior must be a bool; got {type(prior).__name__}.")
    if not isinstance(warmup, bool):
        raise TypeError(f"warmup must be a bool; got {type(warmup).__name__}.")
    if warmup and "warmup_posterior" not in fit.extras:
        raise ValueError(
            f"warmup=True needs the warm-up draws, which this {fit.method!r} fit did not keep; fit with "
            "method='mcmc' and save_warmup=True."
        )
    gm, data = fit.model, fit.data
    point = not fit.posterior
    posterior = _estimates(fit)
    dims, observed, coords = _labels(fit)
    roles = gm.roles(data) if data is not None else None
    attrs = {
        "created_at": datetime.datetime.now(datetime.UTC).isoformat(),
        "inference_library": "probgen",
        "probgen_method": fit.method,
    }
    groups: dict[str, xr.Dataset] = {}
    observed_dims = dims.group(observed, 0) if dims is not None else {}

    def add(
        group: str,
        arrays: Mapping[str, np.ndarray],
        names: Mapping[str, list[str | None]],
        lead: tuple[str, ...],
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        if arrays:
            groups[group] = _dataset(arrays, names, coords, lead, {**attrs, **(extra or {})})

    if posterior:
        add("posterior", posterior, dims.group(posterior, 2) if dims else {}, _SAMPLE_DIMS)
    if prior and dims is not None:
        latents, predicted = _prior(fit, num_prior_samples or _PRIOR_SAMPLES, dims)
        add("prior", latents, dims.group(latents, 2), _SAMPLE_DIMS)
        add("prior_predictive", predicted, dims.group(predicted, 2), _SAMPLE_DIMS)
    if warmup:
        warm = _numpy(fit.extras["warmup_posterior"])
        add("warmup_posterior", warm, dims.group(warm, 2) if dims else {}, _SAMPLE_DIMS)
        add("warmup_sample_stats", _numpy(fit.extras["warmup_sample_stats"]), {}, _SAMPLE_DIMS)
    if fit.sample_stats:
        add("sample_stats", _numpy(fit.sample_stats), {}, _SAMPLE_DIMS)
    else:
        history, history_dims, history_attrs = _history(fit)
        add("sample_stats", history, history_dims, (), history_attrs)
    if data is not None and roles is not None and gm.density != "none":
        # an implicit model (a GAN) has no likelihood to report
        pointwise = fit.pointwise_log_likelihood().detach().cpu()
        seen = _observed_items(fit, data, pointwise.shape[-1])
        if seen is not None:  # an item with every cell missing is no data point (its factor is 1)
            pointwise = pointwise[..., seen]
        ll = {log_likelihood_name(fit): pointwise.numpy()}
        plate = roles.data_plate
        item = (
            plate
            if plate is not None
            and dims is not None
            and dims.plates.get(plate) == next(iter(ll.values())).shape[-1]
            else None
        )
        note = (
            {
                "point_estimate": (
                    f"one draw at the {fit.method} estimate, not posterior draws: az.loo and az.waic "
                    "need draws (fit by 'mcmc' or 'svi'); probgen.compare ranks point fits by BIC"
                )
            }
            if point
            else None
        )
        add("log_likelihood", ll, {k: [item] for k in ll}, _SAMPLE_DIMS, note)
    if posterior_predictive and dims is not None:
        reps = _numpy(fit.posterior_predictive(num_samples=num_ppc_samples))  # thinned: one chain
        add("posterior_predictive", reps, dims.group(reps, 2), _SAMPLE_DIMS)
    add("observed_data", observed, observed_dims, ())
    if (
        isinstance(data, ModelArgs) and dims is not None
    ):  # covariates, group indices: what the model was given
        constants = _numpy(data.constants)
        plate = roles.data_plate if roles is not None else None
        n = dims.plates.get(plate) if plate is not None else None
        names: dict[str, list[str | None]] = {
            k: [plate if v.ndim and v.shape[0] == n else None] + [None] * (v.ndim - 1)
            for k, v in constants.items()
        }
        add("constant_data", constants, names, ())
    order = (
        "posterior",
        "posterior_predictive",
        "log_likelihood",
        "sample_stats",
        "prior",
        "prior_predictive",
        "observed_data",
        "constant_data",
        "warmup_posterior",
        "warmup_sample_stats",
    )
    return _assemble({g: groups[g] for g in order if g in groups})


def plot_forest(ax: Any, by_chain: Mapping[str, np.ndarray], prob: float) -> None:
    """ArviZ 0.x's forest of the draws ``by_chain`` (``(chain, draw, ...)`` per site) on ``ax``,
    chains combined, with central intervals of ``prob`` (the arviz-base line has its plots in
    arviz-plots, which probgen does not require: :mod:`probgen._fallback_plot` draws one there)."""
    _az.plot_forest(
        _az.from_dict(posterior=dict(by_chain)), var_names=list(by_chain), combined=True, hdi_prob=prob, ax=ax
    )
