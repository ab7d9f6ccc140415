"""NUTS/HMC backend: starting points, convergence rule, sampler statistics, global state."""

from __future__ import annotations

import math

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import NUTS

import probgen as pg
import probgen.inference.mcmc as mcmc_backend
from probgen.errors import ModelNotSupportedError
from probgen.inference._mcmc_starts import INIT_JITTER
from probgen.inference.mcmc import _MAX_RHAT, _MIN_ESS_PER_CHAIN, _convergence_problems
from probgen.model import GenerativeModel

PRIOR_SD, NOISE_SD = 10.0, 1.0
X20 = torch.randn(20, generator=torch.Generator().manual_seed(0)) + 3.0


@pg.model
def normal_mean(data=None):
    mu = pyro.sample("mu", dist.Normal(0.0, PRIOR_SD))
    with pyro.plate("data", 20 if data is None else len(data)):
        pyro.sample("obs", dist.Normal(mu, NOISE_SD), obs=data)


def _exact(x: torch.Tensor) -> tuple[float, float]:
    precision = 1 / PRIOR_SD**2 + len(x) / NOISE_SD**2
    return float(x.sum()) / NOISE_SD**2 / precision, math.sqrt(1 / precision)


@pg.model
def two_modes(data=None):
    """mu**2 is identified, the sign of mu is not: modes at +-2, far apart."""
    mu = pyro.sample("mu", dist.Normal(0.0, 3.0))
    with pyro.plate("data", 5 if data is None else len(data)):
        pyro.sample("obs", dist.Normal(mu**2, 1.0), obs=data)


@pg.model
def noise_scale(data=None):
    """A positive site: NUTS samples log(sigma), so lp carries the Jacobian log(sigma)."""
    sigma = pyro.sample("sigma", dist.HalfNormal(2.0))
    with pyro.plate("data", 10 if data is None else len(data)):
        pyro.sample("obs", dist.Normal(0.0, sigma), obs=data)


Y8 = torch.tensor([28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0])
S8 = torch.tensor([15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0])


@pg.model
def schools(data=None):
    """Centred eight schools: a funnel between tau and theta."""
    mu = pyro.sample("mu", dist.Normal(0.0, 5.0))
    tau = pyro.sample("tau", dist.HalfCauchy(5.0))
    with pyro.plate("schools", 8):
        theta = pyro.sample("theta", dist.Normal(mu, tau))
        pyro.sample("obs", dist.Normal(theta, S8), obs=data)


class _Spy(mcmc_backend.PyroMCMC):
    """Pyro's MCMC, keeping every runner and its kernel's public logging after the last draw."""

    runners: list[_Spy] = []

    def __init__(self, kernel, *args, hook_fn=None, **kwargs):
        self.last_logging: dict[str, str] = {}

        def hook(k, params, stage, i):
            if hook_fn is not None:
                hook_fn(k, params, stage, i)
            self.last_logging = dict(k.logging())

        super().__init__(kernel, *args, hook_fn=hook, **kwargs)
        self.kernel_ = kernel
        _Spy.runners.append(self)


@pytest.fixture
def spy(monkeypatch):
    _Spy.runners = []
    monkeypatch.setattr(mcmc_backend, "PyroMCMC", _Spy)
    return _Spy.runners


def _fit(model, data, **options):
    return pg.fit(model, data, method="mcmc", seed=0, progress=False, **options)


# --------------------------------------------------------------------------- starting points
def test_chains_start_apart_and_the_posterior_is_exact():
    fit = _fit(normal_mean, X20, num_samples=1000, warmup_steps=300, num_chains=2)
    starts = fit.extras["init"]["mu"]
    assert starts.shape == (2,)
    assert starts[0] != starts[1]
    assert fit.posterior["mu"][0, 0] != fit.posterior["mu"][1, 0]
    mean, sd = _exact(X20)  # 3.02 and 0.22; the prior mean 0 and the starts (in [-2, 2]) fail
    assert fit.posterior["mu"].mean().item() == pytest.approx(mean, abs=0.04)
    assert fit.posterior["mu"].std().item() == pytest.approx(sd, abs=0.03)
    assert fit.converged and fit.extras["convergence"] == []


