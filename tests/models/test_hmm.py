"""HiddenMarkovModel against hmmlearn, brute-force enumeration and known answers.

Every comparison uses the same parameters and data for both libraries; tolerances: 1e-8
relative on log-likelihoods, 1e-8 absolute on posterior marginals, identical Viterbi paths.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from hmmlearn import hmm

import probgen as pg
from probgen.models import HiddenMarkovModel

START = np.array([0.5, 0.3, 0.2])
TRANS = np.array([[0.8, 0.1, 0.1], [0.2, 0.7, 0.1], [0.1, 0.3, 0.6]])
MEANS = np.array([[0.0, 0.0], [3.0, 1.0], [-2.0, 4.0]])
COVARS = {
    "full": np.array([np.eye(2) * 1.5, [[1.0, 0.3], [0.3, 0.5]], np.eye(2)]),
    "diag": np.array([[1.0, 2.0], [0.5, 1.0], [1.0, 1.0]]),
    "spherical": np.array([1.0, 0.5, 2.0]),
    "tied": np.array([[1.0, 0.3], [0.3, 0.5]]),
}
PROBS = np.array([[0.5, 0.2, 0.1, 0.1, 0.1], [0.05, 0.05, 0.3, 0.3, 0.3], [0.2, 0.2, 0.2, 0.2, 0.2]])
RATES = np.array([[1.0, 5.0], [4.0, 0.5], [10.0, 10.0]])
LENGTHS = [40, 700, 7, 1300]  # two sequences long enough to be cut into blocks
CASES = ["full", "diag", "spherical", "tied", "categorical", "poisson"]


pytestmark = pytest.mark.usefixtures("one_thread")


def _pair(case: str, n_iter: int = 10, tol: float = -np.inf) -> tuple[hmm.BaseHMM, HiddenMarkovModel, dict]:
    """An hmmlearn model with set parameters, the probgen model, and the same values as init."""
    if case == "categorical":
        ref = hmm.CategoricalHMM(3, init_params="", n_iter=n_iter, tol=tol)
        ref.emissionprob_ = PROBS.copy()
        ours, emission = HiddenMarkovModel(3, "categorical"), {"probs": PROBS}
    elif case == "poisson":
        ref = hmm.PoissonHMM(3, init_params="", n_iter=n_iter, tol=tol)
        ref.lambdas_ = RATES.copy()
        ours, emission = HiddenMarkovModel(3, "poisson"), {"rates": RATES}
    else:
        ref = hmm.GaussianHMM(3, covariance_type=case, init_params="", n_iter=n_iter, tol=tol)
        ref.means_ = MEANS.copy()
        ref.covars_ = COVARS[case].copy()
        ours, emission = HiddenMarkovModel(3, covariance_type=case), {"locs": MEANS, "covars": COVARS[case]}
    ref.startprob_ = START.copy()
    ref.transmat_ = TRANS.copy()
    return ref, ours, {"initial": START, "transition": TRANS, **emission}


def _sequences(ref: hmm.BaseHMM, lengths: list[int], seed: int = 0) -> tuple[np.ndarray, list[np.ndarray]]:
    X, _ = ref.sample(sum(lengths), random_state=seed)
    return X, np.split(X, np.cumsum(lengths)[:-1])


def _params(model: HiddenMarkovModel, data, init: dict) -> dict[str, torch.Tensor]:
    return model.init_params(data, init=init, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("case", CASES)
def test_log_prob_posteriors_and_viterbi_match_hmmlearn(case):
    ref, model, init = _pair(case)
    X, seqs = _sequences(ref, LENGTHS)
    data = model.prepare_data(seqs)
    params = _params(model, data, init)

    log_prob = model.log_prob_items(data, params).numpy()
    expected = np.array([ref.score(s) for s in seqs])
    np.testing.assert_allclose(log_prob, expected, rtol=1e-8)

    post = torch.cat(model.latent_posterior(data, params)["states"]).numpy()
    np.testing.assert_allclose(post, ref.predict_proba(X, LENGTHS), rtol=0, atol=1e-8)

    paths, scores = model.viterbi(data, params)
    ref_score, ref_path = ref.decode(X, LENGTHS)
    np.testing.assert_array_equal(torch.cat(paths).numpy(), ref_path)
    assert float(scores.sum()) == pytest.approx(ref_score, rel=1e-8)


@pytest.mark.parametrize("case", CASES)
def test_baum_welch_follows_hmmlearn(case):
    ref, model, init = _pair(case, n_iter=6)
    X, seqs = _sequences(ref, LENGTHS, seed=1)
    ref.fit(X, LENGTHS)
    with pytest.warns(pg.ConvergenceWarning):
        fit = pg.fit(model, seqs, method="em", init=init, max_iter=6, tol=0.0, progress=False)
    _assert_fit_follows(fit, ref, case, rtol=1e-7)


def _assert_fit_follows(fit, ref, case: str, rtol: float) -> None:
    """Log-likelihood history and every parameter of ``fit`` equal hmmlearn's ``ref``."""
    np.testing.assert_allclose(fit.history, np.array(ref.monitor_.history), rtol=rtol / 10)
    np.testing.assert_allclose(fit.params["transition"].numpy(), ref.transmat_, rtol=rtol, atol=1e-10)
    np.testing.assert_allclose(fit.params["initial"].numpy(), ref.startprob_, rtol=1e-7, atol=1e-10)
    if case == "categorical":
        np.testing.assert_allclose(fit.params["probs"].numpy(), ref.emissionprob_, rtol=rtol, atol=1e-10)
    elif case == "poisson":
        np.testing.assert_allclose(fit.params["rates"].numpy(), ref.lambdas_, rtol=rtol)
    else:
        np.testing.assert_allclose(fit.params["locs"].numpy(), ref.means_, rtol=rtol, atol=1e-10)
        if case in ("full", "tied"):
            L = fit.params["scale_tril"]
            cov = (L @ L.transpose(-1, -2)).numpy()
        else:
            cov = (fit.params["scales"] ** 2).numpy()
        expected = ref._covars_[:, 0] if case == "spherical" else ref._covars_  # hmmlearn tiles spherical
        np.testing.assert_allclose(cov, expected, rtol=rtol)


