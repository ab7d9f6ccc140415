"""Naive Bayes: a generative classifier as a two-layer Bayesian network (class -> each feature)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import networkx as nx
import numpy as np
import torch
from torch import Tensor

from probgen.models.bayesnet import BayesianNetwork

__all__ = ["NaiveBayes"]


class NaiveBayes(BayesianNetwork):
    """Categorical naive Bayes: ``class -> feature`` for every feature, fitted like any network.

    Data are a DataFrame with one column per feature and the class column ``class_variable``
    (its label, or NaN/-1 for an unlabelled row: EM then uses that row too, semi-supervised),
    or an array whose last column is the class label (features named ``x0, x1, ...``).
    ``fit.predict(features)`` and ``fit.predict_proba(features)`` apply Bayes' rule; missing
    features are summed out.  The network is built from the first data seen.

    Parameters
    ----------
    n_classes : int, optional
        Number of classes (default: the labels seen; states ``0 .. n_classes-1`` for arrays).
    class_variable : str, default "class"
        Name of the class column.
    alpha : float, default 1.0
        Additive (Laplace) smoothing of every CPD row, as scikit-learn's ``CategoricalNB``;
        0 gives the MLE.

    Examples
    --------
    >>> import pandas as pd, probgen as pg
    >>> df = pd.DataFrame({"x": ["a", "a", "b", "b"], "class": [0, 0, 1, 1]})
    >>> fit = pg.fit(NaiveBayes(), df, method="em")
    >>> fit.predict(df[["x"]]).tolist()
    [0, 0, 1, 1]
    """

    def __init__(
        self,
        n_classes: int | None = None,
        *,
        class_variable: str = "class",
        alpha: float = 1.0,
        features: list[str] | None = None,
        states: Mapping[str, list[Any]] | None = None,
    ) -> None:
        if n_classes is not None and (
            isinstance(n_classes, bool) or not isinstance(n_classes, int) or n_classes < 2
        ):
            raise ValueError(f"n_classes must be an int >= 2; got {n_classes!r}.")
        if not alpha >= 0:
            raise ValueError(f"alpha must be >= 0; got {alpha!r}.")
        self.n_classes = n_classes
        self.class_variable = class_variable
        self.alpha = float(alpha)
        self._built = False
        self._cache: dict[Any, Any] = {}
        self._given_states = {k: list(v) for k, v in (states or {}).items()}
        if features is not None:
            self._build(list(features), dict(states or {}))

    def _build(self, features: list[str], states: dict[str, list[Any]]) -> None:
        states = {**self._given_states, **states}
        if self.class_variable in features:
            features = [f for f in features if f != self.class_variable]
        g = nx.DiGraph()
        g.add_node(self.class_variable)
        g.add_edges_from((self.class_variable, f) for f in features)
        if self.n_classes is not None and self.class_variable not in states:
            states[self.class_variable] = list(range(self.n_classes))
        super().__init__(g, states=states or None, prior=1.0 + self.alpha, map_estimate=self.alpha > 0)
        self._built = True

    def get_config(self) -> dict[str, Any]:
        return {
            "n_classes": self.n_classes,
            "class_variable": self.class_variable,
            "alpha": self.alpha,
            "features": [n for n in self.nodes if n != self.class_variable] if self._built else None,
            "states": self.states if self._built else None,
        }

    def prepare_data(self, data: Any) -> Tensor:
        """Labels -1 become missing (unlabelled rows); a frame without the class column is all unlabelled."""
        if hasattr(data, "columns"):
            frame = data.copy()
            if self.class_variable in frame.columns:
                col = frame[self.class_variable].astype(object)
                frame[self.class_variable] = col.where(~col.isin([-1, "-1"]), None)
            if not self._built:
                states: dict[str, list[Any]] = {}
                if self.class_variable in frame.columns and self.n_classes is not None:
                    seen = sorted(frame[self.class_variable].dropna().unique().tolist(), key=str)
                    if len(seen) > self.n_classes:
                        raise ValueError(f"data has {len(seen)} classes {seen}; n_classes={self.n_classes}.")
                    if seen and not all(isinstance(s, int | np.integer) for s in seen):
                        states[self.class_variable] = seen + [
                            f"class{k}" for k in range(len(seen), self.n_classes)
                        ]
                self._build([str(c) for c in frame.columns], states)
            return super().prepare_data(frame)
        if not self._built:
            arr = np.asarray(data, dtype=np.float64)
            if arr.ndim != 2 or arr.shape[1] < 2:
                raise ValueError(
                    f"data must be (n, n_features + 1) with the class last; got shape {arr.shape}."
                )
            self._build([f"x{j}" for j in range(arr.shape[1] - 1)] + [self.class_variable], {})
        t = torch.as_tensor(np.asarray(data, dtype=np.float64) if not isinstance(data, Tensor) else data).to(
            torch.float64
        )
        if t.dim() == 2 and t.shape[1] == len(self.nodes):
            j = self.nodes.index(self.class_variable)
            t = t.clone()
            t[t[:, j] == -1, j] = float("nan")
        return super().prepare_data(t)

    def latent_posterior(self, data: Any, params: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """``P(class | features)`` per row (the class column, if any, is ignored)."""
        rows = data.clone()
        rows[:, self.nodes.index(self.class_variable)] = float("nan")
        cpds = self._params_cpds(params)
        p = self._rows_in_chunks(rows, lambda r: self._contract_rows(cpds, r, (self.class_variable,)))
        return {self.class_variable: p / p.sum(-1, keepdim=True)}

    def latent_map(self, data: Any, params: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Most probable class per row (Bayes' rule)."""
        return {k: v.argmax(-1) for k, v in self.latent_posterior(data, params).items()}

    def __repr__(self) -> str:
        return f"NaiveBayes(n_classes={self.n_classes}, class_variable={self.class_variable!r}, alpha={self.alpha})"
