"""A gallery of model styles users copy from Pyro's documentation, each with a per-item
log-likelihood written by hand (plain torch, no enumeration), for the contract suite.

Every entry: ``name -> (model, data, log_prob_by_hand(params, data) -> (n,))``.  Data arrive
the way users have them (float64 numpy, lists, pandas, integer counts); models are written in
torch's default float32 unless the style says otherwise.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pyro
import pyro.distributions as dist
import pyro.poutine as poutine
import torch
from pyro.ops.indexing import Vindex

import probgen as pg

RNG = np.random.default_rng(7)


def _normal_lp(x, loc, scale):
    x = torch.as_tensor(x, dtype=torch.float64)
    loc = torch.as_tensor(loc, dtype=torch.float64)
    scale = torch.as_tensor(scale, dtype=torch.float64)
    return -0.5 * ((x - loc) / scale) ** 2 - torch.log(scale) - 0.5 * math.log(2 * math.pi)


def _poisson_lp(x, rate):
    x = torch.as_tensor(x, dtype=torch.float64)
    rate = torch.as_tensor(rate, dtype=torch.float64)
    return x * torch.log(rate) - rate - torch.lgamma(x + 1)


def _f64(p):
    return {k: torch.as_tensor(v, dtype=torch.float64) for k, v in p.items()}


def two_blobs(n_left: int = 24, n_right: int = 16) -> np.ndarray:
    return np.concatenate([RNG.normal(-3, 1, n_left), RNG.normal(3, 1, n_right)])


def mixture_ll_by_hand(params, x, scale=1.0):
    p = _f64(params)
    w, locs = p["weights"], p["locs"]
    lj = torch.log(w) + _normal_lp(torch.as_tensor(x)[:, None], locs, scale)
    return torch.logsumexp(lj, -1)


# 1. README style: Vindex, float32 model, float64 numpy data --------------------------------
def mixture_vindex(data=None):
    weights = pyro.sample("weights", dist.Dirichlet(torch.ones(2)))
    with pyro.plate("components", 2):
        locs = pyro.sample("locs", dist.Normal(0.0, 10.0))
    with pyro.plate("data", 40 if data is None else len(data)):
        z = pyro.sample("z", dist.Categorical(weights))
        pyro.sample("obs", dist.Normal(Vindex(locs)[..., z], 1.0), obs=data)


# 2. Pyro's GMM tutorial style: plain indexing locs[z] ---------------------------------------
def mixture_plain(data=None):
    weights = pyro.sample("weights", dist.Dirichlet(torch.ones(2)))
    with pyro.plate("components", 2):
        locs = pyro.sample("locs", dist.Normal(0.0, 10.0))
    with pyro.plate("data", 40 if data is None else len(data)):
        z = pyro.sample("z", dist.Categorical(weights))
        pyro.sample("obs", dist.Normal(locs[z], 1.0), obs=data)


# 3. Items on dim -2 around features on dim -1, N == D on purpose ----------------------------
GRID_D = 5


def grid_mixture(data=None):
    n = 5 if data is None else data.shape[0]
    weights = pyro.sample("weights", dist.Dirichlet(torch.ones(2)))
    with pyro.plate("components", 2, dim=-1):
        locs = pyro.sample("locs", dist.Normal(0.0, 5.0))
    with pyro.plate("items", n, dim=-2):
        z = pyro.sample("z", dist.Categorical(weights))
        with pyro.plate("features", GRID_D, dim=-1):
            pyro.sample("obs", dist.Normal(Vindex(locs)[..., z], 1.0), obs=data)


def grid_data(n: int = 5) -> np.ndarray:
    centre = np.where(np.arange(n) % 2 == 0, -2.0, 2.0)[:, None]
    return centre + RNG.normal(0, 1, (n, GRID_D))


def grid_ll_by_hand(params, x):
    p = _f64(params)
    x = torch.as_tensor(x, dtype=torch.float64)
    lj = torch.log(p["weights"]) + _normal_lp(x[:, :, None], p["locs"], 1.0).sum(1)  # (n, K)
    return torch.logsumexp(lj, -1)


# 4. to_event sites inside plates, multivariate items ---------------------------------------
def mixture_to_event(data=None):
    d = 2
    weights = pyro.sample("weights", dist.Dirichlet(torch.ones(2)))
    with pyro.plate("components", 2):
        locs = pyro.sample("locs", dist.Normal(torch.zeros(d), 10.0).to_event(1))
    with pyro.plate("data", 30 if data is None else len(data)):
        z = pyro.sample("z", dist.Categorical(weights))
        pyro.sample("obs", dist.Normal(locs[z], 1.0).to_event(1), obs=data)


def to_event_data() -> np.ndarray:
    return np.concatenate([RNG.normal(-2, 1, (18, 2)), RNG.normal(2, 1, (12, 2))])


def to_event_ll_by_hand(params, x):
    p = _f64(params)
    x = torch.as_tensor(x, dtype=torch.float64)
    lj = torch.log(p["weights"]) + _normal_lp(x[:, None, :], p["locs"], 1.0).sum(-1)
    return torch.logsumexp(lj, -1)


# 5. pyro.param for the weights, a prior on the locations -----------------------------------
def mixture_param(data=None):
    weights = pyro.param("weights", torch.ones(2) / 2, constraint=dist.constraints.simplex)
    with pyro.plate("components", 2):
        locs = pyro.sample("locs", dist.Normal(0.0, 10.0))
    with pyro.plate("data", 40 if data is None else len(data)):
        z = pyro.sample("z", dist.Categorical(weights))
        pyro.sample("obs", dist.Normal(Vindex(locs)[..., z], 1.0), obs=data)


# 6. A global change point (a discrete latent outside the data plate) -----------------------
def change_point(data=None):
    T = 30 if data is None else len(data)
    early = pyro.sample("early", dist.Gamma(2.0, 1.0))
    late = pyro.sample("late", dist.Gamma(2.0, 1.0))
    tau = pyro.sample("tau", dist.Categorical(torch.ones(T) / T))
    t = torch.arange(T)
    with pyro.plate("years", T):
        pyro.sample("obs", dist.Poisson(torch.where(t < tau, early, late)), obs=data)


def series() -> np.ndarray:
    return np.concatenate([RNG.poisson(4.0, 12), RNG.poisson(1.0, 18)])  # integer counts


def change_point_ll_by_hand(params, x):
    p = _f64(params)
    x = torch.as_tensor(x, dtype=torch.float64)
    T = len(x)
    rows = []
    for tau in range(T):  # p(x_t | tau) for every tau, by a loop
        rate = torch.where(torch.arange(T) < tau, p["early"], p["late"])
        rows.append(_poisson_lp(x, rate))
    per = torch.stack(rows)  # (tau, t)
    joint = math.log(1.0 / T) + per.sum(1)
    post = joint - torch.logsumexp(joint, 0)
    return torch.logsumexp(post[:, None] + per, 0)


# 7. Regression with alpha + X @ beta (does not broadcast over extra draws) ------------------
X_REG = torch.as_tensor(RNG.normal(0, 1, (25, 3)), dtype=torch.float32)
BETA_TRUE = np.array([1.0, -2.0, 0.5])


def regression(data=None):
    alpha = pyro.sample("alpha", dist.Normal(0.0, 10.0))
    beta = pyro.sample("beta", dist.Normal(torch.zeros(3), 10.0).to_event(1))
    sigma = pyro.sample("sigma", dist.HalfNormal(5.0))
    with pyro.plate("data", X_REG.shape[0]):
        pyro.sample("obs", dist.Normal(alpha + X_REG @ beta, sigma), obs=data)


def regression_data() -> pd.Series:
    y = 0.5 + X_REG.double().numpy() @ BETA_TRUE + RNG.normal(0, 0.7, 25)
    return pd.Series(y, name="y")


def regression_ll_by_hand(params, y):
    p = _f64(params)
    mean = p["alpha"] + X_REG.double() @ p["beta"]
    return _normal_lp(torch.as_tensor(y), mean, p["sigma"])


# 8. Zero-inflated counts (Pyro's ZeroInflatedPoisson), integer numpy data ------------------
def zero_inflated(data=None):
    gate = pyro.sample("gate", dist.Beta(1.0, 1.0))
    rate = pyro.sample("rate", dist.Gamma(2.0, 0.5))
    with pyro.plate("data", 40 if data is None else len(data)):
        pyro.sample("obs", dist.ZeroInflatedPoisson(rate, gate=gate), obs=data)


def counts() -> np.ndarray:
    x = RNG.poisson(3.0, 40)
    x[RNG.random(40) < 0.3] = 0
    return x


def zero_inflated_ll_by_hand(params, x):
    p = _f64(params)
    x = torch.as_tensor(x, dtype=torch.float64)
    pois = _poisson_lp(x, p["rate"])
    zero = torch.log(p["gate"] + (1 - p["gate"]) * torch.exp(-p["rate"]))
    return torch.where(x == 0, zero, torch.log1p(-p["gate"]) + pois)


# 9. A hand-written guide (as in Pyro's SVI tutorial part I) --------------------------------
def normal_mean(data=None):
    mu = pyro.sample("mu", dist.Normal(0.0, 10.0))
    with pyro.plate("data", 20 if data is None else len(data)):
        pyro.sample("obs", dist.Normal(mu, 1.5), obs=data)


def normal_mean_guide(data=None):
    loc = pyro.param("mu_loc", torch.tensor(0.0))
    scale = pyro.param("mu_scale", torch.tensor(1.0), constraint=dist.constraints.positive)
    pyro.sample("mu", dist.Normal(loc, scale))


def normal_mean_ll_by_hand(params, x):
    return _normal_lp(x, _f64(params)["mu"], 1.5)


# 10. Local continuous latents (eight schools, non-centred) ---------------------------------
SIGMA8 = torch.tensor([15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0])


def eight_schools(data=None):
    mu = pyro.sample("mu", dist.Normal(0.0, 5.0))
    tau = pyro.sample("tau", dist.HalfCauchy(5.0))
    with pyro.plate("schools", 8):
        eta = pyro.sample("eta", dist.Normal(0.0, 1.0))
        pyro.sample("obs", dist.Normal(mu + tau * eta, SIGMA8), obs=data)


def eight_schools_ll_by_hand(params, y):
    p = _f64(params)
    return _normal_lp(y, p["mu"] + p["tau"] * p["eta"], SIGMA8)


# 11. Categorical observations given as integer labels in a list ---------------------------
def categorical(data=None):
    probs = pyro.sample("probs", dist.Dirichlet(torch.ones(3)))
    with pyro.plate("data", 12 if data is None else len(data)):
        pyro.sample("obs", dist.Categorical(probs), obs=data)


def categorical_ll_by_hand(params, x):
    return torch.log(_f64(params)["probs"])[torch.as_tensor(x).long()]


# 12. All-discrete: a season for all days (outside the data plate), sprinkler and rain per day
P_S, P_R = torch.tensor([0.5, 0.1]), torch.tensor([0.2, 0.8])
P_W = torch.tensor([[0.01, 0.9], [0.9, 0.99]])


def sprinkler_days(data=None):
    cloudy = pyro.sample("cloudy", dist.Bernoulli(0.5))
    c = cloudy.long()
    with pyro.plate("days", 4 if data is None else len(data)):
        s = pyro.sample("sprinkler", dist.Bernoulli(P_S[c])).long()
        r = pyro.sample("rain", dist.Bernoulli(P_R[c])).long()
        pyro.sample("wet", dist.Bernoulli(P_W[s, r]), obs=data)


def sprinkler_ll_by_hand(params, wet):
    wet = torch.as_tensor(wet, dtype=torch.float64)
    per = torch.zeros(2, len(wet), dtype=torch.float64)  # log p(wet_d | cloudy), by loops
    for c in (0, 1):
        for d in range(len(wet)):
            total = 0.0
            for s in (0, 1):
                for r in (0, 1):
                    pw = float(P_W[s, r])
                    ps = float(P_S[c]) if s else 1 - float(P_S[c])
                    pr = float(P_R[c]) if r else 1 - float(P_R[c])
                    total += ps * pr * (pw if wet[d] else 1 - pw)
            per[c, d] = math.log(total)
    joint = math.log(0.5) + per.sum(1)
    post = joint - torch.logsumexp(joint, 0)
    return torch.logsumexp(post[:, None] + per, 0)


# 13. Covariates as arguments (Pyro's regression tutorial: model(x, y=None)), data as a mapping --
def regression_args(x, y=None):
    alpha = pyro.sample("alpha", dist.Normal(0.0, 10.0))
    beta = pyro.sample("beta", dist.Normal(torch.zeros(x.shape[1]), 10.0).to_event(1))
    sigma = pyro.sample("sigma", dist.HalfNormal(5.0))
    with pyro.plate("data", x.shape[0]):
        return pyro.sample("y", dist.Normal(alpha + x @ beta, sigma), obs=y)


def regression_args_data() -> dict:
    x = RNG.normal(0, 1, (30, 3))
    return {"x": x, "y": 0.5 + x @ BETA_TRUE + RNG.normal(0, 0.7, 30)}


def regression_args_ll_by_hand(params, data):
    p = _f64(params)
    x, y = data.values["x"].double(), data.values["y"].double()
    return _normal_lp(y, p["alpha"] + x @ p["beta"], p["sigma"])


# 14. Logistic regression, data as a tuple (X, y) with integer labels -------------------------
def logistic_args(x, y=None):
    w = pyro.sample("w", dist.Normal(torch.zeros(x.shape[1]), 5.0).to_event(1))
    with pyro.plate("data", x.shape[0]):
        return pyro.sample("y", dist.Bernoulli(logits=x @ w), obs=y)


def logistic_args_data() -> tuple:
    x = RNG.normal(0, 1, (40, 2))
    return (x, (RNG.random(40) < 1 / (1 + np.exp(-(x @ np.array([1.5, -1.0]))))).astype(np.int64))


def logistic_args_ll_by_hand(params, data):
    w = _f64(params)["w"]
    logits = data.values["x"].double() @ w
    y = data.values["y"].double()
    return y * torch.nn.functional.logsigmoid(logits) + (1 - y) * torch.nn.functional.logsigmoid(-logits)


# 15. A hierarchical model with group indices and the number of groups as arguments ----------
def hierarchical_groups(group, n_groups, y=None):
    scale = pyro.sample("scale", dist.HalfNormal(5.0))
    with pyro.plate("groups", n_groups):
        effect = pyro.sample("effect", dist.Normal(0.0, scale))
    with pyro.plate("data", len(group)):
        return pyro.sample("y", dist.Normal(effect[group], 1.0), obs=y)


def hierarchical_groups_data() -> dict:
    group = RNG.integers(0, 3, 30)
    return {"group": group, "n_groups": 3, "y": np.array([-1.0, 0.0, 1.5])[group] + RNG.normal(0, 1, 30)}


def hierarchical_groups_ll_by_hand(params, data):
    effect = _f64(params)["effect"]
    return _normal_lp(
        data.values["y"].double(), effect[data.values["group"]], torch.tensor(1.0, dtype=torch.float64)
    )


# 16. One sequence, states enumerated step by step in a pyro.markov loop (Pyro's examples/hmm.py
# style: no plate, probs_x[x]) ---------------------------------------------------------------
def markov_hmm(data=None):
    n = 30 if data is None else len(data)
    probs_x = pyro.sample("probs_x", dist.Dirichlet(0.8 * torch.eye(2) + 0.1).to_event(1))
    locs = pyro.sample("locs", dist.Normal(torch.tensor([-1.0, 1.0]), 3.0).to_event(1))
    x = 0
    for t in pyro.markov(range(n)):
        x = pyro.sample(f"x_{t}", dist.Categorical(probs_x[x]), infer={"enumerate": "parallel"})
        pyro.sample(f"y_{t}", dist.Normal(locs[x], 1.0), obs=None if data is None else data[t])


def markov_series() -> torch.Tensor:
    states = [0]
    for _ in range(29):
        states.append(states[-1] if RNG.random() < 0.85 else 1 - states[-1])
    return torch.as_tensor(
        np.where(np.array(states) == 0, -2.0, 2.0) + RNG.normal(0, 1, 30), dtype=torch.float32
    )


def markov_hmm_ll_by_hand(params, y):
    """The forward algorithm: x_0 ~ probs_x[0], x_t ~ probs_x[x_{t-1}], y_t ~ N(locs[x_t], 1)."""
    p = _f64(params)
    trans, locs = p["probs_x"], p["locs"]
    y = torch.as_tensor(y, dtype=torch.float64)
    alpha = torch.log(trans[0]) + _normal_lp(y[0], locs, torch.tensor(1.0, dtype=torch.float64))
    for t in range(1, len(y)):
        alpha = torch.logsumexp(alpha[:, None] + torch.log(trans), 0) + _normal_lp(
            y[t], locs, torch.tensor(1.0, dtype=torch.float64)
        )
    return torch.logsumexp(alpha, 0).reshape(1)  # one item: the whole sequence


# 17-19. Polyphonic-style binary sequences of unequal lengths, models as in Pyro's examples/hmm.py:
# states enumerated step by step in a pyro.markov loop, the data as a mapping of the model's
# arguments {"sequences": (N, T, tones) padded with zeros, "lengths": (N,)} ------------------------
HIDDEN, TONES = 2, 4


def _chain_priors(hidden_dim, tones, y_shape):
    probs_x = pyro.sample("probs_x", dist.Dirichlet(0.9 * torch.eye(hidden_dim) + 0.1).to_event(1))
    probs_y = pyro.sample("probs_y", dist.Beta(1.0, 1.0).expand(y_shape).to_event(len(y_shape)))
    return probs_x, probs_y


def hmm_sequential(sequences=None, lengths=None, hidden_dim=HIDDEN, n_tones=TONES):
    """Model 0: one sequence after another in a sequential plate, sites x_{i}_{t} and y_{i}_{t}."""
    probs_x, probs_y = _chain_priors(hidden_dim, n_tones, [hidden_dim, n_tones])
    tones_plate = pyro.plate("tones", n_tones, dim=-1)
    for i in pyro.plate("sequences", len(lengths)):
        x = 0
        for t in pyro.markov(range(int(lengths[i]))):
            x = pyro.sample(f"x_{i}_{t}", dist.Categorical(probs_x[x]), infer={"enumerate": "parallel"})
            with tones_plate:
                y = None if sequences is None else sequences[i, t]
                pyro.sample(f"y_{i}_{t}", dist.Bernoulli(probs_y[x.squeeze(-1)]), obs=y)


def hmm_plated(sequences=None, lengths=None, hidden_dim=HIDDEN, n_tones=TONES):
    """Model 1: every sequence at once in a plate at dim -2, steps past a sequence's end masked."""
    probs_x, probs_y = _chain_priors(hidden_dim, n_tones, [hidden_dim, n_tones])
    tones_plate = pyro.plate("tones", n_tones, dim=-1)
    with pyro.plate("sequences", len(lengths), dim=-2):
        x = 0
        for t in pyro.markov(range(int(lengths.max()))):
            with poutine.mask(mask=(t < lengths).unsqueeze(-1)):
                x = pyro.sample(f"x_{t}", dist.Categorical(probs_x[x]), infer={"enumerate": "parallel"})
                with tones_plate:
                    y = None if sequences is None else sequences[:, t]
                    pyro.sample(f"y_{t}", dist.Bernoulli(probs_y[x.squeeze(-1)]), obs=y)