@pytest.mark.parametrize("case", ["full", "diag", "spherical", "tied"])
def test_covariances_match_hmmlearn_covars(case):
    ref, model, init = _pair(case, n_iter=3)
    X, seqs = _sequences(ref, [150, 90], seed=14)
    data = model.prepare_data(seqs)
    params = _params(model, data, init)
    np.testing.assert_allclose(model.covariances(params).numpy(), ref.covars_, rtol=1e-12)
    ref.fit(X, [150, 90])  # and after Baum-Welch moved them
    if case == "spherical":  # hmmlearn 0.3 keeps (K, d) tiled variances after fit; covars_ then mis-shapes
        ref.covars_ = ref._covars_[:, 0]
    with pytest.warns(pg.ConvergenceWarning):
        fit = pg.fit(model, seqs, method="em", init=init, max_iter=3, tol=0.0, progress=False)
    cov = fit.model.covariances(fit.params)
    assert cov.shape == (3, 2, 2) and cov.dtype == torch.float64
    np.testing.assert_allclose(cov.numpy(), ref.covars_, rtol=1e-7)
    draws = {k: v.expand((2, 5) + tuple(v.shape)) for k, v in fit.params.items()}  # (chain, draw, ...)
    torch.testing.assert_close(
        model.covariances(draws)[1, 4], cov, rtol=1e-13, atol=0.0
    )  # batched: last bits


def test_covariances_need_gaussian_emissions():
    with pytest.raises(TypeError, match=r"covariances needs Gaussian emissions; .*emission='poisson'"):
        HiddenMarkovModel(2, "poisson").covariances({"rates": torch.ones(2, 1)})
    with pytest.raises(ValueError, match=r"params lacks site\(s\) \['scale_tril'\]"):
        HiddenMarkovModel(2, covariance_type="full").covariances({"locs": torch.zeros(2, 2)})


