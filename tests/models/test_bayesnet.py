"""Bayesian networks and naive Bayes against pgmpy and scikit-learn (float64, tolerances stated)."""

from __future__ import annotations

import gzip
import math
import os
import warnings

import networkx as nx
import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import probgen as pg
from probgen.models import BayesianNetwork, NaiveBayes, read_bif, write_bif
from probgen.testing import check_model

pgmpy = pytest.importorskip("pgmpy")
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from pgmpy.inference import VariableElimination
    from pgmpy.readwrite import BIFReader

EXAMPLES = os.path.join(os.path.dirname(pgmpy.__file__), "utils", "example_models")
_CACHE: dict[str, tuple[BayesianNetwork, object]] = {}


def network(name: str) -> tuple[BayesianNetwork, object]:
    """probgen's network read by probgen, pgmpy's read by pgmpy, from the BIF in pgmpy's wheel.

    BIF tables are rounded (alarm's rows sum to 1 +- 1e-7); both sides renormalise, so the
    comparison is about inference, not about which rows a method happens to touch.
    """
    if name not in _CACHE:
        path = os.path.join(EXAMPLES, f"{name}.bif.gz")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ref = BIFReader(string=gzip.open(path, "rt").read()).get_model()
            for cpd in ref.get_cpds():
                cpd.normalize()
        _CACHE[name] = (read_bif(path), ref)
    return _CACHE[name]


def sprinkler() -> BayesianNetwork:
    g = nx.DiGraph([("rain", "sprinkler"), ("rain", "wet"), ("sprinkler", "wet")])
    return BayesianNetwork(
        g,
        states={"rain": ["no", "yes"], "sprinkler": ["off", "on"], "wet": ["dry", "wet"]},
        cpds={
            "rain": [0.8, 0.2],
            "sprinkler": [[0.6, 0.4], [0.99, 0.01]],
            "wet": [[[1.0, 0.0], [0.1, 0.9]], [[0.2, 0.8], [0.01, 0.99]]],
        },
    )


def ref_marginal(ve: object, bn: BayesianNetwork, var: str, evidence: dict) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = ve.query([var], evidence=evidence, show_progress=False)  # type: ignore[attr-defined]
    return np.array([r.values[r.state_names[var].index(s)] for s in bn.states[var]])


# ------------------------------------------------------------------------- exact inference
@pytest.mark.parametrize("name", ["asia", "alarm", "child", "hailfinder"])
@settings(deadline=None, max_examples=4, derandomize=True)
@given(data=st.data())
def test_all_marginals_equal_pgmpy_for_random_evidence(name, data):
    bn, ref = network(name)
    ve = VariableElimination(ref)
    k = data.draw(st.integers(1, 3))
    nodes = data.draw(st.permutations(bn.nodes))[:k]
    evidence = {n: bn.states[n][data.draw(st.integers(0, bn.card(n) - 1))] for n in nodes}
    fit = bn.as_fit()
    try:
        mine = fit.query(evidence=evidence, labels=False)  # every other node in one pass
    except ValueError as err:  # evidence of probability zero: pgmpy cannot answer either
        assert "probability zero" in str(err)
        return
    for var in data.draw(st.permutations(list(mine)))[:6]:
        np.testing.assert_allclose(mine[var].numpy(), ref_marginal(ve, bn, var, evidence), atol=1e-10)
        single = fit.query(var, evidence=evidence, labels=False)[var]
        np.testing.assert_allclose(single.numpy(), mine[var].numpy(), atol=1e-12)


def test_a_network_rebuilt_from_its_own_dag_reads_its_cpds_alike():
    # a copy of the graph must keep each node's parents in the CPDs' axis order (a plain
    # nx.DiGraph copy reorders them, and the flat CPD shapes still fit: silently wrong answers)
    bn, ref = network("alarm")
    again = BayesianNetwork(bn.dag, states=bn.states, cpds=bn.cpds)
    evidence = {"HRBP": "HIGH", "CO": "LOW"}
    mine = again.as_fit().query(evidence=evidence, labels=False)
    ve = VariableElimination(ref)
    for var in ["HYPOVOLEMIA", "LVFAILURE", "KINKEDTUBE", "INTUBATION"]:
        np.testing.assert_allclose(mine[var].numpy(), ref_marginal(ve, bn, var, evidence), atol=1e-10)