def hmm_autoregressive(sequences=None, lengths=None, hidden_dim=HIDDEN, n_tones=TONES):
    """Model 2: model 1 with each tone's emission depending on the previous step's value too."""
    probs_x, probs_y = _chain_priors(hidden_dim, n_tones, [hidden_dim, 2, n_tones])
    tones_plate = pyro.plate("tones", n_tones, dim=-1)
    with pyro.plate("sequences", len(lengths), dim=-2):
        x, y = 0, 0
        for t in pyro.markov(range(int(lengths.max()))):
            with poutine.mask(mask=(t < lengths).unsqueeze(-1)):
                x = pyro.sample(f"x_{t}", dist.Categorical(probs_x[x]), infer={"enumerate": "parallel"})
                with tones_plate as tones:
                    obs = None if sequences is None else sequences[:, t]
                    y = pyro.sample(f"y_{t}", dist.Bernoulli(probs_y[x, y, tones]), obs=obs).long()


def polyphonic_data(n: int = 6, low: int = 10, high: int = 16) -> dict:
    """Binary sequences from a two-state chain: state 0 sounds tones 0-1, state 1 tones 2-3."""
    lengths = RNG.integers(low, high + 1, n)
    on = np.array([[0.8, 0.7, 0.1, 0.2], [0.1, 0.2, 0.9, 0.6]])
    sequences = np.zeros((n, int(lengths.max()), TONES))
    for i, length in enumerate(lengths):
        state = int(RNG.integers(2))
        for t in range(length):
            state = state if RNG.random() < 0.8 else 1 - state
            sequences[i, t] = RNG.random(TONES) < on[state]
    return {"sequences": sequences, "lengths": lengths}


