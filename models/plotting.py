"""Pieces the families' pictures share (``fit.plot`` -> ``model.plot_fit``).

matplotlib is not a runtime dependency of probgen: it is imported here only when a picture is
drawn, with a message saying how to install it when it is missing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import networkx as nx
import numpy as np

__all__: list[str] = []


def _pyplot() -> Any:
    """``matplotlib.pyplot``, or an ImportError that says how to get it."""
    try:
        import matplotlib.pyplot as plt
    except ImportError as err:  # pragma: no cover - matplotlib is installed with the test extra
        raise ImportError(
            "fit.plot draws with matplotlib, which is not installed; `pip install matplotlib`."
        ) from err
    return plt


def _axes(ax: Any, figsize: tuple[float, float] = (6.0, 4.5)) -> Any:
    """``ax`` itself, or new axes on a new figure when it is None."""
    plt = _pyplot()
    if ax is None:
        _, ax = plt.subplots(figsize=figsize)
    elif not hasattr(ax, "add_collection"):
        raise TypeError(f"ax must be matplotlib Axes or None; got {type(ax).__name__}.")
    return ax


def _colors(k: int) -> np.ndarray:
    """``(k, 4)`` RGBA colours, one per component or state (matplotlib's tab10 up to ten)."""
    plt = _pyplot()
    if k <= 10:
        rgb = np.asarray(plt.get_cmap("tab10").colors[:k], dtype=float)
        return np.column_stack([rgb, np.ones(k)])
    return np.asarray(plt.get_cmap("hsv")(np.linspace(0.0, 1.0, k, endpoint=False)), dtype=float)


def _no_options(kwargs: dict[str, Any], who: str, takes: Sequence[str]) -> None:
    """Refuse unknown keyword options, naming them and the ones that are taken."""
    if kwargs:
        raise TypeError(f"unexpected option(s) {sorted(kwargs)} for {who}; it takes {', '.join(takes)}.")


def _index(value: Any, name: str, size: int, what: str) -> int:
    """Validate an index into ``size`` things (a feature, a sequence)."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise TypeError(f"{name} must be an int; got {type(value).__name__}.")
    if not 0 <= int(value) < size:
        raise ValueError(f"{name}={value!r} is out of range; the data have {size} {what} (0..{size - 1}).")
    return int(value)


def _panels(ax: Any, n: int, size: float = 4.2) -> list[Any]:
    """``n`` panels side by side: a new figure when ``ax`` is None, else ``ax`` itself and
    ``n - 1`` panels carved out of its right-hand side (all on ``ax.figure``)."""
    plt = _pyplot()
    if ax is None:
        _, axes = plt.subplots(1, n, figsize=(size * n, size), squeeze=False, layout="constrained")
        return list(axes[0])
    ax = _axes(ax)
    if n == 1:
        return [ax]
    from mpl_toolkits.axes_grid1 import make_axes_locatable

    divider = make_axes_locatable(ax)
    return [ax] + [divider.append_axes("right", size="100%", pad=0.7) for _ in range(n - 1)]


def _square_side(d: int) -> int | None:
    """The side of a square image of ``d`` pixels, or None when ``d`` is no square (or under 4)."""
    side = int(round(np.sqrt(d)))
    return side if side * side == d and side >= 2 else None


def _image_grid(
    ax: Any,
    images: np.ndarray,
    ncols: int,
    *,
    vmin: float | None = None,
    vmax: float | None = None,
    cmap: str = "gray",
) -> list[Any]:
    """Draw ``images`` ``(n, h, w)`` as a grid of ``ncols`` columns on one axes, one image artist per
    item (item ``i`` in row ``i // ncols``, column ``i % ncols``); returns the artists."""
    n = len(images)
    nrows = max(1, -(-n // ncols))
    lo = float(np.min(images)) if vmin is None else vmin
    hi = float(np.max(images)) if vmax is None else vmax
    artists = []
    gap = 0.06
    for i, img in enumerate(images):
        r, c = divmod(i, ncols)
        extent = (c + gap, c + 1 - gap, nrows - r - 1 + gap, nrows - r - gap)
        artists.append(
            ax.imshow(img, extent=extent, cmap=cmap, vmin=lo, vmax=hi, interpolation="nearest", aspect="auto")
        )
    ax.set(xlim=(0, ncols), ylim=(0, nrows), xticks=[], yticks=[])
    ax.set_aspect("equal")
    return artists


def _line_grid(
    ax: Any, groups: Sequence[np.ndarray], ncols: int, styles: Sequence[dict[str, Any]]
) -> list[Any]:
    """Draw items as small line plots in a grid of cells of one axes: ``groups`` holds arrays
    ``(n, d)`` of the same shape drawn over each other (item ``i`` of every group in cell ``i``, one
    ``styles`` entry per group), each cell scaled to the range of its items; returns the lines."""
    n, d = groups[0].shape
    nrows = max(1, -(-n // ncols))
    t = np.linspace(0.08, 0.92, d)
    lines = []
    for i in range(n):
        r, c = divmod(i, ncols)
        cell = np.stack([g[i] for g in groups])
        lo, hi = float(cell.min()), float(cell.max())
        scale = 0.8 / (hi - lo) if hi > lo else 0.0
        for g, style in zip(groups, styles, strict=True):
            y = nrows - r - 0.9 + (g[i] - lo) * scale
            lines.append(ax.plot(c + t, y, **style)[0])
        ax.add_patch(_cell_frame(c, nrows - r - 1))
    ax.set(xlim=(0, ncols), ylim=(0, nrows), xticks=[], yticks=[])
    return lines


def _cell_frame(x0: float, y0: float) -> Any:
    from matplotlib.patches import Rectangle

    return Rectangle((x0 + 0.02, y0 + 0.02), 0.96, 0.96, fill=False, edgecolor="0.85", linewidth=0.8)


def _grid_columns(n: int) -> int:
    """Columns of a near-square grid of ``n`` cells."""
    return max(1, int(np.ceil(np.sqrt(n))))


def _positive(value: Any, name: str) -> int:
    """Validate a positive int option."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise TypeError(f"{name} must be a positive int; got {type(value).__name__}.")
    if value < 1:
        raise ValueError(f"{name} must be a positive int; got {value!r}.")
    return int(value)


def _labels(labels: Any, n: int) -> np.ndarray | None:
    """Validate ``labels=``: one label per item, or None."""
    if labels is None:
        return None
    if hasattr(labels, "detach"):
        labels = labels.detach().cpu().numpy()
    arr = np.asarray(labels)
    if arr.ndim != 1 or len(arr) != n:
        raise ValueError(f"labels must hold one label per item, shape ({n},); got shape {arr.shape}.")
    return arr


def _scatter_by_label(ax: Any, xy: np.ndarray, labels: np.ndarray | None, **style: Any) -> Any:
    """Scatter ``xy`` ``(n, 2)``, coloured by ``labels`` (a legend outside the axes) when given.
    One collection for all points, so its offsets are the items in order."""
    if labels is None:
        return ax.scatter(xy[:, 0], xy[:, 1], color="C0", **style)
    values, codes = np.unique(labels, return_inverse=True)
    colors = _colors(len(values))
    points = ax.scatter(xy[:, 0], xy[:, 1], c=colors[codes], **style)
    if len(values) <= 20:
        from matplotlib.lines import Line2D

        handles = [
            Line2D([], [], linestyle="", marker="o", color=colors[i], label=str(v))
            for i, v in enumerate(values)
        ]
        ax.legend(handles=handles, fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), title="label")
    return points


def _samples_beside_data(
    panels: Sequence[Any], data: np.ndarray, samples: np.ndarray, title: str, n_images: int = 36
) -> None:
    """Generated ``samples`` beside ``data`` ``(n, d)``: image grids side by side when an item is a
    square image, else one scatter of the first two features (a histogram of one feature).
    ``panels`` is one axes (scatter, histogram) or two (images: data, then samples)."""
    d = data.shape[1]
    side = _square_side(d)
    if side is not None and len(panels) == 2:
        k = min(n_images, len(data), len(samples))
        lo, hi = float(min(data.min(), samples.min())), float(max(data.max(), samples.max()))
        cols = _grid_columns(k)
        _image_grid(panels[0], data[:k].reshape(k, side, side), cols, vmin=lo, vmax=hi)
        _image_grid(panels[1], samples[:k].reshape(k, side, side), cols, vmin=lo, vmax=hi)
        panels[0].set_title("data")
        panels[1].set_title(title)
        return
    ax = panels[0]
    if d == 1:
        bins = np.histogram_bin_edges(np.r_[data[:, 0], samples[:, 0]], bins="auto")
        ax.hist(data[:, 0], bins=bins, density=True, color="0.7", label="data")
        ax.hist(
            samples[:, 0],
            bins=bins,
            density=True,
            histtype="step",
            color="C3",
            linewidth=1.5,
            label="samples",
        )
        ax.set(xlabel="feature 0", ylabel="density")
    else:
        ax.scatter(data[:, 0], data[:, 1], s=8, color="0.6", alpha=0.7, linewidths=0, label="data")
        ax.scatter(samples[:, 0], samples[:, 1], s=8, color="C3", alpha=0.7, linewidths=0, label="samples")
        ax.set(xlabel="feature 0", ylabel="feature 1")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.set_title(title)


def draw_dag(dag: nx.DiGraph, ax: Any, *, node_size: int | None, font_size: float) -> Any:
    """``dag`` layered by topological generation on matplotlib axes (created when None): each
    name in a box of its own size; ``node_size`` (points squared) only sets where arrows stop."""
    g = nx.DiGraph(dag)
    for layer, nodes in enumerate(nx.topological_generations(g)):
        for n in nodes:
            g.nodes[n]["layer"] = layer
    widest = max((len(ls) for ls in nx.topological_generations(g)), default=1)
    ax = _axes(ax, figsize=(max(6.0, 1.1 * widest), 5.0))
    pos = nx.multipartite_layout(g, subset_key="layer", align="horizontal")
    pos = {k: (x, -y) for k, (x, y) in pos.items()}
    nodes = list(g.nodes)
    if node_size is None:  # arrows stop about at the box of each name (width ~0.6 em a character,
        # height ~2 em): the mean of the two, so that steep and flat arrows both end near it
        sizes = [
            (0.5 * (0.62 * font_size * max(len(str(n)), 2) + 0.9 * font_size + 2.2 * font_size)) ** 2
            for n in nodes
        ]
    else:
        sizes = [float(node_size)] * len(nodes)
    nx.draw_networkx_edges(
        g, pos=pos, ax=ax, nodelist=nodes, node_size=sizes, arrows=True, edge_color="0.4", node_shape="s"
    )
    nx.draw_networkx_labels(
        g,
        pos=pos,
        ax=ax,
        font_size=font_size,
        bbox={"boxstyle": "round,pad=0.3", "facecolor": "#cde", "edgecolor": "#7a9ab8"},
    )
    ax.margins(0.08)
    ax.set_axis_off()
    return ax
