"""Discrete Bayesian networks in the BIF format (``.bif`` or ``.bif.gz``, as in the bnlearn repository)."""

from __future__ import annotations

import gzip
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import networkx as nx
import numpy as np
from torch import Tensor

from probgen.models.bayesnet import BayesianNetwork

__all__ = ["read_bif", "write_bif"]

_VAR = re.compile(r"variable\s+([^\s{]+)\s*\{[^}]*?type\s+discrete\s*\[\s*(\d+)\s*\]\s*\{([^}]*)\}", re.S)
_PROB = re.compile(r"probability\s*\(\s*([^|)]+?)\s*(?:\|\s*([^)]*))?\)\s*\{(.*?)\}", re.S)


def _names(text: str) -> list[str]:
    return [q.strip() for q in text.split(",") if q.strip()]


def _table(
    name: str, child: str, parents: list[str], body: str, states: Mapping[str, list[str]]
) -> np.ndarray:
    """The CPD ``(*parent_cards, card)`` of one ``probability`` block."""
    card = len(states[child])
    shape = tuple(len(states[q]) for q in parents) + (card,)
    table = np.zeros(shape)
    code = [{s: i for i, s in enumerate(states[q])} for q in parents]
    for line in body.split(";"):
        line = line.strip()
        if not line:
            continue
        if line.startswith("table"):
            nums = np.array([float(x) for x in re.split(r"[,\s]+", line[5:].strip()) if x])
            table = nums.reshape((card, -1)).T.reshape(shape) if parents else nums.reshape(shape)
            continue
        m = re.match(r"\(([^)]*)\)\s*(.*)", line, re.S)
        if m is None:
            raise ValueError(f"{name}: cannot read line {line[:60]!r} of node {child!r}.")
        cfg = [c.strip() for c in m.group(1).split(",")]
        idx = tuple(code[i][c] for i, c in enumerate(cfg))
        table[idx] = [float(x) for x in re.split(r"[,\s]+", m.group(2).strip()) if x]
    return table


def read_bif(path: str | Path) -> BayesianNetwork:
    """Read a network in BIF format (``.bif`` or ``.bif.gz``, as in the bnlearn repository).

    The parents of each node keep the order of its ``probability ( X | parents )`` block.
    """
    p = Path(path)
    raw = gzip.open(p, "rt").read() if p.suffix == ".gz" else p.read_text()
    text = re.sub(r"//[^\n]*", "", raw)
    states: dict[str, list[str]] = {}
    for name, k, vals in _VAR.findall(text):
        s = [v.strip() for v in vals.split(",") if v.strip()]
        if len(s) != int(k):
            raise ValueError(f"{p.name}: variable {name!r} declares {k} states but lists {len(s)}.")
        states[name] = s
    blocks = _PROB.findall(text)
    cpds: dict[str, Any] = {}
    for child, pars, body in blocks:
        cpds[child.strip()] = _table(p.name, child.strip(), _names(pars), body, states)
    if set(cpds) != set(states):
        raise ValueError(f"{p.name}: node(s) {sorted(set(states) - set(cpds))} have no probability block.")
    order = {n: i for i, n in enumerate(states)}
    g = nx.DiGraph()
    g.add_nodes_from(states)
    for child, pars, _ in sorted(blocks, key=lambda b: order[b[0].strip()]):
        for par in _names(pars):
            g.add_edge(par, child.strip())
    return BayesianNetwork(g, states=states, cpds=cpds)


def write_bif(
    model: BayesianNetwork,
    path: str | Path,
    params: Mapping[str, Tensor] | None = None,
    *,
    name: str = "probgen",
) -> None:
    """Write ``model`` (its given CPDs, or ``params`` of a fit) in BIF format.

    The states written are the model's; a network whose states were learnt from data is written
    from its fit's network: ``write_bif(fit.model, path, params=fit.params)`` reads them from the
    CPDs' sizes (``0 .. card-1``) unless the model names them.
    """
    net = model._network_for(params=params)
    if params is not None:
        cpds = {n: t.reshape(net.shape(n)) for n, t in net.params_cpds(params).items()}
    elif model.cpds is not None:
        cpds = {n: t.reshape(net.shape(n)) for n, t in model.cpds.items()}
    else:
        raise ValueError("write_bif needs CPDs: pass params=fit.params or build the network with cpds=.")
    lines = [f"network {name} {{\n}}"]
    for n in net.nodes:
        s = ", ".join(str(x) for x in net.states[n])
        lines.append(f"variable {n} {{\n  type discrete [ {net.card(n)} ] {{ {s} }};\n}}")
    for n in net.nodes:
        par = net.parents[n]
        t = cpds[n].numpy()
        head = f"probability ( {n}" + (f" | {', '.join(par)} )" if par else " )") + " {"
        body = []
        if not par:
            body.append("  table " + ", ".join(repr(float(x)) for x in t) + ";")
        else:
            for idx in np.ndindex(*t.shape[:-1]):
                cfg = ", ".join(str(net.states[q][i]) for q, i in zip(par, idx, strict=True))
                body.append(f"  ({cfg}) " + ", ".join(repr(float(x)) for x in t[idx]) + ";")
        lines.append(head + "\n" + "\n".join(body) + "\n}")
    Path(path).write_text("\n".join(lines) + "\n")
