"""Viterbi on blocked sequences in PyTorch (the decoder for accelerators), in float64.

The max-product pass runs in log space on blocks of its own length
(:func:`_viterbi_block_length`), keeping values only, state-major (so its max over states is
vectorised along the blocks), and chains the blocks as the forward pass of
:mod:`probgen.models._hmm_engine` does: blocks start from a guess and are corrected until they
meet their stored values.  The backtrace then recomputes each backpointer along the path,
``O(K)`` per step, block by block, correcting guessed block-end states the same way.  On the
CPU, :class:`probgen.models.HiddenMarkovModel` decodes with the compiled kernels of
:mod:`probgen.models._hmm_kernels` instead.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from probgen.models._hmm_layout import _Layout, _layout, _restep, _scratch

__all__: list[str] = []

_LOG_FLOOR = -1e200  # stands in for log(0) in Viterbi so that differences stay finite


def _close_log(a: Tensor, b: Tensor) -> Tensor:
    """Equal up to a constant shift, ignoring states impossible in both."""
    pa, pb = a > 0.5 * _LOG_FLOOR, b > 0.5 * _LOG_FLOOR
    diff = torch.where(pa & pb, a - b, -math.inf)
    ref = diff.amax(-1, keepdim=True)
    ok = (diff - ref).abs() <= 1e-10 * (1.0 + b.abs())
    return (ok | ~(pa | pb)).all(-1) & (pa == pb).all(-1)


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
