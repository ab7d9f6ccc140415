"""Diagnostics on top of ArviZ: `summary`, `check` and `compare`."""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyro.poutine as poutine
import torch
from pyro.infer.autoguide import AutoDelta, AutoGuide

from probgen import arviz_bridge
from probgen.arviz_bridge import pareto_khat, to_inference_data
from probgen.posterior import split_params, traced_with
from probgen.relabel import _is_simplex, exchangeable_sites, find_exchangeable
from probgen.result import FitResult
from probgen.state import isolated_state

if TYPE_CHECKING:  # pragma: no cover
    from probgen.result import FitResult as Fit

__all__ = ["check", "compare", "loo", "summary"]


def _require_fit(fit: Any, argname: str = "fit") -> None:
    if not isinstance(fit, FitResult):
        raise TypeError(
            f"{argname} must be a probgen.Fit (the result of probgen.fit); got {type(fit).__name__}."
        )


def summary(fit: Fit, **kwargs: Any) -> pd.DataFrame:
    """Table of estimates: ArviZ's summary for posterior fits, point estimates otherwise.

    Rows are labelled as ArviZ labels them, by site and by the coordinates of its dims; a fit
    on a DataFrame names the feature dims after its columns (``locs[0, waiting]``), other dims
    count from 0 (``weights[1]``).

    Parameters
    ----------
    fit : Fit
        Result of `probgen.fit`, from any backend.
    **kwargs
        Passed to ArviZ's summary for posterior fits (e.g. ``hdi_prob`` with ArviZ 0.x).

    Returns
    -------
    pandas.DataFrame
        One row per element of each site: ArviZ's columns (mean, sd, HDI, ESS, R-hat) for
        posterior fits, one column ``estimate`` for point fits.

    Raises
    ------
    TypeError
        If ``fit`` is not a probgen fit.
    """
    _require_fit(fit)
    draws = arviz_bridge.posterior_dataset(fit)
    if not fit.posterior:
        return arviz_bridge.point_summary(draws)
    with warnings.catch_warnings():
        # constant elements (a Cholesky factor's unit diagonal) have no R-hat/ESS: NaN, not noise
        warnings.simplefilter("ignore", RuntimeWarning)
        return arviz_bridge.summary(draws, **kwargs)


def loo(fit: Fit) -> pd.Series:
    """Pareto-smoothed importance-sampling leave-one-out cross-validation of a posterior fit.

    PSIS-LOO averages each item's likelihood over posterior draws, so it needs a fit with draws
    (``"mcmc"``, ``"svi"``); a point fit (``"em"``, a MAP guide) is refused with a pointer to
    `probgen.compare`, which ranks point fits by BIC.  The pointwise log-likelihood has discrete
    latents summed out, as in ``fit.to_arviz()``.

    Parameters
    ----------
    fit : Fit
        A posterior fit whose model has a likelihood.

    Returns
    -------
    pandas.Series
        ``elpd_loo``, ``se``, ``p_loo``, ``n_samples``, ``n_data_points``, ``max_pareto_k`` and
        ``warning`` (True when some Pareto k-hat is too high for the estimate to be trusted).

    Raises
    ------
    TypeError
        If ``fit`` is not a probgen fit.
    ValueError
        If ``fit`` is a point fit, has no data kept, or its model has no likelihood.
    """
    _require_fit(fit)
    if not fit.posterior:
        raise ValueError(
            f"loo needs posterior draws, and this is a point fit (method={fit.method!r}): PSIS-LOO "
            "averages each item's likelihood over draws, which one estimate does not have (ArviZ's "
            "az.loo on its export fails for the same reason). Rank point fits by BIC with "
            "probgen.compare(fits) or fit.bic(data), or refit with method='mcmc' or 'svi'."
        )
    if fit.data is None:
        raise ValueError("loo needs the fit's training data, which this fit did not keep (streamed data).")
    if fit.model.density == "none":
        raise ValueError(f"loo needs a likelihood; {fit.model.name} is implicit (it only samples).")
    return arviz_bridge.loo(to_inference_data(fit))


