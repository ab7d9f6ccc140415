"""CharTransformer: a hand-written forward pass, the key/value cache, causality, sampling, persistence."""

from __future__ import annotations

import itertools
import math
from collections import Counter

import pyro
import pytest
import torch
import torch.nn.functional as F
from pyro.infer import Trace_ELBO
from torch.optim.optimizer import register_optimizer_step_pre_hook

import probgen as pg
from probgen.models import CharRNN, CharTransformer, CharTransformerFit

TEXT = "the cat sat on the mat. the rat ate the hat; a bat sat.\n" * 6
SIZES = {"d_model": 16, "n_heads": 2, "n_layers": 2, "seq_len": 12}


def _fit(model, data, **options):
    opts = {"num_steps": 60, "subsample_size": 4, "lr": 0.01, **options}
    return pg.fit(model, data, method="svi", seed=0, progress=False, **opts)


@pytest.fixture(scope="module")
def small_fit():
    return _fit(CharTransformer(**SIZES), TEXT, num_steps=150)


# ------------------------------------------------------------- an independent forward pass
def _hand_log_probs(params, vocab, text, n_heads, n_layers, window, shift=2):
    """``log p(c_t | ...)`` of every character, written out in float64 from the formulas: the
    embeddings of the ``shift`` previous inputs mixed in, pre-LN blocks, rotary positions, each
    position attending to the ``window`` positions ending at it."""
    w = {k.split("$$$")[1]: v.double() for k, v in params.items()}
    codes = torch.tensor([vocab.index(c) for c in text])
    e = w["embedding.weight"][torch.cat([torch.tensor([len(vocab)]), codes[:-1]])]
    t, d = e.shape
    x = e.clone()
    for s in range(t):
        before = [
            e[s - j] if s - j >= 0 else torch.zeros(d, dtype=torch.float64) for j in range(1, shift + 1)
        ]
        if shift:
            x[s] += w["mix.weight"] @ torch.cat(before)
    dh = d // n_heads
    half = dh // 2
    angle = torch.arange(t, dtype=torch.float64)[:, None] * 10000.0 ** (-torch.arange(half) / half)
    cos, sin = angle.cos(), angle.sin()

    def rotate(z):
        a, b = z[..., :half], z[..., half:]
        return torch.cat([a * cos - b * sin, a * sin + b * cos], -1)

    i, j = torch.arange(t)[:, None], torch.arange(t)[None, :]
    allowed = (j <= i) & (j > i - window)
    for layer in range(n_layers):

        def p(name, layer=layer):
            return w[f"blocks.{layer}.{name}"]

        h = F.layer_norm(x, (d,), p("norm1.weight"), p("norm1.bias"))
        q, k, v = (h @ p("qkv.weight").T + p("qkv.bias")).split(d, -1)
        q, k, v = (z.reshape(t, n_heads, dh).transpose(0, 1) for z in (q, k, v))
        scores = (rotate(q) @ rotate(k).transpose(1, 2) / math.sqrt(dh)).masked_fill(~allowed, -math.inf)
        a = (scores.softmax(-1) @ v).transpose(0, 1).reshape(t, d)
        x = x + a @ p("proj.weight").T + p("proj.bias")
        h = F.layer_norm(x, (d,), p("norm2.weight"), p("norm2.bias"))
        x = x + F.gelu(h @ p("ff1.weight").T + p("ff1.bias")) @ p("ff2.weight").T + p("ff2.bias")
    x = F.layer_norm(x, (d,), w["norm.weight"], w["norm.bias"])
    logp = (x @ w["head.weight"].T + w["head.bias"]).log_softmax(-1)
    return logp.gather(-1, codes[:, None]).squeeze(-1)


