"""Pictures of fitted mixtures, drawn on matplotlib axes (the families' ``plot_fit`` delegate here).

Every function takes what it draws as numpy arrays, computed by the family: the drawing knows
no model.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__: list[str] = []


def gaussian_scatter(
    ax: Any,
    xs: np.ndarray,
    z: np.ndarray,
    locs: np.ndarray,
    cov: np.ndarray,
    weights: np.ndarray,
    colors: np.ndarray,
    features: tuple[int, int],
    title: str,
) -> Any:
    """Items ``xs`` coloured by component ``z``, each component's mean (``x``) and its 1- and
    2-standard-deviation ellipses; ``locs`` ``(K, 2)`` and ``cov`` ``(K, 2, 2)`` of the two
    ``features``."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Ellipse

    i, j = features
    k = len(locs)
    ax.scatter(xs[:, i], xs[:, j], c=colors[z], s=10, alpha=0.7, linewidths=0)
    vals, vecs = np.linalg.eigh(cov)  # ascending eigenvalues, (K, 2) and (K, 2, 2)
    angles = np.degrees(np.arctan2(vecs[:, 1, 1], vecs[:, 0, 1]))  # direction of the larger axis
    sd = np.sqrt(np.clip(vals, 0.0, None))
    for c in range(k):
        for n_sd, style in ((1, "-"), (2, "--")):
            ax.add_patch(
                Ellipse(
                    locs[c],
                    2 * n_sd * sd[c, 1],
                    2 * n_sd * sd[c, 0],
                    angle=angles[c],
                    fill=False,
                    edgecolor=colors[c],
                    linestyle=style,
                    linewidth=1.5,
                )
            )
    ax.scatter(locs[:, 0], locs[:, 1], c=colors, marker="x", s=60, linewidths=2)
    handles = [Line2D([], [], color=colors[c], label=f"component {c} ({weights[c]:.2f})") for c in range(k)]
    handles += [
        Line2D([], [], color="0.3", linestyle="-", label="1 sd"),
        Line2D([], [], color="0.3", linestyle="--", label="2 sd"),
    ]
    ax.legend(handles=handles, fontsize=8, loc="best")
    ax.set(xlabel=f"feature {i}", ylabel=f"feature {j}", title=title)
    return ax


def density_grid(x: np.ndarray, size: int = 400) -> np.ndarray:
    """Points spanning one feature's items, a little beyond them."""
    pad = 0.05 * (x.max() - x.min() + 1e-12)
    return np.linspace(x.min() - pad, x.max() + pad, size)


def gaussian_density(
    ax: Any, x: np.ndarray, grid: np.ndarray, log_joint: np.ndarray, colors: np.ndarray, title: str
) -> Any:
    """Histogram of one feature ``x`` with the mixture density and each component's weighted
    density on ``grid`` (``log_joint`` ``(grid, K)``: ``log w_k N(x | k)``)."""
    ax.hist(x, bins="auto", density=True, color="0.8", label="data")
    for c in range(log_joint.shape[1]):
        ax.plot(grid, np.exp(log_joint[:, c]), color=colors[c], linestyle="--", label=f"component {c}")
    ax.plot(grid, np.exp(np.logaddexp.reduce(log_joint, axis=1)), color="k", label="mixture")
    ax.legend(fontsize=8, loc="best")
    ax.set(xlabel="feature 0", ylabel="density", title=title)
    return ax


def component_heatmap(
    ax: Any, table: np.ndarray, label: str, vmax: float | None, weights: np.ndarray, title: str
) -> Any:
    """A heat map of ``table`` ``(K, m)``: one row per component, labelled with its weight."""
    k = table.shape[0]
    im = ax.imshow(table, aspect="auto", cmap="viridis", vmin=0.0, vmax=vmax, interpolation="nearest")
    ax.figure.colorbar(im, ax=ax, label=label)
    ax.set_yticks(range(k), [f"{c} ({weights[c]:.2f})" for c in range(k)])
    ax.set(ylabel="component (weight)", title=title)
    ax.set_xlabel("feature")
    return ax


def category_columns(ax: Any, d: int, c: int) -> None:
    """Separate and label the ``d`` features of a heat map with ``c`` columns (categories) each."""
    for j in range(1, d):
        ax.axvline(j * c - 0.5, color="w", linewidth=2)
    if d <= 30:
        ax.set_xticks([j * c + (c - 1) / 2 for j in range(d)], [str(j) for j in range(d)])
    ax.set_xlabel(f"feature (categories 0..{c - 1} left to right)")


def count_frequencies(
    ax: Any, counts: np.ndarray, log_joint: np.ndarray, rates: np.ndarray, colors: np.ndarray, title: str
) -> Any:
    """Frequencies of the ``counts`` ``0..max`` with the fitted probabilities: the mixture's and
    each component's weighted one (``log_joint`` ``(max + 1, K)``), components labelled by ``rates``."""
    top = len(log_joint) - 1
    freq = np.bincount(counts, minlength=top + 1) / len(counts)
    support = np.arange(top + 1)
    ax.bar(support, freq, width=0.9, color="0.8", label="data")
    for c in range(log_joint.shape[1]):
        label = f"component {c} (rate {rates[c]:.3g})"
        ax.plot(support, np.exp(log_joint[:, c]), "--", color=colors[c], label=label)
    ax.plot(support, np.exp(np.logaddexp.reduce(log_joint, axis=1)), "o-", color="k", ms=3, label="mixture")
    ax.legend(fontsize=8, loc="best")
    ax.set(xlabel="count", ylabel="probability", title=title)
    return ax
