"""Discrete Bayesian networks: a ``networkx.DiGraph`` as a Pyro model with exact inference.

Generative model (one categorical site per node, in topological order)::

    cpd_X[u] ~ Dirichlet(alpha_X)            for every parent configuration u of X
    x_i ~ Categorical(cpd_X[parents(x_i)])   for every item i and node X (site name: the node)

SVI and MCMC therefore give Bayesian CPD posteriors; EM uses the closed-form hooks
(:meth:`BayesianNetwork.e_step`/:meth:`BayesianNetwork.m_step`) and gives the MLE (or the MAP
with ``map_estimate=True``) from complete data in one step and from incomplete data (NaN in the
data frame, or a node absent from it) by EM over every partially observed row.

The model is a value: states not given to the constructor are learnt by :meth:`prepare_data`
into the prepared data (:class:`~probgen.models._bn_network.NetworkData`, which carries the
network its codes refer to) and read back from the fit (``fit.data``), never written into the
model.  Exact inference lives in :mod:`probgen.models._bn_inference`, the BIF format in
:mod:`probgen.models.bif`, structure learning in :mod:`probgen.models.structure` (their
functions are exported by ``probgen.models``).
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, cast

import networkx as nx
import numpy as np
import pandas as pd
import pyro
import pyro.distributions as dist
import torch
from pyro.ops.indexing import Vindex
from torch import Tensor

from probgen.errors import IdentifiabilityWarning
from probgen.fit import Fit
from probgen.model import GenerativeModel
from probgen.models import _bn_inference as inference
from probgen.models._bn_network import Network, NetworkData, checked_states, cpd_site, states_from_json
from probgen.models.plotting import _no_options, draw_dag

__all__ = ["BayesianNetwork", "NetworkFit"]

_DTYPE = torch.float64


def _checked_dag(dag: Any) -> nx.DiGraph:
    """``dag`` (or a saved ``{"nodes", "edges"}`` configuration) as a validated DiGraph."""
    if isinstance(dag, Mapping) and {"nodes", "edges"} <= set(dag):  # a saved configuration
        spec = dag
        dag = nx.DiGraph()
        dag.add_nodes_from(spec["nodes"])
        dag.add_edges_from(tuple(e) for e in spec["edges"])
    if not isinstance(dag, nx.DiGraph):
        raise TypeError(f"dag must be a networkx.DiGraph; got {type(dag).__name__}.")
    if not nx.is_directed_acyclic_graph(dag):
        cycle = nx.find_cycle(dag)
        path = " -> ".join(str(u) for u, _ in cycle) + f" -> {cycle[0][0]}"
        raise ValueError(f"dag has a cycle through node {cycle[0][0]!r}: {path}; a network must be acyclic.")
    if dag.number_of_nodes() == 0:
        raise ValueError("dag has no nodes.")
    for node in dag.nodes:
        if not isinstance(node, str):
            raise TypeError(f"node names must be strings; got {node!r} ({type(node).__name__}).")
        if node == "data":
            raise ValueError("node name 'data' is reserved for the plate over rows; rename the node.")
    for node in dag.nodes:
        for site in (cpd_site(node), f"{node}_missing"):
            if site in dag.nodes:
                raise ValueError(f"node {site!r} clashes with the Pyro site of node {node!r}; rename it.")
    return dag


def _warn_unobserved(net: Network, data: Tensor) -> None:
    """Say which nodes no row observes: EM learns their CPDs only through observed relatives
    (up to a relabelling of their states), or not at all, from a random start."""
    codes = torch.as_tensor(data)
    if codes.dim() != 2 or codes.shape[1] != len(net.nodes):
        return
    seen = ~torch.isnan(codes).all(0)
    never = [n for n, s in zip(net.nodes, seen.tolist(), strict=True) if not s]
    if never:
        warnings.warn(
            f"node(s) {never} are never observed in the data: EM starts their CPDs at random and "
            "learns them only through observed relatives (their states up to relabelling), or not at all "
            "when none is observed. Give them data, fix their CPDs (cpds=..., init='given'), or expect "
            "answers that depend on the seed.",
            IdentifiabilityWarning,
            stacklevel=3,
        )


@dataclasses.dataclass(frozen=True, eq=False, repr=False)
class NetworkFit(Fit):
    """A fitted :class:`BayesianNetwork` (or :class:`~probgen.models.NaiveBayes`): exact queries
    that speak the network's state names (the fit's own: learnt from its data when not given)."""

    @property
    def network(self) -> BayesianNetwork:
        """The fitted network model."""
        return cast(BayesianNetwork, self.model)

    def _net(self) -> Network:
        return self.network._fit_network(self)

    def _cpd_sets(self, net: Network) -> list[dict[str, Tensor]]:
        """CPD sets to average over: the estimates for point fits, posterior draws otherwise."""
        if not self.posterior:
            return [net.params_cpds(self.params)]
        return [net.params_cpds(p) for p in self._draw_params(200)]

    def _query_inputs(self) -> tuple[Network, list[dict[str, Tensor]]]:
        """The network and CPD sets of a query; a point fit's are kept for its next query (the
        key notes each parameter tensor's version, so an in-place change is seen)."""
        if self.posterior:
            net = self._net()
            return net, self._cpd_sets(net)
        key = tuple((id(t), t._version) for t in self.params.values())
        hit = self.__dict__.get("_query_memo")
        if hit is None or hit[0] != key:
            net = self._net()
            hit = (key, net, self._cpd_sets(net))
            object.__setattr__(self, "_query_memo", hit)  # a cache, not state: the fit stays a value
        return hit[1], hit[2]

    def query(
        self, variables: Any = None, evidence: Any = None, *, joint: bool = False, labels: bool = True
    ) -> Any:
        """Exact posterior marginals (or the joint) of ``variables`` given ``evidence``.

        Parameters
        ----------
        variables : str or list of str, optional
            Nodes to query (default: every node not in the evidence, in one pass).
        evidence : dict or pandas.DataFrame, optional
            ``{node: state}`` (a state's name, or its code ``0 .. card-1``), or a DataFrame of
            evidence rows (NaN/None where not observed) answered in one vectorised contraction.
        joint : bool, default False
            Return the joint table over ``variables`` (axes in their order) instead of a dict
            of marginals.
        labels : bool, default True
            Label the answer with the states: a ``pandas.Series`` per variable indexed by its
            state names (a ``DataFrame`` of rows x states for evidence rows), the joint a
            ``DataFrame`` with a ``MultiIndex`` over the variables and one ``probability``
            column (rows x joint states for evidence rows).  ``False`` gives the bare tensors
            (state codes in order), the fast path for many queries.

        Returns
        -------
        dict of str to Series or Tensor, or DataFrame or Tensor
            Posterior fits average ``P(. , e | theta_s)`` over draws before normalising (the
            posterior predictive).
        """
        net, cpd_sets = self._query_inputs()
        result = inference.query(net, cpd_sets, variables, evidence, joint)
        if not labels:
            return result
        rows = evidence.index if hasattr(evidence, "columns") else None
        if joint:
            assert isinstance(result, Tensor)
            names = net.variables(
                variables, () if rows is not None else tuple(net.evidence_codes(evidence or {}))
            )
            index = pd.MultiIndex.from_product([net.states[v] for v in names], names=names)
            if rows is None:
                return pd.DataFrame({"probability": result.reshape(-1).numpy()}, index=index)
            return pd.DataFrame(result.reshape(len(rows), -1).numpy(), index=rows, columns=index)
        assert isinstance(result, dict)
        out: dict[str, Any] = {}
        for v, probs in result.items():
            states = pd.Index(net.states[v], name=v)
            if rows is None:
                out[v] = pd.Series(probs.numpy(), index=states, name=v)
            else:
                out[v] = pd.DataFrame(probs.numpy(), index=rows, columns=states)
        return out

    def map_query(self, variables: Any = None, evidence: Any = None) -> dict[str, Any]:
        """Most probable joint assignment of ``variables`` given ``evidence`` (others summed out).

        Returns ``{node: state name}``.  With ``variables=None`` every non-evidence node is
        maximised jointly (MPE) by max-product elimination.
        """
        net, cpd_sets = self._query_inputs()
        return inference.map_query(net, cpd_sets, variables, evidence, mpe=not self.posterior)

    def cpd_table(self, node: str) -> pd.DataFrame:
        """The fitted CPD of ``node`` as a DataFrame: one row per parent configuration."""
        net = self._net()
        node = net.check_node(node, "cpd_table")
        t = self.params[cpd_site(node)].reshape(net.n_configs(node), net.card(node))
        if net.parents[node]:
            index = pd.MultiIndex.from_product(
                [net.states[p] for p in net.parents[node]], names=net.parents[node]
            )
        else:
            index = pd.Index([""], name=None)
        return pd.DataFrame(t.numpy(), index=index, columns=pd.Index(net.states[node], name=node))

    def to_frame(self, codes: Any) -> pd.DataFrame:
        """State codes as a DataFrame of the fit's state names."""
        return self._net().to_frame(codes)

    def sample(
        self,
        n: int,
        length: int | None = None,
        *,
        return_latents: bool = False,
        seed: int | None = None,
        labels: bool = True,
        **kwargs: Any,
    ) -> Any:
        """``n`` rows drawn from the fitted network (exactly given ``evidence=`` when passed).

        Returns a DataFrame of state names, one column per node (``labels=False``: the tensor
        of state codes ``(n, n_nodes)``).
        """
        codes = super().sample(n, length, return_latents=return_latents, seed=seed, **kwargs)
        if not labels or return_latents:
            return codes
        return self.to_frame(codes)