def test_log_prob_equals_a_plain_forward_pass_of_the_same_weights(small_fit):
    vocab = small_fit.vocabulary
    # shorter than, equal to and (the last two) longer than seq_len=12: the window slides
    texts = ["the mat", "a", "the cat sat.", "hat; the cat sat on the rat.\nthe bat ate the mat; a rat."]
    lp = small_fit.log_prob(texts)
    hand = [float(_hand_log_probs(small_fit.params, vocab, s, 2, 2, 12).sum()) for s in texts]
    assert lp.shape == (4,)
    torch.testing.assert_close(lp, torch.tensor(hand, dtype=torch.float64), rtol=1e-5, atol=1e-4)
    # and per character: the surprisal the picture draws
    long = texts[-1]
    per_char = small_fit.model.surprisal(long, small_fit.params, vocab)
    torch.testing.assert_close(
        per_char, -_hand_log_probs(small_fit.params, vocab, long, 2, 2, 12), atol=1e-4, rtol=1e-5
    )


def test_without_the_shift_the_network_is_a_plain_transformer():
    fit = _fit(CharTransformer(shift=0, **SIZES), TEXT, num_steps=5)
    assert not any("mix" in k for k in fit.params)
    text = "hat; the cat sat on the rat.\nthe bat"
    hand = _hand_log_probs(fit.params, fit.vocabulary, text, 2, 2, 12, shift=0).sum()
    assert float(fit.log_prob([text])) == pytest.approx(float(hand), rel=1e-5, abs=1e-4)


def test_the_key_value_cache_gives_the_logits_of_a_full_forward_pass(small_fit):
    model, params, vocab = small_fit.model, small_fit.params, small_fit.vocabulary
    text = ("the cat sat on the mat. " * 3)[:40]  # past seq_len: the cache drops old keys
    codes = torch.tensor([[len(vocab)] + [vocab.index(c) for c in text]])
    full = torch.cat([model._call(params, codes[:, : t + 1])[0][:, -1] for t in range(codes.shape[1])])
    state, steps = None, []
    for t in range(codes.shape[1]):
        logits, state = model._call(params, codes[:, t : t + 1], state)
        steps.append(logits[:, -1])
        assert all(k.shape[2] <= model.seq_len - 1 for k, _ in state.layers)
    torch.testing.assert_close(torch.cat(steps), full, atol=1e-5, rtol=1e-5)
    # greedy sampling (through the cache) picks, at every step, the argmax of a full pass on its prefix
    (greedy,) = small_fit.sample(1, length=40, prompt="the c", temperature=0)
    for t in range(5, 40):
        prefix = torch.tensor([[len(vocab)] + [vocab.index(c) for c in greedy[:t]]])
        assert vocab[int(model._call(params, prefix)[0][0, -1].argmax())] == greedy[t], t


def test_a_later_character_never_changes_an_earlier_score(small_fit):
    model, params, vocab = small_fit.model, small_fit.params, small_fit.vocabulary
    a = "the cat sat on the mat; the rat"
    for cut in (3, 11, 20):  # 20 > seq_len: past the first window too
        other = next(c for c in vocab if c != a[cut])
        b = a[:cut] + other + a[cut + 1 :]
        sa, sb = model.surprisal(a, params, vocab), model.surprisal(b, params, vocab)
        assert torch.equal(sa[:cut], sb[:cut]) and not torch.equal(sa[cut:], sb[cut:])


def test_probabilities_of_every_string_of_a_length_sum_to_one():
    fit = _fit(CharTransformer(d_model=8, n_heads=2, n_layers=1, seq_len=2, vocabulary="abc"), "abcaabbca")
    for length in (1, 2, 3):  # 3 > seq_len: past the window too
        strings = ["".join(s) for s in itertools.product("abc", repeat=length)]
        assert float(torch.logsumexp(fit.log_prob(strings), 0)) == pytest.approx(0.0, abs=1e-5)


def test_the_pyro_model_and_the_fast_objective_give_the_same_loss():
    model = CharTransformer(**SIZES)
    data = model.prepare_data(TEXT)
    with pyro.get_param_store().scope():
        pyro.set_rng_seed(0)
        objective = model.svi_objective(data)
        with torch.no_grad():
            fast = float(objective.loss(None, 1))
            pyro_loss = Trace_ELBO().loss(model.model, lambda *a, **k: None, data)
    assert pyro_loss == pytest.approx(fast, rel=1e-5)
    _, targets = data.windows()
    windows = ["".join(data.vocabulary[i] for i in row if i >= 0) for row in targets.tolist()]
    nll = -float(model.log_prob_items(model.prepare_data(windows), objective.params()).sum())
    assert fast == pytest.approx(nll, rel=1e-5)