@pytest.mark.parametrize("name", ["asia", "alarm"])
def test_map_query_equals_pgmpy(name):
    bn, ref = network(name)
    ve = VariableElimination(ref)
    fit = bn.as_fit()
    evidence = {bn.nodes[1]: bn.states[bn.nodes[1]][0], bn.nodes[-1]: bn.states[bn.nodes[-1]][-1]}
    variables = [n for n in bn.nodes if n not in evidence][:3]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = ve.map_query(variables, evidence=evidence, show_progress=False)
    assert fit.map_query(variables, evidence=evidence) == expected


def test_mpe_by_max_product_equals_the_joint_argmax():
    bn, _ = network("asia")
    fit = bn.as_fit()
    evidence = {"xray": "yes", "dysp": "yes"}
    free = [n for n in bn.nodes if n not in evidence]
    assert fit.map_query(evidence=evidence) == fit.map_query(free, evidence=evidence)


def test_evidence_rows_in_one_call_equal_single_queries():
    bn, _ = network("alarm")
    fit = bn.as_fit()
    rows = bn.to_frame(fit.sample(30, seed=3))[["HRBP", "CO", "SAO2"]].copy()
    rows.loc[::4, "CO"] = None  # a missing evidence entry is summed out, row by row
    batch = fit.query(["HYPOVOLEMIA", "LVFAILURE"], evidence=rows, labels=False)
    for i in range(0, 30, 7):
        ev = {k: v for k, v in rows.iloc[i].items() if not pd.isna(v)}
        single = fit.query(["HYPOVOLEMIA", "LVFAILURE"], evidence=ev, labels=False)
        for var in single:
            np.testing.assert_allclose(batch[var][i].numpy(), single[var].numpy(), atol=1e-12)


def test_joint_query_is_normalised_and_marginalises_to_the_marginals():
    fit = sprinkler().as_fit()
    joint = fit.query(["rain", "sprinkler"], evidence={"wet": "wet"}, joint=True, labels=False)
    assert joint.shape == (2, 2)
    marg = fit.query(["rain", "sprinkler"], evidence={"wet": "wet"}, labels=False)
    np.testing.assert_allclose(joint.sum(1).numpy(), marg["rain"].numpy(), atol=1e-14)
    np.testing.assert_allclose(joint.sum(0).numpy(), marg["sprinkler"].numpy(), atol=1e-14)
    # by hand: P(rain | wet) = sum_s P(r) P(s|r) P(w|r,s) / P(w)
    pw = {
        (r, s): [0.8, 0.2][r] * [[0.6, 0.4], [0.99, 0.01]][r][s] * [[0.0, 0.9], [0.8, 0.99]][r][s]
        for r in (0, 1)
        for s in (0, 1)
    }
    z = sum(pw.values())
    assert float(marg["rain"][1]) == pytest.approx((pw[1, 0] + pw[1, 1]) / z, abs=1e-14)


def test_log_prob_sums_out_missing_entries():
    bn = sprinkler()
    fit = bn.as_fit()
    full = pd.DataFrame({"rain": ["yes", "yes"], "sprinkler": ["off", "on"], "wet": ["wet", "wet"]})
    part = pd.DataFrame({"rain": ["yes"], "sprinkler": [None], "wet": ["wet"]})
    lp_full = fit.log_prob(full)
    assert float(lp_full[0]) == pytest.approx(math.log(0.2 * 0.99 * 0.8), abs=1e-14)
    assert float(fit.log_prob(part)[0]) == pytest.approx(float(torch.logsumexp(lp_full, 0)), abs=1e-14)


@pytest.mark.parametrize("rejection", [True, False])
@pytest.mark.parametrize("evidence", [{"wet": "wet"}, {"wet": "dry", "sprinkler": "on"}])
def test_sample_given_evidence_matches_the_query(evidence, rejection, monkeypatch):
    import probgen.models._bn_inference as bnmod

    if not rejection:  # node by node from P(X | drawn so far, evidence)
        monkeypatch.setattr(bnmod, "_REJECTION_MIN_P", 1.1)
    fit = sprinkler().as_fit()
    draws = fit.sample(4000, evidence=evidence, seed=0, labels=False)
    assert bool((draws[:, 2] == (1 if evidence["wet"] == "wet" else 0)).all())
    freq = float((draws[:, 0] == 1).double().mean())
    exact = float(fit.query("rain", evidence=evidence, labels=False)["rain"][1])
    assert freq == pytest.approx(exact, abs=4 * math.sqrt(exact * (1 - exact) / 4000))


