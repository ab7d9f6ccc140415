"""RBM family: exact log Z against brute force, AIS, Gibbs sampling, scikit-learn, contract, persistence."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pyro
import pyro.poutine as poutine
import pytest
import torch
from sklearn.datasets import load_digits
from sklearn.neural_network import BernoulliRBM
from threadpoolctl import threadpool_limits

import probgen as pg
import probgen.testing
from probgen.errors import ModelNotSupportedError
from probgen.fit import Fit
from probgen.models import RBM
from probgen.testing import check_model


def _random_params(n_visible: int, n_hidden: int, seed: int, scale: float = 1.0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "W": scale * torch.randn(n_hidden, n_visible, generator=g),
        "visible_bias": torch.randn(n_visible, generator=g),
        "hidden_bias": torch.randn(n_hidden, generator=g),
    }


def _all_states(n: int) -> torch.Tensor:
    return torch.tensor(list(itertools.product([0.0, 1.0], repeat=n)), dtype=torch.float64)


def _brute_log_prob(params: dict[str, torch.Tensor], v: torch.Tensor) -> torch.Tensor:
    """log p(v) from -E(v, h) = v.b + h.c + h.W v summed over every joint state (v, h), float64."""
    W, b, c = (params[k].double() for k in ("W", "visible_bias", "hidden_bias"))
    V, H = _all_states(W.shape[1]), _all_states(W.shape[0])
    neg_e = (V @ b)[:, None] + (H @ c)[None, :] + V @ W.T @ H.T  # every (v, h) pair
    log_z = torch.logsumexp(neg_e.reshape(-1), 0)
    vd = v.double()
    return torch.logsumexp((vd @ b)[:, None] + (H @ c)[None, :] + vd @ W.T @ H.T, 1) - log_z


def _fit_at(model: RBM, params: dict[str, torch.Tensor], data: torch.Tensor | None = None) -> Fit:
    x = data if data is not None else _all_states(model.n_visible).float()
    return Fit(model=model, data=x, method="cd", params={k: v.float() for k, v in params.items()})


def _binary(n: int, d: int, seed: int = 0) -> torch.Tensor:
    return (torch.rand(n, d, generator=torch.Generator().manual_seed(seed)) > 0.5).float()


# ------------------------------------------------------------------ exact log-likelihood
@pytest.mark.parametrize("n_visible, n_hidden", [(5, 3), (3, 5)], ids=["sum-over-hidden", "sum-over-visible"])
def test_log_prob_equals_a_brute_force_sum_over_every_joint_state(n_visible, n_hidden):
    params = _random_params(n_visible, n_hidden, seed=1, scale=1.5)
    fit = _fit_at(RBM(n_visible, n_hidden), params)
    v = _all_states(n_visible)
    lp = fit.log_prob(v)
    assert lp.dtype == torch.float64
    torch.testing.assert_close(lp, _brute_log_prob(params, v), atol=1e-5, rtol=0)
    assert float(torch.logsumexp(lp, 0)) == pytest.approx(0.0, abs=1e-5)  # a normalised density
    assert fit.log_partition() == (pytest.approx(fit.log_partition().value), 0.0, "exact")


def test_exact_log_z_over_many_chunks_agrees_with_the_other_layer():
    # 16 hidden units: 65536 hidden states summed in chunks; the visible side (4 units) is the check
    params = _random_params(4, 16, seed=2, scale=0.5)
    by_visible = _fit_at(RBM(4, 16), params).log_partition().value
    W, b, c = (params[k].double() for k in ("W", "visible_bias", "hidden_bias"))
    H = _all_states(16)
    by_hidden = float(torch.logsumexp(H @ c + torch.nn.functional.softplus(H @ W + b).sum(-1), 0))
    assert by_visible == pytest.approx(by_hidden, abs=1e-6)


def test_free_energy_equals_the_formula_by_hand():
    params = _random_params(4, 3, seed=3)
    fit = _fit_at(RBM(4, 3), params)
    v = _all_states(4).float()
    W, b, c = (params[k].double().numpy() for k in ("W", "visible_bias", "hidden_bias"))
    hand = []
    for row in v.double().numpy():
        f = -sum(b[i] * row[i] for i in range(4))
        for j in range(3):
            f -= math.log1p(math.exp(c[j] + sum(W[j, i] * row[i] for i in range(4))))
        hand.append(f)
    torch.testing.assert_close(fit.free_energy(v).double(), torch.tensor(hand), atol=1e-5, rtol=0)
    # the hook is differentiable in the parameters
    leaf = {k: t.clone().requires_grad_(True) for k, t in params.items()}
    RBM(4, 3).free_energy(v, leaf).sum().backward()
    assert leaf["W"].grad is not None and leaf["W"].grad.abs().sum() > 0


# -------------------------------------------------------------------------- AIS
def test_ais_agrees_with_the_exact_log_partition_within_its_standard_error():
    params = _random_params(12, 8, seed=4, scale=1.0)
    fit = _fit_at(RBM(12, 8), params, data=_binary(50, 12))
    exact = fit.log_partition(method="exact")
    ais = fit.log_partition(method="ais", num_runs=200, num_steps=1000)
    assert ais.method == "ais" and exact.method == "exact" and exact.stderr == 0.0
    assert 0 < ais.stderr < 0.2
    assert abs(ais.value - exact.value) < 4 * ais.stderr + 1e-3
    # log_prob uses the same estimate when partition="ais"
    fit_ais = _fit_at(RBM(12, 8, partition="ais", ais_runs=200, ais_steps=1000), params, data=_binary(50, 12))
    x = _binary(7, 12, seed=5)
    lp = fit_ais.log_prob(x)
    torch.testing.assert_close(lp, -fit_ais.free_energy(x).double() - ais.value, atol=1e-4, rtol=0)
    torch.testing.assert_close(lp, _brute_log_prob(params, x), atol=4 * ais.stderr + 1e-3, rtol=0)


# ----------------------------------------------------------------------- sampling
def test_gibbs_samples_follow_the_exact_distribution():
    params = _random_params(4, 3, seed=6, scale=1.5)
    fit = _fit_at(RBM(4, 3), params)
    draws = fit.sample(20000, seed=0, burn_in=200)
    assert draws.shape == (20000, 4) and draws.dtype == torch.float32
    codes = (draws.long() * torch.tensor([8, 4, 2, 1])).sum(
        -1
    )  # _all_states order: first unit is the high bit
    empirical = torch.bincount(codes, minlength=16).double() / len(codes)
    exact = _brute_log_prob(params, _all_states(4)).exp()
    assert 0.5 * float((empirical - exact).abs().sum()) < 0.03
    # a sampler stuck at its start (burn_in=0 from the bias-only model) is visibly off
    stuck = fit.sample(20000, seed=0, burn_in=0)
    codes0 = (stuck.long() * torch.tensor([8, 4, 2, 1])).sum(-1)
    assert 0.5 * float((torch.bincount(codes0, minlength=16).double() / 20000 - exact).abs().sum()) > 0.05


def test_sampling_options_are_checked():
    fit = _fit_at(RBM(4, 3), _random_params(4, 3, seed=0))
    with pytest.raises(ValueError, match="burn_in must be a non-negative int"):
        fit.sample(3, burn_in=-1)
    with pytest.raises(ValueError, match="unknown sampling option"):
        fit.sample(3, steps=5)


# ---------------------------------------------------------------- against scikit-learn
@pytest.fixture(scope="module")
def digits() -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.as_tensor(load_digits().data / 16.0 > 0.5, dtype=torch.float32)
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    return x[perm[:1500]], x[perm[1500:]]  # train, held out


def test_held_out_log_likelihood_on_digits_is_at_least_scikit_learns(digits):
    train, held = digits
    # the same effort on both sides: 20 epochs of minibatches of 10, one gradient step each
    with threadpool_limits(1):
        sk = BernoulliRBM(n_components=10, n_iter=20, batch_size=10, random_state=0).fit(train.numpy())
    sk_params = {
        "W": torch.as_tensor(sk.components_),
        "visible_bias": torch.as_tensor(sk.intercept_visible_),
        "hidden_bias": torch.as_tensor(sk.intercept_hidden_),
    }
    sk_ll = float(_fit_at(RBM(64, 10), sk_params, data=train).log_prob(held).mean())
    fit = pg.fit(RBM(64, 10), train, method="cd", seed=0, progress=False, num_steps=3000, subsample_size=10)
    ours = float(fit.log_prob(held).mean())
    assert ours >= sk_ll - 1.0, (ours, sk_ll)
    assert ours > -23.0  # the 64-pixel independent-Bernoulli model scores about -29 nats here
    assert fit.extras["history"] == "pseudo_log_likelihood" and fit.history[-1] > fit.history[0]


# --------------------------------------------------------------- protocol, contract
def test_the_pyro_model_scores_with_the_negative_free_energy_and_generates():
    m = RBM(5, 3)
    x = _binary(8, 5)
    with pyro.get_param_store().scope():
        tr = poutine.trace(m.model).get_trace(x)
        params = {k: tr.nodes[k]["value"] for k in ("W", "visible_bias", "hidden_bias")}
        site = tr.nodes["x"]
        torch.testing.assert_close(site["fn"].log_prob(site["value"]), -m.free_energy(x, params))
        assert [f.name for f in site["cond_indep_stack"]] == ["data"]
        generated = m.model(None, num_samples=4, burn_in=5)
    assert generated.shape == (4, 5) and set(generated.unique().tolist()) <= {0.0, 1.0}
    roles = m.roles(x)
    assert set(roles.param_sites) == {"W", "visible_bias", "hidden_bias"} and roles.data_plate == "data"


def test_likelihood_backends_refuse_the_rbm():
    for method in ("em", "svi"):
        with pytest.raises(ModelNotSupportedError, match=r"normalising constant.*Methods that can: cd"):
            pg.fit(RBM(4, 2), _binary(20, 4), method=method, progress=False)


def test_the_rbm_passes_the_contract():
    # the Pyro trace's sites hold -F(x) without log Z, so the contract skips its own brute force;
    # the RBM's honest brute force sums exp(-E) over every joint state, normaliser included
    report = check_model(
        RBM(6, 3),
        _binary(60, 6),
        log_prob_by_hand=_brute_log_prob,
        methods=["cd"],
        options={"cd": {"num_steps": 200}},
    )["cd"]
    assert report["log_prob by hand"] == "ok" and report["save/load"] == "ok"
    assert report["log_prob brute force"].startswith("skipped: an unnormalised density")
    assert report["global state kept"] == "ok" and report["same seed, same fit"] == "ok"
    assert report["bad input refused"] == "ok" and report["sample shape"] == "ok"


def test_save_load_round_trip(tmp_path):
    fit = pg.fit(RBM(6, 4), _binary(50, 6), method="cd", seed=1, num_steps=100, progress=False)
    fit.save(tmp_path / "rbm")
    back = pg.load(tmp_path / "rbm.npz")
    assert isinstance(back.model, RBM) and back.model.get_config() == fit.model.get_config()
    for k in ("W", "visible_bias", "hidden_bias"):
        assert torch.equal(back.params[k], fit.params[k])
    x = _binary(5, 6, seed=9)
    torch.testing.assert_close(back.log_prob(x), fit.log_prob(x))
    assert torch.equal(back.sample(5, seed=3), fit.sample(5, seed=3))


def test_same_seed_same_params_and_state_kept():
    x = _binary(50, 6)
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    a = pg.fit(RBM(6, 4), x, method="cd", seed=3, num_steps=60, progress=False)
    assert torch.equal(torch.random.get_rng_state(), before)
    assert len(pyro.get_param_store().keys()) == 0
    b = pg.fit(RBM(6, 4), x, method="cd", seed=3, num_steps=60, progress=False)
    c = pg.fit(RBM(6, 4), x, method="cd", seed=4, num_steps=60, progress=False)
    assert all(torch.equal(a.params[k], b.params[k]) for k in a.params)
    assert not torch.equal(a.params["W"], c.params["W"])


# ------------------------------------------------------------------------- input
def test_data_in_every_common_form_is_accepted():
    arr = np.array([[0, 1, 1], [1, 0, 0]])
    m = RBM(3, 2)
    expect = torch.tensor(arr, dtype=torch.float32)
    for form in (
        arr.astype(bool),
        arr,
        arr.astype(float),
        arr.tolist(),
        pd.DataFrame(arr),
        torch.tensor(arr),
    ):
        out = m.prepare_data(form)
        assert out.dtype == torch.float32 and torch.equal(out, expect)


@pytest.mark.parametrize(
    "bad, match",
    [
        (np.array([[0, 0.5, 1]]), "values other than 0 and 1"),
        (np.array([[0, 2, 1]]), "values other than 0 and 1"),
        (np.array([0, 1, 1]), r"shape \(n_items, 3\)"),
        (np.array([[0, 1]]), r"shape \(n_items, 3\)"),
        (np.array([[0, np.nan, 1]]), "NaN"),
        (np.zeros((0, 3)), "empty"),
    ],
)
def test_bad_data_is_refused(bad, match):
    with pytest.raises(ValueError, match=match):
        pg.fit(RBM(3, 2), bad, method="cd", progress=False)


def test_bad_constructor_arguments_are_refused():
    with pytest.raises(ValueError, match="n_visible must be a positive int"):
        RBM(0, 2)
    with pytest.raises(ValueError, match="n_hidden must be a positive int"):
        RBM(3, 2.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="partition='bogus' is not known"):
        RBM(3, 2, partition="bogus")
    with pytest.raises(ValueError, match="at most 20 units"):
        RBM(30, 25, partition="exact")
    fit = _fit_at(RBM(4, 3), _random_params(4, 3, seed=0))
    with pytest.raises(ValueError, match="method='nope' is not known"):
        fit.log_partition(method="nope")


def test_transform_gives_hidden_probabilities():
    params = _random_params(4, 3, seed=8)
    fit = _fit_at(RBM(4, 3), params)
    v = _all_states(4).float()
    expect = torch.sigmoid(v @ params["W"].T + params["hidden_bias"])
    torch.testing.assert_close(fit.transform(v), expect)
    assert fit.num_parameters() == 4 * 3 + 4 + 3


def test_the_closed_form_free_energy_gradient_is_autograd_s():
    model = RBM(7, 4)
    g = torch.Generator().manual_seed(3)
    params = {
        "W": torch.randn(4, 7, generator=g).requires_grad_(),
        "visible_bias": torch.randn(7, generator=g).requires_grad_(),
        "hidden_bias": torch.randn(4, generator=g).requires_grad_(),
    }
    v = (torch.rand(12, 7, generator=g) > 0.5).float()
    w = torch.randn(12, generator=g)
    auto = torch.autograd.grad(model.free_energy(v, params) @ w, list(params.values()))
    closed = model.free_energy_grad(v, w, params)
    for (name, _), a in zip(params.items(), auto, strict=True):
        torch.testing.assert_close(closed[name], a, rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------ fused CD updates
def _sigmoid_draw(u: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
    return (u < torch.sigmoid(act)).float()  # Bernoulli(sigmoid(act)) from uniforms u


@pytest.mark.parametrize("momentum, weight_decay", [(0.0, 0.0), (0.5, 0.1)], ids=["sgd", "momentum-decay"])
def test_fused_pcd_updates_are_the_closed_form_steps_by_hand(momentum, weight_decay):
    """Two PCD-1 updates of the model's own loop against the same updates written out, with the
    random numbers it documents drawn from a copy of its generator."""
    n_visible, n_hidden, size = 6, 3, 4
    start = _random_params(n_visible, n_hidden, seed=1, scale=0.5)
    data = _binary(8, n_visible, seed=2)
    chains = _binary(size, n_visible, seed=3)
    lrs = [0.3, 0.2]
    model = RBM(n_visible, n_hidden)
    updater = model.cd_updater(
        start,
        chains,
        batch_size=size,
        k=1,
        momentum=momentum,
        weight_decay=weight_decay,
        generator=torch.Generator().manual_seed(5),
    )
    updater.run(data, torch.arange(8), lrs)

    # by hand: its draws, in its documented order
    g = torch.Generator().manual_seed(5)
    W, b, c = (start[k].clone() for k in ("W", "visible_bias", "hidden_bias"))
    h = _sigmoid_draw(torch.rand(size, n_hidden, generator=g), chains @ W.T + c)
    u_visible = torch.rand(2, 1, size, n_visible, generator=g)
    u_hidden = torch.rand(2, 1, size, n_hidden, generator=g)
    velocity = [torch.zeros_like(W), torch.zeros_like(b), torch.zeros_like(c)]
    for s, lr in enumerate(lrs):
        pos = data[s * size : (s + 1) * size]
        neg = _sigmoid_draw(u_visible[s, 0], h @ W + b)  # one Gibbs sweep of the persistent chains
        p_pos, p_neg = torch.sigmoid(pos @ W.T + c), torch.sigmoid(neg @ W.T + c)
        h = _sigmoid_draw(u_hidden[s, 0], neg @ W.T + c)  # next hidden state, before the update
        # ascent direction <v h>_data - <v h>_model (and the biases'), less the L2 penalty
        direction = [
            p_pos.T @ pos / size - p_neg.T @ neg / size,
            pos.mean(0) - neg.mean(0),
            p_pos.mean(0) - p_neg.mean(0),
        ]
        for i, (theta, d) in enumerate(zip((W, b, c), direction, strict=True)):
            velocity[i] = momentum * velocity[i] + d - weight_decay * theta
            theta += lr * velocity[i]
    got = updater.params()
    for name, want in zip(("W", "visible_bias", "hidden_bias"), (W, b, c), strict=True):
        torch.testing.assert_close(got[name], want, rtol=0, atol=1e-6)
    assert not torch.equal(got["W"], start["W"])  # the updates moved the parameters


@pytest.mark.parametrize("persistent, k", [(True, 1), (False, 1), (True, 2)], ids=["pcd-1", "cd-1", "pcd-2"])
def test_fused_updates_learn_as_well_as_the_generic_cd_loop(digits, persistent, k):
    class _Generic(RBM):
        cd_updater = None  # type: ignore[assignment]  (not offered: the backend's step-by-step loop)

    train, held = digits
    options = dict(seed=0, progress=False, num_steps=1500, subsample_size=10, persistent=persistent, k=k)
    fused = pg.fit(RBM(64, 10), train, method="cd", **options)
    generic = pg.fit(_Generic(64, 10), train, method="cd", **options)
    ll_fused, ll_generic = float(fused.log_prob(held).mean()), float(generic.log_prob(held).mean())
    assert ll_fused == pytest.approx(ll_generic, abs=0.5), (ll_fused, ll_generic)
    assert len(fused.history) == len(generic.history) == 10
    assert fused.history[-1] == pytest.approx(generic.history[-1], abs=1.0)


def test_pseudo_likelihood_matches_scikit_learns_with_its_algorithm(digits):
    """The same algorithm as BernoulliRBM (PCD-1, batches of 10, lr 0.1, no momentum, no decay)
    reaches its held-out pseudo-log-likelihood, scored by BernoulliRBM itself (same flips)."""
    train, held = digits

    def pseudo(params: dict[str, np.ndarray]) -> float:
        scorer = BernoulliRBM(n_components=10)
        scorer.components_, scorer.n_features_in_ = np.asarray(params["W"], dtype=np.float64), 64
        scorer.intercept_visible_ = np.asarray(params["visible_bias"], dtype=np.float64)
        scorer.intercept_hidden_ = np.asarray(params["hidden_bias"], dtype=np.float64)
        flips = []  # one flipped unit per image is noisy: the mean over five draws of them
        for draw in range(5):
            scorer.random_state = draw
            flips.append(float(scorer.score_samples(held.numpy().astype(np.float64)).mean()))
        return float(np.mean(flips))

    ours, theirs = [], []
    for seed in range(3):
        with threadpool_limits(1):
            sk = BernoulliRBM(n_components=10, n_iter=10, batch_size=10, random_state=seed).fit(train.numpy())
        theirs.append(
            pseudo(
                {
                    "W": sk.components_,
                    "visible_bias": sk.intercept_visible_,
                    "hidden_bias": sk.intercept_hidden_,
                }
            )
        )
        fit = pg.fit(
            RBM(64, 10),
            train,
            method="cd",
            seed=seed,
            progress=False,
            num_steps=1500,
            subsample_size=10,
            lr=0.1,
            momentum=0.0,
            lr_decay=1.0,
        )
        ours.append(pseudo({k: v.numpy() for k, v in fit.params.items()}))
    # seed to seed the pseudo-likelihood of either side moves by about a nat
    assert np.median(ours) == pytest.approx(np.median(theirs), abs=1.0), (ours, theirs)
    assert np.median(ours) > -25.0  # the 64-pixel independent-Bernoulli model scores about -29 nats


def test_a_learning_rate_that_overflows_the_parameters_is_reported():
    x = _binary(100, 6)
    with pytest.raises(FloatingPointError, match=r"non-finite by step 5; lower lr \(now 1e\+38\)"):
        pg.fit(RBM(6, 3), x, method="cd", seed=0, progress=False, num_steps=100, lr=1e38)
