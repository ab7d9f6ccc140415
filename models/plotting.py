"""Pieces the families' pictures share (``fit.plot`` -> ``model.plot_fit``).

matplotlib is not a runtime dependency of probgen: it is imported here only when a picture is
drawn, with a message saying how to install it when it is missing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

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
