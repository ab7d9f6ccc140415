"""CharRNN: exact normalisation, a hand-written recurrence, a bigram baseline, sampling, persistence."""

from __future__ import annotations

import itertools
import math
from collections import Counter

import numpy as np
import pyro
import pytest
import torch
import torch.nn.functional as F
from pyro.infer import Trace_ELBO

import probgen as pg
from probgen.models import CharRNN
from probgen.testing import check_model

TEXT = "the cat sat on the mat. the rat ate the hat; a bat sat.\n" * 6


def _fit(model, data, **options):
    opts = {"num_steps": 40, "subsample_size": 4, "lr": 0.02, **options}
    return pg.fit(model, data, method="svi", seed=0, progress=False, **opts)


# ------------------------------------------------------------- an independent recurrence
def _hand_step(params, cell, num_layers, state, x_index):
    """One step of the stacked cell written out from PyTorch's documented equations."""
    h_in = params["rnn$$$embedding.weight"][x_index]
    new = []
    for layer in range(num_layers):
        w_ih, w_hh = params[f"rnn$$$cell.weight_ih_l{layer}"], params[f"rnn$$$cell.weight_hh_l{layer}"]
        b_ih, b_hh = params[f"rnn$$$cell.bias_ih_l{layer}"], params[f"rnn$$$cell.bias_hh_l{layer}"]
        if cell == "lstm":
            h, c = state[layer]
            i, f, g, o = (w_ih @ h_in + b_ih + w_hh @ h + b_hh).chunk(4)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            h = torch.sigmoid(o) * torch.tanh(c)
            new.append((h, c))
        else:
            h = state[layer]
            xr, xz, xn = (w_ih @ h_in + b_ih).chunk(3)
            hr, hz, hn = (w_hh @ h + b_hh).chunk(3)
            r, z = torch.sigmoid(xr + hr), torch.sigmoid(xz + hz)
            n = torch.tanh(xn + r * hn)
            h = (1 - z) * n + z * h
            new.append(h)
        h_in = h
    logits = params["rnn$$$head.weight"] @ h_in + params["rnn$$$head.bias"]
    return new, F.log_softmax(logits.double(), -1)


def _hand_start(params, cell, num_layers, hidden):
    zero = torch.zeros(hidden)
    state = [(zero, zero) if cell == "lstm" else zero for _ in range(num_layers)]
    start = params["rnn$$$head.bias"].shape[0]  # the start token follows the vocabulary
    return _hand_step(params, cell, num_layers, state, start)


def _hand_log_prob(params, vocab, text, cell, num_layers, hidden):
    state, logp = _hand_start(params, cell, num_layers, hidden)
    total = 0.0
    for ch in text:
        k = vocab.index(ch)
        total += float(logp[k])
        state, logp = _hand_step(params, cell, num_layers, state, k)
    return total


