"""Tutorial 1: mixture models on Old Faithful and the Palmer penguins.

What it shows, with the public API only:

1. Fit Gaussian mixtures by EM, choose the number of components by BIC (``pg.compare``) and
   draw the fit (``fit.plot``: clusters and covariance ellipses).
2. Fit the same model by MCMC (NUTS, assignments summed out), check it (``pg.check``), and
   compare numbers of components by LOO.  Label switching is undone before any summary: the
   draws are relabelled to a common pivot (Stephens' relabelling, see
   ``GaussianMixture.align_posterior``), so R-hat and ESS are meaningful.
3. Look at the posterior in ArviZ: trace plot and posterior predictive check.
4. Flag anomalous eruptions with ``fit.log_prob`` and generate new ones with ``fit.sample``.
5. Penguins: choose K by BIC and LOO and compare the clusters with the species.
6. Missing values: remove 20% of the penguins' measurements, fit with ``missing="marginalize"``
   (EM sums the missing cells out exactly) and fill them in with ``fit.impute``; compare the
   error with column means (and scikit-learn's ``IterativeImputer`` when scikit-learn is there).

Figures are written as PNG files into ``$PROBGEN_TUTORIAL_OUT`` (default ``tutorials/figures``).
``PROBGEN_FAST=1`` runs short MCMC settings (what CI runs).
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
import pandas as pd  # noqa: E402
import torch  # noqa: E402

import probgen as pg  # noqa: E402
from probgen.models import GaussianMixture  # noqa: E402

FAST = os.environ.get("PROBGEN_FAST", "0") == "1"
OUT = Path(os.environ.get("PROBGEN_TUTORIAL_OUT", Path(__file__).resolve().parent / "figures"))
if FAST:  # Old Faithful: short but healthy chains (R-hat near 1, no divergences); penguins: tiny
    # chains that only run every step, which the health check below catches before any LOO
    MCMC = {"num_samples": 100, "warmup_steps": 100, "num_chains": 2, "max_tree_depth": 6}
    MCMC_PENGUINS = {"num_samples": 20, "warmup_steps": 20, "num_chains": 2, "max_tree_depth": 5}
else:
    MCMC = MCMC_PENGUINS = {"num_samples": 500, "warmup_steps": 500, "num_chains": 4}
#: Looser than pg.check's default R-hat bound (1.01): short chains may compare by LOO when every
#: R-hat is below this and no transition diverged; ESS warnings only ask for more draws.
MAX_RHAT_FOR_LOO = 1.05
torch.set_num_threads(1)  # small data: one thread is fastest and leaves the other cores alone


def save(fig: plt.Figure, name: str) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    fig.savefig(OUT / name, dpi=100, bbox_inches="tight")
    plt.close(fig)
    print(f"  wrote {OUT / name}")


def mcmc(model: GaussianMixture, data, em_fit: pg.Fit, settings: dict) -> pg.Fit:
    """NUTS started at the EM estimate (a good start saves most of the warm-up)."""
    return pg.fit(model, data, method="mcmc", seed=0, progress=False, init=em_fit.params, **settings)


def compare_if_healthy(fits: dict[str, pg.Fit], data) -> None:
    """LOO comparison, only of chains that mixed: LOO from stuck or divergent chains means nothing."""
    problems = {
        name: [p for p in pg.check(f, max_rhat=MAX_RHAT_FOR_LOO) if "R-hat" in p or "divergent" in p]
        for name, f in fits.items()
    }
    sick = {name: p for name, p in problems.items() if p}
    if sick:
        for name, p in sick.items():
            print(f"  {name}: chains not healthy ({p[0]}{'; ...' if len(p) > 1 else ''})")
        print("  LOO comparison skipped: run longer chains (PROBGEN_FAST=0) to compare by LOO.")
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # ArviZ notes on Pareto k with few draws
        print(pg.compare(fits, data).to_string())


def old_faithful() -> None:
    print("== Old Faithful: 272 eruptions (duration, waiting time; minutes)")
    frame = pg.datasets.load_old_faithful()[["eruptions", "waiting"]]
    x = frame.to_numpy()

    # 1. EM for K = 1..5, chosen by BIC: pg.compare ranks point fits by BIC.
    em_fits = {
        f"K={k}": pg.fit(GaussianMixture(k), frame, method="em", seed=0, n_init=3, progress=False)
        for k in range(1, 6)
    }
    print(pg.compare(em_fits, frame).to_string())
    bics = [f.bic(frame) for f in em_fits.values()]
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.plot(range(1, 6), bics, "o-")
    ax.set(xlabel="number of components K", ylabel="BIC (lower is better)", title="Old Faithful: BIC")
    save(fig, "faithful_bic.png")

    em = em_fits["K=2"]
    print(f"  EM, K=2: weights {em.params['weights'].numpy().round(3)}, converged={em.converged}")
    # fit.plot: items coloured by their most probable component, 1- and 2-sd ellipses
    ax = em.plot(frame)
    ax.set(xlabel="eruption (min)", ylabel="waiting (min)", title="EM fit, K=2")
    save(ax.figure, "faithful_em.png")

    # 2. MCMC for K = 2 and 3; LOO chooses between them.
    t0 = time.perf_counter()
    post = {f"K={k}": mcmc(GaussianMixture(k), frame, em_fits[f"K={k}"], MCMC) for k in (2, 3)}
    print(f"  MCMC ({MCMC}) took {time.perf_counter() - t0:.1f} s")
    compare_if_healthy(post, frame)
    fit = post["K=2"]
    warnings.filterwarnings(
        "ignore", "invalid value encountered", RuntimeWarning
    )  # constant corr_cholesky[0, 0]
    print(pg.summary(fit).loc[lambda t: t.index.str.startswith(("weights", "locs"))].to_string())
    problems = pg.check(fit)
    print("  pg.check:", problems or "no problems found")

    # 3. ArviZ: trace plot and posterior predictive check.
    idata = fit.to_arviz(posterior_predictive=True, num_ppc_samples=50)
    axes = az.plot_trace(idata, var_names=["weights", "locs"], compact=True)
    axes.ravel()[0].figure.tight_layout()  # titles clear of the tick labels above them
    save(axes.ravel()[0].figure, "faithful_trace.png")
    n_ppc = idata.posterior_predictive.sizes["chain"] * idata.posterior_predictive.sizes["draw"]
    ax = az.plot_ppc(idata, num_pp_samples=min(50, n_ppc))
    save(np.ravel(ax)[0].figure, "faithful_ppc.png")

    # 4. Anomalies: the eruptions the EM fit finds least likely.
    scores = em.log_prob(frame).numpy()
    threshold = np.quantile(scores, 0.02)
    odd = scores < threshold
    print(f"  {odd.sum()} eruptions below the 2% log-density quantile ({threshold:.2f}):")
    print(frame[odd].assign(log_prob=scores[odd].round(2)).to_string())
    # 5. New eruptions, each with the component it came from.
    new, latents = em.sample(300, return_latents=True, seed=1)
    fig, ax = plt.subplots(figsize=(5, 4))
    ax.scatter(x[:, 0], x[:, 1], s=8, c="lightgrey", label="observed")
    ax.scatter(x[odd, 0], x[odd, 1], s=30, facecolors="none", edgecolors="k", label="flagged (2%)")
    ax.scatter(new[:, 0], new[:, 1], s=8, c=latents["z"].numpy(), cmap="coolwarm", label="generated")
    ax.set(xlabel="eruption (min)", ylabel="waiting (min)", title="Anomalies and new eruptions")
    ax.legend(loc="upper left", fontsize=8)
    save(fig, "faithful_anomalies_samples.png")


def penguins() -> None:
    print("== Palmer penguins: 342 birds with four measurements")
    frame = pg.datasets.load_penguins(dropna=True)
    cols = ["bill_length_mm", "bill_depth_mm", "flipper_length_mm", "body_mass_g"]
    x = frame[cols]
    em_fits = {
        f"K={k}": pg.fit(GaussianMixture(k), x, method="em", seed=0, n_init=3, progress=False)
        for k in range(1, 6)
    }
    table = pg.compare(em_fits, x)
    print(table.to_string())
    em = em_fits["K=3"]
    print(pd.crosstab(frame["species"], em.predict(x).numpy(), colnames=["EM cluster (K=3)"]).to_string())

    post = {f"K={k}": mcmc(GaussianMixture(k), x, em_fits[f"K={k}"], MCMC_PENGUINS) for k in (2, 3)}
    compare_if_healthy(post, x)
    print("  pg.check (K=3):", pg.check(post["K=3"]) or "no problems found")

    ax = em.plot(x, features=(cols.index("flipper_length_mm"), cols.index("bill_length_mm")))
    ax.set(xlabel="flipper length (mm)", ylabel="bill length (mm)", title="Penguins: EM clusters, K=3")
    save(ax.figure, "penguins_em.png")


def imputation() -> None:
    print("\n== Penguins with missing measurements: fit through the gaps, then fill them ==")
    cols = ["bill_length_mm", "bill_depth_mm", "flipper_length_mm", "body_mass_g"]
    x = pg.datasets.load_penguins(dropna=True)[cols]
    holed = x.mask(np.random.default_rng(0).random(x.shape) < 0.2)  # 20% missing at random
    gap = holed.isna().to_numpy()
    print(
        f"  {gap.sum()} of {gap.size} cells removed; {int(holed.notna().all(axis=1).sum())} complete rows left"
    )
    fit = pg.fit(
        GaussianMixture(3), holed, method="em", missing="marginalize", seed=0, n_init=3, progress=False
    )
    filled = fit.impute(holed)  # each missing cell: its conditional mean given the row's observed cells

    def rmse(guess: pd.DataFrame) -> float:  # in standard deviations, so grams and millimetres mix
        z = ((guess - x) / x.std()).to_numpy()
        return float(np.sqrt(np.mean(z[gap] ** 2)))

    errors = {
        "GaussianMixture(3), missing='marginalize'": rmse(filled),
        "column means": rmse(holed.fillna(holed.mean())),
    }
    try:
        from sklearn.experimental import enable_iterative_imputer  # noqa: F401
        from sklearn.impute import IterativeImputer
    except ImportError:
        print("  (scikit-learn is not installed: IterativeImputer skipped)")
    else:
        done = IterativeImputer(random_state=0, max_iter=25).fit_transform(holed)
        errors["scikit-learn IterativeImputer"] = rmse(pd.DataFrame(done, index=x.index, columns=cols))
    for name, err in errors.items():
        print(f"  imputation RMSE (sd units) {err:.3f}  {name}")

    fig, axes = plt.subplots(1, len(cols), figsize=(4 * len(cols), 3.8), layout="constrained")
    for j, (ax, c) in enumerate(zip(axes, cols, strict=True)):
        rows = gap[:, j]
        ax.scatter(x[c][rows], filled[c][rows], s=10, alpha=0.7, label="mixture")
        ax.axhline(holed[c].mean(), color="grey", ls=":", label="column mean")
        lo, hi = x[c].min(), x[c].max()
        ax.plot([lo, hi], [lo, hi], color="black", lw=0.8)
        ax.set(xlabel=f"true {c}", ylabel="imputed" if j == 0 else None, title=c)
    axes[0].legend(loc="upper left", fontsize=8)
    fig.suptitle("Penguins, 20% of cells missing: true against imputed values")
    save(fig, "penguins_imputed.png")


def main() -> None:
    t0 = time.perf_counter()
    old_faithful()
    penguins()
    imputation()
    print(f"done in {time.perf_counter() - t0:.1f} s (fast mode: {FAST})")


if __name__ == "__main__":
    main()
