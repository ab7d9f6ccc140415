"""``probgen demo``: a short tour of Bayesian networks on the sprinkler network."""

from __future__ import annotations

import time

import numpy as np

__all__ = ["run"]


def run(progress: bool = False) -> None:
    """Print a tour: exact queries, EM from rows with missing values, structure learning.

    Parameters
    ----------
    progress : bool, default False
        Show progress bars while fitting.
    """
    import networkx as nx

    import probgen as pg
    from probgen.models import BayesianNetwork, learn_structure

    t0 = time.perf_counter()
    dag = nx.DiGraph([("cloudy", "sprinkler"), ("cloudy", "rain"), ("sprinkler", "wet"), ("rain", "wet")])
    states = {n: ["no", "yes"] for n in dag.nodes}
    truth = BayesianNetwork(
        dag,
        states=states,
        cpds={
            "cloudy": [0.5, 0.5],
            "sprinkler": [[0.5, 0.5], [0.9, 0.1]],
            "rain": [[0.8, 0.2], [0.2, 0.8]],
            "wet": [[[1.0, 0.0], [0.1, 0.9]], [[0.1, 0.9], [0.01, 0.99]]],
        },
    ).as_fit()
    print("Sprinkler network: cloudy -> sprinkler, cloudy -> rain, sprinkler & rain -> wet grass")
    post = truth.query(evidence={"wet": "yes"})
    print("Exact posteriors given wet grass (one contraction, all nodes):")
    for node, p in post.items():
        print(f"  P({node} = yes | wet) = {float(p['yes']):.4f}")
    both = truth.query("rain", evidence={"wet": "yes", "sprinkler": "yes"})["rain"]
    print(f"  explaining away: P(rain = yes | wet, sprinkler on) = {float(both['yes']):.4f}")
    print(f"  most probable explanation: {truth.map_query(evidence={'wet': 'yes'})}")

    frame = truth.model.to_frame(truth.sample(3000, seed=0))
    holed = frame.mask(np.random.default_rng(0).random(frame.shape) < 0.2)
    print(
        f"\nLearning from {len(holed)} rows with 20% of values missing ({len(holed.dropna())} complete rows):"
    )
    fit = pg.fit(BayesianNetwork(dag, states=states), holed, method="em", progress=progress)
    p_rain = fit.params["cpd_rain"][:, 1].numpy()
    print(
        f"  EM ({len(fit.history)} iterations): P(rain | cloudy = no, yes) = {np.round(p_rain, 3)} (truth [0.2 0.8])"
    )
    scores = fit.log_prob(holed.head(3))
    print(f"  log_prob of the first rows, missing entries summed out: {np.round(scores.numpy(), 3)}")

    learned = learn_structure(frame, score="bic")
    print(
        f"\nStructure search ({learned.graph['search']}, BIC) on the complete rows (edges up to Markov "
        f"equivalence): {sorted(learned.edges())}"
    )
    print(f"(network tour: {time.perf_counter() - t0:.1f} s)")
