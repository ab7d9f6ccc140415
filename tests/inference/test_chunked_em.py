"""EM over data read in chunks reaches the in-memory fixed point; online EM lands near it."""

from __future__ import annotations

import re
import warnings
from typing import Any

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch

import probgen as pg
import probgen.inference.em  # noqa: F401  (registers method="em")
from probgen.errors import ConvergenceWarning, ModelNotSupportedError
from probgen.models.discrete_mixture import BernoulliMixture, CategoricalMixture, PoissonMixture
from probgen.models.gaussian_mixture import GaussianMixture

COV_TYPES = ("full", "diag", "spherical", "tied")
FAMILIES = COV_TYPES + ("bernoulli", "categorical", "poisson")
MEANS = np.array([[0.0, 0.0], [4.0, 4.0], [0.0, 5.0]])


def _gaussian_data(n: int = 3001, offset: float = 0.0, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    z = rng.integers(0, 3, n)
    chol = np.array([[[1.0, 0.0], [0.6, 0.8]], [[0.7, 0.0], [0.0, 1.2]], [[1.1, 0.0], [-0.5, 0.6]]])
    eps = rng.normal(size=(n, 2))
    return MEANS[z] + np.einsum("nde,ne->nd", chol[z], eps) + offset


def _gaussian_init(covariance_type: str, offset: float = 0.0) -> dict[str, np.ndarray]:
    """Starting values a little off the answer, so EM takes several steps."""
    locs = MEANS + offset + np.array([[0.8, -0.6], [-0.7, 0.5], [0.6, 0.9]])
    init = {"weights": np.array([0.5, 0.3, 0.2]), "locs": locs}
    if covariance_type in ("full", "diag"):
        init["scale"] = np.full((3, 2), 1.5)
    elif covariance_type == "spherical":
        init["scale"] = np.array([1.5, 1.2, 0.9])
    else:
        init["scale"] = np.array([1.5, 1.2])
    if covariance_type == "full":
        init["corr_cholesky"] = np.broadcast_to(np.eye(2), (3, 2, 2)).copy()
    elif covariance_type == "tied":
        init["corr_cholesky"] = np.eye(2)
    return init


def _case(family: str, n: int = 3001, offset: float = 0.0) -> tuple[Any, np.ndarray, dict[str, np.ndarray]]:
    """A model, its data and a dict of starting values."""
    rng = np.random.default_rng(1)
    if family in COV_TYPES:
        return GaussianMixture(3, family), _gaussian_data(n, offset), _gaussian_init(family, offset)
    z = rng.integers(0, 3, n)
    if family == "bernoulli":
        probs = np.array([[0.9, 0.8, 0.1, 0.1, 0.5, 0.2], [0.1, 0.2, 0.9, 0.8, 0.5, 0.2], [0.5] * 6])
        x = (rng.random((n, 6)) < probs[z]).astype(float)
        init = {"weights": np.full(3, 1 / 3), "probs": rng.uniform(0.3, 0.7, (3, 6))}
        return BernoulliMixture(3), x, init
    if family == "categorical":
        probs = rng.dirichlet(np.full(3, 0.5), (3, 4))
        u = rng.random((n, 4, 1))
        x = (u > np.cumsum(probs[z], -1)).sum(-1).clip(0, 2).astype(float)
        init = {"weights": np.full(3, 1 / 3), "probs": rng.dirichlet(np.full(3, 5.0), (3, 4))}
        return CategoricalMixture(3, n_categories=3), x, init
    rates = np.array([[1.0, 8.0], [6.0, 1.0], [12.0, 12.0]])
    x = rng.poisson(rates[z]).astype(float)
    init = {"weights": np.full(3, 1 / 3), "rates": rates + np.array([[1.0, -2.0], [-1.5, 1.0], [2.0, -2.0]])}
    return PoissonMixture(3), x, init


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-300))


