"""Exact inference for models whose latents are all discrete (``method="enum"``).

Every latent is summed out by Pyro's parallel enumeration (tensor variable elimination): the
result carries the exact log evidence, the posterior marginal of every latent site and the
jointly most probable assignment (Pyro's ``infer_discrete`` at temperature 0).  ``pyro.param``
sites are set by maximising that exact log evidence (type-II maximum likelihood, L-BFGS).
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
import pyro
import torch

from probgen.backend import BackendBase, Option, register_backend
from probgen.capabilities import MasksObserved
from probgen.errors import ConvergenceWarning
from probgen.fit import Fit
from probgen.model import GenerativeModel
from probgen.posterior import discrete_map, discrete_marginals, enum_factors, log_evidence
from probgen.validation import positive_int

__all__ = ["Enumeration"]


class Enumeration(BackendBase):
    """Exact enumeration (``method="enum"``).

    Options, used only when the model has ``pyro.param`` sites (they are fitted by maximising
    the exact log evidence with L-BFGS): ``max_iter`` (200 L-BFGS iterations), ``tol`` (1e-9:
    stop when the log evidence per item changes by less).
    """

    name = "enum"
    options = (
        Option("max_iter", "any", 200, "with pyro.param sites: L-BFGS iterations at most"),
        Option("tol", "any", 1e-9, "with pyro.param sites: change of the log evidence per item"),
    )

    def missing_refusal(self, model: GenerativeModel) -> str | None:
        """Missing cells are served by a model that masks its observed sites (a user's model)."""
        if isinstance(model, MasksObserved):
            return None
        return f"{model.name} does not mask the missing cells of its observed sites (MasksObserved)"

    def refusal(self, model: GenerativeModel, data: Any) -> str | None:
        roles = model.roles(data)
        continuous = roles.continuous_sites
        if continuous:
            return f"it has continuous latent sites {list(continuous)}; exact enumeration needs every latent discrete"
        if not roles.discrete_sites:
            return "it has no discrete latent sites to enumerate"
        return None

    def fit(self, model: GenerativeModel, data: Any, *, seed: int, progress: bool, **options: Any) -> Fit:
        roles = model.roles(data)
        known = {"max_iter", "tol"} if roles.param_sites else set()
        unknown = set(options) - known
        if unknown:
            what = (
                "its options are max_iter, tol" if known else "it takes no options without pyro.param sites"
            )
            raise ValueError(f"method='enum' got unknown option(s) {sorted(unknown)}; {what}.")
        history: list[float] = []
        converged = True
        if roles.param_sites:
            history, converged = self._fit_params(
                model, data, int(options.get("max_iter", 200)), float(options.get("tol", 1e-9))
            )
        logz = float(log_evidence(model, data))
        marginals = discrete_marginals(model, data)
        joint_map = discrete_map(model, data)
        return Fit(
            model=model,
            data=data,
            method=self.name,
            params={},
            posterior=None,
            history=np.asarray(history + [logz]),
            converged=converged,
            log_evidence=logz,
            extras={"marginals": marginals, "map": joint_map},
            seed=seed,
        )

    @staticmethod
    def _fit_params(model: GenerativeModel, data: Any, max_iter: int, tol: float) -> tuple[list[float], bool]:
        """Maximise the exact log evidence over the model's ``pyro.param`` sites."""
        positive_int(max_iter, "max_iter")
        roles = model.roles(data)
        with torch.no_grad():
            float(log_evidence(model, data))  # creates the params in the (scoped) store
        store = pyro.get_param_store()
        leaves = [store.get_param(n).unconstrained() for n in roles.param_sites]  # type: ignore[attr-defined]
        opt = torch.optim.LBFGS(
            leaves,
            max_iter=max_iter,
            line_search_fn="strong_wolfe",
            tolerance_grad=1e-10,
            tolerance_change=1e-12,
        )
        history: list[float] = []

        def closure() -> torch.Tensor:
            opt.zero_grad()
            loss = -enum_factors(model, data, vectorized=False).contract(pointwise=False).sum()
            loss.backward()
            history.append(-loss.item())
            return loss

        with torch.enable_grad():
            opt.step(closure)
        n = max(model.num_items(data), 1)
        converged = len(history) < max_iter or (
            len(history) > 1 and abs(history[-1] - history[-2]) / n < max(tol, 1e-12)
        )
        if not all(math.isfinite(h) for h in history):
            raise FloatingPointError("the log evidence became non-finite while fitting the pyro.param sites.")
        if not converged:
            warnings.warn(
                f"enum: the pyro.param sites did not converge in max_iter={max_iter} L-BFGS iterations.",
                ConvergenceWarning,
                stacklevel=4,
            )
        return history, converged


register_backend("enum", Enumeration)