# ------------------------------------------------------------------------------- learning
def test_mle_cpds_equal_pgmpy_on_complete_data():
    bn, ref = network("asia")
    frame = bn.to_frame(bn.as_fit().sample(3000, seed=0))
    fit = pg.fit(BayesianNetwork(bn.dag, states=bn.states), frame, method="em")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from pgmpy.estimators import MaximumLikelihoodEstimator
        from pgmpy.models import DiscreteBayesianNetwork

        m = DiscreteBayesianNetwork(ref.edges())
        m.add_nodes_from(ref.nodes())
        mle = MaximumLikelihoodEstimator(m, frame)
    for node in bn.nodes:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            cpd = mle.estimate_cpd(node)
        order = [cpd.state_names[v] for v in cpd.variables]
        assert all(sorted(o) == sorted(bn.states[v]) for o, v in zip(order, cpd.variables, strict=True))
        values = cpd.values
        for axis, v in enumerate(cpd.variables):  # pgmpy sorts state names; put them in the BIF's order
            values = np.take(values, [cpd.state_names[v].index(s) for s in bn.states[v]], axis=axis)
        parents = cpd.variables[1:]
        values = np.transpose(values, [0] + [1 + parents.index(p) for p in fit.model.parents[node]])
        expected = np.moveaxis(values, 0, -1).reshape(-1, bn.card(node))
        np.testing.assert_allclose(fit.params[f"cpd_{node}"].numpy(), expected, atol=1e-12)


def test_em_with_missing_values_beats_complete_case():
    bn, _ = network("asia")
    truth = bn.as_fit()
    frame = bn.to_frame(truth.sample(3000, seed=1))
    rng = np.random.default_rng(0)
    holed = frame.mask(rng.random(frame.shape) < 0.2)  # 20% missing at random
    empty = BayesianNetwork(bn.dag, states=bn.states)
    em = pg.fit(empty, holed, method="em")
    cc = pg.fit(BayesianNetwork(bn.dag, states=bn.states), holed.dropna(), method="em")
    assert len(holed.dropna()) < 0.3 * len(holed)

    def error(fit: pg.Fit) -> float:  # L1 error of each CPD row, weighted by P(parent configuration)
        total = 0.0
        for n in bn.nodes:
            diff = (fit.params[f"cpd_{n}"] - truth.params[f"cpd_{n}"]).abs().sum(-1)
            par = bn.parents[n]
            weight = (
                truth.query(par, joint=True, labels=False).reshape(-1)
                if par
                else torch.ones(1, dtype=torch.float64)
            )
            total += float((weight * diff).sum())
        return total

    assert em.converged
    assert error(em) < 0.7 * error(cc)
    assert np.all(np.diff(em.history) > -1e-9)  # EM never lowers the observed-data log-likelihood


def test_latent_node_is_learned_by_em():
    bn = sprinkler()
    frame = bn.to_frame(bn.as_fit().sample(2000, seed=2)).drop(columns=["rain"])
    with pytest.warns(pg.IdentifiabilityWarning, match=r"\[.rain.\] are never observed"):
        fit = pg.fit(BayesianNetwork(bn.dag, states=bn.states), frame, method="em", seed=0)
    assert fit.converged and np.isfinite(fit.log_evidence)
    assert np.all(np.diff(fit.history) > -1e-9) and fit.history[-1] > fit.history[0]
    # the fitted marginal of the observed pair is the empirical one (a saturated latent model)
    joint = fit.query(["sprinkler", "wet"], joint=True, labels=False)
    counts = pd.crosstab(frame["sprinkler"], frame["wet"]).loc[["off", "on"], ["dry", "wet"]].to_numpy()
    np.testing.assert_allclose(joint.numpy(), counts / counts.sum(), atol=2e-3)


# --------------------------------------------------------------------------------- BIF, errors
def test_bif_round_trip(tmp_path):
    bn, _ = network("asia")
    write_bif(bn, tmp_path / "asia.bif")
    back = read_bif(tmp_path / "asia.bif")
    assert back.parents == bn.parents and back.states == bn.states
    for n in bn.nodes:
        torch.testing.assert_close(back.cpds[n], bn.cpds[n], atol=1e-15, rtol=0)


