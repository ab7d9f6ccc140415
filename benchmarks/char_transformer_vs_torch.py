"""Character-level transformer training: probgen's SVI against the plain PyTorch loop of the same network.

Setting: the bundled Shakespeare text (``probgen.datasets.load_shakespeare()``, 200 KB, 62
characters), the first 90% for training cut into windows of 64 characters, the last 10% held
out.  The network is CharTransformer's default: embedding of 64 plus the mixed-in embeddings of
the two previous characters, two pre-LN blocks of four-head causal attention (rotary positions,
``scaled_dot_product_attention(is_causal=True)``) and a GELU feedforward of 256, a final
LayerNorm and a linear head, initialised as GPT-2 is; so is the training: Adam at a peak lr of
0.02 after a linear warm-up of 50 steps (a fifth of the run, as the default schedule caps it),
decayed by a cosine to 0.002 at the last step, the gradient of the loss (the summed
cross-entropy scaled to the whole text) clipped to norm 1, minibatches of 32 windows; one thread
on both sides.  probgen runs ``probgen.fit(CharTransformer(), train, method="svi", tol=0)`` (its
defaults; its default estimator: the model's own cross-entropy, one plain PyTorch loop); the
reference is the loop written by hand (shuffle the windows each epoch, forward, cross-entropy,
backward, clip, Adam step, schedule step, ``loss.item()``) on the same windows, with the network
and the schedule written out again below.

First a quality check: one fit of each side, and both must score the held-out text (cut into
windows of 64, each read from the start token) within 0.05 nats per character of each other.
Then timing: for each of ``--seeds`` seeds, each side is timed over a whole fit of ``--steps``
steps (probgen's fixed costs included), the two sides alternating; the ratio probgen / plain is
printed per seed, with its median and worst.

Measured (250 steps, 3 seeds, a quiet machine): held-out 1.880 (plain) and 1.884 (probgen)
nats/char; ratio probgen / plain 0.989, 0.923, 0.939 (median 0.939, worst 0.989).  On a loaded
machine the same run gave 1.164, 0.979, 0.794: the load moves single timings by 20%.

Run: ``python benchmarks/char_transformer_vs_torch.py`` (``--quick`` for a smoke run).
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time

import torch
import torch.nn.functional as F
from torch import nn

import probgen as pg
from probgen.models import CharTransformer

BATCH, SEQ, D, HEADS, LAYERS, SHIFT, LR = 32, 64, 64, 4, 2, 2, 0.02
WARMUP, FLOOR, CLIP = 200, 0.1, 1.0


def rotation(t: int, head_dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    half = head_dim // 2
    angles = torch.arange(t, dtype=torch.float64)[:, None] * 10000.0 ** (
        -torch.arange(half, dtype=torch.float64) / half
    )
    return angles.cos().float(), angles.sin().float()


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    a, b = x.chunk(2, -1)
    return torch.cat([a * cos - b * sin, a * sin + b * cos], -1)


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(D), nn.LayerNorm(D)
        self.qkv, self.proj = nn.Linear(D, 3 * D), nn.Linear(D, D)
        self.ff1, self.ff2 = nn.Linear(D, 4 * D), nn.Linear(4 * D, D)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(b, t, 3, HEADS, d // HEADS).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(rotate(q, cos, sin), rotate(k, cos, sin), v, is_causal=True)
        x = x + self.proj(a.transpose(1, 2).reshape(b, t, d))
        return x + self.ff2(F.gelu(self.ff1(self.norm2(x))))


class Net(nn.Module):
    def __init__(self, v: int) -> None:
        super().__init__()
        self.embedding = nn.Embedding(v + 1, D)  # index v: the start token
        self.mix = nn.Linear(SHIFT * D, D, bias=False)  # the previous SHIFT embeddings, mixed in
        self.blocks = nn.ModuleList(Block() for _ in range(LAYERS))
        self.norm = nn.LayerNorm(D)
        self.head = nn.Linear(D, v)
        for name, w in self.named_parameters():
            if name.endswith("bias"):
                nn.init.zeros_(w)
            elif "norm" not in name:
                deep = name.endswith(("proj.weight", "ff2.weight"))
                nn.init.normal_(w, 0.0, 0.02 / math.sqrt(2 * LAYERS) if deep else 0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cos, sin = rotation(x.shape[1], D // HEADS)
        h = self.embedding(x)
        b, t, d = h.shape
        padded = torch.cat([h.new_zeros(b, SHIFT, d), h], 1)
        h = h + self.mix(torch.cat([padded[:, SHIFT - j : SHIFT - j + t] for j in range(1, SHIFT + 1)], -1))
        for block in self.blocks:
            h = block(h, cos, sin)
        return self.head(self.norm(h))


def windows(codes: torch.Tensor, v: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs (start token, then the window shifted) and targets (-100 pads the last window)."""
    n = math.ceil(len(codes) / SEQ)
    y = torch.full((n * SEQ,), -100, dtype=torch.long)
    y[: len(codes)] = codes
    y = y.reshape(n, SEQ)
    x = torch.cat([torch.full((n, 1), v), y[:, :-1].clamp(min=0)], 1)
    return x, y


