"""Every family through the shared contract (probgen.testing.check_model), every backend that serves it."""

from __future__ import annotations

import numpy as np
import pytest

import probgen as pg
from probgen.models import (
    BernoulliMixture,
    CategoricalMixture,
    GaussianMixture,
    HiddenMarkovModel,
    PoissonMixture,
)
from probgen.testing import check_model

RNG = np.random.default_rng(3)
FAITHFUL = pg.datasets.load_old_faithful().to_numpy()[:60]
WAITING = pg.datasets.load_geyser()["waiting"].to_numpy()[:80]

FAMILIES = {
    "gaussian-full": (lambda: GaussianMixture(n_components=2, covariance_type="full"), FAITHFUL),
    "gaussian-diag": (lambda: GaussianMixture(n_components=2, covariance_type="diag"), FAITHFUL),
    "gaussian-spherical": (lambda: GaussianMixture(n_components=2, covariance_type="spherical"), FAITHFUL),
    "gaussian-tied": (lambda: GaussianMixture(n_components=2, covariance_type="tied"), FAITHFUL),
    "bernoulli": (lambda: BernoulliMixture(n_components=2), (RNG.random((40, 5)) < 0.4).astype(float)),
    "categorical": (lambda: CategoricalMixture(n_components=2, n_categories=4), RNG.integers(0, 4, (40, 3))),
    "poisson": (lambda: PoissonMixture(n_components=2), RNG.poisson(3.0, (40, 2))),
    "hmm-gaussian": (lambda: HiddenMarkovModel(n_states=2, emission="gaussian"), WAITING),
    "hmm-categorical": (
        lambda: HiddenMarkovModel(n_states=2, emission="categorical"),
        [RNG.integers(0, 3, 30), RNG.integers(0, 3, 20)],
    ),
}
SLOW = {"gaussian-full", "gaussian-tied", "gaussian-spherical", "hmm-categorical"}


@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n for n in sorted(FAMILIES)]
)
def test_family_passes_the_contract(name):
    make, data = FAMILIES[name]
    # few draws: the contract checks identities and shapes, not converged posteriors
    report = check_model(make(), data, options={"mcmc": {"num_samples": 15, "warmup_steps": 15}})
    assert {"em", "mcmc", "svi"} <= set(report)
    # every check runs for a family (HMM items are whole sequences: no one label per item)
    expected = {"predict vs predict_proba"} if name.startswith("hmm") else set()
    for method, rows in report.items():
        skipped = {c: r for c, r in rows.items() if str(r).startswith("skipped")}
        assert set(skipped) == expected, (method, skipped)
    assert report["em"]["save/load"] == "ok"
