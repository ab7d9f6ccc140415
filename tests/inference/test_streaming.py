"""Streamed minibatches and data sharded across processes reach the full-data posterior."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pyro
import pyro.distributions as dist
import pyro.poutine as poutine
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import probgen as pg
from probgen.streaming import scaled

SIGMA, PRIOR_SD = 1.5, 10.0
ROOT = Path(__file__).resolve().parents[2]


@pg.model
def normal_mean(data=None):
    mu = pyro.sample("mu", dist.Normal(torch.tensor(0.0, dtype=torch.float64), PRIOR_SD))
    with pyro.plate("items", 10 if data is None else len(data)):
        pyro.sample("obs", dist.Normal(mu, SIGMA), obs=data)


def _data(n: int = 4000) -> torch.Tensor:
    return 2.0 + SIGMA * torch.randn(n, generator=torch.Generator().manual_seed(1), dtype=torch.float64)


def _exact(x: torch.Tensor) -> tuple[float, float]:
    precision = 1.0 / PRIOR_SD**2 + len(x) / SIGMA**2
    return float(x.sum() / SIGMA**2 / precision), precision**-0.5


OPTIONS = {"num_steps": 2500, "lr": 0.02, "lr_decay": 0.05, "tol": 0, "progress": False}


def test_the_plate_scale_multiplies_only_the_data_plate_sites():
    x = _data(50)
    fixed = poutine.condition(normal_mean.model, data={"mu": torch.tensor(1.0, dtype=torch.float64)})
    plain = poutine.trace(fixed).get_trace(x)
    times_ten = poutine.trace(scaled(fixed, "items", lambda: 10.0)).get_trace(x)
    plain.compute_log_prob()
    times_ten.compute_log_prob()
    assert torch.allclose(times_ten.nodes["obs"]["log_prob_sum"], 10.0 * plain.nodes["obs"]["log_prob_sum"])
    assert torch.allclose(times_ten.nodes["mu"]["log_prob_sum"], plain.nodes["mu"]["log_prob_sum"])


def test_a_dataloader_gives_the_full_data_posterior():
    x = _data()
    exact_mean, exact_sd = _exact(x)
    loader = DataLoader(
        TensorDataset(x), batch_size=400, shuffle=True, generator=torch.Generator().manual_seed(0)
    )
    streamed = pg.fit(normal_mean, loader, method="svi", **OPTIONS)  # num_items from the loader
    in_memory = pg.fit(normal_mean, x, method="svi", **OPTIONS)
    assert streamed.extras["num_items"] == len(x)
    assert abs(float(streamed.params["mu"]) - exact_mean) < 0.5 * exact_sd
    assert abs(float(streamed.params["mu"]) - float(in_memory.params["mu"])) < 0.5 * exact_sd
    # a fit that ignored the scale would have the posterior of one batch: sd sqrt(10) times wider
    assert float(streamed.posterior["mu"].std()) < 2.0 * exact_sd
    assert streamed.data is None
    assert torch.allclose(streamed.log_prob(x[:5]), in_memory.log_prob(x[:5]), atol=0.01)


def test_a_list_of_minibatches_with_num_items_and_enumerated_latents():
    g = torch.Generator().manual_seed(2)
    x = torch.cat([torch.randn(600, generator=g) - 3.0, torch.randn(400, generator=g) + 3.0]).double()
    x = x[torch.randperm(len(x), generator=g)]

    @pg.model
    def mixture(data=None):
        weights = pyro.sample("weights", dist.Dirichlet(torch.ones(2, dtype=torch.float64)))
        with pyro.plate("components", 2):
            locs = pyro.sample("locs", dist.Normal(torch.tensor(0.0, dtype=torch.float64), 10.0))
        with pyro.plate("data", 10 if data is None else len(data)):
            z = pyro.sample("z", dist.Categorical(weights))
            pyro.sample("obs", dist.Normal(locs[z], 1.0), obs=data)

    batches = [x[i : i + 100].numpy() for i in range(0, len(x), 100)]  # numpy minibatches
    init = {"num_steps": 1500, "lr": 0.05, "lr_decay": 0.05, "tol": 0, "progress": False}
    fit = pg.fit(mixture, batches, method="svi", num_items=len(x), **init)
    locs = fit.params["locs"].sort().values
    assert torch.allclose(locs, torch.tensor([-3.0, 3.0], dtype=torch.float64), atol=0.15)
    w = fit.params["weights"][fit.params["locs"].argsort()]
    assert abs(float(w[0]) - 0.6) < 0.05


def test_streamed_data_are_refused_where_they_cannot_be_used():
    x = _data(100)
    loader = DataLoader(TensorDataset(x), batch_size=10)
    with pytest.raises(ValueError, match="method='em'"):
        pg.fit(normal_mean, loader, method="em")
    with pytest.raises(ValueError, match="subsample_size does not apply"):
        pg.fit(normal_mean, loader, method="svi", subsample_size=5, progress=False)
    with pytest.raises(TypeError, match="iterator"):
        pg.fit(normal_mean, iter([x[:10], x[10:20]]), method="svi", num_items=20)
    with pytest.raises(ValueError, match="num_items must be a positive int"):
        pg.fit(normal_mean, [x[:10]], method="svi", num_items=0)

    @pg.model
    def schools(data=None):
        mu = pyro.sample("mu", dist.Normal(0.0, 5.0))
        with pyro.plate("schools", 3 if data is None else len(data)):
            theta = pyro.sample("theta", dist.Normal(mu, 2.0))
            pyro.sample("obs", dist.Normal(theta, 1.0), obs=data)

    with pytest.raises(ValueError, match="amortises the per-item latents"):
        pg.fit(schools, [torch.ones(3)], method="svi", num_items=3)


@pytest.mark.slow
def test_two_processes_holding_different_shards_get_the_posterior_of_the_union(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    script = ROOT / "tutorials" / "scripts" / "torchrun_svi.py"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    subprocess.run(
        [*cmd, str(script), "--skew", "--size", "2000", "--out", str(tmp_path)],
        check=True,
        env=env,
        cwd=tmp_path,
        capture_output=True,
        timeout=300,
    )
    ranks = [json.loads((tmp_path / f"rank{k}.json").read_text()) for k in (0, 1)]
    exact_sd = ranks[0]["exact_sd"]
    assert ranks[0]["world_size"] == 2 and ranks[0]["shard_items"] == ranks[1]["shard_items"] == 1000
    assert abs(ranks[0]["shard_mean"] - ranks[1]["shard_mean"]) > 3.5  # the shards differ
    for r in ranks:
        assert math.isclose(r["mu"], ranks[0]["mu"], abs_tol=1e-9)  # every rank holds the same posterior
        assert abs(r["mu"] - r["exact_mu"]) < 0.5 * exact_sd  # the union's, not the shard's
        assert abs(r["mu_streamed"] - r["exact_mu"]) < 0.5 * exact_sd
        assert r["mu_sd"] < 2.0 * exact_sd