# --------------------------------------------------------------- statistics and M-step
@pytest.mark.parametrize("family", FAMILIES)
def test_per_chunk_stats_sum_to_the_whole_data_stats_and_give_the_in_memory_m_step(family):
    offset = 1e4 if family in COV_TYPES else 0.0  # Gaussians far from the origin keep their digits
    model, x, init = _case(family, n=2503, offset=offset)
    whole = model.prepare_data(x)
    params = model.init_params(whole, init=init, generator=torch.Generator().manual_seed(0))
    summed: dict[str, torch.Tensor] = {}
    ll = 0.0
    for start in range(0, len(x), 700):  # 700 does not divide 2503
        stats, chunk_ll = model.chunk_stats(model.prepare_data(x[start : start + 700]), params)
        ll += chunk_ll
        for k, v in stats.items():
            summed[k] = summed[k] + v if k in summed else v
    all_stats, all_ll = model.chunk_stats(whole, params)
    assert set(summed) == set(all_stats)
    for k in all_stats:
        assert _rel(summed[k], all_stats[k]) < 1e-12, k
    e_stats, e_ll = model.e_step(whole, params)
    assert ll == pytest.approx(e_ll, rel=1e-13)
    expected = model.m_step(whole, e_stats)
    got = model.m_step_from_stats(summed, len(x))
    assert set(got) == set(expected)
    for k in expected:
        ref = expected[k] - offset if k == "locs" else expected[k]
        new = got[k] - offset if k == "locs" else got[k]
        assert _rel(new, ref) < 1e-10, k


@pytest.mark.parametrize(
    "model",
    [
        GaussianMixture(3, "full", map_estimate=True, weight_concentration=3.0),
        BernoulliMixture(3, map_estimate=True, prior_a=2.0, prior_b=3.0),
        CategoricalMixture(3, n_categories=3, map_estimate=True, prior_concentration=2.0),
        PoissonMixture(3, map_estimate=True, prior_shape=3.0),
    ],
    ids=["gaussian", "bernoulli", "categorical", "poisson"],
)
def test_the_m_step_from_stats_keeps_the_map_estimate(model):
    family = {"GaussianMixture": "full"}.get(model.name, model.name.replace("Mixture", "").lower())
    _, x, init = _case(family, n=1201)
    whole = model.prepare_data(x)
    params = model.init_params(whole, init=init, generator=torch.Generator().manual_seed(0))
    a, _ = model.chunk_stats(model.prepare_data(x[:500]), params)
    b, _ = model.chunk_stats(model.prepare_data(x[500:]), params)
    got = model.m_step_from_stats({k: a[k] + b[k] for k in a}, len(x))
    expected = model.m_step(whole, model.e_step(whole, params)[0])
    plain = type(model)(3, **({"n_categories": 3} if family == "categorical" else {}))
    mle = plain.m_step(whole, plain.e_step(whole, params)[0])
    for k in expected:
        assert _rel(got[k], expected[k]) < 1e-10, k
    assert max(_rel(mle[k], expected[k]) for k in expected) > 1e-4  # the prior does move the answer


def test_raw_moments_would_lose_the_digits_that_the_shift_keeps():
    # Check that the offset test above has teeth: about the origin, sum(x x^T) - N mu mu^T at
    # 1e4 loses about 8 of the 16 digits of a unit variance.
    x = torch.as_tensor(_gaussian_data(2503, 1e4))
    raw = (x * x).mean(0) - x.mean(0) ** 2
    centred = ((x - x.mean(0)) ** 2).mean(0)
    assert _rel(raw, centred) > 1e-10


# --------------------------------------------------------------- chunked EM == in-memory EM
@pytest.mark.parametrize("family", FAMILIES)
def test_chunked_em_reaches_the_in_memory_fit_from_the_same_start(family, tmp_path):
    model, x, init = _case(family)
    in_memory = pg.fit(model, x, method="em", init=init, progress=False)
    path = tmp_path / "x.npy"
    mm = np.lib.format.open_memmap(path, mode="w+", dtype=np.float64, shape=x.shape)
    mm[:] = x
    mm.flush()
    del mm
    source = np.load(path, mmap_mode="r")  # read-only memmap
    chunked = pg.fit(model, source, method="em", init=init, chunk_size=400, progress=False)
    assert chunked.data is None
    assert chunked.extras["num_items"] == len(x) and chunked.extras["chunk_size"] == 400
    assert in_memory.extras["n_iter"] > 3
    assert chunked.extras["n_iter"] == in_memory.extras["n_iter"]
    assert chunked.converged
    np.testing.assert_allclose(chunked.history, in_memory.history, rtol=1e-11)
    assert chunked.log_evidence == pytest.approx(in_memory.log_evidence, rel=1e-11)
    for k, v in in_memory.params.items():
        assert _rel(chunked.params[k], v) < 1e-9, k
    # the user passes the data to the fit tools
    assert chunked.log_prob(x) == pytest.approx(in_memory.log_prob(x), rel=1e-10)


