"""Simulation-based calibration (Talts et al. 2018, "Validating Bayesian inference algorithms with
simulation-based calibration"): does a backend give the right posterior for a model?

Each simulation draws parameters from the prior and data from the model (``model(None)``), fits
the data, and ranks the true value of every element of every continuous latent site among the
posterior draws.  When the backend is exact, every rank is uniform on ``0 .. L``; a U-shaped
histogram says the posterior is too narrow (under-dispersed), a hump says too wide
(over-dispersed), a slope says biased.
"""

from __future__ import annotations

import concurrent.futures
import inspect
import math
import multiprocessing
import os
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyro.poutine as poutine
import torch
from scipy.stats import binom, chisquare
from torch import Tensor
from tqdm.auto import tqdm

from probgen.arguments import ModelArgs, is_argument_data
from probgen.backend import get_backend
from probgen.errors import ConvergenceWarning
from probgen.fit import fit as fit_model
from probgen.fit import interactive
from probgen.model import GenerativeModel, sample_sites
from probgen.model import model as as_model
from probgen.relabel import _hungarian, exchangeable_sites
from probgen.state import isolated_rng
from probgen.validation import check_seed, positive_int

__all__ = ["Calibration", "calibrate"]

_NO_DRAWS = {"em": "EM gives point estimates", "enum": "enumeration has no continuous latents to rank"}
_MIN_SIMULATIONS = 20


