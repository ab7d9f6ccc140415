"""Write your own model: eight schools, a mixture, a change point, a logistic regression with
covariates and a regression with missing responses, fitted four ways and compared in ArviZ.

Run top to bottom: ``python tutorials/00_write_your_own_model.py``.  Figures are saved as PNG in
``$PROBGEN_TUTORIAL_OUT`` (default ``tutorials/figures``).  ``PROBGEN_FAST=1`` uses small
settings (CI runs it that way).
"""

# %% Setup
import os
from pathlib import Path

import arviz as az
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pyro  # noqa: E402
import pyro.distributions as dist  # noqa: E402
import torch  # noqa: E402
from pyro.ops.indexing import Vindex  # noqa: E402

import probgen as pg  # noqa: E402

FAST = os.environ.get("PROBGEN_FAST") == "1"
OUT = Path(os.environ.get("PROBGEN_TUTORIAL_OUT", Path(__file__).resolve().parent / "figures"))
OUT.mkdir(parents=True, exist_ok=True)
MCMC = (
    {"num_samples": 60, "warmup_steps": 60, "max_tree_depth": 5}
    if FAST
    else {"num_samples": 1000, "warmup_steps": 1000}
)
SVI_STEPS = 400 if FAST else 4000

# %% 1. Eight schools (Rubin 1981): a hierarchical model, centred and non-centred
y = torch.tensor([28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0])
sigma = torch.tensor([15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0])


@pg.model
def centred(data=None):
    mu = pyro.sample("mu", dist.Normal(0.0, 5.0))
    tau = pyro.sample("tau", dist.HalfCauchy(5.0))
    with pyro.plate("schools", 8):
        theta = pyro.sample("theta", dist.Normal(mu, tau))
        pyro.sample("obs", dist.Normal(theta, sigma), obs=data)


@pg.model
def non_centred(data=None):
    mu = pyro.sample("mu", dist.Normal(0.0, 5.0))
    tau = pyro.sample("tau", dist.HalfCauchy(5.0))
    with pyro.plate("schools", 8):
        eta = pyro.sample("eta", dist.Normal(0.0, 1.0))
        pyro.sample("obs", dist.Normal(mu + tau * eta, sigma), obs=data)


fit_c = pg.fit(centred, y, method="mcmc", seed=0, progress=False, **MCMC)
fit_nc = pg.fit(non_centred, y, method="mcmc", seed=0, progress=False, **MCMC)
fit_vi = pg.fit(non_centred, y, method="svi", seed=0, progress=False, num_steps=SVI_STEPS, lr=0.02)
print(pg.summary(fit_nc).loc[["mu", "tau"]])
print("centred:", pg.check(fit_c) or "healthy")
print("non-centred:", pg.check(fit_nc) or "healthy")
print(
    f"SVI posterior mean of mu {fit_vi.posterior['mu'].mean():.2f} (NUTS: {fit_nc.posterior['mu'].mean():.2f})"
)
# The same likelihood, two parametrisations: LOO should call them equivalent.
print(pg.compare({"centred": fit_c, "non-centred": fit_nc}))

az.plot_trace(fit_nc.to_arviz(), var_names=["mu", "tau"])
plt.tight_layout()
plt.savefig(OUT / "00_eight_schools_trace.png", dpi=80)
plt.close("all")

# %% 2. A mixture of your own on Old Faithful waiting times
# The model below computes in torch's default float32; the data arrive as a float64 numpy array
# and are converted to the model's own type (found by tracing it), so no dtype juggling is needed.
waiting = pg.datasets.load_old_faithful()["waiting"].to_numpy()


def make_mixture(k):
    @pg.model
    def mixture(data=None):
        weights = pyro.sample("weights", dist.Dirichlet(torch.ones(k)))
        with pyro.plate("components", k):
            locs = pyro.sample("locs", dist.Normal(70.0, 20.0))
            scales = pyro.sample("scales", dist.LogNormal(2.0, 1.0))
        with pyro.plate("data", 100 if data is None else len(data)):
            z = pyro.sample("z", dist.Categorical(weights))
            pyro.sample("obs", dist.Normal(Vindex(locs)[..., z], Vindex(scales)[..., z]), obs=data)

    mixture.__name__ = f"mixture_k{k}"
    return mixture


mix2 = make_mixture(2)
# EM: the generic E-step by enumeration and a gradient M-step (no closed form is known here)
em = pg.fit(mix2, waiting, method="em", seed=0, progress=False, n_init=1 if FAST else 3)
vi = pg.fit(mix2, waiting, method="svi", seed=0, progress=False, num_steps=SVI_STEPS, lr=0.05)
# NUTS started from the EM estimates: from a random start the sampler spends its warmup on
# deep trees crossing the bimodal posterior, ten times slower for the same answer.
nuts = pg.fit(mix2, waiting, method="mcmc", seed=0, progress=False, init=em.params, **MCMC)
print("EM estimates:", {k: v.numpy().round(2) for k, v in em.params.items()})
print("NUTS posterior means:", {k: v.numpy().round(2) for k, v in nuts.params.items()})
print("problems:", pg.check(em), pg.check(nuts))

