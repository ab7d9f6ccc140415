"""Tutorial 4: variational autoencoders on the 8x8 handwritten digits (offline, from scikit-learn).

What it shows, with the public API only:

1. Fit a ``VAE`` by SVI on minibatches and generate new digits (``fit.sample``, ``fit.decode``).
2. Walk a two-dimensional latent space: a grid of decoded codes, and the digits' codes
   (``fit.encode``) coloured by their true class, which the VAE never saw.
3. Score anomalies: ``fit.log_prob`` (an importance-weighted estimate of ``log p(x)``) ranks
   corrupted digits far below clean held-out ones.
4. Learn from ten labels per class with ``SemiSupervisedVAE`` (Kingma et al. 2014, M2) and
   compare its accuracy with a logistic regression fitted on the same 100 labels.

Figures are written as PNG files into ``$PROBGEN_TUTORIAL_OUT`` (default ``tutorials/figures``).
``PROBGEN_FAST=1`` runs short trainings (what CI runs); the numbers quoted in comments are from
the full run.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402

import probgen as pg  # noqa: E402
from probgen.models import VAE, SemiSupervisedVAE  # noqa: E402

FAST = os.environ.get("PROBGEN_FAST", "0") == "1"
OUT = Path(os.environ.get("PROBGEN_TUTORIAL_OUT", Path(__file__).resolve().parent / "figures"))
STEPS = 150 if FAST else 3000  # minibatch steps of 128 digits (about 14 steps an epoch)
SS_STEPS = 150 if FAST else 2500
torch.set_num_threads(1)  # small networks: one thread is fastest and leaves the other cores alone


def save(fig: plt.Figure, name: str) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    fig.savefig(OUT / name, dpi=100, bbox_inches="tight")
    plt.close(fig)
    print(f"  wrote {OUT / name}")


def show_digits(images: np.ndarray, rows: int, cols: int, title: str) -> plt.Figure:
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 0.8, rows * 0.8))
    for ax, img in zip(np.ravel(axes), images, strict=False):
        ax.imshow(np.asarray(img).reshape(8, 8), cmap="gray_r", vmin=0, vmax=1)
        ax.set_axis_off()
    fig.suptitle(title)
    return fig


# %% Data: 1797 digits, 8x8 grey levels 0..16; binarised for the Bernoulli VAE
digits = load_digits()
grey = (digits.data / 16.0).astype("float32")
binary = (grey > 0.5).astype("float32")
labels = digits.target
rng = np.random.default_rng(0)
order = rng.permutation(len(binary))
train, test = order[:1500], order[1500:]

# %% 1. A VAE with a 10-dimensional code; minibatches through the data plate
start = time.perf_counter()
vae = pg.fit(VAE(64, 10), binary[train], method="svi", num_steps=STEPS, lr=1e-3, subsample_size=128, seed=0)
print(f"VAE: {len(vae.history)} steps in {time.perf_counter() - start:.1f} s, converged={vae.converged}")
print(f"  held-out log p(x) per digit (IWAE): {vae.log_prob(binary[test]).mean():.2f} nats")  # full run: -17
fig = show_digits(vae.sample(40, seed=1).numpy(), 4, 10, "40 new digits drawn from the VAE (binary pixels)")
save(fig, "04_vae_samples.png")
fig = show_digits(
    vae.interpolate(binary[test[0]], binary[test[1]], steps=10).numpy(),
    1,
    10,
    "Walking from one code to another",
)
save(fig, "04_vae_interpolation.png")

# %% 2. A two-dimensional latent space: decode a grid, and place the digits' codes
vae2 = pg.fit(VAE(64, 2), binary[train], method="svi", num_steps=STEPS, lr=1e-3, subsample_size=128, seed=0)
grid = torch.linspace(-2.0, 2.0, 12)
codes = torch.stack(torch.meshgrid(grid, grid.flip(0), indexing="xy"), -1).reshape(-1, 2)
fig = show_digits(vae2.decode(codes).numpy(), 12, 12, "Decoded means over a grid of 2-d codes")
save(fig, "04_vae_latent_grid.png")
loc, _ = vae2.encode(binary)
fig, ax = plt.subplots(figsize=(6, 5))
points = ax.scatter(loc[:, 0], loc[:, 1], c=labels, cmap="tab10", s=6)
fig.colorbar(points, ax=ax, label="true digit (never shown to the VAE)")
ax.set(xlabel="z[0]", ylabel="z[1]", title="Posterior means of the codes")
save(fig, "04_vae_latent_codes.png")

# %% 3. Anomaly scores: corrupted digits score far lower than clean held-out ones
clean = binary[test[:100]]
corrupted = clean.copy()
flip = rng.random(corrupted.shape) < 0.25  # a quarter of the pixels flipped
corrupted[flip] = 1.0 - corrupted[flip]
score_clean, score_bad = vae.log_prob(clean), vae.log_prob(corrupted)
threshold = float(np.quantile(score_clean.numpy(), 0.05))  # 5% false alarms on clean digits
caught = float((score_bad < threshold).float().mean())
print(f"  anomaly scores: clean {score_clean.mean():.1f}, corrupted {score_bad.mean():.1f} nats;")
print(f"  {100 * caught:.0f}% of corrupted digits fall below the 5% quantile of clean scores")
fig, ax = plt.subplots(figsize=(6, 3.5))
ax.hist(score_clean.numpy(), bins=30, alpha=0.7, label="clean held-out digits")
ax.hist(score_bad.numpy(), bins=30, alpha=0.7, label="25% of pixels flipped")
ax.axvline(threshold, color="k", ls="--", label="5% quantile of clean")
ax.set(xlabel="log p(x) (IWAE estimate)", ylabel="digits", title="Anomaly scores")
ax.legend()
save(fig, "04_vae_anomaly_scores.png")

# %% 4. Semi-supervised: ten labels per class, the other 1697 digits unlabelled (y = -1)
chosen = np.concatenate([rng.choice(np.flatnonzero(labels == c), 10, replace=False) for c in range(10)])
partial = np.full(len(labels), -1)
partial[chosen] = labels[chosen]
unlabelled = partial < 0
start = time.perf_counter()
m2 = pg.fit(
    SemiSupervisedVAE(10, 10, 64),
    (grey, partial),
    method="svi",
    num_steps=SS_STEPS,
    lr=1e-3,
    subsample_size=128,
    seed=0,
)
elapsed = time.perf_counter() - start
accuracy = float((m2.predict(grey[unlabelled]).numpy() == labels[unlabelled]).mean())
baseline = LogisticRegression(max_iter=2000).fit(grey[chosen], labels[chosen])
base_accuracy = float((baseline.predict(grey[unlabelled]) == labels[unlabelled]).mean())
print(f"SemiSupervisedVAE: accuracy {accuracy:.3f} on the unlabelled digits ({elapsed:.0f} s to train);")
print(f"  logistic regression on the 100 labels alone: {base_accuracy:.3f}")  # full run: 0.95 vs 0.89
style = torch.randn(8, 10, generator=torch.Generator().manual_seed(3))
rows = np.concatenate([m2.decode(style, c).numpy() for c in range(10)])
fig = show_digits(rows, 10, 8, "M2: one row per class, one column per style code z")
save(fig, "04_ssvae_classes_by_style.png")
