"""probgen's batched NUTS (``method="mcmc", kernel="nuts_batched"``): analytic posteriors, Pyro's
NUTS on eight schools, and the per-draw statistics (energy recomputed by hand)."""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.distributions import constraints
from pyro.distributions.transforms import biject_to, identity_transform

import probgen as pg
import probgen.inference.mcmc  # noqa: F401  (registers the backend)
from probgen import arviz_bridge
from probgen.inference.chees import BatchedPotential
from probgen.inference.nuts import run_nuts

STATS = ("lp", "energy", "step_size", "n_steps", "tree_depth", "acceptance_rate", "diverging")


def _nuts(model, data, **options):
    options = {"kernel": "nuts_batched", "num_chains": 4, "num_samples": 500, "warmup_steps": 500, **options}
    return pg.fit(model, data, method="mcmc", seed=0, progress=False, **options)


def _ess(x: np.ndarray) -> np.ndarray:
    """Bulk ESS of every element of ``x`` ``(chain, draw, ...)``."""
    return np.asarray(arviz_bridge.ess({"x": x}, method="bulk")["x"], dtype=float)


def _mcse(x: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Monte Carlo standard errors of the mean and of the sd of every element (delta method for
    the sd: the error of the mean of the squared deviations, over twice the sd)."""
    a = x.detach().double().numpy()
    flat = a.reshape(a.shape[0] * a.shape[1], -1)
    sd = flat.std(0)
    dev2 = (a - a.mean((0, 1))) ** 2
    se_mean = sd / np.sqrt(_ess(a).reshape(-1))
    se_var = dev2.reshape(len(flat), -1).std(0) / np.sqrt(_ess(dev2).reshape(-1))
    return se_mean.reshape(a.shape[2:]), (se_var / (2 * sd)).reshape(a.shape[2:])


def _rhat(x: torch.Tensor) -> float:
    return float(np.max(arviz_bridge.rhat({"x": x.detach().numpy()})["x"]))


@pg.model
def gaussian5(data=None):
    """A standard Gaussian in 5-D, float64 (the observed site does not depend on it)."""
    pyro.sample("x", dist.Normal(torch.zeros(5, dtype=torch.float64), 1.0).to_event(1))
    with pyro.plate("data", 3 if data is None else len(data)):
        pyro.sample("obs", dist.Normal(torch.tensor(0.0, dtype=torch.float64), 1.0), obs=data)


def test_standard_gaussian_in_5d_is_exact_and_its_stats_are_complete():
    fit = _nuts(gaussian5, torch.zeros(3, dtype=torch.float64))
    x = fit.posterior["x"]
    assert x.shape == (4, 500, 5) and x.dtype == torch.float64
    se_mean, se_sd = _mcse(x)
    mean, sd = x.mean((0, 1)).numpy(), x.reshape(-1, 5).std(0).numpy()
    assert (np.abs(mean - 0.0) < 4 * se_mean).all(), (mean, se_mean)
    assert (np.abs(sd - 1.0) < 4 * se_sd).all(), (sd, se_sd)
    assert _rhat(x) < 1.01
    assert fit.converged, fit.extras["convergence"]
    stats = fit.sample_stats
    for key in STATS:
        assert stats[key].shape == (4, 500), key
    assert not stats["diverging"].any() and stats["diverging"].dtype == bool
    assert stats["n_steps"].dtype == np.int64 and stats["tree_depth"].dtype == np.int64
    # as arviz.from_numpyro derives it: floor(log2(n_steps)) + 1
    assert (stats["tree_depth"] == np.floor(np.log2(stats["n_steps"])) + 1).all()
    assert 0.7 < stats["acceptance_rate"].mean() < 0.99
    bfmi = arviz_bridge.bfmi(stats["energy"])
    assert np.isfinite(bfmi).all() and (bfmi > 0.7).all() and (bfmi < 1.5).all(), bfmi
    # lp is the log joint of the draw: -|x|^2 / 2 - 5/2 log(2 pi), plus the three N(0, 1) data at 0
    by_hand = -0.5 * (x**2).sum(-1) - (2.5 + 1.5) * math.log(2 * math.pi)
    assert np.allclose(stats["lp"], by_hand.numpy(), rtol=1e-10, atol=1e-10)
    assert set(STATS) <= set(fit.to_arviz().sample_stats.data_vars)
    info = fit.extras["nuts_batched"]
    assert info["vectorised"] and info["step_size"].shape == (4,)


MEAN = torch.tensor([1.0, -2.0])
SD = torch.tensor([2.0, 1.0])
COV = torch.tensor([[4.0, 1.8], [1.8, 1.0]])  # correlation 0.9


@pg.model
def correlated(data=None):
    """A 2-D correlated Gaussian target."""
    pyro.sample("x", dist.MultivariateNormal(MEAN, COV))
    with pyro.plate("data", 3 if data is None else len(data)):
        pyro.sample("obs", dist.Normal(0.0, 1.0), obs=data)


def test_correlated_gaussian_mean_and_sd_are_exact():
    fit = _nuts(correlated, torch.zeros(3), num_samples=1000)
    x = fit.posterior["x"]
    se_mean, se_sd = _mcse(x)
    mean, sd = x.mean((0, 1)), x.reshape(-1, 2).std(0)
    assert ((mean - MEAN).abs().numpy() < 4 * se_mean).all(), (mean, se_mean)
    assert ((sd - SD).abs().numpy() < 4 * se_sd).all(), (sd, se_sd)
    corr = torch.corrcoef(x.reshape(-1, 2).T)[0, 1]
    assert abs(float(corr) - 0.9) < 0.03, corr
    assert _rhat(x) < 1.01
    assert not fit.sample_stats["diverging"].any()
    assert fit.converged, fit.extras["convergence"]


def test_energy_is_the_hamiltonian_of_the_draw_and_its_stored_momentum():
    """run_nuts on a potential with a constrained site: the energy of every draw equals the
    potential computed by hand at the returned position plus the kinetic energy of the momentum
    stored with it."""
    f64 = torch.float64

    def model(data):
        pyro.sample("x", dist.Normal(torch.zeros(3, dtype=f64), 1.0).to_event(1))
        pyro.sample("s", dist.HalfNormal(torch.tensor(1.0, dtype=f64)))

    # constrained -> unconstrained, as initialize_model gives them: s = exp(u)
    transforms = {"x": identity_transform, "s": biject_to(constraints.positive).inv}
    template = {"s": torch.zeros((), dtype=f64), "x": torch.zeros(3, dtype=f64)}
    pot = BatchedPotential(model, None, transforms, template, 3, 0)
    torch.manual_seed(0)
    result = run_nuts(pot, torch.randn(3, 4, dtype=f64), num_warmup=150, num_samples=100, keep_momentum=True)
    u = result.draws  # (chain, draw, [s, x0, x1, x2]): sites in sorted order
    s, x = torch.exp(u[..., 0]), u[..., 1:]
    log_half_normal = math.log(2.0) - 0.5 * math.log(2 * math.pi) - 0.5 * s**2
    log_normal = -0.5 * (x**2).sum(-1) - 1.5 * math.log(2 * math.pi)
    potential = -(log_normal + log_half_normal + u[..., 0])  # + log |ds/du| = u
    assert result.momentum is not None
    kinetic = 0.5 * (result.momentum**2 * result.inverse_mass[:, None, :]).sum(-1)
    assert np.allclose(result.stats["lp"], -potential.numpy(), rtol=1e-10, atol=1e-10)
    assert np.allclose(result.stats["energy"], (potential + kinetic).numpy(), rtol=1e-10, atol=1e-10)
    assert not result.stats["diverging"].any()


class _StandardNormal:
    """The potential of a standard Gaussian and its gradient, by hand, for ``(C, D)`` states."""

    def value_and_grad(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return 0.5 * (z * z).sum(-1), z


def test_long_run_second_and_fourth_moments_are_exact():
    """12,000 draws in 5-D on a potential written by hand: the mean of x**2 over the coordinates
    is 1 and of x**4 is 3, each within 4 Monte Carlo standard errors (taking every valid
    subtree's proposal instead of the biased progressive choice inflates the variance by 5%)."""
    torch.manual_seed(0)
    pot: Any = _StandardNormal()
    result = run_nuts(pot, torch.randn(4, 5, dtype=torch.float64), num_warmup=300, num_samples=3000)
    x = result.draws.numpy()
    for power, exact in ((2, 1.0), (4, 3.0)):
        s = (x**power).mean(-1)  # (chain, draw)
        se = s.std() / math.sqrt(float(_ess(s)))
        assert abs(s.mean() - exact) < 4 * se, (power, s.mean(), se)
    assert not result.stats["diverging"].any()


OFFSETS = torch.tensor([-2.0, 2.0])
X30 = torch.cat((torch.randn(12, generator=torch.Generator().manual_seed(5)) - 1.0,
                 torch.randn(18, generator=torch.Generator().manual_seed(6)) + 3.0))  # fmt: skip


@pg.model
def shifted_mixture(data=None):
    """Two unit-variance components at mu - 2 and mu + 2 (weights 0.4, 0.6); the labels are
    summed out by the batched potential."""
    mu = pyro.sample("mu", dist.Normal(0.0, 5.0))
    with pyro.plate("data", 30 if data is None else len(data)):
        z = pyro.sample("z", dist.Categorical(torch.tensor([0.4, 0.6])))
        pyro.sample("obs", dist.Normal(mu + OFFSETS[z], 1.0), obs=data)


def test_a_mixture_with_its_labels_summed_out_has_the_exact_posterior():
    """The posterior of mu by quadrature on a grid against the draws: mean and sd within 4 MCSE."""
    fit = _nuts(shifted_mixture, X30, num_samples=1000, warmup_steps=300)
    grid = torch.linspace(-5.0, 7.0, 24001, dtype=torch.float64)
    x = X30.double()
    comp = dist.Normal(grid[:, None, None] + OFFSETS.double(), 1.0).log_prob(x[None, :, None])
    log_post = dist.Normal(0.0, 5.0).log_prob(grid) + torch.logsumexp(
        comp + torch.log(torch.tensor([0.4, 0.6], dtype=torch.float64)), -1
    ).sum(-1)
    w = torch.softmax(log_post, 0)
    mean = float((w * grid).sum())
    sd = math.sqrt(float((w * (grid - mean) ** 2).sum()))
    mu = fit.posterior["mu"]
    se_mean, se_sd = _mcse(mu)
    assert abs(float(mu.mean()) - mean) < 4 * float(se_mean), (mu.mean(), mean, se_mean)
    assert abs(float(mu.std()) - sd) < 4 * float(se_sd), (mu.std(), sd, se_sd)
    assert _rhat(mu) < 1.01
    assert fit.extras["nuts_batched"]["vectorised"]


def test_same_seed_same_draws_other_seed_other_draws():
    a = _nuts(correlated, torch.zeros(3), num_samples=20, warmup_steps=30)
    b = _nuts(correlated, torch.zeros(3), num_samples=20, warmup_steps=30)
    c = pg.fit(
        correlated, torch.zeros(3), method="mcmc", kernel="nuts_batched", seed=1, progress=False,
        num_chains=4, num_samples=20, warmup_steps=30,
    )  # fmt: skip
    assert torch.equal(a.posterior["x"], b.posterior["x"])
    assert not torch.equal(a.posterior["x"], c.posterior["x"])


def test_bad_options_are_refused():
    with pytest.raises(ValueError, match="chain_method"):
        _nuts(correlated, torch.zeros(3), chain_method="parallel")
    pot = BatchedPotential(
        lambda d: pyro.sample("x", dist.Normal(0.0, 1.0)), None, {"x": identity_transform},
        {"x": torch.zeros(())}, 2, 0,
    )  # fmt: skip
    with pytest.raises(ValueError, match="shape"):
        run_nuts(pot, torch.zeros(2), num_warmup=1, num_samples=1)
    with pytest.raises(ValueError, match="target_accept_prob"):
        run_nuts(pot, torch.zeros(2, 1), num_warmup=1, num_samples=1, target_accept_prob=1.5)
    with pytest.raises(ValueError, match="zero density"):
        run_nuts(pot, torch.full((2, 1), math.nan), num_warmup=1, num_samples=1)


@pg.model
def funnel(data=None):
    """Neal's funnel in 2-D: y ~ N(0, 3), x | y ~ N(0, exp(y / 2))."""
    y = pyro.sample("y", dist.Normal(0.0, 3.0))
    pyro.sample("x", dist.Normal(0.0, torch.exp(y / 2)))
    with pyro.plate("data", 3 if data is None else len(data)):
        pyro.sample("obs", dist.Normal(0.0, 1.0), obs=data)


@pytest.mark.slow
def test_funnel_scale_variable_has_its_known_marginal_or_the_fit_says_it_has_not():
    """The centred funnel's neck is out of reach of any fixed step size: NUTS either recovers
    y's N(0, 3) marginal or reports divergences (it never claims a wrong answer is converged)."""
    fit = _nuts(funnel, torch.zeros(3), num_samples=1000, warmup_steps=1000, target_accept_prob=0.95)
    y = fit.posterior["y"]
    se_mean, se_sd = _mcse(y)
    exact = abs(float(y.mean())) < 4 * float(se_mean) and abs(float(y.std()) - 3.0) < 4 * float(se_sd)
    if not exact:
        assert not fit.converged
    if not fit.converged:  # flagged: and the flag names its evidence
        assert fit.sample_stats["diverging"].any() or _rhat(y) > 1.01
        assert any("divergent" in p or "R-hat" in p for p in fit.extras["convergence"])
    else:  # a fit that calls itself converged is right, and mixed
        assert exact and _rhat(y) < 1.01


Y8 = torch.tensor([28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0])
S8 = torch.tensor([15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0])


@pg.model
def schools(data=None):
    """Eight schools, non-centred."""
    mu = pyro.sample("mu", dist.Normal(0.0, 5.0))
    tau = pyro.sample("tau", dist.HalfCauchy(5.0))
    with pyro.plate("schools", 8):
        eta = pyro.sample("eta", dist.Normal(0.0, 1.0))
        pyro.sample("obs", dist.Normal(mu + tau * eta, S8), obs=data)


@pytest.mark.slow
def test_eight_schools_matches_pyros_nuts():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reference = pg.fit(
            schools, Y8, method="mcmc", seed=1, progress=False, num_chains=2, num_samples=1000,
            warmup_steps=500,
        )  # fmt: skip
    fit = _nuts(schools, Y8, num_samples=1000)
    # at target_accept_prob=0.8 both samplers diverge now and then on this posterior (Pyro's NUTS
    # too, in benchmarks/nuts_batched.py): a handful of 4000 is tolerated, no more
    assert fit.sample_stats["diverging"].sum() <= 10, fit.extras["convergence"]
    assert fit.extras["nuts_batched"]["compiled"]
    for name in ("mu", "tau", "eta"):
        a, b = fit.posterior[name], reference.posterior[name]
        se = np.sqrt(_mcse(a)[0] ** 2 + _mcse(b)[0] ** 2)
        diff = (a.mean((0, 1)) - b.mean((0, 1))).abs().numpy()
        assert (diff < 4 * se).all(), (name, diff, se)
        assert _rhat(a) < 1.01


class _Gaussian:
    """The potential of ``N(mean, cov)`` and its gradient, by hand, for ``(C, D)`` states (float64)."""

    def __init__(self, mean: torch.Tensor, cov: torch.Tensor) -> None:
        self.mean, self.precision = mean, torch.linalg.inv(cov)

    def value_and_grad(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        r = z - self.mean
        g = r @ self.precision
        return 0.5 * (g * r).sum(-1), g


def test_dense_mass_adapts_to_the_posterior_covariance_and_samples_it():
    """A 2-D Gaussian with correlation 0.99: the adapted dense inverse mass matrix of every chain
    is the posterior covariance (within 25% elementwise, the window's sampling error), and the draws
    have the analytic mean, sds and correlation (4 MCSE); the diagonal metric cannot undo the
    correlation and takes longer trajectories."""
    mean = torch.tensor([1.0, -2.0], dtype=torch.float64)
    cov = torch.tensor([[4.0, 1.98], [1.98, 1.0]], dtype=torch.float64)  # sds 2 and 1, correlation 0.99
    pot: Any = _Gaussian(mean, cov)
    torch.manual_seed(0)
    init = torch.randn(4, 2, dtype=torch.float64)
    dense = run_nuts(pot, init, num_warmup=500, num_samples=1000, dense_mass=True)
    assert dense.inverse_mass.shape == (4, 2, 2)
    assert torch.allclose(dense.inverse_mass, cov.expand(4, 2, 2), rtol=0.25, atol=0.25 * 1.98), (
        dense.inverse_mass
    )
    x = dense.draws
    se_mean, se_sd = _mcse(x)
    assert ((x.mean((0, 1)) - mean).abs().numpy() < 4 * se_mean).all(), (x.mean((0, 1)), se_mean)
    sd = x.reshape(-1, 2).std(0)
    assert ((sd - cov.diagonal().sqrt()).abs().numpy() < 4 * se_sd).all(), (sd, se_sd)
    assert abs(float(torch.corrcoef(x.reshape(-1, 2).T)[0, 1]) - 0.99) < 0.005
    assert _rhat(x) < 1.01 and not dense.stats["diverging"].any()
    torch.manual_seed(0)
    diagonal = run_nuts(pot, init, num_warmup=500, num_samples=1000)
    assert diagonal.inverse_mass.shape == (4, 2)
    assert dense.stats["n_steps"].mean() < 0.5 * diagonal.stats["n_steps"].mean()


def test_dense_mass_energy_is_the_hamiltonian_of_the_draw_and_its_stored_momentum():
    """With a dense metric the energy of every draw is its potential plus ``p' M^-1 p / 2``, the
    momentum stored with it and the chain's adapted inverse mass matrix."""
    cov = torch.tensor([[2.0, 0.9, 0.0], [0.9, 1.0, -0.3], [0.0, -0.3, 0.5]], dtype=torch.float64)
    pot: Any = _Gaussian(torch.zeros(3, dtype=torch.float64), cov)
    torch.manual_seed(1)
    result = run_nuts(
        pot, torch.randn(3, 3, dtype=torch.float64), num_warmup=200, num_samples=100, keep_momentum=True,
        dense_mass=True,
    )  # fmt: skip
    assert result.momentum is not None
    potential, _ = pot.value_and_grad(result.draws)
    p, inv_mass = result.momentum, result.inverse_mass[:, None]  # (C, S, D), (C, 1, D, D)
    kinetic = 0.5 * (p[..., None, :] @ inv_mass @ p[..., :, None])[..., 0, 0]
    assert not torch.allclose(inv_mass, torch.eye(3, dtype=torch.float64))  # adapted, not the start
    assert np.allclose(result.stats["lp"], -potential.numpy(), rtol=1e-10, atol=1e-10)
    assert np.allclose(result.stats["energy"], (potential + kinetic).numpy(), rtol=1e-10, atol=1e-10)


def _funnel_noncentred(data=None):
    """Neal's funnel, non-centred: v ~ N(0, 3), x = exp(v / 2) x_raw with x_raw ~ N(0, 1) in 4-D."""
    f64 = torch.float64
    v = pyro.sample("v", dist.Normal(torch.tensor(0.0, dtype=f64), 3.0))
    x_raw = pyro.sample("x_raw", dist.Normal(torch.zeros(4, dtype=f64), 1.0).to_event(1))
    return torch.exp(v / 2)[..., None] * x_raw


@pytest.mark.slow
def test_dense_mass_funnel_has_its_known_v_marginal_and_agrees_with_pyros_nuts():
    """The non-centred funnel through the batched potential with a dense metric: v's N(0, 3)
    marginal within 4 MCSE, and Pyro's NUTS (``full_mass=True``) on the same model agrees on v's
    mean and sd within 4 combined MCSE."""
    f64 = torch.float64
    template = {"v": torch.zeros((), dtype=f64), "x_raw": torch.zeros(4, dtype=f64)}
    transforms = {"v": identity_transform, "x_raw": identity_transform}
    pot = BatchedPotential(_funnel_noncentred, None, transforms, template, 4, 0)
    torch.manual_seed(0)
    result = run_nuts(
        pot, torch.rand(4, 5, dtype=f64) * 4 - 2, num_warmup=500, num_samples=1000, dense_mass=True
    )
    v = result.draws[..., 0]  # sites in sorted order: v, then x_raw
    se_mean, se_sd = _mcse(v)
    assert abs(float(v.mean())) < 4 * float(se_mean), (v.mean(), se_mean)
    assert abs(float(v.std()) - 3.0) < 4 * float(se_sd), (v.std(), se_sd)
    assert _rhat(v) < 1.01 and not result.stats["diverging"].any()

    pyro.set_rng_seed(0)
    kernel = pyro.infer.NUTS(_funnel_noncentred, full_mass=True)
    with warnings.catch_warnings():  # two chains, one after the other on a one-core machine
        warnings.filterwarnings("ignore", message="num_chains=2 is more than available_cpu")
        mcmc = pyro.infer.MCMC(kernel, num_samples=1000, warmup_steps=500, num_chains=2, disable_progbar=True)
        mcmc.run()
    ref = mcmc.get_samples(group_by_chain=True)["v"]
    ref_se_mean, ref_se_sd = _mcse(ref)
    assert abs(float(v.mean() - ref.mean())) < 4 * math.hypot(float(se_mean), float(ref_se_mean))
    assert abs(float(v.std() - ref.std())) < 4 * math.hypot(float(se_sd), float(ref_se_sd))


def test_dense_mass_is_an_option_of_fit():
    """``pg.fit(..., dense_mass=True)`` adapts a dense matrix per chain (kept in the extras), and
    ChEES, which adapts a diagonal one only, refuses it."""
    fit = _nuts(correlated, torch.zeros(3), num_samples=300, warmup_steps=300, dense_mass=True)
    inv_mass = fit.extras["nuts_batched"]["inverse_mass"]
    assert inv_mass.shape == (4, 2, 2)
    assert torch.allclose(inv_mass, COV.expand(4, 2, 2), rtol=0.3, atol=0.6), inv_mass
    x = fit.posterior["x"]
    assert ((x.mean((0, 1)) - MEAN).abs().numpy() < 4 * _mcse(x)[0]).all()
    with pytest.raises(ValueError, match="dense_mass"):
        pg.fit(correlated, torch.zeros(3), method="mcmc", kernel="chees", dense_mass=True, progress=False)


def _covariates(x, y=None):
    intercept = pyro.sample("intercept", dist.Normal(0.0, 5.0))
    coef = pyro.sample("coef", dist.Normal(0.0, 1.0).expand([x.shape[-1]]).to_event(1))
    scale = pyro.sample("scale", dist.LogNormal(0.0, 1.0))
    with pyro.plate("data", x.shape[0]):
        pyro.sample("y", dist.Normal(intercept + x @ coef, scale), obs=y)  # no chains dim: x @ coef


def test_a_covariate_model_runs_through_vmap_with_each_chains_own_potential_and_gradient():
    from pyro.infer.mcmc.util import initialize_model

    g = torch.Generator().manual_seed(0)
    x = torch.randn(40, 3, generator=g)
    y = 0.5 + x @ torch.tensor([1.0, -2.0, 0.5]) + 0.3 * torch.randn(40, generator=g)
    data = {"x": x, "y": y}

    def model(d):
        return _covariates(d["x"], d["y"])

    pyro.set_rng_seed(0)
    inits, potential_fn, transforms, _ = initialize_model(model, model_args=(data,))
    pot = BatchedPotential(model, data, transforms, inits, 4, 1, one_state=potential_fn)
    points = 0.5 * torch.randn(4, pot.dim, generator=g)
    with pytest.raises(RuntimeError):  # the chains as a batch dim break x @ coef
        pot.batched(points)
    assert pot.use_vmap([points], rtol=1e-5) and pot.mode == "vmap"
    others = torch.randn(4, pot.dim, generator=g)
    for compiled in (False, True):
        if compiled:
            assert pot.compile([points], rtol=1e-5)
        pe, grad = pot.value_and_grad(others)
        for c, z in enumerate(pot.unflatten_rows(others)):
            z = {k: v.detach().requires_grad_() for k, v in z.items()}
            want = potential_fn(z)
            want_grad = torch.autograd.grad(want, [z[k] for k in pot.names])
            assert torch.allclose(pe[c], want, rtol=1e-5, atol=1e-4)
            assert torch.allclose(
                grad[c], torch.cat([w.reshape(-1) for w in want_grad]), rtol=1e-5, atol=1e-4
            )
    fit = pg.fit(pg.model(_covariates), data, method="mcmc", seed=0,
                 progress=False, kernel="nuts_batched", num_chains=2, num_samples=30, warmup_steps=30)  # fmt: skip
    info = fit.extras["nuts_batched"]
    assert info["potential"] == "vmap" and not info["vectorised"]


def test_inductor_is_used_only_when_it_pays_and_reproduces_the_potential(monkeypatch):
    from pyro.infer.mcmc.util import initialize_model

    import probgen.inference._potential as potential_module

    x = torch.randn(30, 2, generator=torch.Generator().manual_seed(1))
    data = {"x": x, "y": x @ torch.tensor([1.0, -1.0])}

    def model(d):
        return _covariates(d["x"], d["y"])

    pyro.set_rng_seed(0)
    inits, potential_fn, transforms, _ = initialize_model(model, model_args=(data,))
    pot = BatchedPotential(model, data, transforms, inits, 3, 1, one_state=potential_fn)
    points = 0.3 * torch.randn(3, pot.dim, generator=torch.Generator().manual_seed(2))
    assert pot.use_vmap([points], rtol=2e-4) and pot.compile([points], rtol=1e-5)
    assert not pot.inductor([points], expected_calls=10) and pot.compiler == "trace"
    assert "not tried" in (pot.compiler_note or "")
    want_pe, want_grad = pot._eager_value_and_grad(points)
    if pot.inductor([points]):  # forced; False (traced kept) where inductor cannot run or is slower
        assert pot.compiler == "inductor"
    assert pot.inductor_tried
    # a second look (compile="auto" looks twice) never compiles again
    monkeypatch.setattr(potential_module, "_inductor_compile", lambda *a: pytest.fail("compiled twice"))
    assert pot.inductor([points]) == (pot.compiler == "inductor")
    pe, grad = pot.value_and_grad(points)
    assert torch.allclose(pe, want_pe, rtol=1e-5, atol=1e-4) and torch.allclose(
        grad, want_grad, rtol=1e-5, atol=1e-4
    )
    with pytest.raises(ValueError, match="compile must be"):
        run_nuts(pot, points, num_warmup=1, num_samples=1, compile="always")


@pytest.mark.slow
def test_inductor_reuses_its_graph_cache_and_the_estimate_knows_a_compiled_graph(monkeypatch, tmp_path):
    from pyro.infer.mcmc.util import initialize_model
    from torch._dynamo.utils import counters

    import probgen.inference._potential as potential_module

    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path))
    x = torch.randn(40, 2, generator=torch.Generator().manual_seed(1))
    points = 0.3 * torch.randn(3, 4, generator=torch.Generator().manual_seed(2))

    def potential(y):
        def model(d):
            return _covariates(d["x"], d["y"])

        data = {"x": x, "y": y}
        pyro.set_rng_seed(0)
        inits, potential_fn, transforms, _ = initialize_model(model, model_args=(data,))
        pot = BatchedPotential(model, data, transforms, inits, 3, 1, one_state=potential_fn)
        assert pot.use_vmap([points], rtol=2e-4) and pot.compile([points], rtol=1e-5)
        return pot

    def compiled(pot, **kw):
        before = dict(counters["inductor"])
        used = pot.inductor([points], **kw)
        change = {
            k: counters["inductor"][k] - before.get(k, 0) for k in ("fxgraph_cache_hit", "fxgraph_cache_miss")
        }
        if used:  # the values are the eager potential's, whatever the cache held
            want_pe, want_grad = pot._eager_value_and_grad(points)
            pe, grad = pot.value_and_grad(points)
            assert torch.allclose(pe, want_pe, rtol=1e-5, atol=1e-4)
            assert torch.allclose(grad, want_grad, rtol=1e-5, atol=1e-4)
        return used, change

    y = x @ torch.tensor([1.0, -1.0])
    first = potential(y)
    used, change = compiled(first)
    if not used:
        pytest.skip(f"inductor cannot compile here: {first.compiler_note}")
    assert change == {"fxgraph_cache_hit": 0, "fxgraph_cache_miss": 1}
    # the same model and data: the estimate knows the graph was compiled (0.6 s instead of 0.6 s
    # and more a node: 12,000 calls of 100 us, 0.7 saved, now pay), and inductor loads it from its cache
    again, other = potential(y), potential(2.0 * y + 1.0)
    # timed: 100 us a call traced (the function the potential runs until inductor's is kept), 50 us compiled
    timing = staticmethod(lambda fn, z: 1e-4 if any(fn is p._compiled for p in (again, other)) else 5e-5)
    monkeypatch.setattr(BatchedPotential, "_time_call", timing)
    saving = 12_000 * 1e-4 * potential_module._INDUCTOR_SAVING
    nodes = len(again._graph.graph.nodes)
    assert potential_module._INDUCTOR_CACHED_S < saving
    assert saving <= potential_module._INDUCTOR_FIXED_S + potential_module._INDUCTOR_NODE_S * nodes
    used, change = compiled(again, expected_calls=12_000)
    assert used and "compiled before" in (again.compiler_note or ""), again.compiler_note
    assert change == {"fxgraph_cache_hit": 1, "fxgraph_cache_miss": 0}
    # other data of the same shapes: the estimate does not count on the cache (its digest holds the
    # data), and what inductor serves (its kernels take the data as inputs) gives the new values
    used, change = compiled(other, expected_calls=12_000)
    assert not used and "compiled before" not in (other.compiler_note or "")
    assert compiled(other)[0]
    assert not torch.allclose(other.value_and_grad(points)[0], again.value_and_grad(points)[0])


def _covariate_potential(num_chains=3, n=30):
    from pyro.infer.mcmc.util import initialize_model

    x = torch.randn(n, 2, generator=torch.Generator().manual_seed(1))
    data = {"x": x, "y": x @ torch.tensor([1.0, -1.0])}

    def model(d):
        return _covariates(d["x"], d["y"])

    pyro.set_rng_seed(0)
    inits, potential_fn, transforms, _ = initialize_model(model, model_args=(data,))
    pot = BatchedPotential(model, data, transforms, inits, num_chains, 1, one_state=potential_fn)
    points = 0.3 * torch.randn(num_chains, pot.dim, generator=torch.Generator().manual_seed(2))
    assert pot.use_vmap([points], rtol=2e-4) and pot.compile([points], rtol=1e-5)
    return pot, points


@pytest.mark.parametrize(
    ("nodes_in_range", "calls", "want_cpp"),
    [
        (False, None, False),
        (False, 10**7, False),
        (True, None, True),
        (True, 50_000, False),
        (True, 200_000, True),
    ],
)
def test_inductor_builds_its_cpp_wrapper_only_where_the_calls_expected_pay_for_it(
    monkeypatch, nodes_in_range, calls, want_cpp
):
    import probgen.inference._potential as potential_module

    pot, points = _covariate_potential()
    nodes = len(pot._graph.graph.nodes)
    monkeypatch.setattr(
        potential_module, "CPP_WRAPPER_NODES", range(nodes if nodes_in_range else nodes + 1, 10**4)
    )
    # a call of 1 s: any number of calls pays for the compile itself
    monkeypatch.setattr(BatchedPotential, "_time_call", staticmethod(lambda fn, z: 1.0))
    asked = []

    def compile_stub(graph, example, cpp_wrapper=False):
        asked.append(cpp_wrapper)
        return (lambda z: pot._compiled(z)), "stub"

    monkeypatch.setattr(potential_module, "_inductor_compile", compile_stub)
    pot.inductor([points], expected_calls=calls)
    # 50,000 calls save 0.5 s with the C++ wrapper (10 us each), less than its 1 s of compiling
    assert asked == [want_cpp]


@pytest.mark.slow
def test_inductor_falls_back_to_its_full_entry_point_where_the_direct_compile_fails(monkeypatch, tmp_path):
    from probgen.inference._inductor import _inductor_compile

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # inductor's imports' deprecation notices
        import torch._inductor.compile_fx as compile_fx_module
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path))
    pot, points = _covariate_potential()
    want_pe, want_grad = pot._eager_value_and_grad(points)

    def broken(*args, **kwargs):
        raise RuntimeError("no direct route")

    monkeypatch.setattr(compile_fx_module, "compile_fx_inner", broken)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the full entry point's deprecation notices
            compiled, how = _inductor_compile(pot._graph, points, cpp_wrapper=True)
    except Exception as e:  # noqa: BLE001  no C++ compiler here: nothing to fall back to
        pytest.skip(f"inductor cannot compile here: {type(e).__name__}: {e}")
    assert how == "Python wrapper through AOT autograd (the direct compile failed: RuntimeError)"
    grad, pe = compiled(points)
    assert torch.allclose(pe, want_pe, rtol=1e-5, atol=1e-4)
    assert torch.allclose(grad, want_grad, rtol=1e-5, atol=1e-4)


def test_inductor_takes_its_vector_instruction_sets_from_the_cpu_flags_without_test_builds(monkeypatch):
    isa = pytest.importorskip("torch._inductor.cpu_vec_isa")
    from probgen.inference._inductor import _instruction_sets_from_cpu_flags

    flags = set(isa.x86_isa_checker())
    if not flags:
        pytest.skip("not an x86 CPU: inductor's own probes are used")
    isa.valid_vec_isa_list.cache_clear()  # as in a fresh process (a later compile lists them again)
    builds = []
    monkeypatch.setattr(isa.VecISA, "check_build", lambda self, code: builds.append(str(self)) or True)
    with _instruction_sets_from_cpu_flags():
        picked = isa.pick_vec_isa()
        assert picked and str(picked) in flags & {"avx512", "avx2"}
        assert picked.nelements(torch.float32) in (8, 16)
    assert builds == []
    # inductor's own list is untouched: computed afresh, with its checks, by a later compile
    assert isa.valid_vec_isa_list.cache_info().currsize == 0
    assert not any(type(v).__bool__ is type(picked).__bool__ for v in isa.supported_vec_isa_list)