@pytest.mark.parametrize("cell, num_layers", [("lstm", 2), ("gru", 1)])
def test_log_prob_equals_a_step_by_step_computation(cell, num_layers):
    fit = _fit(CharRNN(hidden_size=12, num_layers=num_layers, embedding_dim=5, cell=cell, seq_len=16), TEXT)
    vocab = fit.vocabulary
    texts = ["the mat", "a", "hat; the cat sat on the rat.\nthe bat ate"]  # 43 > seq_len: scored whole
    lp = fit.log_prob(texts)
    hand = [_hand_log_prob(fit.params, vocab, t, cell, num_layers, 12) for t in texts]
    assert lp.shape == (3,)
    np.testing.assert_allclose(lp.numpy(), hand, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_probabilities_of_every_string_of_a_length_sum_to_one(cell):
    fit = _fit(
        CharRNN(hidden_size=6, embedding_dim=3, cell=cell, seq_len=4, vocabulary="abc"),
        "abcaabbca",
        subsample_size=2,
    )
    for length in (1, 2, 3):
        strings = ["".join(s) for s in itertools.product("abc", repeat=length)]
        total = float(torch.logsumexp(fit.log_prob(strings), 0))
        assert total == pytest.approx(0.0, abs=1e-5), (length, total)
    # the first character is scored too: its probabilities alone sum to one, and are not all equal
    first = fit.log_prob(["a", "b", "c"]).exp()
    assert float(first.max() - first.min()) > 1e-3


def test_the_pyro_model_and_the_fast_objective_give_the_same_loss():
    model = CharRNN(hidden_size=8, embedding_dim=4, seq_len=10)
    data = model.prepare_data(TEXT)
    with pyro.get_param_store().scope():
        pyro.set_rng_seed(0)
        objective = model.svi_objective(data)
        with torch.no_grad():
            fast = float(objective.loss(None, 1))
            pyro_loss = Trace_ELBO().loss(model.model, lambda *a, **k: None, data)
    assert pyro_loss == pytest.approx(fast, rel=1e-5)
    # and the loss is the negative log-likelihood of the windows, each scored from the start state
    inputs, targets = data.windows()
    windows = ["".join(data.vocabulary[i] for i in row if i >= 0) for row in targets.tolist()]
    assert sum(len(w) for w in windows) == len(TEXT) and len(windows) == math.ceil(len(TEXT) / 10)
    nll = -float(model.log_prob_items(model.prepare_data(windows), objective.params()).sum())
    assert fast == pytest.approx(nll, rel=1e-5)


def test_fitting_through_pyros_own_elbo_lowers_the_loss_too():
    fit = _fit(CharRNN(hidden_size=8, embedding_dim=4, seq_len=20), TEXT, elbo="trace", num_steps=60)
    assert fit.history[-10:].mean() < fit.history[:10].mean() - 50
    assert fit.log_prob(["the cat"]).shape == (1,)


# --------------------------------------------------------------------- held-out quality
def _bigram_nats_per_char(train: str, test: str) -> float:
    """Add-one-smoothed bigram with a start symbol, trained on ``train``, scored on ``test``."""
    vocab = sorted(set(train) | set(test))
    counts = Counter(zip("\x00" + train[:-1], train, strict=True))
    totals = Counter("\x00" + train[:-1])
    v = len(vocab)
    ll = sum(
        math.log((counts[(a, b)] + 1) / (totals[a] + v))
        for a, b in zip("\x00" + test[:-1], test, strict=True)
    )
    return -ll / len(test)


def test_beats_a_bigram_model_on_held_out_shakespeare():
    text = pg.datasets.load_shakespeare()
    cut = int(0.9 * len(text))
    train, held_out = text[:cut], text[cut:]
    fit = pg.fit(
        CharRNN(hidden_size=64),
        train,
        method="svi",
        seed=0,
        progress=False,
        num_steps=500,
        subsample_size=32,
        lr=0.01,
        tol=0,
    )
    rnn = -float(fit.log_prob(held_out)) / len(held_out)
    bigram = _bigram_nats_per_char(train, held_out)
    assert bigram > 2.3  # the baseline is a real one (about 2.49 nats/char)
    assert rnn < bigram - 0.3, (rnn, bigram)
    assert fit.perplexity(held_out) == pytest.approx(math.exp(rnn), rel=1e-6)


# ----------------------------------------------------------------------------- sampling
@pytest.fixture(scope="module")
def small_fit():
    return _fit(CharRNN(hidden_size=16, embedding_dim=6, seq_len=20), TEXT, num_steps=150)


def test_samples_start_with_the_prompt_and_have_the_asked_length(small_fit):
    out = small_fit.sample(5, length=30, prompt="the ", seed=1)
    assert isinstance(out, list) and len(out) == 5
    assert all(isinstance(s, str) and len(s) == 30 and s.startswith("the ") for s in out)
    assert all(set(s) <= set(small_fit.vocabulary) for s in out)
    assert len(small_fit.sample(3, seed=1)[0]) == 200  # default length
    assert small_fit.sample(2, length=4, prompt="the ", seed=1) == ["the ", "the "]


def _hand_greedy(params, vocab, prompt, length, hidden):
    state, logp = _hand_start(params, "lstm", 1, hidden)
    out = prompt
    for ch in prompt:
        state, logp = _hand_step(params, "lstm", 1, state, vocab.index(ch))
    while len(out) < length:
        k = int(logp.argmax())
        out += vocab[k]
        state, logp = _hand_step(params, "lstm", 1, state, k)
    return out


def test_a_small_temperature_gives_the_greedy_continuation(small_fit):
    greedy = _hand_greedy(small_fit.params, small_fit.vocabulary, "the c", 40, 16)
    for temperature in (1e-4, 0):
        got = small_fit.sample(3, length=40, prompt="the c", temperature=temperature, seed=2)
        assert got == [greedy] * 3


def test_a_higher_temperature_gives_more_varied_characters(small_fit):
    def entropy(samples):
        counts = np.array(list(Counter("".join(samples)).values()), dtype=float)
        p = counts / counts.sum()
        return float(-(p * np.log(p)).sum())

    cold = small_fit.sample(20, length=60, temperature=0.3, seed=3)
    hot = small_fit.sample(20, length=60, temperature=3.0, seed=3)
    assert entropy(hot) > entropy(cold) + 0.2


def test_same_seed_same_samples_and_successive_draws_differ(small_fit):
    a = small_fit.sample(4, length=25, seed=5)
    assert small_fit.sample(4, length=25, seed=5) == a
    assert small_fit.sample(4, length=25, seed=6) != a


# ------------------------------------------------------------------------- bad input
def test_unknown_characters_are_refused_with_their_names(small_fit):
    with pytest.raises(ValueError, match=r"outside the model's vocabulary: 'Q', 'Z'"):
        small_fit.log_prob(["the Zoo", "Q"])
    with pytest.raises(ValueError, match=r"prompt holds characters outside .*'!'"):
        small_fit.sample(2, prompt="hi!")


@pytest.mark.parametrize(
    "data, error, match",
    [
        (123, TypeError, "a string or a list of strings; got int"),
        (b"bytes", TypeError, "got bytes"),
        (np.array(["ab", "cd"]), TypeError, "got ndarray"),
        (["the", 3], TypeError, "the list holds a int"),
        ("", ValueError, "empty string"),
        ([], ValueError, "empty list"),
        (["the", ""], ValueError, r"1 empty string\(s\) \(e.g. at position 1\)"),
    ],
)
def test_bad_data_are_refused(small_fit, data, error, match):
    with pytest.raises(error, match=match):
        small_fit.log_prob(data)
    with pytest.raises(error, match=match):
        _fit(CharRNN(hidden_size=4), data)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"hidden_size": 0}, ValueError, "hidden_size must be a positive int; got 0"),
        ({"num_layers": 1.5}, ValueError, "num_layers must be a positive int"),
        ({"embedding_dim": True}, ValueError, "embedding_dim must be a positive int"),
        ({"seq_len": -3}, ValueError, "seq_len must be a positive int"),
        ({"cell": "rnn"}, ValueError, "cell='rnn' is not known; expected one of: lstm, gru"),
        ({"vocabulary": "abca"}, ValueError, "repeats the characters 'a'"),
        ({"vocabulary": ""}, ValueError, "vocabulary is empty"),
        ({"vocabulary": ["a", "b"]}, TypeError, "vocabulary must be a string"),
    ],
)
def test_bad_constructor_arguments_are_refused(kwargs, error, match):
    with pytest.raises(error, match=match):
        CharRNN(**kwargs)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"length": 0}, ValueError, "length must be a positive int"),
        ({"length": 3, "prompt": "the "}, ValueError, "prompt has 4 characters, more than length=3"),
        ({"prompt": 5}, TypeError, "prompt must be a string"),
        ({"temperature": -1.0}, ValueError, "temperature must be a finite number >= 0"),
        ({"temperature": float("nan")}, ValueError, "temperature must be a finite number >= 0"),
        ({"top_k": 3}, ValueError, r"Unknown sample option\(s\) \['top_k'\]"),
    ],
)
def test_bad_sample_options_are_refused(small_fit, kwargs, error, match):
    with pytest.raises(error, match=match):
        small_fit.sample(2, **kwargs)