def test_em_stops_on_hmmlearn_tolerance():
    ref, model, init = _pair("diag", n_iter=100, tol=1e-2)
    X, seqs = _sequences(ref, [300, 200], seed=2)
    ref.fit(X, [300, 200])
    # hmmlearn's tol=1e-2 is on the total log-likelihood; probgen's tol is per time step (500 here)
    fit = pg.fit(model, seqs, method="em", init=init, max_iter=100, tol=1e-2 / 500, progress=False)
    assert fit.converged
    np.testing.assert_allclose(fit.history, np.array(ref.monitor_.history), rtol=1e-8)


@pytest.mark.parametrize("case", ["full", "categorical", "poisson"])
def test_bic_and_aic_match_hmmlearn(case):
    ref, model, init = _pair(case)
    X, seqs = _sequences(ref, [120, 80], seed=3)
    with pytest.warns(pg.ConvergenceWarning):
        fit = pg.fit(model, seqs, method="em", init=init, max_iter=3, tol=0.0, progress=False)
    ref.fit(X, [120, 80])  # not used for the parameters: set them to probgen's below
    ref.startprob_ = fit.params["initial"].numpy()
    ref.transmat_ = fit.params["transition"].numpy()
    if case == "categorical":
        ref.emissionprob_ = fit.params["probs"].numpy()
    elif case == "poisson":
        ref.lambdas_ = fit.params["rates"].numpy()
    else:
        ref.means_ = fit.params["locs"].numpy()
        L = fit.params["scale_tril"]
        ref.covars_ = (L @ L.transpose(-1, -2)).numpy()
    assert fit.bic(seqs) == pytest.approx(ref.bic(X, [120, 80]), rel=1e-10)
    assert fit.aic(seqs) == pytest.approx(ref.aic(X, [120, 80]), rel=1e-10)


def test_brute_force_enumeration_of_every_path():
    ref, model, init = _pair("full")
    x = np.array([[0.5, 0.2], [2.5, 1.5], [-1.0, 3.0], [0.1, -0.3], [2.0, 2.0]])
    data = model.prepare_data(x)
    params = _params(model, data, init)
    log_e = np.stack(
        [
            [
                -0.5 * (x[t] - MEANS[k]) @ np.linalg.solve(COVARS["full"][k], x[t] - MEANS[k])
                - 0.5 * math.log(np.linalg.det(2 * np.pi * COVARS["full"][k]))
                for k in range(3)
            ]
            for t in range(len(x))
        ]
    )
    joint = {}
    for path in itertools.product(range(3), repeat=len(x)):
        lp = math.log(START[path[0]]) + log_e[0, path[0]]
        for t in range(1, len(x)):
            lp += math.log(TRANS[path[t - 1], path[t]]) + log_e[t, path[t]]
        joint[path] = lp
    values = np.array(list(joint.values()))
    total = np.logaddexp.reduce(values)
    assert float(model.log_prob_items(data, params)[0]) == pytest.approx(total, rel=1e-12)
    best = max(joint, key=joint.get)
    path = model.latent_map(data, params)["states"]
    assert tuple(path.tolist()) == best
    marg = np.zeros((len(x), 3))
    for p, lp in joint.items():
        marg[np.arange(len(x)), list(p)] += math.exp(lp - total)
    np.testing.assert_allclose(model.latent_posterior(data, params)["states"].numpy(), marg, atol=1e-12)


@pytest.mark.parametrize("stay", [0.5, 0.995])
def test_long_sequence_blocks_are_exact(stay):
    """Slowly mixing chains need several correction rounds; the answer must not change."""
    K = 4
    trans = np.full((K, K), (1 - stay) / (K - 1)) + np.eye(K) * (stay - (1 - stay) / (K - 1))
    ref = hmm.GaussianHMM(K, covariance_type="diag", init_params="")
    ref.startprob_ = np.full(K, 1 / K)
    ref.transmat_ = trans
    ref.means_ = np.arange(K, dtype=float)[:, None]
    ref.covars_ = np.full((K, 1), 2.0)
    X, _ = ref.sample(20_000, random_state=4)
    model = HiddenMarkovModel(K)
    data = model.prepare_data(X)
    params = _params(
        model,
        data,
        {"initial": ref.startprob_, "transition": trans, "locs": ref.means_, "covars": ref._covars_},
    )
    assert float(model.log_prob_items(data, params)[0]) == pytest.approx(ref.score(X), rel=1e-10)
    np.testing.assert_allclose(
        model.latent_posterior(data, params)["states"].numpy(), ref.predict_proba(X), atol=1e-8
    )
    np.testing.assert_array_equal(model.latent_map(data, params)["states"].numpy(), ref.predict(X))


