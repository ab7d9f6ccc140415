"""Generative adversarial network (Goodfellow et al. 2014) on real-valued feature vectors: ``GAN``.

The generator is a Pyro model with no likelihood: latent noise ``z ~ N(0, I)`` (site ``"z"``,
``latent_dim``) in the plate ``"data"``, pushed through an MLP registered with
``pyro.module("generator", ...)`` to the items (site ``"x"``, a ``pyro.deterministic`` value).  The
model has no density (``density = "none"``), so the likelihood-based backends (EM, SVI, MCMC,
enumeration) refuse it; the backend ``"adversarial"`` trains it against a discriminator MLP through
the hook :meth:`GAN.adversarial_objective`.  Every weight of both networks lives in ``fit.params``
under its Pyro param-store name (``"generator$$$0.weight"``, ``"discriminator$$$0.weight"``, ...), so
``Fit.save``/``probgen.load`` round-trip them with no pickle; sampling evaluates the generator on
those weights (``torch.func.functional_call``), never on whatever the model object holds.
Computation is in float32.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, cast

import pyro
import pyro.distributions as dist
import torch
from torch import Tensor, nn

from probgen.fit import Fit
from probgen.metrics import mmd
from probgen.model import GenerativeModel, as_tensor
from probgen.models.plotting import _no_options, _panels, _positive, _samples_beside_data, _square_side
from probgen.state import isolated_rng
from probgen.validation import positive_int

__all__ = ["GAN"]

_DTYPE = torch.float32
_SEP = "$$$"  # Pyro's separator between a module's name and its parameters' names
#: Most data items a picture draws and compares with samples (the MMD costs their square).
_MMD_ITEMS = 1000
_NO_LIKELIHOOD = (
    "{name} has no likelihood: a GAN is an implicit model that only generates, so {what} cannot be "
    "computed. To score a fitted GAN, compare fit.sample(n) with held-out data by a two-sample test "
    "(probgen.mmd or probgen.mmd_test); for per-item log-likelihoods, anomaly scores or BIC/AIC, use a "
    "family with a likelihood (e.g. VAE, RBM, GaussianMixture, BernoulliMixture)."
)


def _mlp(sizes: Sequence[int], activation: type[nn.Module], **kwargs: Any) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layers.append(nn.Linear(a, b, dtype=_DTYPE))
        if i < len(sizes) - 2:
            layers.append(activation(**kwargs))
    return nn.Sequential(*layers)


def _check_dim(name: str, v: Any) -> int:
    out: int = positive_int(v, name)
    return out


def _split(params: Mapping[str, Tensor], module: str) -> dict[str, Tensor]:
    prefix = module + _SEP
    return {k[len(prefix) :]: v for k, v in params.items() if k.startswith(prefix)}


class _GANObjective:
    """The two networks the ``"adversarial"`` backend trains (see ``GenerativeModel.adversarial_objective``)."""

    def __init__(self, gan: GAN) -> None:
        gan._build()  # fresh weights from the fit's seeded generator
        pyro.module("generator", gan.generator)
        pyro.module("discriminator", gan.discriminator)
        self.gan = gan

    def generator_parameters(self) -> list[Tensor]:
        return list(self.gan.generator.parameters())

    def discriminator_parameters(self) -> list[Tensor]:
        return list(self.gan.discriminator.parameters())

    def generate(self, n: int) -> Tensor:
        """``n`` fake items ``generator(z)``, ``z ~ N(0, I)``, differentiable in the generator's weights."""
        out: Tensor = self.gan.generator(torch.randn(n, self.gan.latent_dim, dtype=_DTYPE))
        return out

    def discriminate(self, x: Tensor) -> Tensor:
        """A logit per item: large for items the discriminator takes for real."""
        out: Tensor = self.gan.discriminator(x).squeeze(-1)
        return out

    def params(self) -> dict[str, Tensor]:
        return {
            f"{name}{_SEP}{k}": v.detach().clone()
            for name, mod in (("generator", self.gan.generator), ("discriminator", self.gan.discriminator))
            for k, v in mod.named_parameters()
        }


@dataclasses.dataclass(frozen=True, eq=False, repr=False)
class GANFit(Fit):
    """A fitted :class:`GAN`: generation, and the trained discriminator's opinion of items."""

    def discriminate(self, x: Any) -> Tensor:
        """The trained discriminator's logit per item of ``x`` (large: taken for real data)."""
        return cast(GAN, self.model).discriminate(self, x)