def test_a_dict_start_is_kept_for_chain_0_and_jittered_for_the_others():
    fit = _fit(noise_scale, X20[:10], init={"sigma": 3.0}, num_samples=5, warmup_steps=5, num_chains=3)
    starts = fit.extras["init"]["sigma"]
    assert starts[0].item() == pytest.approx(3.0, abs=1e-6)
    moved = (starts[1:].log() - math.log(3.0)).abs()  # jitter is uniform in the unconstrained space
    assert (moved > 0).all() and (moved <= INIT_JITTER).all()
    assert starts[1] != starts[2]


class _Hooked(GenerativeModel):
    """A family-like model whose init_params hook gives a start that depends on the generator."""

    def __init__(self):
        self.calls: list[int] = []

    def model(self, data=None):
        mu = pyro.sample("mu", dist.Normal(0.0, PRIOR_SD))
        with pyro.plate("data", 20 if data is None else len(data)):
            pyro.sample("obs", dist.Normal(mu, NOISE_SD), obs=data)

    def init_params(self, data, *, init, generator):
        self.calls.append(generator.initial_seed())
        return {"mu": torch.tensor(10.0) + torch.rand((), generator=generator)}


def test_an_init_params_hook_is_asked_once_per_chain_with_its_own_generator():
    model = _Hooked()
    fit = pg.fit(model, X20, method="mcmc", seed=4, progress=False, num_samples=5, warmup_steps=5)
    assert model.calls == [4, 5, 6, 7]  # the default four chains
    chain0 = 10.0 + torch.rand((), generator=torch.Generator().manual_seed(4))
    assert fit.extras["init"]["mu"][0].item() == pytest.approx(chain0.item(), abs=1e-6)
    assert fit.extras["init"]["mu"][1] != fit.extras["init"]["mu"][0]


# ------------------------------------------------------------------------------ convergence
def _iid(chains, draws, seed=0, shift=(0.0, 0.0)):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(chains, draws, generator=g)
    return x + torch.tensor(shift)[:chains, None]


def test_rule_passes_independent_chains_of_one_distribution():
    assert _convergence_problems({"a": _iid(2, 1000)}, 0, target_accept_prob=0.8) == []


def test_rule_names_chains_that_disagree():
    problems = _convergence_problems({"a": _iid(2, 1000, shift=(0.0, 0.5))}, 0, target_accept_prob=0.8)
    rhat = [p for p in problems if p.startswith("site 'a': split R-hat")]
    assert len(rhat) == 1 and f"> {_MAX_RHAT}" in rhat[0]


def test_rule_names_a_small_bulk_ess_per_chain():
    # AR(1) with coefficient 0.95: ESS is about N (1 - 0.95) / (1 + 0.95), near 26 per 1000 draws
    g = torch.Generator().manual_seed(1)
    eps = torch.randn(2, 1000, generator=g)
    x = torch.zeros(2, 1000)
    for t in range(1, 1000):
        x[:, t] = 0.95 * x[:, t - 1] + eps[:, t]
    problems = _convergence_problems({"b": x}, 0, target_accept_prob=0.8)
    assert any(p.startswith("site 'b': bulk ESS") and f"< {2 * _MIN_ESS_PER_CHAIN}" in p for p in problems)


def test_rule_names_divergences_and_skips_constant_elements():
    chol = torch.zeros(2, 500, 2, 2)
    chol[..., 0, 0] = 1.0  # fixed entries of a Cholesky factor: never random
    chol[..., 1, 0] = _iid(2, 500, seed=2)
    chol[..., 1, 1] = 1.0
    problems = _convergence_problems({"L": chol}, 3, target_accept_prob=0.9)
    assert problems == [
        "3 divergent transition(s) after warmup; raise target_accept_prob (now 0.9) or reparameterise the model"
    ]