def test_scoring_before_any_vocabulary_is_known_says_so():
    with pytest.raises(ValueError, match="no vocabulary yet"):
        CharRNN().sample_items(1, {})


# ---------------------------------------------------------------- vocabulary and state
def test_the_vocabulary_is_learned_from_the_training_text_and_kept_by_the_fit(small_fit, tmp_path):
    assert small_fit.vocabulary == "".join(sorted(set(TEXT)))
    assert small_fit.model.vocabulary is None and small_fit.model.get_config()["vocabulary"] is None
    small_fit.save(tmp_path / "rnn.npz")
    assert pg.load(tmp_path / "rnn.npz").vocabulary == small_fit.vocabulary  # saved with the data
    given = CharRNN(hidden_size=4, vocabulary="zyx ")
    fit = _fit(given, "xyz zyx", subsample_size=None, num_steps=3)
    assert fit.vocabulary == "zyx " and fit.params["rnn$$$head.bias"].shape == (4,)
    # the model is a value: fitting it on other texts learns their vocabulary, not the first one's
    other = _fit(small_fit.model, "qqq rrr", subsample_size=None, num_steps=3)
    assert other.vocabulary == " qr" and other.params["rnn$$$head.bias"].shape == (3,)


def test_save_and_load_round_trip(small_fit, tmp_path):
    small_fit.save(tmp_path / "rnn.npz")
    back = pg.load(tmp_path / "rnn.npz")
    assert isinstance(back.model, CharRNN) and back.model.get_config() == small_fit.model.get_config()
    for k, v in small_fit.params.items():
        assert torch.equal(back.params[k], v), k
    texts = ["the hat", "a bat sat on the mat.\n"]
    assert torch.equal(back.log_prob(texts), small_fit.log_prob(texts))
    assert torch.equal(back.log_prob(), small_fit.log_prob())  # the training text comes back too
    assert back.sample(3, length=30, prompt="a", seed=9) == small_fit.sample(3, length=30, prompt="a", seed=9)


