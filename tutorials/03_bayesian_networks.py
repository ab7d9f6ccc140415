"""Bayesian networks: the sprinkler by hand, ALARM from BIF, learning with missing data, structure, naive Bayes.

Run top to bottom: ``python tutorials/03_bayesian_networks.py``.  Figures are saved as PNG in
``$PROBGEN_TUTORIAL_OUT`` (default ``tutorials/figures``).  ``PROBGEN_FAST=1`` uses small
settings (CI runs it that way).  ALARM is read from the BIF file shipped inside the pgmpy wheel
(a test extra) when pgmpy is installed; otherwise that part runs on the sprinkler network.
"""

# %% Setup
import importlib.util
import os
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import networkx as nx  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

import probgen as pg  # noqa: E402
from probgen.models import BayesianNetwork, NaiveBayes, learn_structure, read_bif, structure_score  # noqa: E402  # noqa: E402

FAST = os.environ.get("PROBGEN_FAST") == "1"
OUT = Path(os.environ.get("PROBGEN_TUTORIAL_OUT", Path(__file__).resolve().parent / "figures"))
OUT.mkdir(parents=True, exist_ok=True)
N_ROWS = 1500 if FAST else 10_000
t0 = time.perf_counter()


def save(fig, name):
    fig.savefig(OUT / name, dpi=100, bbox_inches="tight")
    plt.close(fig)


# %% 1. The sprinkler network by hand: states named, CPDs given, exact queries without fitting
dag = nx.DiGraph([("cloudy", "sprinkler"), ("cloudy", "rain"), ("sprinkler", "wet"), ("rain", "wet")])
states = {n: ["no", "yes"] for n in dag.nodes}
sprinkler = BayesianNetwork(
    dag,
    states=states,
    cpds={  # shape (*parent states, own states); parents in the graph's order
        "cloudy": [0.5, 0.5],
        "sprinkler": [[0.5, 0.5], [0.9, 0.1]],
        "rain": [[0.8, 0.2], [0.2, 0.8]],
        "wet": [[[1.0, 0.0], [0.1, 0.9]], [[0.1, 0.9], [0.01, 0.99]]],
    },
)
truth = sprinkler.as_fit()  # a Fit holding the given CPDs: every query tool works on it
print(
    "P(rain | wet grass)               =",
    truth.query("rain", evidence={"wet": "yes"})["rain"].round(4).to_dict(),
)
print(
    "P(rain | wet grass, sprinkler on) =",
    truth.query("rain", evidence={"wet": "yes", "sprinkler": "yes"})["rain"].round(4).to_dict(),
)
print(
    "all marginals given wet grass:",
    {k: round(float(v["yes"]), 4) for k, v in truth.query(evidence={"wet": "yes"}).items()},
)
print("most probable explanation of wet grass:", truth.map_query(evidence={"wet": "yes"}))
fig, ax = plt.subplots(figsize=(5, 4))
sprinkler.plot_fit(None, truth.params, ax=ax)  # fit.plot(data) draws it too
ax.set_title("the sprinkler network")
save(fig, "03_sprinkler_dag.png")

# %% 2. ALARM from BIF: 37 nodes, exact queries compiled once per evidence pattern
spec = importlib.util.find_spec("pgmpy")
bif = (
    None
    if spec is None or spec.origin is None
    else Path(spec.origin).parent / "utils/example_models/alarm.bif.gz"
)
net = read_bif(bif) if bif is not None and bif.exists() else sprinkler
fit = net.as_fit()
print(f"\n{len(net.nodes)} nodes, {net.dag.number_of_edges()} edges, treewidth <= {net.treewidth()}")
if net is not sprinkler:
    evidence = {"HRBP": "HIGH", "CO": "LOW"}
    target = "HYPOVOLEMIA"
else:
    evidence, target = {"wet": "yes"}, "rain"
fit.query(target, evidence=evidence)  # the first call compiles the contraction path
start = time.perf_counter()
single = fit.query(target, evidence=evidence)[target]
print(
    f"P({target} | {evidence}) = {single.round(4).to_dict()} in {1e3 * (time.perf_counter() - start):.2f} ms"
)
marg = fit.query(evidence=evidence)  # every other node, one forward and one backward pass
print(f"all {len(marg)} other marginals in one call")
rows = net.to_frame(fit.sample(1000, seed=0))[list(evidence)]  # 1,000 evidence rows
start = time.perf_counter()
batch = fit.query(target, evidence=rows)[target]
print(f"1,000 evidence rows answered in one contraction: {1e3 * (time.perf_counter() - start):.1f} ms")
print(
    "MAP of three nodes:", fit.map_query([n for n in net.nodes if n not in evidence][:3], evidence=evidence)
)
fig, ax = plt.subplots(figsize=(6, 3.5))
prior = fit.query(target)[target].to_numpy()
ax.bar(np.arange(len(prior)) - 0.2, prior, 0.4, label="no evidence")
ax.bar(np.arange(len(prior)) + 0.2, single.to_numpy(), 0.4, label=f"given {evidence}")
ax.set_xticks(range(len(prior)), [str(s) for s in net.states[target]])
ax.set_ylabel(f"P({target})")
ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)  # beside the bars, never over one
save(fig, "03_alarm_query.png")