def check(fit: Fit, *, max_rhat: float = 1.01, min_ess: float = 400.0) -> list[str]:
    """List what makes a fit untrustworthy; an empty list means it looks healthy.

    Parameters
    ----------
    fit : Fit
        Result of `probgen.fit`, from any backend.
    max_rhat : float, default 1.01
        Largest acceptable rank-normalised split R-hat (posterior fits with several chains).
    min_ess : float, default 400
        Smallest acceptable bulk and tail effective sample size (MCMC fits).

    Returns
    -------
    list of str
        One sentence per problem, e.g. ``"site 'locs': R-hat 1.08 > 1.01; run more warmup"``.
    """
    _require_fit(fit)
    problems: list[str] = []
    history = np.asarray(fit.history, dtype=float)
    if history.size and not np.all(np.isfinite(history)):
        problems.append(f"the objective history has {int((~np.isfinite(history)).sum())} non-finite values")
    if fit.method == "em":
        if not fit.converged:
            problems.append("EM did not converge within max_iter; raise max_iter or tol")
        if history.size > 1:
            drops = np.diff(history)
            worst = float(drops.min())
            if worst < -1e-8 * max(1.0, abs(float(history[-1]))):
                problems.append(
                    f"EM log-likelihood decreased by {-worst:.3g} at some iteration (must never drop)"
                )
    elif fit.method == "svi":
        if not fit.converged:
            reasons = [str(r) for r in fit.extras.get("convergence", []) if isinstance(r, str)]
            problems += [f"SVI did not converge: {r}" for r in reasons] or [
                "SVI did not converge: the windowed loss had not settled; raise num_steps or lower lr"
            ]
        problems += _guide_fit_problems(fit)
    if fit.sample_stats and "diverging" in fit.sample_stats:
        n_div = int(np.asarray(fit.sample_stats["diverging"]).sum())
        if n_div:
            problems.append(f"{n_div} divergent transitions; raise target_accept_prob or reparametrise")
    if fit.sample_stats and "energy" in fit.sample_stats:
        problems += _energy_problems(fit.sample_stats["energy"])
    if fit.posterior and fit.method == "mcmc":
        with warnings.catch_warnings():
            problems += _posterior_problems(fit, max_rhat, min_ess)
    if fit.data is not None:
        problems += _collapsed_components(fit)
    return problems


#: E-BFMI below which momentum resampling explores the energy distribution poorly (Betancourt
#: 2016, "Diagnosing suboptimal cotangent disintegrations in Hamiltonian Monte Carlo"; Stan's bound).
_MIN_BFMI = 0.3


def _energy_problems(energy: Any) -> list[str]:
    """Chains whose E-BFMI (ArviZ's ``bfmi`` of the per-draw Hamiltonian) is below 0.3."""
    e = np.asarray(energy, dtype=float)
    if e.ndim != 2 or e.shape[1] < 3 or not np.all(np.isfinite(e)):
        return []
    values = arviz_bridge.bfmi(e)
    low = [(c, float(v)) for c, v in enumerate(values) if v < _MIN_BFMI]
    if not low:
        return []
    listed = ", ".join(f"chain {c}: {v:.2f}" for c, v in low)
    return [
        f"low E-BFMI ({listed}) < {_MIN_BFMI}: momentum resampling explores the energy distribution "
        "poorly (heavy tails, or a funnel), so the draws may miss parts of the posterior; "
        "reparameterise (non-centred), or give heavy-tailed latents lighter-tailed priors"
    ]


#: Draws from the guide for its importance weights, and the Pareto k-hat above which they fail.
_GUIDE_DRAWS = 400
_MAX_KHAT = 0.7


def guide_khat(fit: Fit, num_draws: int = _GUIDE_DRAWS) -> float | None:
    """Pareto k-hat of the importance weights ``p(theta, data) / q(theta)`` of an SVI fit's guide.

    ``theta`` are ``num_draws`` draws from the fitted autoguide; a k-hat above 0.7 says the guide
    misses mass the posterior has (too narrow, or the wrong shape: a mean-field guide on strongly
    correlated latents), so its posterior sds and intervals are not to be trusted.  None when it
    does not apply: no autoguide with a scale, data streamed (not kept), or discrete latents.
    """
    guide = fit.extras.get("guide")
    if fit.data is None or not isinstance(guide, AutoGuide) or isinstance(guide, AutoDelta):
        return None
    roles = fit.model.roles(fit.data)
    if roles.discrete_sites or not roles.continuous_sites:
        return None
    fixed = {k: v for k, v in fit.params.items() if k in roles.param_sites}
    log_w = np.empty(num_draws)
    with isolated_state(0), torch.no_grad():  # the user's random state and param store untouched
        for i in range(num_draws):
            q = poutine.trace(guide).get_trace(fit.data)
            values: dict[str, torch.Tensor] = {n: q.nodes[n]["value"] for n in roles.continuous_sites}  # type: ignore[misc]
            p = traced_with(fit.model, fit.data, values, fixed)
            log_w[i] = float(p.log_prob_sum()) - float(q.log_prob_sum())
    if not np.all(np.isfinite(log_w)):
        return math.inf
    return pareto_khat(log_w)


