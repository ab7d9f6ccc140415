"""Decomposable local scores of discrete Bayesian networks on complete data, counted in batches.

A node's local score depends only on the counts of its family (the node and its parents). The
counts of one family are a ``bincount`` of the family's mixed-radix code; the search asks for the
scores of *one parent set extended by each of several candidates* far more often than for single
sets, so :meth:`LocalScores.grouped` counts all those families with a single ``bincount`` over
stacked, offset codes and reduces them segment by segment.

BIC, AIC and BDeu equal pgmpy's (``bic-d``, ``aic-d``, ``bdeu``) on the same data and states: the
number of parent configurations ``q`` is the product of the parents' numbers of states, observed
or not, and the log-likelihood is the maximised multinomial one. K2 is Cooper and Herskovits'
score; pgmpy's ``K2`` differs from it by ``log Gamma(r)`` per unobserved parent configuration.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy.special import gammaln

__all__ = ["SCORES", "LocalScores", "canonical_score"]

#: Score names accepted by the public functions; pgmpy's spellings are aliases.
SCORES = ("bic", "aic", "bdeu", "k2")
_ALIASES = {"bic-d": "bic", "aic-d": "aic"}
#: Beyond this many cells a family is counted with ``np.unique`` instead of a dense ``bincount``.
_DENSE_CELLS = 1 << 22


def canonical_score(score: object) -> str:
    """``score`` as one of :data:`SCORES`; a ``ValueError`` naming the argument otherwise."""
    if not isinstance(score, str):
        raise TypeError(f"score must be a string, one of {', '.join(SCORES)}; got {type(score).__name__}.")
    name = _ALIASES.get(score.lower(), score.lower())
    if name not in SCORES:
        raise ValueError(
            f"score must be one of {', '.join(SCORES)} (or pgmpy's 'bic-d', 'aic-d'); got {score!r}."
        )
    return name


def _xlogx(upto: int) -> np.ndarray:
    """``c log c`` for ``c = 0 .. upto`` (0 at 0), so a log-likelihood is two table look-ups."""
    c = np.arange(upto + 1, dtype=np.float64)
    out = np.zeros(upto + 1)
    out[1:] = c[1:] * np.log(c[1:])
    return out


class LocalScores:
    """Local scores ``score(node | parents)``, cached by (node, parent bit mask).

    Parameters
    ----------
    codes : numpy.ndarray of int, shape (n_rows, n_nodes)
        State codes ``0 .. cards[j] - 1`` of complete rows.
    cards : sequence of int
        Number of states of each node.
    score : str
        One of :data:`SCORES`.
    equivalent_sample_size : float
        BDeu's prior sample size.
    """

    def __init__(
        self, codes: np.ndarray, cards: Sequence[int], score: str, equivalent_sample_size: float
    ) -> None:
        self.n_rows, self.n_nodes = codes.shape
        # one contiguous row per node: every family code is built from whole rows
        self.columns = np.ascontiguousarray(codes.T.astype(np.int64))
        self.cards = np.asarray(cards, dtype=np.int64)
        self.score = canonical_score(score)
        self.ess = float(equivalent_sample_size)
        self.cache: dict[tuple[int, int], float] = {}
        self._card_list = [int(c) for c in self.cards]
        self._configs: dict[int, int] = {}
        self._xlogx = _xlogx(self.n_rows)
        self._lgamma: dict[float, np.ndarray] = {}  # alpha -> lgamma(alpha + c) - lgamma(alpha), c = 0..n
        # BIC's penalty per free parameter; AIC's is 1
        self.per_param = 0.5 * math.log(self.n_rows) if self.score == "bic" else 1.0

    # ---------------------------------------------------------------- helpers
    def members(self, mask: int) -> list[int]:
        """The nodes in ``mask``, ascending."""
        out = []
        while mask:
            low = mask & -mask
            out.append(low.bit_length() - 1)
            mask ^= low
        return out

    def n_configs(self, mask: int) -> int:
        """Number of joint states of the nodes in ``mask`` (observed or not)."""
        q = self._configs.get(mask)
        if q is None:
            q = math.prod(self._card_list[j] for j in self.members(mask))
            self._configs[mask] = q
        return q

    def config_codes(self, mask: int) -> np.ndarray:
        """Mixed-radix code of the parents in ``mask`` for every row (zeros for no parents)."""
        cfg = np.zeros(self.n_rows, dtype=np.int64)
        for j in self.members(mask):
            cfg *= self.cards[j]
            cfg += self.columns[j]
        return cfg

    def _gamma_table(self, alpha: float) -> np.ndarray:
        table = self._lgamma.get(alpha)
        if table is None:
            c = np.arange(self.n_rows + 1, dtype=np.float64)
            table = gammaln(alpha + c) - gammaln(alpha)
            self._lgamma[alpha] = table
        return table

    # ---------------------------------------------------------------- scoring
    def _from_counts(self, cells: np.ndarray, rows: np.ndarray, q: int, r: int) -> float:
        """Local score from the non-negative cell counts and parent-configuration totals."""
        if self.score in ("bic", "aic"):
            ll = self._xlogx[cells].sum() - self._xlogx[rows].sum()
            return float(ll - self.per_param * q * (r - 1))
        if self.score == "bdeu":
            a_j, a_jk = self.ess / q, self.ess / (q * r)
        else:  # k2: one pseudo-count per cell
            a_j, a_jk = float(r), 1.0
        # unobserved configurations and empty cells contribute lgamma(a) - lgamma(a) = 0
        return float(self._gamma_table(a_jk)[cells].sum() - self._gamma_table(a_j)[rows].sum())

    def local(self, node: int, mask: int) -> float:
        """Score of ``node`` given the parents in bit mask ``mask``."""
        value = self.cache.get((node, mask))
        if value is None:
            value = float(self.grouped(node, [(mask, None)])[0][0])
        return value

    def extended(self, node: int, mask: int, candidates: np.ndarray) -> np.ndarray:
        """Scores of ``node`` given parents ``mask | {w}`` for each ``w`` in ``candidates``."""
        return self.grouped(node, [(mask, np.asarray(candidates, dtype=np.int64))])[0]

    def grouped(self, node: int, groups: Sequence[tuple[int, np.ndarray | None]]) -> list[np.ndarray]:
        """Scores of ``node`` given parents ``mask | {w}``, for each ``(mask, candidates)`` group.

        A group's families share the parent code of its ``mask``, and every family occupies a
        segment of one ``bincount`` (its code shifted by the segment's offset), so a whole batch
        costs a few NumPy calls over stacked codes rather than a call chain per family; cached
        families are read from the cache. ``candidates=None`` scores ``mask`` itself.
        """
        r = int(self.cards[node])
        outs: list[np.ndarray] = []
        blocks: list[tuple[int, int, np.ndarray, np.ndarray]] = []  # (group, q of mask, todo, extra cards)
        for g, (mask, ws) in enumerate(groups):
            if ws is None:
                keys = [(node, mask)]
            else:
                keys = [(node, mask | 1 << int(w)) for w in ws]
            out = np.empty(len(keys))
            todo = []
            for i, key in enumerate(keys):
                value = self.cache.get(key)
                if value is None:
                    todo.append(i)
                else:
                    out[i] = value
            outs.append(out)
            if todo:
                extra = np.ones(1, dtype=np.int64) if ws is None else self.cards[ws[todo]]
                blocks.append((g, self.n_configs(mask), np.asarray(todo), extra))
        # count in chunks of at most _DENSE_CELLS cells
        chunk: list[tuple[int, int, np.ndarray, np.ndarray]] = []
        cells = 0
        for block in blocks:
            size = int(block[1] * block[3].sum()) * r
            if chunk and cells + size > _DENSE_CELLS:
                self._count(node, groups, chunk, outs)
                chunk, cells = [], 0
            if size > _DENSE_CELLS:
                self._count_sparse(node, groups, block, outs)
            else:
                chunk.append(block)
                cells += size
        if chunk:
            self._count(node, groups, chunk, outs)
        return outs

    def _count(
        self, node: int, groups: Sequence[tuple[int, np.ndarray | None]], chunk: list, outs: list
    ) -> None:
        r = int(self.cards[node])
        fams, qs = [], []
        for g, q0, todo, extra in chunk:
            mask, ws = groups[g]
            cfg = self.config_codes(mask)
            if ws is None:
                fams.append(cfg[None, :])
            else:
                # parent code of mask | {w}: (code of mask) * card(w) + w
                fams.append(cfg[None, :] * extra[:, None] + self.columns[ws[todo]])
            qs.append(q0 * extra)
        q = np.concatenate(qs)
        sizes = q * r
        offsets = np.concatenate(([0], np.cumsum(sizes)[:-1]))
        fam = (np.concatenate(fams) * r + self.columns[node][None, :]) + offsets[:, None]
        counts = np.bincount(fam.ravel(), minlength=int(sizes.sum()))
        rows = counts.reshape(-1, r).sum(1)
        if self.score in ("bic", "aic"):
            cell_part = np.add.reduceat(self._xlogx[counts], offsets)
            row_part = np.add.reduceat(self._xlogx[rows], offsets // r)
            values = cell_part - row_part - self.per_param * q * (r - 1)
        else:
            if self.score == "bdeu":
                a_j, a_jk = self.ess / q, self.ess / sizes
            else:  # k2
                a_j, a_jk = np.full(len(q), float(r)), np.ones(len(q))
            a_cell, a_row = np.repeat(a_jk, sizes), np.repeat(a_j, q)
            cell_part = np.add.reduceat(gammaln(a_cell + counts) - gammaln(a_cell), offsets)
            row_part = np.add.reduceat(gammaln(a_row + rows) - gammaln(a_row), offsets // r)
            values = cell_part - row_part
        at = 0
        for g, _, todo, _ in chunk:
            mask, ws = groups[g]
            for i in todo:
                key = (node, mask) if ws is None else (node, mask | 1 << int(ws[i]))
                outs[g][i] = values[at]
                self.cache[key] = float(values[at])
                at += 1

    def _count_sparse(
        self, node: int, groups: Sequence[tuple[int, np.ndarray | None]], block: tuple, outs: list
    ) -> None:
        g, q0, todo, extra = block
        mask, ws = groups[g]
        r = int(self.cards[node])
        for i, k in zip(todo, extra, strict=True):
            family = mask if ws is None else mask | 1 << int(ws[i])
            value = self._sparse(node, family, q0 * int(k), r)
            outs[g][i] = value
            self.cache[(node, family)] = value

    def _sparse(self, node: int, mask: int, q: int, r: int) -> float:
        """A family with more cells than is worth a dense array: count the observed cells only."""
        fam = self.config_codes(mask) * r + self.columns[node]
        cells, inverse = np.unique(fam, return_inverse=True)
        counts = np.bincount(inverse)
        _, rows = np.unique(cells // r, return_inverse=True)
        return self._from_counts(counts, np.bincount(rows, weights=counts).astype(np.int64), q, r)

    def network(self, parents: Sequence[int]) -> float:
        """Total score of the DAG whose node ``j`` has the parents in bit mask ``parents[j]``."""
        return float(sum(self.local(j, m) for j, m in enumerate(parents)))
