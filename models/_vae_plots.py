"""The picture of a fitted VAE (``fit.plot`` -> ``plot_fit``): latent space, reconstructions, decoded grid.

:class:`_VAEPicture` is mixed into every VAE family; it asks the family for the items, their
class condition and their labels (:meth:`_VAEPicture._plot_inputs`), the encoder's means
(:meth:`_VAEPicture._codes`) and the decoder's means (``_decoded_mean``), and draws them.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import Tensor

from probgen.models.plotting import (
    _grid_columns,
    _image_grid,
    _labels,
    _line_grid,
    _no_options,
    _panels,
    _positive,
    _scatter_by_label,
    _square_side,
)

__all__: list[str] = []

_LATENT_VIEWS = ("pca", "first")
#: prior quantiles spanned by the decoded grid (a 2-D latent space)
_GRID_QUANTILES = (0.05, 0.95)


class _VAEPicture(abc.ABC):
    """``plot_fit`` for the VAE families (a mixin: the family supplies the hooks below)."""

    name: str
    latent_dim: int
    input_dim: int
    n_classes: int

    @abc.abstractmethod
    def _plot_inputs(self, data: Any, params: Mapping[str, Tensor]) -> tuple[Tensor, Tensor | None, Any]:
        """Prepared items ``x``, their one-hot class condition (or None) and default labels (or None)."""

    @abc.abstractmethod
    def _codes(self, params: Mapping[str, Tensor], x: Tensor, cond: Tensor | None) -> Tensor:
        """Posterior means of ``z`` for items ``x`` under the condition ``cond``."""

    @abc.abstractmethod
    def _decoded_mean(self, params: Mapping[str, Tensor], z: Tensor, c: Tensor | None) -> Tensor:
        """Decoder means for codes ``z`` under the condition ``c``."""

    def plot_fit(
        self,
        data: Any,
        params: Mapping[str, Tensor],
        *,
        ax: Any = None,
        labels: Any = None,
        latent: str = "pca",
        n_items: int = 8,
        grid: int = 8,
        y: int | None = None,
        **kwargs: Any,
    ) -> Any:
        """Picture of the fit: the latent space, reconstructions, and (2-D latent) a decoded grid.

        Three panels side by side: (1) the posterior mean of ``z`` of every item (the encoder's
        mean), coloured by ``labels`` (default: the class of each item, for the labelled
        families); a 2-D latent is drawn as is, a larger one by its first two principal
        components (``latent="pca"``) or its first two dimensions (``latent="first"``), a 1-D
        one against the item's index.  (2) The first ``n_items`` items above their
        reconstructions (the decoder's mean at the encoder's mean): images when an item reshapes
        to a square, else small line plots, original solid and reconstruction dashed.  (3) Only
        for a 2-D latent: the decoder's means on a ``grid x grid`` lattice of codes spanning the
        prior's 5%-95% quantiles (``z_1`` left to right, ``z_2`` bottom to top), decoded for
        class ``y`` in the labelled families.

        Parameters
        ----------
        data : array-like or tuple
            As for fitting (``fit.plot()`` passes the training data).
        params : dict of str to Tensor
            Parameters to draw (``fit.params``).
        ax : matplotlib.axes.Axes, optional
            Axes of the latent space; a new figure when None.  The other panels are carved out
            of its right-hand side (``ax.figure.axes``).
        labels : array-like, optional
            One label per item to colour the latent space by.
        latent : {"pca", "first"}, default "pca"
            How a latent space of more than two dimensions is shown.
        n_items : int, default 8
            Items to reconstruct.
        grid : int, default 8
            Codes per side of the decoded grid.
        y : int, optional
            Class the grid is decoded for (labelled families only; default 0).

        Returns
        -------
        matplotlib.axes.Axes
            The axes of the latent space (the other panels are on the same figure).

        Raises
        ------
        TypeError
            Unknown options, ``ax`` not matplotlib axes, options of the wrong type.
        ValueError
            ``latent`` not known, ``labels`` not one per item, counts or ``y`` out of range.
        """
        takes = ["ax=", "labels=", "latent=", "n_items=", "grid="] + (["y="] if self.n_classes else [])
        if not self.n_classes and y is not None:
            kwargs["y"] = y
        _no_options(kwargs, f"{self.name}.plot_fit", takes)
        if latent not in _LATENT_VIEWS:
            raise ValueError(f"latent={latent!r} is not known; expected one of: {', '.join(_LATENT_VIEWS)}.")
        n_items, grid = _positive(n_items, "n_items"), _positive(grid, "grid")
        y = 0 if y is None else y
        if self.n_classes and (isinstance(y, bool) or not isinstance(y, int) or not 0 <= y < self.n_classes):
            raise ValueError(f"y must be a class label in 0..{self.n_classes - 1}; got {y!r}.")
        x, cond, default = self._plot_inputs(data, params)
        lab = _labels(labels, len(x))
        lab = default if lab is None else lab
        with torch.no_grad():
            loc = self._codes(params, x, cond)
        panels = _panels(ax, 3 if self.latent_dim == 2 else 2)
        main = panels[0]
        xy, names = _latent_plane(loc.numpy(), latent)
        _scatter_by_label(main, xy, lab, s=10, alpha=0.8, linewidths=0)
        main.set(
            xlabel=names[0], ylabel=names[1], title=f"{self.name}: posterior means of z ({len(x)} items)"
        )
        k = min(n_items, len(x))
        recon = self._decoded_mean(params, loc[:k], None if cond is None else cond[:k]).numpy()
        _draw_items(panels[1], [x[:k].numpy(), recon], k)
        panels[1].set_title(
            "items (top) and reconstructions"
            if _square_side(self.input_dim)
            else "items and reconstructions (dashed)"
        )
        if self.latent_dim == 2:
            q = torch.linspace(*_GRID_QUANTILES, grid, dtype=loc.dtype)
            ticks = torch.distributions.Normal(0.0, 1.0).icdf(q)
            z2, z1 = torch.meshgrid(ticks.flip(0), ticks, indexing="ij")  # top row: the largest z_2
            codes = torch.stack([z1.reshape(-1), z2.reshape(-1)], -1)
            c = None
            if self.n_classes:
                c = torch.nn.functional.one_hot(torch.full((len(codes),), y), self.n_classes).to(loc.dtype)
            decoded = self._decoded_mean(params, codes, c).numpy()
            _draw_items(panels[2], [decoded], grid)
            suffix = f", class {y}" if self.n_classes else ""
            panels[2].set_title(f"decoded grid of z (5%-95% of the prior{suffix})")
        return main


def _latent_plane(loc: np.ndarray, view: str) -> tuple[np.ndarray, tuple[str, str]]:
    """Two coordinates per item of the codes ``loc`` ``(n, latent_dim)`` and their axis names."""
    n, m = loc.shape
    if m == 1:
        return np.c_[loc[:, 0], np.arange(n)], ("z", "item")
    if m == 2 or view == "first":
        return loc[:, :2], ("z[0]", "z[1]")
    centred = loc - loc.mean(0)
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    share = s**2 / max(float((s**2).sum()), 1e-300)
    return centred @ vt[:2].T, (f"PC 1 of z ({share[0]:.0%})", f"PC 2 of z ({share[1]:.0%})")


def _draw_items(ax: Any, groups: list[np.ndarray], ncols: int) -> None:
    """Items as images (one row per group) when they reshape to squares, else line plots (the
    groups over each other, the second dashed)."""
    d = groups[0].shape[1]
    side = _square_side(d)
    if side is not None:
        images = np.concatenate(groups).reshape(-1, side, side)
        _image_grid(
            ax,
            images,
            ncols,
            vmin=float(min(g.min() for g in groups)),
            vmax=float(max(g.max() for g in groups)),
        )
        return
    styles = [{"color": "k", "linewidth": 1.0}, {"color": "C3", "linewidth": 1.0, "linestyle": "--"}]
    _line_grid(ax, groups, _grid_columns(len(groups[0])) if len(groups) > 1 else ncols, styles[: len(groups)])
