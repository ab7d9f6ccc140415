"""Tutorial 5: a zoo of generative models on binarised digits, and a character-level language model.

What it shows, with the public API only:

1. Four families fitted to the same binarised 8x8 digits (``sklearn.datasets.load_digits``,
   pixels/16 > 0.5) by four different backends: a ``BernoulliMixture`` (``method="em"``), an
   ``RBM`` (``method="cd"``), a ``VAE`` (``method="svi"``) and a ``GAN`` (``method="adversarial"``).
2. Held-out log-likelihood per image where the family has one: exact for the mixture, exact for
   an RBM with at most 20 hidden units and an annealed importance sampling (AIS) estimate of
   ``log Z`` beyond (``fit.log_partition()``), an importance-weighted bound for the VAE.  The GAN
   has no likelihood, and ``fit.log_prob`` says so.
3. A likelihood-free score for all four: the maximum mean discrepancy between ``fit.sample(n)``
   and held-out digits (``probgen.mmd_test``), with one kernel bandwidth for every model, on
   binary samples for every family (the GAN's real-valued outputs are thresholded at 0.5, so
   like is compared with like).  Sample grids side by side, and a summary table.
4. A ``CharRNN`` (an LSTM over characters) trained on the bundled Shakespeare text, scored in
   nats per character on the last 10% against an add-one bigram model, and sampled after a
   prompt at three temperatures.

Figures are written as PNG files into ``$PROBGEN_TUTORIAL_OUT`` (default ``tutorials/figures``).
``PROBGEN_FAST=1`` runs short trainings (what CI runs); the numbers quoted in comments are from
the full run.
"""

from __future__ import annotations

import math
import os
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402

import probgen as pg  # noqa: E402
from probgen.models import GAN, RBM, VAE, BernoulliMixture, CharRNN  # noqa: E402

FAST = os.environ.get("PROBGEN_FAST", "0") == "1"
OUT = Path(os.environ.get("PROBGEN_TUTORIAL_OUT", Path(__file__).resolve().parent / "figures"))
RBM_HIDDEN = 20 if FAST else 100  # <= 20 hidden units: exact log Z; more: AIS
RBM_STEPS = 1000 if FAST else 10000  # CD minibatch updates (20 digits each)
VAE_STEPS = 300 if FAST else 3000  # SVI steps of 128 digits
GAN_STEPS = 300 if FAST else 3000  # generator updates of 128 digits
RNN_STEPS = 100 if FAST else 2000  # SVI steps of RNN_BATCH windows of 100 characters
RNN_BATCH = 32 if FAST else 64
torch.set_num_threads(1)  # small networks: one thread is fastest and leaves the other cores alone


def save(fig: plt.Figure, name: str) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    fig.savefig(OUT / name, dpi=100, bbox_inches="tight")
    plt.close(fig)
    print(f"  wrote {OUT / name}")