def test_same_seed_same_params_and_global_state_kept():
    torch.manual_seed(123)
    before = torch.random.get_rng_state().clone()
    store = pyro.get_param_store()
    names = set(store.keys())
    a = _fit(CharRNN(hidden_size=8, seq_len=20), TEXT, num_steps=20)
    b = _fit(CharRNN(hidden_size=8, seq_len=20), TEXT, num_steps=20)
    c = pg.fit(
        CharRNN(hidden_size=8, seq_len=20), TEXT, seed=1, progress=False, num_steps=20, subsample_size=4
    )
    assert torch.equal(torch.random.get_rng_state(), before) and set(store.keys()) == names
    assert torch.get_default_dtype() == torch.float32
    for k in a.params:
        assert torch.equal(a.params[k], b.params[k])
    assert not torch.equal(a.params["rnn$$$head.weight"], c.params["rnn$$$head.weight"])


def test_the_shared_contract():
    texts = ["the cat sat", "on the mat", "a rat ate", "the hat", "bat sat on it"]  # each <= seq_len
    report = check_model(
        CharRNN(hidden_size=8, embedding_dim=4, seq_len=16),
        texts,
        methods=["svi"],
        options={"svi": {"subsample_size": 2, "num_steps": 50}},
    )["svi"]
    for check in ("global state kept", "same seed, same fit", "to_arviz shapes", "save/load", "sample shape"):
        assert report[check] == "ok", check
    assert report["log_prob brute force"] == "ok"


def test_the_pyro_model_scores_the_weights_pyro_gives_it():
    model = CharRNN(hidden_size=6, embedding_dim=3, seq_len=8)
    data = model.prepare_data(["the cat", "sat"])
    fit = _fit(model, data.texts, subsample_size=2, num_steps=5)
    with torch.no_grad():  # the network object's own weights now differ from the fit's
        for w in model._network(len(data.vocabulary)).parameters():
            w.add_(1.0)
    with pyro.get_param_store().scope():
        store = pyro.get_param_store()
        for k, v in fit.params.items():
            store[k] = v
        trace = pyro.poutine.trace(model.model).get_trace(data)
    per_window = trace.nodes["x"]["fn"].log_prob(trace.nodes["x"]["value"]).detach().double()
    np.testing.assert_allclose(per_window.numpy(), fit.log_prob(["the cat", "sat"]).numpy(), rtol=1e-5)
