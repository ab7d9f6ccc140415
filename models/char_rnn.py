"""Character-level recurrent language model: ``CharRNN`` (an LSTM or GRU over characters).

An autoregressive categorical model over the characters of a string: a start token, then
``p(c_t | c_1 .. c_{t-1})`` from the RNN's state, for every character, the first one included.
There is no end token, so for each length ``L`` the probabilities of all strings of length ``L``
sum to one.  The vocabulary is learned from the first data the model prepares (or given with
``vocabulary=``) and is part of the model's configuration, so ``probgen.load`` rebuilds it.

As a Pyro model, the training text is cut into windows of ``seq_len`` characters, each scored as
a string of its own (from the start state), by teacher forcing over the plate ``"windows"`` with
a mask for the padding of the last, shorter window of each text; the network is registered with
``pyro.module("rnn", ...)``, so SVI with the empty guide is maximum likelihood, and the plate
takes ``subsample_size`` (windows per step).  The model also offers the SVI fast path
(:meth:`GenerativeModel.svi_objective`): the same loss as a plain PyTorch cross-entropy over a
minibatch of windows, scaled as Pyro scales a subsampled plate.  Every weight lives in
``fit.params`` under its Pyro param-store name (``"rnn$$$cell.weight_ih_l0"``, ...) and is
evaluated with ``torch.func.functional_call``, so ``Fit.save``/``probgen.load`` need no pickle.
Computation is in float32 (scores are summed in float64).  The data, scoring, sampling and
pictures are shared with ``CharTransformer`` (``probgen.models._char_base``).
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

from torch import Tensor, nn

from probgen.models._char_base import _DTYPE, _CharFit, _CharModel, _check_positive, _check_vocabulary

__all__ = ["CharRNN", "CharRNNFit"]

_CELLS = ("lstm", "gru")


class _Net(nn.Module):
    """Embedding (the last index is the start token) -> LSTM/GRU -> linear head (logits)."""

    def __init__(self, vocab_size: int, embedding_dim: int, hidden_size: int, num_layers: int, cell: str):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size + 1, embedding_dim, dtype=_DTYPE)
        rnn = nn.LSTM if cell == "lstm" else nn.GRU
        self.cell = rnn(embedding_dim, hidden_size, num_layers, batch_first=True, dtype=_DTYPE)
        self.head = nn.Linear(hidden_size, vocab_size, dtype=_DTYPE)

    def forward(self, inputs: Tensor, state: Any = None) -> tuple[Tensor, Any]:
        out, state = self.cell(self.embedding(inputs), state)
        return self.head(out), state


@dataclasses.dataclass(frozen=True, eq=False, repr=False)
class CharRNNFit(_CharFit):
    """A fitted :class:`CharRNN`: text generation (``fit.sample``) and perplexity."""


class CharRNN(_CharModel):
    """Character-level RNN language model (LSTM or GRU), fitted by ``method="svi"``.

    ``p(text) = prod_t p(c_t | c_1 .. c_{t-1})``: a start token, then one categorical step per
    character (the first included; no end token).  Data are a string or a list of strings; for
    training they are cut into windows of ``seq_len`` characters, each scored from the start
    state, and SVI's ``subsample_size`` is the number of windows per step (``len`` of the data
    plate ``"windows"``).  ``fit.log_prob(texts)`` scores each text whole (one value per text,
    in nats), ``fit.perplexity(texts)`` is the per-character perplexity, and
    ``fit.sample(n, length=200, prompt="", temperature=1.0)`` returns ``n`` strings of ``length``
    characters that start with ``prompt``.

    SVI defaults for this model (:meth:`svi_defaults`; SVI's own full batch is too slow for
    text): ``subsample_size=64`` windows (fewer on a short text), ``lr=0.01``, ``num_steps=2000``
    (about ten passes over 200 KB of text per 1000 steps of 64 windows of 100 characters).

    Parameters
    ----------
    hidden_size : int, default 128
        Width of the recurrent state.
    num_layers : int, default 1
        Stacked recurrent layers.
    embedding_dim : int, default 32
        Size of each character's embedding.
    cell : {"lstm", "gru"}, default "lstm"
        The recurrent cell.
    seq_len : int, default 100
        Characters per training window (the length of truncated back-propagation).
    vocabulary : str, optional
        The characters the model knows, each once, in index order.  Default: the sorted
        characters of the first data the model prepares (its training text).

    Raises
    ------
    ValueError
        A size that is not a positive int, an unknown cell, a vocabulary that repeats a character.
    TypeError
        A vocabulary that is not a string.

    Examples
    --------
    >>> import probgen as pg
    >>> from probgen.models import CharRNN
    >>> text = "abcabcabd " * 30
    >>> fit = pg.fit(CharRNN(hidden_size=16, seq_len=20), text, method="svi",
    ...              num_steps=30, subsample_size=8, progress=False)
    >>> fit.vocabulary
    ' abcd'
    >>> [len(s) for s in fit.sample(2, length=12, prompt="ab", seed=0)]
    [12, 12]
    >>> fit.log_prob(["abc", "cab d"]).shape
    torch.Size([2])
    """

    fit_class: ClassVar[type[CharRNNFit]] = CharRNNFit
    _net_name = "rnn"  # the network's name in Pyro's param store

    def __init__(
        self,
        hidden_size: int = 128,
        num_layers: int = 1,
        embedding_dim: int = 32,
        cell: str = "lstm",
        seq_len: int = 100,
        vocabulary: str | None = None,
    ) -> None:
        _check_positive(
            hidden_size=hidden_size, num_layers=num_layers, embedding_dim=embedding_dim, seq_len=seq_len
        )
        if cell not in _CELLS:
            raise ValueError(f"cell={cell!r} is not known; expected one of: {', '.join(_CELLS)}.")
        self.vocabulary: str | None = _check_vocabulary(vocabulary)
        self.hidden_size, self.num_layers = int(hidden_size), int(num_layers)
        self.embedding_dim, self.seq_len = int(embedding_dim), int(seq_len)
        self.cell = cell

    def _new_net(self, vocab_size: int) -> _Net:
        """A network with weights drawn from torch's generator (inside a fit: seeded by it)."""
        return _Net(vocab_size, self.embedding_dim, self.hidden_size, self.num_layers, self.cell)

    def get_config(self) -> dict[str, Any]:
        return {
            "hidden_size": self.hidden_size,
            "num_layers": self.num_layers,
            "embedding_dim": self.embedding_dim,
            "cell": self.cell,
            "seq_len": self.seq_len,
            "vocabulary": self.vocabulary,
        }

    def __repr__(self) -> str:
        vocab = "learned" if self.vocabulary is None else f"{len(self.vocabulary)} characters"
        return (
            f"CharRNN(hidden_size={self.hidden_size}, num_layers={self.num_layers}, "
            f"embedding_dim={self.embedding_dim}, cell={self.cell!r}, seq_len={self.seq_len}, "
            f"vocabulary={vocab})"
        )
