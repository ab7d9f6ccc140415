"""SVI on data sharded across processes: every rank ends with the posterior of the union.

Run on two processes of one machine (CPU, the gloo backend)::

    torchrun --standalone --nproc_per_node=2 tutorials/scripts/torchrun_svi.py

Each rank holds only its shard (what a ``DistributedSampler`` gives it) and passes it to
``probgen.fit`` as usual; probgen sees the initialised process group, scales the data plate by the
sum of the shard sizes and averages gradients across ranks, so every rank reports the same
posterior: the one given all the data.  Started as a plain ``python`` script, it runs as one
process holding all the data and prints that same posterior.

Options: ``--out DIR`` writes ``rank<k>.json`` with the rank's estimates (used by the tests);
``--skew`` gives each rank differently centred data (rank k's items have mean 4k), so a rank that
fitted only its shard would be far from the answer.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import pyro
import pyro.distributions as dist
import torch
import torch.distributed as torch_dist
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

import probgen as pg

SIGMA, PRIOR_SD = 1.5, 10.0


@pg.model
def normal_mean(data=None):
    mu = pyro.sample("mu", dist.Normal(torch.tensor(0.0, dtype=torch.float64), PRIOR_SD))
    with pyro.plate("items", 10 if data is None else len(data)):
        pyro.sample("obs", dist.Normal(mu, SIGMA), obs=data)


def all_data(n: int, world: int, skew: bool) -> torch.Tensor:
    """The whole data set, identical on every rank (each rank then keeps its shard)."""
    g = torch.Generator().manual_seed(0)
    x = SIGMA * torch.randn(n, generator=g, dtype=torch.float64)
    if skew:  # item i goes to rank i % world under DistributedSampler(shuffle=False)
        x = x + 4.0 * (torch.arange(n) % world)
    return x + 2.0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--skew", action="store_true")
    parser.add_argument("--size", type=int, default=4000)
    args = parser.parse_args()
    torch.set_num_threads(1)
    if "RANK" in os.environ:  # started by torchrun
        torch_dist.init_process_group("gloo")
    rank = torch_dist.get_rank() if torch_dist.is_initialized() else 0
    world = torch_dist.get_world_size() if torch_dist.is_initialized() else 1

    x = all_data(args.size, world, args.skew)
    dataset = TensorDataset(x)
    sampler = DistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=False)
    shard = x[list(iter(sampler))]
    # the shard in memory (a DataLoader over the sampler works the same way, with num_items=len(sampler))
    fit = pg.fit(normal_mean, shard, method="svi", num_steps=3000, lr=0.02, lr_decay=0.05, tol=0, seed=0)
    loader = DataLoader(dataset, batch_size=250, sampler=sampler)
    streamed = pg.fit(
        normal_mean, loader, method="svi", num_steps=3000, lr=0.02, lr_decay=0.05, tol=0, seed=0
    )

    # the exact posterior of the union (conjugate normal), for comparison
    precision = 1.0 / PRIOR_SD**2 + len(x) / SIGMA**2
    exact_mean = float(x.sum() / SIGMA**2 / precision)
    result = {
        "rank": rank,
        "world_size": world,
        "shard_items": len(shard),
        "shard_mean": float(shard.mean()),
        "mu": float(fit.params["mu"]),
        "mu_sd": float(fit.posterior["mu"].std()),
        "mu_streamed": float(streamed.params["mu"]),
        "exact_mu": exact_mean,
        "exact_sd": precision**-0.5,
    }
    print(
        f"rank {rank}/{world}: {len(shard)} items (their mean {result['shard_mean']:.3f}); "
        f"posterior mean of mu {result['mu']:.4f} (streamed {result['mu_streamed']:.4f}), "
        f"exact for all {len(x)} items {exact_mean:.4f}"
    )
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / f"rank{rank}.json").write_text(json.dumps(result))
    if torch_dist.is_initialized():
        torch_dist.destroy_process_group()


if __name__ == "__main__":
    main()
