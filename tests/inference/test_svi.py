"""SVI backend: the convergence rule, learning-rate decay, and models with pyro.param sites."""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import pyro.optim
import pytest
import torch
from pyro.ops.indexing import Vindex
from pyro.optim.clipped_adam import ClippedAdam as ClippedAdamOptimizer

import probgen as pg
from probgen.inference.svi import _unsettled

PRIOR_SD = 10.0
X100 = torch.randn(100, generator=torch.Generator().manual_seed(0)) + 3.0


@pg.model
def normal_mean(data=None):
    mu = pyro.sample("mu", dist.Normal(0.0, PRIOR_SD))
    with pyro.plate("data", 100 if data is None else len(data)):
        pyro.sample("obs", dist.Normal(mu, 1.0), obs=data)


def _exact(x: torch.Tensor) -> tuple[float, float]:
    precision = 1 / PRIOR_SD**2 + len(x)
    return float(x.sum()) / precision, math.sqrt(1 / precision)


def _fit(model, data, **options):
    return pg.fit(model, data, method="svi", seed=0, progress=False, **options)


# ------------------------------------------------------------------------------ convergence
def test_a_sane_learning_rate_converges_to_the_exact_posterior():
    fit = _fit(normal_mean, X100, lr=0.01, num_steps=3000)
    assert fit.converged and fit.extras["convergence"] == []
    assert len(fit.history) < 3000  # stopped early
    mean, sd = _exact(X100)  # 3.04 and 0.10; the prior mean 0 fails
    assert fit.posterior["mu"].mean().item() == pytest.approx(mean, abs=0.03)
    assert fit.posterior["mu"].std().item() == pytest.approx(sd, abs=0.02)


def test_a_learning_rate_of_one_bounces_and_is_not_converged():
    fit = _fit(normal_mean, X100, lr=1.0, num_steps=1500)
    assert not fit.converged
    assert len(fit.history) == 1500
    assert fit.extras["convergence"] and all(
        "lower lr" in r or "num_steps" in r for r in fit.extras["convergence"]
    )
    assert any("bouncing" in r or "rose" in r for r in fit.extras["convergence"])


def test_rule_accepts_a_flat_noisy_loss():
    means = [10.0, 5.0, 3.0, 2.02, 2.0, 2.01, 1.99, 2.0, 2.01, 2.0]
    sds = [1.0] * len(means)  # standard error 0.1 per window of 100 steps
    assert _unsettled(means, sds, best=8, window=100, tol=1e-4, at_average=(2.0, 0.05)) == []


def test_rule_names_a_rising_loss():
    means = [10.0, 5.0, 3.0, 2.0, 2.3, 2.6, 2.9, 3.2, 3.5, 3.8]
    problems = _unsettled(means, [1.0] * 10, best=3, window=100, tol=1e-4, at_average=(3.8, 0.05))
    assert any(p.startswith("the window-averaged loss rose from its best 2 to 3.8") for p in problems)
    assert any(p.startswith("the window-averaged loss still moves") for p in problems)


def test_rule_names_a_loss_that_is_flat_only_on_average():
    # steps bounce around the optimum: the loss at the averaged parameters is far lower
    means = [10.0, 5.0, 3.0, 2.0, 2.0, 2.05, 1.95, 2.0, 2.02, 2.0]
    problems = _unsettled(means, [3.0] * 10, best=6, window=100, tol=1e-4, at_average=(1.0, 0.05))
    assert len(problems) == 1 and "bouncing" in problems[0]


def test_a_deterministic_loss_settles_by_tol_alone():
    means = [5.0, 4.0, 3.5, 3.4, 3.39999, 3.39999, 3.39999, 3.39999, 3.39999, 3.39999]
    assert _unsettled(means, [0.0] * 10, best=4, window=100, tol=1e-4, at_average=(3.39999, 0.0)) == []
    means[-1] = 3.3  # still dropping by 3 %: not settled, whatever the noise
    assert _unsettled(means, [0.0] * 10, best=4, window=100, tol=1e-4, at_average=(3.3, 0.0))