def test_left_to_right_chain_with_forbidden_transitions():
    """Zeros in the transition matrix: the blocked scans still agree with hmmlearn."""
    trans = np.array([[0.9, 0.1, 0.0], [0.0, 0.95, 0.05], [0.02, 0.0, 0.98]])
    ref = hmm.CategoricalHMM(3, init_params="")
    ref.startprob_ = np.array([1.0, 0.0, 0.0])
    ref.transmat_ = trans
    ref.emissionprob_ = PROBS.copy()
    X, _ = ref.sample(3000, random_state=5)
    model = HiddenMarkovModel(3, "categorical")
    data = model.prepare_data(X)
    params = _params(model, data, {"initial": ref.startprob_, "transition": trans, "probs": PROBS})
    assert float(model.log_prob_items(data, params)[0]) == pytest.approx(ref.score(X), rel=1e-10)
    np.testing.assert_allclose(
        model.latent_posterior(data, params)["states"].numpy(), ref.predict_proba(X), atol=1e-8
    )
    np.testing.assert_array_equal(model.latent_map(data, params)["states"].numpy(), ref.predict(X))


def test_pyro_model_scores_sequences_like_hmmlearn():
    """The DiscreteHMM observation site gives hmmlearn's per-sequence log-likelihood."""
    import pyro.poutine as poutine

    ref, model, init = _pair("full")
    X, seqs = _sequences(ref, [30, 12, 25], seed=6)
    data = model.prepare_data(seqs)
    params = _params(model, data, init)
    trace = poutine.trace(poutine.condition(model.model, data=params)).get_trace(data)
    site = trace.nodes["obs"]
    np.testing.assert_allclose(
        site["fn"].log_prob(site["value"]).detach().numpy(), [ref.score(s) for s in seqs], rtol=1e-10
    )


def test_sampling_follows_the_chain():
    model = HiddenMarkovModel(3, "categorical")
    params = {k: torch.tensor(v) for k, v in {"initial": START, "transition": TRANS, "probs": PROBS}.items()}
    out = model.sample_items(400, params, generator=torch.Generator().manual_seed(0), length=50)
    states = torch.stack(out["states"])
    ys = torch.stack(out["data"])
    assert states.shape == ys.shape == (400, 50)
    counts = torch.zeros(3, 3, dtype=torch.float64)
    counts.index_put_(
        (states[:, :-1].reshape(-1), states[:, 1:].reshape(-1)),
        torch.ones(1, dtype=torch.float64),
        accumulate=True,
    )
    np.testing.assert_allclose((counts / counts.sum(1, keepdim=True)).numpy(), TRANS, atol=0.02)
    np.testing.assert_allclose(torch.bincount(states[:, 0], minlength=3).numpy() / 400, START, atol=0.07)
    emitted = torch.zeros(3, 5, dtype=torch.float64)
    emitted.index_put_(
        (states.reshape(-1), ys.reshape(-1)), torch.ones(1, dtype=torch.float64), accumulate=True
    )
    np.testing.assert_allclose((emitted / emitted.sum(1, keepdim=True)).numpy(), PROBS, atol=0.02)


