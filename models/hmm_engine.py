"""The HMM engine: sequence layout, blocked forward-backward and Viterbi in float64.

Every sequence is cut into blocks of ``L`` steps, all blocks advance together one step at a time
(so Python sees ``L`` steps, not ``T``), and the recursion inside a block starts from a guess
that is then corrected.  A block whose guessed start was wrong is recomputed from the corrected
start only until its trajectory meets the stored one: filtering forgets its starting point
geometrically, so after a few dozen steps the two agree to 1e-12 relative and the rest of the
stored block is exact.  Blocks that do not meet are recomputed completely, round after round, so
the result is exact whatever the chain; well-mixing chains need one correction pass, and blocks
that have met drop out of it once half of those running have.  Forward
and backward passes are rescaled in linear space (no underflow on any length) and laid out
state-major (``(K, blocks)`` per step: the matrix product of a step has the long block axis
contiguous, its sums over states run along rows); the forward keeps the unnormalised filter
``a_t = p_t e_t`` itself, and the posteriors are formed in place from the two scans (callers
that can build emissions state-major directly pass them so, :func:`_scan_layout`, and get the
marginals back alike).  Viterbi runs its max-product pass in log space on blocks of its own
length (:func:`_viterbi_block_length`), keeping values only, also state-major (so its max over
states is vectorised along the blocks), then traces the path back block by block (``O(K)`` per
step), correcting guessed block-end states the same way.  Every
step touches one contiguous slab (time-major block layout).  Blocks have equal lengths just
covering a sequence (:func:`_block_length`), so padding stays small; the forward-backward scan
then re-blocks the same steps (splitting or merging blocks, in the copy to state-major layout
it makes anyway) to the length a cost model of its steps prefers (:func:`_scan_length`): short
blocks for few states, whole sequences when there are many short ones.  Internal ``(L, K, M)``
slabs live in per-thread buffers kept between calls (:func:`_scratch`): EM asks for the same
shapes at every iteration, and fresh memory costs a page fault per 4 kB on first touch.

Small problems (``steps * K ** 3`` up to about 1.7e5 over all sequences, :func:`_prefix_pays`)
spend that Python time for little arithmetic, so forward-backward runs there as a parallel
prefix scan instead (:func:`_forward_backward_prefix`): the products of the per-step ``K x K``
matrices ``A diag(e_t)``, forward and (transposed, in reverse time) backward, in ``log2 T``
batched levels, every partial product divided by its largest entry; on the CPU they run
instead through a compiled sequential kernel (:mod:`probgen.models.hmm_kernels`), whose cost
there is the arithmetic itself.  All paths give the same results to rounding.  On the CPU,
Viterbi runs the compiled decoder of that module, and so does the categorical E-step on few
sequences (up to 64 per squared state count, at any length); the blocked max-product scan here
serves accelerators.

The engine knows nothing of emission families: it takes per-step emission densities (or a table
of log-probabilities indexed by symbols) and the chain's ``initial`` and ``transition``
probabilities.  :class:`probgen.models.HiddenMarkovModel` builds on it.
"""

from __future__ import annotations

import functools
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

__all__ = ["SequenceData"]