class BayesianNetwork(GenerativeModel):
    r"""A discrete Bayesian network on a ``networkx.DiGraph``.

    Sample sites: ``"cpd_<node>"`` (global, shape ``(n_parent_configs, n_states)``, a Dirichlet
    prior per row) and one observed categorical site per node named by the node, inside the
    plate ``"data"``.  Parent configurations are row-major over the node's parents in
    ``model.parents[node]`` order (the graph's predecessor order); ``fit.params["cpd_X"]``
    reshaped to ``(*parent_cards, card)`` is the CPD of ``X``.

    Data are a pandas DataFrame with one column per node holding state names (NaN/None for
    missing; a node without a column is latent), or an array of state codes ``(n, n_nodes)``
    in ``model.nodes`` order with NaN for missing.

    Fit helpers: ``fit.query(variables, evidence=..., joint=False)`` (a dict or a DataFrame of
    evidence rows), ``fit.map_query(variables, evidence=...)``, ``fit.cpd_table(node)``,
    ``fit.to_frame(codes)``; ``fit.log_prob(rows)`` sums missing entries out and
    ``fit.sample(n, evidence=...)`` draws exactly given evidence; ``fit.impute(rows)`` fills
    missing cells with their most probable states given the row's observed cells
    (``method="sample"``: joint draws from that posterior), in the form the rows came in.  Module functions:
    :func:`read_bif`, :func:`write_bif`, :func:`learn_structure`, :func:`structure_score`.

    Parameters
    ----------
    dag : networkx.DiGraph
        The network; node attribute ``states`` may give a node's ordered state names.
    states : dict of str to sequence, optional
        Ordered state names per node (default: the node attribute, else the sorted values seen
        in the data, kept with the prepared data and the fit, not in the model).
    cpds : dict of str to array, optional
        Given CPDs, shape ``(*parent_cards, card)`` (or ``(n_parent_configs, card)``) in the
        parents' order; rows must sum to one.  Used for queries without fitting
        (:meth:`as_fit`) and as EM's start.
    prior : float or "bdeu", default 1.0
        Dirichlet concentration of every CPD entry, or ``"bdeu"``: ``equivalent_sample_size /
        (n_parent_configs * card)``.
    equivalent_sample_size : float, default 1.0
        BDeu's equivalent sample size.
    map_estimate : bool, default False
        EM returns the posterior mode (counts + alpha - 1) instead of the MLE.

    Examples
    --------
    >>> import networkx as nx
    >>> bn = BayesianNetwork(nx.DiGraph([("rain", "wet")]),
    ...                      states={"rain": ["no", "yes"], "wet": ["no", "yes"]},
    ...                      cpds={"rain": [0.8, 0.2], "wet": [[0.9, 0.1], [0.2, 0.8]]})
    >>> round(float(bn.as_fit().query("rain", evidence={"wet": "yes"})["rain"]["yes"]), 4)
    0.6667
    """

    dtype = _DTYPE
    data_plate_name = "data"
    fit_class: ClassVar[type[NetworkFit]] = NetworkFit
    #: NaN in the data means a missing value, summed out (see GenerativeModel.accepts_missing).
    accepts_missing = True

    def __init__(
        self,
        dag: nx.DiGraph,
        states: Mapping[str, Sequence[Any]] | None = None,
        cpds: Mapping[str, Any] | None = None,
        prior: float | str = 1.0,
        *,
        equivalent_sample_size: float = 1.0,
        map_estimate: bool = False,
    ) -> None:
        dag = _checked_dag(dag)
        if isinstance(prior, str):
            if prior != "bdeu":
                raise ValueError(f"prior must be a positive number or 'bdeu'; got {prior!r}.")
        elif isinstance(prior, bool) or not isinstance(prior, int | float) or not prior > 0:
            raise ValueError(f"prior must be a positive number or 'bdeu'; got {prior!r}.")
        if not equivalent_sample_size > 0:
            raise ValueError(f"equivalent_sample_size must be > 0; got {equivalent_sample_size!r}.")
        given = dict(states or {})
        unknown = set(given) - set(dag.nodes)
        if unknown:
            raise ValueError(f"states names node(s) {sorted(unknown)} that are not in the dag.")
        declared = {n: given.get(n, dag.nodes[n].get("states")) for n in dag.nodes}
        self.prior = prior
        self.equivalent_sample_size = float(equivalent_sample_size)
        self.map_estimate = bool(map_estimate)
        #: the states the configuration names (learnt ones live with the data and the fit)
        self.states: dict[str, list[Any]] = {
            n: checked_states(n, s) for n, s in declared.items() if s is not None
        }
        self._network = Network(dag, self.states)
        self.dag = self._network.dag
        self.nodes: list[str] = self._network.nodes
        self.order: list[str] = self._network.order
        self.parents: dict[str, list[str]] = self._network.parents
        self.cpds: dict[str, Tensor] | None = None if cpds is None else self._network.check_cpds(cpds)

    # ------------------------------------------------------------------ the network in use
    def _base_network(self, params: Mapping[str, Tensor] | None) -> Network:
        """The network the configuration gives (NaiveBayes: the one its parameters name)."""
        return self._network

    def _restored_network(self, nodes: list[str], states: Mapping[str, list[Any]]) -> Network:
        """The network of saved data whose nodes and states were written by :meth:`data_to_arrays`."""
        if nodes != self.nodes:
            raise ValueError(f"saved data are over nodes {nodes}; this network's are {self.nodes}.")
        return self._network.with_states({**self.states, **states})

    def _network_for(self, data: Any = None, params: Mapping[str, Tensor] | None = None) -> Network:
        """The network ``data``'s codes refer to (else the configuration's), completed by ``params``."""
        net = data.network if isinstance(data, NetworkData) else self._base_network(params)
        return net if params is None else net.with_params(params)

    def _fit_network(self, fit: Any) -> Network:
        return self._network_for(fit.data, fit.params)

    def card(self, node: str) -> int:
        """Number of states of ``node`` (as the configuration names them)."""
        return self._network.card(node)

    def _alpha(self, net: Network, node: str) -> float:
        if self.prior == "bdeu":
            return self.equivalent_sample_size / (net.n_configs(node) * net.card(node))
        return float(self.prior)

    # ---------------------------------------------------------------------------- data
    def prepare_data(self, data: Any) -> NetworkData:
        """Data as float64 state codes ``(n, n_nodes)`` in :attr:`nodes` order, NaN for missing.

        A DataFrame maps state names column by column (missing columns are latent nodes);
        arrays and tensors hold codes.  States not given are learnt from these data (the sorted
        values seen; codes ``0 .. max`` for arrays) and travel with the returned data.
        """
        return self._prepare(data, self._network)

    def prepare_like(self, data: Any, like: Any) -> NetworkData:
        """New data coded with the training data's network (``like``: their states, learnt or given),
        so a state unseen in training is refused and codes mean what they meant in the fit."""
        if isinstance(like, NetworkData):
            return self._prepare(data, like.network)
        return self.prepare_data(data)

    def _prepare(self, data: Any, base: Network) -> NetworkData:
        if hasattr(data, "columns") and hasattr(data, "isna"):
            net = base.learnt_from(data)
            return NetworkData(net.code_frame(data), net)
        if isinstance(data, str | bytes) or data is None:
            raise TypeError(
                f"data must be a DataFrame or an array of state codes; got {type(data).__name__}."
            )
        if isinstance(data, NetworkData):  # prepared already: its codes and their network
            return data
        t = torch.as_tensor(data if isinstance(data, Tensor) else np.asarray(data, dtype=np.float64))
        t = t.detach().as_subclass(Tensor).to(_DTYPE)
        if t.dim() != 2 or t.shape[1] != len(base.nodes):
            raise ValueError(
                f"data must have shape (n, {len(base.nodes)}) (one column per node: {base.nodes}); "
                f"got {tuple(t.shape)}."
            )
        if len(t) == 0:
            raise ValueError("data is empty; expected at least one row.")
        if torch.isinf(t).any():
            raise ValueError("data holds infinite values; expected state codes or NaN for missing.")
        net = base.learnt_from_codes(t)
        net.check_codes(t)
        return NetworkData(t.contiguous(), net)

    def data_to_arrays(self, data: Any) -> dict[str, Tensor]:
        """The codes (``"data"``) and, when learnt from data, the network's nodes and states as
        UTF-8 JSON bytes (``"network"``)."""
        out = {"data": torch.as_tensor(data).as_subclass(Tensor)}
        if isinstance(data, NetworkData) and data.network is not self._network:
            out["network"] = torch.frombuffer(bytearray(data.network.to_json().encode()), dtype=torch.uint8)
        return out

    def data_from_arrays(self, arrays: Mapping[str, Tensor]) -> NetworkData | None:
        """Prepared data rebuilt from :meth:`data_to_arrays`' tensors (``None`` when absent)."""
        if "data" not in arrays:
            return None
        if "network" not in arrays:
            return self.prepare_data(arrays["data"])
        nodes, states = states_from_json(bytes(arrays["network"].numpy()).decode())
        return self._prepare(arrays["data"], self._restored_network(nodes, states))

    def to_frame(self, fit_or_codes: Any, codes: Any = None) -> Any:
        """State codes ``(n, n_nodes)`` as a DataFrame of state names (``fit.to_frame(codes)``).

        Called on the model, the states are the configuration's; as a fit helper, the fit's
        (learnt from its data when not given).
        """
        if codes is None:
            return self._network.to_frame(fit_or_codes)
        return self._fit_network(fit_or_codes).to_frame(codes)

    # --------------------------------------------------------------------------- Pyro pair
    def model(self, data: Tensor | None = None, *, num_items: int | None = None) -> Tensor:
        """Pyro model; ``data=None`` generates ``num_items`` rows (default 1)."""
        net = self._network_for(data)
        net.require_states()
        cpds = {}
        for n in net.order:
            conc = torch.full((net.n_configs(n), net.card(n)), self._alpha(net, n), dtype=_DTYPE)
            cpds[n] = pyro.sample(cpd_site(n), dist.Dirichlet(conc).to_event(1))
        size = (num_items or 1) if data is None else len(data)
        values: dict[str, Tensor] = {}
        with pyro.plate("data", size):
            for n in net.order:
                idx: Tensor | int = 0
                for p in net.parents[n]:
                    idx = idx * net.card(p) + values[p]
                probs = Vindex(cpds[n])[..., idx, :] if net.parents[n] else cpds[n][..., 0, :]
                if data is None:
                    values[n] = pyro.sample(n, dist.Categorical(probs))
                    continue
                x = data[:, net.col[n]]
                miss = torch.isnan(x)
                if miss.any():  # missing entries: an enumerated latent site, masked to those rows
                    hidden = pyro.sample(
                        f"{n}_missing", dist.Categorical(probs).mask(miss), infer={"enumerate": "parallel"}
                    )
                    seen = x.nan_to_num(0.0).long()
                    pyro.sample(n, dist.Categorical(probs).mask(~miss), obs=seen)
                    values[n] = torch.where(miss, hidden, seen)
                else:
                    values[n] = pyro.sample(n, dist.Categorical(probs), obs=x.long())
        if data is not None:  # values may carry enumeration dims; the data are what was scored
            return data
        return torch.stack([values[n].to(_DTYPE).expand(size) for n in net.nodes], -1)

    # ------------------------------------------------------------------- parameters
    def as_fit(self, data: Any = None) -> NetworkFit:
        """A :class:`NetworkFit` holding the given CPDs, so queries run without fitting."""
        if self.cpds is None:
            raise ValueError("as_fit needs cpds=...; or fit the network to data with probgen.fit.")
        prepared = None if data is None else self.prepare_data(data)
        params = {cpd_site(n): t.clone() for n, t in self.cpds.items()}
        return NetworkFit(model=self, data=prepared, method="given", params=params)

    def num_parameters(self, params: Mapping[str, Tensor], data: Any) -> int:
        """Free CPD entries: ``sum_X n_parent_configs(X) (card(X) - 1)``."""
        net = self._network_for(data, params)
        return sum(net.n_configs(n) * (net.card(n) - 1) for n in net.nodes)

    def get_config(self) -> dict[str, Any]:
        return {
            "dag": {"nodes": self.nodes, "edges": [[p, n] for n in self.nodes for p in self.parents[n]]},
            "states": {
                n: [s if isinstance(s, str | int | float) else str(s) for s in v]
                for n, v in self.states.items()
            },
            "cpds": None if self.cpds is None else {n: t.tolist() for n, t in self.cpds.items()},
            "prior": self.prior,
            "equivalent_sample_size": self.equivalent_sample_size,
            "map_estimate": self.map_estimate,
        }

    def __repr__(self) -> str:
        return f"BayesianNetwork({len(self.nodes)} nodes, {self.dag.number_of_edges()} edges)"

    # --------------------------------------------------------------------------- scoring
    def log_prob_items(self, data: Any, params: Mapping[str, Tensor]) -> Tensor:
        """Per-row ``log P(observed entries)``, missing entries summed out (exact)."""
        net = self._network_for(data, params)
        cpds = net.params_cpds(params)
        return inference.contract_chunks(net, cpds, data, ()).log()

    def latent_posterior(self, data: Any, params: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Posterior marginals ``(n, card)`` of every node with a missing value in ``data``."""
        net = self._network_for(data, params)
        cpds = net.params_cpds(params)
        out = {}
        for j, n in enumerate(net.nodes):
            if bool(torch.isnan(data[:, j]).any()):
                p = inference.contract_chunks(net, cpds, data, (n,))
                out[n] = p / p.sum(-1, keepdim=True)
        return out

    def latent_map(self, data: Any, params: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Most probable state of each node with missing values, per row (marginal argmax)."""
        return {k: v.argmax(-1) for k, v in self.latent_posterior(data, params).items()}

    # ------------------------------------------------------------------------ imputation
    def impute_items(
        self,
        data: Any,
        params: Mapping[str, Tensor],
        *,
        method: str = "mean",
        num_samples: int = 1,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Missing cells (NaN codes) filled from each row's posterior given its observed cells
        (the capability :class:`probgen.capabilities.Imputes`).

        ``method="mean"`` gives each missing cell its most probable state (the argmax of its
        posterior marginal, exact); ``method="sample"`` draws a row's missing cells jointly from
        their posterior, ``num_samples`` copies.  Both are batched contractions over the rows.

        Returns
        -------
        Tensor
            ``(num_samples, n, n_nodes)`` state codes (one copy for ``"mean"``).

        Raises
        ------
        ValueError
            A row whose observed cells have probability zero under the network.
        """
        net = self._network_for(data, params)
        return inference.impute(net, [net.params_cpds(params)], data, method, num_samples, generator)

    def impute_over_draws(self, data: Any, param_sets: Sequence[Mapping[str, Tensor]]) -> Tensor:
        """``fit.impute(method="mean")`` of a posterior fit: the most probable state of each
        missing cell under the posterior predictive (marginals averaged over ``param_sets``).

        Returns ``(n, n_nodes)`` codes."""
        net = self._network_for(data, param_sets[0])
        cpd_sets = [net.params_cpds(p) for p in param_sets]
        return inference.impute(net, cpd_sets, data, "mean", 1, None)[0]

    def imputed_like(self, given: Any, data: NetworkData, filled: Tensor) -> Any:
        """Completed codes in the form ``given`` came in (``fit.impute``): a DataFrame of state
        names (its index, its columns) for a DataFrame, with only its missing cells written;
        codes as a numpy array or tensor otherwise (a DataFrame of state names for the
        training data)."""
        net = data.network
        if given is None:
            return net.to_frame(filled)
        if not (hasattr(given, "columns") and hasattr(given, "isna")):
            if isinstance(given, Tensor):
                return filled.to(given.dtype if given.is_floating_point() else filled.dtype)
            return filled.numpy()
        names = net.to_frame(filled)
        out = given.copy()
        for n in given.columns:
            if n in net.col:
                gap = torch.isnan(data[:, net.col[n]]).numpy()
                if gap.any():
                    out[n] = out[n].astype(object)
                    out.loc[gap, n] = names[n].to_numpy()[gap]
        return out

    def sample_items(
        self,
        n: int,
        params: Mapping[str, Tensor],
        *,
        generator: torch.Generator | None = None,
        evidence: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> dict[str, Any]:
        """``n`` rows of state codes: ancestral sampling, or exact sampling given ``evidence``.

        Given evidence of probability at least 1e-3, ancestral draws are kept when they match
        it (rejection: exact and vectorised); rarer evidence draws nodes in topological order
        from ``P(X | drawn so far, evidence)``, each step one batched contraction.
        """
        return self.sample_like(n, params, None, generator=generator, evidence=evidence, **kwargs)

    def sample_like(
        self,
        n: int,
        params: Mapping[str, Tensor],
        like: Any,
        *,
        generator: torch.Generator | None = None,
        evidence: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> dict[str, Any]:
        """:meth:`sample_items` with the network of the training data ``like`` (its learnt states,
        so evidence may name states)."""
        if kwargs:
            raise ValueError(f"unknown sample option(s) {sorted(kwargs)}; BayesianNetwork takes evidence=.")
        net = self._network_for(like, params)
        ev = net.evidence_codes(evidence or {})
        return {"data": inference.sample(net, net.params_cpds(params), n, ev, generator, evidence)}

    def treewidth(self) -> int:
        """Treewidth upper bound of the moral graph (min-degree heuristic)."""
        return inference.treewidth(self.dag)

    # ------------------------------------------------------------------- closed-form EM
    def em_defaults(self) -> dict[str, Any]:
        """EM options for networks: start from counts, tight tolerance."""
        return {"init": "counts", "tol": 1e-8, "max_iter": 500}

    def init_params(self, data: Any, *, init: Any, generator: torch.Generator) -> dict[str, Tensor]:
        """EM start: the given CPDs, a dict, ``"counts"`` (rows observing the family, +1) or ``"random"``."""
        net = self._network_for(data)
        if isinstance(init, Mapping):
            return net.cpds_from_init(init)
        if init not in ("counts", "random", "given"):
            raise ValueError(
                f"init={init!r} is not a strategy; expected 'counts', 'random', 'given' or a dict."
            )
        if init == "given" or (init == "counts" and self.cpds is not None):
            if self.cpds is None:
                raise ValueError("init='given' needs cpds=... in the constructor.")
            return {cpd_site(n): t.clone() for n, t in self.cpds.items()}
        _warn_unobserved(net, data)
        return net.start_cpds(data, counts=init == "counts", generator=generator)

    def e_step(self, data: Any, params: Mapping[str, Tensor]) -> tuple[dict[str, Tensor], float]:
        """Expected family counts (complete rows counted, incomplete rows by one backward pass)."""
        net = self._network_for(data, params)
        return inference.expected_counts(net, net.params_cpds(params), data)

    def m_step(self, data: Any, stats: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """CPD rows ``counts / row total`` (MAP: ``+ alpha - 1``); unseen rows uniform."""
        net = self._network_for(data)
        out = {}
        for n in net.nodes:
            c = stats[n]
            if self.map_estimate:
                c = (c + self._alpha(net, n) - 1.0).clamp_min(0.0)
            tot = c.sum(-1, keepdim=True)
            out[cpd_site(n)] = torch.where(
                tot > 0, c / tot.clamp_min(1e-300), torch.full_like(c, 1.0 / c.shape[-1])
            )
        return out

    def plot_fit(
        self,
        data: Any,
        params: Mapping[str, Tensor],
        *,
        ax: Any = None,
        node_size: int | None = None,
        font_size: float = 8,
        **kwargs: Any,
    ) -> Any:
        """Draw the DAG (layered by topological generation) on matplotlib axes.

        Each node's name sits in a rounded box sized to it, so long names stay inside their
        nodes; arrows stop at the boxes.

        Parameters
        ----------
        data : DataFrame or None
            The training data (their network when prepared), or None for the model's own DAG.
        params : dict of str to Tensor
            Parameters (only their network's structure is drawn).
        ax : matplotlib.axes.Axes, optional
            Where to draw; a new figure when None.
        node_size : int, optional
            Area of every node in points squared (default: each node's box, sized to its name).
        font_size : float, default 8
            Font size of the names.

        Returns
        -------
        matplotlib.axes.Axes

        Raises
        ------
        TypeError
            Unknown options, ``ax`` not matplotlib axes.
        """
        _no_options(kwargs, "BayesianNetwork.plot_fit", ("ax=", "node_size=", "font_size="))
        dag = data.network.dag if isinstance(data, NetworkData) else self._base_network(params or None).dag
        return draw_dag(dag, ax, node_size=node_size, font_size=font_size)


# the module functions of the family, kept importable from here