def test_fit_tools_on_one_and_many_sequences():
    ref, model, init = _pair("diag")
    X, seqs = _sequences(ref, [50, 30], seed=7)
    fit = pg.fit(model, seqs, method="em", init=init, max_iter=20, progress=False)
    one = fit.predict(seqs[0])
    assert isinstance(one, torch.Tensor) and one.shape == (50,)
    many = fit.predict(seqs)
    assert [p.shape[0] for p in many] == [50, 30]
    np.testing.assert_array_equal(many[0].numpy(), one.numpy())
    assert fit.predict_proba(seqs[1]).shape == (30, 3)
    assert fit.log_prob(seqs).shape == (2,)
    sample, latents = fit.sample(4, length=25, return_latents=True)
    assert len(sample) == 4 and sample[0].shape == (25, 2) and latents["states"][0].shape == (25,)
    assert fit.log_prob(sample).shape == (4,)
    idata = fit.to_arviz()
    ll = idata.log_likelihood["obs"].values
    assert ll.shape == (1, 1, 2)
    table = pg.compare(
        {"k=3": fit, "k=2": pg.fit(HiddenMarkovModel(2), seqs, method="em", progress=False, max_iter=50)}
    )
    assert list(table["rank"]) == [0, 1]


def test_pointwise_log_likelihood_is_per_sequence():
    ref, model, init = _pair("poisson")
    X, seqs = _sequences(ref, [60, 20, 45], seed=8)
    with pytest.warns(pg.ConvergenceWarning):
        fit = pg.fit(model, seqs, method="em", init=init, max_iter=1, tol=0.0, progress=False)
    ref.startprob_, ref.transmat_, ref.lambdas_ = (
        fit.params[k].numpy() for k in ("initial", "transition", "rates")
    )
    ll = fit.to_arviz().log_likelihood["obs"].values[0, 0]
    np.testing.assert_allclose(ll, [ref.score(s) for s in seqs], rtol=1e-10)


def test_default_start_finds_well_separated_regimes():
    ref, model, _ = _pair("diag")
    X, seqs = _sequences(ref, [400, 300], seed=11)
    for init in ("kmeans", "random"):
        fit = pg.fit(model, seqs, method="em", init=init, n_init=2, max_iter=200, tol=1e-6, progress=False)
        np.testing.assert_allclose(np.sort(fit.params["locs"][:, 0].numpy()), np.sort(MEANS[:, 0]), atol=0.25)
        assert np.all(np.diff(fit.history) > -1e-8)  # EM never lowers the log-likelihood


def test_save_and_load_round_trip(tmp_path):
    ref, model, init = _pair("full")
    X, seqs = _sequences(ref, [60, 40], seed=12)
    fit = pg.fit(model, seqs, method="em", init=init, max_iter=50, progress=False)
    fit.save(tmp_path / "hmm.npz")
    loaded = pg.load(tmp_path / "hmm.npz")
    assert loaded.model.get_config() == model.get_config()
    ref.startprob_, ref.transmat_, ref.means_ = (
        fit.params[k].numpy() for k in ("initial", "transition", "locs")
    )
    L = fit.params["scale_tril"]
    ref.covars_ = (L @ L.transpose(-1, -2)).numpy()
    np.testing.assert_allclose(loaded.log_prob(seqs).numpy(), [ref.score(s) for s in seqs], rtol=1e-10)