def test_without_early_stopping_convergence_is_not_claimed():
    fit = _fit(normal_mean, X100, lr=0.05, num_steps=200, tol=0)
    assert len(fit.history) == 200 and not fit.converged
    assert fit.extras["convergence"] == ["early stopping is off (tol=0), so convergence was not assessed"]


def test_a_run_too_short_to_judge_says_so():
    fit = _fit(normal_mean, X100, lr=0.05, num_steps=250, window=100)
    assert not fit.converged
    assert fit.extras["convergence"] == [
        "only 2 window(s) of 100 steps: too few to judge convergence (it takes 6); raise num_steps or lower window"
    ]


# ------------------------------------------------------------------------------ lr_decay
def _torch_optimisers(optim):
    objs = list(optim.optim_objs.values())
    assert objs
    return [getattr(o, "optimizer", o) for o in objs]  # a scheduler wraps its optimiser


@pytest.mark.parametrize(
    "name, wrapper, torch_class",
    [
        ("clipped_adam", pyro.optim.PyroOptim, ClippedAdamOptimizer),  # its own per-step decay
        ("adam", pyro.optim.PyroLRScheduler, torch.optim.Adam),  # ExponentialLR
    ],
)
def test_lr_decay_keeps_the_chosen_optimiser(name, wrapper, torch_class):
    fit = _fit(normal_mean, X100, optim=name, lr=0.05, lr_decay=0.1, num_steps=150, tol=0)
    assert isinstance(fit.extras["optim"], wrapper)
    for opt in _torch_optimisers(fit.extras["optim"]):
        assert type(opt) is torch_class
        assert opt.param_groups[0]["lr"] == pytest.approx(0.05 * 0.1, rel=1e-6)  # decayed over the run


def test_without_decay_the_optimiser_is_the_plain_one():
    fit = _fit(normal_mean, X100, optim="clipped_adam", lr=0.05, num_steps=20, tol=0)
    assert all(type(o) is ClippedAdamOptimizer for o in _torch_optimisers(fit.extras["optim"]))
    assert all(o.param_groups[0]["lr"] == 0.05 for o in _torch_optimisers(fit.extras["optim"]))


def test_lr_decay_with_an_optimiser_instance_is_refused():
    with pytest.raises(ValueError, match="lr_decay=0.5 applies to an optimiser chosen by name"):
        _fit(normal_mean, X100, optim=pyro.optim.Adam({"lr": 0.01}), lr_decay=0.5, num_steps=10)


# --------------------------------------------------------------------------- pyro.param sites
@pg.model
def param_mean(data=None):
    mu = pyro.param("mu", torch.tensor(0.0))
    with pyro.plate("data", 100 if data is None else len(data)):
        pyro.sample("obs", dist.Normal(mu, 1.0), obs=data)


def test_a_param_mean_is_the_maximum_likelihood_estimate():
    fit = _fit(param_mean, X100, lr=0.05)
    assert set(fit.params) == {"mu"} and fit.posterior is None
    assert fit.params["mu"].item() == pytest.approx(X100.mean().item(), abs=1e-2)  # the MLE; 0 fails
    assert not fit.params["mu"].requires_grad
    assert fit.converged


def test_the_backend_itself_reads_the_param_sites_from_the_store():
    data = param_mean.prepare_data(X100)
    with pyro.get_param_store().scope():  # what probgen.fit does around every backend
        fit = pg.get_backend("svi").fit(param_mean, data, seed=0, progress=False, lr=0.05)
    assert fit.params["mu"].item() == pytest.approx(X100.mean().item(), abs=1e-2)


