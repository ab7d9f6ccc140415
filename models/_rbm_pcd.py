"""Contrastive-divergence updates of a Bernoulli RBM in one loop of preallocated buffers.

The RBM's contrastive-divergence gradient is closed form: for a minibatch ``V+`` of ``p`` rows and
negative particles ``V-`` of ``m`` rows, with ``H = sigmoid(V W^T + c)`` row by row, the ascent
direction is ``H+^T V+ / p - H-^T V- / m`` for ``W`` and the column sums of the same products for
the biases.  With minibatches of ten items an update costs a few microseconds of arithmetic, so
what a loop of generic steps spends is Python, dispatch and allocation.  :class:`PCDUpdater` does
the whole update with about eight in-place kernels and no tensor created per update:

* the biases ride in the weight matrix: ``A = [[W, c], [b, 0]]`` (``(n_hidden + 1) x (n_visible +
  1)``) against visible rows with a trailing 1 and hidden rows with a trailing 1, so ``V A[:h]^T``
  is ``V W^T + c``, ``H A[:, :v]`` is ``H W + b``, and one ``addmm`` of ``H^T V`` updates ``W``,
  ``b`` and ``c`` together (the corner entry is never read);
* positives and negatives are stacked in one ``(p + m) x (n_visible + 1)`` block per update, so
  one product and one sigmoid give both phases, and the signed weights ``1/p`` and ``-1/m`` are
  one row scaling before the single ``addmm`` of the update;
* the random numbers of a run of updates are drawn in one call each; a Bernoulli draw
  ``u < sigmoid(a)`` is the comparison ``a > logit(u)``, so the visible units cost no sigmoid.

Persistent chains keep their hidden sample, as scikit-learn's ``BernoulliRBM`` does: after an
update, the chain's next hidden state is drawn from the probabilities the update just used (those
of the parameters before it), so one Gibbs sweep per update costs no extra product.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

#: Floats (at most) in the buffers of one run of updates: bounds memory on large data sets.
_CHUNK_FLOATS = 1 << 21


class _Slots:
    """Buffers for runs of up to ``steps`` updates whose minibatch has ``pos`` rows.

    ``block[s]`` is update ``s``'s stacked visible rows (``pos`` data rows, then the ``m`` negative
    particles, each with a trailing 1); ``hidden`` the matching hidden probabilities, scaled
    row-wise by ``signs`` before the update, with ``signs`` as trailing column; ``logistic`` and
    ``uniform`` the random numbers.
    """

    def __init__(
        self, pos: int, m: int, n_visible: int, n_hidden: int, k: int, steps: int, dtype: torch.dtype
    ) -> None:
        rows = pos + m
        self.pos, self.steps = pos, steps
        self.block = torch.ones(steps, rows, n_visible + 1, dtype=dtype)
        self.signs = torch.cat(
            [torch.full((pos, 1), 1.0 / pos, dtype=dtype), torch.full((m, 1), -1.0 / m, dtype=dtype)]
        )
        # the trailing column holds the signed weights themselves: the update's product then
        # gives the visible bias's direction sum_i sign_i v_i in its last row
        self.hidden = torch.cat([torch.empty(rows, n_hidden, dtype=dtype), self.signs], 1)
        self.hidden_t = self.hidden.t()
        self.hidden_units = self.hidden[:, :n_hidden]
        self.hidden_neg = self.hidden[pos:, :n_hidden]
        # hidden states of chains that restart at the minibatch (CD-k): ``m == pos`` rows
        self.chain = torch.ones(m, n_hidden + 1, dtype=dtype)
        # logistic noise for the visible draws, uniforms for the hidden ones: (steps, k, m, units)
        self.logistic = torch.empty(steps, k, m, n_visible, dtype=dtype)
        self.uniform = torch.empty(steps, k, m, n_hidden, dtype=dtype)
        # views made once, a few calls of unbind for all updates: the loop over updates indexes
        # lists and creates no tensor
        self.data_rows = self.block[:, :pos, :n_visible]
        by_sweep = [
            list(zip(*(t.unbind(0) for t in draws.transpose(0, 1).unbind(0)), strict=True))
            for draws in (self.logistic, self.uniform)
        ]
        self.views = list(
            zip(
                self.block.unbind(0),
                self.block[:, :pos].unbind(0),
                self.block[:, pos:].unbind(0),
                self.block[:, pos:, :n_visible].unbind(0),
                *by_sweep,
                strict=True,
            )
        )


class PCDUpdater:
    """Contrastive-divergence updates of an RBM's parameters, held in one augmented matrix.

    Parameters
    ----------
    W, visible_bias, hidden_bias : Tensor
        Starting values, ``(n_hidden, n_visible)``, ``(n_visible,)``, ``(n_hidden,)`` (copied; the
        updates compute in ``W``'s dtype, float32 for the RBM, whatever torch's default dtype).
    chains : Tensor or None
        ``(m, n_visible)`` visible states starting the persistent chains (their first hidden
        sample is drawn from them); None for CD-k, whose chains restart at each minibatch.
    batch_size : int
        Rows of a full minibatch (``m`` for CD-k).
    k : int
        Gibbs sweeps per update.
    momentum : float
        SGD momentum: ``velocity = momentum * velocity + direction``, ``theta += lr * velocity``.
    weight_decay : float
        ``weight_decay * theta`` is taken off every parameter's ascent direction.
    generator : torch.Generator
        Source of every random number.  Draws, in order: one uniform per chain hidden unit at
        construction (persistent chains only); then per run of ``c`` updates (``c`` at most the
        steps of one run, see :meth:`run`) ``(c, k, m, n_visible)`` uniforms for the visible
        draws and ``(c, k, m, n_hidden)`` for the hidden ones.

    Notes
    -----
    One update from minibatch ``V+`` (``p`` rows), with chain hidden state ``H`` (``m`` rows):
    for ``j`` in ``1..k``: if ``j > 1``, ``H ~ p(h | V-)``; ``V- ~ p(v | H)``.  Then ``P =
    sigmoid([V+; V-] W^T + c)``; the next chain state is ``H ~ Bernoulli(P-)`` (persistent);
    ``direction = P+^T V+ / p - P-^T V- / m`` (biases alike); for CD-k the first ``H`` is drawn
    from ``p(h | V+)`` instead of carried over (and ``m = p``).  Sweep ``j`` draws ``V-`` with
    ``logistic[j]`` and, for ``j > 1``, ``H`` with ``uniform[j - 1]``; ``uniform[0]`` draws the
    state carried to the next update (PCD) or the first ``H`` from ``V+`` (CD-k).
    """

    def __init__(
        self,
        W: Tensor,
        visible_bias: Tensor,
        hidden_bias: Tensor,
        chains: Tensor | None,
        *,
        batch_size: int,
        k: int,
        momentum: float,
        weight_decay: float,
        generator: torch.Generator,
    ) -> None:
        n_hidden, n_visible = W.shape
        self.n_visible, self.n_hidden, self.k = n_visible, n_hidden, k
        self.m = batch_size if chains is None else chains.shape[0]
        self.batch_size = batch_size
        self.persistent = chains is not None
        self.momentum, self.weight_decay = float(momentum), float(weight_decay)
        self.generator = generator
        a = torch.zeros(n_hidden + 1, n_visible + 1, dtype=W.dtype)
        a[:n_hidden, :n_visible] = W.detach()
        a[:n_hidden, n_visible] = hidden_bias.detach()
        a[n_hidden, :n_visible] = visible_bias.detach()
        self.augmented = a
        self.velocity = torch.zeros_like(a) if self.momentum else None
        self.to_hidden = a[:n_hidden].t()  # (n_visible + 1, n_hidden): [v, 1] -> v W^T + c
        self.to_visible = a[:, :n_visible]  # (n_hidden + 1, n_visible): [h, 1] -> h W + b
        self.chain_hidden = torch.ones(self.m, n_hidden + 1, dtype=a.dtype)
        self.chain_units = self.chain_hidden[:, :n_hidden]
        if chains is not None:
            with torch.no_grad():
                prob = torch.sigmoid(torch.addmm(hidden_bias.detach(), chains.to(a.dtype), W.detach().t()))
                torch.lt(
                    torch.rand(prob.shape, generator=generator, dtype=a.dtype), prob, out=self.chain_units
                )
        per_step = (batch_size + self.m) * (n_visible + 1) + k * self.m * (n_visible + n_hidden)
        self.chunk = max(1, _CHUNK_FLOATS // per_step)
        self._slots: dict[tuple[int, int], _Slots] = {}

    def params(self) -> dict[str, Tensor]:
        """The current parameters as views of the augmented matrix (clone them to keep them)."""
        h, v = self.n_hidden, self.n_visible
        a = self.augmented
        return {"W": a[:h, :v], "visible_bias": a[h, :v], "hidden_bias": a[:h, v]}

    def _slots_for(self, pos: int, steps: int) -> _Slots:
        key = (pos, steps)
        if key not in self._slots:
            m = self.m if self.persistent else pos
            self._slots[key] = _Slots(
                pos, m, self.n_visible, self.n_hidden, self.k, steps, self.augmented.dtype
            )
        return self._slots[key]

    def run(self, data: Tensor, order: Tensor, lrs: Sequence[float]) -> None:
        """``len(lrs)`` updates; update ``i`` takes rows ``order[i * batch_size:(i + 1) * batch_size]``
        of ``data`` at learning rate ``lrs[i]`` (the last minibatch may be shorter)."""
        size = self.batch_size
        full = min(len(lrs), len(order) // size)
        with torch.no_grad():
            done = 0
            while done < full:
                c = min(self.chunk, full - done)
                slots = self._slots_for(size, min(self.chunk, full))
                rows = order[done * size : (done + c) * size]
                slots.data_rows[:c].copy_(data.index_select(0, rows).view(c, size, self.n_visible))
                self._updates(slots, c, lrs[done : done + c])
                done += c
            if len(lrs) > full:  # the short last minibatch of an epoch
                rows = order[full * size : full * size + size]
                slots = self._slots_for(len(rows), 1)
                slots.data_rows[0].copy_(data.index_select(0, rows))
                self._updates(slots, 1, lrs[full : full + 1])

    def _updates(self, slots: _Slots, c: int, lrs: Sequence[float]) -> None:
        """``c`` updates from the minibatches already in ``slots.block[:c]``."""
        gen = self.generator
        slots.logistic[:c].uniform_(generator=gen).logit_()
        slots.uniform[:c].uniform_(generator=gen)
        to_hidden, to_visible = self.to_hidden, self.to_visible
        chain = self.chain_hidden if self.persistent else slots.chain
        units = chain[:, : self.n_hidden]
        hidden_units, hidden_neg, signs = slots.hidden_units, slots.hidden_neg, slots.signs
        hidden_t, a, velocity = slots.hidden_t, self.augmented, self.velocity
        momentum, decay, persistent = self.momentum, self.weight_decay, self.persistent
        for s in range(c):
            block, positives, negatives, neg_units, logistic, uniform = slots.views[s]
            lr = lrs[s]
            if not persistent:  # CD-k: the chain starts from the minibatch
                torch.mm(positives, to_hidden, out=units)
                torch.lt(uniform[0], units.sigmoid_(), out=units)
            for j in range(self.k):
                if j:  # a further sweep: hidden units from the current negatives
                    torch.mm(negatives, to_hidden, out=units)
                    torch.lt(uniform[j], units.sigmoid_(), out=units)
                torch.mm(chain, to_visible, out=neg_units)
                torch.gt(neg_units, logistic[j], out=neg_units)
            torch.mm(block, to_hidden, out=hidden_units)
            hidden_units.sigmoid_()
            if persistent:
                torch.lt(uniform[0], hidden_neg, out=units)
            hidden_units.mul_(signs)
            if velocity is None:
                a.addmm_(hidden_t, block, beta=1.0 - lr * decay, alpha=lr)
            else:
                velocity.addmm_(hidden_t, block, beta=momentum)
                if decay:
                    velocity.add_(a, alpha=-decay)
                a.add_(velocity, alpha=lr)