_F64 = torch.float64
_RTOL = 1e-12  # relative agreement at which a recomputed block is taken to have met the stored one
_LOG_FLOOR = -1e200  # stands in for log(0) in Viterbi so that differences stay finite
_TINY = 1e-300
_SCRATCH = threading.local()  # per-thread buffers of _scratch
_SCAN_STEP = 3900.0  # cost of a scan step beyond its arithmetic, in elementwise-work units
_SCAN_ROUND = 32  # typical steps of a correction round
_SCRATCH_MAX = 1 << 23  # elements (64 MB of float64): larger buffers are not kept


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
    cache : dict
        Arrays derived from the data alone (block layout, products of features), filled by
        users of the engine and kept across EM iterations; empty on construction.
    """

    values: Tensor
    lengths: Tensor
    single: bool = False
    cache: dict[str, Tensor] = field(default_factory=dict, init=False, repr=False, compare=False)

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
    """Steps per block: whole sequences when short, else about 64 (medium) or 256 (long) steps.

    A sequence of ``T`` steps takes ``Bs = ceil(T / 64)`` (``ceil(T / 256)`` beyond 16384 steps)
    blocks of equal length, as short as covers ``T``: padding stays under ``Bs`` steps (under
    ``64 Bs`` for long sequences, whose blocks are a multiple of 64 steps for the Viterbi
    backtrace), not up to a whole block.  Idempotent: the padded length gives the same block.
    """
    if T <= 96:
        return T
    if T <= 16384:
        return -(-T // -(-T // 64))
    Bs = -(-T // 256)
    return 64 * -(-T // (64 * Bs))


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


def _scratch(name: str, shape: tuple[int, ...], dtype: torch.dtype = _F64) -> Tensor:
    """An uninitialised buffer kept between calls (per thread) for arrays that never leave the engine.

    Large fresh arrays cost a page fault per 4 kB on first touch, as much as the arithmetic
    written into them; EM asks for the same shapes at every iteration, so the engine keeps its
    internal ``(L, M, K)`` slabs (up to :data:`_SCRATCH_MAX` elements each) and reuses them.
    """
    n = math.prod(shape)
    store = _SCRATCH.__dict__
    buf = store.get(name)
    device = torch.get_default_device()  # a fit with device= sets it; buffers follow
    if buf is None or buf.numel() < n or buf.dtype != dtype or buf.device != device:
        buf = torch.empty(n, dtype=dtype, device=device)
        if n <= _SCRATCH_MAX:
            store[name] = buf
        else:
            store.pop(name, None)
    return buf[:n].view(shape)


def _chain_scan(
    step: Callable[[Tensor, Tensor, Tensor], Tensor],
    xs: Tensor,
    start: Tensor,
    fixed: Tensor,
    close: Callable[[Tensor, Tensor], Tensor],
    *,
    out: Tensor,
    reverse: bool = False,
) -> Tensor:
    """Run ``carry <- step(carry, x_t, record_t)`` along every block, blocks chained end to start.

    State-major throughout: a step works on ``(K, M)`` slabs, so that its matrix product has
    the long block axis contiguous and its sums over states run along rows.

    Parameters
    ----------
    step : callable
        ``(carry (K, M), x (K, M), record (K, M)) -> new carry``: writes what is kept of step
        ``t`` into ``record`` and returns the carry of the next step (a new tensor).
    xs : Tensor
        ``(L, K, M)`` per-step inputs of ``M`` blocks of ``L`` steps (time-major, so that every
        step reads and writes contiguous memory).
    start : Tensor
        ``(K, M)`` starting carries; exact where ``fixed``, a guess elsewhere.
    fixed : Tensor
        ``(M,)`` bool: blocks whose start is exact (or irrelevant).  Every other block ``m``
        starts from the carry that leaves block ``m - 1`` (``m + 1`` when ``reverse``).
    close : callable
        Agreement test of two ``(K, M')`` records, one bool per block.
    out : Tensor
        ``(L, K, M)`` where the records go.
    reverse : bool
        Run backwards in time (steps ``L - 1 .. 0``, blocks chained from the right).

    Returns
    -------
    Tensor
        ``out``, the record of every step.
    """
    L, _, M = xs.shape
    order = range(L - 1, -1, -1) if reverse else range(L)
    records = out
    carry = start
    for t in order:
        carry = step(carry, xs[t], records[t])
    end = carry
    used = start.clone()
    free = ~fixed
    if not bool(free.any()):
        return records
    rec = start.new_empty(start.shape)
    for _ in range(M + 1):  # exactness needs at most one round per block
        proposal = torch.roll(end, -1 if reverse else 1, 1)
        changed = free & ~close(proposal, used)
        n_changed = int(changed.sum())
        if n_changed == 0:
            break
        used = torch.where(changed, proposal, used)
        # rerun the changed blocks (all blocks when most changed: no gathers then; the others
        # just reproduce their stored values) until they meet their stored trajectories
        # blocks that have met drop out at a check once at least half of those running have
        # (the slowest blocks of a long series take several times the typical steps to meet)
        idx = None if 2 * n_changed > M else changed.nonzero().squeeze(-1)
        carry = used if idx is None else used[:, idx]
        r = rec if idx is None else rec[:, : idx.shape[0]]
        met = False
        check = 4
        for n, t in enumerate(order):
            nxt = step(carry, xs[t] if idx is None else xs[t].index_select(1, idx), r)
            if n == check:
                check += 4 if check < 16 else 8  # a check costs about a step
                ok = close(r, records[t] if idx is None else records[t].index_select(1, idx))
                n_ok = int(ok.sum())
                if n_ok == ok.shape[0]:
                    met = True
                    break
                if 2 * n_ok >= ok.shape[0] and ok.shape[0] >= 64:
                    keep = (~ok).nonzero().squeeze(-1)
                    idx = keep if idx is None else idx[keep]
                    carry, r_kept = nxt[:, keep], r[:, keep]
                    records[t][:, idx] = r_kept
                    r = rec[:, : idx.shape[0]]
                    continue
            if idx is None:
                records[t] = r
            else:
                records[t][:, idx] = r
            carry = nxt
        if not met:
            if idx is None:
                end = carry
            else:
                end[:, idx] = carry
    return records


def _close_linear(a: Tensor, b: Tensor) -> Tensor:
    """``(K, M)`` slabs equal to :data:`_RTOL` relative, one bool per block (column)."""
    return ((a - b).abs() <= _RTOL * b.abs() + _TINY).all(0)


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
    mx = log_e.amax(-1, keepdim=True).clamp_min_(-1e300)
    return log_e.sub_(mx).exp_(), mx[..., 0]


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
    return _small_problem(lay.N, lay.Tp, K)


def _small_problem(n_sequences: int, steps: int, K: int) -> bool:
    """``n_sequences * steps * K ** 3`` up to 1.7e5: the size below which the prefix scan (or on
    the CPU the compiled sequential kernel) beats the blocked scan (:func:`_prefix_pays`)."""
    return n_sequences * steps * K**3 <= 170_000


def _sequential_pays(e: Tensor, transition: Tensor) -> bool:
    """Whether the compiled sequential kernel can run: CPU tensors (it reads NumPy views)."""
    return e.device.type == "cpu" and transition.device.type == "cpu"


def _forward_backward_log(
    log_e: Tensor, lay: _Layout, initial: Tensor, transition: Tensor, *, posteriors: bool = True
) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """:func:`_forward_backward` from emission log-densities ``(L, M, K)`` (used as scratch).

    Small problems rescale in NumPy for the compiled kernel (a few PyTorch operations fewer per
    call); the others through :func:`_scale_log_emission`.
    """
    K = log_e.shape[-1]
    if _prefix_pays(lay, K) and _sequential_pays(log_e, transition):
        le = log_e.numpy()
        if lay.ragged:
            le[~lay.mask.numpy()] = 0.0
        mx = le.max(-1)
        np.maximum(mx, -1e300, out=mx)
        le -= mx[..., None]
        np.exp(le, out=le)
        return _forward_backward_sequential(log_e, mx, lay, initial, transition, posteriors=posteriors)
    e, mx_t = _scale_log_emission(log_e, lay)
    return _forward_backward(e, mx_t, lay, initial, transition, posteriors=posteriors)


def _forward_backward_sequential(
    e: Tensor,
    mx: Tensor | np.ndarray | None,
    lay: _Layout,
    initial: Tensor,
    transition: Tensor,
    *,
    posteriors: bool = True,
) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """Same arguments and results as :func:`_forward_backward`, by the compiled sequential
    kernel (:func:`probgen.models.hmm_kernels.forward_backward`): small problems on the CPU."""
    from probgen.models.hmm_kernels import forward_backward

    K = e.shape[-1]
    N, Tp = lay.N, lay.Tp
    E = lay.from_blocks(e).contiguous().numpy()  # (N, Tp, K): a view when blocks are whole sequences
    log_c = np.empty((N, Tp))
    gamma = np.empty((N, Tp, K))
    xi = np.empty((K, K))
    forward_backward(
        E,
        lay.lengths.numpy(),
        initial.contiguous().numpy(),
        transition.contiguous().numpy(),
        posteriors,
        log_c,
        gamma,
        xi,
    )
    log_lik = log_c.sum(1)
    if mx is not None:  # padded steps hold zero divisors; blocks are sequence-major
        m = mx if isinstance(mx, np.ndarray) else mx.numpy()
        log_lik += m.reshape(lay.L, N, lay.Bs).sum((0, 2))
    if not posteriors:
        return torch.from_numpy(log_lik), None, None
    return torch.from_numpy(log_lik), lay.to_blocks(torch.from_numpy(gamma)), torch.from_numpy(xi)


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


def _scan_length(lay: _Layout, K: int) -> int:
    """Steps per block for the blocked forward-backward scan, by a cost model of its steps.

    A scan costs ``L`` Python steps plus about :data:`_SCAN_ROUND` more for the correction round
    when a sequence spans several blocks, each step about :data:`_SCAN_STEP` plus ``w(K)`` per
    block (``w(K) = K (1 + K / 8) / 2``: products over states grow like ``K ** 2``), in units of
    elementwise work; fitted on one thread.  Candidates keep the steps of ``lay``: divisors of
    its block length (at least 8) and whole numbers of its blocks per sequence.
    """
    L, Bs = lay.L, lay.Bs
    steps = lay.N * lay.Tp
    width = K * (1.0 + K / 8.0) / 2.0
    best, best_cost = L, math.inf
    cands = [d for d in range(8, L + 1) if L % d == 0] + [L * j for j in range(2, Bs + 1) if Bs % j == 0]
    for Lp in cands or [L]:
        rounds = _SCAN_ROUND if Lp < lay.Tp else 0
        cost = (Lp + rounds) * (_SCAN_STEP + width * steps / Lp)
        if cost < best_cost:
            best, best_cost = Lp, cost
    return best


def _scan_layout(lay: _Layout, K: int) -> _Layout | None:
    """The blocks :func:`_forward_backward` would scan for ``lay``, or ``None`` (prefix scan).

    Callers that can build the emissions directly in state-major blocks of this layout (a
    table lookup) pass them with ``state_major=True`` and save two copies of ``T K`` numbers.
    """
    if _prefix_pays(lay, K):
        return None
    Lp = _scan_length(lay, K)
    return lay if Lp == lay.L else _layout(lay.lengths, lay.Tp, Lp)


def _restep(x: Tensor, lay: _Layout, Lp: int) -> tuple[Tensor, tuple[int, ...]]:
    """A view of ``x`` ``(L, M, K)`` (block layout of ``lay``) in state-major blocks of ``Lp`` steps.

    Returns the permuted view and the shape it has; copying it into a contiguous tensor of
    that shape gives ``(Lp, K, M')`` blocks of ``Lp`` steps (the layout of
    ``_layout(lay.lengths, lay.Tp, Lp)``), and copying such a tensor (viewed with that shape)
    into the view writes block layout back.
    """
    L, M, K = x.shape
    if Lp == L:
        return x.transpose(1, 2), (L, K, M)
    if L % Lp == 0:  # split every block into S consecutive ones: block m * S + s, step l'
        S = L // Lp
        return x.view(S, Lp, M, K).permute(1, 3, 2, 0), (Lp, K, M, S)
    j = Lp // L  # merge j consecutive blocks of a sequence
    if Lp % L or lay.Bs % j:
        raise ValueError(f"internal: cannot re-block {L}-step blocks into {Lp}-step ones.")
    Bj = lay.Bs // j
    return x.view(L, lay.N, Bj, j, K).permute(3, 0, 4, 1, 2), (j, L, K, lay.N, Bj)


def _forward_backward(
    e: Tensor,
    mx: Tensor | None,
    lay: _Layout,
    initial: Tensor,
    transition: Tensor,
    *,
    posteriors: bool = True,
    method: str | None = None,
    scan_length: int | None = None,
    state_major: bool = False,
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
    method : {None, "blocked", "prefix", "sequential", "prefix-torch"}
        The blocked scan, or for small problems (``"prefix"``) the compiled sequential kernel on
        the CPU (:func:`_forward_backward_sequential`), else (accelerators) the parallel
        prefix scan (:func:`_forward_backward_prefix`); ``None`` picks the faster
        (:func:`_prefix_pays`).
    scan_length : int, optional
        Steps per block of the blocked scan: a divisor of ``L``, or ``L`` times a divisor of the
        blocks per sequence (the blocks of ``lay`` are then split or merged, results unchanged).
        Default: ``L`` when ``method="blocked"``, else :func:`_scan_length`.
    state_major : bool
        ``e`` is ``(L, K, M)`` (state-major blocks of ``lay``; see :func:`_scan_layout`):
        the blocked scan runs on ``lay``'s own blocks without re-blocking copies, and ``gamma``
        comes back ``(L, K, M)`` in an internal buffer, valid until the next call.

    Returns
    -------
    log_lik : Tensor
        ``(N,)`` log-likelihood of every sequence.
    gamma : Tensor or None
        ``(L, M, K)`` posterior state marginals (zero on padded steps).
    xi_sum : Tensor or None
        ``(K, K)`` expected transition counts summed over sequences and steps.
    """
    if state_major:  # e is (L, K, M): the blocked scan on lay's own blocks, gamma returned alike
        L, K, M = e.shape
        method, scan_length = "blocked", L
    else:
        L, M, K = e.shape
    method_given = method is not None
    if method is None:
        method = "prefix" if _prefix_pays(lay, K) else "blocked"
    if method == "prefix":
        method = "sequential" if _sequential_pays(e, transition) else "prefix-torch"
    if method == "sequential":
        return _forward_backward_sequential(e, mx, lay, initial, transition, posteriors=posteriors)
    if method == "prefix-torch":
        return _forward_backward_prefix(e, mx, lay, initial, transition, posteriors=posteriors)
    if method != "blocked":
        raise ValueError(f"internal: method must be 'blocked' or a prefix scan; got {method!r}.")
    if scan_length is None:
        scan_length = L if method_given else _scan_length(lay, K)
    e_lay = lay
    if scan_length != L:  # the same steps in blocks of another length
        lay = _layout(lay.lengths, lay.Tp, scan_length)
        if mx is not None:
            mx = _restep(mx[..., None], e_lay, scan_length)[0].reshape(lay.L, lay.M)
    L, M = lay.L, lay.M
    A, At = transition, transition.T.contiguous()
    if state_major:
        eT = e
    else:
        eT = _scratch("fb_e", (L, K, M))
        e_view, shape = _restep(e, e_lay, L)
        eT.view(shape).copy_(e_view)

    # A step's product and its normaliser come from one GEMM: a last row of ones (forward) or of
    # A's column sums (backward) appended to the matrix gives the sum the step divides by, and
    # the bias adds _TINY to it (all-zero columns stay zero, not NaN).  Three operations a step
    # where a sum, a clamp and the division were five: on long series the per-operation cost,
    # not the arithmetic, bounds the scan.
    tiny = torch.zeros((K + 1, 1), dtype=e.dtype)
    tiny[K] = _TINY
    At_ext = torch.cat([At, torch.ones((1, K), dtype=e.dtype)], 0)  # (K + 1, K)
    A_ext = torch.cat([A, A.sum(0, keepdim=True)], 0)

    def fwd(p: Tensor, x: Tensor, rec: Tensor) -> Tensor:  # rec = a_t = p_t e_t, unnormalised filter
        b = torch.addmm(tiny, At_ext, torch.mul(p, x, out=rec))
        return b[:K].mul_(b[K:].reciprocal_())  # K multiplications a column, not K divisions

    start = initial[:, None].expand(K, M).clone()
    start[:, ~lay.first] = 1.0 / K
    a = _chain_scan(fwd, eT, start, lay.first | lay.empty, _close_linear, out=_scratch("fb_a", (L, K, M)))
    c = torch.sum(a, 1, out=_scratch("fb_c", (L, M)))  # (L, M)
    logc = torch.log(c)
    if mx is not None:
        logc += mx
    if lay.ragged:
        logc = torch.where(lay.mask, logc, torch.zeros((), dtype=c.dtype))
    log_lik = logc.sum(0).view(lay.N, lay.Bs).sum(1)
    if not posteriors:
        return log_lik, None, None

    def bwd(q: Tensor, x: Tensor, rec: Tensor) -> Tensor:
        rec.copy_(q)
        b = torch.addmm(tiny, A_ext, x * q)
        return b[:K].mul_(b[K:].reciprocal_())  # K multiplications a column, not K divisions

    start_b = torch.full((K, M), 1.0 / K, dtype=e.dtype)
    beta = _chain_scan(
        bwd, eT, start_b, lay.last | lay.empty, _close_linear, out=_scratch("fb_b", (L, K, M)), reverse=True
    )
    # xi_t(i, j) = alpha_{t-1}(i) A_ij e_t(j) beta_t(j) / (c_{t-1} <a_t, beta_t>), a = c * alpha;
    # in place: eT becomes w, beta gamma, returned in e (block layout)
    # (L, M) temporaries in kept buffers too: mid-sized fresh arrays fault their pages in
    w = eT.mul_(beta)
    gamma = beta.mul_(a)
    norm = torch.sum(gamma, 1, out=_scratch("fb_norm", (L, M)))
    if lay.ragged:
        norm.masked_fill_(~lay.mask, math.inf)  # padded steps: zero weight
    gamma.div_(norm[:, None])
    den = _scratch("fb_den", (L, M))  # c_{t-1} <a_t, beta_t>, infinite where no transition enters
    den[1:] = c[:-1]
    den[0] = torch.roll(c[L - 1], 1, 0)
    den.mul_(norm)
    den[0].masked_fill_(lay.first, math.inf)
    w.div_(den[:, None])
    inner = torch.bmm(a[:-1], w[1:].transpose(1, 2)).sum(0)
    cross = torch.roll(a[L - 1], 1, 1) @ w[0].T
    if state_major:
        return log_lik, gamma, A * (inner + cross)
    e_view.copy_(gamma.view(shape))
    return log_lik, e, A * (inner + cross)


@dataclass(frozen=True, eq=False)
class _ViterbiEmission:
    """Emission log-densities for Viterbi, read one state-major ``(K, M)`` step at a time.

    Either a table of log-probabilities indexed by blocked symbols (categorical: nothing of
    size ``L M K`` is ever built) or a ``(L, K, M)`` array (any strides).  ``log(0)`` becomes
    :data:`_LOG_FLOOR` and padded steps contribute zero.
    """

    source: Tensor  # (K, S + 1) table, last column zeros (the symbol of padded steps), or (L, K, M)
    symbols: Tensor | None = None  # (L, M) int64 for a table
    merged_from: int = 0  # an array merged from blocks of this many steps: source (j, L, K, N, Bj)

    @staticmethod
    def from_table(log_probs: Tensor, symbols: Tensor, lay: _Layout) -> _ViterbiEmission:
        """``log_probs`` ``(K, S)``, ``symbols`` ``(L, M)`` in block layout."""
        K, S = log_probs.shape
        table = torch.cat([log_probs.clamp_min(_LOG_FLOOR), log_probs.new_zeros((K, 1))], 1)
        if lay.ragged:
            symbols = torch.where(lay.mask, symbols, S)
        return _ViterbiEmission(table, symbols)

    @staticmethod
    def from_whitened(x: Tensor, W: Tensor, shift: Tensor, const: Tensor, lay: _Layout) -> _ViterbiEmission:
        """``log e_k(x) = -|W_k x + shift_k|^2 / 2 - const_k`` of ``x`` ``(L, M, d)`` (block layout).

        ``W`` ``(K, r, d)``, ``shift`` ``(K, r)``, ``const`` ``(K,)``; a Gaussian state has
        ``W_k`` the inverse Cholesky factor of its covariance and ``shift_k = -W_k mu_k``.  The
        densities come out state-major, ``(K, L M)`` viewed as ``(L, K, M)``, computed in
        cache-sized column chunks in which the squared residuals of a state are summed over
        contiguous rows: no ``(L, M, K)`` array to transpose.  The densities live in an engine
        buffer (:func:`_scratch`), valid until the next call.
        """
        K, r, d = W.shape
        n = x.shape[0] * x.shape[1]
        X, Wf, sh = x.reshape(n, d), W.reshape(K * r, d), shift.reshape(K * r, 1)
        out = _scratch("vit_e", (K, n))
        buf = _scratch("vit_w", (K * r, min(n, _VITERBI_CHUNK)))
        for s in range(0, n, _VITERBI_CHUNK):
            b = buf[:, : min(n - s, _VITERBI_CHUNK)]
            o = out[:, s : s + b.shape[1]]
            torch.addmm(sh, Wf, X[s : s + b.shape[1]].T, out=b).square_()
            torch.sum(b.view(K, r, -1), 1, out=o).mul_(-0.5).sub_(const[:, None]).clamp_min_(_LOG_FLOOR)
        le = out.view(K, x.shape[0], x.shape[1]).transpose(0, 1)
        if lay.ragged:  # zeros on padded steps, in the few blocks that have some
            cols = (~lay.mask.all(0)).nonzero().squeeze(-1)
            le[:, :, cols] = le[:, :, cols].masked_fill_(~lay.mask[:, None, cols], 0.0)
        return _ViterbiEmission(le)

    @staticmethod
    def from_array(le: Tensor, lay: _Layout) -> _ViterbiEmission:
        """``le`` ``(L, K, M)`` is used as scratch."""
        le.clamp_min_(_LOG_FLOOR)
        if lay.ragged:
            le.masked_fill_(~lay.mask[:, None, :], 0.0)
        return _ViterbiEmission(le)

    def merged(self, lay: _Layout, Lp: int) -> _ViterbiEmission:
        """The same emissions for blocks of ``Lp = j L`` steps (``j`` consecutive blocks merged).

        A table's symbols are copied (``L M`` integers); an array stays a view, read step by
        step through :meth:`step` (which copies every step anyway).
        """
        if self.symbols is None:
            view, _ = _restep(self.source.transpose(1, 2), lay, Lp)  # (j, L, K, N, Bj)
            return _ViterbiEmission(view, None, lay.L)
        view, _ = _restep(self.symbols[..., None], lay, Lp)  # (j, L, 1, N, Bj)
        return _ViterbiEmission(self.source, view.reshape(Lp, -1))

    def step(self, t: int, idx: Tensor | None = None, out: Tensor | None = None) -> Tensor:
        """``(K, M)`` log-densities at step ``t`` (of blocks ``idx`` only when given)."""
        if self.symbols is None and self.merged_from:
            x = self.source[t // self.merged_from, t % self.merged_from]  # (K, N, Bj)
            if idx is not None:
                return x.reshape(x.shape[0], -1)[:, idx]
            if out is None:
                return x.reshape(x.shape[0], -1)
            out.view(x.shape).copy_(x)
            return out
        if self.symbols is None:
            x = self.source[t] if idx is None else self.source[t][:, idx]
            return x if out is None else out.copy_(x)
        s = self.symbols[t] if idx is None else self.symbols[t, idx]
        return torch.gather(self.source, 1, s.expand(self.source.shape[0], -1), out=out)

    def add_step(self, t: int, h: Tensor, out: Tensor) -> Tensor:
        """``out = h + e_t``, ``(K, M)``, all blocks (one kernel for an unmerged array)."""
        if self.symbols is None and not self.merged_from:
            return torch.add(self.source[t], h, out=out)
        return self.step(t, out=out).add_(h)

    def along(self, Z: Tensor) -> Tensor:
        """``(L, M)`` log-densities of states ``Z`` ``(L, M)`` (zero on padded steps)."""
        if self.symbols is None:
            return torch.gather(self.source, 1, Z[:, None, :])[:, 0]
        flat = torch.add(self.symbols, Z, alpha=self.source.shape[1])  # laid out as the symbols
        return torch.index_select(self.source.reshape(-1), 0, flat.reshape(-1)).view(Z.shape)


def _met_log(a: Tensor, b: Tensor) -> Tensor:
    """:func:`_close_log` of state-major ``(K, n)`` slabs, column by column, reducing over rows."""
    pa, pb = a > 0.5 * _LOG_FLOOR, b > 0.5 * _LOG_FLOOR
    diff = torch.sub(a, b).masked_fill_(~pa, -math.inf)
    dev = diff.sub_(diff.amax(0)).abs_()  # inf where a is impossible
    ok = torch.le(dev, b.abs().mul_(1e-10).add_(1e-10)).logical_or_(~pa)
    return ok.all(0).logical_and_((pa == pb).all(0))


_VITERBI_CHUNK = 16384  # columns of whitened residuals at a time in _ViterbiEmission.from_whitened
_VITERBI_LOOKAHEAD = 4  # steps into the next block from which a backtrace block guesses its end state
_VITERBI_BLOCK = (128, 256)  # shortest and longest Viterbi blocks on long sequences (_viterbi_block_length)
_VITERBI_STEP_COST = 7e4  # a forward step beyond its arithmetic, in (K, K, blocks) elements (about 20 us)
_VITERBI_MEET = 20  # typical steps until corrected blocks meet their stored values


def _viterbi_block_length(T: int, work: float = 0.0) -> int:
    """Steps per block when Viterbi lays out sequences of at most ``T`` steps itself.

    Whole sequences up to 256 steps (no correction round); longer ones in equal blocks, a
    multiple of 8 steps just covering ``T``, of about ``sqrt(c work / s)`` steps (``work`` the
    max-plus arithmetic of the whole pass, ``N T K^2`` elements; ``c`` the steps of a
    correction round, ``s`` the overhead of a step): ``L`` steps cost ``L s`` in overheads and
    the correction reruns ``c / L`` of the work.  Kept between :data:`_VITERBI_BLOCK` (128
    measured better than 64 even for small problems) and 256 (longer blocks untested).
    """
    if T <= 256:
        return T
    lo, hi = _VITERBI_BLOCK
    target = min(max(math.sqrt(_VITERBI_MEET * work / _VITERBI_STEP_COST), lo), hi)
    Bs = -(-T // int(target))
    return 8 * -(-T // (8 * Bs))


def _viterbi_length(lay: _Layout) -> int:
    """Steps per block for Viterbi: ``lay``'s blocks merged by the largest ``j`` keeping ``<= 256`` steps.

    A Viterbi step is a ``(K, K, blocks)`` reduction; up to 256 steps per block, fewer and
    wider steps pay (measured on one thread), and whole short sequences need no correction.
    """
    js = [j for j in range(1, lay.Bs + 1) if lay.Bs % j == 0 and lay.L * j <= 256]
    return lay.L * max(js)


def _viterbi(
    em: _ViterbiEmission,
    lay: _Layout,
    log_initial: Tensor,
    log_transition: Tensor,
    *,
    block_length: int | None = None,
) -> tuple[Tensor, Tensor]:
    """Most probable state path of every blocked sequence.

    The forward max-product pass keeps values only, state-major (every step reduces a
    ``(K, K, M)`` slab over its leading axis, vectorised along the blocks), stores ``delta``
    (up to a shift per block) and chains the blocks like the forward pass: blocks rerun from
    their corrected starts all together, then, once at least half of them have met their stored
    values, only those that have not.  The backtrace then recomputes each backpointer along the
    path, ``O(K)`` per step, blocks in parallel from guessed end states (a short backtrace from
    a few steps into the next block), corrected until every block's end state agrees with the
    block after it (a corrected backtrace stops as soon as it merges with the stored one).

    ``block_length`` (a whole number of ``lay``'s blocks per block, default
    :func:`_viterbi_length`) merges consecutive blocks of ``lay`` first; results come back in
    ``lay``'s layout.  :meth:`HiddenMarkovModel.viterbi` lays sequences out for Viterbi itself
    (:func:`_viterbi_block_length`) and passes ``block_length=lay.L``.

    Returns
    -------
    paths : Tensor
        ``(N, Tp)`` int64 states (arbitrary on padded steps).
    scores : Tensor
        ``(N,)`` log-probability of each sequence jointly with its best path.
    """
    em_in, lay_in = em, lay
    Lp = _viterbi_length(lay) if block_length is None else block_length
    if Lp != lay.L:  # merge consecutive blocks: fewer, longer blocks
        em, lay = em.merged(lay, Lp), _layout(lay.lengths, lay.Tp, Lp)
    L, M, K = lay.L, lay.M, log_transition.shape[0]
    logA = log_transition.clamp_min(_LOG_FLOOR)  # [from, to]
    A3 = logA[:, :, None]
    buf = _scratch("vit_buf", (K, K, M))

    def advance(d: Tensor, out: Tensor) -> None:  # out[j] = max_i d[i] + log A[i, j]
        work = buf if d.shape[1] == M else buf[:, :, : d.shape[1]]
        torch.amax(torch.add(d[:, None, :], A3, out=work), 0, out=out)

    # forward pass: D[t] = h_t + e_t, h_{t+1} = max-plus(D[t]); blocks start from a guess
    D = _scratch("vit_D", (L, K, M))
    start = log_initial.clamp_min(_LOG_FLOOR)[:, None].expand(K, M).clone()
    start[:, ~lay.first] = 0.0
    h = start.clone()
    for t in range(L):
        advance(em.add_step(t, h, D[t]), h)
    free = ~(lay.first | lay.empty)
    used = start
    for _ in range(M + 1):  # exactness needs at most one round per block
        proposal = torch.roll(h, 1, 1)
        changed = free & ~_met_log(proposal, used)
        n_changed = int(changed.sum())
        if n_changed == 0:
            break
        used[:, changed] = proposal[:, changed]
        # rerun the changed blocks (all blocks when most changed: no gathers then) until
        # their delta meets the stored one up to a shift (the future depends on nothing else);
        # blocks that have met drop out at checks once at most half of them remain (meeting
        # times spread widely: most blocks meet within a few steps, a few take several times
        # longer; a block that has met may also go on, its values stay right up to a shift)
        idx = None if 2 * n_changed > M else changed.nonzero().squeeze(-1)
        g = used.clone() if idx is None else used[:, idx]
        check = 8  # measured: few blocks meet sooner, and a check costs about half a step
        for t in range(L):
            if idx is None and t != check:
                advance(em.add_step(t, g, D[t]), g)
                continue
            d = em.step(t, idx).add(g)
            if t == check:
                check += 4
                ok = _met_log(d, D[t] if idx is None else D[t][:, idx])
                n_ok = int(ok.sum())
                if n_ok == ok.shape[0]:
                    idx = torch.empty(0, dtype=torch.long)
                    break
                if 2 * n_ok >= ok.shape[0] or (idx is not None and n_ok):
                    keep = ~ok
                    idx = keep.nonzero().squeeze(-1) if idx is None else idx[keep]
                    d, g = d[:, keep], g.new_empty((K, idx.shape[0]))
            if idx is None:
                D[t] = d
            else:
                D[t][:, idx] = d
            advance(d, g)
        if idx is None:
            h = g
        elif idx.numel():
            h[:, idx] = g
    # The backtrace only compares states within one time step, where D's per-block shift is
    # common, so it may use shorter blocks than the forward pass: fewer Python steps.  Backtrace
    # block i = q * M + m holds steps q * lt .. (q + 1) * lt - 1 of forward block m.
    # sub-blocks of at least 48 steps, 32 when a step's slab is small (per-step overhead dominates)
    shortest = 32 if K * M <= 8192 else 48
    S = max(s for s in range(1, 9) if L % s == 0 and L // s >= shortest) if L >= 2 * shortest else 1
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
    Z = _scratch("vit_Z", (lt, S, M), torch.long)  # Z[t, q, m]: step q * lt + t of block m
    logAT = logA.T.contiguous()  # [to, from]
    cand = logA.new_empty((S, K, M))
    top = logA.new_empty((S, 1, M))
    hit = torch.empty((S, K, M), dtype=torch.bool)
    small = torch.uint8 if K < 256 else torch.int32
    rank = torch.empty((S, K, M), dtype=small)
    rev = torch.arange(K, 0, -1, dtype=small)[:, None]  # K - i
    rmax = torch.empty((S, M), dtype=small)
    K_ = torch.tensor(K, dtype=small)

    def first_max(c: Tensor, out: Tensor | None = None) -> Tensor:  # argmax over axis 1 of (S, K, M)
        # first maximiser (as argmax) by max, equality and max of K - i: reductions over the
        # state axis of state-major slabs are fast, arg-reductions are not; flattened to (S M,),
        # written into out (S, M) when given
        torch.eq(c, torch.amax(c, 1, keepdim=True, out=top), out=hit)
        r = torch.amax(torch.mul(hit, rev, out=rank), 1, out=rmax)
        return torch.sub(K_, r, out=torch.empty((S, M), dtype=torch.long) if out is None else out).view(-1)

    def best_of(d: Tensor, z: Tensor, out: Tensor | None = None) -> Tensor:  # argmax_i d[i] + log A[i, z]
        A_z = torch.gather(logA, 1, z.expand(K, -1)).view(K, S, M).transpose(0, 1)
        return first_max(torch.add(d, A_z, out=cand), out)

    def best_from(t: int, z: Tensor, out: Tensor | None = None) -> Tensor:  # all blocks, d = D[t]
        return best_of(D4[:, t], z, out)

    def trace(idx: Tensor | None, z: Tensor) -> None:
        qi, mi = (None, None) if idx is None else (idx // M, idx % M)
        for t in range(lt - 1, -1, -1):
            if qi is None or mi is None:  # z is Z[t] itself below the last step
                if t in resets:
                    z[resets[t][0]] = resets[t][1]
                if t == lt - 1:
                    Z[t] = z.view(S, M)
            else:
                if t < lt - 2 and t % 2 == 0 and bool((Z[t][qi, mi] == z).all()):
                    return  # merged with the stored path: the rest is the same
                Z[t][qi, mi] = z
            if t > 0:
                z = (
                    best_from(t - 1, z, Z[t - 1])
                    if qi is None
                    else (D4[qi, t - 1, :, mi] + logAT[z]).argmax(-1)
                )

    z_end = first_max(D4[:, lt - 1])
    k = min(_VITERBI_LOOKAHEAD, lt)
    if k > 1 and not bool(fixed.all()):
        # guess the end state of every block by a short backtrace from k steps into the next
        # block: paths merge quickly backwards, so far fewer guesses need correcting than
        # with the best end state of the block alone
        ahead = torch.cat([D4[1:, :k], torch.roll(D4[:1, :k], -1, 3)], 0)  # steps 0..k-1 of block i + 1
        z = first_max(ahead[:, k - 1])
        for t in range(k - 2, -1, -1):
            z = best_of(ahead[:, t], z)
        z_end = best_of(D4[:, lt - 1], z)
    trace(None, z_end)
    used_z = Z[lt - 1].reshape(-1).clone()
    free_z = ~fixed
    for _ in range(Mt + 1):
        first = Z[0]
        nxt = torch.cat([first[1:], torch.roll(first[:1], -1, 1)], 0).view(-1)  # first state of block i + 1
        implied = best_from(lt - 1, nxt)
        changed = free_z & (implied != used_z)
        idx = changed.nonzero().squeeze(-1)
        if idx.numel() == 0:
            break
        used_z = torch.where(changed, implied, used_z)
        trace(idx, implied[idx])
    paths = torch.empty((N, lay.Tp), dtype=torch.long)
    paths.view(M, S, lt).copy_(Z.permute(2, 1, 0))
    # score of the path itself: log p(z_0) + sum log A + sum log e along it
    Zb = paths.view(M, L).T  # (L, M) block layout, a view
    if lay is not lay_in:
        Zb, lay, em = lay_in.to_blocks(paths), lay_in, em_in
        Bs = lay.Bs
    emit = em.along(Zb).sum(0).view(N, Bs).sum(1)
    step = torch.add(paths[:, 1:], paths[:, :-1], alpha=K)
    trans = torch.index_select(log_transition.reshape(-1), 0, step.reshape(-1)).view(step.shape)
    if lay.ragged:
        trans.masked_fill_(torch.arange(1, paths.shape[1]) >= lay.lengths[:, None], 0.0)
    scores = log_initial[paths[:, 0]] + trans.sum(1) + emit
    return paths, scores
