"""What the character-level language models share: their data, scoring, sampling and pictures.

``CharRNN`` and ``CharTransformer`` are both autoregressive categorical models over the
characters of a string: a start token, then ``p(c_t | c_1 .. c_{t-1})`` for every character, the
first one included, with no end token (for each length ``L`` the probabilities of all strings of
length ``L`` sum to one).  They differ only in the network that maps the characters read so far
to the logits of the next one.  That network is an ``nn.Module`` called as
``net(inputs, state) -> (logits, state)``: ``inputs`` are ``(batch, time)`` codes, ``state``
carries what the network remembers between calls (a recurrent state, cached keys and values),
``None`` at the start.  Everything else is written once here: the training windows, the Pyro
model and its fast SVI objective, the vocabulary, scoring texts of any length in chunks of time,
sampling with a prompt and a temperature, surprisal and its picture, save/load.
"""

from __future__ import annotations

import abc
import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, cast

import numpy as np
import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from probgen.fit import Fit
from probgen.model import GenerativeModel
from probgen.models.plotting import _axes, _no_options, _positive, _pyplot
from probgen.roles import memo
from probgen.state import isolated_rng
from probgen.validation import positive_int

_DTYPE = torch.float32
_SEP = "$$$"  # Pyro's separator between a module's name and its parameters' names
_PAD = -100  # target of padded positions (ignored by cross-entropy)
_TEXT_CHUNK = 256  # texts per forward call when scoring