# Exact enumeration: with the parameters fixed at the EM estimates every latent is discrete, so
# the cluster posteriors and the evidence are computed exactly.
w, m, s = (em.params[n] for n in ("weights", "locs", "scales"))


@pg.model
def clusters_given_estimates(data=None):
    with pyro.plate("data", len(data)):
        z = pyro.sample("z", dist.Categorical(w))
        pyro.sample("obs", dist.Normal(m[z], s[z]), obs=data)


exact = pg.fit(clusters_given_estimates, waiting, method="enum")
p_exact = exact.marginals()["z"]
print(f"log evidence at the EM estimates: {exact.log_evidence:.3f} (EM: {em.history[-1]:.3f})")
print(
    "largest gap between enumeration and EM responsibilities:",
    float((p_exact - em.predict_proba()).abs().max()),
)

# Model comparison: BIC over the number of components (point fits), LOO over posterior fits.
em3 = pg.fit(make_mixture(3), waiting, method="em", seed=0, progress=False, n_init=1 if FAST else 3)
print(pg.compare({"k=2": em, "k=3": em3}, waiting))
nuts3 = pg.fit(make_mixture(3), waiting, method="mcmc", seed=0, progress=False, init=em3.params, **MCMC)
print(pg.compare({"k=2": nuts, "k=3": nuts3}))

# Anomaly scores and generation
scores = em.log_prob(waiting)
print("five least typical waiting times:", waiting[scores.argsort()[:5].numpy()].tolist())
new = em.sample(500, seed=1)

idata = nuts.to_arviz(posterior_predictive=True, num_ppc_samples=100)
fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
grid = torch.linspace(35, 105, 300)
density = (w * dist.Normal(m, s).log_prob(grid[:, None]).exp()).sum(-1)
axes[0].hist(waiting, bins=30, density=True, alpha=0.5, label="observed")
axes[0].hist(new.numpy(), bins=30, density=True, histtype="step", label="generated (EM fit)")
axes[0].plot(grid, density, "k", label="EM density")
axes[0].set_xlabel("waiting time (min)")
axes[0].legend()
az.plot_ppc(idata, ax=axes[1], num_pp_samples=50)
plt.tight_layout()
plt.savefig(OUT / "00_mixture_fit_and_ppc.png", dpi=80)
plt.close("all")

# %% 3. A discrete latent outside the data plate: a change point in a count series
# (simulated: rate 4 for 12 years, then 1).  Exact enumeration sums the change point out; per-year
# scores weight it by its posterior, and BIC uses the true total log-likelihood.
torch.manual_seed(0)  # the simulated series is the same on every run
counts = torch.cat([torch.poisson(torch.full((12,), 4.0)), torch.poisson(torch.full((18,), 1.0))])


@pg.model
def change_point(data=None):
    T = 30 if data is None else len(data)
    early = pyro.sample("early", dist.Gamma(2.0, 1.0))
    late = pyro.sample("late", dist.Gamma(2.0, 1.0))
    tau = pyro.sample("tau", dist.Categorical(torch.ones(T) / T))
    with pyro.plate("years", T):
        pyro.sample("obs", dist.Poisson(torch.where(torch.arange(T) < tau, early, late)), obs=data)


cp = pg.fit(change_point, counts, method="mcmc", seed=0, progress=False, **MCMC)
tau_post = cp.marginals()["tau"].reshape(-1)
print(f"most probable change year: {int(tau_post.argmax())} (posterior {float(tau_post.max()):.2f})")
print("rates before/after:", round(float(cp.params["early"]), 2), round(float(cp.params["late"]), 2))
cp_em = pg.fit(change_point, counts, method="em", seed=0, progress=False)
print(f"BIC {cp_em.bic():.1f}; total log-likelihood {cp_em.log_likelihood():.2f}")