@dataclass
class Calibration:
    """Ranks of the true values among posterior draws, one row per simulation.

    Attributes
    ----------
    ranks : dict of str to numpy.ndarray
        Site -> ``(num_simulations, *site_shape)`` integer ranks in ``0 .. num_draws``.
    num_draws : int
        Draws per fit the ranks count against (evenly thinned from the posterior).
    method : str
        The backend calibrated.
    """

    ranks: dict[str, np.ndarray]
    num_draws: int
    method: str
    alpha: float = 0.001
    seeds: list[int] = field(default_factory=list)

    @property
    def num_simulations(self) -> int:
        return int(next(iter(self.ranks.values())).shape[0]) if self.ranks else 0

    def _bins(self) -> int:
        return int(max(2, min(20, self.num_simulations // 5, self.num_draws + 1)))

    @property
    def p_values(self) -> dict[str, float]:
        """Site -> p-value of uniformity of its ranks.

        Test: Pearson's chi-square on the ranks of each element in ``B`` equal bins
        (``B = min(20, num_simulations // 5)``), and the site's p-value is the smallest over its
        elements times their number (Bonferroni), capped at 1.
        """
        out = {}
        B = self._bins()
        for site, r in self.ranks.items():
            flat = r.reshape(r.shape[0], -1)
            edges = np.linspace(0, self.num_draws + 1, B + 1)
            pmin = 1.0
            for j in range(flat.shape[1]):
                counts, _ = np.histogram(flat[:, j], bins=edges)
                expected = np.diff(edges) / (self.num_draws + 1) * flat.shape[0]
                pmin = min(pmin, float(chisquare(counts, expected).pvalue))
            out[site] = min(1.0, pmin * flat.shape[1])
        return out

    def _direction(self, site: str) -> str:
        """'biased', 'under-dispersed', 'over-dispersed' or '' from the normalised ranks."""
        u = (self.ranks[site].reshape(self.num_simulations, -1) + 0.5) / (self.num_draws + 1)
        n = u.shape[0]
        mean_z = (u.mean(0) - 0.5) / math.sqrt(1 / 12 / n)
        var_z = (u.var(0) - 1 / 12) / math.sqrt((1 / 80 - 1 / 144) / n)  # var of (u - 1/2)^2
        worst_mean = float(np.abs(mean_z).max())
        worst_var = float(var_z[np.abs(var_z).argmax()])
        if worst_mean >= abs(worst_var):
            return "biased (ranks slope)"
        return (
            "under-dispersed (posterior too narrow: U-shaped ranks)"
            if worst_var > 0
            else "over-dispersed (posterior too wide: ranks pile up in the middle)"
        )

    def summary(self) -> pd.DataFrame:
        """One row per site: p-value, verdict and the direction of any miscalibration."""
        rows = []
        for site, p in self.p_values.items():
            ok = p > self.alpha
            rows.append(
                {
                    "site": site,
                    "elements": int(np.prod(self.ranks[site].shape[1:], dtype=int)),
                    "p_value": p,
                    "verdict": "calibrated" if ok else "miscalibrated",
                    "direction": "" if ok else self._direction(site),
                }
            )
        return pd.DataFrame(rows).set_index("site")

    def plot(self, *, sites: list[str] | None = None, bins: int | None = None) -> Any:
        """Rank histograms per site (all elements pooled) with the 99% band of a uniform."""
        import matplotlib.pyplot as plt

        names = sites or list(self.ranks)
        B = bins or self._bins()
        fig, axes = plt.subplots(1, len(names), figsize=(3.2 * len(names), 2.6), squeeze=False)
        for ax, site in zip(axes[0], names, strict=True):
            r = self.ranks[site].reshape(-1)
            edges = np.linspace(0, self.num_draws + 1, B + 1)
            ax.hist(r, bins=edges, color="0.55", edgecolor="white")
            p = 1.0 / B
            lo, hi = binom.ppf(0.005, r.size, p), binom.ppf(0.995, r.size, p)
            ax.axhspan(lo, hi, color="tab:blue", alpha=0.2, label="99% band of a uniform")
            ax.axhline(r.size * p, color="tab:blue", lw=1)
            ax.set_title(f"{site} (p={self.p_values[site]:.2g})")
            ax.set_xlabel("rank of the true value")
        axes[0][0].set_ylabel("simulations")
        fig.tight_layout()
        return fig

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the ranks so far (``.npz``, no pickle); :func:`calibrate` resumes from it."""
        arrays = {f"ranks/{k}": v for k, v in self.ranks.items()}
        arrays["__num_draws__"] = np.asarray(self.num_draws)
        arrays["__seeds__"] = np.asarray(self.seeds, dtype=np.int64)
        tmp = Path(str(path) + ".tmp")
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)  # type: ignore[arg-type]
        os.replace(tmp, path)


def _response_name(gm: GenerativeModel, inputs: ModelArgs) -> str:
    """The argument a model of several arguments generates when it is left out (``y=None``)."""
    fn = getattr(gm, "fn", None)
    params = inspect.signature(fn).parameters if fn is not None else {}
    left = [
        p.name
        for p in params.values()
        if p.name not in inputs.values
        and p.default is None
        and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        and p.name != "subsample_size"
    ]
    if len(left) != 1:
        raise ValueError(
            "data must be the model's arguments with exactly one response left out (an argument whose "
            f"default is None, which the model then generates); arguments left out with default None: {left}."
        )
    return left[0]


def _generate_at(gm: GenerativeModel, seed: int, inputs: ModelArgs) -> tuple[dict[str, Tensor], ModelArgs]:
    """Parameters from the prior and a response from the model at the given inputs (covariates)."""
    response = _response_name(gm, inputs)
    with isolated_rng(seed), poutine.block(), torch.no_grad():
        trace: Any = poutine.trace(gm.model).get_trace(inputs)
    sites = {s["name"]: s for s in sample_sites(trace)}
    for name in reversed(list(sites)):  # the site that reads the response when it is given
        value = sites[name]["value"]
        prepared = gm.prepare_data({**inputs.values, response: value})
        if name in gm.roles(prepared).observed_sites:
            return {k: v["value"] for k, v in sites.items() if k != name}, prepared
    raise ValueError(f"{gm.name} generated no site that reads the argument {response!r} when it is given.")


def _generate(
    gm: GenerativeModel,
    seed: int,
    data_kwargs: Mapping[str, Any] | None = None,
    inputs: ModelArgs | None = None,
) -> tuple[dict[str, Tensor], Any]:
    """Parameters from the prior and data from the model, ``model(None, **data_kwargs)``, or a
    response at ``inputs`` for a model of several arguments."""
    if inputs is not None:
        return _generate_at(gm, seed, inputs)
    with isolated_rng(seed), poutine.block(), torch.no_grad():
        try:
            trace: Any = poutine.trace(gm.model).get_trace(None, **(data_kwargs or {}))
        except (TypeError, ValueError, AttributeError, RuntimeError, IndexError) as err:
            raise ValueError(
                f"{gm.name}(None) failed ({type(err).__name__}: {err}); simulation-based calibration "
                "needs a model that generates data when called with data=None."
            ) from err
    sites = {s["name"]: s for s in sample_sites(trace)}
    # In generation mode no site is observed: the data are what the model returns, or else the
    # value of the site that tracing the model on that value calls observed.
    returned = trace.nodes.get("_RETURN", {}).get("value")
    if isinstance(returned, Tensor) and returned.dim() == 3:  # a stack of generated sequences
        returned = list(returned.unbind(0))
    candidate = returned if returned is not None else list(sites.values())[-1]["value"]
    observed = gm.roles(gm.prepare_data(candidate)).observed_sites
    if returned is not None:
        data = returned
    elif len(observed) == 1 and observed[0] in sites:
        data = sites[observed[0]]["value"]
    else:
        raise ValueError(
            f"{gm.name} has observed sites {list(observed)}; calibration needs a model that returns the "
            "data it generates, or has one observed site."
        )
    truth = {k: v["value"] for k, v in sites.items() if k not in observed}
    return truth, data


def _align_truth(
    gm: GenerativeModel, data: Any, truth: dict[str, Tensor], posterior: dict[str, Tensor]
) -> dict[str, Tensor]:
    """Permute the true components to match the relabelled posterior (label switching)."""
    axes = exchangeable_sites(gm, data, {k: v for k, v in truth.items() if k in posterior})
    if not axes:
        return truth
    feats_t, feats_p = [], []
    for s, ax in axes.items():
        t = truth[s].movedim(ax, 0).to(torch.float64)
        draws = posterior[s].movedim(2 + ax, 2).to(torch.float64)
        k = t.shape[0]
        sd = draws.reshape(-1, k, *t.shape[1:]).std(0).clamp_min(1e-12)
        feats_t.append((t / sd).reshape(k, -1))
        feats_p.append((draws.mean((0, 1)) / sd).reshape(k, -1))
    ft, fp = torch.cat(feats_t, 1), torch.cat(feats_p, 1)
    cost = ((fp[:, None, :] - ft[None, :, :]) ** 2).sum(-1).numpy()  # posterior label x truth label
    perm = torch.as_tensor(_hungarian(cost), dtype=torch.long)
    out = dict(truth)
    for s, ax in axes.items():
        out[s] = truth[s].index_select(ax, perm)
    return out


def _one(
    gm: GenerativeModel,
    method: str,
    seed: int,
    num_draws: int,
    options: Mapping[str, Any],
    data_kwargs: Mapping[str, Any] | None = None,
    inputs: ModelArgs | None = None,
) -> dict[str, np.ndarray]:
    truth, data = _generate(gm, seed, data_kwargs, inputs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        fit = fit_model(gm, data, method=method, seed=seed, progress=False, **options)
    if not fit.posterior:
        raise ValueError(f"method={method!r} gave no posterior draws; calibration needs 'svi' or 'mcmc'.")
    roles = gm.roles(fit.data)
    truth = _align_truth(gm, fit.data, truth, dict(fit.posterior))
    ranks = {}
    for site in roles.continuous_sites:
        draws = fit.posterior[site].reshape((-1,) + tuple(fit.posterior[site].shape[2:]))
        idx = torch.linspace(0, draws.shape[0] - 1, num_draws).round().long()
        thinned = draws[idx]
        ranks[site] = (thinned < truth[site].to(thinned.dtype)).sum(0).numpy().astype(np.int64)
    return ranks


def calibrate(
    model: Any,
    method: str = "svi",
    *,
    num_simulations: int = 100,
    seed: int = 0,
    num_draws: int = 99,
    progress: bool | None = None,
    processes: int | None = None,
    checkpoint: str | os.PathLike[str] | None = None,
    alpha: float = 0.001,
    data_kwargs: Mapping[str, Any] | None = None,
    data: Any = None,
    **backend_options: Any,
) -> Calibration:
    """Simulation-based calibration of ``method`` on ``model`` (Talts et al. 2018).

    For each simulation ``i`` (seeded ``seed + i``): parameters from the prior and data from
    ``model(None)``, a fit with ``method``, and the rank of each true value among ``num_draws``
    posterior draws (evenly thinned, which also reduces MCMC autocorrelation).  Discrete latents
    summed out are not ranked; exchangeable components are matched to the relabelled posterior
    before ranking.

    Parameters
    ----------
    model : GenerativeModel or callable
        A model whose ``model(None)`` generates a data set.
    method : str, default "svi"
        A backend that gives posterior draws ("svi", "mcmc").
    num_simulations : int, default 100
        At least 20.
    seed : int, default 0
    num_draws : int, default 99
        Draws each rank counts against (ranks lie in ``0 .. num_draws``).
    progress : bool, optional
        Progress bar over simulations (default: on a terminal only).
    processes : int, optional
        Run simulations on this many processes (``concurrent.futures``, fork); default: in
        this process, one after another.
    checkpoint : path, optional
        A ``.npz`` file the ranks are saved to after every simulation; an existing file is
        resumed (its simulations are not run again).
    alpha : float, default 0.001
        A site is called miscalibrated when its p-value is at most ``alpha``.
    data_kwargs : dict, optional
        Keyword arguments of ``model(None, ...)`` that size the simulated data set (e.g.
        ``{"num_items": 100}`` for a mixture, ``{"length": 200}`` for an HMM).
    data : mapping or tuple, optional
        For a model of several arguments (``model(x, y=None)``): its inputs with the response
        left out, e.g. ``{"x": X}``.  Every simulation draws the parameters from the prior and
        the response at these inputs, then fits ``{"x": X, "y": y_simulated}``.
    **backend_options
        Passed to every fit (e.g. ``num_steps``, ``num_samples``).

    Returns
    -------
    Calibration
        ``ranks``, ``num_draws``, ``p_values``, ``summary()``, ``plot()``.

    Raises
    ------
    ValueError
        Fewer than 20 simulations, a backend with no posterior draws, a model that cannot
        generate, or a checkpoint from another setting.
    """
    if (
        isinstance(num_simulations, bool)
        or not isinstance(num_simulations, int)
        or num_simulations < _MIN_SIMULATIONS
    ):
        raise ValueError(
            f"num_simulations must be an int of at least {_MIN_SIMULATIONS} (rank histograms need them); "
            f"got {num_simulations!r}."
        )
    positive_int(num_draws, "num_draws")
    check_seed(seed)
    check_seed(seed + num_simulations - 1, "seed + num_simulations - 1")
    backend = get_backend(method)
    if backend.name in _NO_DRAWS:
        raise ValueError(
            f"method={backend.name!r} cannot be calibrated: {_NO_DRAWS[backend.name]}, and simulation-based "
            "calibration ranks the truth among posterior draws; use method='svi' or 'mcmc'."
        )
    positive_int(processes, "processes", allow_none=True)
    gm = model if isinstance(model, GenerativeModel) else as_model(model)
    inputs = None
    if data is not None:
        fn = getattr(gm, "fn", None)
        inputs = gm.prepare_data(data) if fn is not None and is_argument_data(fn, data) else None
        if not isinstance(inputs, ModelArgs):
            raise ValueError(
                "data must be the model's arguments (a mapping such as {'x': X} or a tuple) with the response "
                f"left out; got {type(data).__name__}, read as one data array."
            )
        if data_kwargs:
            raise ValueError(
                "give data (the model's inputs) or data_kwargs (the size of model(None)), not both."
            )
    _generate(
        gm, seed, data_kwargs, inputs
    )  # fails early, with a clear message, when the model cannot generate
    seeds = [seed + i for i in range(num_simulations)]
    done: dict[int, dict[str, np.ndarray]] = {}
    if checkpoint is not None and Path(checkpoint).exists():
        done = _resume(Path(checkpoint), seeds, num_draws)
    todo = [s for s in seeds if s not in done]
    show = interactive() if progress is None else bool(progress)
    options = dict(backend_options)
    with tqdm(total=len(seeds), initial=len(done), disable=not show, desc="SBC", leave=False) as bar:
        if processes and processes > 1 and todo:
            ctx = multiprocessing.get_context("fork")
            with concurrent.futures.ProcessPoolExecutor(processes, mp_context=ctx) as pool:
                futures = {
                    pool.submit(_one, gm, backend.name, s, num_draws, options, data_kwargs, inputs): s
                    for s in todo
                }
                for fut in concurrent.futures.as_completed(futures):
                    done[futures[fut]] = fut.result()
                    bar.update(1)
                    _save(checkpoint, done, seeds, num_draws, backend.name, alpha)
        else:
            for s in todo:
                done[s] = _one(gm, backend.name, s, num_draws, options, data_kwargs, inputs)
                bar.update(1)
                _save(checkpoint, done, seeds, num_draws, backend.name, alpha)
    ordered = [done[s] for s in seeds]
    ranks = {site: np.stack([r[site] for r in ordered]) for site in ordered[0]}
    return Calibration(ranks=ranks, num_draws=num_draws, method=backend.name, alpha=alpha, seeds=seeds)


def _save(
    path: Any,
    done: dict[int, dict[str, np.ndarray]],
    seeds: list[int],
    num_draws: int,
    method: str,
    alpha: float,
) -> None:
    if path is None:
        return
    kept = [s for s in seeds if s in done]
    ranks = {site: np.stack([done[s][site] for s in kept]) for site in done[kept[0]]}
    Calibration(ranks, num_draws, method, alpha, kept).save(path)


def _resume(path: Path, seeds: list[int], num_draws: int) -> dict[int, dict[str, np.ndarray]]:
    with open(path, "rb") as fh, np.load(fh, allow_pickle=False) as npz:
        files = {k: npz[k] for k in npz.files}
    if int(files.get("__num_draws__", -1)) != num_draws:
        raise ValueError(
            f"checkpoint {str(path)!r} was written with num_draws={int(files.get('__num_draws__', -1))}; "
            f"this call asks for {num_draws}. Use another checkpoint file."
        )
    saved = [int(s) for s in files["__seeds__"]]
    out: dict[int, dict[str, np.ndarray]] = {}
    for i, s in enumerate(saved):
        if s in seeds:
            out[s] = {k[len("ranks/") :]: v[i] for k, v in files.items() if k.startswith("ranks/")}
    return out
