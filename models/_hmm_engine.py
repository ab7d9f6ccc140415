"""The HMM engine: blocked, rescaled forward-backward in float64.

Every sequence is cut into blocks of ``L`` steps (:mod:`probgen.models._hmm_layout`), all blocks
advance together one step at a time (so Python sees ``L`` steps, not ``T``), and the recursion
inside a block starts from a guess that is then corrected.  A block whose guessed start was
wrong is recomputed from the corrected start only until its trajectory meets the stored one:
filtering forgets its starting point geometrically, so after a few dozen steps the two agree to
1e-12 relative and the rest of the stored block is exact.  Blocks that do not meet are
recomputed completely, round after round, so the result is exact whatever the chain;
well-mixing chains need one correction pass, and blocks that have met drop out of it once half
of those running have.  Forward and backward passes are rescaled in linear space (no underflow
on any length) and laid out state-major (``(K, blocks)`` per step: the matrix product of a step
has the long block axis contiguous, its sums over states run along rows); the forward keeps the
unnormalised filter ``a_t = p_t e_t`` itself, and the posteriors are formed in place from the
two scans (callers that can build emissions state-major directly pass them so,
:func:`_scan_layout`, and get the marginals back alike).  Every step touches one contiguous
slab (time-major block layout).  The scan re-blocks the steps of its layout (splitting or
merging blocks, in the copy to state-major layout it makes anyway) to the length a cost model
of its steps prefers (:func:`_scan_length`): short blocks for few states, whole sequences when
there are many short ones.

Small problems (``steps * K ** 3`` up to about 1.7e5 over all sequences, :func:`_prefix_pays`)
spend that Python time for little arithmetic, so forward-backward runs there as a parallel
prefix scan instead (:func:`_forward_backward_prefix`): the products of the per-step ``K x K``
matrices ``A diag(e_t)``, forward and (transposed, in reverse time) backward, in ``log2 T``
batched levels, every partial product divided by its largest entry; on the CPU they run
instead through a compiled sequential kernel (:mod:`probgen.models._hmm_kernels`), whose cost
there is the arithmetic itself.  All paths give the same results to rounding.  On the CPU,
Viterbi runs the compiled decoder of that module, and so does the categorical E-step on few
sequences (up to 64 per squared state count, at any length); the blocked max-product scan of
:mod:`probgen.models._hmm_viterbi` serves accelerators.

The engine knows nothing of emission families: it takes per-step emission densities and the
chain's ``initial`` and ``transition`` probabilities.  :class:`probgen.models.HiddenMarkovModel`
builds on it, its emission strategies supplying the densities.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

from probgen.models._hmm_layout import _Layout, _layout, _restep, _scratch

__all__: list[str] = []

_RTOL = 1e-12  # relative agreement at which a recomputed block is taken to have met the stored one
_TINY = 1e-300
_SCAN_STEP = 3900.0  # cost of a scan step beyond its arithmetic, in elementwise-work units
_SCAN_ROUND = 32  # typical steps of a correction round


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
    kernel (:func:`probgen.models._hmm_kernels.forward_backward`): small problems on the CPU."""
    # the compiled kernels load on first use: importing numba costs about a second
    from probgen.models._hmm_kernels import forward_backward

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