@pytest.mark.parametrize("covariance_type", COV_TYPES)
def test_chunked_em_far_from_the_origin_still_matches(covariance_type):
    model, x, init = _case(covariance_type, offset=1e4)
    in_memory = pg.fit(model, x, method="em", init=init, progress=False)
    # 1000 rows a chunk leaves a one-row tail, read with the chunk before it
    chunked = pg.fit(model, x, method="em", init=init, chunk_size=1000, progress=False)
    assert chunked.extras["n_iter"] == in_memory.extras["n_iter"]
    assert _rel(chunked.params["locs"] - 1e4, in_memory.params["locs"] - 1e4) < 1e-9
    for k in ("weights", "scale"):
        assert _rel(chunked.params[k], in_memory.params[k]) < 1e-9, k


def test_chunked_em_matches_scikit_learn_from_the_same_start():
    from sklearn.mixture import GaussianMixture as SkGaussianMixture

    model, x, init = _case("full")
    cov = GaussianMixture(3, "full").covariances({k: torch.as_tensor(v) for k, v in init.items()}).numpy()
    sk = SkGaussianMixture(
        3,
        covariance_type="full",
        weights_init=init["weights"],
        means_init=init["locs"],
        precisions_init=np.linalg.inv(cov),
        tol=1e-10,
        max_iter=1000,
        reg_covar=1e-6,
    ).fit(x)
    fit = pg.fit(model, x, method="em", init=init, chunk_size=700, tol=1e-10, progress=False)
    np.testing.assert_allclose(fit.params["weights"].numpy(), sk.weights_, atol=1e-7)
    np.testing.assert_allclose(fit.params["locs"].numpy(), sk.means_, atol=1e-6)
    np.testing.assert_allclose(model.covariances(fit.params).numpy(), sk.covariances_, atol=1e-6)
    assert fit.log_evidence / len(x) == pytest.approx(sk.score(x), abs=1e-8)


def test_restarts_keep_the_best_and_a_strategy_name_starts_from_a_sample():
    x = _gaussian_data(4000)
    fit = pg.fit(GaussianMixture(3, "diag"), x, method="em", chunk_size=900, n_init=2, seed=3, progress=False)
    ref = pg.fit(GaussianMixture(3, "diag"), x, method="em", n_init=2, seed=3, progress=False)
    order = np.argsort(fit.params["locs"][:, 1].numpy() * 10 + fit.params["locs"][:, 0].numpy())
    ref_order = np.argsort(ref.params["locs"][:, 1].numpy() * 10 + ref.params["locs"][:, 0].numpy())
    np.testing.assert_allclose(
        fit.params["locs"].numpy()[order], ref.params["locs"].numpy()[ref_order], atol=1e-4
    )
    assert fit.log_evidence == pytest.approx(ref.log_evidence, rel=1e-7)


def test_an_emptied_component_keeps_its_previous_parameters_with_a_warning():
    x = _gaussian_data(1500)
    init = _gaussian_init("diag")
    init["locs"] = init["locs"].copy()
    init["locs"][2] = [1e3, 1e3]  # nowhere near the data: its responsibilities underflow to 0
    init["weights"] = np.array([0.5, 0.5 - 1e-9, 1e-9])
    model = GaussianMixture(3, "diag")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit = pg.fit(model, x, method="em", init=init, chunk_size=500, max_iter=5, tol=0.0, progress=False)
    messages = [str(w.message) for w in caught if issubclass(w.category, ConvergenceWarning)]
    assert any(re.search(r"component\(s\) \[2\] emptied .* keep their previous", m) for m in messages)
    np.testing.assert_allclose(fit.params["locs"][2].numpy(), [1e3, 1e3])
    np.testing.assert_allclose(fit.params["scale"][2].numpy(), [1.5, 1.5])
    assert torch.isfinite(fit.params["weights"]).all()
    assert float(fit.params["weights"].sum()) == pytest.approx(1.0, abs=1e-12)