def _guide_fit_problems(fit: Fit) -> list[str]:
    """Name a variational guide that misses the posterior's shape (PSIS diagnostic, Yao et al. 2018)."""
    k = guide_khat(fit)
    if k is None or k <= _MAX_KHAT:
        return []
    return [
        f"the variational guide is likely too narrow or the wrong shape: Pareto k-hat {k:.2f} > "
        f"{_MAX_KHAT} for the importance weights p(theta, data) / q(theta) of {_GUIDE_DRAWS} guide draws "
        "(strongly correlated latents under a mean-field guide, for one), so posterior sds and intervals "
        'are not to be trusted; fit with guide="mvn" (a full-covariance guide), or with method="mcmc"'
    ]


def _posterior_problems(fit: Fit, max_rhat: float, min_ess: float) -> list[str]:
    problems: list[str] = []
    posterior = fit.posterior or {}
    draws = {k: v.detach().cpu().numpy() for k, v in posterior.items()}
    names = list(posterior)
    warnings.simplefilter("ignore", RuntimeWarning)  # constant elements: NaN R-hat/ESS
    chains = next(iter(posterior.values())).shape[0]
    bad: list[str] = []
    if chains > 1:
        rhat = arviz_bridge.rhat(draws)
        for name in names:
            worst = float(np.nanmax(np.asarray(rhat[name])))
            if not worst <= max_rhat:
                bad.append(name)
                problems.append(
                    f"site {name!r}: R-hat {worst:.3f} > {max_rhat}; run more warmup or more chains"
                )
    else:
        problems.append("one chain only: R-hat cannot be computed; use num_chains >= 2")
    for method in ("bulk", "tail"):
        ess = arviz_bridge.ess(draws, method=method)
        for name in names:
            worst = float(np.nanmin(np.asarray(ess[name])))
            if not worst >= min_ess:
                problems.append(f"site {name!r}: {method} ESS {worst:.0f} < {min_ess:.0f}; draw more samples")
    if bad and fit.data is not None:
        problems += _label_switching(fit, bad)
    return problems


def _label_switching(fit: Fit, bad: list[str]) -> list[str]:
    """Name label switching where probgen's relabelling cannot apply."""
    posterior = fit.posterior or {}
    one = {**fit.params, **{k: v[0, -1] for k, v in posterior.items()}}
    if exchangeable_sites(fit.model, fit.data, one):
        return []  # relabelled already: a high R-hat there is poor mixing, not switching
    exchangeable = find_exchangeable(fit.model, fit.data, one, any_axis=True)
    switched = [s for s in bad if s in exchangeable]
    if not switched:
        return []
    return [
        f"label switching: the components of {switched} are exchangeable (permuting them leaves the "
        "likelihood unchanged) and no enumerated discrete latent indexes them, so the draws cannot be "
        "relabelled and their means and R-hat are not meaningful; order the components (e.g. sort "
        "the locations) or summarise label-invariant quantities"
    ]


