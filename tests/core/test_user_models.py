"""User-written models as first-class citizens: one test per way they used to break."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.ops.indexing import Vindex

import probgen as pg
from probgen.posterior import broadcasts_over_draws
from tests.core import gallery
from tests.core.models import NOISE_SD, normal_normal, sprinkler

X = gallery.two_blobs(60, 40)


def readme_mixture(data=None):
    weights = pyro.sample("weights", dist.Dirichlet(torch.ones(2)))
    with pyro.plate("components", 2):
        locs = pyro.sample("locs", dist.Normal(0.0, 10.0))
    with pyro.plate("data", 100 if data is None else len(data)):
        z = pyro.sample("z", dist.Categorical(weights))
        pyro.sample("obs", dist.Normal(Vindex(locs)[..., z], 1.0), obs=data)


# 1. data types ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    "form",
    [X, list(X), pd.Series(X), torch.tensor(X), torch.tensor(X, dtype=torch.float32)],
    ids=["numpy-float64", "list", "pandas", "tensor-float64", "tensor-float32"],
)
def test_float32_model_takes_data_in_any_form(form):
    m = pg.model(readme_mixture)
    fit = pg.fit(m, form, method="em", seed=0, progress=False)
    assert fit.data.dtype == torch.float32  # the model's own dtype, found by tracing
    lp = fit.log_prob(form)
    by_hand = gallery.mixture_ll_by_hand(fit.params, X)
    assert torch.allclose(lp.double(), by_hand, atol=1e-4)


def test_float64_model_keeps_float64_data():
    def mixture64(data=None):
        weights = pyro.sample("weights", dist.Dirichlet(torch.ones(2, dtype=torch.float64)))
        with pyro.plate("components", 2):
            locs = pyro.sample("locs", dist.Normal(torch.tensor(0.0, dtype=torch.float64), 10.0))
        with pyro.plate("data", len(data)):
            z = pyro.sample("z", dist.Categorical(weights))
            pyro.sample("obs", dist.Normal(Vindex(locs)[..., z], 1.0), obs=data)

    m = pg.model(mixture64)
    assert m.prepare_data(list(X)).dtype == torch.float64


def test_integer_labels_become_integers_and_fractions_are_refused():
    m = pg.model(gallery.categorical)
    assert m.prepare_data([0.0, 2.0, 1.0]).dtype == torch.long
    with pytest.raises(ValueError, match="non-integer values"):
        m.prepare_data([0.0, 2.5, 1.0])


# 2. models that do not broadcast over draws ------------------------------------------------
def test_models_that_do_not_broadcast_run_one_draw_at_a_time_with_no_extra_plate():
    seen = []

    def strict(data=None):
        weights = pyro.sample("weights", dist.Dirichlet(torch.ones(2)))
        with pyro.plate("components", 2):
            locs = pyro.sample("locs", dist.Normal(0.0, 10.0))
        seen.append(tuple(locs.shape))
        with pyro.plate("data", len(data)):
            z = pyro.sample("z", dist.Categorical(weights))
            pyro.sample("obs", dist.Normal(locs[z], 1.0), obs=data)

    m = pg.model(strict)
    data = m.prepare_data(X)
    draws = {
        "weights": torch.tensor([[0.6, 0.4], [0.5, 0.5], [0.3, 0.7]]),
        "locs": torch.tensor([[-3.0, 3.0]] * 3),
    }
    assert not broadcasts_over_draws(m, data, draws)
    seen.clear()
    ll = pg.posterior.pointwise_log_likelihood(m, data, draws)
    assert set(seen) == {(2,)}  # never (1, 2) nor (3, 1, 2): no draws plate at all
    for s in range(3):
        hand = gallery.mixture_ll_by_hand({k: v[s] for k, v in draws.items()}, X)
        assert torch.allclose(ll[s].double(), hand, atol=1e-4)


def test_models_that_broadcast_are_vectorised():
    m = pg.model(gallery.zero_inflated)
    data = m.prepare_data(gallery.counts())
    draws = {"gate": torch.tensor([0.2, 0.3]), "rate": torch.tensor([3.0, 2.0])}
    assert broadcasts_over_draws(m, data, draws)
    # Vindex(locs)[..., z] indexes the components plate's dim: draws cannot sit in a plate
    mix = pg.model(readme_mixture)
    two = {
        "weights": torch.tensor([[0.6, 0.4], [0.5, 0.5]]),
        "locs": torch.tensor([[-3.0, 3.0], [-1.0, 2.0]]),
    }
    assert not broadcasts_over_draws(mix, mix.prepare_data(X), two)


# 3. the data plate ------------------------------------------------------------------------
@pytest.mark.parametrize("n", [5, 8])  # n == D on purpose, then n != D
def test_items_plate_on_dim_2_is_the_data_plate(n):
    m = pg.model(gallery.grid_mixture)
    data = gallery.grid_data(n)
    assert m.roles(m.prepare_data(data)).data_plate == "items"
    assert "data_plate='items' (found by tracing)" in repr(m)
    fit = pg.fit(m, data, method="em", seed=0, progress=False)
    assert torch.allclose(fit.log_prob().double(), gallery.grid_ll_by_hand(fit.params, data), atol=1e-4)


def test_data_plate_can_be_named_and_a_wrong_name_is_refused():
    m = pg.model(gallery.grid_mixture, data_plate="items")
    assert "data_plate='items' (given)" in repr(m)
    bad = pg.model(gallery.grid_mixture, data_plate="rows")
    with pytest.raises(ValueError, match="data_plate='rows' is not a plate of the model; its plates are"):
        bad.prepare_data(gallery.grid_data(5))


# 4. a discrete latent outside the data plate ----------------------------------------------
def test_change_point_scores_are_posterior_predictive_and_bic_uses_the_evidence():
    m = pg.model(gallery.change_point)
    data = gallery.series()
    fit = pg.fit(m, data, method="em", seed=0, progress=False)
    lp = fit.log_prob()
    assert torch.allclose(lp.double(), gallery.change_point_ll_by_hand(fit.params, data), atol=1e-4)
    # the true total log-likelihood by hand: log sum_tau p(tau) prod_t p(x_t | tau)
    p = {k: v.double() for k, v in fit.params.items()}
    T = len(data)
    x = torch.as_tensor(data, dtype=torch.float64)
    joint = []
    for tau in range(T):
        rate = torch.where(torch.arange(T) < tau, p["early"], p["late"])
        joint.append(math.log(1 / T) + float((x * rate.log() - rate - torch.lgamma(x + 1)).sum()))
    evidence = float(torch.logsumexp(torch.tensor(joint), 0))
    assert fit.log_likelihood() == pytest.approx(evidence, abs=1e-3)
    assert fit.bic() == pytest.approx(-2 * evidence + 2 * math.log(T), abs=1e-2)
    assert float(lp.sum()) > evidence - 1e-3  # not N times the evidence


def test_sprinkler_per_day_scores_weight_the_season_by_its_posterior(float64):
    wet = torch.tensor([1.0, 0.0, 1.0])
    fit = pg.fit(sprinkler, wet, method="enum", progress=False)
    p_s, p_r = torch.tensor([0.5, 0.1]), torch.tensor([0.2, 0.8])
    p_w = torch.tensor([[0.01, 0.9], [0.9, 0.99]])
    per = torch.zeros(2, 3, dtype=torch.float64)  # log p(wet_d | cloudy) by hand
    for c in (0, 1):
        for d in range(3):
            tot = 0.0
            for s in (0, 1):
                for r in (0, 1):
                    pw = float(p_w[s, r])
                    tot += (
                        (p_s[c] if s else 1 - p_s[c])
                        * (p_r[c] if r else 1 - p_r[c])
                        * (pw if wet[d] else 1 - pw)
                    )
            per[c, d] = math.log(float(tot))
    joint = math.log(0.5) + per.sum(1)
    post = joint - torch.logsumexp(joint, 0)
    expected = torch.logsumexp(post[:, None] + per, 0)
    assert torch.allclose(fit.log_prob(), expected, atol=1e-10)
    assert fit.log_likelihood() == pytest.approx(float(torch.logsumexp(joint, 0)), abs=1e-10)


# 5. posterior fits average over draws -----------------------------------------------------
def test_posterior_predict_proba_averages_over_draws():
    m = pg.model(readme_mixture)
    fit = pg.fit(m, X, method="mcmc", seed=0, progress=False, num_samples=100, warmup_steps=100)
    w = fit.posterior["weights"].reshape(-1, 2).double()
    locs = fit.posterior["locs"].reshape(-1, 2).double()
    x = torch.as_tensor(X)
    lj = w.log()[:, None, :] - 0.5 * (x[None, :, None] - locs[:, None, :]) ** 2
    resp = torch.softmax(lj, -1).mean(0)
    assert torch.allclose(fit.predict_proba(max_draws=len(w)).double(), resp, atol=1e-5)
    assert torch.equal(fit.predict(max_draws=len(w)), resp.argmax(-1))
    ll = torch.logsumexp(lj, -1) - 0.5 * math.log(2 * math.pi)
    assert torch.allclose(fit.log_prob().double(), torch.logsumexp(ll, 0) - math.log(len(w)), atol=1e-4)


def test_posterior_sample_draws_parameters_then_data():
    y = torch.tensor([2.1, 3.3, 0.4, 2.8, 1.9, 3.7, 2.2, 1.1, 2.6, 3.0])
    fit = pg.fit(normal_normal, y, method="mcmc", seed=0, progress=False, num_samples=1000)
    new = fit.sample(40000, seed=3)
    post_sd = float(fit.posterior["mu"].std())
    # posterior predictive sd is sqrt(noise^2 + posterior var) (1.57 here), not the noise sd 1.5
    assert float(new.std()) == pytest.approx(math.sqrt(NOISE_SD**2 + post_sd**2), rel=0.01)
    assert float(new.std()) > NOISE_SD * 1.02


# 6. label switching ----------------------------------------------------------------------
def test_readme_mcmc_mixture_gives_the_right_answer_with_defaults():
    x = torch.cat(
        [
            torch.randn(60, generator=torch.Generator().manual_seed(0)) - 3,
            torch.randn(40, generator=torch.Generator().manual_seed(1)) + 3,
        ]
    )
    fit = pg.fit(pg.model(readme_mixture), x, method="mcmc", seed=0, progress=False, num_samples=500)
    locs = fit.params["locs"]
    assert locs[0].item() == pytest.approx(-3, abs=0.4) and locs[1].item() == pytest.approx(3, abs=0.4)
    assert fit.params["weights"][0].item() == pytest.approx(0.6, abs=0.1)
    assert not any("R-hat" in p for p in pg.check(fit))


def test_check_names_label_switching_where_relabelling_cannot_apply():
    def msf(data=None):  # components with no enumerated latent: nothing to relabel by
        weights = pyro.sample("weights", dist.Dirichlet(torch.ones(2)))
        with pyro.plate("components", 2):
            locs = pyro.sample("locs", dist.Normal(0.0, 10.0))
        with pyro.plate("data", len(data)):
            mix = dist.MixtureSameFamily(dist.Categorical(weights), dist.Normal(locs, 1.0))
            pyro.sample("obs", mix, obs=data)

    x = torch.as_tensor(X, dtype=torch.float32)
    init = {"weights": torch.tensor([0.5, 0.5]), "locs": torch.tensor([-3.0, 3.0])}
    fit = pg.fit(
        pg.model(msf), x, method="mcmc", seed=0, progress=False, num_samples=50, warmup_steps=50, init=init
    )
    # splice the chains with swapped labels, as a switching sampler would leave them
    post = {k: v.clone() for k, v in fit.posterior.items()}
    for k in post:
        post[k][1] = post[k][1].flip(-1)
    switched = pg.Fit(
        model=fit.model,
        data=fit.data,
        method="mcmc",
        params=fit.params,
        posterior=post,
        sample_stats=fit.sample_stats,
    )
    problems = pg.check(switched)
    assert any("label switching" in p for p in problems)


def test_check_flags_a_collapsed_mixture():
    m = pg.model(readme_mixture)
    same = {"weights": torch.tensor([0.5, 0.5]), "locs": torch.tensor([0.1, 0.1])}
    fit = pg.fit(m, X, method="em", seed=0, progress=False, init=same, max_iter=50)  # symmetric start
    assert torch.allclose(fit.params["locs"][0], fit.params["locs"][1])
    assert any("coincide" in p for p in pg.check(fit))
    healthy = pg.fit(m, X, method="em", seed=0, progress=False)
    assert not any("coincide" in p or "empty" in p for p in pg.check(healthy))


# 8. pyro.param sites ----------------------------------------------------------------------
def test_pyro_param_sites_are_fitted_saved_and_counted(tmp_path):
    m = pg.model(gallery.mixture_param)
    fit = pg.fit(m, X, method="em", seed=0, progress=False)
    assert set(fit.params) == {"weights", "locs"}
    assert sorted(fit.params["weights"].tolist()) == pytest.approx([0.4, 0.6], abs=0.05)
    assert fit.num_parameters() == 3  # one free weight, two locations
    fit.save(tmp_path / "f")
    back = pg.load(tmp_path / "f.npz", model=m)
    assert torch.equal(back.params["weights"], fit.params["weights"])
    assert torch.allclose(back.log_prob(), fit.log_prob())


def test_enum_fits_pyro_param_sites_by_maximum_evidence(float64):
    def coin_mixture(data=None):
        p = pyro.param("p", torch.tensor([0.3, 0.6]), constraint=dist.constraints.unit_interval)
        with pyro.plate("data", len(data)):
            z = pyro.sample("z", dist.Bernoulli(0.5))
            pyro.sample("obs", dist.Bernoulli(p[z.long()]), obs=data)

    data = torch.tensor([1.0, 1.0, 0.0, 1.0, 0.0, 1.0, 1.0, 1.0])
    fit = pg.fit(pg.model(coin_mixture), data, method="enum", progress=False)
    # the likelihood depends on p only through (p0 + p1) / 2, whose MLE is the mean 0.75
    assert float(fit.params["p"].mean()) == pytest.approx(0.75, abs=1e-5)
    assert fit.log_evidence == pytest.approx(6 * math.log(0.75) + 2 * math.log(0.25), abs=1e-8)


# 9. side effects --------------------------------------------------------------------------
def test_fit_and_tools_leave_global_state_alone():
    pyro.param("users_own", torch.tensor(7.0))
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    threads = torch.get_num_threads()
    m = pg.model(readme_mixture)
    fit = pg.fit(m, X, method="mcmc", seed=5, progress=False, num_samples=20, warmup_steps=20, num_threads=1)
    fit.log_prob()
    fit.predict_proba()
    fit.sample(5, seed=1)
    fit.to_arviz(posterior_predictive=True)
    assert torch.equal(torch.rand(3), expected)
    assert list(pyro.get_param_store().keys()) == ["users_own"]
    assert torch.get_num_threads() == threads


# 11. clear errors -------------------------------------------------------------------------
def test_wrong_feature_count_at_scoring_time_is_refused():
    m = pg.model(gallery.mixture_to_event)
    fit = pg.fit(m, gallery.to_event_data(), method="em", seed=0, progress=False)
    with pytest.raises(
        ValueError, match=r"data has items of shape \(3,\); .* fitted on items of shape \(2,\)"
    ):
        fit.log_prob(np.zeros((4, 3)))


def test_predict_without_a_discrete_latent_is_refused():
    fit = pg.fit(normal_normal, [1.0, 2.0, 3.0], method="svi", seed=0, progress=False, num_steps=50)
    with pytest.raises(ValueError, match="predict needs a discrete latent site"):
        fit.predict()


@pytest.mark.parametrize("content", [b"not an archive", b"PK\x03\x04broken zip"])
def test_damaged_or_foreign_files_are_refused_by_load(tmp_path, content):
    path = tmp_path / "x.npz"
    path.write_bytes(content)
    with pytest.raises(ValueError, match="not a readable probgen fit"):
        pg.load(path)


def test_an_archive_missing_arrays_is_called_damaged(tmp_path):
    fit = pg.fit(normal_normal, [1.0, 2.0, 3.0], method="svi", seed=0, progress=False, num_steps=50)
    fit.save(tmp_path / "f.npz")
    with np.load(tmp_path / "f.npz") as npz:
        kept = {k: npz[k] for k in npz.files if not k.startswith("posterior/")}
    np.savez(tmp_path / "g.npz", **kept)
    with pytest.raises(ValueError, match="is damaged: arrays .* are missing"):
        pg.load(tmp_path / "g.npz", model=normal_normal)
    np.savez(tmp_path / "h.npz", a=np.zeros(3))
    with pytest.raises(ValueError, match="is not a probgen fit"):
        pg.load(tmp_path / "h.npz")