def _bernoulli_lp(y, p):
    return y * torch.log(p) + (1 - y) * torch.log1p(-p)


def chain_ll_by_hand(params, data):
    """The forward algorithm per sequence over its own length: x_0 ~ probs_x[0],
    x_t ~ probs_x[x_{t-1}], each tone y_t ~ Bernoulli(probs_y[x_t]) (or probs_y[x_t, y_{t-1}])."""
    p = _f64(params)
    trans, emit = p["probs_x"], p["probs_y"]
    sequences = data.values["sequences"].to(torch.float64)
    out = []
    for seq, length in zip(sequences, data.values["lengths"].tolist(), strict=True):
        prev = torch.zeros(TONES, dtype=torch.float64)
        log_alpha = torch.log(trans[0])
        for t in range(length):
            probs = emit if emit.dim() == 2 else emit[:, prev.long(), torch.arange(TONES)]
            emission = _bernoulli_lp(seq[t], probs).sum(-1)  # (hidden,)
            if t > 0:
                log_alpha = torch.logsumexp(log_alpha[:, None] + torch.log(trans), 0)
            log_alpha = log_alpha + emission
            prev = seq[t]
        out.append(torch.logsumexp(log_alpha, 0))
    return torch.stack(out)


# 20. Probabilistic PCA with an amortised guide: per-item continuous latents z_i, a linear encoder
# written with pyro.param (the user VAE pattern: decoder and encoder are learnt, z is integrated out)
PPCA_D, PPCA_K = 5, 2


