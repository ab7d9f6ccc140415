"""``fit.plot`` of a model that draws no picture of its own (:meth:`probgen.Fit.plot`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from probgen.arviz_bridge import LEGACY, observed_arrays, plot_forest

if TYPE_CHECKING:  # pragma: no cover
    from probgen.result import FitResult as Fit

__all__ = ["plot_fit_fallback"]


# A user's model: the global latent sites as a forest (posterior fits) or bars of the point values
# (point fits), beside a posterior predictive check of the observed site.  With ArviZ 0.x the forest is ArviZ's own; with the
# arviz-base line, ArviZ's plots live in arviz-plots, which probgen does not require, so the forest
# is drawn here by hand from the draws (means and central 94% intervals, as ArviZ draws it).  The
# predictive check is drawn by hand for both lines: it needs replicates of the point estimate too,
# which ArviZ's check (one replicate per posterior draw) cannot take.

#: Central interval of the forest (ArviZ's default HDI probability).
_FOREST_PROB = 0.94
#: Most scalar components a forest or bar panel shows.
_MAX_ROWS = 40
_FALLBACK_OPTIONS = ("ax=", "var_names=", "num_ppc_samples=")


def plot_fit_fallback(
    fit: Fit, data: Any, *, ax: Any = None, var_names: Any = None, num_ppc_samples: int = 50, **kwargs: Any
) -> Any:
    """The picture of a fit whose model draws none: global sites beside a predictive check.

    Left: posterior fits show a forest of the global latent sites (mean and central 94%
    interval of each scalar component, chains combined); point fits show bars of their point
    values.  Right: the observed site's values (histogram, black) against ``num_ppc_samples``
    replicated data sets (thin lines), drawn from the posterior draws, or from the point
    estimate of a point fit.

    Returns the left axes; the check is on the same figure (``ax.figure.axes``).
    """
    if kwargs:
        raise TypeError(
            f"unexpected option(s) {sorted(kwargs)} for fit.plot of {fit.model.name} (no picture of its own: "
            f"the global sites and a predictive check); it takes {', '.join(_FALLBACK_OPTIONS)}."
        )
    if isinstance(num_ppc_samples, bool) or not isinstance(num_ppc_samples, int):
        raise TypeError(f"num_ppc_samples must be an int; got {type(num_ppc_samples).__name__}.")
    if num_ppc_samples < 1:
        raise ValueError(f"num_ppc_samples must be at least 1; got {num_ppc_samples}.")
    roles = fit.model.roles(data)
    draws = fit._draws()
    names = [s for s in roles.global_sites if s in draws]
    if var_names is not None:
        wanted = [var_names] if isinstance(var_names, str) else list(var_names)
        unknown = [v for v in wanted if v not in names]
        if unknown:
            raise ValueError(f"var_names {unknown} are not global sites of {fit.model.name}; it has {names}.")
        names = wanted
    left, right = _two_panels(ax)
    sites = {k: draws[k].detach().cpu().double().numpy() for k in names}
    if not sites:
        left.text(0.5, 0.5, "no global latent sites", ha="center", va="center", transform=left.transAxes)
        left.set_axis_off()
    elif fit.posterior:
        chains = next(iter(fit.posterior.values())).shape[:2]
        by_chain = {k: v.reshape(chains + v.shape[1:]) for k, v in sites.items()}
        if LEGACY:
            plot_forest(left, by_chain, _FOREST_PROB)
        else:
            _forest(left, sites)
        left.set_title(f"{fit.model.name}: posterior of the global sites ({sites[names[0]].shape[0]} draws)")
    else:
        _point_bars(left, {k: v[0] for k, v in sites.items()})
        left.set_title(f"{fit.model.name}: point estimates ({fit.method})")
    _predictive_check(right, fit, data, roles, num_ppc_samples)
    return left


def _two_panels(ax: Any) -> tuple[Any, Any]:
    import matplotlib.pyplot as plt

    if ax is None:
        _, (a, b) = plt.subplots(1, 2, figsize=(10.0, 4.2), layout="constrained")
        return a, b
    if not hasattr(ax, "add_collection"):
        raise TypeError(f"ax must be matplotlib Axes or None; got {type(ax).__name__}.")
    from mpl_toolkits.axes_grid1 import make_axes_locatable

    return ax, make_axes_locatable(ax).append_axes("right", size="100%", pad=0.8)


def _rows(sites: Mapping[str, np.ndarray], lead: int) -> list[tuple[str, np.ndarray]]:
    """``(label, values)`` per scalar component of each site (``lead`` leading sample dims)."""
    rows = []
    for name, v in sites.items():
        shape = v.shape[lead:]
        flat = v.reshape(v.shape[:lead] + (-1,))
        for j, idx in enumerate(np.ndindex(*shape) if shape else [()]):
            label = name + (f"[{', '.join(map(str, idx))}]" if idx else "")
            rows.append((label, flat[..., j]))
    return rows[:_MAX_ROWS]


def _forest(ax: Any, sites: Mapping[str, np.ndarray]) -> None:
    """Mean (dot) and central ``_FOREST_PROB`` interval (line) of each component of flat draws."""
    rows = _rows(sites, 1)
    tail = (1.0 - _FOREST_PROB) / 2
    y = np.arange(len(rows))[::-1]
    for yi, (_, v) in zip(y, rows, strict=True):
        lo, hi = np.quantile(v, [tail, 1.0 - tail])
        ax.plot([lo, hi], [yi, yi], color="C0", linewidth=2)
    ax.plot([v.mean() for _, v in rows], y, "o", color="C0", markersize=5)
    ax.set_yticks(y, [label for label, _ in rows])
    ax.set_xlabel(f"value (mean, {_FOREST_PROB:.0%} interval)")


def _point_bars(ax: Any, values: Mapping[str, np.ndarray]) -> None:
    """One horizontal bar per scalar component of the point estimates."""
    rows = _rows(values, 0)
    y = np.arange(len(rows))[::-1]
    ax.barh(y, [float(v) for _, v in rows], color="C0", height=0.6)
    ax.axvline(0.0, color="0.5", linewidth=0.8)
    ax.set_yticks(y, [label for label, _ in rows])
    ax.set_xlabel("point estimate")


def _predictive_check(ax: Any, fit: Fit, data: Any, roles: Any, num_samples: int) -> None:
    """Histogram of the observed site's values against replicated data sets' histograms."""
    from probgen.posterior import posterior_predictive

    if not roles.observed_sites:
        ax.text(0.5, 0.5, "no observed site", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
        return
    site = roles.observed_sites[0]
    observed = observed_arrays(fit.model, data)
    values = observed.get(site, next(iter(observed.values()), None))
    if values is None:  # pragma: no cover - every observed site has data
        return
    draws = fit._draws()
    S = next(iter(draws.values())).shape[0] if draws else 1
    if S > 1:
        idx = torch.linspace(0, S - 1, min(num_samples, S)).round().long()
        draws = {k: v[idx] for k, v in draws.items()}
    else:  # a point estimate: replicate it
        draws = {k: v.expand((num_samples,) + tuple(v.shape[1:])) for k, v in draws.items()}
    reps = posterior_predictive(fit.model, data, draws, fit._fixed(), seed=fit.seed, sites=(site,))[site]
    obs = torch.as_tensor(values).detach().cpu().double().numpy().ravel()
    rep = reps.detach().cpu().double().numpy().reshape(len(reps), -1)
    integer = bool(np.all(obs == np.round(obs))) and np.ptp(obs) <= 50
    if integer:
        bins = np.arange(min(obs.min(), rep.min()) - 0.5, max(obs.max(), rep.max()) + 1.5)
    else:
        bins = np.histogram_bin_edges(obs, bins="auto")
    mids = (bins[:-1] + bins[1:]) / 2
    for r in rep:
        ax.plot(mids, np.histogram(r, bins=bins, density=True)[0], color="C0", alpha=0.25, linewidth=0.8)
    ax.plot(mids, np.histogram(obs, bins=bins, density=True)[0], color="k", linewidth=2)
    source = "posterior draws" if fit.posterior else "the point estimate"
    ax.set(
        xlabel=f"{site}",
        ylabel="density",
        title=f"predictive check of '{site}':\ndata (black), {len(rep)} replicates from {source}",
    )