def test_fitted_cpds_written_as_bif_read_back_equal(tmp_path):
    bn = sprinkler()
    frame = bn.to_frame(bn.as_fit().sample(500, seed=5))
    fit = pg.fit(BayesianNetwork(bn.dag, states=bn.states), frame, method="em")
    write_bif(fit.model, tmp_path / "fitted.bif", params=fit.params)
    back = read_bif(tmp_path / "fitted.bif")
    for n in bn.nodes:
        torch.testing.assert_close(back.cpds[n], fit.params[f"cpd_{n}"], atol=1e-15, rtol=0)
    assert fit.cpd_table("wet").shape == (4, 2)


def test_a_contraction_too_large_is_refused_before_any_work(monkeypatch):
    import probgen.models._bn_inference as bnmod

    bn, _ = network("alarm")
    monkeypatch.setattr(bnmod, "_MAX_INTERMEDIATE", 10)  # ALARM needs 96 entries at most
    fresh = BayesianNetwork(bn.dag, states=bn.states, cpds=bn.cpds)
    with pytest.raises(ValueError, match=r"would build a table of .* treewidth is <= 4"):
        fresh.as_fit().query(evidence={"HRBP": "HIGH"})


def test_errors_name_the_node_and_state():
    with pytest.raises(ValueError, match="cycle through node"):
        BayesianNetwork(nx.DiGraph([("a", "b"), ("b", "a")]))
    fit = sprinkler().as_fit()
    with pytest.raises(ValueError, match="unknown node 'snow'"):
        fit.query("rain", evidence={"snow": "yes"})
    with pytest.raises(ValueError, match="state 'soaked' of node 'wet' is not declared"):
        fit.query("rain", evidence={"wet": "soaked"})
    with pytest.raises(ValueError, match="unknown node 'hail'"):
        fit.query("hail")
    impossible = pd.DataFrame({"sprinkler": ["off", "off"], "rain": ["no", "no"], "wet": ["dry", "wet"]})
    with pytest.raises(ValueError, match=r"evidence row\(s\) \[1\] have probability zero"):
        fit.query("rain", evidence=impossible)
    g = nx.DiGraph([("rain", "wet")])
    st_ = {"rain": ["no", "yes"], "wet": ["dry", "wet"]}
    with pytest.raises(
        ValueError, match=r"node 'wet': row 1 \(parent configuration \{'rain': 'yes'\}\) sums to 0.9"
    ):
        BayesianNetwork(g, states=st_, cpds={"rain": [0.5, 0.5], "wet": [[0.5, 0.5], [0.5, 0.4]]})
    with pytest.raises(ValueError, match=r"cpd of node 'wet' has shape \(3,\)"):
        BayesianNetwork(g, states=st_, cpds={"rain": [0.5, 0.5], "wet": [0.2, 0.3, 0.5]})
    frame = pd.DataFrame({"rain": ["no", "maybe"], "wet": ["dry", "wet"]})
    with pytest.raises(ValueError, match="state 'maybe' of node 'rain' is not declared"):
        pg.fit(BayesianNetwork(g, states=st_), frame, method="em")


# ------------------------------------------------------------------------------- the contract
@pytest.fixture(scope="module")
def small_frame() -> pd.DataFrame:
    bn = sprinkler()
    return bn.to_frame(bn.as_fit().sample(40, seed=1))


def test_contract_em(small_frame):
    report = check_model(BayesianNetwork(sprinkler().dag), small_frame, methods=["em"])
    assert report["em"]["log_prob brute force"] == "ok"
    assert report["em"]["NaN refused"].startswith("skipped")


@pytest.mark.slow
@pytest.mark.parametrize("method", ["svi", "mcmc"])
def test_contract_posterior_backends(small_frame, method):
    report = check_model(BayesianNetwork(sprinkler().dag), small_frame, methods=[method])
    assert report[method]["save/load"] == "ok"


@pytest.mark.slow
def test_svi_with_missing_values_gives_bayesian_cpds_near_em():
    bn = sprinkler()
    frame = bn.to_frame(bn.as_fit().sample(300, seed=4))
    holed = frame.mask(np.random.default_rng(0).random(frame.shape) < 0.2)
    em = pg.fit(BayesianNetwork(bn.dag, states=bn.states), holed, method="em")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        svi = pg.fit(
            BayesianNetwork(bn.dag, states=bn.states), holed, method="svi", num_steps=400, num_samples=100
        )
    assert svi.posterior["cpd_rain"].shape == (1, 100, 1, 2)
    assert float((svi.params["cpd_rain"] - em.params["cpd_rain"]).abs().max()) < 0.05
    q_svi = svi.query("rain", evidence={"wet": "wet"}, labels=False)["rain"]  # averaged over posterior draws
    q_em = em.query("rain", evidence={"wet": "wet"}, labels=False)["rain"]
    assert float((q_svi - q_em).abs().max()) < 0.1
    assert bool(torch.isfinite(svi.log_prob(holed)).all())


