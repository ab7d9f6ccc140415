"""Exact inference for models whose latents are all discrete (``method="enum"``).

Every latent is summed out by Pyro's parallel enumeration (tensor variable elimination): the
result carries the exact log evidence, the posterior marginal of every latent site and the
jointly most probable assignment (Pyro's ``infer_discrete`` at temperature 0).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from probgen.fit import Fit, register_backend
from probgen.model import GenerativeModel
from probgen.posterior import discrete_map, discrete_marginals, log_evidence

__all__ = ["Enumeration"]


class Enumeration:
    """Exact enumeration (``method="enum"``); takes no options."""

    name = "enum"

    def supports(self, model: GenerativeModel, data: Any) -> str | None:
        roles = model.roles(data)
        continuous = roles.continuous_sites
        if continuous:
            return f"it has continuous latent sites {list(continuous)}; exact enumeration needs every latent discrete"
        if not roles.discrete_sites:
            return "it has no discrete latent sites to enumerate"
        return None

    def fit(self, model: GenerativeModel, data: Any, *, seed: int, progress: bool, **options: Any) -> Fit:
        if options:
            raise ValueError(f"method='enum' takes no options; got {sorted(options)}.")
        logz = float(log_evidence(model, data))
        marginals = discrete_marginals(model, data)
        joint_map = discrete_map(model, data)
        return Fit(
            model=model,
            data=data,
            method=self.name,
            params={},
            posterior=None,
            history=np.asarray([logz]),
            converged=True,
            log_evidence=logz,
            extras={"marginals": marginals, "map": joint_map},
            seed=seed,
        )


register_backend("enum", Enumeration)
