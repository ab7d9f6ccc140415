"""EM on a user-written mixture: the hand-derived closed-form fixed point, and monotonicity."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import probgen as pg
from tests.core.models import make_mixture

SCALE = 0.8


def _closed_form_em(x: np.ndarray, w: np.ndarray, mu: np.ndarray, iters: int = 2000):
    """EM for a 2-component mixture with known common scale, derived by hand."""
    for _ in range(iters):
        log_joint = np.log(w) - 0.5 * ((x[:, None] - mu) / SCALE) ** 2
        resp = np.exp(log_joint - log_joint.max(1, keepdims=True))
        resp /= resp.sum(1, keepdims=True)
        nk = resp.sum(0)
        w, mu = nk / len(x), (resp * x[:, None]).sum(0) / nk
    log_norm = -0.5 * np.log(2 * np.pi * SCALE**2)
    lj = np.log(w) + log_norm - 0.5 * ((x[:, None] - mu) / SCALE) ** 2
    ll = np.logaddexp(lj[:, 0], lj[:, 1]).sum()
    return w, mu, ll


def test_generic_em_follows_the_closed_form_updates(float64):
    rng = np.random.default_rng(1)
    x = np.concatenate([rng.normal(-1.5, SCALE, 70), rng.normal(1.0, SCALE, 30)])
    w0, mu0 = np.array([0.5, 0.5]), np.array([-0.2, 0.3])  # starting values away from the answer
    fit = pg.fit(
        make_mixture(SCALE),
        x,
        method="em",
        progress=False,
        tol=1e-9,
        max_iter=500,
        init={"weights": torch.tensor(w0), "locs": torch.tensor(mu0)},
    )
    assert fit.converged
    n_m_steps = len(fit.history)  # an M-step follows every E-step, the last one included
    for it in (1, 5, n_m_steps):  # the whole trajectory, not just the end point
        _, _, ll_ref = _closed_form_em(x, w0, mu0, iters=it - 1)
        assert fit.history[it - 1] == pytest.approx(ll_ref, abs=1e-7)
    w_ref, mu_ref, ll_ref = _closed_form_em(x, w0, mu0, iters=n_m_steps)
    assert fit.params["weights"].numpy() == pytest.approx(w_ref, abs=1e-7)
    assert fit.params["locs"].numpy() == pytest.approx(mu_ref, abs=1e-7)
    assert fit.log_prob(x).sum().item() == pytest.approx(ll_ref, abs=1e-7)
    # BIC: 1 free weight + 2 locations
    assert fit.bic() == pytest.approx(-2 * ll_ref + 3 * np.log(len(x)), abs=1e-6)
    # ... and the fixed point it reached is the closed-form one
    w_fix, mu_fix, _ = _closed_form_em(x, w0, mu0, iters=3000)
    assert fit.params["locs"].numpy() == pytest.approx(mu_fix, abs=1e-4)


@settings(deadline=None, max_examples=8)
@given(seed=st.integers(0, 2**16), n=st.integers(5, 40), gap=st.floats(0.0, 4.0))
def test_generic_em_never_lowers_the_log_likelihood(seed, n, gap):
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        rng = np.random.default_rng(seed)
        x = np.concatenate([rng.normal(0, 1, n), rng.normal(gap, 1, n)])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", pg.ConvergenceWarning)  # tol=0 never converges: intended
            fit = pg.fit(make_mixture(1.0), x, method="em", seed=seed, progress=False, max_iter=15, tol=0.0)
        assert np.diff(fit.history).min() >= -1e-9
    finally:
        torch.set_default_dtype(old)


def test_em_restarts_keep_the_best(float64):
    rng = np.random.default_rng(3)
    x = np.concatenate([rng.normal(-3, 1, 40), rng.normal(3, 1, 40)])
    single = [pg.fit(make_mixture(1.0), x, method="em", seed=s, progress=False).history[-1] for s in range(3)]
    best = pg.fit(make_mixture(1.0), x, method="em", seed=0, n_init=3, progress=False)
    assert best.history[-1] == pytest.approx(max(single), abs=1e-8)


def test_em_refuses_per_item_continuous_latents():
    from probgen.errors import ModelNotSupportedError
    from tests.core.test_fit import eight_schools

    with pytest.raises(ModelNotSupportedError, match="continuous per-item latent sites \\['theta'\\]"):
        pg.fit(eight_schools, torch.zeros(8), method="em", progress=False)


def test_generic_em_recovers_when_a_line_search_leaves_the_support():
    """On these data L-BFGS's full first step of the M-step takes sigma out of its support; the
    M-step restarts with a smaller step and EM still reaches the least-squares MLE."""
    import pandas as pd

    from tests.core import gallery

    y = (
        0.5
        + gallery.X_REG.double().numpy() @ gallery.BETA_TRUE
        + np.random.default_rng(10).normal(0, 0.7, 25)
    )
    fit = pg.fit(pg.model(gallery.regression), pd.Series(y), method="em", seed=0, progress=False)
    a = np.c_[np.ones(len(y)), gallery.X_REG.double().numpy()]
    coef = np.linalg.lstsq(a, y, rcond=None)[0]
    s2 = float(((y - a @ coef) ** 2).mean())
    assert fit.log_likelihood() == pytest.approx(-0.5 * len(y) * (np.log(2 * np.pi * s2) + 1), abs=1e-3)
