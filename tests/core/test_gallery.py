"""The contract suite over a gallery of user styles (tests/core/gallery.py)."""

from __future__ import annotations

import pytest

from probgen.testing import check_model
from tests.core.gallery import GALLERY, make

EXPECTED_METHODS = {
    "all-discrete": {"em", "enum"},
    "vindex-mixture": {"em", "mcmc", "svi"},
    "plain-indexing": {"em", "mcmc", "svi"},
    "items-on-dim-2": {"em", "mcmc", "svi"},
    "to-event-in-plate": {"em", "mcmc", "svi"},
    "pyro-param": {"em", "svi"},
    "global-change-point": {"em", "mcmc", "svi"},
    "regression-X-beta": {"em", "mcmc", "svi"},
    "zero-inflated": {"em", "mcmc", "svi"},
    "hand-written-guide": {"em", "mcmc", "svi"},
    "local-latents": {"mcmc", "svi"},
    "categorical-labels": {"em", "mcmc", "svi"},
    "covariates-mapping": {"em", "mcmc", "svi"},
    "logistic-tuple": {"em", "mcmc", "svi"},
    "group-indices": {"em", "mcmc", "svi"},
    "markov-one-sequence": {"em", "mcmc", "svi"},
}


SLOW = {"markov-one-sequence"}  # every draw scored by its own enumerated trace: minutes, not seconds


@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n for n in sorted(GALLERY)]
)
def test_gallery_passes_the_contract(name):
    model, data, by_hand = make(name)
    report = check_model(model, data, log_prob_by_hand=by_hand)
    assert set(report) == EXPECTED_METHODS[name]
