"""Tutorial 2: hidden Markov models on 299 consecutive Old Faithful eruptions.

The ``geyser`` data are a real time series: for each eruption, the waiting time before it and its
duration (minutes), in the order they happened.  Short and long eruptions do not come at random:
a short one is nearly always followed by a long one.  A hidden Markov model captures exactly that.

What it shows, with the public API only:

1. Choose the number of hidden states by BIC over EM fits (``pg.compare``).
2. Decode the regimes: the Viterbi path (``fit.predict``) and the posterior probability of each
   state at every eruption (``fit.predict_proba``), both drawn by ``fit.plot``.
3. Fit the same model the Bayesian way (NUTS; the states are summed out by the forward
   algorithm), check it (``pg.check``) and compare it with the EM estimate in ArviZ.
4. Simulate new sequences (``fit.sample``) and check that they alternate like the real one.

Figures are written as PNG files into ``$PROBGEN_TUTORIAL_OUT`` (default ``tutorials/figures``).
``PROBGEN_FAST=1`` runs tiny MCMC settings (what CI runs).
"""

from __future__ import annotations

import os
import time
import warnings
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import arviz as az  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

import probgen as pg  # noqa: E402
from probgen.models import HiddenMarkovModel  # noqa: E402

FAST = os.environ.get("PROBGEN_FAST", "0") == "1"
OUT = Path(os.environ.get("PROBGEN_TUTORIAL_OUT", Path(__file__).resolve().parent / "figures"))
MCMC = (
    {"num_samples": 20, "warmup_steps": 20, "num_chains": 2, "max_tree_depth": 4}
    if FAST
    else {"num_samples": 400, "warmup_steps": 400, "num_chains": 2}
)
COLORS = ["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple"]
torch.set_num_threads(1)  # small data: one thread is fastest and leaves the other cores alone


def save(fig: plt.Figure, name: str) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    fig.savefig(OUT / name, dpi=100, bbox_inches="tight")
    plt.close(fig)
    print(f"  wrote {OUT / name}")


def lag1(x: np.ndarray) -> float:
    """Lag-1 autocorrelation of a series."""
    x = x - x.mean()
    return float((x[1:] * x[:-1]).sum() / (x * x).sum())


