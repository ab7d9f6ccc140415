"""``probgen demo``: a short tour of hidden Markov models on the Old Faithful geyser series."""

from __future__ import annotations

import time

import numpy as np
import torch

__all__ = ["run"]


def run(progress: bool = False) -> None:
    """Print a short tour: EM fits of geyser waiting times, states chosen by BIC, decoded regimes.

    Parameters
    ----------
    progress : bool, default False
        Show progress bars while fitting.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # 299 steps: one thread is fastest
    try:
        _tour(progress)
    finally:
        torch.set_num_threads(threads)


def _tour(progress: bool) -> None:
    import probgen as pg
    from probgen.models import HiddenMarkovModel

    print("== Hidden Markov models: 299 consecutive Old Faithful eruptions (waiting times) ==")
    waiting = pg.datasets.load_geyser()["waiting"].to_numpy()
    t0 = time.perf_counter()
    fits = {
        f"{k} states": pg.fit(
            HiddenMarkovModel(k),
            waiting,
            method="em",
            seed=0,
            n_init=3,
            progress=progress,
        )
        for k in (1, 2, 3, 4)
    }
    table = pg.compare(fits)
    print(f"EM (Baum-Welch) for 1..4 states, {time.perf_counter() - t0:.1f} s; ranked by BIC:")
    print(table[["log_lik", "n_params", "bic"]].round(1).to_string())
    best = fits[table.index[0]]
    order = np.argsort(best.params["locs"][:, 0].numpy())
    rank = np.empty(len(order), dtype=int)
    rank[order] = np.arange(len(order))
    means = best.params["locs"][order, 0].numpy()
    trans = best.params["transition"].numpy()[np.ix_(order, order)]
    print(f"Chosen: {table.index[0]}, state means (min): {', '.join(f'{m:.1f}' for m in means)}")
    print("Transition matrix (rows: from, columns: to; states by mean waiting time):")
    print("  " + np.array2string(trans, precision=2, suppress_small=True).replace("\n", "\n  "))
    path = rank[best.predict(waiting).numpy()]
    print("Viterbi regimes of the first 40 eruptions (0 = shortest wait):")
    print("  " + "".join(str(s) for s in path[:40]))
    print("Waiting times of the first 12:  " + " ".join(f"{w:.0f}" for w in waiting[:12]) + " ...")
    sim = best.sample(1, length=12, seed=1)[0].numpy()
    print("A simulated stretch of 12:      " + " ".join(f"{w:.0f}" for w in sim) + " ...")
    print("A short wait is almost always followed by a long one; the chain captures the alternation.\n")
