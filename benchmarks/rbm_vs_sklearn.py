"""RBM training: probgen's contrastive divergence against scikit-learn's ``BernoulliRBM``.

Setting: scikit-learn's 8x8 digits binarised (pixels / 16 > 0.5), a fixed split of 1500 training
and 297 held-out images, 10 and 100 hidden units (``--hidden``), one thread on both sides
(``threadpoolctl`` for NumPy's BLAS, ``torch.set_num_threads(1)``).  Both sides run the same
algorithm, scikit-learn's: ``--epochs`` epochs of minibatches of 10, one plain SGD step per
minibatch at learning rate 0.1 (no momentum, no decay), persistent chains with one Gibbs sweep per
step (PCD-1).  probgen runs ``probgen.fit(RBM(64, hidden), x, method="cd", num_steps=epochs *
150, subsample_size=10, lr=0.1, momentum=0.0, lr_decay=1.0)``; scikit-learn runs
``BernoulliRBM(n_components=hidden, n_iter=epochs, batch_size=10, learning_rate=0.1).fit(x)``
(float32 data, so it computes in float32 too).  What differs is each library's own: probgen
starts the visible biases at the logit of the pixel means and its chains at training images,
shuffles the minibatches every epoch and records a pseudo-log-likelihood per epoch
(``fit.history``); scikit-learn starts at zero biases and keeps the data's order (and computes no
per-epoch score unless ``verbose``).

Timing: the public call a user makes, constructors included, one whole fit per run; one warm-up
fit on each side, then for each of ``--seeds`` seeds one fit on each side, alternating which goes
first.  Per epoch = fit time / epochs; the ratio is probgen / scikit-learn, as the ratio of the
median times and as the worst of the seeds' ratios.  Quality, on the held-out images and at each
fit's own parameters: the log-likelihood per image through probgen's RBM (``log Z`` exact for 10
hidden units, annealed importance sampling for 100, seed 0 on both sides) and scikit-learn's own
``score_samples`` pseudo-log-likelihood (the mean of 10 draws of the flipped units, the same
draws on both sides).  The machine's load averages are printed with the numbers: timings on a
busy machine are slower and noisier.

Run: ``python benchmarks/rbm_vs_sklearn.py`` (``--quick`` for a smoke run).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
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
LR = 0.1  # scikit-learn's default learning rate, used on both sides
FLIPS = 10  # draws of the flipped units averaged by the pseudo-log-likelihood


def sklearn_fit(train: np.ndarray, hidden: int, epochs: int, seed: int) -> dict[str, np.ndarray]:
    """``BernoulliRBM(...).fit`` as a user calls it; its parameters by probgen's names."""
    rbm = BernoulliRBM(
        n_components=hidden, learning_rate=LR, n_iter=epochs, batch_size=BATCH, random_state=seed
    ).fit(train)
    return {
        "W": rbm.components_,
        "visible_bias": rbm.intercept_visible_,
        "hidden_bias": rbm.intercept_hidden_,
    }