def ppca(data=None):
    W = pyro.param("W", lambda: 0.1 * torch.ones(PPCA_D, PPCA_K))
    mu = pyro.param("mu", lambda: torch.zeros(PPCA_D))
    sigma = pyro.param("sigma", lambda: torch.tensor(1.0), constraint=dist.constraints.positive)
    with pyro.plate("data", 50 if data is None else len(data)):
        z = pyro.sample("z", dist.Normal(0.0, 1.0).expand([PPCA_K]).to_event(1))
        return pyro.sample("obs", dist.Normal(z @ W.T + mu, sigma).to_event(1), obs=data)


def ppca_guide(data=None):
    w = pyro.param("enc_w", lambda: torch.zeros(PPCA_D, 2 * PPCA_K))
    b = pyro.param("enc_b", lambda: torch.zeros(2 * PPCA_K))
    with pyro.plate("data", len(data)):
        h = data @ w + b
        scale = torch.nn.functional.softplus(h[..., PPCA_K:]) + 1e-3
        pyro.sample("z", dist.Normal(h[..., :PPCA_K], scale).to_event(1))


def ppca_data() -> np.ndarray:
    w = RNG.normal(size=(PPCA_D, PPCA_K))
    return RNG.normal(size=(150, PPCA_K)) @ w.T + 0.3 * RNG.normal(size=(150, PPCA_D)) + 1.0


