"""Local search over DAGs: hill climbing with a tabu list, a tabu walk past the first optimum, and
perturbed restarts from the best DAG found.

Every move (add, remove or reverse one edge) changes the parents of one or two nodes, and a
decomposable score changes only in those nodes' terms. The climber therefore keeps, for every
ordered pair ``(u, v)``, the score change of adding ``u -> v`` (``gain_add``) and of removing it
(``gain_remove``) as two ``n x n`` matrices; a move refreshes only the columns of the nodes whose
parents changed (one batched count per column), and reversing ``u -> v`` is worth
``gain_remove[u, v] + gain_add[v, u]``. Legality (acyclicity, in-degree, black/white lists, the
tabu list) is a handful of boolean matrices built from the transitive closure, so choosing a move
is a few vectorised ``argmax`` calls rather than a loop over all pairs with a path search each.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from probgen.models._structure_score import LocalScores

__all__ = ["Climber", "SearchResult"]

_ADD, _REMOVE, _REVERSE = 0, 1, 2


@dataclass
class SearchResult:
    """Best DAG found: parent bit masks per node, its score, and the moves made to reach it."""

    parents: list[int]
    score: float
    moves: int


def _closure(adjacency: np.ndarray) -> np.ndarray:
    """``reach[a, b]``: a directed path of one edge or more leads from ``a`` to ``b``.

    Squaring doubles the path lengths covered, so ``log2(depth)`` small matrix products suffice
    (a DAG's paths have fewer than ``n`` edges).
    """
    reach = adjacency.astype(np.float32)
    while True:
        wider = ((reach @ reach + reach) > 0).astype(np.float32)
        if np.array_equal(wider, reach):
            return reach > 0
        reach = wider


class Climber:
    """Search state over DAGs on ``scores.n_nodes`` nodes.

    Parameters
    ----------
    scores : LocalScores
        Local scores of the data.
    allowed : numpy.ndarray of bool, shape (n, n)
        ``allowed[u, v]``: the edge ``u -> v`` may be added (black and white lists).
    max_indegree : int
        Most parents a node may have.
    tabu_length : int
        Number of recent moves whose undoing is forbidden.
    epsilon : float
        Smallest gain that counts as an improvement.
    """

    def __init__(
        self, scores: LocalScores, allowed: np.ndarray, max_indegree: int, tabu_length: int, epsilon: float
    ) -> None:
        self.scores = scores
        self.n = scores.n_nodes
        self.allowed = allowed & ~np.eye(self.n, dtype=bool)
        self.max_indegree = max_indegree
        self.tabu_length = tabu_length
        self.epsilon = epsilon

    # ------------------------------------------------------------------ state
    def reset(self, parents: list[int]) -> None:
        """Start from the DAG with the given parent masks; forget the tabu list."""
        n = self.n
        self.parents = list(parents)
        self.adjacency = np.zeros((n, n), dtype=bool)
        for v, mask in enumerate(parents):
            for u in self.scores.members(mask):
                self.adjacency[u, v] = True
        self.local = np.array([self.scores.local(v, m) for v, m in enumerate(parents)])
        self.gain_add = np.full((n, n), -np.inf)
        self.gain_remove = np.full((n, n), -np.inf)
        self.indegree = self.adjacency.sum(0)
        for v in range(n):
            self._refresh(v)
        self.reach = _closure(self.adjacency)
        self.tabu: deque[tuple[int, int, int]] = deque()
        self.tabu_count = np.zeros((3, n, n), dtype=np.int64)

    @property
    def score(self) -> float:
        return float(self.local.sum())

    def _refresh(self, v: int) -> None:
        """Recompute the gains of every move that changes the parents of ``v``."""
        mask = self.parents[v]
        col_add = np.full(self.n, -np.inf)
        if self.indegree[v] < self.max_indegree:
            ws = np.flatnonzero(self.allowed[:, v] & ~self.adjacency[:, v])
            if len(ws):
                col_add[ws] = self.scores.extended(v, mask, ws) - self.local[v]
        col_remove = np.full(self.n, -np.inf)
        for u in self.scores.members(mask):
            col_remove[u] = self.scores.local(v, mask & ~(1 << u)) - self.local[v]
        self.gain_add[:, v] = col_add
        self.gain_remove[:, v] = col_remove

    # ------------------------------------------------------------------ moves
    def legal(self, use_tabu: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Boolean matrices of the legal adds, removals and reversals ``(u, v)`` of ``u -> v``."""
        a, reach = self.adjacency, self.reach
        room = self.indegree < self.max_indegree
        # adding u -> v closes a cycle iff v already reaches u
        add = self.allowed & ~a & ~a.T & ~reach.T & room[None, :]
        remove = a.copy()
        # reversing u -> v closes a cycle iff u reaches v by another path: u ~> w -> v, w != u
        detour = (reach.astype(np.float32) @ a.astype(np.float32)) > 0
        reverse = a & self.allowed.T & ~detour & room[:, None]
        if use_tabu:
            t = self.tabu_count > 0
            add &= ~t[_ADD]
            remove &= ~t[_REMOVE]
            reverse &= ~t[_REVERSE] & ~t[_REVERSE].T
        return add, remove, reverse

    def best_move(self) -> tuple[float, int, int, int] | None:
        """The legal, non-tabu move with the largest gain: ``(gain, kind, u, v)``, or None."""
        add, remove, reverse = self.legal()
        best: tuple[float, int, int, int] | None = None
        gains = (
            np.where(add, self.gain_add, -np.inf),
            np.where(remove, self.gain_remove, -np.inf),
            np.where(reverse, self.gain_remove + self.gain_add.T, -np.inf),
        )
        for kind, g in enumerate(gains):
            flat = int(np.argmax(g))
            value = float(g.flat[flat])
            if value > -np.inf and (best is None or value > best[0]):
                best = (value, kind, *divmod(flat, self.n))
        return best

    def apply(self, kind: int, u: int, v: int, *, remember: bool = True) -> None:
        """Make the move and refresh what it changed; ``remember`` puts its undoing on the tabu list."""
        if kind == _ADD:
            self._set_edge(u, v, True)
            self._rescore(v)
            undo = (_REMOVE, u, v)
        elif kind == _REMOVE:
            self._set_edge(u, v, False)
            self._rescore(v)
            undo = (_ADD, u, v)
        else:
            self._set_edge(u, v, False)
            self._set_edge(v, u, True)
            self._rescore(v)
            self._rescore(u)
            undo = (_REVERSE, u, v)  # forbids flipping this edge in either direction
        self.reach = _closure(self.adjacency)
        if remember and self.tabu_length > 0:
            self.tabu.append(undo)
            self.tabu_count[undo] += 1
            if len(self.tabu) > self.tabu_length:
                self.tabu_count[self.tabu.popleft()] -= 1

    def _set_edge(self, u: int, v: int, present: bool) -> None:
        self.adjacency[u, v] = present
        self.parents[v] = self.parents[v] | (1 << u) if present else self.parents[v] & ~(1 << u)
        self.indegree[v] += 1 if present else -1

    def _rescore(self, v: int) -> None:
        self.local[v] = self.scores.local(v, self.parents[v])
        self._refresh(v)

    # ------------------------------------------------------------------ searches
    def climb(self, max_moves: int, patience: int, tick: Callable[[], None] | None = None) -> SearchResult:
        """Best-improvement hill climbing, then a tabu walk of up to ``patience`` non-improving moves.

        The climb takes the best legal, non-tabu move while it gains at least ``epsilon`` (pgmpy's
        ``HillClimbSearch``). The walk then keeps taking the best such move even when it loses
        score, so the tabu list pushes the search out of the optimum; it ends after ``patience``
        moves without beating the best DAG seen, which is returned.
        """
        best = SearchResult(list(self.parents), self.score, 0)
        moves, stale = 0, 0
        while moves < max_moves:
            move = self.best_move()
            if move is None:
                break
            gain, kind, u, v = move
            if gain < self.epsilon and stale >= patience:
                break
            self.apply(kind, u, v)
            moves += 1
            if tick is not None:
                tick()
            current = self.score
            if current > best.score + self.epsilon:
                best = SearchResult(list(self.parents), current, moves)
                stale = 0
            elif gain < self.epsilon or stale:
                stale += 1
        return best

    def perturb(self, n_moves: int, rng: np.random.Generator) -> None:
        """Make ``n_moves`` random legal moves (tabu ignored, not remembered), then clear the tabu list."""
        for _ in range(n_moves):
            add, remove, reverse = self.legal(use_tabu=False)
            options = [(kind, np.flatnonzero(m)) for kind, m in enumerate((add, remove, reverse)) if m.any()]
            if not options:
                break
            kind, flat = options[int(rng.integers(len(options)))]
            u, v = divmod(int(flat[int(rng.integers(len(flat)))]), self.n)
            self.apply(kind, u, v, remember=False)
        self.tabu.clear()
        self.tabu_count[:] = 0
