"""Sequences of an HMM laid out in blocks: the data, the blocking, padding and kept buffers.

:class:`SequenceData` holds padded sequences; :class:`_Layout` cuts them into blocks of ``L``
steps that the scans of :mod:`probgen.models._hmm_engine` (forward-backward) and
:mod:`probgen.models._hmm_viterbi` (Viterbi) advance together, one step at a time.  Blocks have
equal lengths just covering a sequence (:func:`_block_length`), so padding stays small; a scan
may re-block the same steps (:func:`_restep`) to the length it prefers.  Internal ``(L, M, K)``
slabs live in per-thread buffers kept between calls (:func:`_scratch`): EM asks for the same
shapes at every iteration, and fresh memory costs a page fault per 4 kB on first touch.
"""

from __future__ import annotations

import functools
import math
import threading
from dataclasses import dataclass, field

import torch
from torch import Tensor

__all__ = ["SequenceData"]

_F64 = torch.float64
_SCRATCH = threading.local()  # per-thread buffers of _scratch
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
    observed : Tensor or None
        With ``missing="marginalize"``: ``(n_sequences, max_length, n_features)`` bool
        (categorical: ``(n_sequences, max_length)``), True on the observed cells; the missing
        cells of ``values`` hold a placeholder (zero or the column's first observed value).
        ``None`` when every cell is observed.
    cache : dict
        Arrays derived from the data alone (block layout, products of features), filled by
        users of the engine and kept across EM iterations; empty on construction.
    """

    values: Tensor
    lengths: Tensor
    single: bool = False
    observed: Tensor | None = None
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


# -------------------------------------------------------------------------------- blocking
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