# %% 3. Learning from incomplete data: EM uses every partially observed row
complete = net.to_frame(fit.sample(N_ROWS, seed=1))
fractions = [0.1, 0.2] if FAST else [0.05, 0.1, 0.2, 0.3]


def cpd_error(f):
    """Summed L1 error of the CPD rows, weighted by how often each parent configuration occurs."""
    total = 0.0
    for n in net.nodes:
        diff = (f.params[f"cpd_{n}"] - fit.params[f"cpd_{n}"]).abs().sum(-1)
        par = net.parents[n]
        w = fit.query(par, joint=True, labels=False).reshape(-1) if par else 1.0
        total += float((w * diff).sum())
    return total


errors = {"EM, every row": [], "complete rows only": []}
rng = np.random.default_rng(0)
for frac in fractions:
    holed = complete.mask(rng.random(complete.shape) < frac)
    em = pg.fit(BayesianNetwork(net.dag, states=net.states), holed, method="em")
    kept = holed.dropna()
    cc = pg.fit(BayesianNetwork(net.dag, states=net.states), kept, method="em") if len(kept) else None
    errors["EM, every row"].append(cpd_error(em))
    errors["complete rows only"].append(cpd_error(cc) if cc is not None else np.nan)
    print(
        f"{frac:.0%} missing: {len(kept)} complete rows; CPD error EM {errors['EM, every row'][-1]:.3f}, "
        f"complete-case {errors['complete rows only'][-1]:.3f}"
    )
fig, ax = plt.subplots(figsize=(5, 3.5))
for label, e in errors.items():
    ax.plot(fractions, e, "o-", label=label)
ax.set_xlabel("fraction of values missing at random")
ax.set_ylabel("CPD error (weighted L1)")
ax.legend()
save(fig, "03_missing_data.png")

# %% 4. Structure learning with BIC: an exact search up to 15 nodes, else a tabu hill climb with
# perturbed restarts (max in-degree, black/white lists)
cols = list(complete.columns)[: (8 if FAST else len(complete.columns))]
start = time.perf_counter()
learned = learn_structure(complete[cols], score="bic", max_indegree=3)
true_sub = net.dag.subgraph(cols)
print(
    f"\n{learned.graph['search']} search on {len(cols)} nodes: {learned.number_of_edges()} edges in "
    f"{time.perf_counter() - start:.1f} s; "
    f"BIC learned {structure_score(learned, complete[cols]):.1f}, true {structure_score(true_sub, complete[cols]):.1f}"
)
fig, ax = plt.subplots(figsize=(11, 6))
BayesianNetwork(learned).plot_fit(None, {}, ax=ax, font_size=6)  # boxes sized to the names
ax.set_title("learned structure (BIC)")
save(fig, "03_learned_structure.png")

# %% 5. Naive Bayes: a generative classifier; unlabelled rows (label -1) join by EM
rng = np.random.default_rng(2)
n, d = (600, 6) if FAST else (3000, 10)
y = rng.integers(0, 2, n)
probs = rng.dirichlet(np.ones(3) * 0.5, size=(2, d))
x = np.stack([[rng.choice(3, p=probs[y[i], j]) for j in range(d)] for i in range(n)])
frame = pd.DataFrame(x, columns=[f"f{j}" for j in range(d)])
train, test = frame[: n // 2], frame[n // 2 :]
feature_states = {c: [0, 1, 2] for c in frame.columns}
labels = np.where(np.arange(n // 2) < 20, y[: n // 2], -1)  # only 20 labelled rows
few = pg.fit(
    NaiveBayes(n_classes=2, states=feature_states), train[:20].assign(**{"class": y[:20]}), method="em"
)
semi = pg.fit(NaiveBayes(n_classes=2, states=feature_states), train.assign(**{"class": labels}), method="em")
full = pg.fit(NaiveBayes(n_classes=2), train.assign(**{"class": y[: n // 2]}), method="em")
for name, f in [("20 labels", few), ("20 labels + unlabelled rows (EM)", semi), ("all labels", full)]:
    acc = float((f.predict(test).numpy() == y[n // 2 :]).mean())
    print(f"naive Bayes, {name}: test accuracy {acc:.3f}")

print(f"\ndone in {time.perf_counter() - t0:.1f} s (fast mode: {FAST})")