def test_a_short_run_on_a_two_mode_posterior_is_not_converged():
    fit = _fit(two_modes, torch.full((5,), 4.0), num_samples=20, warmup_steps=10, num_chains=2)
    assert (fit.extras["init"]["mu"].sign() == torch.tensor([-1.0, 1.0])).all()  # one start per mode
    assert not fit.converged
    reasons = fit.extras["convergence"]
    assert any(r.startswith("site 'mu': split R-hat") for r in reasons)
    assert any(r.startswith("site 'mu': bulk ESS") for r in reasons)


# ---------------------------------------------------------------------- sampler statistics
def test_divergences_and_step_size_are_pyros_own(spy):
    fit = _fit(
        schools,
        Y8,
        num_samples=60,
        warmup_steps=40,
        target_accept_prob=0.5,  # 46-65 divergences in 120 draws over seeds 0-3 (0.6: 0-1)
        max_tree_depth=4,
        kernel="pyro_nuts",
        num_chains=2,
    )
    assert len(spy) == 2
    total = 0
    for c, runner in enumerate(spy):
        own = runner.diagnostics()["divergences"]["chain 0"]
        assert np.flatnonzero(fit.sample_stats["diverging"][c]).tolist() == list(own)
        total += len(own)
        assert np.all(fit.sample_stats["step_size"][c] == runner.kernel_.step_size)  # fixed after warmup
    assert total > 0  # the funnel diverges at this target: the comparison is not vacuous
    assert any("divergent transition" in r for r in fit.extras["convergence"])


def test_tree_depth_is_the_depth_of_pyros_own_tree(monkeypatch):
    depths: list[int] = []
    state = {"depth": 0}
    build, sample = NUTS._build_tree, NUTS.sample

    def counted_build(self, z, r, z_grads, log_slice, direction, tree_depth, energy):
        state["depth"] = max(state["depth"], tree_depth + 1)
        return build(self, z, r, z_grads, log_slice, direction, tree_depth, energy)

    def counted_sample(self, params):
        state["depth"] = 0
        out = sample(self, params)
        depths.append(state["depth"])
        return out

    monkeypatch.setattr(NUTS, "_build_tree", counted_build)
    monkeypatch.setattr(NUTS, "sample", counted_sample)
    warmup, draws, max_depth = 30, 40, 4
    fit = _fit(
        schools,
        Y8,
        num_samples=draws,
        warmup_steps=warmup,
        max_tree_depth=max_depth,
        kernel="pyro_nuts",
        num_chains=2,
    )
    per_chain = np.asarray(depths).reshape(2, warmup + draws)[:, warmup:]
    depth, steps = fit.sample_stats["tree_depth"], fit.sample_stats["n_steps"]
    assert depth.dtype == np.int64 and np.array_equal(depth, per_chain)
    assert ((depth >= 1) & (depth <= max_depth)).all() and (depth == max_depth).any()
    assert ((2 ** (depth - 1) <= steps) & (steps <= 2**depth - 1)).all()


def test_lp_is_the_log_joint_in_the_unconstrained_space():
    x = X20[:10] - 3.0
    fit = _fit(noise_scale, x, num_samples=30, warmup_steps=30)
    sigma = fit.posterior["sigma"].double()
    log_joint = dist.HalfNormal(2.0).log_prob(sigma) + dist.Normal(0.0, sigma[..., None]).log_prob(
        x.double()
    ).sum(-1)
    jacobian = sigma.log()  # d sigma / d log(sigma)
    np.testing.assert_allclose(fit.sample_stats["lp"], (log_joint + jacobian).numpy(), atol=1e-4)
    np.testing.assert_array_equal(fit.history, fit.sample_stats["lp"].reshape(-1))


def test_acceptance_rate_averages_to_pyros_running_mean_and_tracks_the_target(spy):
    fits = {}
    for target in (0.6, 0.9):
        spy.clear()
        fits[target] = fit = _fit(
            normal_mean, X20, num_samples=150, warmup_steps=150, target_accept_prob=target
        )
        acc = fit.sample_stats["acceptance_rate"]
        assert ((acc >= 0) & (acc <= 1)).all()
        for c, runner in enumerate(spy):  # Pyro's own mean acceptance probability, to 3 decimals
            assert acc[c].mean() == pytest.approx(float(runner.last_logging["acc. prob"]), abs=6e-4)
        assert acc.mean() == pytest.approx(target, abs=0.15)
    assert fits[0.9].sample_stats["acceptance_rate"].mean() > fits[0.6].sample_stats["acceptance_rate"].mean()


