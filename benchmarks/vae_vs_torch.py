"""VAE training: probgen's SVI against the plain PyTorch loop of the same architecture.

Setting: scikit-learn's 8x8 digits binarised (1797 x 64), a 64-256-10 encoder and a 10-256-64
decoder (ReLU, Bernoulli likelihood), Adam at lr 1e-3, minibatches of 128, one thread on both
sides.  probgen runs ``probgen.fit(VAE(64, 10), x, method="svi", subsample_size=128, tol=0)``
(its default estimator: the model's own ELBO with the KL in closed form, one plain PyTorch loop);
the reference is the loop everyone writes by hand (shuffle each epoch, forward, BCE + analytic
KL, backward, Adam step, ``loss.item()``).

Each side is timed over a whole fit of ``--epochs`` epochs (probgen's fixed costs included);
runs alternate between the two, and the medians of ``--repeats`` runs give the ratio.  The
Pyro estimators (``elbo="trace"``, ``"meanfield"``, ``"jit"``) are timed too, for scale.

Run: ``python benchmarks/vae_vs_torch.py`` (``--quick`` for a smoke run).
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from torch import nn

import probgen as pg
from probgen.models import VAE

BATCH, LATENT, HIDDEN, LR = 128, 10, 256, 1e-3


def plain_torch(x: torch.Tensor, epochs: int, seed: int) -> float:
    """The hand-written loop; returns the mean loss of the last epoch (per item)."""
    torch.manual_seed(seed)
    enc = nn.Sequential(nn.Linear(64, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, 2 * LATENT))
    dec = nn.Sequential(nn.Linear(LATENT, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, 64))
    opt = torch.optim.Adam(list(enc.parameters()) + list(dec.parameters()), lr=LR)
    n = len(x)
    last = []
    for _ in range(epochs):
        perm = torch.randperm(n)
        last = []
        for start in range(0, n - BATCH + 1, BATCH):
            xb = x[perm[start : start + BATCH]]
            loc, raw = enc(xb).chunk(2, -1)
            scale = F.softplus(raw) + 1e-4
            z = loc + scale * torch.randn_like(loc)
            rec = F.binary_cross_entropy_with_logits(dec(z), xb, reduction="none").sum(-1)
            kl = (0.5 * (loc**2 + scale**2 - 1.0) - scale.log()).sum(-1)
            loss = (rec + kl).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            last.append(loss.item())
    return float(np.mean(last))


def probgen_fit(x: torch.Tensor, epochs: int, seed: int, elbo: str | None = None) -> float:
    steps = epochs * (len(x) // BATCH)
    fit = pg.fit(
        VAE(64, LATENT, hidden_dims=(HIDDEN,)),
        x,
        method="svi",
        seed=seed,
        progress=False,
        num_steps=steps,
        lr=LR,
        subsample_size=BATCH,
        tol=0,
        elbo=elbo,
    )
    return float(np.mean(fit.history[-(len(x) // BATCH) :])) / len(x)


def timed(fn, *args, **kwargs) -> tuple[float, float]:
    start = time.perf_counter()
    value = fn(*args, **kwargs)
    return time.perf_counter() - start, value


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="3 epochs, 3 repeats")
    parser.add_argument("--no-pyro", action="store_true", help="skip timing Pyro's own estimators")
    args = parser.parse_args()
    if args.quick:
        args.epochs, args.repeats = 3, 3
    torch.set_num_threads(1)
    x = torch.as_tensor(load_digits().data / 16.0 > 0.5, dtype=torch.float32)
    probgen_fit(x, 1, 0)  # warm up both sides (imports, allocator)
    plain_torch(x, 1, 0)
    t_pg, t_pt, l_pg, l_pt = [], [], [], []
    for r in range(args.repeats):
        a, la = timed(probgen_fit, x, args.epochs, r)
        b, lb = timed(plain_torch, x, args.epochs, r)
        t_pg.append(a)
        t_pt.append(b)
        l_pg.append(la)
        l_pt.append(lb)
    steps = args.epochs * (len(x) // BATCH)
    mp, mt = statistics.median(t_pg), statistics.median(t_pt)
    print(
        f"digits 1797x64 binarised, 64-{HIDDEN}-{LATENT} VAE, batch {BATCH}, {args.epochs} epochs ({steps} steps)"
    )
    print(
        f"plain PyTorch  : {mt:7.3f} s  ({1e3 * mt / steps:.3f} ms/step)  last-epoch loss {np.mean(l_pt):.2f}/item"
    )
    print(
        f"probgen (svi)  : {mp:7.3f} s  ({1e3 * mp / steps:.3f} ms/step)  last-epoch loss {np.mean(l_pg):.2f}/item"
    )
    print(
        f"ratio probgen / plain PyTorch: {mp / mt:.3f}  (median of {args.repeats} alternated runs, 1 thread)"
    )
    if not args.no_pyro:
        for elbo in ("trace", "meanfield", "jit"):
            ts = [timed(probgen_fit, x, max(1, args.epochs // 3), r, elbo)[0] for r in range(3)]
            per_step = statistics.median(ts) / (max(1, args.epochs // 3) * (len(x) // BATCH))
            print(
                f"  elbo={elbo!r:12}: {1e3 * per_step:.3f} ms/step, {per_step / (mt / steps):.2f}x plain PyTorch"
            )


if __name__ == "__main__":
    main()
