"""A property-based fuzz suite (Hypothesis, derandomised, bounded): awkward and bad data for the
families and backends, in the survey's categories.  Every call either gives finite numbers or
raises a ``ValueError``/``TypeError`` that probgen itself raises (the traceback's last frame is in
probgen), never NaN and never a library's raw error."""

from __future__ import annotations

import json
import os
import sys
import traceback
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import probgen as pg  # noqa: E402
from probgen.models import (  # noqa: E402
    BernoulliMixture,
    CategoricalMixture,
    GaussianMixture,
    HiddenMarkovModel,
    PoissonMixture,
)

# a warning (EM stopped at max_iter) is an answer, not a failure
pytestmark = pytest.mark.filterwarnings("ignore::probgen.errors.ConvergenceWarning")

ROOT = Path(pg.__file__).resolve().parents[1]
OURS = tuple(str(ROOT / d) for d in ("probgen", "models", "inference"))

#: PROBGEN_FUZZ_SCALE=k runs k times the examples (a longer tally; CI runs 1).
SCALE = int(os.environ.get("PROBGEN_FUZZ_SCALE", "1"))

SETTINGS = settings(
    max_examples=12 * SCALE,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

#: The survey's categories of awkward data: the name is the parameter, the values are generated.
KINDS = ("huge", "tiny", "constant", "duplicated", "integer", "mixed-scale", "one-item", "nan", "inf")


def _data(kind: str, n: int, d: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d))
    if kind == "huge":
        return x * 1e150
    if kind == "tiny":
        return x * 1e-150
    if kind == "constant":
        return np.full((n, d), 3.0)
    if kind == "duplicated":
        return np.repeat(x[:2], n // 2 + 1, 0)[:n]
    if kind == "integer":
        return rng.integers(0, 5, size=(n, d)).astype(float)
    if kind == "mixed-scale":
        return x * np.logspace(-8, 8, d)
    if kind == "one-item":
        return x[:1]
    if kind == "nan":
        x[0, 0] = np.nan
        return x
    x[-1, -1] = np.inf
    return x


#: Outcomes by test and category (ok / clear / raw / silent); with PROBGEN_FUZZ_TALLY=path they are
#: written there as JSON when the module ends (raw errors and silent NaN still fail their test).
TALLY: Counter[tuple[str, str]] = Counter()


@pytest.fixture(scope="module", autouse=True)
def _write_tally():
    yield
    path = os.environ.get("PROBGEN_FUZZ_TALLY")
    if path:
        Path(path).write_text(json.dumps([[t, c, n] for (t, c), n in sorted(TALLY.items())]))


def _outcome(call) -> str:
    """'ok' (finite numbers), 'clear' (probgen's ValueError/TypeError), else raise."""
    test = sys._getframe(1).f_code.co_name
    try:
        out = call()
    except (ValueError, TypeError) as err:
        frames = traceback.extract_tb(err.__traceback__)
        origin = frames[-1].filename if frames else ""
        ours = origin.startswith(OURS)
        TALLY[test, "clear" if ours else "raw"] += 1
        assert ours, f"{type(err).__name__} raised outside probgen, at {origin}: {err}"
        return "clear"
    except Exception:
        TALLY[test, "raw"] += 1
        raise
    values = out if isinstance(out, list | tuple) else [out]
    for v in values:
        t = torch.as_tensor(np.asarray(v, dtype=float)) if not isinstance(v, torch.Tensor) else v
        finite = bool(torch.isfinite(t.double()).all())
        if not finite:
            TALLY[test, "silent"] += 1
        assert finite, f"non-finite output {t}"
    TALLY[test, "ok"] += 1
    return "ok"


def _fit_and_score(model, x, method="em", **options):
    def call():
        fit = pg.fit(model, x, method=method, seed=0, progress=False, **options)
        return [
            fit.log_prob(x),
            torch.as_tensor(fit.bic()),
            fit.predict(x) if method != "svi" else fit.log_prob(x),
        ]

    return call


@SETTINGS
@given(kind=st.sampled_from(KINDS), n=st.integers(1, 40), d=st.integers(1, 3), seed=st.integers(0, 3))
def test_gaussian_mixtures(kind, n, d, seed):
    x = _data(kind, n, d, seed)
    for cov in ("full", "diag"):
        _outcome(_fit_and_score(GaussianMixture(2, covariance_type=cov), x, max_iter=50))


@SETTINGS
@given(kind=st.sampled_from(KINDS), n=st.integers(1, 40), d=st.integers(1, 3), seed=st.integers(0, 3))
def test_discrete_mixtures(kind, n, d, seed):
    x = _data(kind, n, d, seed)
    counts = np.abs(np.round(x))
    _outcome(_fit_and_score(PoissonMixture(2), counts, max_iter=50))
    _outcome(_fit_and_score(BernoulliMixture(2), (x > 0).astype(float) if kind not in ("nan", "inf") else x))
    _outcome(_fit_and_score(CategoricalMixture(2), counts, max_iter=50))


@SETTINGS
@given(kind=st.sampled_from(KINDS), n=st.integers(1, 40), seed=st.integers(0, 3))
def test_hidden_markov_models(kind, n, seed):
    x = _data(kind, n, 1, seed)[:, 0]
    _outcome(_fit_and_score(HiddenMarkovModel(2, emission="gaussian"), x, max_iter=30))
    _outcome(_fit_and_score(HiddenMarkovModel(2, emission="poisson"), np.abs(np.round(x)), max_iter=30))


BAD_OPTIONS = st.sampled_from(
    [
        {"max_iter": 0},
        {"max_iter": -3},
        {"tol": -1.0},
        {"tol": float("nan")},
        {"n_init": 0},
        {"seed_typo": 1},
        {"init": "nope"},
        {"max_iter": "many"},
    ]
)


@SETTINGS
@given(options=BAD_OPTIONS)
def test_bad_options_are_refused_by_probgen(options):
    x = _data("integer", 20, 2, 0)
    assert _outcome(lambda: pg.fit(GaussianMixture(2), x, method="em", progress=False, **options)) == "clear"


@SETTINGS
@given(seed=st.one_of(st.integers(-(2**70), -1), st.integers(2**63, 2**80), st.floats(), st.text(max_size=3)))
def test_bad_seeds_are_refused_by_probgen(seed):
    x = _data("integer", 20, 2, 0)
    assert _outcome(lambda: pg.fit(GaussianMixture(2), x, method="em", seed=seed, progress=False)) == "clear"


# ----------------------------------------------------------------- neural families, networks
NEURAL = settings(SETTINGS, max_examples=8 * SCALE)


def _score_and_sample(model, x, method, **options):
    def call():
        fit = pg.fit(model, x, method=method, seed=0, progress=False, **options)
        return [fit.log_prob(x), fit.sample(3)]

    return call


@NEURAL
@given(kind=st.sampled_from(KINDS), n=st.integers(1, 24), seed=st.integers(0, 3))
def test_vaes(kind, n, seed):
    from probgen.models import VAE

    x = _data(kind, n, 4, seed)
    unit = 1.0 / (1.0 + np.exp(-np.clip(x, -50, 50))) if kind not in ("nan", "inf") else x
    _outcome(_score_and_sample(VAE(4, 2, hidden_dims=(8,)), unit, "svi", num_steps=5))
    _outcome(_score_and_sample(VAE(4, 2, hidden_dims=(8,), likelihood="gaussian"), x, "svi", num_steps=5))


@NEURAL
@given(kind=st.sampled_from(KINDS), n=st.integers(1, 24), seed=st.integers(0, 3))
def test_rbms_and_gans(kind, n, seed):
    from probgen.models import GAN, RBM

    x = _data(kind, n, 4, seed)
    binary = (x > 0).astype(float) if kind not in ("nan", "inf", "integer") else x
    _outcome(_score_and_sample(RBM(4, 3), binary, "cd", num_steps=2))

    def gan():
        fit = pg.fit(
            GAN(4, 2, hidden_dims=(8,)), x, method="adversarial", num_steps=3, seed=0, progress=False
        )
        return [fit.sample(3)]

    _outcome(gan)


TEXTS = st.one_of(
    st.text(min_size=0, max_size=40),
    st.sampled_from(["a", "ab" * 30, "\x00\x01\x02" * 5, "é漢字🙂" * 4, " " * 20]),
)


@NEURAL
@given(text=TEXTS, other=TEXTS)
def test_char_rnns(text, other):
    from probgen.models import CharRNN

    def call():
        fit = pg.fit(
            CharRNN(hidden_size=6, embedding_dim=3, seq_len=8),
            text,
            method="svi",
            num_steps=3,
            seed=0,
            progress=False,
        )
        return [fit.log_prob(other), fit.log_prob(text)]

    _outcome(call)


@NEURAL
@given(
    codes=st.lists(st.integers(-3, 2**40), min_size=0, max_size=30),
    missing=st.floats(0.0, 1.0),
    seed=st.integers(0, 3),
)
def test_bayesian_networks_and_naive_bayes(codes, missing, seed):
    import networkx as nx
    import pandas as pd

    from probgen.models import BayesianNetwork, NaiveBayes

    rng = np.random.default_rng(seed)
    n = len(codes)
    frame = pd.DataFrame({"a": codes, "b": rng.integers(0, 2, n), "c": rng.integers(0, 3, n)}, dtype=float)
    frame = frame.mask(rng.random(frame.shape) < missing * 0.5)
    dag = nx.DiGraph([("a", "b"), ("b", "c")])

    def network():
        fit = pg.fit(BayesianNetwork(dag), frame, method="em", progress=False, max_iter=10)
        return [fit.log_prob(frame.dropna())] if len(frame.dropna()) else [torch.zeros(1)]

    _outcome(network)

    def naive():
        fit = pg.fit(NaiveBayes(class_variable="c"), frame, method="em", progress=False, max_iter=10)
        rows = frame.dropna()
        return [fit.log_prob(rows)] if len(rows) else [torch.zeros(1)]

    _outcome(naive)


# ------------------------------------------------------------------ SVI and MCMC, user models
def _user_normal(x=None):
    import pyro
    import pyro.distributions as dist

    loc = pyro.sample("loc", dist.Normal(0.0, 10.0))
    scale = pyro.sample("scale", dist.LogNormal(0.0, 1.0))
    with pyro.plate("data", 5 if x is None else len(x)):
        return pyro.sample("x", dist.Normal(loc, scale), obs=x)


@NEURAL
@given(kind=st.sampled_from(KINDS), n=st.integers(1, 30), d=st.integers(1, 2), seed=st.integers(0, 3))
def test_svi_and_mcmc_on_a_user_model_and_a_mixture(kind, n, d, seed):
    x = _data(kind, n, d, seed)
    flat = x[:, 0] if d == 1 else x
    _outcome(_fit_and_score(pg.model(_user_normal), flat, method="svi", num_steps=20))
    _outcome(
        _fit_and_score(
            pg.model(_user_normal), flat, method="mcmc", num_samples=10, warmup_steps=10, num_chains=2
        )
    )
    _outcome(_fit_and_score(GaussianMixture(2), x, method="svi", num_steps=20))
