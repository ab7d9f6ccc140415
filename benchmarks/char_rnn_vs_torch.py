"""Character-level RNN training: probgen's SVI against the plain PyTorch loop of the same network.

Setting: the bundled Shakespeare text (``probgen.datasets.load_shakespeare()``, 200 KB, 62
characters), the first 90% for training cut into windows of 100 characters, the last 10% held
out.  The network is an embedding of 32, a one-layer LSTM of 128 and a linear head; Adam at
lr 0.01; minibatches of 32 windows; one thread on both sides.  probgen runs
``probgen.fit(CharRNN(), train, method="svi", subsample_size=32, lr=0.01, tol=0)`` (its default
estimator: the model's own cross-entropy, one plain PyTorch loop); the reference is the loop
everyone writes by hand (shuffle the windows each epoch, forward, cross-entropy, backward, Adam
step, ``loss.item()``) on the same windows.

Each side is timed over a whole fit of ``--steps`` steps (probgen's fixed costs included); runs
alternate between the two, and the medians of ``--repeats`` runs give the ratio.  Both sides then
score the held-out text whole (one pass of the LSTM over it) in nats per character, beside an
add-one-smoothed bigram model of the training text.

Run: ``python benchmarks/char_rnn_vs_torch.py`` (``--quick`` for a smoke run).
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from collections import Counter

import torch
import torch.nn.functional as F
from torch import nn

import probgen as pg
from probgen.models import CharRNN

BATCH, SEQ, HIDDEN, EMBED, LR = 32, 100, 128, 32, 0.01


class Net(nn.Module):
    def __init__(self, v: int) -> None:
        super().__init__()
        self.embedding = nn.Embedding(v + 1, EMBED)  # index v: the start token
        self.cell = nn.LSTM(EMBED, HIDDEN, batch_first=True)
        self.head = nn.Linear(HIDDEN, v)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.cell(self.embedding(x))[0])


def windows(codes: torch.Tensor, v: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs (start token, then the window shifted) and targets (-100 pads the last window)."""
    n = math.ceil(len(codes) / SEQ)
    y = torch.full((n * SEQ,), -100, dtype=torch.long)
    y[: len(codes)] = codes
    y = y.reshape(n, SEQ)
    x = torch.cat([torch.full((n, 1), v), y[:, :-1].clamp(min=0)], 1)
    return x, y


def plain_torch(x: torch.Tensor, y: torch.Tensor, v: int, steps: int, seed: int) -> Net:
    torch.manual_seed(seed)
    net = Net(v)
    opt = torch.optim.Adam(net.parameters(), lr=LR)
    perm, pos = torch.randperm(len(x)), 0
    for _ in range(steps):
        if pos + BATCH > len(x):
            perm, pos = torch.randperm(len(x)), 0
        idx = perm[pos : pos + BATCH]
        pos += BATCH
        loss = F.cross_entropy(net(x[idx]).reshape(-1, v), y[idx].reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
        loss.item()
    return net


def held_out_torch(net: Net, codes: torch.Tensor, v: int) -> float:
    with torch.no_grad():
        x = torch.cat([torch.tensor([v]), codes[:-1]])[None]
        return float(F.cross_entropy(net(x)[0], codes))


def probgen_fit(train: str, steps: int, seed: int) -> pg.Fit:
    return pg.fit(
        CharRNN(hidden_size=HIDDEN, embedding_dim=EMBED, seq_len=SEQ),
        train,
        method="svi",
        seed=seed,
        progress=False,
        num_steps=steps,
        lr=LR,
        subsample_size=BATCH,
        tol=0,
    )


def bigram(train: str, test: str) -> float:
    v = len(set(train) | set(test))
    pairs, firsts = Counter(zip("\0" + train[:-1], train, strict=True)), Counter("\0" + train[:-1])
    pre = "\0" + test[:-1]
    return -sum(
        math.log((pairs[(a, b)] + 1) / (firsts[a] + v)) for a, b in zip(pre, test, strict=True)
    ) / len(test)


def timed(fn, *args):  # type: ignore[no-untyped-def]
    start = time.perf_counter()
    value = fn(*args)
    return time.perf_counter() - start, value


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="100 steps, 3 repeats")
    args = parser.parse_args()
    if args.quick:
        args.steps, args.repeats = 100, 3
    torch.set_num_threads(1)
    text = pg.datasets.load_shakespeare()
    cut = int(0.9 * len(text))
    train, test = text[:cut], text[cut:]
    vocab = sorted(set(text))
    v = len(vocab)
    index = {c: i for i, c in enumerate(vocab)}
    train_codes = torch.tensor([index[c] for c in train])
    test_codes = torch.tensor([index[c] for c in test])
    x, y = windows(train_codes, v)
    probgen_fit(train, 10, 0)  # warm up both sides (imports, allocator)
    plain_torch(x, y, v, 10, 0)
    t_pg, t_pt, s_pg, s_pt = [], [], [], []
    for r in range(args.repeats):
        a, fit = timed(probgen_fit, train, args.steps, r)
        b, net = timed(plain_torch, x, y, v, args.steps, r)
        t_pg.append(a)
        t_pt.append(b)
        s_pg.append(-float(fit.log_prob(test)) / len(test))
        s_pt.append(held_out_torch(net, test_codes, v))
    mp, mt = statistics.median(t_pg), statistics.median(t_pt)
    print(
        f"Shakespeare {len(train)} training / {len(test)} held-out characters, {v} symbols; "
        f"LSTM {EMBED}-{HIDDEN}, {BATCH} windows of {SEQ}, {args.steps} steps"
    )
    print(
        f"plain PyTorch  : {mt:7.3f} s  ({1e3 * mt / args.steps:.2f} ms/step)  "
        f"held-out {statistics.median(s_pt):.3f} nats/char"
    )
    print(
        f"probgen (svi)  : {mp:7.3f} s  ({1e3 * mp / args.steps:.2f} ms/step)  "
        f"held-out {statistics.median(s_pg):.3f} nats/char"
    )
    print(f"bigram (add-one): held-out {bigram(train, test):.3f} nats/char")
    print(
        f"ratio probgen / plain PyTorch: {mp / mt:.3f}  (median of {args.repeats} alternated runs, 1 thread)"
    )


if __name__ == "__main__":
    main()
