"""The junction tree's level-synchronous engine: every clique table in one flat buffer.

On networks of many small cliques a torch call costs more than its arithmetic.  Here every clique
table is a block of one buffer ``(B, total entries)``, laid out level by level from the root, and
a pass over the tree makes a few calls per *level* (an ``index_add_`` of a level's entries into
its separators' slots, a gather of those slots back into the parents' entries) instead of a few
per clique.  Evidence (a dict or rows alike) is one vector of factors per (variable, state) slot,
gathered into the clique entries.  Its index maps are compiled once per network
(:func:`compile_flat`, kept in :attr:`Network.plans`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from probgen.models import _bn_junction as jt
from probgen.models._bn_junction import JunctionTree, _cpd_key, _recall, _remember
from probgen.models._bn_network import Network

__all__ = [
    "FLAT_MAX",
    "Flat",
    "compile_flat",
    "evidence_vector",
    "flat_marginals",
    "flat_potentials",
    "flat_run",
]

_DTYPE = torch.float64
CPDs = Mapping[str, Tensor]

#: trees with at most this many clique entries run level by level on one flat buffer; on
#: networks of many small cliques a torch call costs more than its arithmetic, and this engine
#: makes a few calls per level of the tree instead of a few per clique
FLAT_MAX = 2**21
_LOG_PRODUCT = 4  # a parent with more children at one level multiplies their messages in log space


@dataclass(frozen=True)
class Flat:
    """Index maps of the flat engine: every clique table is a block of one buffer ``(B, total)``,
    the blocks laid out level by level from the root (so a level is one contiguous slice)."""

    total: int
    offset: tuple[int, ...]  # each clique's first entry
    levels: tuple[tuple[int, int], ...]  # entry range of each level, root first
    n_slots: tuple[int, ...]  # separator entries of the messages into each level (level 0: none)
    up_slot: tuple[Tensor, ...]  # level entry -> separator slot of its clique's message
    pair_entry: tuple[Tensor, ...]  # parent-level entry of each (child, parent entry) pair
    pair_slot: tuple[Tensor, ...]  # the child's separator slot of that pair
    rank_maps: tuple[tuple[Tensor, ...] | None, ...]  # parent entry -> slot of its r-th child (or the one)
    psi_maps: tuple[Tensor, ...]  # entry -> index into the CPD vector of its r-th CPD (or the one)
    psi_matrix: Tensor  # those maps side by side, (total, ranks): one gather and one product
    var_offset: tuple[int, ...]  # each variable's first slot in the evidence vector
    slot_var: Tensor  # variable (column) of each evidence slot
    slot_state: Tensor  # state of each evidence slot
    lam_maps: tuple[Tensor, ...]  # entry -> evidence slot of the r-th variable entered there (or the one)
    lam_flat: Tensor  # those maps interleaved, (total * ranks,)
    marg_entry: Tensor  # entries summed into each variable's marginal
    marg_slot: Tensor  # the variable's slot of each of those entries


def _states(c: tuple[int, ...], cards: list[int]) -> Tensor:
    """``(size, len(c))``: each entry's state of each variable of clique ``c`` (row-major)."""
    size = math.prod(cards[v] for v in c)
    out = torch.empty(size, len(c), dtype=torch.long)
    stride = 1
    a = torch.arange(size)
    for k in reversed(range(len(c))):
        out[:, k] = (a // stride) % cards[c[k]]
        stride *= cards[c[k]]
    return out


def _rank_maps(
    ranks: list[list[int]],
    fill: int,
    total: int,
    offset: list[int],
    size: list[int],
    entries: Callable[[int, int], Tensor],
) -> list[Tensor]:
    """One gather map per rank ``r``: clique ``i``'s entries point at ``entries(i, ranks[i][r])``
    (the ``r``-th CPD or evidence factor assigned to the clique), every other entry at ``fill``
    (the slot holding one)."""
    maps = []
    for r in range(max(len(x) for x in ranks)):
        m = torch.full((total,), fill, dtype=torch.long)
        for i, items in enumerate(ranks):
            if r < len(items):
                m[offset[i] : offset[i] + size[i]] = entries(i, items[r])
        maps.append(m)
    return maps


def _flat_index(states: Tensor, pos: Sequence[int], dims: Sequence[int]) -> Tensor:
    """Row-major index over the axes ``pos`` of ``states`` with sizes ``dims``."""
    idx = torch.zeros(states.shape[0], dtype=torch.long)
    for k, d in zip(pos, dims, strict=True):
        idx = idx * d + states[:, k]
    return idx


def compile_flat(net: Network, tree: JunctionTree) -> Flat:
    """The flat engine's index maps (once per network, kept in ``net.plans``)."""
    flat = net.plans.get("junction-flat")
    if flat is not None:
        return flat
    cards = [net.card(v) for v in net.nodes]
    n = len(tree.cliques)
    children: list[list[int]] = [[] for _ in range(n)]
    for i in reversed(tree.order):
        if tree.parent[i] >= 0:
            children[tree.parent[i]].append(i)
    depth = [0] * n
    for i in reversed(tree.order):  # parents before children
        if tree.parent[i] >= 0:
            depth[i] = depth[tree.parent[i]] + 1
    layout = sorted(range(n), key=lambda i: (depth[i], i))
    size = [math.prod(cards[v] for v in c) for c in tree.cliques]
    offset = [0] * n
    levels: list[list[int]] = []
    pos = 0
    for i in layout:
        offset[i] = pos
        if depth[i] == len(levels):
            levels.append([pos, pos])
        pos += size[i]
        levels[depth[i]][1] = pos
    states = [_states(c, cards) for c in tree.cliques]
    n_slots, up_slot, pair_entry, pair_slot = [0], [torch.zeros(0, dtype=torch.long)], [], []
    rank_maps: list[tuple[Tensor, ...] | None] = []
    pair_entry.append(up_slot[0])
    pair_slot.append(up_slot[0])
    rank_maps.append(None)
    for d in range(1, len(levels)):
        members = [i for i in layout if depth[i] == d]
        slot0, ups, pe, ps = 0, [], [], []
        base = levels[d - 1][0]
        ranks: dict[int, list[tuple[Tensor, Tensor]]] = {}
        for i in members:
            p = tree.parent[i]
            sep = [v for v in tree.cliques[i] if v in tree.cliques[p]]
            dims = [cards[v] for v in sep]
            mine = _flat_index(states[i], [tree.cliques[i].index(v) for v in sep], dims) + slot0
            theirs = _flat_index(states[p], [tree.cliques[p].index(v) for v in sep], dims) + slot0
            ups.append(mine)
            entries = torch.arange(size[p]) + (offset[p] - base)
            pe.append(entries)
            ps.append(theirs)
            ranks.setdefault(p, []).append((entries, theirs))
            slot0 += math.prod(dims)
        n_slots.append(slot0)
        up_slot.append(torch.cat(ups))
        pair_entry.append(torch.cat(pe))
        pair_slot.append(torch.cat(ps))
        width = max(len(r) for r in ranks.values())
        if width <= _LOG_PRODUCT:
            level_size = levels[d - 1][1] - base
            maps = []
            for r in range(width):
                m = torch.full((level_size,), slot0, dtype=torch.long)  # slot0: the slot holding one
                for kids in ranks.values():
                    if r < len(kids):
                        m[kids[r][0]] = kids[r][1]
                maps.append(m)
            rank_maps.append(tuple(maps))
        else:
            rank_maps.append(None)
    # CPDs: entry -> position in the concatenated CPD vector, one map per CPD rank of a clique
    cpd_off, pos = [], 0
    for v in net.nodes:
        cpd_off.append(pos)
        pos += net.n_configs(v) * net.card(v)
    one = pos
    psi_ranks: list[list[int]] = [[] for _ in range(n)]
    for j in range(len(net.nodes)):
        psi_ranks[tree.home[j]].append(j)

    def cpd_entries(i: int, j: int) -> Tensor:  # clique i's entries -> CPD j's positions
        fam = [net.col[u] for u in net.parents[net.nodes[j]]] + [j]
        idx = _flat_index(states[i], [tree.cliques[i].index(u) for u in fam], [cards[u] for u in fam])
        return idx + cpd_off[j]

    psi_maps = _rank_maps(psi_ranks, one, tree.total, offset, size, cpd_entries)
    # evidence: each variable enters in the clique holding it with fewest variables entered yet
    var_offset = [0] * len(cards)
    k = 0
    for v, c in enumerate(cards):
        var_offset[v] = k
        k += c
    slot_var = torch.repeat_interleave(torch.arange(len(cards)), torch.tensor(cards))
    slot_state = torch.cat([torch.arange(c) for c in cards])
    holders: list[list[int]] = [[] for _ in cards]
    for i, c in enumerate(tree.cliques):
        for v in c:
            holders[v].append(i)
    entered: list[list[int]] = [[] for _ in range(n)]
    for v in range(len(cards)):
        i = min(holders[v], key=lambda h: (len(entered[h]), size[h]))
        entered[i].append(v)
    lam_maps = _rank_maps(
        entered,
        k,
        tree.total,
        offset,
        size,
        lambda i, v: states[i][:, tree.cliques[i].index(v)] + var_offset[v],
    )
    me, ms = [], []
    for v in range(len(cards)):  # each marginal from the smallest clique holding the variable
        i = min(holders[v], key=size.__getitem__)
        me.append(torch.arange(size[i]) + offset[i])
        ms.append(states[i][:, tree.cliques[i].index(v)] + var_offset[v])
    flat = Flat(
        tree.total, tuple(offset), tuple((a, b) for a, b in levels), tuple(n_slots), tuple(up_slot),
        tuple(pair_entry), tuple(pair_slot), tuple(rank_maps), tuple(psi_maps), torch.stack(psi_maps, 1),
        tuple(var_offset), slot_var, slot_state, tuple(lam_maps), torch.stack(lam_maps, 1).reshape(-1),
        torch.cat(me), torch.cat(ms),
    )  # fmt: skip
    net.plans["junction-flat"] = flat
    return flat


def flat_potentials(
    net: Network, flat: Flat, cpds: Mapping[str, Tensor], ckey: tuple | None = None
) -> Tensor:
    """All clique tables in one vector ``(total,)`` (kept per CPD set; ``ckey``: its key, when known)."""
    key = ("potentials", "flat", _cpd_key(net, cpds) if ckey is None else ckey)
    hit = _recall(net, key)
    if hit is not None:
        return hit[0]
    w = torch.cat([cpds[n].reshape(-1) for n in net.nodes] + [torch.ones(1, dtype=_DTYPE)])
    psi = w[flat.psi_matrix].prod(1)
    _remember(net, key, (psi, [cpds[n] for n in net.nodes]))
    return psi


def evidence_vector(net: Network, flat: Flat, ev: Mapping[str, int], rows: Tensor | None) -> Tensor | None:
    """Evidence as one factor per (variable, state) slot, ``(B, slots + 1)`` (the last slot is one):
    zero for the states a dict entry or a row's observed value rules out.  ``None``: no evidence."""
    k = len(flat.slot_var)
    if rows is None:
        if not ev:
            return None
        lam = torch.ones(1, k + 1, dtype=_DTYPE)
        off = [flat.var_offset[net.col[v]] + s for v, c in ev.items() for s in range(net.card(v)) if s != c]
        lam[0, off] = 0.0
        return lam
    codes = rows.index_select(1, flat.slot_var)
    keep = (codes == flat.slot_state) | torch.isnan(codes)
    for v, c in ev.items():
        j = net.col[v]
        keep[:, flat.var_offset[j] : flat.var_offset[j] + net.card(v)] &= (
            flat.slot_state[flat.var_offset[j] : flat.var_offset[j] + net.card(v)] == c
        )
    return torch.cat([keep.to(_DTYPE), torch.ones(len(rows), 1, dtype=_DTYPE)], 1)


def flat_run(flat: Flat, psi: Tensor, lam: Tensor | None, *, distribute: bool) -> tuple[Tensor, Tensor]:
    """Collect (and distribute) on the flat buffer: ``(tables (B, total), P(evidence) (B,))``.

    A level's messages are one ``index_add_`` of its slice into separator slots; a parent
    multiplies in its children's messages one rank at a time (or, with many children, through
    a sum of logs: zero messages give ``exp(-inf) = 0``).  Distribution divides the parent's
    separator marginal by the upward message (Hugin); ``0/0`` (a zero message) becomes 0.
    """
    if lam is None:
        u = psi.unsqueeze(0).clone()
    elif len(flat.lam_maps) == 1:
        u = psi * lam.index_select(1, flat.lam_maps[0])
    else:
        u = psi * lam.index_select(1, flat.lam_flat).reshape(len(lam), flat.total, -1).prod(-1)
    b = u.shape[0]
    msgs: list[Tensor] = [u]
    for d in range(len(flat.levels) - 1, 0, -1):
        (a, e), (pa, pe) = flat.levels[d], flat.levels[d - 1]
        msg = u.new_zeros(b, flat.n_slots[d] + 1)
        msg[:, -1] = 1.0
        msg.index_add_(1, flat.up_slot[d], u[:, a:e])
        maps = flat.rank_maps[d]
        if maps is not None:
            for m in maps:
                u[:, pa:pe].mul_(msg.index_select(1, m))
        else:
            acc = u.new_zeros(b, pe - pa).index_add_(
                1, flat.pair_entry[d], msg.log().index_select(1, flat.pair_slot[d])
            )
            u[:, pa:pe].mul_(acc.exp_())
        msgs.append(msg)
    a, e = flat.levels[0]
    z = u[:, a:e].sum(1)
    if distribute:
        for d in range(1, len(flat.levels)):
            (a, e), (pa, pe) = flat.levels[d], flat.levels[d - 1]
            sep = u.new_zeros(b, flat.n_slots[d] + 1)
            sep.index_add_(1, flat.pair_slot[d], u[:, pa:pe].index_select(1, flat.pair_entry[d]))
            ratio = torch.nan_to_num_(sep / msgs[len(flat.levels) - d], nan=0.0)
            u[:, a:e].mul_(ratio.index_select(1, flat.up_slot[d]))
    return u, z


def flat_marginals(flat: Flat, u: Tensor) -> Tensor:
    """``P(v = s, evidence)`` for every (variable, state) slot, ``(B, slots)``."""
    return u.new_zeros(u.shape[0], len(flat.slot_var)).index_add_(
        1, flat.marg_slot, u.index_select(1, flat.marg_entry)
    )


# ------------------------------------------------------------------ queries on either engine
_FLAT_TRIAL_MEAN = 500  # trees with larger mean clique tables take the per-clique engine untried


def engine(net: Network, cpds: CPDs) -> str:
    """``"flat"`` or ``"cliques"``: the junction-tree engine for ``net``, chosen once.

    Trees of small cliques try both on an all-marginals pass (the best of three runs each):
    which one wins depends on how call overhead compares with gathers on this machine.
    """
    eng = net.plans.get("junction-engine")
    if eng is None:
        tree = jt.compile_tree(net)
        eng = "cliques"
        if tree.total <= FLAT_MAX and tree.total <= _FLAT_TRIAL_MEAN * len(tree.cliques):
            flat = compile_flat(net, tree)

            def by_levels() -> None:
                u, _ = flat_run(flat, flat_potentials(net, flat, cpds), None, distribute=True)
                flat_marginals(flat, u)

            def by_cliques() -> None:
                cal = jt.calibrate(net, cpds, {}, cache=False)
                for v in range(len(net.nodes)):
                    cal.marginal(v)

            times = []
            for fn in (by_levels, by_cliques):
                fn()
                runs = []
                for _ in range(3):
                    t0 = time.perf_counter()
                    fn()
                    runs.append(time.perf_counter() - t0)
                times.append(min(runs))
            eng = "flat" if times[0] <= times[1] else "cliques"
        net.plans["junction-engine"] = eng
    return eng


def tree_marginals(
    net: Network, cpds: CPDs, ev: Mapping[str, int], rows: Tensor | None, var: Sequence[str]
) -> tuple[Tensor, Tensor]:
    """``P(v, evidence)`` of each of ``var`` side by side, ``(B, sum of their cards)``
    (unnormalised), and ``P(evidence)`` ``(B,)``: one junction-tree pass (dict evidence ``ev``
    and/or evidence ``rows``).  A dict calibration is kept for the next query with the same
    CPDs and evidence."""
    if engine(net, cpds) == "cliques":
        cal = jt.calibrate(net, cpds, ev, rows)
        return torch.cat([cal.marginal(net.col[v]) for v in var], 1), cal.z
    flat = compile_flat(net, jt.compile_tree(net))
    pick = net.plans.get(("slots", tuple(var)))
    if pick is None:
        pick = torch.cat([torch.arange(net.card(v)) + flat.var_offset[net.col[v]] for v in var])
        net.plans[("slots", tuple(var))] = pick
    ckey = _cpd_key(net, cpds)
    key = None
    if rows is None:
        key = ("calibration", "flat", ckey, tuple(sorted((net.col[k], v) for k, v in ev.items())))
        hit = _recall(net, key)
        if hit is not None:
            m, z = hit[0]
            return m.index_select(1, pick), z
    psi = flat_potentials(net, flat, cpds, ckey)
    u, z = flat_run(flat, psi, evidence_vector(net, flat, ev, rows), distribute=True)
    m = flat_marginals(flat, u)
    if key is not None:
        jt._remember(net, key, ((m, z), [cpds[n] for n in net.nodes]))
    return m.index_select(1, pick), z


def tree_evidence(net: Network, cpds: CPDs, ev: Mapping[str, int], rows: Tensor) -> Tensor:
    """``P(evidence)`` per row ``(B,)``: the collect pass alone."""
    if engine(net, cpds) == "cliques":
        return jt.calibrate(net, cpds, ev, rows).z
    flat = compile_flat(net, jt.compile_tree(net))
    psi = flat_potentials(net, flat, cpds)
    return flat_run(flat, psi, evidence_vector(net, flat, ev, rows), distribute=False)[1]


def tree_chunks(net: Network, rows: Tensor) -> list[Tensor]:
    step = jt.row_chunk(jt.compile_tree(net), len(rows))
    return [rows[i : i + step] for i in range(0, len(rows), step)]


def tree_joint(
    net: Network, cpds: CPDs, ev: Mapping[str, int], var: Sequence[str], rows: Tensor | None
) -> Tensor:
    """``P(var, evidence)`` unnormalised, ``(*cards)`` (or ``(B, *cards)`` for evidence rows).

    Each joint state of ``var`` is one more evidence row, so the answer is ``P(evidence)`` of a
    batch of rows: one collect pass, whichever cliques the variables sit in.  A row observing a
    query variable gives zero to the joint states that contradict it.
    """
    cards = [net.card(v) for v in var]
    configs = torch.cartesian_prod(*(torch.arange(k, dtype=_DTYPE) for k in cards)).reshape(-1, len(var))
    base = torch.full((1, len(net.nodes)), math.nan, dtype=_DTYPE) if rows is None else rows
    n, c = len(base), len(configs)
    expanded = base.repeat_interleave(c, 0)
    cols = [net.col[v] for v in var]
    given = expanded[:, cols]
    clash = (~torch.isnan(given) & (given != configs.repeat(n, 1))).any(1)
    expanded[:, cols] = configs.repeat(n, 1)
    z = torch.cat([tree_evidence(net, cpds, ev, chunk) for chunk in tree_chunks(net, expanded)])
    z = z.masked_fill(clash, 0.0)
    return z.reshape(*cards) if rows is None else z.reshape(n, *cards)


def tree_counts(net: Network, cpds: CPDs, rows: Tensor) -> tuple[dict[str, Tensor], float]:
    """Expected family counts of ``rows`` (``sum_b P(family | evidence_b)``) and their
    log-likelihood, one junction-tree pass per chunk of rows."""
    stats = {n: torch.zeros(net.n_configs(n), net.card(n), dtype=_DTYPE) for n in net.nodes}
    ll = 0.0
    eng = engine(net, cpds)
    for chunk in tree_chunks(net, rows):
        if eng == "cliques":
            cal = jt.calibrate(net, cpds, {}, chunk)
            w = 1.0 / cal.z
            for n in net.nodes:
                stats[n] += cal.family(n, w)
            z = cal.z
        else:
            flat = compile_flat(net, jt.compile_tree(net))
            psi = flat_potentials(net, flat, cpds)
            u, z = flat_run(flat, psi, evidence_vector(net, flat, {}, chunk), distribute=True)
            tw = (1.0 / z) @ u  # sum over rows of P(clique | evidence_b)
            size = sum(net.n_configs(n) * net.card(n) for n in net.nodes)
            acc = torch.zeros(size + 1, dtype=_DTYPE)
            for m in flat.psi_maps:  # each entry into the family table of each CPD of its clique
                acc.index_add_(0, m, tw)
            pos = 0
            for n in net.nodes:
                k = net.n_configs(n) * net.card(n)
                stats[n] += acc[pos : pos + k].reshape(net.n_configs(n), net.card(n))
                pos += k
        if not bool((z > 0).all()):
            raise ValueError(
                "a row has observed values of probability zero under the network; drop or fix it."
            )
        ll += float(z.log().sum())
    return stats, ll
