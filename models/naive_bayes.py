"""Naive Bayes: a generative classifier as a two-layer Bayesian network (class -> each feature)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import networkx as nx
import numpy as np
import torch
from torch import Tensor

from probgen.models import _bn_inference as inference
from probgen.models._bn_network import Network, NetworkData, checked_states
from probgen.models.bayesnet import BayesianNetwork

__all__ = ["NaiveBayes"]

_CPD = "cpd_"


def _star(class_variable: str, features: list[str]) -> nx.DiGraph:
    """``class -> feature`` for every feature (the class node first)."""
    g = nx.DiGraph()
    g.add_node(class_variable)
    g.add_edges_from((class_variable, f) for f in features if f != class_variable)
    return g


class NaiveBayes(BayesianNetwork):
    """Categorical naive Bayes: ``class -> feature`` for every feature, fitted like any network.

    Data are a DataFrame with one column per feature and the class column ``class_variable``
    (its label, or NaN/-1 for an unlabelled row: EM then uses that row too, semi-supervised),
    or an array of codes whose first column is the class label and the others the features
    (named ``x0, x1, ...``).  ``fit.predict(features)`` and ``fit.predict_proba(features)``
    apply Bayes' rule; missing features are summed out.  Unless ``features`` are given, the
    network is read from the data's columns: it travels with the prepared data and the fit
    (``fit.data``), never with the model.

    Parameters
    ----------
    n_classes : int, optional
        Number of classes (default: the labels seen; states ``0 .. n_classes-1`` for arrays).
    class_variable : str, default "class"
        Name of the class column.
    alpha : float, default 1.0
        Additive (Laplace) smoothing of every CPD row, as scikit-learn's ``CategoricalNB``;
        0 gives the MLE.
    features : list of str, optional
        The feature nodes (default: the data's columns).
    states : dict of str to list, optional
        Ordered state names per node (default: learnt from the data).

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
        self.features = None if features is None else [f for f in features if f != class_variable]
        self._given_states = {k: checked_states(k, v) for k, v in (states or {}).items()}
        graph = _star(class_variable, self.features or [])
        known = {k: v for k, v in self._declared().items() if k in graph}
        super().__init__(graph, states=known, prior=1.0 + self.alpha, map_estimate=self.alpha > 0)

    # ------------------------------------------------------------------ the network in use
    def _declared(self) -> dict[str, list[Any]]:
        """The states the configuration gives: ``states``, and ``0 .. n_classes-1`` for the class."""
        out = dict(self._given_states)
        if self.n_classes is not None and self.class_variable not in out:
            out[self.class_variable] = list(range(self.n_classes))
        return out

    def _network_over(self, features: list[str], states: Mapping[str, list[Any]] | None = None) -> Network:
        """The star over ``features`` with the declared states (and ``states`` over them)."""
        graph = _star(self.class_variable, features)
        known = {k: v for k, v in {**self._declared(), **(states or {})}.items() if k in graph}
        return Network(graph, known)

    def _base_network(self, params: Mapping[str, Tensor] | None) -> Network:
        if self.features is not None:
            return self._network
        if params is None:
            raise ValueError(
                "NaiveBayes reads its features from the data's columns; pass data (or features=...)."
            )
        return self._network_over([k[len(_CPD) :] for k in params if k.startswith(_CPD)])

    def _restored_network(self, nodes: list[str], states: Mapping[str, list[Any]]) -> Network:
        return self._network_over(nodes, states)

    def get_config(self) -> dict[str, Any]:
        return {
            "n_classes": self.n_classes,
            "class_variable": self.class_variable,
            "alpha": self.alpha,
            "features": self.features,
            "states": self._given_states or None,
        }

    def prepare_data(self, data: Any) -> NetworkData:
        """Labels -1 become missing (unlabelled rows); a frame without the class column is all unlabelled."""
        return self._prepare_nb(data, None)

    def prepare_like(self, data: Any, like: Any) -> NetworkData:
        """New data read with the training data's network (its features and learnt states)."""
        return self._prepare_nb(data, like.network if isinstance(like, NetworkData) else None)

    def _prepare_nb(self, data: Any, trained: Network | None) -> NetworkData:
        if isinstance(data, NetworkData):
            return data
        c = self.class_variable
        if hasattr(data, "columns"):
            frame = data.copy()
            if c in frame.columns:
                col = frame[c].astype(object)
                frame[c] = col.where(~col.isin([-1, "-1"]), None)
            if trained is not None:
                return self._prepare(frame, trained)
            if self.features is not None:
                return self._prepare(frame, self._network)
            return self._prepare(
                frame, self._network_over([str(k) for k in frame.columns], self._labels(frame))
            )
        t = torch.as_tensor(np.asarray(data, dtype=np.float64) if not isinstance(data, Tensor) else data)
        t = t.as_subclass(Tensor).to(torch.float64)
        if trained is not None:
            base = trained
        elif self.features is not None:
            base = self._network
        elif t.dim() != 2 or t.shape[1] < 2:
            raise ValueError(
                f"data must be (n, n_features + 1) with the class first; got shape {tuple(t.shape)}."
            )
        else:
            base = self._network_over([f"x{j}" for j in range(t.shape[1] - 1)])
        if t.dim() == 2 and t.shape[1] == len(base.nodes):
            j = base.col[c]
            t = t.clone()
            t[t[:, j] == -1, j] = float("nan")
        return self._prepare(t, base)

    def _labels(self, frame: Any) -> dict[str, list[Any]]:
        """The class states labels that are not integers name (padded to ``n_classes``)."""
        c = self.class_variable
        if c not in frame.columns or self.n_classes is None:
            return {}
        seen = sorted(frame[c].dropna().unique().tolist(), key=str)
        if len(seen) > self.n_classes:
            raise ValueError(f"data has {len(seen)} classes {seen}; n_classes={self.n_classes}.")
        if seen and not all(isinstance(s, int | np.integer) for s in seen):
            return {c: seen + [f"class{k}" for k in range(len(seen), self.n_classes)]}
        return {}

    def latent_posterior(self, data: Any, params: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """``P(class | features)`` per row (the class column, if any, is ignored)."""
        net = self._network_for(data, params)
        rows = data.clone()
        rows[:, net.col[self.class_variable]] = float("nan")
        cpds = net.params_cpds(params)
        c = (self.class_variable,)
        p = inference.contract_chunks(net, cpds, rows, c)
        return {self.class_variable: p / p.sum(-1, keepdim=True)}

    def latent_map(self, data: Any, params: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Most probable class per row (Bayes' rule)."""
        return {k: v.argmax(-1) for k, v in self.latent_posterior(data, params).items()}

    def __repr__(self) -> str:
        return f"NaiveBayes(n_classes={self.n_classes}, class_variable={self.class_variable!r}, alpha={self.alpha})"
