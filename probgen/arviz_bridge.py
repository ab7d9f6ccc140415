"""The one conversion from a probgen `Fit` to ArviZ (0.23 line, built on ``arviz.from_dict``).

ArviZ's own Pyro converter drops the log-likelihood group for models with enumerated discrete
latents and carries only ``diverging`` in sample_stats; this converter fills both.  Keeping it
in one module means a move to ArviZ 1.x (xarray DataTree) touches this file only.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import arviz as az
import numpy as np
import torch

from probgen.arguments import ModelArgs
from probgen.capabilities import ObservedArrays

if TYPE_CHECKING:  # pragma: no cover
    from probgen.model import GenerativeModel
    from probgen.result import FitResult as Fit

__all__ = ["log_likelihood_name", "pareto_khat", "to_inference_data"]


def _numpy(d: Mapping[str, Any]) -> dict[str, np.ndarray]:
    out = {}
    for k, v in d.items():
        arr = v.detach().cpu().numpy() if isinstance(v, torch.Tensor) else np.asarray(v)
        out[k] = arr
    return out


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


def pareto_khat(log_weights: np.ndarray) -> float:
    """Pareto k-hat of Pareto-smoothed importance sampling for one set of log weights.

    ArviZ 0.23 offers ``psislw(log_weights) -> (smoothed, k)``; the arviz-stats line names the
    same function ``arviz_stats.psislw``.
    """
    lw = np.asarray(log_weights, dtype=float).reshape(-1)
    psislw = getattr(az, "psislw", None)
    if psislw is None:  # ArviZ 1.x: the function lives in arviz_stats
        import arviz_stats

        psislw = arviz_stats.psislw
    _, k = psislw(lw)
    return float(np.asarray(k).reshape(-1)[0])


def _observed(fit: Fit) -> dict[str, np.ndarray]:
    return _numpy(observed_arrays(fit.model, fit.data))


def to_inference_data(
    fit: Fit, *, posterior_predictive: bool = False, num_ppc_samples: int | None = None
) -> az.InferenceData:
    """Convert ``fit`` to ``arviz.InferenceData``.

    Groups: ``posterior`` (draws; point estimates as one chain of one draw), ``log_likelihood``
    (chain, draw, item) with discrete latents summed out, ``sample_stats`` (sampler statistics
    for MCMC; the objective's final value otherwise), ``observed_data``, and
    ``posterior_predictive`` when asked.
    """
    if fit.posterior:
        posterior = _numpy(fit.posterior)
    else:
        posterior = _numpy({k: v[None, None] for k, v in fit.params.items()})
    ll_name = log_likelihood_name(fit)
    groups: dict[str, Any] = {"observed_data": _observed(fit)}
    if isinstance(fit.data, ModelArgs):  # covariates, group indices: what the model was given
        groups["constant_data"] = _numpy(fit.data.constants)
    if fit.model.density != "none":  # an implicit model (a GAN) has no likelihood to report
        groups["log_likelihood"] = {ll_name: fit.pointwise_log_likelihood().detach().cpu().numpy()}
    if posterior:
        groups["posterior"] = posterior
    if fit.sample_stats:
        groups["sample_stats"] = dict(fit.sample_stats)
    if posterior_predictive:
        reps = fit.posterior_predictive(num_samples=num_ppc_samples)
        groups["posterior_predictive"] = _numpy(reps)  # thinned replicates sit in one chain
    groups = {k: v for k, v in groups.items() if v}
    return az.from_dict(**groups)