@dataclass(eq=False)
class _Texts:
    """Prepared data: the texts, their codes, and their cut into windows of ``seq_len``."""

    texts: tuple[str, ...]
    codes: list[Tensor]  # one long tensor of vocabulary indices per text
    seq_len: int
    vocabulary: str  # the characters the codes index (given, or learned from the training text)
    _windows: tuple[Tensor, Tensor] | None = field(default=None, repr=False)

    @property
    def start(self) -> int:
        """Index of the start token (after the vocabulary)."""
        return len(self.vocabulary)

    @property
    def num_windows(self) -> int:
        return sum(-(-len(c) // self.seq_len) for c in self.codes)

    @property
    def shape(self) -> tuple[int, int]:
        return (self.num_windows, self.seq_len)

    def __len__(self) -> int:
        return self.num_windows

    def head(self) -> _Texts:
        """The first window alone (enough to trace the model and find its site roles)."""
        return _Texts(
            (self.texts[0][: self.seq_len],), [self.codes[0][: self.seq_len]], self.seq_len, self.vocabulary
        )

    def windows(self) -> tuple[Tensor, Tensor]:
        """``(inputs, targets)`` of every window, ``(n_windows, seq_len)``; padded targets are -100."""
        if self._windows is None:
            parts = [c.split(self.seq_len) for c in self.codes]
            targets = torch.full((self.num_windows, self.seq_len), _PAD, dtype=torch.long)
            row = 0
            for chunks in parts:
                for w in chunks:
                    targets[row, : len(w)] = w
                    row += 1
            self._windows = (_inputs(targets, self.start), targets)
        return self._windows


def _inputs(targets: Tensor, start: int) -> Tensor:
    """Teacher-forcing inputs: the start token, then each target shifted by one (padding -> 0)."""
    shifted = targets[:, :-1].clamp(min=0)
    return torch.cat([torch.full((len(targets), 1), start, dtype=torch.long), shifted], 1)


def _check_positive(**values: Any) -> None:
    for name, v in values.items():
        positive_int(v, name)


def _show(chars: set[str] | list[str], limit: int = 10) -> str:
    ordered = sorted(chars)
    shown = ", ".join(repr(c) for c in ordered[:limit])
    return shown + (f" and {len(ordered) - limit} more" if len(ordered) > limit else "")


def _check_vocabulary(vocabulary: Any) -> str | None:
    """The constructor's ``vocabulary``: None, or a non-empty string of distinct characters."""
    if vocabulary is None:
        return None
    if not isinstance(vocabulary, str):
        raise TypeError(
            f"vocabulary must be a string of distinct characters or None; got {type(vocabulary).__name__}."
        )
    if not vocabulary:
        raise ValueError("vocabulary is empty; give at least one character, or None to learn it.")
    repeated = {c for c in vocabulary if vocabulary.count(c) > 1}
    if repeated:
        raise ValueError(f"vocabulary repeats the characters {_show(repeated)}; give each once.")
    return vocabulary


class _CharObjective:
    """Cross-entropy of minibatches of windows (see ``GenerativeModel.svi_objective``)."""

    def __init__(self, model: _CharModel, data: _Texts) -> None:
        net = model._new_net(len(data.vocabulary))  # fresh weights from the fit's seeded generator
        pyro.module(model._net_name, net)
        self.net, self.prefix = net, model._net_name + _SEP
        self.inputs, self.targets = data.windows()
        self.n = len(self.targets)
        self.vocab_size = len(data.vocabulary)

    def parameters(self) -> list[Tensor]:
        return list(self.net.parameters())

    def loss(self, index: Tensor | None, num_particles: int) -> Tensor:
        x, y = (self.inputs, self.targets) if index is None else (self.inputs[index], self.targets[index])
        logits, _ = self.net(x)
        nll = F.cross_entropy(logits.reshape(-1, self.vocab_size), y.reshape(-1), reduction="sum")
        return nll * (self.n / len(x))

    def params(self) -> dict[str, Tensor]:
        return {self.prefix + k: v.detach().clone() for k, v in self.net.named_parameters()}


@dataclasses.dataclass(frozen=True, eq=False, repr=False)
class _CharFit(Fit):
    """A fitted character model: its vocabulary and perplexity (beside ``sample``, ``log_prob``)."""

    @property
    def vocabulary(self) -> str:
        """The characters the fit models: the constructor's, or learned from the training text."""
        vocab: str = cast(_CharModel, self.model)._vocab(self.data)
        return vocab

    def perplexity(self, texts: Any = None) -> float:
        """Per-character perplexity of ``texts`` (default: the training text)."""
        return cast(_CharModel, self.model).perplexity(self, texts)


class _CharModel(GenerativeModel):
    """The shared body of the character models; a subclass supplies the network.

    A subclass sets ``_net_name`` (the network's name in Pyro's param store), ``seq_len`` and
    ``vocabulary`` (in its constructor), and defines :meth:`_new_net`, :meth:`get_config` and
    ``__repr__``; ``_time_chunk`` is the most time steps per network call when scoring.
    """

    data_plate_name = "windows"
    dtype = _DTYPE
    _net_name: ClassVar[str]
    _lr: ClassVar[float] = 0.01  # SVI's default learning rate for the family
    seq_len: int
    vocabulary: str | None

    @abc.abstractmethod
    def _new_net(self, vocab_size: int) -> nn.Module:
        """A network with weights drawn from torch's generator (inside a fit: seeded by it)."""

    def _time_chunk(self) -> int:
        """Time steps per network call when scoring long texts (bounds memory)."""
        return 2048

    # ------------------------------------------------------------------ network
    def _weights(self, params: Mapping[str, Tensor]) -> dict[str, Tensor]:
        prefix = self._net_name + _SEP
        return {k[len(prefix) :]: v for k, v in params.items() if k.startswith(prefix)}

    def _vocab(self, like: Any = None) -> str:
        """The vocabulary: of the prepared data ``like`` (learned from the training text), else the
        constructor's."""
        if isinstance(like, _Texts):
            return like.vocabulary
        if self.vocabulary is None:
            raise ValueError(
                f"{type(self).__name__} has no vocabulary yet: it is learned from the training text; fit "
                "the model first or pass vocabulary=... to the constructor."
            )
        return self.vocabulary

    def _network(self, vocab_size: int) -> nn.Module:
        """The network's structure for ``vocab_size`` characters (weights come from the fit), built
        once, kept beside the model, in evaluation mode, with the caller's random state untouched."""

        def build() -> nn.Module:
            with isolated_rng(0):
                return self._new_net(vocab_size).eval()

        net: nn.Module = memo(self, ("net", vocab_size), build)
        return net

    def _call(self, params: Mapping[str, Tensor], inputs: Tensor, state: Any = None) -> tuple[Tensor, Any]:
        """Run the network on the fit's weights ``params`` (not the object's)."""
        vocab_size = int(params[f"{self._net_name}{_SEP}head.bias"].shape[0])
        out: tuple[Tensor, Any] = torch.func.functional_call(
            self._network(vocab_size), self._weights(params), (inputs, state)
        )
        return out

    def _bound(self, params: Mapping[str, Tensor]) -> nn.Module:
        """A fresh network holding the fit's weights, in evaluation mode: for many calls in a row
        (sampling, one call per character), without swapping the weights in at every call."""
        vocab_size = int(params[f"{self._net_name}{_SEP}head.bias"].shape[0])
        with isolated_rng(0):
            net = self._new_net(vocab_size).eval()
        net.load_state_dict(self._weights(params))
        return net

    # ------------------------------------------------------------------ Pyro pair
    def model(self, data: _Texts | None = None, subsample_size: int | None = None) -> Tensor:
        vocab = self._vocab(data)
        net = self._network(len(vocab))
        pyro.module(self._net_name, net)
        # the weights as Pyro sees them (so poutine.substitute and a param store's values apply)
        weights = {k: pyro.param(f"{self._net_name}{_SEP}{k}") for k, _ in net.named_parameters()}

        def run(inputs: Tensor, state: Any = None) -> tuple[Tensor, Any]:
            out: tuple[Tensor, Any] = torch.func.functional_call(net, weights, (inputs, state))
            return out

        start = len(vocab)
        if data is None:  # generate one window, one categorical step per character
            with pyro.plate("windows", 1):
                x, state, chars = torch.full((1, 1), start, dtype=torch.long), None, []
                for t in pyro.markov(range(self.seq_len)):
                    logits, state = run(x, state)
                    c = pyro.sample(f"x_{t}", dist.Categorical(logits=logits[:, -1]))
                    chars.append(c)
                    x = c.reshape(1, 1)
                return torch.stack(chars, -1)
        inputs, targets = data.windows()
        with pyro.plate("windows", len(targets), subsample_size=subsample_size) as plate_idx:
            idx: Tensor = plate_idx  # type: ignore[assignment]
            y = targets.index_select(0, idx)
            logits, _ = run(inputs.index_select(0, idx))
            mask = y != _PAD
            step = dist.Categorical(logits=logits).mask(mask).to_event(1)
            return pyro.sample("x", step, obs=y.clamp(min=0))

    def roles(self, data: Any) -> Any:
        # the roles do not depend on the data's size: trace one window, not the whole text; tracing
        # registers the network with pyro.module: keep the user's param store untouched
        probe = data.head() if isinstance(data, _Texts) else data
        with pyro.get_param_store().scope():
            return super().roles(probe)

    def svi_defaults(self, data: Any) -> dict[str, Any]:
        """Minibatches of 64 windows (fewer when the text has fewer), the family's learning rate,
        2000 steps: a full batch of a long text costs about a second a step."""
        return {"subsample_size": min(64, self.num_items(data)), "lr": self._lr, "num_steps": 2000}

    def svi_objective(self, data: Any) -> _CharObjective:
        return _CharObjective(self, data)

    # ------------------------------------------------------------------ data
    def _encode(self, texts: list[str], argname: str, vocab: str) -> list[Tensor]:
        unknown = set("".join(texts)) - set(vocab)
        if unknown:
            raise ValueError(
                f"{argname} holds characters outside the model's vocabulary: {_show(unknown)}; the "
                f"vocabulary ({len(vocab)} characters) comes from the training text. Remove or replace "
                "them, or build the model with vocabulary=... covering them."
            )
        index = {c: i for i, c in enumerate(vocab)}
        return [torch.tensor([index[c] for c in t], dtype=torch.long) for t in texts]

    @staticmethod
    def _as_texts(data: Any, argname: str) -> list[str]:
        if isinstance(data, str):
            texts = [data]
        elif isinstance(data, list | tuple):
            if not data:
                raise ValueError(f"{argname} is an empty list; expected a string or a list of strings.")
            bad = next((d for d in data if not isinstance(d, str)), None)
            if bad is not None:
                raise TypeError(
                    f"{argname} must be a string or a list of strings; the list holds a "
                    f"{type(bad).__name__} ({bad!r:.40})."
                )
            texts = list(data)
        else:
            raise TypeError(f"{argname} must be a string or a list of strings; got {type(data).__name__}.")
        empty = [i for i, t in enumerate(texts) if not t]
        if empty:
            raise ValueError(
                f"{argname} holds {len(empty)} empty string(s) (e.g. at position {empty[0]}); every text "
                "needs at least one character."
            )
        return texts

    def prepare_data(self, data: Any) -> _Texts:
        """Validate a string or a list of strings, coded with the constructor's vocabulary or, when
        none was given, the characters of these texts (the vocabulary travels with the data)."""
        if isinstance(data, _Texts):
            return data
        texts = self._as_texts(data, "data")
        vocab = self.vocabulary or "".join(sorted(set("".join(texts))))
        return _Texts(tuple(texts), self._encode(texts, "data", vocab), self.seq_len, vocab)

    def prepare_like(self, data: Any, like: Any) -> _Texts:
        """New texts coded with the training data's vocabulary ``like`` (refused outside it)."""
        if isinstance(data, _Texts) or not isinstance(like, _Texts):
            return self.prepare_data(data)
        texts = self._as_texts(data, "data")
        return _Texts(
            tuple(texts), self._encode(texts, "data", like.vocabulary), self.seq_len, like.vocabulary
        )

    def num_items(self, data: Any) -> int:
        """Training windows (the items of the plate ``"windows"``: SVI's ``subsample_size`` unit)."""
        return int(data.num_windows)

    def num_observations(self, data: Any) -> int:
        """Characters (BIC's ``n``)."""
        return int(sum(len(c) for c in data.codes))

    def observed_arrays(self, data: Any) -> dict[str, Tensor]:
        return {"x": torch.cat(data.codes)}

    def data_to_arrays(self, data: Any) -> dict[str, Tensor]:
        return {
            "codes": torch.cat(data.codes).to(torch.int32),
            "lengths": torch.tensor([len(c) for c in data.codes], dtype=torch.int64),
            "vocabulary": torch.tensor([ord(c) for c in data.vocabulary], dtype=torch.int64),
        }

    def data_from_arrays(self, arrays: Mapping[str, Tensor]) -> Any:
        if "codes" not in arrays:
            return None
        if "vocabulary" in arrays:
            vocab = "".join(chr(int(c)) for c in torch.as_tensor(arrays["vocabulary"]).tolist())
        else:
            vocab = self._vocab()
        codes = torch.as_tensor(arrays["codes"]).long().split(torch.as_tensor(arrays["lengths"]).tolist())
        texts = ["".join(vocab[i] for i in c.tolist()) for c in codes]
        return _Texts(tuple(texts), self._encode(texts, "data", vocab), self.seq_len, vocab)

    def num_parameters(self, params: Mapping[str, Tensor], data: Any) -> int:
        return int(sum(v.numel() for v in self._weights(params).values()))

    # ------------------------------------------------------------------ scoring
    def log_prob_items(self, data: Any, params: Mapping[str, Tensor]) -> Tensor:
        """``log p(text)`` in nats, one per text (each scored whole, from the start state), float64."""
        codes: list[Tensor] = data.codes
        start = len(data.vocabulary)
        chunk = self._time_chunk()
        out = torch.empty(len(codes), dtype=torch.float64)
        order = sorted(range(len(codes)), key=lambda i: len(codes[i]))  # similar lengths together
        with torch.no_grad():
            for b in range(0, len(order), _TEXT_CHUNK):
                rows = order[b : b + _TEXT_CHUNK]
                targets = nn.utils.rnn.pad_sequence(
                    [codes[i] for i in rows], batch_first=True, padding_value=_PAD
                )
                inputs = _inputs(targets, start)
                total = torch.zeros(len(rows), dtype=torch.float64)
                state = None
                for t in range(0, targets.shape[1], chunk):
                    y = targets[:, t : t + chunk]
                    logits, state = self._call(params, inputs[:, t : t + chunk], state)
                    lp = logits.log_softmax(-1).gather(-1, y.clamp(min=0).unsqueeze(-1)).squeeze(-1)
                    total += torch.where(y != _PAD, lp, 0.0).to(torch.float64).sum(1)
                out[torch.tensor(rows)] = total
        return out

    # ------------------------------------------------------------------ generation
    def sample_items(
        self, n: int, params: Mapping[str, Tensor], *, generator: torch.Generator | None = None, **kwargs: Any
    ) -> dict[str, Any]:
        """:meth:`sample_like` with the constructor's vocabulary."""
        return self.sample_like(n, params, None, generator=generator, **kwargs)

    def sample_like(
        self,
        n: int,
        params: Mapping[str, Tensor],
        like: Any,
        *,
        generator: torch.Generator | None = None,
        length: int = 200,
        prompt: str = "",
        temperature: float = 1.0,
        **kwargs: Any,
    ) -> dict[str, Any]:
        """``n`` strings of ``length`` characters (the prompt included) that start with ``prompt``.

        One batched network step per generated character.  ``temperature`` divides the logits:
        below 1 sharper, above 1 flatter; 0 takes the most probable character at every step (greedy).
        """
        if kwargs:
            raise ValueError(
                f"Unknown sample option(s) {sorted(kwargs)}; {type(self).__name__} takes length, prompt "
                "and temperature."
            )
        _check_positive(length=length)
        if not isinstance(prompt, str):
            raise TypeError(f"prompt must be a string; got {type(prompt).__name__}.")
        if len(prompt) > length:
            raise ValueError(
                f"prompt has {len(prompt)} characters, more than length={length} (the length of each sample, "
                "prompt included)."
            )
        if (
            isinstance(temperature, bool)
            or not isinstance(temperature, int | float | np.floating | np.integer)
            or not math.isfinite(temperature)
            or temperature < 0
        ):
            raise ValueError(f"temperature must be a finite number >= 0 (0: greedy); got {temperature!r}.")
        vocab = self._vocab(like)
        given = self._encode([prompt], "prompt", vocab)[0] if prompt else torch.zeros(0, dtype=torch.long)
        chars = torch.empty(n, length, dtype=torch.long)
        chars[:, : len(given)] = given
        chunk = self._time_chunk()
        net = self._bound(params)
        with torch.no_grad():
            inputs = torch.cat([torch.tensor([len(vocab)]), given]).expand(n, -1)
            state = None
            for t in range(0, inputs.shape[1], chunk):
                logits, state = net(inputs[:, t : t + chunk], state)
            last = logits[:, -1]
            for t in range(len(given), length):
                if temperature == 0:
                    c = last.argmax(-1)
                else:
                    probs = (last / float(temperature)).softmax(-1)
                    c = torch.multinomial(probs, 1, generator=generator).squeeze(-1)
                chars[:, t] = c
                if t + 1 < length:
                    logits, state = net(c.unsqueeze(-1), state)
                    last = logits[:, -1]
        return {"data": ["".join(vocab[i] for i in row) for row in chars.tolist()]}

    # ------------------------------------------------------------------ fit helpers
    def perplexity(self, fit: Any, texts: Any = None) -> float:
        """Per-character perplexity ``exp(-sum log p(text) / characters)`` of ``texts`` (default: training)."""
        d = fit._data(texts)
        return math.exp(-float(fit.log_prob(d).sum()) / self.num_observations(d))

    def surprisal(self, text: str, params: Mapping[str, Tensor], vocabulary: str) -> Tensor:
        """Surprisal ``-log p(c_t | c_1 .. c_{t-1})`` in nats of every character of ``text`` (scored
        from the start state, as :meth:`log_prob_items` scores it; the sum is ``-log p(text)``)."""
        (codes,) = self._encode([text], "text", vocabulary)
        inputs = _inputs(codes.unsqueeze(0), len(vocabulary))
        chunk = self._time_chunk()
        out = []
        state = None
        with torch.no_grad():
            for t in range(0, len(codes), chunk):
                logits, state = self._call(params, inputs[:, t : t + chunk], state)
                y = codes[t : t + chunk].unsqueeze(-1)
                out.append(-logits[0].log_softmax(-1).gather(-1, y).squeeze(-1).to(torch.float64))
        return torch.cat(out)

    def plot_fit(
        self,
        data: Any,
        params: Mapping[str, Tensor],
        *,
        ax: Any = None,
        text: str | None = None,
        max_chars: int = 120,
        **kwargs: Any,
    ) -> Any:
        """Picture of the fit: the surprisal of every character of a text, one bar per character.

        Bar ``t`` is ``-log p(c_t | c_1 .. c_{t-1})`` in nats (:meth:`surprisal`, the text scored
        from the start state), coloured by its height and labelled with the character (a space
        as ``\u2423``, a newline as ``\u21b5``); the bars sum to ``-fit.log_prob(text)``.  High
        bars are where the model is surprised.

        Parameters
        ----------
        data : str or list of str
            The training texts (``fit.plot()`` passes them): they give the vocabulary, and the
            default text.
        params : dict of str to Tensor
            Parameters to draw (``fit.params``).
        ax : matplotlib.axes.Axes, optional
            Where to draw; a new figure when None.
        text : str, optional
            Text to score (default: the first ``max_chars`` characters of the first training text).
        max_chars : int, default 120
            Most characters drawn (a longer ``text`` is cut).

        Returns
        -------
        matplotlib.axes.Axes

        Raises
        ------
        TypeError
            Unknown options, ``ax`` not matplotlib axes, ``text`` not a string.
        ValueError
            ``text`` empty or holding characters outside the vocabulary.
        """
        _no_options(kwargs, f"{type(self).__name__}.plot_fit", ("ax=", "text=", "max_chars="))
        max_chars = _positive(max_chars, "max_chars")
        d = self.prepare_data(data)
        if text is None:
            text = d.texts[0]
        elif not isinstance(text, str):
            raise TypeError(f"text must be a string; got {type(text).__name__}.")
        if not text:
            raise ValueError("text is empty; pass at least one character.")
        text = text[:max_chars]
        nats = self.surprisal(text, params, d.vocabulary).numpy()
        ax = _axes(ax, figsize=(max(6.0, 0.12 * len(text) + 1.5), 3.5))
        cmap = _pyplot().get_cmap("viridis")
        top = max(float(nats.max()), 1e-12)
        ax.bar(np.arange(len(text)), nats, width=0.9, color=cmap(nats / top))
        shown = [{" ": "\u2423", "\n": "\u21b5", "\t": "\u21e5"}.get(c, c) for c in text]
        ax.set_xticks(np.arange(len(text)), shown, fontsize=7 if len(text) <= 80 else 5, family="monospace")
        ax.set_xlim(-0.6, len(text) - 0.4)
        ax.set(
            ylabel="surprisal (nats)",
            title=f"{type(self).__name__}: surprisal per character; mean {nats.mean():.2f} nats "
            f"(perplexity {math.exp(nats.mean()):.2f}) over {len(text)} characters",
        )
        return ax