def test_svi_gives_per_sequence_log_likelihood_and_replicates():
    ref, model, init = _pair("categorical")
    X, seqs = _sequences(ref, [40, 25, 30], seed=13)
    fit = pg.fit(
        HiddenMarkovModel(3, "categorical"), seqs, method="svi", num_steps=30, progress=False, seed=0
    )
    idata = fit.to_arviz(posterior_predictive=True, num_ppc_samples=4)
    ll = idata.log_likelihood["obs"].values.reshape(-1, 3)
    post = {
        k: idata.posterior[k].values.reshape((len(ll),) + idata.posterior[k].shape[2:])
        for k in ("initial", "transition", "probs")
    }
    # each draw's log-likelihood of each sequence is hmmlearn's forward score under that draw
    for d in (0, len(ll) // 2, len(ll) - 1):
        ref.startprob_, ref.transmat_, ref.emissionprob_ = (
            post["initial"][d],
            post["transition"][d],
            post["probs"][d],
        )
        np.testing.assert_allclose(ll[d], [ref.score(seq.reshape(-1, 1)) for seq in seqs], rtol=1e-9)
    ref.startprob_, ref.transmat_, ref.emissionprob_ = (
        fit.params[k].numpy() for k in ("initial", "transition", "probs")
    )
    reps = idata.posterior_predictive["obs"].values
    assert reps.shape[-1] == 40 and reps.min() >= 0 and reps.max() < 5
    # replicates come from the fitted emissions: their symbol frequencies follow the stationary mix
    counts = np.bincount(reps.reshape(-1).astype(int), minlength=5) / reps.size
    stationary = np.linalg.matrix_power(ref.transmat_, 200)[0]
    assert np.abs(counts[: PROBS.shape[1]] - stationary @ ref.emissionprob_).max() < 0.15


@pytest.mark.parametrize("n_states", [2, 3])
def test_default_fit_converges_on_the_geyser_series(n_states):
    """The defaults stop within 1e-6 nats per step of where the same start converges.

    hmmlearn's n_iter=10, tol=1e-2 stopped 1e-5 (2 states) and 0.008 (3 states) nats per step short.
    """
    waiting = pg.datasets.load_geyser()["waiting"].to_numpy()
    fit = pg.fit(HiddenMarkovModel(n_states), waiting, method="em", seed=0, progress=False)
    assert fit.converged
    with pytest.warns(pg.ConvergenceWarning):  # tol=0 never stops early: the optimum of this start
        ref = pg.fit(
            HiddenMarkovModel(n_states), waiting, method="em", seed=0, tol=0.0, max_iter=400, progress=False
        )
    gap = (ref.log_prob(waiting).sum() - fit.log_prob(waiting).sum()).item() / len(waiting)
    assert gap == pytest.approx(0.0, abs=1e-6)


def test_convergence_tolerance_is_per_time_step():
    model = HiddenMarkovModel(2)
    seqs = [np.zeros(30), np.ones(70)]
    assert model.em_convergence_scale(model.prepare_data(seqs)) == 100.0
    assert model.em_defaults()["tol"] <= 1e-6 and model.em_defaults()["max_iter"] >= 100


# ------------------------------------------------------------------------------ bad input
def test_sequence_of_wrong_dimension_is_rejected():
    with pytest.raises(
        ValueError, match=r"data has shape \(2, 3, 4\); expected one sequence of shape \(T,\)"
    ):
        HiddenMarkovModel(2).prepare_data(np.zeros((2, 3, 4)))
    with pytest.raises(ValueError, match=r"data\[1\] has 3 features but data\[0\] has 2"):
        HiddenMarkovModel(2).prepare_data([np.zeros((5, 2)), np.zeros((4, 3))])


def test_symbols_outside_the_alphabet_are_rejected():
    with pytest.raises(ValueError, match=r"symbol 7, outside the alphabet 0\.\.4 \(n_symbols=5\)"):
        HiddenMarkovModel(2, "categorical", n_symbols=5).prepare_data([0, 1, 7])
    with pytest.raises(ValueError, match=r"not symbols \(non-negative integers\), e\.g\. -1"):
        HiddenMarkovModel(2, "categorical").prepare_data([0, -1, 2])
    with pytest.raises(ValueError, match=r"not symbols \(non-negative integers\), e\.g\. 1\.5"):
        HiddenMarkovModel(2, "categorical").prepare_data([0, 1.5, 2])
    model = HiddenMarkovModel(3, "categorical")
    params = {k: torch.tensor(v) for k, v in {"initial": START, "transition": TRANS, "probs": PROBS}.items()}
    with pytest.raises(ValueError, match=r"symbol 9, outside the fitted alphabet 0\.\.4"):
        model.log_prob_items(model.prepare_data([0, 9]), params)


def test_empty_sequences_are_rejected():
    with pytest.raises(ValueError, match=r"data\[1\] is an empty sequence \(length 0\)"):
        HiddenMarkovModel(2).prepare_data([np.ones(3), np.ones(0)])
    with pytest.raises(ValueError, match=r"data is an empty list"):
        HiddenMarkovModel(2).prepare_data([])


def test_transition_rows_must_sum_to_one():
    model = HiddenMarkovModel(2)
    data = model.prepare_data(np.arange(6.0))
    bad = {"transition": [[0.9, 0.2], [0.5, 0.5]]}
    with pytest.raises(
        ValueError, match=r"init\['transition'\] must have rows summing to 1 .*row 0 sums to 1\.1"
    ):
        model.init_params(data, init=bad)
    with pytest.raises(ValueError, match=r"init\['transition'\] must have rows summing to 1"):
        pg.fit(model, np.arange(6.0), method="em", init=bad, progress=False)
    with pytest.raises(ValueError, match=r"init\['initial'\] has shape \(3,\); expected \(2,\)"):
        model.init_params(data, init={"initial": [0.2, 0.3, 0.5]})
    with pytest.raises(ValueError, match=r"init has unknown site\(s\) \['means'\]"):
        model.init_params(data, init={"means": [[0.0], [1.0]]})


def test_constructor_and_data_errors_name_the_argument():
    with pytest.raises(ValueError, match=r"n_states must be a positive int; got 0"):
        HiddenMarkovModel(0)
    with pytest.raises(
        ValueError, match=r"emission must be one of 'gaussian', 'categorical', 'poisson'; got 'normal'"
    ):
        HiddenMarkovModel(2, emission="normal")
    with pytest.raises(ValueError, match=r"covariance_type must be one of"):
        HiddenMarkovModel(2, covariance_type="banded")
    with pytest.raises(ValueError, match=r"data has 1 NaN"):
        HiddenMarkovModel(2).prepare_data([1.0, float("nan"), 2.0])
    with pytest.raises(TypeError, match=r"data\[0\] must be numeric"):
        HiddenMarkovModel(2).prepare_data(["a", "b"])
    with pytest.raises(ValueError, match=r"Poisson emissions expect counts"):
        HiddenMarkovModel(2, "poisson").prepare_data([1, 2.5])


# ----------------------------------------------------------------------------- slower
@pytest.mark.slow
def test_a_million_steps_do_not_underflow():
    ref, model, init = _pair("diag")
    rng = np.random.default_rng(9)  # independent regimes: any data will do for scoring
    X = MEANS[rng.integers(0, 3, 1_000_000)] + rng.normal(size=(1_000_000, 2))
    data = model.prepare_data(X)
    params = _params(model, data, init)
    ll = float(model.log_prob_items(data, params)[0])
    assert math.isfinite(ll)
    assert ll == pytest.approx(ref.score(X), rel=1e-10)


@pytest.mark.slow
def test_bayesian_fit_recovers_the_regimes():
    ref, model, init = _pair("diag")
    X, seqs = _sequences(ref, [150, 150], seed=10)
    fit = pg.fit(
        HiddenMarkovModel(3),
        seqs,
        method="mcmc",
        num_samples=100,
        warmup_steps=100,
        num_chains=1,
        progress=False,
    )
    locs = fit.posterior["locs"].mean((0, 1)).numpy()
    np.testing.assert_allclose(np.sort(locs[:, 0]), np.sort(MEANS[:, 0]), atol=0.6)
    assert fit.to_arviz().log_likelihood["obs"].shape == (1, 100, 2)


@pytest.mark.parametrize("case", ["full", "tied", "diag", "spherical"])
@pytest.mark.parametrize("offset", [0.0, 1e4], ids=["near", "far-apart"])
def test_gaussian_emissions_match_scipy_near_and_far(case, offset):
    """Emission log-densities: the expanded quadratic form (states near each other) and the
    whitened residuals it falls back to (one state 1e4 away) both agree with scipy."""
    from scipy.stats import multivariate_normal

    ref, model, init = _pair(case)
    means = MEANS.copy()
    means[2] += offset
    ref.means_ = means
    init = {**init, "locs": means}
    X, seqs = _sequences(ref, [300, 41], seed=3)
    data = model.prepare_data(seqs)
    params = _params(model, data, init)
    lay, vals = model._blocked(data)
    log_e = model._log_emission(vals, params, data=data, block_length=lay.L)
    got = lay.from_blocks(log_e)
    covs = {
        "full": COVARS["full"],
        "tied": [COVARS["tied"]] * 3,
        "diag": [np.diag(v) for v in COVARS["diag"]],
        "spherical": [np.eye(2) * v for v in COVARS["spherical"]],
    }[case]
    for n, s in enumerate(seqs):
        expected = np.stack([multivariate_normal(means[k], covs[k]).logpdf(s) for k in range(3)], 1)
        np.testing.assert_allclose(got[n, : len(s)].numpy(), expected, rtol=1e-12, atol=1e-9)
    np.testing.assert_allclose(
        model.log_prob_items(data, params).numpy(), [ref.score(s) for s in seqs], rtol=1e-10
    )


@pytest.mark.parametrize("case", ["categorical", "categorical-engine", "full", "tied", "diag", "spherical"])
def test_baum_welch_on_long_ragged_series_follows_hmmlearn(case, monkeypatch):
    """Series long enough for the blocked scan, where the E-step works in the engine's
    state-major layout (categorical: emissions gathered and symbol counts scattered; Gaussian:
    the expanded quadratic form and moments about the data mean), ragged and with a padded
    tail, against hmmlearn's scaling implementation.  Categorical E-steps on few sequences run
    the compiled kernel; ``categorical-engine`` forces the engine's path, which serves many
    sequences."""
    from probgen.models import hmm as hmm_module
    from probgen.models._hmm_engine import _scan_layout
    from probgen.models._hmm_layout import _padded_length

    if case == "categorical-engine":
        monkeypatch.setattr(hmm_module, "_COMPILED_SEQUENCES_PER_STATE_SQ", 0)
        case = "categorical"
    lengths = [9000, 3001, 2500]
    ref, model, init = _pair(case, n_iter=3)
    ref.implementation = "scaling"
    X, seqs = _sequences(ref, lengths, seed=4)
    data = model.prepare_data(seqs)
    lay, _ = model._blocked(data)
    assert lay.ragged and lay.Tp == _padded_length(9000)
    assert _scan_layout(lay, 3) is not None and _scan_layout(lay, 3).L != lay.L  # re-blocked scan
    ref.fit(X, lengths)
    with pytest.warns(pg.ConvergenceWarning):
        fit = pg.fit(model, seqs, method="em", init=init, max_iter=3, tol=0.0, progress=False)
    _assert_fit_follows(fit, ref, case, rtol=1e-8)


def test_prepared_series_serve_models_of_other_covariance_types():
    """One prepared long series scored by a full and a diagonal model in turn (each caches its
    own step features on the data): both agree with hmmlearn."""
    lengths = [6000]
    ref_full, full, init_full = _pair("full")
    ref_diag, diag, init_diag = _pair("diag")
    X, _ = _sequences(ref_full, lengths, seed=7)
    data = full.prepare_data(X)
    for ref, model, init in (
        (ref_full, full, init_full),
        (ref_diag, diag, init_diag),
        (ref_full, full, init_full),
    ):
        params = _params(model, data, init)
        stats, ll = model.e_step(data, params)
        assert ll == pytest.approx(ref.score(X), rel=1e-10)
        np.testing.assert_allclose(stats["post"].numpy(), ref.predict_proba(X).sum(0), rtol=1e-9)


@pytest.mark.parametrize("route", ["compiled", "engine"])
def test_long_categorical_series_score_like_hmmlearn(route, monkeypatch):
    """Scoring long ragged symbol series and their state marginals: by the compiled kernel (few
    sequences), and by the engine (many; emissions gathered straight into the scan's layout)."""
    from probgen.models import hmm as hmm_module

    if route == "engine":
        monkeypatch.setattr(hmm_module, "_COMPILED_SEQUENCES_PER_STATE_SQ", 0)
    lengths = [9000, 3001, 2500]
    ref, model, init = _pair("categorical")
    ref.implementation = "scaling"
    X, seqs = _sequences(ref, lengths, seed=8)
    data = model.prepare_data(seqs)
    params = _params(model, data, init)
    np.testing.assert_allclose(
        model.log_prob_items(data, params).numpy(), [ref.score(s) for s in seqs], rtol=1e-10
    )
    post = torch.cat(model.latent_posterior(data, params)["states"]).numpy()
    np.testing.assert_allclose(post, ref.predict_proba(X, lengths), rtol=0, atol=1e-9)
