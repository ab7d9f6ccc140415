"""Exact enumeration against brute-force sums over every assignment."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

import probgen as pg
from tests.core.models import sprinkler

P_SPRINKLER = torch.tensor([0.5, 0.1], dtype=torch.float64)
P_RAIN = torch.tensor([0.2, 0.8], dtype=torch.float64)
P_WET = torch.tensor([[0.01, 0.9], [0.9, 0.99]], dtype=torch.float64)


def _bern(p: float, x: int) -> float:
    return p if x == 1 else 1.0 - p


def _joint(c: int, s: tuple[int, ...], r: tuple[int, ...], wet: list[int]) -> float:
    prob = 0.5
    for d, w in enumerate(wet):
        prob *= _bern(float(P_SPRINKLER[c]), s[d]) * _bern(float(P_RAIN[c]), r[d])
        prob *= _bern(float(P_WET[s[d], r[d]]), w)
    return prob


def _brute_force(wet: list[int]):
    n = len(wet)
    table = {}
    for c in (0, 1):
        for s in itertools.product((0, 1), repeat=n):
            for r in itertools.product((0, 1), repeat=n):
                table[(c, s, r)] = _joint(c, s, r, wet)
    evidence = sum(table.values())
    p_cloudy = sum(v for (c, _, _), v in table.items() if c == 1) / evidence
    p_rain = [sum(v for (_, _, r), v in table.items() if r[d] == 1) / evidence for d in range(n)]
    p_sprinkler = [sum(v for (_, s, _), v in table.items() if s[d] == 1) / evidence for d in range(n)]
    best = max(table, key=table.get)
    return math.log(evidence), p_cloudy, p_rain, p_sprinkler, best


@pytest.mark.parametrize("wet", [[1, 0, 1], [1, 1, 1, 0], [0]])
def test_enumeration_matches_brute_force(float64, wet):
    fit = pg.fit(sprinkler, torch.tensor(wet, dtype=torch.float64), method="enum", progress=False)
    logz, p_cloudy, p_rain, p_sprinkler, best = _brute_force(wet)
    assert fit.log_evidence == pytest.approx(logz, abs=1e-10)
    m = fit.marginals()
    assert float(m["cloudy"][..., 1]) == pytest.approx(p_cloudy, abs=1e-10)
    assert m["rain"][:, 1].tolist() == pytest.approx(p_rain, abs=1e-10)
    assert m["sprinkler"][:, 1].tolist() == pytest.approx(p_sprinkler, abs=1e-10)
    assert torch.allclose(m["rain"].sum(-1), torch.ones(len(wet), dtype=torch.float64), atol=1e-12)
    joint = fit.extras["map"]
    c, s, r = best
    assert int(joint["cloudy"]) == c
    assert joint["sprinkler"].long().tolist() == list(s)
    assert joint["rain"].long().tolist() == list(r)


def test_enumeration_refuses_continuous_latents():
    from tests.core.models import normal_normal

    with pytest.raises(TypeError, match="method='enum' cannot fit normal_normal.*Methods that can: .*mcmc"):
        pg.fit(normal_normal, torch.randn(10), method="enum", progress=False)