def ppca_ll_by_hand(params, x):
    """Conditional on the fitted z_i: log N(x_i | W z_i + mu, sigma^2 I)."""
    p = _f64(params)
    loc = p["z"] @ p["W"].T + p["mu"]
    return _normal_lp(torch.as_tensor(x), loc, p["sigma"]).sum(-1)


def ppca_marginal_by_hand(params, x):
    """z integrated out: x_i ~ N(mu, W W' + sigma^2 I)."""
    p = _f64(params)
    cov = p["W"] @ p["W"].T + p["sigma"] ** 2 * torch.eye(PPCA_D, dtype=torch.float64)
    return torch.distributions.MultivariateNormal(p["mu"], cov).log_prob(
        torch.as_tensor(x, dtype=torch.float64)
    )


def eight_schools_marginal_by_hand(params, y):
    """eta integrated out: y_j ~ N(mu, sqrt(tau^2 + sigma_j^2))."""
    p = _f64(params)
    scale = torch.sqrt(p["tau"] ** 2 + torch.as_tensor(SIGMA8, dtype=torch.float64) ** 2)
    return _normal_lp(y, p["mu"], scale)


#: Exact marginal log-likelihoods of entries with per-item continuous latents (z integrated out).
MARGINALS = {"amortised-ppca": ppca_marginal_by_hand, "local-latents": eight_schools_marginal_by_hand}


