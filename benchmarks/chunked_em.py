"""EM over a numpy memmap read in chunks against EM on the same data in memory.

Setting: a 3-component Gaussian mixture (full covariances, ``--features`` features) on
``--rows`` items written to a ``.npy`` memmap in a temporary directory, float64, one thread,
the same starting values for every run, a fixed number of iterations (``tol=0``).

Seconds per EM iteration exclude starting costs: each mode is timed at 1 and ``1 + --iters``
iterations and the difference is divided by ``--iters``.  Peak memory is the peak resident set
size (``resource.getrusage``) of a fresh process per mode, less that process's size before the
fit (after importing torch and probgen), so it counts what the fit itself holds: the data and
the E-step's work arrays in memory, one chunk of them over chunks.  One pass of online EM is
timed as well.  The chunked and in-memory fits are checked to agree.

Run: ``python benchmarks/chunked_em.py`` (about a minute); ``--rows 20000000`` for a data set
of 20 million rows (640 MB at 4 features) that the in-memory fit holds several times over.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

MEANS = np.array([[0.0, 0.0, 0.0, 0.0], [5.0, 5.0, 0.0, 0.0], [0.0, 6.0, 6.0, 3.0]])


def write_memmap(path: Path, rows: int, features: int, seed: int, block: int = 1_000_000) -> None:
    """Three well-separated correlated Gaussian blobs, written block by block."""
    rng = np.random.default_rng(seed)
    means = np.resize(MEANS, (3, features)) if features != MEANS.shape[1] else MEANS
    mixing = np.eye(features) + 0.3 * rng.normal(size=(3, features, features)) / np.sqrt(features)
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float64, shape=(rows, features))
    for start in range(0, rows, block):
        n = min(block, rows - start)
        z = rng.integers(0, 3, n)
        out[start : start + n] = means[z] + np.einsum("nij,nj->ni", mixing[z], rng.normal(size=(n, features)))
    out.flush()
    del out


def start(features: int) -> dict[str, np.ndarray]:
    means = np.resize(MEANS, (3, features)) if features != MEANS.shape[1] else MEANS
    return {
        "weights": np.full(3, 1 / 3),
        "locs": means + 0.7,
        "scale": np.full((3, features), 1.5),
        "corr_cholesky": np.broadcast_to(np.eye(features), (3, features, features)).copy(),
    }


def peak_mb() -> float:
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kilobytes on Linux
    return kb / 1024.0


def child(mode: str, path: str, chunk_size: int, iters: int) -> None:
    """One mode in a fresh process: time and peak memory, printed as one JSON line."""
    import torch

    import probgen as pg
    from probgen.errors import ConvergenceWarning
    from probgen.models import GaussianMixture

    torch.set_num_threads(1)
    x = np.load(path, mmap_mode="r")
    init = start(x.shape[1])
    base = peak_mb()
    options: dict[str, Any] = {"init": init, "tol": 0.0, "progress": False}
    if mode != "memory":
        options["chunk_size"] = chunk_size
    if mode == "online":
        options["online"] = True
    warnings.simplefilter("ignore", ConvergenceWarning)
    times, fits = [], []
    for n_iter in (1, 1 + iters) if mode != "online" else (1,):
        t0 = time.perf_counter()
        fits.append(pg.fit(GaussianMixture(3, "full"), x, method="em", max_iter=n_iter, **options))
        times.append(time.perf_counter() - t0)
    result = {
        "mode": mode,
        "seconds_per_iteration": (times[-1] - times[0]) / iters if mode != "online" else times[0],
        "peak_mb": peak_mb() - base,
        "base_mb": base,
        "locs": fits[-1].params["locs"].tolist(),
        "log_lik": fits[-1].log_evidence,
    }
    print(json.dumps(result))


def run(mode: str, path: Path, chunk_size: int, iters: int) -> dict[str, object]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    cmd = [sys.executable, __file__, "--child", mode, "--path", str(path)]
    cmd += ["--chunk-size", str(chunk_size), "--iters", str(iters)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--features", type=int, default=4)
    parser.add_argument("--chunk-size", type=int, default=100_000)
    parser.add_argument("--iters", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--child", choices=["memory", "chunked", "online"])
    parser.add_argument("--path")
    args = parser.parse_args()
    if args.child:
        child(args.child, args.path, args.chunk_size, args.iters)
        return
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "x.npy"
        t0 = time.perf_counter()
        write_memmap(path, args.rows, args.features, args.seed)
        size_mb = path.stat().st_size / 2**20
        print(
            f"{args.rows:,} rows x {args.features} features ({size_mb:.0f} MB memmap, written in "
            f"{time.perf_counter() - t0:.1f} s); 3 components, full covariances; chunk_size={args.chunk_size:,}; "
            "one thread"
        )
        results = {m: run(m, path, args.chunk_size, args.iters) for m in ("memory", "chunked", "online")}
    mem, chk = results["memory"], results["chunked"]
    gap = float(np.abs(np.asarray(mem["locs"]) - np.asarray(chk["locs"])).max())
    print(f"{'mode':<10}{'s / iteration':>15}{'peak MB (fit)':>16}")
    for name, r in results.items():
        label = "s / pass" if name == "online" else ""
        print(f"{name:<10}{r['seconds_per_iteration']:>15.3f}{r['peak_mb']:>16.0f}  {label}")
    print(f"process size before the fit: {mem['base_mb']:.0f} MB")
    print(
        f"chunked vs in-memory: max |locs difference| {gap:.2e}, log-likelihood {chk['log_lik']:.6f} vs "
        f"{mem['log_lik']:.6f}"
    )
    on = np.asarray(results["online"]["locs"])
    print(
        f"online (one pass) vs batch: max |locs difference| {float(np.abs(on - np.asarray(mem['locs'])).max()):.3f}"
    )


if __name__ == "__main__":
    main()
