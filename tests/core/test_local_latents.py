"""Models with a continuous latent per item (probabilistic PCA, eight schools): scores with the
latents integrated out, against closed-form marginal likelihoods."""

from __future__ import annotations

import math

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from sklearn.datasets import load_digits

import probgen as pg
from probgen.testing import check_model

D, K = 64, 4


def _digits() -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.as_tensor(load_digits().data / 16.0, dtype=torch.float32)  # 1,797 scanned digits, 8x8
    return x[:1200], x[1200:1500]


def ppca(data=None):
    """Probabilistic PCA: x = W z + mu + sigma eps, z ~ N(0, I); W, mu, sigma fitted by maximum likelihood."""
    W = pyro.param("W", lambda: 0.1 * torch.randn(D, K))
    mu = pyro.param("mu", lambda: torch.zeros(D))
    sigma = pyro.param("sigma", lambda: torch.tensor(1.0), constraint=dist.constraints.positive)
    with pyro.plate("data", 100 if data is None else len(data)):
        z = pyro.sample("z", dist.Normal(0.0, 1.0).expand([K]).to_event(1))
        return pyro.sample("obs", dist.Normal(z @ W.T + mu, sigma).to_event(1), obs=data)


class Encoder(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(D, 2 * K)

    def forward(self, x):
        h = self.linear(x)
        return h[..., :K], torch.nn.functional.softplus(h[..., K:]) + 1e-3


def module_guide(encoder):
    def guide(data=None):
        pyro.module("encoder", encoder)
        with pyro.plate("data", len(data)):
            loc, scale = encoder(data)
            pyro.sample("z", dist.Normal(loc, scale).to_event(1))

    return guide


def param_guide(data=None):
    """An amortised linear encoder written with pyro.param (re-initialised by every fit)."""
    w = pyro.param("enc_w", lambda: torch.zeros(D, 2 * K))
    b = pyro.param("enc_b", lambda: torch.zeros(2 * K))
    with pyro.plate("data", len(data)):
        h = data @ w + b
        pyro.sample("z", dist.Normal(h[..., :K], torch.nn.functional.softplus(h[..., K:]) + 1e-3).to_event(1))


def exact_ppca(params) -> dist.MultivariateNormal:
    W, mu, s = (params[k].double() for k in ("W", "mu", "sigma"))
    return dist.MultivariateNormal(mu, W @ W.T + s**2 * torch.eye(len(mu), dtype=torch.float64))


def ppca_marginal_by_hand(params, data):
    return exact_ppca(params).log_prob(data.double())


@pytest.fixture(scope="module")
def ppca_fit():
    torch.manual_seed(0)
    train, test = _digits()
    model = pg.model(ppca, module_guide(Encoder()))
    fit = pg.fit(model, train, method="svi", seed=0, num_steps=1500, lr=0.02, progress=False)
    return fit, train, test


def test_held_out_ppca_scores_match_the_exact_marginal_likelihood(ppca_fit):
    fit, train, test = ppca_fit
    exact = exact_ppca(fit.params)
    lp, se = fit.log_prob(test, return_se=True)
    truth = exact.log_prob(test.double())
    gap = lp.double() - truth
    assert abs(float(gap.mean())) < 0.1  # within 0.1 nats per item
    assert float(gap.mean()) < 2 * float(se.double().pow(2).sum().sqrt()) / len(gap)  # never above on average
    assert float(se.mean()) < 0.1
    # the training items: the marginal too, unless asked for the fitted latents
    lp_train = fit.log_prob()
    assert abs(float(lp_train.double().mean() - exact.log_prob(train.double()).mean())) < 0.1
    conditional = fit.log_prob(local="conditional")
    assert float(conditional.mean()) > float(lp_train.mean()) + 1.0  # conditional scores run above
    again = fit.log_prob(test)
    assert torch.equal(again, lp)  # seeded: scores repeat
    # BIC's log-likelihood integrates z out too; k counts W, mu and sigma, never the per-item z
    total = float(exact.log_prob(train.double()).sum())
    assert abs(fit.log_likelihood() - total) < 0.1 * len(train)
    assert fit.num_parameters() == D * K + D + 1


def test_new_items_draw_their_latents_from_the_prior(ppca_fit):
    fit, _, _ = ppca_fit
    x = fit.sample(20000, seed=1).double()
    assert x.shape == (20000, D)
    exact = exact_ppca(fit.params)
    cov = torch.cov(x.T)
    assert torch.allclose(x.mean(0), exact.loc, atol=0.02)
    assert float((cov - exact.covariance_matrix).abs().max()) < 0.03


def test_scoring_choices_are_checked(ppca_fit):
    fit, _, test = ppca_fit
    with pytest.raises(ValueError, match="local"):
        fit.log_prob(test, local="plugin")
    with pytest.raises(ValueError, match="new items have none"):
        fit.log_prob(test, local="conditional")
    with pytest.raises(ValueError, match="num_particles"):
        fit.log_prob(test, num_particles=0)


def test_autoguide_fit_integrates_with_the_prior_as_proposal():
    """An AutoNormal guide has per-item parameters of the training items: not a proposal for
    new items, so the prior is; still within its stated error of the exact marginal."""
    rng = np.random.default_rng(3)
    W = rng.normal(size=(3, 1))
    x = (rng.normal(size=(200, 1)) @ W.T + 0.5 * rng.normal(size=(200, 3))).astype(np.float32)

    def small_ppca(data=None):
        w = pyro.param("W", lambda: 0.1 * torch.ones(3, 1))
        s = pyro.param("sigma", lambda: torch.tensor(1.0), constraint=dist.constraints.positive)
        with pyro.plate("data", 10 if data is None else len(data)):
            z = pyro.sample("z", dist.Normal(0.0, 1.0).expand([1]).to_event(1))
            pyro.sample("obs", dist.Normal(z @ w.T, s).to_event(1), obs=data)

    fit = pg.fit(small_ppca, x[:150], method="svi", seed=0, num_steps=1500, progress=False)
    new = torch.as_tensor(x[150:])
    lp, se = fit.log_prob(new, return_se=True, num_particles=1024)
    w, s = fit.params["W"].double(), fit.params["sigma"].double()
    truth = dist.MultivariateNormal(
        torch.zeros(3, dtype=torch.float64), w @ w.T + s**2 * torch.eye(3)
    ).log_prob(new.double())
    assert bool(((lp.double() - truth).abs() <= 5 * se.double() + 1e-3).all())


SIGMA8 = torch.tensor([15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0])
Y8 = [28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0]


def eight_schools(data=None):
    mu = pyro.sample("mu", dist.Normal(0.0, 5.0))
    tau = pyro.sample("tau", dist.HalfCauchy(5.0))
    with pyro.plate("schools", 8):  # non-centred: theta_j = mu + tau * eta_j
        eta = pyro.sample("eta", dist.Normal(0.0, 1.0))
        pyro.sample("obs", dist.Normal(mu + tau * eta, SIGMA8), obs=data)


def _normal_lp(x, loc, scale):
    return -0.5 * ((x - loc) / scale) ** 2 - torch.log(scale) - 0.5 * math.log(2 * math.pi)


def eight_conditional(params, y):
    p = {k: v.double() for k, v in params.items()}
    return _normal_lp(torch.as_tensor(y).double(), p["mu"] + p["tau"] * p["eta"], SIGMA8.double())


def eight_marginal(params, y):
    """eta_j integrated out: y_j ~ N(mu, sqrt(sigma_j^2 + tau^2))."""
    p = {k: v.double() for k, v in params.items()}
    return _normal_lp(torch.as_tensor(y).double(), p["mu"], torch.sqrt(SIGMA8.double() ** 2 + p["tau"] ** 2))


def test_eight_schools_marginal_and_conditional_scores():
    """MCMC draws of mu, tau and eta: the marginal integrates eta out (prior proposal, no
    guide), the conditional reads the fitted theta; both against closed forms per draw."""
    fit = pg.fit(eight_schools, Y8, method="mcmc", seed=0, num_samples=150, warmup_steps=150, progress=False)
    sets = fit._draw_params()
    lp, se = fit.log_prob(return_se=True)
    exact = torch.stack([eight_marginal(p, Y8) for p in sets])
    expect = torch.logsumexp(exact, 0) - math.log(len(sets))
    assert bool(((lp.double() - expect).abs() <= 5 * se.double() + 1e-3).all())
    assert float(se.max()) < 0.05
    hand = torch.stack([eight_conditional(p, Y8) for p in sets])
    expect = torch.logsumexp(hand, 0) - math.log(len(sets))
    torch.testing.assert_close(fit.log_prob(local="conditional").double(), expect, rtol=1e-4, atol=1e-4)
    # ArviZ's pointwise log-likelihood is the conditional one, draw by draw
    ll = fit.pointwise_log_likelihood().reshape(len(sets), -1).double()
    torch.testing.assert_close(ll, hand, rtol=1e-4, atol=1e-4)


def test_ppca_with_a_param_encoder_passes_the_contract():
    train, _ = _digits()
    report = check_model(
        pg.model(ppca, param_guide),
        train[:300].numpy(),
        marginal_by_hand=ppca_marginal_by_hand,
        options={"svi": {"num_steps": 600, "lr": 0.02}},
    )
    assert set(report) == {"svi"}
    assert report["svi"]["marginal log_prob"] == "ok"
