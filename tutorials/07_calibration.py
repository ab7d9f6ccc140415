"""Is my posterior right? Simulation-based calibration of a model you wrote.

Run top to bottom: ``python tutorials/07_calibration.py``.  Figures are saved as PNG in
``$PROBGEN_TUTORIAL_OUT`` (default ``tutorials/figures``).  ``PROBGEN_FAST=1`` uses small
settings (CI runs it that way).

Simulation-based calibration (Talts et al. 2018) draws parameters from the prior, simulates a
data set from the model, fits it, and records the rank of the true value among the posterior
draws.  If the backend's posterior is right, the ranks are uniform; the shape of the histogram
says what is wrong when they are not.
"""

# %% Setup
import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pyro  # noqa: E402
import pyro.distributions as dist  # noqa: E402
import torch  # noqa: E402

import probgen as pg  # noqa: E402

FAST = os.environ.get("PROBGEN_FAST") == "1"
OUT = Path(os.environ.get("PROBGEN_TUTORIAL_OUT", Path(__file__).resolve().parent / "figures"))
OUT.mkdir(parents=True, exist_ok=True)
N_SIM = 20 if FAST else 200
SVI = {"num_steps": 150 if FAST else 600, "lr": 0.05, "num_samples": 100 if FAST else 400}


# %% 1. A model and three ways to approximate its posterior
# Ten noisy measurements of one quantity mu with a Normal prior: the posterior is Normal and
# known in closed form, so we know which answers are right before we look.
@pg.model
def measurements(data=None):
    mu = pyro.sample("mu", dist.Normal(0.0, 2.0))
    with pyro.plate("data", 10 if data is None else len(data)):
        pyro.sample("obs", dist.Normal(mu, 1.0), obs=data)


def gaussian_guide(data=None):  # a family that contains the exact posterior
    loc = pyro.param("loc", torch.tensor(0.0))
    scale = pyro.param("scale", torch.tensor(1.0), constraint=dist.constraints.positive)
    pyro.sample("mu", dist.Normal(loc, scale))


def too_wide_guide(data=None):  # right centre, a fixed spread three times the true one
    loc = pyro.param("loc", torch.tensor(0.0))
    pyro.sample("mu", dist.Normal(loc, 0.94))


exact = pg.calibrate(pg.model(measurements.fn, gaussian_guide), "svi", num_simulations=N_SIM, **SVI)
point = pg.calibrate(measurements, "svi", num_simulations=N_SIM, guide="delta", **SVI)
wide = pg.calibrate(pg.model(measurements.fn, too_wide_guide), "svi", num_simulations=N_SIM, **SVI)
for name, cal in [("Gaussian guide", exact), ("AutoDelta (a point)", point), ("too-wide guide", wide)]:
    print(f"--- {name}")
    print(cal.summary().to_string())

# %% 2. Reading the rank histograms
# Uniform: calibrated.  U-shaped: the truth falls outside the posterior too often, which is too
# narrow (a point estimate is the extreme case).  A hump in the middle: the posterior is too
# wide.  A slope: biased.
for name, cal in [("exact", exact), ("point", point), ("wide", wide)]:
    fig = cal.plot()
    fig.suptitle(name, y=1.02)
    fig.savefig(OUT / f"07_ranks_{name}.png", dpi=80, bbox_inches="tight")
    plt.close(fig)

# %% 3. MCMC on a hierarchical model
# NUTS is exact in the limit; a short run on eight schools (non-centred) should pass too.
sigma = torch.tensor([15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0])


@pg.model
def eight_schools(data=None):
    mu = pyro.sample("mu", dist.Normal(0.0, 5.0))
    tau = pyro.sample("tau", dist.HalfCauchy(5.0))
    with pyro.plate("schools", 8):
        eta = pyro.sample("eta", dist.Normal(0.0, 1.0))
        pyro.sample("obs", dist.Normal(mu + tau * eta, sigma), obs=data)


mcmc_opts = (
    {"num_samples": 40, "warmup_steps": 30, "num_chains": 1}
    if FAST
    else {"num_samples": 200, "warmup_steps": 300}
)
schools = pg.calibrate(
    eight_schools, "mcmc", num_simulations=N_SIM, num_draws=39 if FAST else 99, **mcmc_opts
)
print("--- eight schools, NUTS")
print(schools.summary().to_string())
fig = schools.plot()
fig.savefig(OUT / "07_ranks_eight_schools.png", dpi=80, bbox_inches="tight")
plt.close(fig)
print(f"figures saved in {OUT}")