# -------------------------------------------------------------------------------- naive Bayes
def test_naive_bayes_matches_categorical_nb():
    from sklearn.naive_bayes import CategoricalNB

    rng = np.random.default_rng(0)
    n, d = 1500, 6
    y = rng.integers(0, 3, n)
    probs = rng.dirichlet(np.ones(4), size=(3, d))
    x = np.stack([[rng.choice(4, p=probs[y[i], j]) for j in range(d)] for i in range(n)])
    frame = pd.DataFrame(x, columns=[f"f{j}" for j in range(d)])
    train, test = slice(0, 1000), slice(1000, n)
    fit = pg.fit(NaiveBayes(n_classes=3), frame[train].assign(**{"class": y[train]}), method="em")
    mine = fit.predict(frame[test]).numpy()
    ref = CategoricalNB(alpha=1.0, min_categories=4).fit(x[train], y[train]).predict(x[test])
    assert abs((mine == y[test]).mean() - (ref == y[test]).mean()) <= 0.01
    proba = fit.predict_proba(frame[test])
    assert proba.shape == (n - 1000, 3)


def test_semi_supervised_naive_bayes_beats_few_labels():
    rng = np.random.default_rng(1)
    n, d = 1200, 8
    y = rng.integers(0, 2, n)
    probs = rng.dirichlet(np.ones(3) * 0.5, size=(2, d))
    x = np.stack([[rng.choice(3, p=probs[y[i], j]) for j in range(d)] for i in range(n)])
    frame = pd.DataFrame(x, columns=[f"f{j}" for j in range(d)])
    labels = np.where(np.arange(n) < 20, y, -1)  # 20 labelled rows
    test = frame[1000:]
    states = {f"f{j}": [0, 1, 2] for j in range(d)}
    few = pg.fit(NaiveBayes(n_classes=2, states=states), frame[:20].assign(**{"class": y[:20]}), method="em")
    semi = pg.fit(NaiveBayes(n_classes=2), frame[:1000].assign(**{"class": labels[:1000]}), method="em")
    acc_few = (few.predict(test).numpy() == y[1000:]).mean()
    acc_semi = (semi.predict(test).numpy() == y[1000:]).mean()
    assert acc_semi >= acc_few


# ------------------------------------------------------------------------- structure learning
@pytest.fixture(scope="module")
def asia_frame() -> pd.DataFrame:
    bn, _ = network("asia")
    return bn.to_frame(bn.as_fit().sample(5000, seed=0))


@pytest.mark.parametrize("score", ["bic", "bdeu"])
def test_structure_scores_equal_pgmpys(asia_frame, score):
    from probgen.models import structure_score

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from pgmpy.estimators import BIC, BDeu

        ref = (BIC(asia_frame) if score == "bic" else BDeu(asia_frame, equivalent_sample_size=10)).score(
            network("asia")[1]
        )
    mine = structure_score(network("asia")[0].dag, asia_frame, score=score, equivalent_sample_size=10)
    assert mine == pytest.approx(ref, abs=1e-8)


def test_hill_climbing_scores_at_least_pgmpys_and_keeps_the_constraints(asia_frame):
    from probgen.models import learn_structure, structure_score

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from pgmpy.estimators import HillClimbSearch

        ref = HillClimbSearch(asia_frame).estimate(scoring_method="bic-d", show_progress=False)
    g = learn_structure(asia_frame)
    assert nx.is_directed_acyclic_graph(g)
    assert structure_score(g, asia_frame) >= structure_score(ref, asia_frame) - 1e-9
    h = learn_structure(asia_frame, max_indegree=1, black_list=[("either", "xray")])
    assert max(d for _, d in h.in_degree()) <= 1 and not h.has_edge("either", "xray")
    w = learn_structure(asia_frame, white_list=[("smoke", "lung"), ("smoke", "bronc")])
    assert set(w.edges()) <= {("smoke", "lung"), ("smoke", "bronc")}