class GAN(GenerativeModel):
    """Generative adversarial network with MLP generator and discriminator, for real-valued items.

    ``z ~ N(0, I)`` (site ``"z"``, ``latent_dim``), ``x = generator(z)`` (site ``"x"``, deterministic):
    an implicit model with no likelihood (``density = "none"``).  Fitted by ``method="adversarial"``
    (the non-saturating GAN loss, optionally with an R1 gradient penalty); ``fit.sample(n)``
    generates, ``fit.discriminate(x)`` gives the trained discriminator's logit per item (large:
    looks real).  ``fit.log_prob``, ``fit.bic``, ``fit.aic`` and ``fit.log_likelihood`` raise a
    ``TypeError``: there is no likelihood to evaluate; score samples against held-out data with
    ``probgen.mmd``/``probgen.mmd_test`` instead.  Standardise the features first (GAN training is
    sensitive to scale).

    Parameters
    ----------
    data_dim : int
        Features per item.
    latent_dim : int
        Size of the latent noise ``z``.
    hidden_dims : sequence of int, default (64, 64)
        Hidden layer widths of the generator (ReLU) and of the discriminator (LeakyReLU 0.2).

    Examples
    --------
    >>> import torch, probgen as pg
    >>> from probgen.models import GAN
    >>> x = torch.randn(200, 2)
    >>> fit = pg.fit(GAN(2, 2, hidden_dims=(16,)), x, method="adversarial", num_steps=50, progress=False)
    >>> fit.sample(5, seed=0).shape
    torch.Size([5, 2])
    """

    data_plate_name = "data"
    dtype = _DTYPE
    density = "none"
    fit_class: ClassVar[type[GANFit]] = GANFit

    def __init__(self, data_dim: int, latent_dim: int, hidden_dims: Sequence[int] = (64, 64)) -> None:
        self.data_dim = _check_dim("data_dim", data_dim)
        self.latent_dim = _check_dim("latent_dim", latent_dim)
        try:
            hidden = tuple(hidden_dims)
        except TypeError:
            raise ValueError(
                f"hidden_dims must be a sequence of positive ints; got {hidden_dims!r}."
            ) from None
        self.hidden_dims = tuple(_check_dim("hidden_dims", h) for h in hidden)
        with isolated_rng(0):  # placeholder weights (each fit draws its own): the global RNG is left alone
            self._build()

    def _build(self) -> None:
        self.generator = _mlp((self.latent_dim, *self.hidden_dims, self.data_dim), nn.ReLU)
        self.discriminator = _mlp((self.data_dim, *self.hidden_dims, 1), nn.LeakyReLU, negative_slope=0.2)

    # ------------------------------------------------------------------ Pyro model
    def model(self, data: Tensor | None = None, subsample_size: int | None = None) -> Tensor:
        """Generate as many items as ``data`` has (one when None); ``data`` is never scored."""
        pyro.module("generator", self.generator)
        n = 1 if data is None else data.shape[0]
        with pyro.plate("data", n, subsample_size=subsample_size) as plate_idx:
            idx: Tensor = plate_idx  # type: ignore[assignment]
            prior = dist.Normal(torch.zeros(idx.shape[0], self.latent_dim, dtype=_DTYPE), 1.0).to_event(1)
            z = pyro.sample("z", prior)
            x: Tensor = pyro.deterministic("x", self.generator(z), event_dim=1)
            return x

    def roles(self, data: Any) -> Any:
        # tracing registers the generator with pyro.module: keep the user's param store untouched
        with pyro.get_param_store().scope():
            return super().roles(data)

    def adversarial_objective(self, data: Any) -> _GANObjective:
        return _GANObjective(self)

    # ------------------------------------------------------------------ data
    def prepare_data(self, data: Any) -> Tensor:
        """Validate ``data`` (2-D, ``data_dim`` columns, finite) and convert it to float32."""
        x = as_tensor(data, "data", dtype=_DTYPE)
        if x.dim() != 2 or x.shape[1] != self.data_dim:
            raise ValueError(
                f"data must have shape (n_items, {self.data_dim}) (data_dim={self.data_dim}); "
                f"got {tuple(x.shape)}."
            )
        return x

    def get_config(self) -> dict[str, Any]:
        return {
            "data_dim": self.data_dim,
            "latent_dim": self.latent_dim,
            "hidden_dims": list(self.hidden_dims),
        }

    def num_parameters(self, params: Mapping[str, Tensor], data: Any) -> int:
        """Weights of the generator (the discriminator is a training device, not part of the model)."""
        return int(sum(v.numel() for k, v in params.items() if k.startswith("generator" + _SEP)))

    # ------------------------------------------------------------------ no likelihood
    def log_prob_items(self, data: Any, params: Mapping[str, Tensor]) -> Tensor:
        """Refused: a GAN has no likelihood, so no log_prob, BIC or AIC (a ``TypeError`` naming what
        to use instead)."""
        raise TypeError(_NO_LIKELIHOOD.format(name=self.name, what="log_prob (per-item log-likelihood)"))

    # ------------------------------------------------------------------ generation
    def sample_items(
        self, n: int, params: Mapping[str, Tensor], *, generator: torch.Generator | None = None, **kwargs: Any
    ) -> dict[str, Any]:
        """``n`` items ``generator(z)`` with ``z ~ N(0, I)``: ``{"data": (n, data_dim), "z": (n, latent_dim)}``."""
        if kwargs:
            raise TypeError(f"{self.name}.sample takes no options; got {sorted(kwargs)}.")
        weights = _split(params, "generator")
        if not weights:
            raise ValueError(
                f"params hold no generator weights ('generator{_SEP}...'); fit the {self.name} with "
                "method='adversarial' first."
            )
        with torch.no_grad():
            z = torch.randn(n, self.latent_dim, generator=generator, dtype=_DTYPE)
            x = torch.func.functional_call(self.generator, weights, (z,))
        return {"data": x, "z": z}

    # ------------------------------------------------------------------ fit helpers
    def discriminate(self, fit: Any, x: Any) -> Tensor:
        """The trained discriminator's logit per item of ``x`` (large: taken for real data).

        Not a density: the discriminator is only trained to tell the final generator's items
        from the training data, so use it for diagnostics, not for scoring.
        """
        xs = fit._data(x)
        weights = _split(fit.params, "discriminator")
        if not weights:
            raise ValueError("this fit holds no discriminator weights ('discriminator$$$...').")
        with torch.no_grad():
            out: Tensor = torch.func.functional_call(self.discriminator, weights, (xs,)).squeeze(-1)
        return out

    # ------------------------------------------------------------------ picture
    def plot_fit(
        self,
        data: Any,
        params: Mapping[str, Tensor],
        *,
        ax: Any = None,
        n_samples: int | None = None,
        seed: int = 0,
        **kwargs: Any,
    ) -> Any:
        """Picture of the fit: generated items beside the data, with their MMD in the title.

        The data (at most ``_MMD_ITEMS`` of them, a fixed random subset) and ``n_samples`` items
        generated with ``seed`` (``fit.sample(n_samples, seed=seed)``): when an item is a square
        image, two grids of images (data, then samples); otherwise one scatter of the first two
        features (a histogram of a single feature).  The title gives the unbiased squared MMD
        between the samples and the data drawn (:func:`probgen.metrics.mmd`, median bandwidth):
        near 0 when the generator matches the data.

        Parameters
        ----------
        data : array-like
            ``(n_items, data_dim)`` items (``fit.plot()`` passes the training data).
        params : dict of str to Tensor
            Parameters to draw (``fit.params``).
        ax : matplotlib.axes.Axes, optional
            Where to draw; a new figure when None.  For images the samples' panel is carved out
            of its right-hand side (``ax.figure.axes``).
        n_samples : int, optional
            Items to generate (default: as many as the data drawn).
        seed : int, default 0
            Seed of the generated items (and of the data's subset).

        Returns
        -------
        matplotlib.axes.Axes
            The axes of the data (scatter or the data's images).

        Raises
        ------
        TypeError
            Unknown options, ``ax`` not matplotlib axes, ``n_samples``/``seed`` not ints.
        ValueError
            ``n_samples`` under 2, data of the wrong shape.
        """
        _no_options(kwargs, "GAN.plot_fit", ("ax=", "n_samples=", "seed="))
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise TypeError(f"seed must be an int; got {type(seed).__name__}.")
        x = data if isinstance(data, Tensor) else self.prepare_data(data)
        if len(x) > _MMD_ITEMS:
            pick = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))[:_MMD_ITEMS]
            x = x[pick.sort().values]
        n = len(x) if n_samples is None else _positive(n_samples, "n_samples")
        if n < 2:
            raise ValueError(f"n_samples must be at least 2 (the MMD needs two items); got {n}.")
        fake = self.sample_items(n, params, generator=torch.Generator().manual_seed(seed))["data"]
        score = mmd(fake, x)
        panels = _panels(ax, 2 if _square_side(self.data_dim) else 1)
        title = f"{n} GAN samples; MMD\u00b2 to the data = {score:.4g}"
        _samples_beside_data(panels, x.numpy(), fake.numpy(), title)
        return panels[0]

    def __repr__(self) -> str:
        return f"GAN(data_dim={self.data_dim}, latent_dim={self.latent_dim}, hidden_dims={self.hidden_dims})"
