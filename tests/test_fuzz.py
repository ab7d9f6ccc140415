"""A property-based fuzz suite (Hypothesis, derandomised, bounded): awkward and bad data for the
families and backends, in the survey's categories.  Every call either gives finite numbers or
raises a ``ValueError``/``TypeError`` that probgen itself raises (the traceback's last frame is in
probgen), never NaN and never a library's raw error."""

from __future__ import annotations

import traceback
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

SETTINGS = settings(
    max_examples=12,
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


def _outcome(call) -> str:
    """'ok' (finite numbers), 'clear' (probgen's ValueError/TypeError), else raise."""
    try:
        out = call()
    except (ValueError, TypeError) as err:
        frames = traceback.extract_tb(err.__traceback__)
        origin = frames[-1].filename if frames else ""
        assert origin.startswith(OURS), f"{type(err).__name__} raised outside probgen, at {origin}: {err}"
        return "clear"
    values = out if isinstance(out, list | tuple) else [out]
    for v in values:
        t = torch.as_tensor(np.asarray(v, dtype=float)) if not isinstance(v, torch.Tensor) else v
        assert bool(torch.isfinite(t.double()).all()), f"non-finite output {t}"
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
