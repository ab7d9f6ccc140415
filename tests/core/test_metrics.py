"""Two-sample MMD: the estimate against a double loop by hand, the permutation test's calibration."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from probgen.metrics import MMDTestResult, mmd, mmd_test


def _mmd_by_hand(x: np.ndarray, y: np.ndarray, h: float) -> float:
    """Unbiased MMD^2 with a Gaussian kernel, one pair at a time (Gretton et al. 2012, eq. 3)."""

    def k(a: np.ndarray, b: np.ndarray) -> float:
        return math.exp(-float(((a - b) ** 2).sum()) / (2 * h * h))

    m, n = len(x), len(y)
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(n)) / (m * n)
    return xx + yy - 2 * xy


def _median_by_hand(x: np.ndarray, y: np.ndarray) -> float:
    z = np.concatenate([x, y])
    d = [float(np.sqrt(((z[i] - z[j]) ** 2).sum())) for i in range(len(z)) for j in range(i + 1, len(z))]
    return float(np.median(d))


def test_mmd_equals_the_double_loop_with_a_given_bandwidth():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(5, 3)), rng.normal(0.5, 1.5, size=(7, 3))
    for h in (0.3, 1.0, 2.5):
        assert mmd(x, y, bandwidth=h) == pytest.approx(_mmd_by_hand(x, y, h), rel=1e-10, abs=1e-14)


def test_mmd_uses_the_median_heuristic_on_the_pooled_sample():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(6, 2)), rng.normal(1.0, 1.0, size=(4, 2))
    h = _median_by_hand(x, y)
    assert mmd(x, y) == pytest.approx(_mmd_by_hand(x, y, h), rel=1e-10)
    assert mmd_test(x, y, num_permutations=10).bandwidth == pytest.approx(h, rel=1e-12)
    # a bandwidth 3x off gives a different number: the default is not an arbitrary constant
    assert mmd(x, y) != pytest.approx(_mmd_by_hand(x, y, 3 * h), rel=1e-3)


def test_mmd_accepts_numpy_torch_pandas_and_lists_alike():
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(8, 2)), rng.normal(size=(9, 2))
    want = _mmd_by_hand(x, y, 0.7)
    for a, b in [
        (torch.as_tensor(x, dtype=torch.float32), torch.as_tensor(y)),
        (pd.DataFrame(x), pd.DataFrame(y)),
        (x.tolist(), y.astype(np.float32).tolist()),
    ]:
        assert mmd(a, b, bandwidth=0.7) == pytest.approx(want, rel=1e-6)
    # one feature may be given as a 1-D array
    assert mmd(x[:, 0], y[:, 0], bandwidth=0.7) == pytest.approx(
        _mmd_by_hand(x[:, :1], y[:, :1], 0.7), rel=1e-10
    )


def test_mmd_test_statistic_matches_mmd_and_the_result_is_frozen():
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(30, 2)), rng.normal(size=(40, 2))
    result = mmd_test(x, y, bandwidth=0.8, num_permutations=20)
    assert isinstance(result, MMDTestResult)
    assert result.statistic == pytest.approx(_mmd_by_hand(x, y, 0.8), rel=1e-10)
    assert result.bandwidth == 0.8
    assert 1 / 21 <= result.p_value <= 1.0
    with pytest.raises(AttributeError):
        result.p_value = 0.0  # type: ignore[misc]


def test_mmd_test_p_values_are_roughly_uniform_under_the_null():
    p = []
    for seed in range(50):
        rng = np.random.default_rng(100 + seed)
        x, y = rng.normal(size=(40, 2)), rng.normal(size=(50, 2))
        p.append(mmd_test(x, y, num_permutations=200, seed=seed).p_value)
    p_arr = np.asarray(p)
    # Binomial(50, 0.05) exceeds 6 with probability ~0.01; a biased test gives far more
    assert (p_arr < 0.05).sum() <= 6
    assert 0.35 < p_arr.mean() < 0.65
    assert (p_arr > 0.5).sum() >= 15  # not piled up near 0


def test_mmd_test_p_value_is_tiny_for_different_distributions():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(80, 2))
    y = rng.standard_t(3, size=(80, 2)) * 0.6 + np.array([0.7, 0.0])
    result = mmd_test(x, y, num_permutations=500, seed=0)
    assert result.p_value == pytest.approx(1 / 501)
    assert result.statistic > 0


def test_mmd_test_is_reproducible_by_seed_and_leaves_the_global_rng_alone():
    rng = np.random.default_rng(5)
    x, y = rng.normal(size=(20, 2)), rng.normal(0.3, 1.0, size=(20, 2))
    before = torch.random.get_rng_state().clone()
    a, b = mmd_test(x, y, seed=7), mmd_test(x, y, seed=7)
    assert torch.random.get_rng_state().equal(before)
    assert a == b


@pytest.mark.parametrize(
    "x, y, kwargs, error, match",
    [
        (np.zeros((5, 2)), np.zeros((5, 3)), {}, ValueError, "same number of features"),
        (np.zeros((1, 2)), np.zeros((5, 2)), {}, ValueError, "x must have at least 2 items"),
        (np.zeros((5, 2)), np.zeros((1, 2)), {}, ValueError, "y must have at least 2 items"),
        (np.full((5, 2), np.nan), np.zeros((5, 2)), {}, ValueError, "x has 10 NaN"),
        (np.zeros((5, 2, 2)), np.zeros((5, 2)), {}, ValueError, "x must be 2-D"),
        (np.array([["a", "b"]] * 3), np.zeros((3, 2)), {}, TypeError, "x must be numeric"),
        (np.zeros((5, 2)), np.zeros((5, 2)), {"bandwidth": 0.0}, ValueError, "bandwidth must be a positive"),
        (np.zeros((5, 2)), np.zeros((5, 2)), {"bandwidth": "1"}, TypeError, "bandwidth must be a positive"),
    ],
)
def test_bad_input_is_refused(x, y, kwargs, error, match):
    with pytest.raises(error, match=match):
        mmd(x, y, **kwargs)
    with pytest.raises(error, match=match):
        mmd_test(x, y, **kwargs)


def test_bad_test_options_are_refused():
    x = np.zeros((5, 2))
    with pytest.raises(ValueError, match="num_permutations must be a positive int; got 0"):
        mmd_test(x, x, num_permutations=0)
    with pytest.raises(TypeError, match="num_permutations must be a positive int"):
        mmd_test(x, x, num_permutations=1.5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="seed must be an int"):
        mmd_test(x, x, seed="0")  # type: ignore[arg-type]
