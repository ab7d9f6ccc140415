"""ArviZ export: dims named after the plates, coords from the data, and every group ArviZ's own
converters give (posterior, sample_stats as ``az.from_numpyro`` names them, log_likelihood,
posterior_predictive, prior, prior_predictive, observed_data, constant_data)."""

from __future__ import annotations

import math

import arviz as az
import matplotlib
import numpy as np
import pandas as pd
import pyro
import pyro.distributions as dist
import pytest
import torch
from scipy import stats

import probgen as pg
from probgen import arviz_bridge
from probgen.arviz_bridge import LEGACY, group_names
from probgen.inference import _pyro_kernels as pyro_kernels
from probgen.models import GaussianMixture, HiddenMarkovModel
from tests.core.models import normal_normal

matplotlib.use("Agg")

#: The sample_stats fields of ``az.from_numpyro`` for NUTS with the extra fields recorded
#: (potential_energy -> lp, energy, num_steps -> n_steps and tree_depth, accept_prob ->
#: acceptance_rate, adapt_state.step_size -> step_size, diverging).
NUMPYRO_FIELDS = {"lp", "energy", "step_size", "n_steps", "tree_depth", "acceptance_rate", "diverging"}

Y8 = torch.tensor([28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0])
S8 = torch.tensor([15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0])


def schools(data=None):
    """Non-centred eight schools."""
    mu = pyro.sample("mu", dist.Normal(0.0, 5.0))
    tau = pyro.sample("tau", dist.HalfCauchy(5.0))
    with pyro.plate("schools", 8):
        eta = pyro.sample("eta", dist.Normal(0.0, 1.0))
        pyro.sample("obs", dist.Normal(mu + tau * eta, S8), obs=data)


def regression(x, y=None):
    a = pyro.sample("a", dist.Normal(0.0, 10.0))
    b = pyro.sample("b", dist.Normal(0.0, 10.0))
    s = pyro.sample("s", dist.HalfNormal(5.0))
    with pyro.plate("data", x.shape[0]):
        return pyro.sample("y", dist.Normal(a + b * x, s), obs=y)


def dims(idata, group, var):
    return tuple(idata[group][var].dims)


# ----------------------------------------------------------------------------- mixture
@pytest.fixture(scope="module")
def faithful():
    return pg.datasets.load_old_faithful()


@pytest.fixture(scope="module")
def mixture_fit(faithful):
    return pg.fit(GaussianMixture(2), faithful, method="em", seed=0, progress=False)


@pytest.fixture(scope="module")
def mixture_idata(mixture_fit):
    return mixture_fit.to_arviz(posterior_predictive=True, prior=True, num_prior_samples=50)


def test_mixture_dims_are_named_after_plates_and_features(faithful, mixture_idata):
    idata = mixture_idata
    assert set(group_names(idata)) == {
        "posterior",
        "posterior_predictive",
        "log_likelihood",
        "sample_stats",
        "prior",
        "prior_predictive",
        "observed_data",
    }
    assert dims(idata, "posterior", "weights") == ("chain", "draw", "components")
    assert dims(idata, "posterior", "locs") == ("chain", "draw", "components", "features")
    assert dims(idata, "log_likelihood", "obs") == ("chain", "draw", "data")
    assert dims(idata, "observed_data", "obs") == ("data", "features")
    assert dims(idata, "posterior_predictive", "obs") == ("chain", "draw", "data", "features")
    assert dims(idata, "prior", "locs") == ("chain", "draw", "components", "features")
    assert dims(idata, "prior_predictive", "obs") == ("chain", "draw", "data", "features")
    for group in ("posterior", "observed_data", "posterior_predictive", "prior_predictive"):
        assert list(idata[group].coords["features"].values) == ["eruptions", "waiting"]
    np.testing.assert_array_equal(idata.observed_data["obs"].values, faithful.to_numpy())
    # a location is selected by column name, as in a labelled table
    waiting = idata.posterior["locs"].sel(features="waiting").values.reshape(-1)
    assert 50 < waiting.min() and waiting.max() < 90


def test_mixture_log_likelihood_matches_scipy(faithful, mixture_fit, mixture_idata):
    p = {k: v.numpy() for k, v in mixture_fit.params.items()}
    x = faithful.to_numpy()
    cov = [
        np.diag(p["scale"][k]) @ p["corr_cholesky"][k] @ p["corr_cholesky"][k].T @ np.diag(p["scale"][k])
        for k in range(2)
    ]
    by_hand = np.logaddexp(
        *[
            np.log(p["weights"][k]) + stats.multivariate_normal(p["locs"][k], cov[k]).logpdf(x)
            for k in range(2)
        ]
    )
    ll = mixture_idata.log_likelihood["obs"].values
    assert ll.shape == (1, 1, len(x))
    np.testing.assert_allclose(ll[0, 0], by_hand, rtol=1e-10)
    # the EM history (the objective per iteration) ends at the total log-likelihood
    history = mixture_idata.sample_stats["log_likelihood"]
    assert history.dims == ("iteration",)
    assert float(history[-1]) == pytest.approx(by_hand.sum(), rel=1e-6)