GALLERY = {
    "all-discrete": (sprinkler_days, lambda: np.array([1, 0, 1, 1]), sprinkler_ll_by_hand),
    "vindex-mixture": (mixture_vindex, two_blobs, mixture_ll_by_hand),
    "plain-indexing": (mixture_plain, lambda: list(two_blobs()), mixture_ll_by_hand),
    "items-on-dim-2": (grid_mixture, grid_data, grid_ll_by_hand),
    "to-event-in-plate": (mixture_to_event, to_event_data, to_event_ll_by_hand),
    "pyro-param": (mixture_param, two_blobs, mixture_ll_by_hand),
    "global-change-point": (change_point, series, change_point_ll_by_hand),
    "regression-X-beta": (regression, regression_data, regression_ll_by_hand),
    "zero-inflated": (zero_inflated, counts, zero_inflated_ll_by_hand),
    "hand-written-guide": (
        normal_mean,
        lambda: torch.as_tensor(RNG.normal(1.0, 1.5, 20)),
        normal_mean_ll_by_hand,
    ),
    "local-latents": (
        eight_schools,
        lambda: [28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0],
        eight_schools_ll_by_hand,
    ),
    "categorical-labels": (categorical, lambda: [0, 2, 1, 0, 0, 2, 1, 0, 0, 1, 2, 0], categorical_ll_by_hand),
    "covariates-mapping": (regression_args, regression_args_data, regression_args_ll_by_hand),
    "logistic-tuple": (logistic_args, logistic_args_data, logistic_args_ll_by_hand),
    "group-indices": (hierarchical_groups, hierarchical_groups_data, hierarchical_groups_ll_by_hand),
    "markov-one-sequence": (markov_hmm, markov_series, markov_hmm_ll_by_hand),
    "markov-sequential-plate": (hmm_sequential, polyphonic_data, chain_ll_by_hand),
    "markov-plate-dim-2": (hmm_plated, polyphonic_data, chain_ll_by_hand),
    "markov-autoregressive": (hmm_autoregressive, polyphonic_data, chain_ll_by_hand),
    "amortised-ppca": (ppca, ppca_data, ppca_ll_by_hand),
}


def make(name: str):
    """A fresh (model, data, by_hand) triple for gallery entry ``name``."""
    fn, data, by_hand = GALLERY[name]
    guide = {"hand-written-guide": normal_mean_guide, "amortised-ppca": ppca_guide}.get(name)
    return pg.model(fn, guide), data(), by_hand