def main() -> None:
    t_start = time.perf_counter()
    geyser = pg.datasets.load_geyser()
    x = geyser[["waiting", "duration"]].to_numpy()
    print(f"geyser: {len(x)} consecutive eruptions, columns waiting and duration (minutes)")
    print(f"  lag-1 autocorrelation of waiting times: {lag1(x[:, 0]):+.2f} (short and long alternate)")

    # ------------------------------------------------------------------ 1. how many states?
    print("\n1. EM for 1..4 hidden states, ranked by BIC")
    fits = {}
    for k in range(1, 5):
        fits[f"K={k}"] = pg.fit(
            HiddenMarkovModel(k, covariance_type="diag"),
            x,
            method="em",
            seed=0,
            n_init=3 if FAST else 10,  # the defaults run each start to convergence (tol=1e-8 per step)
            progress=False,
        )
    table = pg.compare(fits)
    print(table.round(1).to_string())
    best_name = table.index[0]
    fit = fits[best_name]
    K = fit.model.n_states
    print(f"  BIC chooses {best_name}")

    # ------------------------------------------------------------------- 2. decode regimes
    print(f"\n2. Regimes of the {best_name} model")
    order = np.argsort(fit.params["locs"][:, 0].numpy())  # name states by waiting time
    rank = np.empty(K, dtype=int)
    rank[order] = np.arange(K)
    path = rank[fit.predict(x).numpy()]
    proba = fit.predict_proba(x).numpy()[:, order]
    for s in range(K):
        loc = fit.params["locs"][order[s]].numpy()
        print(
            f"  state {s}: waiting {loc[0]:5.1f} min, duration {loc[1]:4.2f} min, {np.mean(path == s):5.1%} of eruptions"
        )
    unsure = proba.max(1) < 0.9
    print(f"  {unsure.mean():.1%} of eruptions have no state with posterior probability >= 0.9")
    trans = fit.params["transition"].numpy()[np.ix_(order, order)]
    print("  transition matrix (rows: from, columns: to):")
    print("   " + np.array2string(trans, precision=2, suppress_small=True).replace("\n", "\n   "))

    # fit.plot: the series over strips coloured by Viterbi state, the state probabilities below;
    # the first 100 eruptions (decoded on the whole series), so that every run can be seen
    ax = fit.plot(x, feature=0, window=(0, 100))
    ax.set(
        ylabel="waiting (min)", title=f"Viterbi regimes, {best_name}: first 100 eruptions (colour = state)"
    )
    ax.figure.axes[-1].set_xlabel("eruption")
    save(ax.figure, "hmm_regimes.png")

    # ------------------------------------------------------------- 3. the Bayesian fit
    print(
        f"\n3. Bayesian {best_name} HMM by NUTS ({MCMC['num_chains']} chains x {MCMC['num_samples']} draws)"
    )
    # start the chains at the EM estimate, nudged off exact zeros (the prior's boundary)
    em_start = dict(fit.params)
    for name in ("initial", "transition"):
        p = em_start[name] + 1e-3
        em_start[name] = p / p.sum(-1, keepdim=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tiny fast-mode chains warn about adaptation
        bayes = pg.fit(
            HiddenMarkovModel(K, covariance_type="diag"),
            x,
            method="mcmc",
            seed=1,
            init=em_start,
            progress=False,
            **MCMC,
        )
    problems = pg.check(bayes)
    print("  pg.check:", "healthy" if not problems else "")
    for p in problems[:4]:
        print("   -", p)
    idata = bayes.to_arviz()
    summary = az.summary(idata, var_names=["locs", "transition"], kind="stats")
    print(summary.round(3).to_string())
    print("  EM estimate of the state means (waiting, duration):")
    print("   " + np.array2string(fit.params["locs"][order].numpy(), precision=2).replace("\n", "\n   "))

    hdi = az.hdi(idata, var_names=["locs"], hdi_prob=0.94)["locs"].values  # (K, 2 features, 2)
    post_mean = idata.posterior["locs"].mean(("chain", "draw")).values
    em_locs = fit.params["locs"][order].numpy()  # MCMC draws are sorted by waiting time too
    fig, axes = plt.subplots(1, 2, figsize=(9, 3))
    for j, (ax, name) in enumerate(zip(axes, ["waiting (min)", "duration (min)"], strict=True)):
        for s_ in range(K):
            ax.plot(hdi[s_, j], [s_, s_], color=COLORS[s_], lw=3)
            ax.scatter(post_mean[s_, j], s_, color=COLORS[s_], zorder=3)
            ax.scatter(
                em_locs[s_, j], s_, marker="x", color="k", s=60, zorder=4, label="EM" if s_ == 0 else None
            )
        ax.set_yticks(range(K), [f"state {s_}" for s_ in range(K)])
        ax.set_xlabel(name)
    axes[0].legend(loc="best")
    fig.suptitle("state means: posterior mean and 94% HDI (NUTS) vs EM estimate (x)")
    save(fig, "hmm_bayes_vs_em.png")
    ll_em = float(fit.log_prob(x).sum())
    ll_bayes = float(bayes.log_prob(x).sum())
    print(f"  log-likelihood: EM {ll_em:.1f}, posterior predictive {ll_bayes:.1f}")

    # --------------------------------------------------------------- 4. simulate new data
    print("\n4. Simulated geysers")
    sims, latents = fit.sample(200, length=len(x), seed=2, return_latents=True)
    sim_lag1 = np.array([lag1(s[:, 0].numpy()) for s in sims])
    print(
        f"  lag-1 autocorrelation of waiting: data {lag1(x[:, 0]):+.2f}, "
        f"simulated {sim_lag1.mean():+.2f} +/- {sim_lag1.std():.2f} (200 sequences)"
    )
    t = np.arange(len(x))
    fig, axes = plt.subplots(3, 1, figsize=(11, 6), sharex=True, sharey=True)
    axes[0].plot(t, x[:, 0], color="k", lw=0.8)
    axes[0].set_title("observed")
    for i, ax in enumerate(axes[1:]):
        states = rank[latents["states"][i].numpy()]
        ax.plot(t, sims[i][:, 0].numpy(), color="0.6", lw=0.8)
        ax.scatter(t, sims[i][:, 0].numpy(), c=[COLORS[s] for s in states], s=8, zorder=3)
        ax.set_title(f"simulated {i + 1}")
    axes[1].set_ylabel("waiting (min)")
    axes[-1].set_xlabel("eruption")
    save(fig, "hmm_simulated.png")
    fig, ax = plt.subplots(figsize=(5, 3))
    ax.hist(sim_lag1, bins=25, color="0.7")
    ax.axvline(lag1(x[:, 0]), color="k", label="observed")
    ax.set_xlabel("lag-1 autocorrelation of waiting")
    ax.legend()
    save(fig, "hmm_autocorrelation.png")
    print(f"\ndone in {time.perf_counter() - t_start:.1f} s")


if __name__ == "__main__":
    main()