def test_mixture_prior_draws_follow_the_prior(mixture_idata):
    w = mixture_idata.prior["weights"].values
    assert w.shape == (1, 50, 2)
    np.testing.assert_allclose(w.sum(-1), 1.0, rtol=1e-12)
    pp = mixture_idata.prior_predictive["obs"].values
    assert pp.shape == (1, 50, 272, 2) and np.isfinite(pp).all()
    # prior draws differ from each other (not the fit's estimate repeated)
    assert np.unique(mixture_idata.prior["locs"].values[0, :, 0, 0]).size == 50


def test_plot_ppc_keeps_features_apart(mixture_idata):
    import matplotlib.pyplot as plt

    axes = az.plot_ppc(mixture_idata, flatten=["data"], num_pp_samples=1, random_seed=0)
    axes = np.atleast_1d(axes).ravel()
    assert len(axes) == 2  # one density per feature, not eruption and waiting minutes pooled
    labels = [ax.get_xlabel() for ax in axes]
    assert labels == ["obs\neruptions", "obs\nwaiting"]
    plt.close("all")


def test_point_fit_says_why_loo_does_not_apply(mixture_fit, mixture_idata):
    assert "point_estimate" in mixture_idata.log_likelihood.attrs
    assert "BIC" in mixture_idata.log_likelihood.attrs["point_estimate"]
    with pytest.raises(ValueError, match="point fits"):
        pg.compare({"a": mixture_fit, "b": mixture_fit}, ic="loo")
    table = pg.compare({"a": mixture_fit, "b": mixture_fit})  # ranked by BIC, as designed
    assert "bic" in table.columns


def test_feature_names_survive_save_and_load(mixture_fit, tmp_path):
    path = tmp_path / "fit.npz"
    mixture_fit.save(path)
    back = pg.load(path)
    idata = back.to_arviz()
    assert list(idata.posterior.coords["features"].values) == ["eruptions", "waiting"]


def test_to_arviz_refuses_bad_options(mixture_fit):
    with pytest.raises(ValueError, match="num_prior_samples"):
        mixture_fit.to_arviz(prior=True, num_prior_samples=0)
    with pytest.raises(TypeError, match="prior"):
        mixture_fit.to_arviz(prior="yes")