def test_naive_bayes_contract_and_save_load(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 3, (60, 3))
    y = (x[:, 0] + rng.integers(0, 2, 60)) % 2
    frame = pd.DataFrame(x, columns=["a", "b", "c"]).assign(**{"class": y})
    report = check_model(NaiveBayes(), frame, methods=["em"])
    assert report["em"]["log_prob brute force"] == "ok"
    fit = pg.fit(NaiveBayes(), frame, method="em")
    fit.save(tmp_path / "nb.npz")
    back = pg.load(tmp_path / "nb.npz")
    features = frame[["a", "b", "c"]]
    assert torch.equal(back.predict(features), fit.predict(features))
    torch.testing.assert_close(back.predict_proba(features), fit.predict_proba(features), rtol=0, atol=1e-15)


# ------------------------------------------------------- new data read as the training data were
def _learnt_states_fit():
    dag = nx.DiGraph([("weather", "ground")])
    rng = np.random.default_rng(0)
    weather = rng.choice(["rain", "sun", "snow"], 300, p=[0.3, 0.5, 0.2])
    ground = np.where(weather == "sun", rng.choice(["dry", "wet"], 300, p=[0.9, 0.1]), "wet")
    frame = pd.DataFrame({"weather": weather, "ground": ground})
    return pg.fit(BayesianNetwork(dag), frame, method="em", progress=False), frame


def test_new_rows_are_coded_with_the_states_learnt_in_training():
    fit, frame = _learnt_states_fit()
    few = frame[frame["weather"] == "sun"].head(5)  # shows fewer states than training did
    whole = fit.log_prob(frame)
    torch.testing.assert_close(
        fit.log_prob(few), whole[torch.as_tensor(few.index.to_numpy().copy())], rtol=1e-12, atol=0
    )
    # every sunny row is scored by P(sun) P(ground | sun), counted from the training frame
    p_sun = (frame["weather"] == "sun").mean()
    p_dry = ((frame["ground"] == "dry") & (frame["weather"] == "sun")).sum() / (
        frame["weather"] == "sun"
    ).sum()
    expected = np.log(p_sun) + np.where(few["ground"] == "dry", np.log(p_dry), np.log1p(-p_dry))
    np.testing.assert_allclose(fit.log_prob(few).numpy(), expected, rtol=1e-6)
    with pytest.raises(ValueError, match="hail"):
        fit.log_prob(pd.DataFrame({"weather": ["hail"], "ground": ["wet"]}))


def test_sampling_given_evidence_by_state_name_after_learning_the_states():
    fit, _ = _learnt_states_fit()
    rows = fit.sample(200, evidence={"weather": "snow"}, seed=0, labels=False)
    snow = fit.model.nodes.index("weather")
    states = fit.data.network.states["weather"]
    assert (rows[:, snow] == states.index("snow")).all()


# ------------------------------------------------------------------------------- imputation
def _holed_asia(n: int = 400, frac: float = 0.3) -> tuple[pg.Fit, pd.DataFrame, object]:
    bn, ref = network("asia")
    frame = bn.to_frame(bn.as_fit().sample(n, seed=2))
    holed = frame.mask(np.random.default_rng(1).random(frame.shape) < frac)
    return pg.fit(BayesianNetwork(bn.dag, states=bn.states), holed, method="em"), holed, ref