@pg.model
def param_mean_latent_scale(data=None):
    mu = pyro.param("mu", torch.tensor(0.0))
    scale = pyro.sample("scale", dist.HalfNormal(2.0))
    with pyro.plate("data", 100 if data is None else len(data)):
        pyro.sample("obs", dist.Normal(mu, scale), obs=data)


def test_params_hold_the_param_sites_and_latent_means_but_not_the_guides_parameters():
    fit = _fit(param_mean_latent_scale, X100, lr=0.05, num_steps=1500)
    assert set(fit.params) == {"mu", "scale"}  # no AutoNormal.locs.scale
    # for every scale, the likelihood peaks at the sample mean
    assert fit.params["mu"].item() == pytest.approx(X100.mean().item(), abs=0.05)
    sd = X100.std().item()
    assert fit.params["scale"].item() == pytest.approx(sd, rel=0.15)


@pg.model
def param_mixture(data=None):
    locs = pyro.param("locs", torch.tensor([-1.0, 1.0]))
    with pyro.plate("data", 40 if data is None else len(data)):
        z = pyro.sample("z", dist.Categorical(torch.tensor([0.5, 0.5])))
        pyro.sample("obs", dist.Normal(Vindex(locs)[..., z], 1.0), obs=data)


def test_params_and_enumerated_latents_are_fitted_by_maximum_likelihood():
    g = torch.Generator().manual_seed(1)
    y = torch.cat([torch.randn(24, generator=g) - 3, torch.randn(16, generator=g) + 3])
    assert pg.get_backend("svi").supports(param_mixture, y) is None
    fit = _fit(param_mixture, y, lr=0.1, lr_decay=0.01, num_steps=300, tol=0)
    locs = fit.params["locs"]
    assert set(fit.params) == {"locs"} and fit.posterior is None
    # a maximum of the likelihood is a fixed point of EM: each loc is its responsibility-weighted mean
    resp = torch.softmax(dist.Normal(locs, 1.0).log_prob(y[:, None]), -1)
    fixed_point = (resp * y[:, None]).sum(0) / resp.sum(0)
    assert torch.allclose(locs, fixed_point, atol=1e-2)
    assert locs[0] < -2 and locs[1] > 2


@pg.model
def all_discrete(data=None):
    c = pyro.sample("c", dist.Bernoulli(0.5))
    with pyro.plate("data", 4 if data is None else len(data)):
        pyro.sample("obs", dist.Bernoulli(0.2 + 0.6 * c), obs=data)


def test_an_all_discrete_model_without_params_is_refused():
    reason = pg.get_backend("svi").supports(all_discrete, torch.tensor([1.0, 0.0, 1.0, 1.0]))
    assert reason is not None and "no pyro.param sites" in reason


def test_a_model_s_svi_defaults_apply_and_the_user_s_options_win():
    from probgen.models import CharRNN

    text = "the cat sat on the mat. " * 40
    model = CharRNN(hidden_size=8, embedding_dim=4, seq_len=20)
    prepared = model.prepare_data(text)
    assert model.svi_defaults(prepared)["subsample_size"] == min(64, model.num_items(prepared))
    fit = pg.fit(model, text, method="svi", num_steps=5, tol=0, progress=False)
    assert len(fit.history) == 5  # the user's num_steps, over the model's 2000
    with pytest.raises(ValueError, match="subsample_size must be an int in"):
        pg.fit(model, text, method="svi", num_steps=5, subsample_size=10_000, progress=False)


@pytest.mark.parametrize("lr_decay", [1.0, 0.5])
@pytest.mark.parametrize("schedule", [None, lambda step, n: 1.0])
def test_clip_norm_reaches_pyros_optimiser_whatever_the_schedule(lr_decay, schedule):
    from probgen.inference._svi_optim import build_optim

    optim = build_optim("adam", 0.01, lr_decay, 100, schedule, 2.5)
    assert optim.pt_clip_args == {"clip_norm": 2.5}
    assert build_optim("adam", 0.01, lr_decay, 100, schedule, None).pt_clip_args in ({}, None)
