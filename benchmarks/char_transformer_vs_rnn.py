"""Character-level language models at equal training time: CharTransformer against a GRU CharRNN.

Setting: the bundled Shakespeare text (``probgen.datasets.load_shakespeare()``, 200 KB, 62
characters), the first 90% for training, the last 10% held out; one thread.  Both models are
fitted by ``probgen.fit(..., method="svi", tol=0)`` with their own SVI defaults, no options: the
GRU CharRNN (embedding 32, one GRU layer of 128, windows of 100; 64 windows per step, lr 0.01)
and the default ``CharTransformer()`` (d_model 64, 4 heads, 2 pre-LN blocks, the two previous
characters mixed in, windows of 64; 32 windows per step, lr rising linearly to 0.02 over 200
steps then a cosine decay to 0.002 at the last step, the gradient clipped to norm 1).

Equal time: each model's seconds per step are measured on a short fit first, and each is then
given ``budget / (seconds per step)`` steps; the wall time each fit really took is printed beside
its score, so the comparison can be checked.  Both then score the held-out text whole
(``fit.log_prob``: the GRU carries its state through it, the transformer slides its attention
window of 64 characters), in nats per character, beside an add-one-smoothed bigram.  Last,
sampling speed: characters per second per sequence of ``fit.sample(1, length=...)`` (the
transformer decodes with its key/value cache).

Measured on a quiet machine (nothing else running; 70 s budget):

====  =====================================  =====================================
seed  GRU CharRNN                            CharTransformer (defaults)
====  =====================================  =====================================
0     1.700 nats/char, 984 steps, 67.7 s     1.680 nats/char, 1620 steps, 60.9 s
1     1.749 nats/char, 1133 steps, 78.1 s    1.674 nats/char, 1772 steps, 70.2 s
2     1.722 nats/char, 1107 steps, 72.4 s    1.676 nats/char, 1845 steps, 83.6 s
====  =====================================  =====================================

Median 1.722 (GRU) against 1.676 (transformer); the bigram 2.492.  On seeds 0 and 1 the
transformer trained for less time than the GRU and still scored better; on seed 2 the 20-step
speed probe gave it 11 s more.  Sampling one sequence: the transformer 1,159 to 1,842
characters/s, the GRU 4,171 to 6,580.  An earlier run on a loaded machine (fewer steps on both
sides): 1.666/1.677/1.689 (GRU) against 1.666/1.648/1.644.  Before the schedule (constant lr 0.005, no clipping) the transformer scored 1.726
against the GRU's 1.714 (seed 0); a constant lr of 0.01 diverged on seed 1 (2.111).

Run: ``python benchmarks/char_transformer_vs_rnn.py`` (``--budget`` seconds per model, default
70; ``--quick`` for a 15-second smoke run).
"""

from __future__ import annotations

import argparse
import math
import time
from collections import Counter

import torch

import probgen as pg
from probgen.models import CharRNN, CharTransformer


def models() -> dict[str, pg.GenerativeModel]:
    return {
        "GRU CharRNN": CharRNN(hidden_size=128, embedding_dim=32, cell="gru", seq_len=100),
        "CharTransformer": CharTransformer(),  # its defaults: d_model 64, 4 heads, 2 blocks, windows of 64
    }


#: SVI options per model: none, each model's own defaults (the GRU: 64 windows, lr 0.01; the
#: transformer: 32 windows, lr 0.02 after a warm-up, cosine decay, gradient clipped to norm 1)
OPTIONS: dict[str, dict[str, float]] = {"GRU CharRNN": {}, "CharTransformer": {}}


def fit(name: str, model: pg.GenerativeModel, train: str, steps: int, seed: int) -> tuple[float, pg.Fit]:
    start = time.perf_counter()
    result = pg.fit(
        model, train, method="svi", seed=seed, progress=False, num_steps=steps, tol=0, **OPTIONS[name]
    )
    return time.perf_counter() - start, result


def bigram(train: str, test: str) -> float:
    v = len(set(train) | set(test))
    pairs, firsts = Counter(zip("\0" + train[:-1], train, strict=True)), Counter("\0" + train[:-1])
    pre = "\0" + test[:-1]
    return -sum(
        math.log((pairs[(a, b)] + 1) / (firsts[a] + v)) for a, b in zip(pre, test, strict=True)
    ) / len(test)


def sampling_speed(result: pg.Fit, length: int) -> float:
    result.sample(1, length=20, seed=0)  # warm up
    start = time.perf_counter()
    result.sample(1, length=length, seed=1)
    return length / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--budget", type=float, default=70.0, help="training seconds per model")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="15 s per model")
    args = parser.parse_args()
    if args.quick:
        args.budget = 15.0
    torch.set_num_threads(1)
    text = pg.datasets.load_shakespeare()
    cut = int(0.9 * len(text))
    train, test = text[:cut], text[cut:]
    print(
        f"Shakespeare {len(train)} training / {len(test)} held-out characters; "
        f"{args.budget:.0f} s of training per model, 1 thread"
    )
    for name, model in models().items():
        probe_steps = 20
        fit(name, model, train, 5, args.seed)  # warm up (imports, allocator)
        seconds, _ = fit(name, model, train, probe_steps, args.seed)
        steps = max(1, int(args.budget * probe_steps / seconds))
        seconds, result = fit(name, model, train, steps, args.seed)
        nats = -float(result.log_prob(test)) / len(test)
        speed = sampling_speed(result, 500)
        print(
            f"{name:16s}: {steps:5d} steps in {seconds:6.1f} s; held-out {nats:.3f} nats/char; "
            f"sampling {speed:,.0f} chars/s (one sequence)"
        )
    print(f"{'bigram (add-one)':16s}: held-out {bigram(train, test):.3f} nats/char")


if __name__ == "__main__":
    main()