def test_hmc_acceptance_rate_is_the_metropolis_probability():
    fit = _fit(
        normal_mean, X20, kernel="hmc", num_steps=4, num_samples=300, warmup_steps=100, target_accept_prob=0.6
    )
    acc = fit.sample_stats["acceptance_rate"][:, 1:]
    mu = fit.posterior["mu"].numpy()
    moved = mu[:, 1:] != mu[:, :-1]
    # Pyro keeps the trajectory length (initial step size x num_steps) as the step size adapts
    expected_steps = np.maximum(1, (1.0 * 4 / fit.sample_stats["step_size"]).astype(int))
    # az.from_numpyro derives tree_depth from n_steps for every kernel: floor(log2(n)) + 1
    np.testing.assert_array_equal(
        fit.sample_stats["tree_depth"], np.floor(np.log2(fit.sample_stats["n_steps"])) + 1
    )
    np.testing.assert_array_equal(fit.sample_stats["n_steps"], expected_steps)
    # a draw that stayed was rejected, which needs an acceptance probability below 1
    assert (acc[~moved] < 1 - 1e-6).all()
    # moves are Bernoulli(acceptance probability): their count matches the sum of probabilities
    spread = math.sqrt(float((acc * (1 - acc)).sum()))
    assert abs(moved.sum() - acc.sum()) <= 4 * spread + 1
    assert 0 < moved.mean() < 1


# -------------------------------------------------------------------------------- global state
def _threads_seen():
    seen: list[int] = []

    @pg.model
    def watched(data=None):
        seen.append(torch.get_num_threads())
        mu = pyro.sample("mu", dist.Normal(0.0, PRIOR_SD))
        with pyro.plate("data", 20 if data is None else len(data)):
            pyro.sample("obs", dist.Normal(mu, NOISE_SD), obs=data)

    return watched, seen


def test_threads_are_left_alone_by_default_and_restored_when_set():
    before = torch.get_num_threads()
    model, seen = _threads_seen()
    _fit(model, X20, num_samples=5, warmup_steps=5)
    assert set(seen) == {before} and torch.get_num_threads() == before
    model, seen = _threads_seen()
    _fit(model, X20, num_samples=5, warmup_steps=5, num_threads=before + 1)
    assert seen[-1] == before + 1 and torch.get_num_threads() == before


def test_threads_are_restored_when_sampling_fails():
    before = torch.get_num_threads()
    calls = {"n": 0}

    @pg.model
    def breaks(data=None):
        calls["n"] += 1
        if calls["n"] > 30:
            raise RuntimeError("model broke")
        mu = pyro.sample("mu", dist.Normal(0.0, PRIOR_SD))
        with pyro.plate("data", 20 if data is None else len(data)):
            pyro.sample("obs", dist.Normal(mu, NOISE_SD), obs=data)

    with pytest.raises(RuntimeError, match="model broke"):
        _fit(breaks, X20, num_samples=50, warmup_steps=50, num_threads=before + 1)
    assert torch.get_num_threads() == before


# ---------------------------------------------------------------------------------- refusals
@pg.model
def param_mean(data=None):
    mu = pyro.param("mu", torch.tensor(0.0))
    scale = pyro.sample("scale", dist.HalfNormal(1.0))
    with pyro.plate("data", 20 if data is None else len(data)):
        pyro.sample("obs", dist.Normal(mu, scale), obs=data)


def test_pyro_param_sites_are_refused_with_their_names():
    with pytest.raises(
        ModelNotSupportedError, match=r"pyro.param site\(s\) 'mu'.*give them priors.*'svi' or 'em'"
    ):
        _fit(param_mean, X20)
