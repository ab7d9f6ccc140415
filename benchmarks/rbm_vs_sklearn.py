"""RBM training: probgen's contrastive divergence against scikit-learn's ``BernoulliRBM``.

Setting: scikit-learn's 8x8 digits binarised (pixels / 16 > 0.5), a fixed split of 1500 training
and 297 held-out images, ``--hidden`` hidden units (10 by default), one thread on both sides
(``threadpoolctl`` for NumPy's BLAS, ``torch.set_num_threads(1)``).  Both sides do the same work:
``--epochs`` epochs of minibatches of 10, one gradient step per minibatch, persistent chains with
one Gibbs sweep per step (scikit-learn's algorithm; probgen's defaults besides the batch size).
probgen runs ``probgen.fit(RBM(64, hidden), x, method="cd", num_steps=epochs * 150,
subsample_size=10)``; scikit-learn runs ``BernoulliRBM(n_components=hidden, n_iter=epochs,
batch_size=10)``.

Each side is timed over a whole fit (probgen's fixed costs included); runs alternate between the
two, and the medians of ``--repeats`` runs give the ratio.  Both fits are scored by the same
held-out log-likelihood: scikit-learn's ``components_``, ``intercept_visible_`` and
``intercept_hidden_`` are loaded into probgen's RBM, whose ``log Z`` is exact for at most 20
hidden units (annealed importance sampling otherwise).

Run: ``python benchmarks/rbm_vs_sklearn.py`` (``--quick`` for a smoke run).
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.neural_network import BernoulliRBM
from threadpoolctl import threadpool_limits

import probgen as pg
from probgen.fit import Fit
from probgen.models import RBM

BATCH = 10


def held_out(model: RBM, params: dict[str, Any], train: torch.Tensor, test: torch.Tensor) -> float:
    """Mean held-out log-likelihood per image (nats) at ``params``."""
    tensors = {k: torch.as_tensor(np.asarray(v), dtype=torch.float32) for k, v in params.items()}
    return float(Fit(model=model, data=train, method="cd", params=tensors).log_prob(test).mean())


def sklearn_fit(train: torch.Tensor, hidden: int, epochs: int, seed: int) -> dict[str, Any]:
    rbm = BernoulliRBM(n_components=hidden, n_iter=epochs, batch_size=BATCH, random_state=seed)
    rbm.fit(train.numpy())
    return {
        "W": rbm.components_,
        "visible_bias": rbm.intercept_visible_,
        "hidden_bias": rbm.intercept_hidden_,
    }


def probgen_fit(train: torch.Tensor, hidden: int, epochs: int, seed: int) -> dict[str, Any]:
    steps = epochs * (len(train) // BATCH)
    fit = pg.fit(
        RBM(64, hidden), train, method="cd", seed=seed, progress=False, num_steps=steps, subsample_size=BATCH
    )
    return dict(fit.params)


def timed(fn: Any, *args: Any) -> tuple[float, Any]:
    start = time.perf_counter()
    value = fn(*args)
    return time.perf_counter() - start, value


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--hidden", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="2 epochs, 3 repeats")
    args = parser.parse_args()
    if args.quick:
        args.epochs, args.repeats = 2, 3
    torch.set_num_threads(1)
    x = torch.as_tensor(load_digits().data / 16.0 > 0.5, dtype=torch.float32)
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    train, test = x[perm[:1500]], x[perm[1500:]]
    model = RBM(64, args.hidden)
    t_pg, t_sk, ll_pg, ll_sk = [], [], [], []
    with threadpool_limits(1):
        probgen_fit(train, args.hidden, 1, 0)  # warm up both sides (imports, allocator)
        sklearn_fit(train, args.hidden, 1, 0)
        for r in range(args.repeats):
            a, pa = timed(probgen_fit, train, args.hidden, args.epochs, r)
            b, pb = timed(sklearn_fit, train, args.hidden, args.epochs, r)
            t_pg.append(a)
            t_sk.append(b)
            ll_pg.append(held_out(model, pa, train, test))
            ll_sk.append(held_out(model, pb, train, test))
    mp, ms = statistics.median(t_pg), statistics.median(t_sk)
    how = "exact log Z" if min(64, args.hidden) <= 20 else "log Z by AIS"
    print(
        f"digits binarised, 1500 train / 297 held out, RBM 64x{args.hidden}, batch {BATCH}, "
        f"{args.epochs} epochs, PCD-1, 1 thread; held-out log-likelihood per image ({how})"
    )
    print(
        f"scikit-learn : {1e3 * ms / args.epochs:8.2f} ms/epoch  held-out LL {statistics.median(ll_sk):8.3f} "
        f"(runs: {', '.join(f'{v:.2f}' for v in ll_sk)})"
    )
    print(
        f"probgen (cd) : {1e3 * mp / args.epochs:8.2f} ms/epoch  held-out LL {statistics.median(ll_pg):8.3f} "
        f"(runs: {', '.join(f'{v:.2f}' for v in ll_pg)})"
    )
    print(
        f"ratio probgen / scikit-learn: time {mp / ms:.2f}, held-out LL difference "
        f"{statistics.median(ll_pg) - statistics.median(ll_sk):+.3f} nats/image "
        f"(median of {args.repeats} alternated runs)"
    )


if __name__ == "__main__":
    main()
