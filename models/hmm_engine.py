"""The HMM engine: sequence layout, blocked forward-backward and Viterbi in float64.

Every sequence is cut into blocks of ``L`` steps, all blocks advance together one step at a time
(so Python sees ``L`` steps, not ``T``), and the recursion inside a block starts from a guess
that is then corrected.  A block whose guessed start was wrong is recomputed from the corrected
start only until its trajectory meets the stored one: filtering forgets its starting point
geometrically, so after a few dozen steps the two agree to 1e-12 relative and the rest of the
stored block is exact.  Blocks that do not meet are recomputed completely, round after round, so
the result is exact whatever the chain; well-mixing chains need one correction pass.  Forward
and backward passes are rescaled in linear space (no underflow on any length).  Viterbi runs its
max-product pass in log space with the same blocking, keeping values only and laid out
state-major (``(K, blocks)`` per step, so its max over states is vectorised along the blocks),
then traces the path back block by block (``O(K)`` per step), correcting guessed block-end states
the same way.  Every step touches one contiguous slab (time-major block layout).

Small problems (``steps * K ** 3`` up to about 1.7e5 over all sequences, :func:`_prefix_pays`)
spend that Python time for little arithmetic, so forward-backward runs there as a parallel
prefix scan instead (:func:`_forward_backward_prefix`): the products of the per-step ``K x K``
matrices ``A diag(e_t)``, forward and (transposed, in reverse time) backward, in ``log2 T``
batched levels, every partial product divided by its largest entry.  Both paths give the same
results to rounding.  Viterbi always uses the blocked scan.

The engine knows nothing of emission families: it takes per-step emission densities (or a table
of log-probabilities indexed by symbols) and the chain's ``initial`` and ``transition``
probabilities.  :class:`probgen.models.HiddenMarkovModel` builds on it.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["SequenceData"]

_F64 = torch.float64
_RTOL = 1e-12  # relative agreement at which a recomputed block is taken to have met the stored one
_LOG_FLOOR = -1e200  # stands in for log(0) in Viterbi so that differences stay finite
_TINY = 1e-300


# ------------------------------------------------------------------------------------- data
@dataclass(frozen=True, eq=False)
class SequenceData:
    """One or several sequences, padded to a common length.

    Attributes
    ----------
    values : Tensor
        ``(n_sequences, max_length, n_features)`` float64 (Gaussian, Poisson) or
        ``(n_sequences, max_length)`` int64 (categorical); padded steps hold zeros.
    lengths : Tensor
        ``(n_sequences,)`` int64 lengths.
    single : bool
        True when one sequence was given (tools then return its result unwrapped).
    """

    values: Tensor
    lengths: Tensor
    single: bool = False

    @property
    def mask(self) -> Tensor:
        """``(n_sequences, max_length)`` bool, True on real (unpadded) steps."""
        return torch.arange(self.values.shape[1])[None, :] < self.lengths[:, None]

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.values.shape)

    @property
    def n_features(self) -> int:
        return 1 if self.values.dim() == 2 else int(self.values.shape[-1])

    def __len__(self) -> int:
        return int(self.values.shape[0])

    def sequences(self) -> list[Tensor]:
        """The unpadded sequences, in order."""
        return [self.values[i, : int(n)] for i, n in enumerate(self.lengths)]


# ------------------------------------------------------------------------ blocked recursions
def _block_length(T: int) -> int:
    """Steps per block: whole sequences when short, 64 for medium lengths, 256 when long."""
    if T <= 96:
        return T
    return 64 if T <= 16384 else 256


def _padded_length(T: int, L: int | None = None) -> int:
    """Length that sequences of at most ``T`` steps are padded to: a whole number of blocks.

    ``L`` (steps per block) defaults to :func:`_block_length`; tests pass small blocks to
    exercise the chaining on problems small enough to enumerate.
    """
    L = _block_length(T) if L is None else L
    return -(-T // L) * L


@dataclass(frozen=True, eq=False)
class _Layout:
    """How ``N`` padded sequences of ``Tp`` steps are cut into ``M = N * Bs`` blocks of ``L``.

    Block arrays are time-major, ``(L, M, ...)``: block ``m = n * Bs + j`` holds steps
    ``j * L .. (j + 1) * L - 1`` of sequence ``n``, and every step of the scans touches one
    contiguous ``(M, ...)`` slab.
    """

    N: int
    L: int
    Bs: int
    lengths: Tensor
    mask: Tensor  # (L, M) bool, real steps
    first: Tensor  # (M,) first block of its sequence
    last: Tensor  # (M,) last block of its sequence
    empty: Tensor  # (M,) block without a real step
    ragged: bool  # some padded step exists

    @property
    def M(self) -> int:
        return self.N * self.Bs

    @property
    def Tp(self) -> int:
        return self.Bs * self.L

    def to_blocks(self, x: Tensor) -> Tensor:
        """``(N, Tp, ...)`` -> ``(L, M, ...)``."""
        return x.reshape((self.M, self.L) + tuple(x.shape[2:])).transpose(0, 1).contiguous()

    def from_blocks(self, x: Tensor) -> Tensor:
        """``(L, M, ...)`` -> ``(N, Tp, ...)``."""
        return x.transpose(0, 1).reshape((self.N, self.Tp) + tuple(x.shape[2:]))


def _layout(lengths: Tensor, T: int, L: int | None = None) -> _Layout:
    """Blocking of sequences with ``lengths``, padded to ``T`` steps (a whole number of blocks).

    ``L`` (steps per block) defaults to :func:`_block_length` of ``T``.
    """
    L = _block_length(T) if L is None else L
    Bs = -(-T // L)
    if Bs * L != T:
        raise ValueError(f"internal: sequences must be padded to whole blocks of {L} steps; got {T}.")
    if lengths.shape[0] <= 64:  # EM asks for the same small layout at every iteration
        return _small_layout(tuple(lengths.tolist()), T, L)
    return _make_layout(lengths, T, L)


@functools.lru_cache(maxsize=16)
def _small_layout(lengths: tuple[int, ...], T: int, L: int) -> _Layout:
    return _make_layout(torch.tensor(lengths, dtype=torch.long), T, L)


def _make_layout(lengths: Tensor, T: int, L: int) -> _Layout:
    Bs = T // L
    N = lengths.shape[0]
    j = torch.arange(Bs).repeat(N)
    start = torch.arange(Bs).repeat(N) * L
    lens = lengths.repeat_interleave(Bs)
    mask = (start[None, :] + torch.arange(L)[:, None]) < lens[None, :]
    return _Layout(N, L, Bs, lengths, mask, j == 0, j == Bs - 1, start >= lens, bool((lengths < T).any()))


def _pad_time(x: Tensor, Tp: int, value: float) -> Tensor:
    T = x.shape[1]
    if Tp == T:
        return x
    pad = x.new_full((x.shape[0], Tp - T) + tuple(x.shape[2:]), value)
    return torch.cat([x, pad], 1)


def _chain_scan(
    step: Callable[[Tensor, Tensor], Tensor],
    xs: Tensor,
    start: Tensor,
    fixed: Tensor,
    close: Callable[[Tensor, Tensor], Tensor],
    *,
    reverse: bool = False,
) -> Tensor:
    """Run ``carry <- step(carry, x_t)`` along every block, blocks chained end to start.

    Parameters
    ----------
    step : callable
        ``(carry (M, K), x (M, K)) -> new carry``.
    xs : Tensor
        ``(L, M, K)`` per-step inputs of ``M`` blocks of ``L`` steps (time-major, so that every
        step reads and writes contiguous memory).
    start : Tensor
        ``(M, K)`` starting carries; exact where ``fixed``, a guess elsewhere.
    fixed : Tensor
        ``(M,)`` bool: blocks whose start is exact (or irrelevant).  Every other block ``m``
        starts from the carry that leaves block ``m - 1`` (``m + 1`` when ``reverse``).
    close : callable
        Agreement test of two ``(M', K)`` carries, one bool per row.
    reverse : bool
        Run backwards in time (steps ``L - 1 .. 0``, blocks chained from the right).

    Returns
    -------
    Tensor
        ``(L, M, K)`` carry entering every step.
    """
    L, M = xs.shape[:2]
    order = range(L - 1, -1, -1) if reverse else range(L)
    carries = start.new_empty((L,) + tuple(start.shape))
    carry = start
    for t in order:
        carries[t] = carry
        carry = step(carry, xs[t])
    end = carry
    used = start.clone()
    free = ~fixed
    if not bool(free.any()):
        return carries
    for _ in range(M + 1):  # exactness needs at most one round per block
        proposal = torch.roll(end, -1 if reverse else 1, 0)
        changed = free & ~close(proposal, used)
        n_changed = int(changed.sum())
        if n_changed == 0:
            break
        used = torch.where(changed[:, None], proposal, used)
        # rerun the changed blocks (all blocks when most changed: no gathers then; the others
        # just reproduce their stored values) until they meet their stored trajectories
        idx = None if 2 * n_changed > M else changed.nonzero().squeeze(-1)
        carry = used if idx is None else used[idx]
        x_sub = xs if idx is None else xs[:, idx]
        met = False
        check = 4
        for n, t in enumerate(order):
            if n == check:
                check += max(4, check // 2)
                stored = carries[t] if idx is None else carries[t, idx]
                if bool(close(carry, stored).all()):
                    met = True
                    break
            if idx is None:
                carries[t] = carry
            else:
                carries[t, idx] = carry
            carry = step(carry, x_sub[t])
        if not met:
            if idx is None:
                end = carry
            else:
                end[idx] = carry
    return carries


def _close_linear(a: Tensor, b: Tensor) -> Tensor:
    return ((a - b).abs() <= _RTOL * b.abs() + _TINY).all(-1)


def _close_log(a: Tensor, b: Tensor) -> Tensor:
    """Equal up to a constant shift, ignoring states impossible in both."""
    pa, pb = a > 0.5 * _LOG_FLOOR, b > 0.5 * _LOG_FLOOR
    diff = torch.where(pa & pb, a - b, -math.inf)
    ref = diff.amax(-1, keepdim=True)
    ok = (diff - ref).abs() <= 1e-10 * (1.0 + b.abs())
    return (ok | ~(pa | pb)).all(-1) & (pa == pb).all(-1)


def _scale_log_emission(log_e: Tensor, lay: _Layout) -> tuple[Tensor, Tensor]:
    """``exp(log_e - max_k log_e)`` per step (ones on padded steps) and the subtracted max.

    ``log_e`` (``(L, M, K)``, block layout) is used as scratch.
    """
    if lay.ragged:
        log_e[~lay.mask] = 0.0
    mx = log_e.amax(-1, keepdim=True).clamp_min(-1e300)
    return torch.exp(log_e.sub_(mx)), mx[..., 0]


def _state_major(x: Tensor, lay: _Layout) -> Tensor:
    """``(L, M, K)`` block layout -> ``(K, Tp N)``: state, then time, then sequence."""
    K = x.shape[-1]
    return x.view(lay.L, lay.N, lay.Bs, K).permute(3, 2, 0, 1).reshape(K, lay.Tp * lay.N)


def _time_major(x: Tensor, lay: _Layout) -> Tensor:
    """``(L, M)`` block layout -> ``(Tp N,)``, time then sequence."""
    return x.view(lay.L, lay.N, lay.Bs).permute(2, 0, 1).reshape(-1)


def _prefix_products(X: Tensor) -> Tensor:
    """Inclusive prefix products of ``K x K`` matrices along time, each up to a positive factor.

    ``X`` is ``(K, K, T, n)``, entry by entry (every entry a contiguous ``(T, n)`` slab, so
    that a product is ``K`` vectorised multiply-adds rather than ``T n`` tiny matrix products);
    on return ``X[:, :, t]`` is proportional to ``X[:, :, 0] X[:, :, 1] ... X[:, :, t]``.
    Hillis-Steele: ``ceil(log2 T)`` levels, each multiplying every partial product by the one
    ``2 ** level`` steps before it.  Every product is divided by its largest entry, so nothing
    under- or overflows; entries are non-negative, so products are accurate entrywise to a few
    ulps per level (no cancellation).
    """
    K, T = X.shape[0], X.shape[2]
    small = K**3 * X[0, 0].numel() <= 50000
    s = 1
    while s < T:
        a, b = X[:, :, :-s], X[:, :, s:]
        if small:  # one broadcast product: fewer calls
            Y = torch.mul(a[:, :, None], b[None]).sum(1)
        else:
            Y = a[:, 0, None] * b[None, 0]
            for j in range(1, K):
                Y.addcmul_(a[:, j, None], b[None, j])
        X[:, :, s:] = Y.div_(torch.amax(Y, (0, 1)).clamp_min_(_TINY))
        s *= 2
    return X


def _prefix_pays(lay: _Layout, K: int) -> bool:
    """Whether the prefix scan beats the blocked one: ``steps * K ** 3 <= 170000``, all sequences.

    The prefix scan costs ``O(T K^3 log T)`` in vectorised work and ``log T`` Python levels; the
    blocked scan about 150 Python steps whatever the size.  Measured on one thread, the
    crossover lies near 12000 to 20000 steps for 2 states, 5000 for 3, 2500 for 4, 350 for 8.
    """
    return lay.N * lay.Tp * K**3 <= 170_000


def _forward_backward_prefix(
    e: Tensor,
    mx: Tensor | None,
    lay: _Layout,
    initial: Tensor,
    transition: Tensor,
    *,
    posteriors: bool = True,
) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """Forward-backward by a parallel prefix scan over the step matrices: log-depth in Python.

    Same arguments and results as :func:`_forward_backward`.  With ``M_t = A diag(e_t)``, the
    unnormalised filter is ``alpha_t = 1 pi diag(e_0) M_1 ... M_t`` (every row of the product,
    the first factor having identical rows) and ``beta_t^T = (J M_{T-1}^T ... M_{t+1}^T)`` row
    by row, ``J = 1 1^T / K``: both are prefix products, of the step matrices for the forward
    and of their transposes in reverse time for the backward, and one scan
    (:func:`_prefix_products`) does both, batched over sequences.  Normalised filters then give
    the scaling factors ``c_t = <a_{t-1} A, e_t>`` (so the log-likelihood needs no scale carried
    through the scan), the marginals and the transition counts, all vectorised.  Padded steps
    have ``e_t = 1``: they follow the real ones, so the forward never sees them, and the
    backward starts from ``J A^k``, uniform rows as on an unpadded sequence.
    """
    K = e.shape[-1]
    N, Tp = lay.N, lay.Tp
    A = transition
    E = _state_major(e, lay)  # (K, Tp N)
    nb = 2 * N if posteriors else N
    X = e.new_empty((K, K, Tp, nb))
    E3 = E.view(K, Tp, N)
    torch.mul(A[:, :, None, None], E3[None], out=X[:, :, :, :N])  # A_ij e_t(j)
    X[:, :, 0, :N] = initial[:, None] * E3[:, 0]  # every row pi_j e_0(j)
    if posteriors:
        torch.mul(A.T[:, :, None, None], E3.flip(1)[:, None, :-1], out=X[:, :, 1:, N:])  # e_t(i) A_ji
        X[:, :, 0, N:] = 1.0 / K
    P = _prefix_products(X)[0]  # (K, Tp, nb): first row of every product
    a = P[:, :, :N].reshape(K, -1)
    a = a / a.sum(0).clamp_min_(_TINY)  # normalised filters (K, Tp N)
    aA = A.T @ a[:, :-N]  # predictions of steps 1 ..
    c = torch.empty(Tp * N, dtype=e.dtype)
    torch.sum(initial[:, None] * E[:, :N], 0, out=c[:N])
    torch.sum(aA * E[:, N:], 0, out=c[N:])
    logc = c.log_()
    if mx is not None:
        logc += _time_major(mx, lay)
    mask = _time_major(lay.mask, lay) if lay.ragged else None
    if mask is not None:
        logc.masked_fill_(~mask, 0.0)
    log_lik = logc.view(Tp, N).sum(0)
    if not posteriors:
        return log_lik, None, None
    beta = P[:, :, N:].flip(1).reshape(K, -1)  # (K, Tp N), each step up to a factor
    inf = torch.full((), math.inf, dtype=e.dtype)
    ab = a * beta
    norm = ab.sum(0)
    gamma = ab.div_(norm if mask is None else torch.where(mask, norm, inf))
    # xi_t(i, j) = a_{t-1}(i) A_ij e_t(j) beta_t(j) / <a_{t-1} A, e_t beta_t>
    w = E[:, N:] * beta[:, N:]
    z = (aA * w).sum(0)
    w.div_(z if mask is None else torch.where(mask[N:], z, inf))
    xi = A * (a[:, :-N] @ w.T)
    g = gamma.view(K, lay.Bs, lay.L, N).permute(2, 3, 1, 0).reshape(lay.L, lay.M, K)
    return log_lik, g, xi


def _forward_backward(
    e: Tensor,
    mx: Tensor | None,
    lay: _Layout,
    initial: Tensor,
    transition: Tensor,
    *,
    posteriors: bool = True,
    method: str | None = None,
) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """Rescaled forward-backward on blocked sequences.

    Parameters
    ----------
    e : Tensor
        ``(L, M, K)`` emission densities divided by ``exp(mx)`` per step, exactly one on padded
        steps (see :func:`_scale_log_emission`); used as scratch.
    mx : Tensor or None
        ``(L, M)`` log of the per-step divisor (``None``: no rescaling, e.g. probabilities).
    lay : _Layout
        The blocking.
    initial, transition : Tensor
        ``(K,)`` and ``(K, K)`` probabilities.
    posteriors : bool
        Also compute state marginals and expected transition counts.
    method : {None, "blocked", "prefix"}
        The blocked scan, or :func:`_forward_backward_prefix`; ``None`` picks the faster
        (:func:`_prefix_pays`).

    Returns
    -------
    log_lik : Tensor
        ``(N,)`` log-likelihood of every sequence.
    gamma : Tensor or None
        ``(L, M, K)`` posterior state marginals (zero on padded steps).
    xi_sum : Tensor or None
        ``(K, K)`` expected transition counts summed over sequences and steps.
    """
    L, M, K = e.shape
    if method is None:
        method = "prefix" if _prefix_pays(lay, K) else "blocked"
    if method == "prefix":
        return _forward_backward_prefix(e, mx, lay, initial, transition, posteriors=posteriors)
    if method != "blocked":
        raise ValueError(f"internal: method must be 'blocked' or 'prefix'; got {method!r}.")
    A = transition

    def fwd(p: Tensor, x: Tensor) -> Tensor:
        a = p * x
        return (a @ A) / a.sum(-1, keepdim=True).clamp_min(_TINY)

    start = initial.expand(M, K).clone()
    start[~lay.first] = 1.0 / K
    a = _chain_scan(fwd, e, start, lay.first | lay.empty, _close_linear).mul_(e)  # (L, M, K)
    c = a.sum(-1)  # (L, M)
    logc = torch.log(c)
    if mx is not None:
        logc += mx
    if lay.ragged:
        logc = torch.where(lay.mask, logc, torch.zeros((), dtype=c.dtype))
    log_lik = logc.sum(0).view(lay.N, lay.Bs).sum(1)
    if not posteriors:
        return log_lik, None, None
    At = transition.T.contiguous()

    def bwd(q: Tensor, x: Tensor) -> Tensor:
        b = (x * q) @ At
        return b / b.sum(-1, keepdim=True).clamp_min(_TINY)

    start_b = torch.full((M, K), 1.0 / K, dtype=e.dtype)
    beta = _chain_scan(bwd, e, start_b, lay.last | lay.empty, _close_linear, reverse=True)
    ab = a * beta
    norm = ab.sum(-1)  # (L, M)
    inf = torch.full((), math.inf, dtype=c.dtype)
    gamma = ab.div_((torch.where(lay.mask, norm, inf) if lay.ragged else norm)[..., None])
    # xi_t(i, j) = alpha_{t-1}(i) A_ij e_t(j) beta_t(j) / (c_{t-1} <a_t, beta_t>), a = c * alpha
    c_prev = torch.cat([torch.roll(c[L - 1 :], 1, 1), c[:-1]], 0)
    ok = lay.mask.clone()
    ok[0] &= ~lay.first
    w = e.mul_(beta).div_(torch.where(ok, norm * c_prev, inf)[..., None])
    inner = a[:-1].reshape(-1, K).T @ w[1:].reshape(-1, K)
    cross = torch.roll(a[L - 1], 1, 0).T @ w[0]
    return log_lik, gamma, A * (inner + cross)


@dataclass(frozen=True, eq=False)
class _ViterbiEmission:
    """Emission log-densities for Viterbi, read one state-major ``(K, M)`` step at a time.

    Either a table of log-probabilities indexed by blocked symbols (categorical: nothing of
    size ``L M K`` is ever built) or a ``(L, K, M)`` array (any strides).  ``log(0)`` becomes
    :data:`_LOG_FLOOR` and padded steps contribute zero.
    """

    source: Tensor  # (K, S + 1) table, last column zeros (the symbol of padded steps), or (L, K, M)
    symbols: Tensor | None = None  # (L, M) int64 for a table

    @staticmethod
    def from_table(log_probs: Tensor, symbols: Tensor, lay: _Layout) -> _ViterbiEmission:
        """``log_probs`` ``(K, S)``, ``symbols`` ``(L, M)`` in block layout."""
        K, S = log_probs.shape
        table = torch.cat([log_probs.clamp_min(_LOG_FLOOR), log_probs.new_zeros((K, 1))], 1)
        if lay.ragged:
            symbols = torch.where(lay.mask, symbols, S)
        return _ViterbiEmission(table, symbols)

    @staticmethod
    def from_array(le: Tensor, lay: _Layout) -> _ViterbiEmission:
        """``le`` ``(L, K, M)`` is used as scratch."""
        le.clamp_min_(_LOG_FLOOR)
        if lay.ragged:
            le.masked_fill_(~lay.mask[:, None, :], 0.0)
        return _ViterbiEmission(le)

    def step(self, t: int, idx: Tensor | None = None, out: Tensor | None = None) -> Tensor:
        """``(K, M)`` log-densities at step ``t`` (of blocks ``idx`` only when given)."""
        if self.symbols is None:
            x = self.source[t] if idx is None else self.source[t][:, idx]
            return x if out is None else out.copy_(x)
        s = self.symbols[t] if idx is None else self.symbols[t, idx]
        return torch.gather(self.source, 1, s.expand(self.source.shape[0], -1), out=out)

    def along(self, Z: Tensor) -> Tensor:
        """``(L, M)`` log-densities of states ``Z`` ``(L, M)`` (zero on padded steps)."""
        if self.symbols is None:
            return torch.gather(self.source, 1, Z[:, None, :])[:, 0]
        flat = (Z * self.source.shape[1]).add_(self.symbols)
        return torch.index_select(self.source.reshape(-1), 0, flat.reshape(-1)).view(Z.shape)


def _viterbi(
    em: _ViterbiEmission, lay: _Layout, log_initial: Tensor, log_transition: Tensor
) -> tuple[Tensor, Tensor]:
    """Most probable state path of every blocked sequence.

    The forward max-product pass keeps values only, state-major (every step reduces a
    ``(K, K, M)`` slab over its leading axis, vectorised along the blocks), stores ``delta``
    (up to a shift per block) and chains the blocks like the forward pass.  The backtrace then
    recomputes each backpointer along the path, ``O(K)`` per step, blocks in parallel from
    guessed end states, corrected until every block's end state agrees with the block after it
    (a corrected backtrace stops as soon as it merges with the stored one).

    Returns
    -------
    paths : Tensor
        ``(N, Tp)`` int64 states (arbitrary on padded steps).
    scores : Tensor
        ``(N,)`` log-probability of each sequence jointly with its best path.
    """
    L, M, K = lay.L, lay.M, log_transition.shape[0]
    logA = log_transition.clamp_min(_LOG_FLOOR)  # [from, to]
    A3 = logA[:, :, None]
    buf = logA.new_empty((K, K, M))

    def advance(d: Tensor, out: Tensor) -> None:  # out[j] = max_i d[i] + log A[i, j]
        work = buf if d.shape[1] == M else buf[:, :, : d.shape[1]]
        torch.amax(torch.add(d[:, None, :], A3, out=work), 0, out=out)

    # forward pass: D[t] = h_t + e_t, h_{t+1} = max-plus(D[t]); blocks start from a guess
    D = logA.new_empty((L, K, M))
    start = log_initial.clamp_min(_LOG_FLOOR)[:, None].expand(K, M).clone()
    start[:, ~lay.first] = 0.0
    h = start.clone()
    for t in range(L):
        advance(em.step(t, out=D[t]).add_(h), h)
    free = ~(lay.first | lay.empty)
    used = start
    for _ in range(M + 1):  # exactness needs at most one round per block
        proposal = torch.roll(h, 1, 1)
        changed = free & ~_close_log(proposal.T, used.T)
        n_changed = int(changed.sum())
        if n_changed == 0:
            break
        used[:, changed] = proposal[:, changed]
        # rerun the changed blocks (all blocks when most changed: no gathers then) until
        # their delta meets the stored one up to a shift (the future depends on nothing else)
        idx = None if 2 * n_changed > M else changed.nonzero().squeeze(-1)
        g = used.clone() if idx is None else used[:, idx]
        met, check = False, 4
        for t in range(L):
            d = em.step(t, idx).add(g)
            if t == check:
                check += max(4, check // 2)
                if bool(_close_log(d.T, (D[t] if idx is None else D[t][:, idx]).T).all()):
                    met = True
                    break
            if idx is None:
                D[t] = d
            else:
                D[t][:, idx] = d
            advance(d, g)
        if not met:
            if idx is None:
                h = g
            else:
                h[:, idx] = g
    # The backtrace only compares states within one time step, where D's per-block shift is
    # common, so it may use shorter blocks than the forward pass: fewer Python steps.  Backtrace
    # block i = q * M + m holds steps q * lt .. (q + 1) * lt - 1 of forward block m.
    S = L // 64 if L > 64 and L % 64 == 0 else 1
    lt, Mt = L // S, M * S
    D4 = D.view(S, lt, K, M)
    N, Bs = lay.N, lay.Bs
    last = lay.lengths - 1
    blk = torch.arange(N) * Bs + last // L
    end_pos = last % lt
    end_block = (last % L) // lt * M + blk
    end_state = D4[end_block // M, end_pos, :, end_block % M].argmax(-1)
    resets: dict[int, tuple[Tensor, Tensor]] = {}
    for pos in torch.unique(end_pos).tolist():
        sel = end_pos == pos
        resets[int(pos)] = (end_block[sel], end_state[sel])
    q_of = torch.arange(S).repeat_interleave(M)
    m_of = torch.arange(M).repeat(S)
    fixed = (m_of % Bs) * L + q_of * lt >= lay.lengths.repeat_interleave(Bs).repeat(S)  # no real step
    fixed[end_block] = True
    Z = torch.empty((lt, Mt), dtype=torch.long)
    logAT = logA.T.contiguous()  # [to, from]
    cand = logA.new_empty((S, K, M))
    top = logA.new_empty((S, 1, M))
    hit = torch.empty((S, K, M), dtype=torch.bool)
    small = torch.uint8 if K < 256 else torch.int32
    rank = torch.empty((S, K, M), dtype=small)
    rev = torch.arange(K, 0, -1, dtype=small)[:, None]  # K - i

    def first_max(c: Tensor) -> Tensor:  # argmax over axis 1 of (S, K, M), flattened to (S M,)
        # first maximiser (as argmax) by max, equality and max of K - i: reductions over the
        # state axis of state-major slabs are fast, arg-reductions are not
        torch.eq(c, torch.amax(c, 1, keepdim=True, out=top), out=hit)
        return K - torch.amax(torch.mul(hit, rev, out=rank), 1).view(-1).long()

    def best_from(t: int, z: Tensor) -> Tensor:  # argmax_i D[t, i] + log A[i, z], all blocks
        A_z = torch.gather(logA, 1, z.expand(K, -1)).view(K, S, M).transpose(0, 1)
        return first_max(torch.add(D4[:, t], A_z, out=cand))

    def trace(idx: Tensor | None, z: Tensor) -> None:
        qi, mi = (None, None) if idx is None else (idx // M, idx % M)
        for t in range(lt - 1, -1, -1):
            if idx is None:
                if t in resets:
                    z[resets[t][0]] = resets[t][1]
                Z[t] = z
            else:
                if t < lt - 2 and t % 2 == 0 and bool((Z[t, idx] == z).all()):
                    return  # merged with the stored path: the rest is the same
                Z[t, idx] = z
            if t > 0:
                z = best_from(t - 1, z) if idx is None else (D4[qi, t - 1, :, mi] + logAT[z]).argmax(-1)

    trace(None, first_max(D4[:, lt - 1]))
    used_z = Z[lt - 1].clone()
    free_z = ~fixed
    for _ in range(Mt + 1):
        first = Z[0].view(S, M)
        nxt = torch.cat([first[1:], torch.roll(first[:1], -1, 1)], 0).view(-1)  # first state of block i + 1
        implied = best_from(lt - 1, nxt)
        changed = free_z & (implied != used_z)
        idx = changed.nonzero().squeeze(-1)
        if idx.numel() == 0:
            break
        used_z = torch.where(changed, implied, used_z)
        trace(idx, implied[idx])
    Z = Z.view(lt, S, M).transpose(0, 1).reshape(L, M)
    # score of the path itself: log p(z_0) + sum log A + sum log e along it
    paths = lay.from_blocks(Z)
    emit = em.along(Z).sum(0).view(N, Bs).sum(1)
    step = (paths[:, :-1] * K).add_(paths[:, 1:])
    trans = torch.index_select(log_transition.reshape(-1), 0, step.reshape(-1)).view(step.shape)
    if lay.ragged:
        trans.masked_fill_(torch.arange(1, paths.shape[1]) >= lay.lengths[:, None], 0.0)
    scores = log_initial[paths[:, 0]] + trans.sum(1) + emit
    return paths, scores