# ------------------------------------------------------------------------------ fitting
def test_fitting_lowers_held_out_loss_below_the_unigram_entropy():
    train, held_out = TEXT, "the bat sat on the rat. the cat ate the mat;\n"
    counts = Counter(train)
    unigram = -sum(n / len(train) * math.log(n / len(train)) for n in counts.values())
    fit = _fit(CharTransformer(**SIZES), train, num_steps=150)
    nats = -float(fit.log_prob(held_out)) / len(held_out)
    assert nats < unigram - 0.3, (nats, unigram)
    assert isinstance(fit, CharTransformerFit) and fit.perplexity(held_out) == pytest.approx(math.exp(nats))


# ----------------------------------------------------------------------------- sampling
def test_samples_respect_the_prompt_the_length_and_the_vocabulary(small_fit):
    out = small_fit.sample(5, length=30, prompt="the ", seed=1)
    assert isinstance(out, list) and len(out) == 5
    assert all(isinstance(s, str) and len(s) == 30 and s.startswith("the ") for s in out)
    assert all(set(s) <= set(small_fit.vocabulary) for s in out)
    assert small_fit.sample(2, length=4, prompt="the ", seed=1) == ["the ", "the "]
    long_prompt = TEXT[:30]  # longer than seq_len: read in chunks, then the window slides
    assert all(
        s.startswith(long_prompt) and len(s) == 45 for s in small_fit.sample(2, length=45, prompt=long_prompt)
    )
    assert small_fit.sample(3, length=25, seed=5) == small_fit.sample(3, length=25, seed=5)


# ------------------------------------------------------------------------- persistence
def test_save_and_load_give_identical_scores_and_samples(small_fit, tmp_path):
    small_fit.save(tmp_path / "gpt.npz")
    back = pg.load(tmp_path / "gpt.npz")
    assert isinstance(back, CharTransformerFit) and back.model.get_config() == small_fit.model.get_config()
    texts = ["the hat", "a bat sat on the mat.\nthe cat ate the rat"]
    assert torch.equal(back.log_prob(texts), small_fit.log_prob(texts))
    assert back.vocabulary == small_fit.vocabulary
    assert back.sample(2, length=30, prompt="a", seed=9) == small_fit.sample(2, length=30, prompt="a", seed=9)


def test_the_picture_draws_one_bar_per_character(small_fit):
    pytest.importorskip("matplotlib")
    ax = small_fit.plot(text="the cat sat")
    assert len(ax.patches) == 11 and ax.get_title().startswith("CharTransformer: surprisal")


# ------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"d_model": 0}, ValueError, "d_model must be a positive int; got 0"),
        ({"n_heads": 2.5}, ValueError, "n_heads must be a positive int"),
        ({"n_layers": True}, ValueError, "n_layers must be a positive int"),
        ({"seq_len": -1}, ValueError, "seq_len must be a positive int"),
        ({"dim_feedforward": 0}, ValueError, "dim_feedforward must be a positive int"),
        ({"d_model": 15, "n_heads": 3}, ValueError, "d_model=15 must be even"),
        ({"d_model": 64, "n_heads": 3}, ValueError, "n_heads=3 must divide d_model=64.*n_heads=4"),
        ({"d_model": 12, "n_heads": 4}, ValueError, "heads of even width"),
        ({"shift": -1}, ValueError, "shift must be an int >= 0; got -1"),
        ({"dropout": 1.0}, ValueError, r"dropout must be in \[0, 1\); got 1.0"),
        ({"dropout": "0.1"}, TypeError, "dropout must be a number"),
        ({"vocabulary": "abca"}, ValueError, "repeats the characters 'a'"),
        ({"vocabulary": ["a"]}, TypeError, "vocabulary must be a string"),
    ],
)
def test_bad_constructor_arguments_are_refused(kwargs, error, match):
    with pytest.raises(error, match=match):
        CharTransformer(**kwargs)


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda f: f.sample(2, length=0), ValueError, "length must be a positive int"),
        (lambda f: f.sample(2, length=3, prompt="the "), ValueError, "prompt has 4 characters"),
        (lambda f: f.sample(2, temperature=-1.0), ValueError, "temperature must be a finite number >= 0"),
        (
            lambda f: f.sample(2, top_k=3),
            ValueError,
            r"Unknown sample option\(s\) \['top_k'\]; CharTransformer",
        ),
        (lambda f: f.sample(2, prompt="hi!"), ValueError, r"prompt holds characters outside .*'!'"),
        (lambda f: f.log_prob(["the Zoo"]), ValueError, "outside the model's vocabulary: 'Z'"),
        (lambda f: f.log_prob(7), TypeError, "a string or a list of strings; got int"),
    ],
)
def test_bad_calls_are_refused(small_fit, call, error, match):
    with pytest.raises(error, match=match):
        call(small_fit)