def probgen_fit(train: np.ndarray, hidden: int, epochs: int, seed: int) -> dict[str, np.ndarray]:
    """``probgen.fit(RBM(...), x, method="cd")`` with scikit-learn's SGD (no momentum, no decay)."""
    steps = epochs * -(-len(train) // BATCH)
    fit = pg.fit(
        RBM(train.shape[1], hidden),
        train,
        method="cd",
        seed=seed,
        progress=False,
        num_steps=steps,
        subsample_size=BATCH,
        lr=LR,
        momentum=0.0,
        lr_decay=1.0,
    )
    return {k: v.numpy() for k, v in fit.params.items()}


def quality(params: dict[str, np.ndarray], train: np.ndarray, test: np.ndarray) -> tuple[float, float]:
    """Held-out log-likelihood and pseudo-log-likelihood per image at ``params`` (nats)."""
    tensors = {k: torch.as_tensor(v, dtype=torch.float32) for k, v in params.items()}
    model = RBM(train.shape[1], params["W"].shape[0])
    ll = float(
        Fit(model=model, data=torch.as_tensor(train), method="cd", params=tensors).log_prob(test).mean()
    )
    scorer = BernoulliRBM(n_components=params["W"].shape[0])
    scorer.components_ = params["W"].astype(np.float64)
    scorer.intercept_visible_ = params["visible_bias"].astype(np.float64)
    scorer.intercept_hidden_ = params["hidden_bias"].astype(np.float64)
    scorer.n_features_in_ = train.shape[1]
    pll = []
    for flips in range(FLIPS):  # one flipped unit per image is noisy: average several draws
        scorer.random_state = flips
        pll.append(float(scorer.score_samples(test.astype(np.float64)).mean()))
    return ll, float(np.mean(pll))


def timed(fn: Callable[..., Any], *args: Any) -> tuple[float, Any]:
    start = time.perf_counter()
    value = fn(*args)
    return time.perf_counter() - start, value


def compare(train: np.ndarray, test: np.ndarray, hidden: int, epochs: int, seeds: int) -> None:
    """Time and score both sides at ``hidden`` hidden units and print one block of results."""
    sides = {"scikit-learn": sklearn_fit, "probgen (cd)": probgen_fit}
    times: dict[str, list[float]] = {name: [] for name in sides}
    scores: dict[str, list[tuple[float, float]]] = {name: [] for name in sides}
    for fn in sides.values():  # warm-up: imports, allocator, first-call dispatch
        fn(train, hidden, 1, 0)
    for seed in range(seeds):
        order = list(sides) if seed % 2 == 0 else list(reversed(sides))
        for name in order:
            t, params = timed(sides[name], train, hidden, epochs, seed)
            times[name].append(t / epochs)
            scores[name].append(quality(params, train, test))
    how = "exact log Z" if hidden <= 20 else "log Z by AIS"
    print(f"\nRBM 64x{hidden}: {epochs} epochs, {seeds} seeds; held-out LL ({how}) and pseudo-LL per image")
    for name in sides:
        ms = [1e3 * t for t in times[name]]
        ll = [s[0] for s in scores[name]]
        pll = [s[1] for s in scores[name]]
        print(
            f"  {name:13s}: {statistics.median(ms):7.2f} ms/epoch (worst {max(ms):7.2f})  "
            f"LL {statistics.median(ll):8.3f} [{min(ll):.2f}, {max(ll):.2f}]  "
            f"pseudo-LL {statistics.median(pll):8.3f} [{min(pll):.2f}, {max(pll):.2f}]"
        )
    pg_t, sk_t = times["probgen (cd)"], times["scikit-learn"]
    paired = [a / b for a, b in zip(pg_t, sk_t, strict=True)]
    print(
        f"  ratio probgen / scikit-learn per epoch: median {statistics.median(pg_t) / statistics.median(sk_t):.2f}, "
        f"worst {max(paired):.2f} (per seed: {', '.join(f'{r:.2f}' for r in paired)})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--hidden", type=int, nargs="+", default=[10, 100])
    parser.add_argument("--seeds", type=int, default=5, help="fits per side and size (median and worst)")
    parser.add_argument("--quick", action="store_true", help="2 epochs, 3 seeds")
    args = parser.parse_args()
    if args.quick:
        args.epochs, args.seeds = 2, 3
    torch.set_num_threads(1)
    x = (load_digits().data / 16.0 > 0.5).astype(np.float32)
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(0)).numpy()
    train, test = x[perm[:1500]], x[perm[1500:]]
    print(
        f"digits binarised, {len(train)} train / {len(test)} held out, batch {BATCH}, PCD-1, "
        f"lr {LR} (no momentum, no decay), 1 thread each side; load average {os.getloadavg()[0]:.2f}"
    )
    with threadpool_limits(1):
        for hidden in args.hidden:
            compare(train, test, hidden, args.epochs, args.seeds)
    print(f"\nload average at the end: {' '.join(f'{v:.2f}' for v in os.getloadavg())} (1, 5, 15 min)")


if __name__ == "__main__":
    main()
