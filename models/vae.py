"""Variational autoencoders: ``VAE``, the semi-supervised ``SemiSupervisedVAE`` (Kingma et al. 2014,
M2) and the ``ConditionalVAE`` (Sohn et al. 2015).

Each is a Pyro model/guide pair written as Pyro's VAE tutorials write them: the encoder and
decoder are ``torch.nn`` modules registered with ``pyro.module``, the data plate ``"data"`` takes
``subsample_size`` for minibatches, and the latent code ``"z"`` is local to each item (amortised by
the encoder).  Each also offers the SVI fast path (``svi_objective``): the same ELBO with its KL
term in closed form, in one plain PyTorch loop, so an epoch costs what a hand-written PyTorch
training loop costs.  Every weight lives in ``fit.params`` under its Pyro param-store name
(``"encoder$$$0.weight"``, ...), so ``Fit.save``/``probgen.load`` round-trip them with no pickle;
the fit's helpers evaluate the networks on those weights (``torch.func.functional_call``), never
on whatever the model object holds.  The machinery the three share is in
:mod:`probgen.models._vae_base`; each family here says only what is its own.

Sample sites: ``"z"`` (latent code, ``latent_dim``), ``"x"`` (the data), and for the
semi-supervised model ``"y"`` (the class: observed for labelled rows, enumerated otherwise).
Computation is in float32.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np
import pyro
import pyro.distributions as dist
import torch
from torch import Tensor, nn

from probgen.model import as_tensor
from probgen.models._vae_base import (
    _DTYPE,
    VAEFit,
    _call,
    _check_dims,
    _Decoder,
    _encoder_input,
    _Gaussian,
    _kl_std_normal,
    _LabelledVAE,
    _mlp,
    _normal_log_prob,
    _one_hot,
    _VAEBase,
    _with_class,
)

__all__ = ["VAE", "ConditionalVAE", "SemiSupervisedVAE"]


@dataclasses.dataclass(frozen=True, eq=False, repr=False)
class UnlabelledVAEFit(VAEFit):
    """A fitted :class:`VAE`: codes of items, items of codes, paths between items."""

    def encode(self, x: Any) -> tuple[Tensor, Tensor]:
        """Posterior mean and scale of ``z`` given ``x``: two ``(n, latent_dim)`` tensors."""
        out: tuple[Tensor, Tensor] = self.vae.encode(self, x)
        return out

    def decode(self, z: Any) -> Tensor:
        """Mean of ``p(x | z)`` for codes ``z`` of shape ``(n, latent_dim)``."""
        out: Tensor = self.vae.decode(self, z)
        return out

    def interpolate(self, x0: Any, x1: Any, steps: int = 8) -> Tensor:
        """Decoded means along the straight line between the codes of ``x0`` and ``x1``."""
        out: Tensor = self.vae.interpolate(self, x0, x1, steps)
        return out


class VAE(_VAEBase):
    """Variational autoencoder (Kingma & Welling 2014) with an MLP encoder and decoder.

    ``z ~ N(0, I)`` (site ``"z"``, ``latent_dim``), ``x | z ~ p(x | decoder(z))`` (site ``"x"``);
    the guide is ``q(z | x) = N(encoder(x))``.  Fitted by ``method="svi"``; minibatches with
    ``subsample_size``.  The fit adds ``encode``, ``decode``, ``interpolate`` and ``iwae``, and its
    ``log_prob`` is the importance-weighted (IWAE) bound with ``iwae_particles`` samples, a
    deterministic estimate (fixed seed) of ``log p(x)`` for held-out scores and anomalies.
    With ``missing="marginalize"`` (SVI) NaN cells are missing at random: training and scores use
    the observed cells' likelihood, and ``fit.impute`` fills the rest (:meth:`impute_items`).

    Parameters
    ----------
    input_dim : int
        Features per item (e.g. 64 for 8x8 images).
    latent_dim : int
        Size of the latent code.
    hidden_dims : sequence of int, default (256,)
        Hidden layer widths of the encoder; the decoder mirrors them.
    likelihood : {"bernoulli", "continuous_bernoulli", "gaussian"}, default "bernoulli"
        ``p(x | z)``: binary pixels, values in [0, 1], or real values (learned scale per feature).
    iwae_particles : int, default 100
        Importance samples per item in ``fit.log_prob`` (``fit.iwae(x, num_particles=...)``
        chooses per call).

    Examples
    --------
    >>> import torch, probgen as pg
    >>> from probgen.models import VAE
    >>> x = (torch.rand(64, 16) > 0.5).float()
    >>> fit = pg.fit(VAE(16, 2, hidden_dims=(32,)), x, num_steps=20, subsample_size=32, progress=False)
    >>> fit.encode(x)[0].shape, fit.log_prob(x).shape
    (torch.Size([64, 2]), torch.Size([64]))
    """

    fit_class: ClassVar[type[VAEFit]] = UnlabelledVAEFit

    def __init__(
        self,
        input_dim: int,
        latent_dim: int,
        hidden_dims: Sequence[int] = (256,),
        likelihood: str = "bernoulli",
        iwae_particles: int = 100,
    ) -> None:
        super().__init__(
            likelihood, hidden_dims, input_dim=input_dim, latent_dim=latent_dim, iwae_particles=iwae_particles
        )

    def _networks(self) -> dict[str, nn.Module]:
        sizes = (self.input_dim, *self.hidden_dims, self.latent_dim)
        return {"encoder": _Gaussian(sizes), "decoder": _Decoder(sizes[::-1], self.likelihood == "gaussian")}

    def prepare_data(self, data: Any) -> Tensor:
        x = as_tensor(data, "data", dtype=_DTYPE)
        if x.dim() != 2 or x.shape[1] != self.input_dim:
            raise ValueError(
                f"data must have shape (n_items, {self.input_dim}) (input_dim={self.input_dim}); "
                f"got {tuple(x.shape)}."
            )
        self._lik.validate(x, "data")
        return x

    def prepare_missing(self, data: Any) -> Tensor:
        """As :meth:`prepare_data`, with NaN kept as the mark of a missing cell (the capability
        :class:`probgen.capabilities.MissingValues`: ``missing="marginalize"`` with SVI).

        Training then maximises the ELBO of the observed cells (a missing cell adds nothing to
        ``log p(x | z)``), the encoder reading the item with its missing cells set to zero;
        ``fit.log_prob`` is the IWAE estimate of the observed cells' marginal likelihood.

        Examples
        --------
        >>> VAE(2, 1).prepare_missing([[0.0, float("nan")], [1.0, 1.0]]).isnan().sum().item()
        1
        """
        x = as_tensor(data, "data", dtype=_DTYPE, allow_nan=True)
        if torch.isinf(x).any():
            raise ValueError(
                f"data has {int(torch.isinf(x).sum())} infinite values; NaN marks a missing cell."
            )
        if x.dim() != 2 or x.shape[1] != self.input_dim:
            raise ValueError(
                f"data must have shape (n_items, {self.input_dim}) (input_dim={self.input_dim}); "
                f"got {tuple(x.shape)}."
            )
        self._lik.validate(x, "data")
        return x

    def impute_items(
        self,
        data: Any,
        params: Mapping[str, Tensor],
        *,
        method: str = "mean",
        num_samples: int = 1,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Missing cells filled given each item's observed cells (the capability
        :class:`probgen.capabilities.Imputes`), by importance sampling of ``z``.

        ``iwae_particles`` codes ``z_k ~ q(z | x_obs)`` are weighted by ``w_k ∝ p(x_obs | z_k)
        p(z_k) / q(z_k | x_obs)`` (self-normalised: the posterior of ``z`` given the observed
        cells).  ``method="mean"``: ``sum_k w_k E[x | z_k]`` in the missing cells;
        ``method="sample"``: per copy and item a code drawn by its weight, then the missing
        cells from ``p(x | z)``.

        Returns
        -------
        Tensor
            ``(num_samples, n, input_dim)`` (one copy for ``"mean"``), observed cells unchanged.
        """
        x = data if isinstance(data, Tensor) else self.prepare_missing(data)
        gen = generator if generator is not None else torch.Generator().manual_seed(0)
        k, log_scale = self.iwae_particles, self._log_scale(params)
        copies = 1 if method == "mean" else int(num_samples)
        chunk = max(1, 20000 // k)
        parts = []
        with torch.no_grad():
            for start in range(0, len(x), chunk):
                xb = x[start : start + chunk]
                loc, scale = _call(self._nets["encoder"], params, "encoder", _encoder_input(xb))
                z = loc + scale * torch.randn((k, *loc.shape), generator=gen, dtype=loc.dtype)
                out = _call(self.decoder, params, "decoder", z)
                log_w = (
                    self._lik.log_prob(out, xb, log_scale)
                    + _normal_log_prob(z, torch.zeros_like(z), torch.ones_like(z))
                    - _normal_log_prob(z, loc, scale)
                )
                w = torch.softmax(log_w, 0)  # (k, items)
                if method == "mean":
                    fill = (w.unsqueeze(-1) * self._lik.mean(out, log_scale)).sum(0, keepdim=True)
                else:
                    pick = torch.multinomial(
                        w.T, copies, replacement=True, generator=gen
                    ).T  # (copies, items)
                    chosen = out[pick, torch.arange(len(xb))]
                    fill = self._lik.sample(chosen, log_scale, gen)
                parts.append(torch.where(torch.isnan(xb), fill, xb))
        return torch.cat(parts, 1)

    def sample_items(
        self, n: int, params: Mapping[str, Tensor], *, generator: torch.Generator | None = None, **kwargs: Any
    ) -> dict[str, Any]:
        x, z = self._generate(n, params, generator, None)
        return {"data": x, "z": z}

    # ------------------------------------------------------------------ fit helpers
    def encode(self, fit: Any, x: Any) -> tuple[Tensor, Tensor]:
        """Posterior mean and scale of ``z`` given ``x``: two ``(n, latent_dim)`` tensors."""
        with torch.no_grad():
            loc, scale = _call(self._nets["encoder"], fit.params, "encoder", _encoder_input(fit._data(x)))
        return loc, scale

    def decode(self, fit: Any, z: Any) -> Tensor:
        """Mean of ``p(x | z)`` for codes ``z`` of shape ``(n, latent_dim)``."""
        zs = as_tensor(z, "z", dtype=_DTYPE)
        if zs.dim() == 1:
            zs = zs.unsqueeze(0)
        if zs.shape[-1] != self.latent_dim:
            raise ValueError(
                f"z must have {self.latent_dim} columns (latent_dim); got shape {tuple(zs.shape)}."
            )
        return self._decoded_mean(fit.params, zs, None)

    def interpolate(self, fit: Any, x0: Any, x1: Any, steps: int = 8) -> Tensor:
        """Decoded means along the straight line between the codes of ``x0`` and ``x1``: ``(steps, input_dim)``."""
        _check_dims(steps=steps)
        z0 = self.encode(fit, torch.as_tensor(np.asarray(x0), dtype=_DTYPE).reshape(1, -1))[0]
        z1 = self.encode(fit, torch.as_tensor(np.asarray(x1), dtype=_DTYPE).reshape(1, -1))[0]
        t = torch.linspace(0.0, 1.0, int(steps), dtype=_DTYPE).unsqueeze(-1)
        return self.decode(fit, (1 - t) * z0 + t * z1)


class _M2Objective:
    """M2's negative ELBO plus the classification term, the class summed out exactly.

    For a labelled row, ``-[E_q log p(x | y, z) + log p(y) - KL(q(z | x, y) || p(z))] -
    alpha log q(y | x)``; for an unlabelled row, ``-sum_y q(y | x) [...] - H(q(y | x))``.
    Minibatches: when the labelled rows are no more than a minibatch, every step scores all of
    them exactly and the minibatch's unlabelled rows scaled up to all unlabelled rows (stratified,
    unbiased); otherwise both are scaled as Pyro's subsampled plate scales them.
    """

    def __init__(self, m2: SemiSupervisedVAE, data: tuple[Tensor, Tensor]) -> None:
        self.m2 = m2
        self.nets = m2._fresh_networks()
        self.x, self.y = data
        self.n = len(self.x)
        self.labelled = torch.nonzero(self.y >= 0).reshape(-1)
        self.alpha = m2._alpha(self.n)

    def parameters(self) -> list[Tensor]:
        return [p for mod in self.nets.values() for p in mod.parameters()]

    def _labelled_loss(self, x: Tensor, y: Tensor, num_particles: int) -> Tensor:
        m2 = self.m2
        y1h = _one_hot(y, m2.n_classes)
        loc, scale = self.nets["encoder_z"](torch.cat([x, y1h], -1))
        rec = m2._reconstruction(x, y1h, loc, scale, num_particles)
        log_q = self.nets["encoder_y"](x).log_softmax(-1).gather(-1, y.unsqueeze(-1)).squeeze(-1)
        elbo = rec - _kl_std_normal(loc, scale) - math.log(m2.n_classes)
        return -(elbo + self.alpha * log_q)

    def _unlabelled_loss(self, x: Tensor, num_particles: int) -> Tensor:
        c = self.m2.n_classes
        log_q = self.nets["encoder_y"](x).log_softmax(-1)  # (b, C)
        eye = torch.eye(c, dtype=_DTYPE).unsqueeze(1)  # (C, 1, C)
        loc, scale = self.nets["encoder_z"](_with_class(x, eye))  # (C, b, L)
        rec = self.m2._reconstruction(x, eye, loc, scale, num_particles)  # (C, b)
        elbo_y = rec - _kl_std_normal(loc, scale) - math.log(c)
        q = log_q.exp()
        return -((q * elbo_y.T).sum(-1) - (q * log_q).sum(-1))

    def loss(self, index: Tensor | None, num_particles: int) -> Tensor:
        if index is None:
            idx = torch.arange(self.n)
            lab, lab_scale = self.labelled, 1.0
        elif len(self.labelled) <= len(index):
            idx, lab, lab_scale = index, self.labelled, 1.0  # every labelled row, exactly
        else:
            idx, lab, lab_scale = index, index[self.y[index] >= 0], self.n / len(index)
        unl = idx[self.y[idx] < 0]
        total = torch.zeros((), dtype=_DTYPE)
        if len(lab):
            total = total + lab_scale * self._labelled_loss(self.x[lab], self.y[lab], num_particles).sum()
        if len(unl):
            n_unl = self.n - len(self.labelled)
            unl_scale = n_unl / len(unl) if lab_scale == 1.0 else self.n / len(idx)
            total = total + unl_scale * self._unlabelled_loss(self.x[unl], num_particles).sum()
        return total

    def params(self) -> dict[str, Tensor]:
        return self.m2._weights(self.nets)


class SemiSupervisedVAE(_LabelledVAE):
    """Semi-supervised VAE, Kingma et al. (2014) "M2": a class ``y`` and a style ``z`` per item.

    ``y ~ Categorical(1/C)`` (site ``"y"``), ``z ~ N(0, I)`` (site ``"z"``), ``x | y, z ~
    p(x | decoder(z, y))`` (site ``"x"``); the guide is ``q(y | x) q(z | x, y)``.  Data are
    ``(X, y)`` with ``y = -1`` for unlabelled rows (scikit-learn's convention), or ``X`` alone.
    Labelled rows observe ``y``; for unlabelled rows it is enumerated (``TraceEnum_ELBO`` on the
    Pyro pair, an exact sum over classes on the fast path), and labelled rows add the auxiliary
    classification term ``aux_loss_multiplier * log q(y | x)`` (default ``0.1 * n_items``, as
    in the paper).  ``fit.predict``/``fit.predict_proba`` use the classifier ``q(y | x)``;
    ``fit.log_prob`` sums the class out exactly and importance-samples ``z`` (IWAE).

    Parameters
    ----------
    n_classes : int
        Number of classes.
    latent_dim : int
        Size of the style code ``z``.
    input_dim : int
        Features per item.
    hidden_dims : sequence of int, default (256,)
        Hidden widths of each network (the decoder mirrors them).
    likelihood : {"bernoulli", "continuous_bernoulli", "gaussian"}, default "continuous_bernoulli"
    aux_loss_multiplier : float, optional
        Weight of the classification term (default ``0.1 * n_items``).
    iwae_particles : int, default 100
    """

    _encoder = "encoder_z"

    def __init__(
        self,
        n_classes: int,
        latent_dim: int,
        input_dim: int,
        hidden_dims: Sequence[int] = (256,),
        likelihood: str = "continuous_bernoulli",
        aux_loss_multiplier: float | None = None,
        iwae_particles: int = 100,
    ) -> None:
        super().__init__(
            likelihood,
            hidden_dims,
            n_classes=n_classes,
            latent_dim=latent_dim,
            input_dim=input_dim,
            iwae_particles=iwae_particles,
        )
        if aux_loss_multiplier is not None and (
            isinstance(aux_loss_multiplier, bool)
            or not isinstance(aux_loss_multiplier, int | float)
            or aux_loss_multiplier < 0
        ):
            raise ValueError(
                f"aux_loss_multiplier must be a non-negative number or None; got {aux_loss_multiplier!r}."
            )
        self.aux_loss_multiplier = None if aux_loss_multiplier is None else float(aux_loss_multiplier)

    def _networks(self) -> dict[str, nn.Module]:
        c, d, h, latent = self.n_classes, self.input_dim, self.hidden_dims, self.latent_dim
        return {
            "encoder_y": _mlp((d, *h, c)),
            "encoder_z": _Gaussian((d + c, *h, latent)),
            "decoder": _Decoder((latent + c, *reversed(h), d), self.likelihood == "gaussian"),
        }

    def _alpha(self, n: int) -> float:
        return 0.1 * n if self.aux_loss_multiplier is None else self.aux_loss_multiplier

    def _model_class(self, data: Any, idx: Tensor, n: int) -> tuple[Tensor | None, Tensor | None]:
        """``y`` sampled (generating), observed where labelled and enumerated elsewhere, with the
        auxiliary classification term on the labelled rows."""
        prior = dist.Categorical(logits=torch.zeros(idx.shape[0], self.n_classes, dtype=_DTYPE))
        if data is None:
            return None, _one_hot(pyro.sample("y", prior), self.n_classes)
        x, labels = data[0].index_select(0, idx), data[1].index_select(0, idx)
        labelled = labels >= 0
        y = pyro.sample("y", prior, obs=labels.clamp(min=0), obs_mask=labelled)
        encoder_y = self._nets["encoder_y"]
        pyro.module("encoder_y", encoder_y)
        log_q = encoder_y(x).log_softmax(-1).gather(-1, labels.clamp(min=0).unsqueeze(-1))[..., 0]
        pyro.factor("classify", self._alpha(n) * log_q * labelled)  # the auxiliary term
        return x, _one_hot(y, self.n_classes)

    def _guide_class(self, data: Any, idx: Tensor) -> tuple[Tensor, Tensor | None]:
        x, labels = data[0].index_select(0, idx), data[1].index_select(0, idx)
        labelled = labels >= 0
        with pyro.poutine.mask(mask=~labelled):
            guess = pyro.sample(
                "y_unobserved",
                dist.Categorical(logits=self._nets["encoder_y"](x)),
                infer={"enumerate": "parallel"},
            )
        return x, _one_hot(torch.where(labelled, labels.clamp(min=0), guess), self.n_classes)

    def svi_objective(self, data: Any) -> _M2Objective:
        return _M2Objective(self, data)

    def prepare_data(self, data: Any) -> tuple[Tensor, Tensor]:
        if isinstance(data, tuple) and len(data) == 2:
            return self._checked(data[0], data[1], -1, " or -1 (unlabelled)", ".")
        return self._checked(data, None, -1, "", ".")

    # ------------------------------------------------------------------ scoring, latents
    def _score(self, data: Any, params: Mapping[str, Tensor], num_particles: int) -> Tensor:
        """IWAE estimate of ``log p(x)`` per item: the class summed exactly, ``z`` importance-sampled."""
        eye = torch.eye(self.n_classes, dtype=_DTYPE).unsqueeze(1)
        return self._iwae(data[0], eye, params, num_particles, classes=self.n_classes)

    def latent_posterior(self, data: Any, params: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """The classifier ``q(y | x)``, per item: ``{"y": (n, n_classes)}``."""
        with torch.no_grad():
            return {"y": _call(self._nets["encoder_y"], params, "encoder_y", data[0]).softmax(-1)}

    def latent_map(self, data: Any, params: Mapping[str, Tensor]) -> dict[str, Tensor]:
        return {"y": self.latent_posterior(data, params)["y"].argmax(-1)}

    def sample_items(
        self, n: int, params: Mapping[str, Tensor], *, generator: torch.Generator | None = None, **kwargs: Any
    ) -> dict[str, Any]:
        y = torch.randint(self.n_classes, (n,), generator=generator)
        x, _ = self._generate(n, params, generator, _one_hot(y, self.n_classes))
        return {"data": x, "y": y}

    def encode(self, fit: Any, x: Any, y: Any = None) -> tuple[Tensor, Tensor]:
        """Posterior mean and scale of ``z`` given ``x`` and class ``y`` (default: the predicted class)."""
        xs = self.prepare_data(x)[0]
        ys = (
            self.latent_map((xs, None), fit.params)["y"]
            if y is None
            else torch.as_tensor(y).long().reshape(-1)
        )
        with torch.no_grad():
            y1h = _one_hot(ys.expand(len(xs)), self.n_classes)
            return _call(self._nets["encoder_z"], fit.params, "encoder_z", torch.cat([xs, y1h], -1))


class ConditionalVAE(_LabelledVAE):
    """Conditional VAE (Sohn et al. 2015): ``p(x | y, z)`` and ``q(z | x, y)`` for a given class ``y``.

    ``z ~ N(0, I)`` (site ``"z"``), ``x | y, z ~ p(x | decoder(z, y))`` (site ``"x"``); the class is
    an input, not a random variable.  Data are ``(X, y)`` with a label for every row (integers in
    ``0..n_classes-1``).  ``fit.sample(n, y=c)`` draws items of class ``c`` (default: classes
    uniformly at random); ``fit.log_prob`` is the IWAE estimate of ``log p(x | y)``.

    Parameters
    ----------
    n_classes, latent_dim, input_dim : int
    hidden_dims : sequence of int, default (256,)
    likelihood : {"bernoulli", "continuous_bernoulli", "gaussian"}, default "bernoulli"
    iwae_particles : int, default 100
    """

    def __init__(
        self,
        n_classes: int,
        latent_dim: int,
        input_dim: int,
        hidden_dims: Sequence[int] = (256,),
        likelihood: str = "bernoulli",
        iwae_particles: int = 100,
    ) -> None:
        super().__init__(
            likelihood,
            hidden_dims,
            n_classes=n_classes,
            latent_dim=latent_dim,
            input_dim=input_dim,
            iwae_particles=iwae_particles,
        )

    def _networks(self) -> dict[str, nn.Module]:
        c, d, h, latent = self.n_classes, self.input_dim, self.hidden_dims, self.latent_dim
        return {
            "encoder": _Gaussian((d + c, *h, latent)),
            "decoder": _Decoder((latent + c, *reversed(h), d), self.likelihood == "gaussian"),
        }

    def _model_class(self, data: Any, idx: Tensor, n: int) -> tuple[Tensor | None, Tensor | None]:
        if data is None:
            return None, _one_hot(torch.zeros(idx.shape[0], dtype=torch.long), self.n_classes)
        return data[0].index_select(0, idx), _one_hot(data[1].index_select(0, idx), self.n_classes)

    def _guide_class(self, data: Any, idx: Tensor) -> tuple[Tensor, Tensor | None]:
        return data[0].index_select(0, idx), _one_hot(data[1].index_select(0, idx), self.n_classes)

    def _given_condition(self, data: Any) -> tuple[Tensor, Tensor | None]:
        return data[0], _one_hot(data[1], self.n_classes)

    def prepare_data(self, data: Any) -> tuple[Tensor, Tensor]:
        if not (isinstance(data, tuple) and len(data) == 2):
            raise TypeError(
                f"{self.name} takes data as a tuple (X, y) with a class label for every row; "
                f"got {type(data).__name__}."
            )
        return self._checked(data[0], data[1], 0, "", "; a ConditionalVAE needs every label.")

    def _score(self, data: Any, params: Mapping[str, Tensor], num_particles: int) -> Tensor:
        """IWAE estimate of ``log p(x | y)`` per item (fixed seed)."""
        return self._iwae(data[0], _one_hot(data[1], self.n_classes), params, num_particles)

    def sample_items(
        self,
        n: int,
        params: Mapping[str, Tensor],
        *,
        generator: torch.Generator | None = None,
        y: Any = None,
        **kwargs: Any,
    ) -> dict[str, Any]:
        """``n`` items of class ``y`` (an int, or one label per item; default: uniform classes)."""
        if y is None:
            ys = torch.randint(self.n_classes, (n,), generator=generator)
        else:
            ys = self._classes(y, n)
            if bool(((ys < 0) | (ys >= self.n_classes)).any()):
                raise ValueError(f"y must hold class labels in 0..{self.n_classes - 1}; got {y!r}.")
        x, _ = self._generate(n, params, generator, _one_hot(ys, self.n_classes))
        return {"data": x, "y": ys}

    def encode(self, fit: Any, x: Any, y: Any) -> tuple[Tensor, Tensor]:
        """Posterior mean and scale of ``z`` given ``x`` and its class ``y`` (one or one per row)."""
        xs = as_tensor(x, "x", dtype=_DTYPE).reshape(-1, self.input_dim)
        xs, ys = self.prepare_data((xs, self._classes(y, len(xs))))
        with torch.no_grad():
            return _call(
                self._nets["encoder"],
                fit.params,
                "encoder",
                torch.cat([xs, _one_hot(ys, self.n_classes)], -1),
            )

    def iwae(self, fit: Any, data: Any = None, num_particles: int | None = None) -> Tensor:
        """IWAE estimate of ``log p(x | y)`` for ``data = (X, y)`` with ``num_particles`` samples."""
        return super().iwae(fit, data, num_particles)
