"""The groups of ``fit.to_arviz()`` for every backend against ``az.from_numpyro``'s conventions:
a mixture, an HMM and a regression with a covariate, each fitted by EM, SVI and MCMC."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pyro
import pyro.distributions as dist
import pytest

import probgen as pg
from probgen import arviz_bridge
from probgen.arviz_bridge import group_names
from probgen.models import GaussianMixture, HiddenMarkovModel

#: ``az.from_numpyro``'s sample_stats of NUTS (potential_energy -> lp, num_steps -> n_steps, ...).
NUTS_FIELDS = {"lp", "energy", "step_size", "n_steps", "tree_depth", "acceptance_rate", "diverging"}
#: What each backend's objective history is called in sample_stats, and the dim it runs over.
HISTORY = {"em": ("log_likelihood", "iteration"), "svi": ("loss", "step")}
GROUPS = ["posterior", "posterior_predictive", "log_likelihood", "sample_stats", "prior", "prior_predictive"]
OPTIONS = {
    "em": {},
    "svi": {"num_steps": 60},
    "mcmc": {"num_samples": 20, "warmup_steps": 20, "num_chains": 2},
}


def regression(x, y=None):
    a = pyro.sample("a", dist.Normal(0.0, 10.0))
    b = pyro.sample("b", dist.Normal(0.0, 10.0))
    s = pyro.sample("s", dist.HalfNormal(5.0))
    with pyro.plate("data", x.shape[0]):
        return pyro.sample("y", dist.Normal(a + b * x, s), obs=y)


def _data(case):
    rng = np.random.default_rng(0)
    if case == "regression":
        x = rng.normal(size=25)
        return regression, {"x": x, "y": 1.0 + 2.0 * x + 0.5 * rng.normal(size=25)}, "data"
    if case == "hmm":
        seqs = [rng.normal(size=(n, 2)) + 3.0 * ((np.arange(n) // 5) % 2)[:, None] for n in (20, 15)]
        return HiddenMarkovModel(2, covariance_type="diag"), seqs, "sequences"
    return GaussianMixture(2, covariance_type="diag"), pg.datasets.load_old_faithful().iloc[:60], "data"


CASES = [
    pytest.param(case, method, marks=[pytest.mark.slow] if (method, case) == ("mcmc", "hmm") else [])
    for case in ("mixture", "hmm", "regression")
    for method in ("em", "svi", "mcmc")
]


@pytest.mark.parametrize("case, method", CASES)
def test_groups_and_sample_stats_follow_from_numpyro(case, method):
    model, data, item_dim = _data(case)
    fit = pg.fit(model, data, method=method, seed=0, progress=False, **OPTIONS[method])
    idata = fit.to_arviz(posterior_predictive=True, num_ppc_samples=5, prior=True, num_prior_samples=5)
    covariates = ["constant_data"] if case == "regression" else []
    assert group_names(idata) == [*GROUPS, "observed_data", *covariates]
    ss = idata["sample_stats"]
    if method == "mcmc":
        assert set(ss.data_vars) == NUTS_FIELDS
        assert all(ss[k].dims == ("chain", "draw") for k in NUTS_FIELDS)
        assert np.isfinite(ss["energy"].values).all()
    else:
        name, dim = HISTORY[method]
        assert list(ss.data_vars) == [name] and ss[name].dims == (dim,)
        np.testing.assert_array_equal(ss[name].values, np.asarray(fit.history))
    (ll,) = idata["log_likelihood"].data_vars.values()
    n_items = len(data) if case != "regression" else len(data["y"])
    assert ll.dims[-1] == item_dim and ll.shape[-1] == n_items
    assert np.isfinite(ll.values).all()
    draws = (1, 1) if method == "em" else tuple(next(iter(fit.posterior.values())).shape[:2])
    assert ll.shape[:2] == draws
    if case == "regression":
        # converted to the model's own dtype (float32 here), as fit did
        np.testing.assert_allclose(idata["constant_data"]["x"].values, data["x"], rtol=1e-6)
        assert idata["constant_data"]["x"].dims == ("data",)
        np.testing.assert_allclose(idata["observed_data"]["y"].values, data["y"], rtol=1e-6)
        assert "x" not in idata["posterior"].data_vars and "x" not in idata["observed_data"].data_vars


def test_constant_data_holds_every_per_item_argument_that_is_not_observed():
    rng = np.random.default_rng(2)
    n = 20

    def grouped(x, group, y=None):
        a = pyro.sample("a", dist.Normal(0.0, 5.0).expand([2]).to_event(1))
        b = pyro.sample("b", dist.Normal(0.0, 5.0))
        with pyro.plate("rows", n):
            return pyro.sample("y", dist.Normal(a[group] + b * x, 1.0), obs=y)

    x, group = rng.normal(size=n), rng.integers(0, 2, size=n)
    y = np.where(group == 1, 3.0, -1.0) + x + rng.normal(size=n)
    fit = pg.fit(
        grouped, {"x": x, "group": group, "y": y}, method="svi", seed=0, progress=False, num_steps=30
    )
    const = fit.to_arviz()["constant_data"]
    assert sorted(const.data_vars) == ["group", "x"]
    np.testing.assert_array_equal(const["group"].values, group)
    np.testing.assert_allclose(const["x"].values, x, rtol=1e-6)
    assert const["group"].dims == ("rows",)


def _import_probgen(switch):
    env = {**os.environ, arviz_bridge.ARVIZ_SWITCH: switch}
    code = "import probgen.arviz_bridge as b; print(b.LEGACY)"
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)


def test_the_switch_picks_the_arviz_line():
    base = _import_probgen("base")
    assert base.returncode == 0, base.stderr
    assert base.stdout.strip() == "False"
    wrong = _import_probgen("newest")
    assert wrong.returncode != 0
    assert "PROBGEN_ARVIZ='newest'; expected one of: auto, base, legacy" in wrong.stderr