def _collapsed_components(fit: Fit) -> list[str]:
    """Empty or coinciding components of exchangeable sites (a collapsed mixture)."""
    gm, data = fit.model, fit.data
    if not gm.roles(data).discrete_sites:
        return []
    axes = exchangeable_sites(gm, data, fit.params)
    if not axes:
        return []
    problems: list[str] = []
    values, fixed = split_params(gm, data, fit.params)
    trace = traced_with(gm, data, values, fixed)
    distinct = [s for s in axes if not _is_simplex(trace.nodes[s])]
    for s in axes:
        if _is_simplex(trace.nodes[s]):
            w = fit.params[s].movedim(axes[s], 0).reshape(fit.params[s].shape[axes[s]], -1).mean(-1)
            k = len(w)
            empty = [int(i) for i in torch.nonzero(w < 0.01 / k).reshape(-1)]
            if empty:
                problems.append(
                    f"components {empty} of {s!r} have weight below {0.01 / k:.3g}: empty components; "
                    "fit fewer components or start elsewhere"
                )
    if distinct:
        feats = []
        for s in distinct:
            if fit.posterior:
                draws = fit.posterior[s].movedim(2 + axes[s], 2)
                mean = draws.mean((0, 1))
                sd = draws.std((0, 1)).clamp_min(1e-12)
                feats.append((mean.reshape(mean.shape[0], -1), sd.reshape(sd.shape[0], -1)))
            else:
                v = fit.params[s].movedim(axes[s], 0)
                v = v.reshape(v.shape[0], -1)
                feats.append((v, 1e-3 * (v.abs() + 1.0)))
        k = feats[0][0].shape[0]
        for i in range(k):
            for j in range(i + 1, k):
                close = all(
                    bool(((m[i] - m[j]).abs() <= torch.maximum(sd[i], sd[j])).all()) for m, sd in feats
                )
                if close:
                    problems.append(
                        f"components {i} and {j} coincide in {distinct} (within posterior sd or 0.1%): "
                        "a collapsed mixture; try other starting values, more steps, or fewer components"
                    )
    return problems


def compare(fits: Mapping[str, Fit], data: Any = None, *, ic: str | None = None) -> pd.DataFrame:
    """Rank fits of competing models on the same data.

    Posterior fits are ranked by PSIS-LOO (``arviz.compare``); point fits by BIC (lower is
    better), with AIC and log-likelihood alongside.  A dict that mixes point fits and posterior
    fits is ranked by BIC, each fit at its ``params`` (the posterior mean for a posterior fit);
    the ``method`` column says which backend made each fit, and LOO or WAIC on such a dict is
    refused.

    Parameters
    ----------
    fits : dict of str to Fit
        Named fits, e.g. ``{"k=2": f2, "k=3": f3}``.
    data : array-like, optional
        Data to score point fits on (default: each fit's training data).
    ic : {"loo", "waic", "bic"}, optional
        Force the criterion.

    Returns
    -------
    pandas.DataFrame
        One row per fit, best first: ArviZ's comparison table for LOO and WAIC; for BIC the
        columns ``rank``, ``method``, ``log_lik``, ``n_params``, ``bic``, ``aic``, ``d_bic``.
        ``table.attrs["criterion"]`` names the criterion used.

    Raises
    ------
    TypeError
        If a value of ``fits`` is not a probgen fit.
    ValueError
        If ``fits`` is empty, ``ic`` is unknown, or LOO/WAIC is asked of a point fit.
    """
    if not isinstance(fits, Mapping) or not fits:
        raise ValueError(f"fits must be a non-empty dict of name -> Fit; got {type(fits).__name__}.")
    for name, f in fits.items():
        _require_fit(f, f"fits[{name!r}]")
    if ic is not None and ic not in ("loo", "waic", "bic"):
        raise ValueError(f"ic must be 'loo', 'waic' or 'bic'; got {ic!r}.")
    all_posterior = all(f.posterior for f in fits.values())
    if ic in ("loo", "waic") or (ic is None and all_posterior):
        if not all_posterior:
            points = [k for k, f in fits.items() if not f.posterior]
            raise ValueError(
                f"ic={ic!r} needs posterior draws for every fit, and {points} are point fits "
                f"({', '.join(sorted({fits[k].method for k in points}))}): PSIS-LOO and WAIC average over "
                "draws, which a point estimate does not have. Compare point fits by BIC (ic='bic', the "
                "default when any fit is a point fit), or refit them with method='mcmc' or 'svi'."
            )
        ranked = arviz_bridge.compare({k: to_inference_data(f) for k, f in fits.items()}, ic=ic or "loo")
        ranked.attrs["criterion"] = ic or "loo"
        return ranked
    rows = {}
    for name, f in fits.items():
        d = f._data(data)
        ll = f.log_likelihood(d)
        k = f.num_parameters(d)
        n = f.model.num_observations(d)
        rows[name] = {
            "method": f.method,
            "log_lik": ll,
            "n_params": k,
            "bic": -2 * ll + k * math.log(n),
            "aic": -2 * ll + 2 * k,
        }
    table = pd.DataFrame.from_dict(rows, orient="index").sort_values("bic")
    table.insert(0, "rank", np.arange(len(table)))
    table["d_bic"] = table["bic"] - table["bic"].min()
    table.attrs["criterion"] = "bic"
    return table