# --------------------------------------------------------------------------------- HMM
def test_hmm_dims_groups_and_log_likelihood_against_hmmlearn():
    from hmmlearn.hmm import GaussianHMM

    rng = np.random.default_rng(0)
    seqs = []
    for n in (30, 24, 18):
        states = (np.arange(n) // 6) % 2
        seqs.append(rng.normal(size=(n, 2)) + 3.0 * states[:, None])
    fit = pg.fit(HiddenMarkovModel(2, covariance_type="diag"), seqs, method="em", seed=0, progress=False)
    idata = fit.to_arviz(posterior_predictive=True, prior=True, num_prior_samples=10)
    assert dims(idata, "posterior", "initial") == ("chain", "draw", "states")
    assert dims(idata, "posterior", "transition") == ("chain", "draw", "states", "next_states")
    assert dims(idata, "posterior", "locs") == ("chain", "draw", "states", "features")
    assert dims(idata, "log_likelihood", "obs") == ("chain", "draw", "sequences")
    assert dims(idata, "observed_data", "obs") == ("sequences", "time", "features")
    assert dims(idata, "posterior_predictive", "obs") == ("chain", "draw", "sequences", "time", "features")
    assert dims(idata, "prior", "transition") == ("chain", "draw", "states", "next_states")
    assert dims(idata, "sample_stats", "log_likelihood") == ("iteration",)
    p = {k: v.numpy() for k, v in fit.params.items()}
    ref = GaussianHMM(2, covariance_type="diag")
    ref.startprob_, ref.transmat_, ref.means_ = p["initial"], p["transition"], p["locs"]
    ref.covars_ = p["scales"] ** 2
    ll = idata.log_likelihood["obs"].values[0, 0]
    np.testing.assert_allclose(ll, [ref.score(s) for s in seqs], rtol=1e-8)


# -------------------------------------------------------------------- user regression
@pytest.fixture(scope="module")
def regression_data():
    rng = np.random.default_rng(1)
    x = rng.normal(size=30)
    return x, 1.0 + 2.0 * x + 0.5 * rng.normal(size=30)


def test_regression_constant_data_prior_and_log_likelihood(regression_data):
    x, y = regression_data
    fit = pg.fit(
        regression, {"x": x, "y": y}, method="mcmc", seed=0, progress=False, num_samples=60, warmup_steps=60
    )
    idata = fit.to_arviz(posterior_predictive=True, prior=True, num_prior_samples=400)
    assert {"posterior", "sample_stats", "log_likelihood", "posterior_predictive", "prior",
            "prior_predictive", "observed_data", "constant_data"} == set(group_names(idata))  # fmt: skip
    assert dims(idata, "constant_data", "x") == ("data",)
    assert dims(idata, "observed_data", "y") == ("data",)
    assert dims(idata, "log_likelihood", "y") == ("chain", "draw", "data")
    assert dims(idata, "posterior_predictive", "y") == ("chain", "draw", "data")
    assert dims(idata, "prior_predictive", "y") == ("chain", "draw", "data")
    np.testing.assert_allclose(idata.constant_data["x"].values, x)
    np.testing.assert_allclose(idata.observed_data["y"].values, y)
    post = idata.posterior
    a, b, s = (post[k].values[..., None] for k in ("a", "b", "s"))
    by_hand = stats.norm(a + b * x, s).logpdf(y)
    np.testing.assert_allclose(idata.log_likelihood["y"].values, by_hand, rtol=1e-5, atol=1e-6)
    # the prior of a and b is Normal(0, 10): 400 draws have an sd within 20% of 10
    for k in ("a", "b"):
        assert 8.0 < float(idata.prior[k].std()) < 12.0
    assert not np.allclose(idata.prior["a"].values, fit.params["a"].item())


def test_svi_loss_is_sample_stats_over_steps(regression_data):
    x, y = regression_data
    fit = pg.fit(regression, {"x": x, "y": y}, method="svi", seed=0, progress=False, num_steps=150)
    idata = fit.to_arviz()
    loss = idata.sample_stats["loss"]
    assert loss.dims == ("step",)
    np.testing.assert_allclose(loss.values, fit.history)


# ------------------------------------------------------------------- MCMC sample_stats
@pytest.fixture(scope="module")
def schools_fit():
    return pg.fit(schools, Y8, method="mcmc", seed=0, progress=False, num_samples=100, warmup_steps=100)


def test_eight_schools_sample_stats_as_from_numpyro(schools_fit):
    idata = schools_fit.to_arviz()
    assert set(idata.sample_stats.data_vars) == NUMPYRO_FIELDS
    ss = idata.sample_stats
    for name in NUMPYRO_FIELDS:
        assert ss[name].dims == ("chain", "draw")
    assert ss["diverging"].dtype == bool
    assert ss["n_steps"].dtype == np.int64 and ss["tree_depth"].dtype == np.int64
    # numpyro's tree depth from its step count: floor(log2(n)) + 1
    np.testing.assert_array_equal(ss["tree_depth"].values, np.floor(np.log2(ss["n_steps"].values)) + 1)
    # energy = potential + kinetic, and the kinetic energy is never negative
    assert (ss["energy"].values >= -ss["lp"].values - 1e-9).all()
    assert dims(idata, "posterior", "eta") == ("chain", "draw", "schools")
    assert dims(idata, "log_likelihood", "obs") == ("chain", "draw", "schools")
    values = az.bfmi(idata) if LEGACY else arviz_bridge.bfmi(ss["energy"].values)
    assert values.shape == (4,) and np.isfinite(values).all() and (values > 0).all()
    # by hand (Betancourt 2016): summed squared energy changes over summed squared deviations
    e = ss["energy"].values
    by_hand = (np.diff(e, axis=1) ** 2).sum(1) / ((e - e.mean(1, keepdims=True)) ** 2).sum(1)
    np.testing.assert_allclose(values, by_hand, rtol=1e-10)


@pytest.mark.skipif(not LEGACY, reason="ArviZ 0.x's plot; the arviz-base line plots with arviz-plots")
def test_plot_energy_runs(schools_fit):
    import matplotlib.pyplot as plt

    az.plot_energy(schools_fit.to_arviz())
    plt.close("all")


def test_chees_and_hmc_record_the_same_fields():
    for kernel, extra in (("chees", {"num_chains": 4}), ("hmc", {"num_steps": 4})):
        fit = pg.fit(
            schools,
            Y8,
            method="mcmc",
            seed=0,
            progress=False,
            num_samples=30,
            warmup_steps=30,
            kernel=kernel,
            **extra,
        )
        names = set(fit.to_arviz().sample_stats.data_vars)
        assert NUMPYRO_FIELDS <= names, kernel
        assert np.isfinite(fit.sample_stats["energy"]).all(), kernel


def test_energy_is_the_hamiltonian_of_the_draws_own_momentum(monkeypatch):
    """Per-draw energy against H = U(x) + r M^-1 r / 2 computed by hand from the draw's position
    and the momentum the kernel reached it with (U is the analytic potential of a Gaussian)."""
    d = torch.tensor([0.5, -1.0, 2.0])

    def gaussian(data=None):
        x = pyro.sample("x", dist.Normal(torch.zeros(3), 1.0).to_event(1))
        pyro.sample("obs", dist.Normal(x, 1.0).to_event(1), obs=data)

    kept: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    call = pyro_kernels.DrawStats.__call__

    def spy(self, kernel, params, stage, i):
        moved = self._state is None or self._state[0] != pyro_kernels.state_key(params)
        call(self, kernel, params, stage, i)
        if stage.startswith("Sample"):
            r = kernel.momentum(params, moved, scaled=True)
            inv_mass = next(iter(kernel.inverse_mass_matrix.values()))
            kept.append(
                (params["x"].detach().numpy().copy(), r["x"].detach().numpy().copy(), inv_mass.numpy().copy())
            )

    monkeypatch.setattr(pyro_kernels.DrawStats, "__call__", spy)
    fit = pg.fit(
        gaussian,
        d,
        method="mcmc",
        seed=0,
        progress=False,
        num_samples=40,
        warmup_steps=40,
        num_chains=1,
        kernel="pyro_nuts",  # Pyro's kernel, spied on here; probgen's NUTS keeps its own momentum
    )
    energy = fit.sample_stats["energy"][0]
    assert len(kept) == 40
    dn = d.numpy()
    for e, (x, r, inv_mass) in zip(energy, kept, strict=True):
        potential = 0.5 * (x @ x) + 0.5 * ((dn - x) @ (dn - x)) + 3.0 * math.log(2 * math.pi)
        kinetic = 0.5 * float(r @ (inv_mass * r))
        assert e == pytest.approx(potential + kinetic, rel=1e-5)
    # lp is minus the same potential
    xs = np.stack([k[0] for k in kept])
    lp = -(0.5 * (xs**2).sum(1) + 0.5 * ((dn - xs) ** 2).sum(1) + 3.0 * math.log(2 * math.pi))
    np.testing.assert_allclose(fit.sample_stats["lp"][0], lp, rtol=1e-5)


def _fit_with_energy(energy: np.ndarray) -> pg.Fit:
    rng = np.random.default_rng(0)
    data = torch.tensor(rng.normal(size=10))
    C, S = energy.shape
    posterior = {"loc": torch.tensor(rng.normal(size=(C, S)))}
    return pg.Fit(
        model=pg.model(normal_normal),
        data=data,
        method="mcmc",
        params={"loc": posterior["loc"].mean()},
        posterior=posterior,
        history=np.zeros(0),
        converged=True,
        sample_stats={"energy": energy, "diverging": np.zeros((C, S), dtype=bool)},
    )


def test_check_reports_low_bfmi():
    rng = np.random.default_rng(0)
    # a random walk: successive energies barely differ next to their spread (momentum
    # resampling that cannot move the energy), against independent energies
    stuck = np.cumsum(rng.normal(size=(2, 400)), axis=1)
    healthy = rng.normal(size=(2, 400))
    assert (az.bfmi(stuck) < 0.3).all() and (az.bfmi(healthy) > 0.3).all()
    problems = pg.check(_fit_with_energy(stuck))
    assert any("E-BFMI" in p and "chain 0" in p and "chain 1" in p for p in problems)
    assert not any("E-BFMI" in p for p in pg.check(_fit_with_energy(healthy)))


def test_dataframe_columns_of_a_one_argument_user_model_are_coords():
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.normal(size=(20, 2)), columns=["height", "weight"])

    def gaussian(data=None):
        loc = pyro.sample("loc", dist.Normal(torch.zeros(2), 10.0).to_event(1))
        with pyro.plate("rows", 20):
            pyro.sample("obs", dist.Normal(loc, 1.0).to_event(1), obs=data)

    fit = pg.fit(gaussian, frame, method="svi", seed=0, progress=False, num_steps=20)
    idata = fit.to_arviz()
    assert dims(idata, "observed_data", "obs") == ("rows", "obs_dim_1")
    assert list(idata.observed_data.coords["obs_dim_1"].values) == ["height", "weight"]
    assert dims(idata, "posterior", "loc") == ("chain", "draw", "loc_dim_0")