def montage(images: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """Tile ``rows * cols`` 8x8 images into one array, with a one-pixel grey border between them."""
    tiles = np.full((rows, cols, 9, 9), 0.25)
    tiles[:, :, :8, :8] = np.asarray(images[: rows * cols], dtype=float).reshape(rows, cols, 8, 8)
    return tiles.transpose(0, 2, 1, 3).reshape(rows * 9, cols * 9)[:-1, :-1]


def timed(label: str, fn: Callable[[], pg.Fit]) -> tuple[pg.Fit, float]:
    start = time.perf_counter()
    out = fn()
    seconds = time.perf_counter() - start
    print(f"{label}: fitted in {seconds:.1f} s")
    return out, seconds


# %% Data: 1797 digits, binarised; a fixed split into 1500 training and 297 held-out digits
digits = load_digits()
binary = (digits.data / 16.0 > 0.5).astype("float32")
order = np.random.default_rng(0).permutation(len(binary))
train, test = binary[order[:1500]], binary[order[1500:]]
n_test = len(test)

# %% 1. Four families, four backends
mixture, t_mix = timed(
    "BernoulliMixture(20), EM",
    lambda: pg.fit(BernoulliMixture(20), train, method="em", seed=0, progress=False),
)
# CD's defaults (persistent chains, 20 digits a step, lr 0.05 decayed to 0.005) work as they are
rbm, t_rbm = timed(
    f"RBM(64, {RBM_HIDDEN}), persistent CD",
    lambda: pg.fit(RBM(64, RBM_HIDDEN), train, method="cd", num_steps=RBM_STEPS, seed=0, progress=False),
)
vae, t_vae = timed(
    "VAE(64, 10), SVI",
    lambda: pg.fit(
        VAE(64, 10),
        train,
        method="svi",
        num_steps=VAE_STEPS,
        lr=1e-3,
        subsample_size=128,
        seed=0,
        progress=False,
    ),
)
# the adversarial backend's defaults: Adam (lr 1e-3, betas 0.5, 0.999), 128 digits a step, R1 penalty 1
gan, t_gan = timed(
    "GAN(64, 10), adversarial",
    lambda: pg.fit(GAN(64, 10), train, method="adversarial", num_steps=GAN_STEPS, seed=0, progress=False),
)

# %% 2. Held-out log-likelihood per image (nats; higher is better)
held_out = {
    "BernoulliMixture": float(mixture.log_prob(test).mean()),  # exact
    "RBM": float(rbm.log_prob(test).mean()),  # -F(x) - log Z
    "VAE": float(vae.log_prob(test).mean()),  # IWAE bound, 100 importance samples per digit
}
log_z = rbm.log_partition()  # exact for <= 20 hidden units, else AIS (100 runs of 10000 temperatures)
print(f"RBM log Z = {log_z.value:.2f} ({log_z.method}, standard error {log_z.stderr:.3f})")
# a cheaper AIS (1000 temperatures) against the partition function used by fit.log_prob
quick = rbm.log_partition(method="ais", num_steps=1000)
print(f"  AIS with 1000 temperatures: {quick.value:.2f} +- {quick.stderr:.3f}")
try:
    gan.log_prob(test)
except TypeError as err:  # a GAN is an implicit model: it generates, but has no density
    print(f"GAN: fit.log_prob refuses: {err}")
for name, value in held_out.items():
    print(f"  {name}: {value:.2f} nats per held-out digit")
# full run: BernoulliMixture -18.7, RBM (100 hidden, AIS log Z) -17.1, VAE -17.1 (IWAE)

# %% 3. MMD between n samples and the n held-out digits, one kernel bandwidth for every model
samples = {
    "BernoulliMixture": mixture.sample(n_test, seed=1).numpy(),  # binary pixels
    "RBM": rbm.sample(n_test, seed=1).numpy(),  # binary, after 1000 Gibbs sweeps per chain
    "VAE": vae.sample(n_test, seed=1).numpy(),  # binary: Bernoulli draws, not the decoder's means
    # real-valued outputs: threshold at 0.5 so binary samples meet binary digits
    "GAN": (gan.sample(n_test, seed=1).numpy() > 0.5).astype("float32"),
}
reference = train[:n_test]  # real training digits: the floor an ideal generator would reach
bandwidth = pg.mmd_test(reference, test).bandwidth  # median heuristic, then fixed for all
print(f"MMD^2 to the {n_test} held-out digits (Gaussian kernel, bandwidth {bandwidth:.2f}):")
mmds = {}
for name, x in {"training digits": reference, **samples}.items():
    result = pg.mmd_test(x, test, bandwidth=bandwidth, num_permutations=500, seed=0)
    mmds[name] = result.statistic
    print(f"  {name:>16}: {result.statistic:.5f}  (p = {result.p_value:.3f})")
# the GAN's raw outputs, not thresholded, are further still from binary digits
print(f"  GAN without the threshold: {pg.mmd(gan.sample(n_test, seed=1), test, bandwidth=bandwidth):.5f}")

# %% Sample grids side by side
panels = {"held-out digits": test, **samples}
fig, axes = plt.subplots(1, len(panels), figsize=(3.6 * len(panels), 4.0))
for ax, (name, images) in zip(axes, panels.items(), strict=True):
    ax.imshow(montage(images, 8, 8), cmap="gray_r", vmin=0, vmax=1, interpolation="nearest")
    ax.set_title(name + (" (> 0.5)" if name == "GAN" else ""))
    ax.set_axis_off()
fig.suptitle("64 binary samples from each model, next to 64 held-out digits")
save(fig, "05_zoo_samples.png")

# %% Summary table
times = {"BernoulliMixture": t_mix, "RBM": t_rbm, "VAE": t_vae, "GAN": t_gan}
print(f"\n{'model':<18}{'held-out nats/image':>21}{'MMD^2':>10}{'fit time (s)':>14}")
for name in times:
    ll = f"{held_out[name]:.2f}" if name in held_out else "none"
    print(f"{name:<18}{ll:>21}{mmds[name]:>10.5f}{times[name]:>14.1f}")
print(f"{'training digits':<18}{'':>21}{mmds['training digits']:>10.5f}{'':>14}")
# full run (fit times on one thread):
# model              held-out nats/image     MMD^2  fit time (s)
# BernoulliMixture                 -18.72   0.00062           0.2
# RBM                              -17.12   0.03937           3.1
# VAE                              -17.07   0.00090           5.1
# GAN                                none   0.00864           6.0
# training digits                           0.00023
# Likelihood and sample quality disagree: the RBM scores held-out digits as well as the VAE,
# yet its Gibbs samples are the furthest from them (thick 1s and 4s come out far more often
# than in the data; longer burn-in does not change this), while the mixture, with the worst
# likelihood, and the VAE draw samples that the MMD test cannot tell from real digits at the 5%
# level (p = 0.16 and 0.08).
# Held-out likelihood and sample quality are different questions; ask both.

# %% 4. A character-level LSTM on Shakespeare; the last 10% of the text held out
text = pg.datasets.load_text("shakespeare")
cut = int(0.9 * len(text))
text_train, text_test = text[:cut], text[cut:]
vocabulary = "".join(sorted(set(text)))  # the alphabet of the whole text, so no held-out character is unknown
start = time.perf_counter()
rnn = pg.fit(
    CharRNN(hidden_size=128, vocabulary=vocabulary),
    text_train,
    method="svi",
    num_steps=RNN_STEPS,
    subsample_size=RNN_BATCH,
    lr=0.01,
    seed=0,
    progress=False,
)
t_rnn = time.perf_counter() - start
rnn_nats = -float(rnn.log_prob(text_test)[0]) / len(text_test)  # the held-out text scored whole

# the baseline: an add-one (Laplace) bigram p(c | previous c), counted on the training text
index = {c: i for i, c in enumerate(vocabulary)}
counts = np.ones((len(vocabulary), len(vocabulary)))
for (a, b), k in Counter(zip(text_train[:-1], text_train[1:], strict=True)).items():
    counts[index[a], index[b]] += k
log_bigram = np.log(counts / counts.sum(1, keepdims=True))
# each held-out character after its predecessor (the first after the training text's last)
pairs = zip(text_train[-1] + text_test[:-1], text_test, strict=True)
bigram_nats = -float(np.mean([log_bigram[index[a], index[b]] for a, b in pairs]))
print(f"\nCharRNN: {len(rnn.history)} steps in {t_rnn:.0f} s")
print(f"  held-out nats/char: CharRNN {rnn_nats:.3f}, add-one bigram {bigram_nats:.3f}")
print(f"  (uniform over the {len(vocabulary)} characters: {math.log(len(vocabulary)):.3f})")
# full run: CharRNN 1.82, bigram 2.49 nats/char (the held-out tenth is from Richard III, of which
# the training text has only the opening)

# temperature 0.5: safe, repetitive English; 1.0: the model's own distribution; 1.5: invented words
prompt = "CORIOLANUS:\n"
for temperature in (0.5, 1.0, 1.5):
    (line,) = rnn.sample(1, length=len(prompt) + 160, prompt=prompt, temperature=temperature, seed=0)
    print(f"\n--- temperature {temperature}:\n{line}")
