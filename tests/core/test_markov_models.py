"""Time series written with ``pyro.markov`` (tests/core/gallery.py, models 0-2 of the Pyro
hidden Markov model examples' style): scores, smoothing marginals and MAP paths against the
forward-backward and Viterbi recursions written by hand in plain torch."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import probgen as pg
from probgen.posterior import discrete_marginals
from tests.core import gallery

MODELS = {
    "sequential": gallery.hmm_sequential,
    "plated": gallery.hmm_plated,
    "autoregressive": gallery.hmm_autoregressive,
}
DATA = gallery.polyphonic_data()
PROBS_X = torch.tensor([[0.75, 0.25], [0.3, 0.7]])


def _params(style: str) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(3)
    shape = (2, 2, gallery.TONES) if style == "autoregressive" else (2, gallery.TONES)
    return {"probs_x": PROBS_X, "probs_y": 0.1 + 0.8 * torch.rand(shape, generator=gen)}


def _log_emissions(params, seq):
    """``(length, hidden)`` log p(y_t | x_t) of one sequence (emissions of model 1)."""
    p = {k: v.double() for k, v in params.items()}
    y = seq[:, None, :].double()
    return (y * torch.log(p["probs_y"]) + (1 - y) * torch.log1p(-p["probs_y"])).sum(-1)


def _forward_backward(params, seq):
    """Smoothing marginals p(x_t | y_1..T) ``(length, hidden)`` by the scaled recursions."""
    trans = params["probs_x"].double()
    emit = _log_emissions(params, seq).exp()
    T = len(seq)
    alpha = torch.zeros(T, 2, dtype=torch.float64)
    alpha[0] = trans[0] * emit[0]
    alpha[0] /= alpha[0].sum()
    for t in range(1, T):
        alpha[t] = (alpha[t - 1] @ trans) * emit[t]
        alpha[t] /= alpha[t].sum()
    beta = torch.ones(T, 2, dtype=torch.float64)
    for t in range(T - 2, -1, -1):
        beta[t] = trans @ (emit[t + 1] * beta[t + 1])
        beta[t] /= beta[t].sum()
    gamma = alpha * beta
    return gamma / gamma.sum(-1, keepdim=True)


def _viterbi(params, seq):
    """The most probable state path of one sequence ``(length,)``."""
    log_trans = torch.log(params["probs_x"].double())
    log_emit = _log_emissions(params, seq)
    delta = log_trans[0] + log_emit[0]
    back = []
    for t in range(1, len(seq)):
        scores = delta[:, None] + log_trans
        back.append(scores.argmax(0))
        delta = scores.max(0).values + log_emit[t]
    path = [int(delta.argmax())]
    for pointers in reversed(back):
        path.append(int(pointers[path[-1]]))
    return torch.tensor(path[::-1])


@pytest.mark.parametrize("style", sorted(MODELS))
def test_one_score_per_sequence_is_the_forward_algorithm_over_its_own_length(style):
    model = pg.model(MODELS[style])
    prepared = model.prepare_data(DATA)
    assert model.roles(prepared).data_plate == "sequences"
    assert model.num_items(prepared) == len(DATA["lengths"])
    params = _params(style)
    got = model.log_prob_items(prepared, params)
    expect = gallery.chain_ll_by_hand(params, prepared)
    torch.testing.assert_close(got.double(), expect, rtol=1e-5, atol=1e-4)


def test_padding_adds_nothing_to_a_score():
    """Padded steps are masked: a sequence scores the same alone, unpadded, and in the batch."""
    model = pg.model(gallery.hmm_plated)
    params = _params("plated")
    batch = model.log_prob_items(model.prepare_data(DATA), params)
    i = int(DATA["lengths"].argmin())
    length = int(DATA["lengths"][i])
    alone = {"sequences": DATA["sequences"][i : i + 1, :length], "lengths": DATA["lengths"][i : i + 1]}
    torch.testing.assert_close(model.log_prob_items(model.prepare_data(alone), params)[0], batch[i])


def test_smoothing_marginals_are_forward_backward():
    model = pg.model(gallery.hmm_plated)
    prepared = model.prepare_data(DATA)
    params = _params("plated")
    marginals = model.latent_posterior(prepared, params)
    T = int(DATA["lengths"].max())
    assert set(marginals) == {f"x_{t}" for t in range(T)}
    for i, length in enumerate(DATA["lengths"].tolist()):
        seq = prepared.values["sequences"][i, :length]
        got = torch.stack([marginals[f"x_{t}"].reshape(-1, 2)[i] for t in range(length)])
        torch.testing.assert_close(got.double(), _forward_backward(params, seq), rtol=1e-5, atol=1e-5)
        for t in range(length, T):  # past the end: no information, uniform
            torch.testing.assert_close(marginals[f"x_{t}"].reshape(-1, 2)[i], torch.full((2,), 0.5))


@pytest.fixture(scope="module")
def em_fit():
    return pg.fit(pg.model(gallery.hmm_plated), DATA, method="em", seed=0, progress=False, max_iter=30)


def test_predict_proba_of_a_fit_is_smoothing_at_its_estimates_and_predict_is_viterbi(em_fit):
    fit = em_fit
    proba, paths = fit.predict_proba(), fit.predict()  # dicts by site x_t, shaped (sequences, 1, ...)
    sequences = fit.data.values["sequences"]
    for i, length in enumerate(DATA["lengths"].tolist()):
        got = torch.stack([proba[f"x_{t}"].reshape(-1, 2)[i] for t in range(length)])
        torch.testing.assert_close(
            got.double(), _forward_backward(fit.params, sequences[i, :length]), rtol=1e-5, atol=1e-5
        )
        path = torch.stack([paths[f"x_{t}"].reshape(-1)[i] for t in range(length)])
        assert torch.equal(path.long(), _viterbi(fit.params, sequences[i, :length]))


def test_sequential_and_vectorised_plates_agree_item_by_item():
    """Model 0 (one sequence after another) and model 1 (all at once, masked) are one model."""
    params = _params("plated")
    scores = {}
    for style in ("sequential", "plated"):
        model = pg.model(MODELS[style])
        scores[style] = model.log_prob_items(model.prepare_data(DATA), params)
    torch.testing.assert_close(scores["sequential"], scores["plated"])


def _forward_filtering(params, seq):
    """Filtering marginals p(x_t | y_1..t) ``(length, hidden)``: the normalised forward pass."""
    trans = params["probs_x"].double()
    emit = _log_emissions(params, seq).exp()
    alpha = trans[0] * emit[0]
    rows = [alpha / alpha.sum()]
    for t in range(1, len(seq)):
        alpha = (rows[-1] @ trans) * emit[t]
        rows.append(alpha / alpha.sum())
    return torch.stack(rows)


@pytest.mark.parametrize("style", ["sequential", "plated"])
def test_filtering_marginals_are_the_forward_pass(style):
    model = pg.model(MODELS[style])
    prepared = model.prepare_data(DATA)
    params = _params("plated")
    filtered = discrete_marginals(model, prepared, params, filtering=True)
    smoothed = discrete_marginals(model, prepared, params)
    for i, length in enumerate(DATA["lengths"].tolist()):
        # model 0 names each sequence's sites; model 1 holds every sequence in one site per step
        names = [f"x_{i}_{t}" if style == "sequential" else f"x_{t}" for t in range(length)]
        row = 0 if style == "sequential" else i
        seq = prepared.values["sequences"][i, :length]
        got = torch.stack([filtered[n].reshape(-1, 2)[row] for n in names]).double()
        torch.testing.assert_close(got, _forward_filtering(params, seq), rtol=1e-5, atol=1e-5)
        # the last step has seen every observation: filtering and smoothing agree there
        last = names[-1]
        torch.testing.assert_close(
            filtered[last].reshape(-1, 2)[row], smoothed[last].reshape(-1, 2)[row], rtol=1e-5, atol=1e-5
        )


def test_new_sequences_are_drawn_at_new_lengths_from_the_fitted_chain(em_fit):
    """``posterior_predictive`` with the response left out generates: one site per step of the
    longest new sequence, and the first two steps' tone frequencies match the fitted chain."""
    n = 3000
    reps = em_fit.posterior_predictive(data={"lengths": np.full(n, 2)})
    assert sorted(reps) == ["y_0", "y_1"]
    assert tuple(reps["y_0"].shape) == (1, 1, n, gallery.TONES)
    p = {k: v.double() for k, v in em_fit.params.items()}
    first = p["probs_x"][0]  # p(x_0)
    expect = {"y_0": first @ p["probs_y"], "y_1": (first @ p["probs_x"]) @ p["probs_y"]}
    for site, probs in expect.items():
        freq = reps[site].reshape(n, gallery.TONES).double().mean(0)
        assert ((freq - probs).abs() <= 4 * (probs * (1 - probs) / n).sqrt()).all(), site


def test_arviz_log_likelihood_is_one_value_per_sequence(em_fit):
    """The argument ``sequences`` and the plate "sequences" share a name: both reach ArviZ."""
    idata = em_fit.to_arviz()
    ll = next(iter(idata.log_likelihood.data_vars.values()))
    assert ll.shape == (1, 1, len(DATA["lengths"]))
    expect = gallery.chain_ll_by_hand(em_fit.params, em_fit.data)
    np.testing.assert_allclose(ll.values.reshape(-1), expect.numpy(), rtol=1e-5)
    assert "sequences" in idata.constant_data


def test_fit_predict_proba_filtering_is_the_forward_pass_at_the_estimates(em_fit):
    filtered = em_fit.predict_proba(filtering=True)
    params = {k: v for k, v in em_fit.params.items()}
    prepared = em_fit.data
    for i, length in enumerate(DATA["lengths"].tolist()):
        seq = prepared.values["sequences"][i, :length]
        got = torch.stack([filtered[f"x_{t}"].reshape(-1, 2)[i] for t in range(length)]).double()
        torch.testing.assert_close(got, _forward_filtering(params, seq), rtol=1e-5, atol=1e-5)