# ---------------------------------------------------------------------------- online EM
def test_online_em_lands_close_to_the_batch_answer():
    x = _gaussian_data(150_000, seed=5)
    init = _gaussian_init("full")
    init["locs"] = MEANS + np.array([[1.5, -1.0], [-1.2, 1.4], [1.3, 1.5]])  # far-off start
    batch = pg.fit(GaussianMixture(3, "full"), x, method="em", init=init, progress=False)
    online = pg.fit(
        GaussianMixture(3, "full"), x, method="em", init=init, chunk_size=2000, online=True, progress=False
    )
    assert online.extras["online"] and len(online.history) == 1
    assert (online.params["locs"] - batch.params["locs"]).abs().max() < 0.05
    assert (online.params["weights"] - batch.params["weights"]).abs().max() < 0.01
    cov_online = GaussianMixture(3, "full").covariances(online.params)
    cov_batch = GaussianMixture(3, "full").covariances(batch.params)
    assert (cov_online - cov_batch).abs().max() < 0.1
    # the starting values alone are far from it, so the pass did the work
    assert (torch.as_tensor(init["locs"]) - batch.params["locs"]).abs().max() > 1.0


def test_online_em_takes_max_iter_passes_when_given():
    model, x, init = _case("poisson", n=6000)
    batch = pg.fit(model, x, method="em", init=init, progress=False)
    online = pg.fit(
        model,
        x,
        method="em",
        init=init,
        chunk_size=500,
        online=True,
        max_iter=3,
        step_exponent=0.7,
        progress=False,
    )
    assert len(online.history) == 3
    assert (online.params["rates"] - batch.params["rates"]).abs().max() < 0.1
    assert (online.params["weights"] - batch.params["weights"]).abs().max() < 0.01


# ------------------------------------------------------------------------------ bad input
@pytest.mark.parametrize("method", ["svi", "mcmc"])
def test_chunk_size_with_another_method_is_refused(method):
    x = _gaussian_data(100)
    with pytest.raises(ValueError, match="chunk_size"):
        pg.fit(GaussianMixture(2), x, method=method, chunk_size=50, progress=False)


@pytest.mark.parametrize("bad", [0, -5, 2.5, True, "100"])
def test_a_bad_chunk_size_is_refused(bad):
    with pytest.raises(ValueError, match="chunk_size must be a positive int"):
        pg.fit(GaussianMixture(2), _gaussian_data(100), method="em", chunk_size=bad, progress=False)


@pg.model
def _normal_mean(data=None):
    mu = pyro.sample("mu", dist.Normal(torch.tensor(0.0, dtype=torch.float64), 10.0))
    with pyro.plate("items", 10 if data is None else len(data)):
        pyro.sample("obs", dist.Normal(mu, 1.0), obs=data)


def test_a_model_without_the_hooks_is_refused_naming_them():
    x = torch.randn(200, dtype=torch.float64)
    with pytest.raises(ModelNotSupportedError, match="chunk_stats, m_step_from_stats"):
        pg.fit(_normal_mean, x, method="em", chunk_size=50, progress=False)


def test_online_without_chunk_size_is_refused():
    with pytest.raises(ValueError, match="online=True .* chunk_size="):
        pg.fit(GaussianMixture(2), _gaussian_data(100), method="em", online=True, progress=False)


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"online": True, "step_exponent": 0.5}, r"step_exponent must be a number in \(0.5, 1\]"),
        ({"online": True, "step_exponent": 1.2}, r"step_exponent must be a number in \(0.5, 1\]"),
        ({"online": True, "step_offset": -1.0}, "step_offset must be a finite number >= 0"),
        ({"step_exponent": 0.7}, "only apply to online EM"),
    ],
)
def test_bad_online_options_are_refused(options, match):
    with pytest.raises(ValueError, match=match):
        pg.fit(GaussianMixture(2), _gaussian_data(100), method="em", chunk_size=50, progress=False, **options)


def test_online_must_be_a_bool():
    with pytest.raises(TypeError, match="online must be a bool"):
        pg.fit(GaussianMixture(2), _gaussian_data(100), method="em", chunk_size=50, online=1, progress=False)


def test_a_chunked_fit_saves_and_loads(tmp_path):
    model, x, init = _case("tied")
    fit = pg.fit(model, x, method="em", init=init, chunk_size=1000, progress=False)
    fit.save(tmp_path / "fit")
    back = pg.load(tmp_path / "fit")
    for k, v in fit.params.items():
        assert torch.equal(back.params[k], v)
    assert back.log_prob(x) == pytest.approx(fit.log_prob(x), rel=1e-12)