def test_a_dropout_fit_trains_with_dropout_and_scores_without():
    fit = _fit(CharTransformer(dropout=0.2, **SIZES), TEXT, num_steps=20)
    assert torch.equal(fit.log_prob(["the cat"]), fit.log_prob(["the cat"]))  # no dropout when scoring
    assert not isinstance(fit.model, CharRNN) and fit.params["transformer$$$head.bias"].shape == (
        len(fit.vocabulary),
    )


# ------------------------------------------------------------------ the default training schedule
def _warmup_cosine_by_hand(step, num_steps, peak=0.02, warmup=200, floor=0.1):
    """The documented default: linear warm-up over min(200, num_steps // 5) steps, cosine to floor * peak."""
    w = max(1, min(warmup, num_steps // 5))
    if step < w:
        return peak * (step + 1) / w
    return peak * (floor + (1 - floor) * (1 + math.cos(math.pi * (step - w) / (num_steps - w))) / 2)


def _record_steps():
    """Every optimiser step's learning rate(s) and gradient norm, by a global step pre-hook."""
    seen = []

    def hook(optimizer, args, kwargs):
        grads = [p.grad for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
        norm = float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads])))
        seen.append(([g["lr"] for g in optimizer.param_groups], norm))

    return seen, register_optimizer_step_pre_hook(hook)


def test_the_default_fit_follows_the_warmup_cosine_schedule_with_clipped_gradients():
    seen, handle = _record_steps()
    try:
        fit = pg.fit(
            CharTransformer(**SIZES), TEXT * 4, method="svi", seed=0, progress=False, num_steps=50, tol=0
        )
    finally:
        handle.remove()
    assert len(seen) == 50
    lrs = [lr[0] for lr, _ in seen]
    expected = [_warmup_cosine_by_hand(t, 50) for t in range(50)]  # 10 warm-up steps, then the cosine
    assert lrs == pytest.approx(expected, rel=1e-9)
    assert lrs[9] == pytest.approx(0.02) and lrs[-1] == pytest.approx(
        0.002 + 0.018 * (1 + math.cos(math.pi * 39 / 40)) / 2
    )
    assert max(norm for _, norm in seen) <= 1.0 + 1e-5  # the gradient clipped to norm 1 before each step
    assert all(torch.isfinite(v).all() for v in fit.params.values())


def test_the_schedule_and_clipping_can_be_turned_off_and_pyro_s_path_follows_the_schedule():
    seen, handle = _record_steps()
    try:
        _fit(CharTransformer(**SIZES), TEXT, num_steps=20, lr=0.01, lr_schedule=None, clip_norm=None, tol=0)
        constant = list(seen)
        seen.clear()
        _fit(CharTransformer(**SIZES), TEXT, num_steps=20, elbo="trace", tol=0)
    finally:
        handle.remove()
    assert [lr for lr, _ in constant] == [[0.01]] * 20 and max(n for _, n in constant) > 1.0
    # Pyro's path: one optimiser per parameter tensor, each at the scheduled rate, each step
    by_step = [lr[0] for lr, _ in seen]
    per_step = len(by_step) // 20
    assert per_step >= 1 and len(by_step) == 20 * per_step
    expected = [_warmup_cosine_by_hand(t, 20, peak=0.01) for t in range(20) for _ in range(per_step)]
    assert by_step == pytest.approx(expected, rel=1e-9)
    assert max(n for _, n in seen) <= 1.0 + 1e-5  # each parameter tensor clipped on Pyro's path
