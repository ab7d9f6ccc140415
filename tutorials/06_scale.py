"""Tutorial 6: data past memory and past one machine.

What it shows, with the public API only:

1. Ten million two-dimensional points written to a numpy memmap on disk (160 MB of float64; a
   real job's file would be larger than RAM), and a three-component ``GaussianMixture`` fitted by
   EM reading it chunk by chunk (``chunk_size=``): the same fixed point as EM in memory, with
   memory for one chunk.
2. The single-pass alternative, online EM (``online=True``, Cappe & Moulines 2009).
3. A Pyro mixture of the user's own fitted by SVI from a stream of minibatches read off the same
   file (``num_items=``): each minibatch's likelihood is scaled by N over the batch size, so the
   posterior is the one given all ten million points.
4. The same SVI on data sharded across processes with ``torchrun`` (the command to run; the
   script ``tutorials/scripts/torchrun_svi.py`` shows every rank reaching the posterior of the
   union of the shards).

``PROBGEN_FAST=1`` uses 200,000 points (what CI runs); the numbers quoted are from the full run.
Figures are written as PNG files into ``$PROBGEN_TUTORIAL_OUT`` (default ``tutorials/figures``).
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pyro  # noqa: E402
import pyro.distributions as dist  # noqa: E402
import torch  # noqa: E402
from pyro.ops.indexing import Vindex  # noqa: E402

import probgen as pg  # noqa: E402
from probgen.models import GaussianMixture  # noqa: E402

FAST = os.environ.get("PROBGEN_FAST", "0") == "1"
OUT = Path(os.environ.get("PROBGEN_TUTORIAL_OUT", Path(__file__).resolve().parent / "figures"))
N = 200_000 if FAST else 10_000_000
CHUNK = 50_000 if FAST else 1_000_000
torch.set_num_threads(1)

TRUE_LOCS = np.array([[-4.0, 0.0], [0.0, 3.0], [4.0, -1.0]])
TRUE_WEIGHTS = np.array([0.5, 0.3, 0.2])

# %% 1. Ten million points on disk, written a million at a time (never all in memory)
folder = Path(tempfile.mkdtemp(prefix="probgen_scale_"))
path = folder / "points.npy"
data = np.lib.format.open_memmap(path, mode="w+", dtype=np.float64, shape=(N, 2))
rng = np.random.default_rng(0)
for start in range(0, N, CHUNK):
    stop = min(start + CHUNK, N)
    z = rng.choice(3, size=stop - start, p=TRUE_WEIGHTS)
    data[start:stop] = TRUE_LOCS[z] + rng.standard_normal((stop - start, 2))
data.flush()
del data
points = np.load(path, mmap_mode="r")  # read-only memmap: rows are read from disk when touched
print(f"{N:,} points on disk: {path.stat().st_size / 1e6:.0f} MB")

# %% 2. EM chunk by chunk: the statistics of every chunk are summed, then one M-step
start = time.perf_counter()
chunked = pg.fit(GaussianMixture(3), points, method="em", chunk_size=CHUNK, progress=False)
t_chunked = time.perf_counter() - start
order = np.argsort(chunked.params["locs"][:, 0].numpy())
print(
    f"chunked EM: {chunked.extras['n_iter']} iterations in {t_chunked:.1f} s, converged={chunked.converged}\n"
    f"  weights {np.round(chunked.params['weights'].numpy()[order], 3)} (true {TRUE_WEIGHTS})\n"
    f"  locs {np.round(chunked.params['locs'].numpy()[order], 3).tolist()}"
)
# full run (10,000,000 points, one thread): 7 iterations in 14 s, weights [0.5 0.3 0.2] and the
# means to three decimals; online EM: one pass in 2.7 s, means within 0.0008 of batch EM;
# streamed SVI: 2000 minibatches in 27 s, means within 0.0031 of chunked EM

# %% 3. Online EM: one pass over the chunks, a stochastic-approximation update after each
start = time.perf_counter()
online = pg.fit(GaussianMixture(3), points, method="em", chunk_size=CHUNK, online=True, progress=False)
t_online = time.perf_counter() - start
order_online = np.argsort(online.params["locs"][:, 0].numpy())
gap = np.abs(online.params["locs"].numpy()[order_online] - chunked.params["locs"].numpy()[order]).max()
print(f"online EM: one pass in {t_online:.1f} s; largest difference of the means from batch EM {gap:.4f}")

# Held-out scores need data in memory: score a sample of rows read from disk
sample_rows = np.sort(rng.choice(N, size=20_000, replace=False))
held = np.asarray(points[sample_rows])
print(f"mean log-likelihood of 20,000 rows: batch {chunked.score(held):.4f}, online {online.score(held):.4f}")


# %% 4. SVI on a stream of minibatches read off the same file: a model of one's own
class Minibatches:
    """Blocks of ``batch`` consecutive rows in a new random order each pass (re-iterable)."""

    def __init__(self, array: np.ndarray, batch: int, seed: int = 0) -> None:
        self.array, self.batch = array, batch
        self.rng = np.random.default_rng(seed)

    def __iter__(self):
        starts = np.arange(0, len(self.array), self.batch)
        for s in self.rng.permutation(starts):
            yield np.asarray(self.array[s : s + self.batch])


@pg.model
def mixture(data=None):
    weights = pyro.sample("weights", dist.Dirichlet(torch.ones(3, dtype=torch.float64)))
    with pyro.plate("components", 3):
        locs = pyro.sample("locs", dist.Normal(torch.zeros(2, dtype=torch.float64), 10.0).to_event(1))
    with pyro.plate("points", 100 if data is None else len(data)):
        z = pyro.sample("z", dist.Categorical(weights))
        pyro.sample("x", dist.Normal(Vindex(locs)[..., z, :], 1.0).to_event(1), obs=data)


start = time.perf_counter()
streamed = pg.fit(
    mixture,
    Minibatches(points, 10_000),
    method="svi",
    num_items=N,
    guide="delta",  # MAP: at this size the posterior is a point for every practical purpose
    num_steps=400 if FAST else 2000,
    lr=0.05,
    lr_decay=0.05,
    tol=0,
    progress=False,
)
t_svi = time.perf_counter() - start
o = np.argsort(streamed.params["locs"][:, 0].numpy())
gap_svi = np.abs(streamed.params["locs"].numpy()[o] - chunked.params["locs"].numpy()[order]).max()
print(
    f"streamed SVI (MAP): {len(streamed.history)} minibatches of 10,000 in {t_svi:.1f} s; "
    f"weights {np.round(streamed.params['weights'].numpy()[o], 3)}, largest difference of the means "
    f"from chunked EM {gap_svi:.4f}"
)
# The minibatch log-likelihood is scaled by N / 10,000, so the prior weighs as little as it does
# against all N points; without that scale it would count as much as against one minibatch.

# %% Figure: a sample of the data with the three fits' means
fig, ax = plt.subplots(figsize=(6, 4.5))
ax.scatter(held[:5000, 0], held[:5000, 1], s=2, alpha=0.3, color="0.5", label="5,000 points read from disk")
for fit, marker, label in (
    (chunked, "x", "chunked EM"),
    (online, "+", "online EM"),
    (streamed, "o", "streamed SVI"),
):
    locs = fit.params["locs"].numpy()
    ax.scatter(
        locs[:, 0],
        locs[:, 1],
        marker=marker,
        s=120,
        label=label,
        facecolors="none" if marker == "o" else None,
        edgecolors="C3" if marker == "o" else None,
    )
ax.legend(loc="lower left", fontsize=8)
ax.set_title(f"Three fits of {N:,} points streamed from disk")
OUT.mkdir(parents=True, exist_ok=True)
fig.savefig(OUT / "06_scale_means.png", dpi=100, bbox_inches="tight")
plt.close(fig)
print(f"  wrote {OUT / '06_scale_means.png'}")

# %% 5. Past one machine: torchrun
print(
    "Data sharded across processes: every rank passes its own shard to pg.fit; under an initialised\n"
    "torch.distributed process group SVI scales the plate by the sum of the shard sizes and averages\n"
    "gradients across ranks, so every rank ends with the posterior of the union. Try:\n"
    "    torchrun --standalone --nproc_per_node=2 tutorials/scripts/torchrun_svi.py --skew"
)

del points
for f in folder.iterdir():
    f.unlink()
folder.rmdir()