# %% 4. Covariates: a logistic regression of the penguins' sex on their measurements
# Written as Pyro's regression tutorial writes models, model(x, y=None): the data are a mapping
# bound to the arguments by name (a tuple (X, y) binds positionally), and every tool takes the
# same form, so the fit predicts at new inputs and scores new pairs.
penguins = pg.datasets.load_penguins().dropna(subset=["sex", "bill_depth_mm", "body_mass_g"])
features = ["bill_length_mm", "bill_depth_mm", "flipper_length_mm", "body_mass_g"]
x_all = penguins[features].to_numpy()
x_all = (x_all - x_all.mean(0)) / x_all.std(0)
y_all = (penguins["sex"] == "male").to_numpy().astype("int64")  # integer labels
rng = torch.Generator().manual_seed(0)
order = torch.randperm(len(y_all), generator=rng).numpy()
train, test = order[: len(order) * 2 // 3], order[len(order) * 2 // 3 :]


@pg.model
def logistic(x, y=None):
    w = pyro.sample("w", dist.Normal(torch.zeros(x.shape[1]), 2.0).to_event(1))
    b = pyro.sample("b", dist.Normal(0.0, 2.0))
    with pyro.plate("penguins", x.shape[0]):
        return pyro.sample("y", dist.Bernoulli(logits=x @ w + b), obs=y)


sexes = pg.fit(
    logistic, {"x": x_all[train], "y": y_all[train]}, method="mcmc", seed=0, progress=False, **MCMC
)
print(pg.summary(sexes)[["mean", "sd", "r_hat"]])
print("LOO:", az.loo(sexes.to_arviz()).elpd_loo)
# predicted probabilities of new rows: the mean of the posterior predictive draws of y
p_male = sexes.posterior_predictive(data={"x": x_all[test]})["y"].float().mean((0, 1)).numpy()
held_out = sexes.log_prob({"x": x_all[test], "y": y_all[test]})
print(
    f"held-out accuracy {((p_male > 0.5) == y_all[test]).mean():.3f}, log score {float(held_out.mean()):.3f}"
)
# calibration: among the held-out penguins given probability p, a fraction p should be male
bins = torch.linspace(0, 1, 6).numpy()
which = (p_male[:, None] >= bins[None, :-1]).sum(1) - 1
mids, freqs = [], []
for k in range(len(bins) - 1):
    if (which == k).any():
        mids.append(p_male[which == k].mean())
        freqs.append(y_all[test][which == k].mean())
fig, ax = plt.subplots(figsize=(4.5, 4.5))
ax.plot([0, 1], [0, 1], color="0.6", lw=1, label="perfect calibration")
ax.plot(mids, freqs, "o-", label="held-out penguins")
ax.set(xlabel="predicted probability of male", ylabel="observed fraction male", title="Calibration")
ax.legend(loc="upper left")
fig.savefig(OUT / "00_logistic_calibration.png", dpi=100, bbox_inches="tight")
plt.close(fig)

# %% 5. Missing values: NaN in the observed data is a masked observation
# A fifth of the penguins' body masses are hidden; `missing="marginalize"` drops each missing
# cell from the likelihood (exact, since the masses are independent given the coefficients), and
# `fit.impute` fills them with their posterior predictive means given the flipper lengths.
import numpy as np  # noqa: E402

full = pg.datasets.load_penguins(dropna=True)
flipper = ((full["flipper_length_mm"] - full["flipper_length_mm"].mean()) / 10).to_numpy()
mass = (full["body_mass_g"] / 1000).to_numpy()
hidden = np.random.default_rng(0).random(len(mass)) < 0.2
gappy = {"flipper": flipper, "mass": np.where(hidden, np.nan, mass)}


@pg.model
def masses(flipper, mass=None):
    a = pyro.sample("a", dist.Normal(4.0, 2.0))
    b = pyro.sample("b", dist.Normal(0.0, 2.0))
    s = pyro.sample("s", dist.HalfNormal(1.0))
    with pyro.plate("penguins", len(flipper)):
        pyro.sample("mass", dist.Normal(a + b * flipper, s), obs=mass)


masked = pg.fit(masses, gappy, method="mcmc", missing="marginalize", seed=0, progress=False, **MCMC)
print(pg.summary(masked)[["mean", "sd", "r_hat"]])
filled = masked.impute(gappy)["mass"]
rmse = float(np.sqrt(np.mean((filled[hidden] - mass[hidden]) ** 2)))
print(f"imputed body mass: RMSE {rmse:.3f} kg against the hidden values (sd {mass.std():.3f} kg)")
fig, ax = plt.subplots(figsize=(5, 4))
ax.scatter(flipper[~hidden] * 10, mass[~hidden], s=8, color="0.6", label="observed")
ax.scatter(flipper[hidden] * 10, mass[hidden], s=12, color="C1", label="hidden (true)")
ax.scatter(flipper[hidden] * 10, filled[hidden], s=12, marker="x", color="C0", label="imputed")
ax.set(xlabel="flipper length (mm from the mean)", ylabel="body mass (kg)", title="Imputed body masses")
ax.legend(loc="upper left")
fig.savefig(OUT / "00_imputed_masses.png", dpi=100, bbox_inches="tight")
plt.close(fig)

# %% 6. Check a model of your own against the shared contract
from probgen.testing import check_model  # noqa: E402

report = check_model(mix2, waiting, methods=["em"])
print("contract:", report["em"])
print(f"figures saved in {OUT}")