def _refit_pgmpy(fit: pg.Fit, ref: object) -> VariableElimination:
    """pgmpy's network carrying probgen's fitted CPDs (pgmpy's axes: the node, then its parents)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from pgmpy.factors.discrete import TabularCPD
        from pgmpy.models import DiscreteBayesianNetwork

        net = fit.network
        model = DiscreteBayesianNetwork([(p, n) for n in net.nodes for p in net.parents[n]])
        for n in net.nodes:
            par = net.parents[n]
            t = fit.params[f"cpd_{n}"].reshape(-1, net.card(n)).T.numpy()
            model.add_cpds(
                TabularCPD(
                    n,
                    net.card(n),
                    t,
                    evidence=par or None,
                    evidence_card=[net.card(p) for p in par] or None,
                    state_names={v: list(net.states[v]) for v in [n, *par]},
                )
            )
        return VariableElimination(model)


def test_impute_most_probable_states_equal_pgmpys_marginals_and_keep_observed_cells():
    fit, holed, ref = _holed_asia()
    filled = fit.impute(holed)
    assert list(filled.columns) == list(holed.columns) and filled.index.equals(holed.index)
    assert not filled.isna().any().any()
    seen = holed.notna()
    assert (filled[seen] == holed[seen]).sum().sum() == seen.sum().sum()  # observed cells unchanged
    ve = _refit_pgmpy(fit, ref)
    rows = [i for i in range(len(holed)) if holed.iloc[i].isna().sum() >= 2][:6]
    assert len(rows) == 6
    for i in rows:
        ev = {k: v for k, v in holed.iloc[i].items() if pd.notna(v)}
        for v in holed.columns[holed.iloc[i].isna()]:
            probs = ref_marginal(ve, fit.network, v, ev)
            assert filled.iloc[i][v] == fit.network.states[v][int(np.argmax(probs))]


def test_impute_codes_in_codes_out_and_draws_follow_the_joint_posterior():
    bn = sprinkler()
    fit = bn.as_fit()
    codes = np.array([[np.nan, np.nan, 1.0]] * 4000 + [[0.0, np.nan, np.nan]])  # rain, sprinkler | wet
    mean = fit.impute(codes)
    assert isinstance(mean, np.ndarray) and mean.shape == codes.shape
    q = fit.query(["rain", "sprinkler"], evidence={"wet": "wet"}, joint=True, labels=False)
    best = np.unravel_index(int(q.argmax()), q.shape)
    marg = fit.query(evidence={"wet": "wet"}, labels=False)
    assert mean[0, 0] == int(marg["rain"].argmax()) and mean[0, 1] == int(marg["sprinkler"].argmax())
    draws = fit.impute(codes, method="sample", num_samples=2, seed=0)
    assert len(draws) == 2 and np.array_equal(draws[0][-1, :1], [0.0])
    pairs = draws[0][:-1, :2].astype(int)
    freq = np.zeros((2, 2))
    np.add.at(freq, (pairs[:, 0], pairs[:, 1]), 1.0)
    freq /= len(pairs)
    assert np.abs(freq - q.numpy()).max() < 4 * np.sqrt(0.25 / len(pairs))  # the joint, not the marginals
    assert best == tuple(np.unravel_index(int(freq.argmax()), freq.shape))
    again = fit.impute(codes, method="sample", num_samples=2, seed=0)
    assert np.array_equal(draws[1], again[1])


def test_impute_naive_bayes_fills_the_class_and_features():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 600)
    x = np.where(rng.random((600, 3)) < 0.85, y[:, None], 1 - y[:, None])
    df = pd.DataFrame({"class": y, "a": x[:, 0], "b": x[:, 1], "c": x[:, 2]}).astype(float)
    fit = pg.fit(NaiveBayes(), df, method="em")
    holed = df.iloc[:5].copy()
    holed.iloc[0, 0] = np.nan  # class missing: Bayes' rule
    holed.iloc[1, 1:3] = np.nan
    filled = fit.impute(holed)
    assert filled.iloc[0, 0] == fit.predict(holed.iloc[:1, 1:]).tolist()[0]
    assert filled.iloc[1, 1] == filled.iloc[1, 2] == filled.iloc[1, 0]  # features follow the class
    assert filled.iloc[2:].equals(holed.iloc[2:].astype(filled.dtypes.to_dict()))


def test_impute_of_a_posterior_fit_is_a_state_not_an_average_of_codes():
    bn = sprinkler()
    frame = bn.to_frame(bn.as_fit().sample(300, seed=4))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        svi = pg.fit(
            BayesianNetwork(bn.dag, states=bn.states), frame, method="svi", num_steps=200, num_samples=50
        )
    holed = frame.iloc[:20].copy()
    holed.iloc[:, 0] = None
    filled = svi.impute(holed)
    q = svi.query("rain", evidence=holed.drop(columns="rain"), labels=False)["rain"]
    expect = [bn.states["rain"][int(k)] for k in q.argmax(-1)]
    assert filled["rain"].tolist() == expect


def test_impute_refuses_rows_of_probability_zero():
    chain = nx.DiGraph([("a", "b"), ("b", "c")])
    cpds = {"a": [0.5, 0.5], "b": [[1.0, 0.0], [0.5, 0.5]], "c": [[0.5, 0.5], [0.5, 0.5]]}
    fit = BayesianNetwork(chain, states={v: [0, 1] for v in "abc"}, cpds=cpds).as_fit()
    with pytest.raises(ValueError, match="probability zero"):
        fit.impute(np.array([[0.0, 1.0, np.nan]]))  # b = 1 cannot follow a = 0