def schedule(step: int, steps: int) -> float:
    """Linear warm-up over ``min(WARMUP, steps // 5)`` steps, then a cosine down to ``FLOOR``."""
    warm = max(1, min(WARMUP, steps // 5))
    if step < warm:
        return (step + 1) / warm
    return FLOOR + (1 - FLOOR) * 0.5 * (
        1 + math.cos(math.pi * min(1.0, (step - warm) / max(1, steps - warm)))
    )


def plain_torch(x: torch.Tensor, y: torch.Tensor, v: int, steps: int, seed: int) -> Net:
    torch.manual_seed(seed)
    net = Net(v)
    opt = torch.optim.Adam(net.parameters(), lr=LR)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: schedule(s, steps))
    perm, pos = torch.randperm(len(x)), 0
    for _ in range(steps):
        if pos + BATCH > len(x):
            perm, pos = torch.randperm(len(x)), 0
        idx = perm[pos : pos + BATCH]
        pos += BATCH
        loss = F.cross_entropy(net(x[idx]).reshape(-1, v), y[idx].reshape(-1), reduction="sum") * (
            len(x) / BATCH
        )
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), CLIP)
        opt.step()
        sched.step()
        loss.item()
    return net


def held_out_torch(net: Net, x: torch.Tensor, y: torch.Tensor, v: int) -> float:
    with torch.no_grad():
        return float(F.cross_entropy(net(x).reshape(-1, v), y.reshape(-1), reduction="sum")) / int(
            (y >= 0).sum()
        )


def probgen_fit(train: str, steps: int, seed: int) -> pg.Fit:
    return pg.fit(CharTransformer(), train, method="svi", seed=seed, progress=False, num_steps=steps, tol=0)


def timed(fn, *args):  # type: ignore[no-untyped-def]
    start = time.perf_counter()
    value = fn(*args)
    return time.perf_counter() - start, value


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=250)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="60 steps, 3 seeds")
    args = parser.parse_args()
    if args.quick:
        args.steps, args.seeds = 60, 3
    torch.set_num_threads(1)
    text = pg.datasets.load_shakespeare()
    cut = int(0.9 * len(text))
    train, test = text[:cut], text[cut:]
    vocab = "".join(sorted(set(text)))
    v = len(vocab)
    index = {c: i for i, c in enumerate(vocab)}
    x, y = windows(torch.tensor([index[c] for c in train]), v)
    tx, ty = windows(torch.tensor([index[c] for c in test]), v)
    test_windows = [test[i : i + SEQ] for i in range(0, len(test), SEQ)]
    print(
        f"Shakespeare {len(train)} training / {len(test)} held-out characters, {v} symbols; transformer "
        f"d_model {D}, {HEADS} heads, {LAYERS} blocks; {BATCH} windows of {SEQ}, {args.steps} steps, 1 thread"
    )
    # quality first: the same training reaches the same held-out loss
    fit = probgen_fit(train, args.steps, 0)
    net = plain_torch(x, y, v, args.steps, 0)
    q_pg = -float(fit.log_prob(test_windows).sum()) / len(test)
    q_pt = held_out_torch(net, tx, ty, v)
    print(f"held-out (windows of {SEQ}): plain PyTorch {q_pt:.3f}, probgen {q_pg:.3f} nats/char")
    if abs(q_pg - q_pt) > 0.05:
        sys.exit(
            f"the two sides do not reach the same loss ({q_pg:.3f} vs {q_pt:.3f}): timing them means nothing"
        )
    ratios = []
    for seed in range(args.seeds):
        a, _ = timed(probgen_fit, train, args.steps, seed)
        b, _ = timed(plain_torch, x, y, v, args.steps, seed)
        ratios.append(a / b)
        print(
            f"seed {seed}: plain PyTorch {b:6.2f} s ({1e3 * b / args.steps:.1f} ms/step), "
            f"probgen {a:6.2f} s ({1e3 * a / args.steps:.1f} ms/step), ratio {a / b:.3f}"
        )
    print(f"ratio probgen / plain PyTorch: median {statistics.median(ratios):.3f}, worst {max(ratios):.3f}")


if __name__ == "__main__":
    main()
