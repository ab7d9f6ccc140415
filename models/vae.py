"""Variational autoencoders: ``VAE`` and the semi-supervised ``SemiSupervisedVAE`` (Kingma et al. 2014, M2).

Both are Pyro model/guide pairs written as Pyro's VAE tutorials write them: the encoder and
decoder are ``torch.nn`` modules registered with ``pyro.module``, the data plate ``"data"`` takes
``subsample_size`` for minibatches, and the latent code ``"z"`` is local to each item (amortised by
the encoder).  Each also offers the SVI fast path (:meth:`GenerativeModel.svi_objective`): the same
ELBO with its KL term in closed form, in one plain PyTorch loop, so an epoch costs what a
hand-written PyTorch training loop costs.  Every weight lives in ``fit.params`` under its Pyro
param-store name (``"encoder$$$0.weight"``, ...), so ``Fit.save``/``probgen.load`` round-trip
them with no pickle; the fit's helpers evaluate the networks on those weights
(``torch.func.functional_call``), never on whatever the model object holds.

Sample sites: ``"z"`` (latent code, ``latent_dim``), ``"x"`` (the data), and for the
semi-supervised model ``"y"`` (the class: observed for labelled rows, enumerated otherwise).
Computation is in float32.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from probgen.model import GenerativeModel, as_tensor

__all__ = ["VAE", "ConditionalVAE", "SemiSupervisedVAE"]

_LIKELIHOODS = ("bernoulli", "continuous_bernoulli", "gaussian")
_DTYPE = torch.float32
_SEP = "$$$"  # Pyro's separator between a module's name and its parameters' names


def _mlp(sizes: Sequence[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layers.append(nn.Linear(a, b, dtype=_DTYPE))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class _Gaussian(nn.Module):
    """``x -> (loc, scale)`` of a diagonal Gaussian: an MLP, scale through softplus."""

    def __init__(self, sizes: Sequence[int]) -> None:
        super().__init__()
        self.net = _mlp(list(sizes[:-1]) + [2 * sizes[-1]])

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        loc, raw = self.net(x).chunk(2, -1)
        return loc, F.softplus(raw) + 1e-4


class _Decoder(nn.Module):
    """``z -> `` parameters of ``p(x | z)``: logits, or a mean with a learned scale per feature."""

    def __init__(self, sizes: Sequence[int], gaussian: bool) -> None:
        super().__init__()
        self.net = _mlp(sizes)
        if gaussian:
            self.log_scale = nn.Parameter(torch.zeros(sizes[-1], dtype=_DTYPE))

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z)


def _check_dims(**dims: Any) -> None:
    for name, v in dims.items():
        if isinstance(v, bool) or not isinstance(v, int | np.integer) or v < 1:
            raise ValueError(f"{name} must be a positive int; got {v!r}.")


def _check_hidden(hidden_dims: Any) -> tuple[int, ...]:
    try:
        hidden = tuple(hidden_dims)
    except TypeError:
        raise ValueError(f"hidden_dims must be a sequence of positive ints; got {hidden_dims!r}.") from None
    for h in hidden:
        _check_dims(hidden_dims=h)
    return tuple(int(h) for h in hidden)


def _split(params: Mapping[str, Tensor], module: str) -> dict[str, Tensor]:
    prefix = module + _SEP
    return {k[len(prefix) :]: v for k, v in params.items() if k.startswith(prefix)}


def _call(module: nn.Module, params: Mapping[str, Tensor], name: str, *args: Any) -> Any:
    """Run ``module`` on the weights ``params[name$$$...]`` (the fit's, not the object's)."""
    return torch.func.functional_call(module, _split(params, name), args)


class _Likelihood:
    """``p(x | decoder output)`` for one of the three likelihoods, as fast torch expressions."""

    def __init__(self, kind: str) -> None:
        self.kind = kind

    def dist(self, out: Tensor, log_scale: Tensor | None) -> Any:
        if self.kind == "bernoulli":
            return dist.Bernoulli(logits=out).to_event(1)
        if self.kind == "continuous_bernoulli":
            return dist.ContinuousBernoulli(logits=out).to_event(1)
        assert log_scale is not None
        return dist.Normal(out, log_scale.exp()).to_event(1)

    def log_prob(self, out: Tensor, x: Tensor, log_scale: Tensor | None) -> Tensor:
        """``log p(x | out)`` summed over features (the same numbers as :meth:`dist`)."""
        if self.kind == "bernoulli":
            return -F.binary_cross_entropy_with_logits(out, x.expand_as(out), reduction="none").sum(-1)
        if self.kind == "continuous_bernoulli":
            return (
                torch.distributions.ContinuousBernoulli(logits=out, validate_args=False).log_prob(x).sum(-1)
            )
        assert log_scale is not None
        return (-0.5 * ((x - out) / log_scale.exp()) ** 2 - log_scale - 0.5 * math.log(2 * math.pi)).sum(-1)

    def mean(self, out: Tensor, log_scale: Tensor | None) -> Tensor:
        if self.kind == "bernoulli":
            return torch.sigmoid(out)
        if self.kind == "continuous_bernoulli":
            return torch.distributions.ContinuousBernoulli(logits=out, validate_args=False).mean
        return out

    def sample(self, out: Tensor, log_scale: Tensor | None, generator: torch.Generator | None) -> Tensor:
        if self.kind == "bernoulli":
            return torch.bernoulli(torch.sigmoid(out), generator=generator)
        if self.kind == "continuous_bernoulli":
            return torch.distributions.ContinuousBernoulli(logits=out, validate_args=False).sample()
        assert log_scale is not None
        return out + log_scale.exp() * torch.randn(out.shape, generator=generator, dtype=out.dtype)

    def validate(self, x: Tensor, argname: str) -> None:
        if self.kind == "bernoulli":
            bad = (x != 0) & (x != 1)
            if bad.any():
                raise ValueError(
                    f"{argname} holds {int(bad.sum())} values other than 0 and 1 (e.g. {float(x[bad][0])!r}), "
                    "but likelihood='bernoulli' observes binary pixels; binarise the data (x > 0.5) or use "
                    "likelihood='continuous_bernoulli' for values in [0, 1]."
                )
        elif self.kind == "continuous_bernoulli":
            bad = (x < 0) | (x > 1)
            if bad.any():
                raise ValueError(
                    f"{argname} holds {int(bad.sum())} values outside [0, 1] (e.g. {float(x[bad][0])!r}), "
                    "but likelihood='continuous_bernoulli' observes values in [0, 1]; rescale the data "
                    "or use likelihood='gaussian'."
                )


def _kl_std_normal(loc: Tensor, scale: Tensor) -> Tensor:
    """``KL(N(loc, scale) || N(0, 1))`` summed over the last axis."""
    return (0.5 * (loc**2 + scale**2 - 1.0) - scale.log()).sum(-1)


def _normal_log_prob(z: Tensor, loc: Tensor, scale: Tensor) -> Tensor:
    return (-0.5 * ((z - loc) / scale) ** 2 - scale.log() - 0.5 * math.log(2 * math.pi)).sum(-1)


class _VAEObjective:
    """The VAE's negative ELBO with the KL in closed form (see ``GenerativeModel.svi_objective``)."""

    def __init__(self, vae: VAE, data: Tensor) -> None:
        vae._build()  # fresh weights from the fit's seeded generator
        pyro.module("encoder", vae.encoder)
        pyro.module("decoder", vae.decoder)
        self.vae, self.data = vae, data
        self.n = len(data)

    def parameters(self) -> list[Tensor]:
        return [*self.vae.encoder.parameters(), *self.vae.decoder.parameters()]

    def loss(self, index: Tensor | None, num_particles: int) -> Tensor:
        x = self.data if index is None else self.data.index_select(0, index)
        loc, scale = self.vae.encoder(x)
        shape = (num_particles,) + tuple(loc.shape) if num_particles > 1 else tuple(loc.shape)
        z = loc + scale * torch.randn(shape, dtype=loc.dtype)
        out = self.vae.decoder(z)
        rec = self.vae._lik.log_prob(out, x, getattr(self.vae.decoder, "log_scale", None))
        if num_particles > 1:
            rec = rec.mean(0)
        return (self.n / len(x)) * (_kl_std_normal(loc, scale) - rec).sum()

    def params(self) -> dict[str, Tensor]:
        return {
            f"{name}{_SEP}{k}": v.detach().clone()
            for name, mod in (("encoder", self.vae.encoder), ("decoder", self.vae.decoder))
            for k, v in mod.named_parameters()
        }


class _VAEDefaults:
    """The SVI defaults every VAE family shares (see ``GenerativeModel.svi_defaults``)."""

    def svi_defaults(self, data: Any) -> dict[str, Any]:
        """Minibatches of 128 items (all of them when fewer) and Adam at ``lr=1e-3``, the usual VAE setting."""
        return {"subsample_size": min(128, self.num_items(data)), "lr": 1e-3}  # type: ignore[attr-defined]


class VAE(_VAEDefaults, GenerativeModel):
    """Variational autoencoder (Kingma & Welling 2014) with an MLP encoder and decoder.

    ``z ~ N(0, I)`` (site ``"z"``, ``latent_dim``), ``x | z ~ p(x | decoder(z))`` (site ``"x"``);
    the guide is ``q(z | x) = N(encoder(x))``.  Fitted by ``method="svi"``; minibatches with
    ``subsample_size``.  The fit adds ``encode``, ``decode``, ``interpolate`` and ``iwae``, and its
    ``log_prob`` is the importance-weighted (IWAE) bound with ``iwae_particles`` samples, a
    deterministic estimate (fixed seed) of ``log p(x)`` for held-out scores and anomalies.

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

    data_plate_name = "data"
    dtype = _DTYPE
    fit_helpers = ("encode", "decode", "interpolate", "iwae")

    def __init__(
        self,
        input_dim: int,
        latent_dim: int,
        hidden_dims: Sequence[int] = (256,),
        likelihood: str = "bernoulli",
        iwae_particles: int = 100,
    ) -> None:
        _check_dims(input_dim=input_dim, latent_dim=latent_dim, iwae_particles=iwae_particles)
        if likelihood not in _LIKELIHOODS:
            raise ValueError(
                f"likelihood={likelihood!r} is not known; expected one of: {', '.join(_LIKELIHOODS)}."
            )
        self.input_dim, self.latent_dim = int(input_dim), int(latent_dim)
        self.hidden_dims = _check_hidden(hidden_dims)
        self.likelihood = likelihood
        self.iwae_particles = int(iwae_particles)
        self._lik = _Likelihood(likelihood)
        self._build()

    def _build(self) -> None:
        self.encoder = _Gaussian((self.input_dim, *self.hidden_dims, self.latent_dim))
        self.decoder = _Decoder(
            (self.latent_dim, *reversed(self.hidden_dims), self.input_dim), self.likelihood == "gaussian"
        )

    # ------------------------------------------------------------------ Pyro pair
    def model(self, data: Tensor | None = None, subsample_size: int | None = None) -> Tensor:
        pyro.module("decoder", self.decoder)
        n = 1 if data is None else data.shape[0]
        with pyro.plate("data", n, subsample_size=subsample_size) as plate_idx:
            idx: Tensor = plate_idx  # type: ignore[assignment]
            x = None if data is None else data.index_select(0, idx)
            prior = dist.Normal(torch.zeros(idx.shape[0], self.latent_dim, dtype=_DTYPE), 1.0).to_event(1)
            z = pyro.sample("z", prior)
            likelihood = self._lik.dist(self.decoder(z), getattr(self.decoder, "log_scale", None))
            return pyro.sample("x", likelihood, obs=x)

    def guide(self, data: Tensor | None = None, subsample_size: int | None = None) -> None:
        pyro.module("encoder", self.encoder)
        if data is None:
            return
        with pyro.plate("data", data.shape[0], subsample_size=subsample_size) as plate_idx:
            idx: Tensor = plate_idx  # type: ignore[assignment]
            loc, scale = self.encoder(data.index_select(0, idx))
            pyro.sample("z", dist.Normal(loc, scale).to_event(1))

    def roles(self, data: Any) -> Any:
        # tracing registers the networks with pyro.module: keep the user's param store untouched
        with pyro.get_param_store().scope():
            return super().roles(data)

    def svi_objective(self, data: Any) -> _VAEObjective:
        return _VAEObjective(self, data)

    # ------------------------------------------------------------------ data
    def prepare_data(self, data: Any) -> Tensor:
        x = as_tensor(data, "data", dtype=_DTYPE)
        if x.dim() != 2 or x.shape[1] != self.input_dim:
            raise ValueError(
                f"data must have shape (n_items, {self.input_dim}) (input_dim={self.input_dim}); "
                f"got {tuple(x.shape)}."
            )
        self._lik.validate(x, "data")
        return x

    def get_config(self) -> dict[str, Any]:
        return {
            "input_dim": self.input_dim,
            "latent_dim": self.latent_dim,
            "hidden_dims": list(self.hidden_dims),
            "likelihood": self.likelihood,
            "iwae_particles": self.iwae_particles,
        }

    def num_parameters(self, params: Mapping[str, Tensor], data: Any) -> int:
        return int(sum(v.numel() for k, v in params.items() if k.startswith("decoder" + _SEP)))

    # ------------------------------------------------------------------ scoring
    def _iwae(self, x: Tensor, params: Mapping[str, Tensor], num_particles: int) -> Tensor:
        log_scale = params.get(f"decoder{_SEP}log_scale")
        out_rows = []
        gen = torch.Generator().manual_seed(0)
        chunk = max(1, 20000 // num_particles)
        with torch.no_grad():
            for start in range(0, len(x), chunk):
                xb = x[start : start + chunk]
                loc, scale = _call(self.encoder, params, "encoder", xb)
                eps = torch.randn((num_particles,) + tuple(loc.shape), generator=gen, dtype=loc.dtype)
                z = loc + scale * eps
                out = _call(self.decoder, params, "decoder", z)
                log_w = (
                    self._lik.log_prob(out, xb, log_scale)
                    + _normal_log_prob(z, torch.zeros_like(z), torch.ones_like(z))
                    - _normal_log_prob(z, loc, scale)
                )
                out_rows.append(torch.logsumexp(log_w, 0) - math.log(num_particles))
        return torch.cat(out_rows)

    def log_prob_items(self, data: Any, params: Mapping[str, Tensor]) -> Tensor:
        """IWAE estimate of ``log p(x)`` per item, with ``iwae_particles`` samples (fixed seed)."""
        return self._iwae(data, params, self.iwae_particles)

    def sample_items(
        self, n: int, params: Mapping[str, Tensor], *, generator: torch.Generator | None = None, **kwargs: Any
    ) -> dict[str, Any]:
        with torch.no_grad():
            z = torch.randn(n, self.latent_dim, generator=generator, dtype=_DTYPE)
            out = _call(self.decoder, params, "decoder", z)
            x = self._lik.sample(out, params.get(f"decoder{_SEP}log_scale"), generator)
        return {"data": x, "z": z}

    # ------------------------------------------------------------------ fit helpers
    def encode(self, fit: Any, x: Any) -> tuple[Tensor, Tensor]:
        """Posterior mean and scale of ``z`` given ``x``: two ``(n, latent_dim)`` tensors."""
        xs = fit._data(x)
        with torch.no_grad():
            loc, scale = _call(self.encoder, fit.params, "encoder", xs)
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
        with torch.no_grad():
            out = _call(self.decoder, fit.params, "decoder", zs)
            return self._lik.mean(out, fit.params.get(f"decoder{_SEP}log_scale"))

    def interpolate(self, fit: Any, x0: Any, x1: Any, steps: int = 8) -> Tensor:
        """Decoded means along the straight line between the codes of ``x0`` and ``x1``: ``(steps, input_dim)``."""
        _check_dims(steps=steps)
        z0 = self.encode(fit, torch.as_tensor(np.asarray(x0), dtype=_DTYPE).reshape(1, -1))[0]
        z1 = self.encode(fit, torch.as_tensor(np.asarray(x1), dtype=_DTYPE).reshape(1, -1))[0]
        t = torch.linspace(0.0, 1.0, int(steps), dtype=_DTYPE).unsqueeze(-1)
        return self.decode(fit, (1 - t) * z0 + t * z1)

    def iwae(self, fit: Any, x: Any = None, num_particles: int | None = None) -> Tensor:
        """IWAE estimate of ``log p(x)`` per item with ``num_particles`` samples (default ``iwae_particles``)."""
        k = self.iwae_particles if num_particles is None else num_particles
        _check_dims(num_particles=k)
        return self._iwae(fit._data(x), fit.params, int(k))

    def __repr__(self) -> str:
        return (
            f"VAE(input_dim={self.input_dim}, latent_dim={self.latent_dim}, hidden_dims={self.hidden_dims}, "
            f"likelihood={self.likelihood!r})"
        )


def _one_hot(y: Tensor, n_classes: int) -> Tensor:
    return F.one_hot(y, n_classes).to(_DTYPE)


def _with_class(a: Tensor, y1h: Tensor) -> Tensor:
    """``cat([a, one_hot(y)], -1)``, broadcasting ``a`` over enumerated classes."""
    shape = torch.broadcast_shapes(a.shape[:-1], y1h.shape[:-1])
    return torch.cat([a.expand(shape + a.shape[-1:]), y1h.expand(shape + y1h.shape[-1:])], -1)


class _M2Objective:
    """M2's negative ELBO plus the classification term, the class summed out exactly.

    For a labelled row, ``-[E_q log p(x | y, z) + log p(y) - KL(q(z | x, y) || p(z))] -
    alpha log q(y | x)``; for an unlabelled row, ``-sum_y q(y | x) [...] - H(q(y | x))``.
    Minibatches: when the labelled rows are no more than a minibatch, every step scores all of
    them exactly and the minibatch's unlabelled rows scaled up to all unlabelled rows (stratified,
    unbiased); otherwise both are scaled as Pyro's subsampled plate scales them.
    """

    def __init__(self, m2: SemiSupervisedVAE, data: tuple[Tensor, Tensor]) -> None:
        m2._build()
        for name, mod in m2._modules().items():
            pyro.module(name, mod)
        self.m2 = m2
        self.x, self.y = data
        self.n = len(self.x)
        self.labelled = torch.nonzero(self.y >= 0).reshape(-1)
        self.alpha = m2._alpha(self.n)

    def parameters(self) -> list[Tensor]:
        return [p for mod in self.m2._modules().values() for p in mod.parameters()]

    def _labelled_loss(self, x: Tensor, y: Tensor, num_particles: int) -> Tensor:
        m2 = self.m2
        y1h = _one_hot(y, m2.n_classes)
        loc, scale = m2.encoder_z(torch.cat([x, y1h], -1))
        rec = m2._reconstruction(x, y1h, loc, scale, num_particles)
        logits = m2.encoder_y(x)
        log_q = logits.log_softmax(-1).gather(-1, y.unsqueeze(-1)).squeeze(-1)
        elbo = rec - _kl_std_normal(loc, scale) - math.log(m2.n_classes)
        return -(elbo + self.alpha * log_q)

    def _unlabelled_loss(self, x: Tensor, num_particles: int) -> Tensor:
        m2 = self.m2
        c = m2.n_classes
        log_q = m2.encoder_y(x).log_softmax(-1)  # (b, C)
        eye = torch.eye(c, dtype=_DTYPE).unsqueeze(1)  # (C, 1, C)
        loc, scale = m2.encoder_z(_with_class(x, eye))  # (C, b, L)
        rec = m2._reconstruction(x, eye, loc, scale, num_particles)  # (C, b)
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
        return {
            f"{name}{_SEP}{k}": v.detach().clone()
            for name, mod in self.m2._modules().items()
            for k, v in mod.named_parameters()
        }


class _LabelledData:
    """Data as ``(X, y)``: items, observed values, and saving, shared by the labelled VAEs."""

    def num_items(self, data: Any) -> int:
        return len(data[0])

    def observed_arrays(self, data: Any) -> dict[str, Tensor]:
        return {"x": data[0]}

    def data_to_arrays(self, data: Any) -> dict[str, Tensor]:
        return {"X": data[0], "y": data[1]}

    def data_from_arrays(self, arrays: Mapping[str, Tensor]) -> Any:
        return (arrays["X"].to(_DTYPE), arrays["y"].long()) if "X" in arrays else None


class SemiSupervisedVAE(_LabelledData, _VAEDefaults, GenerativeModel):
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

    data_plate_name = "data"
    dtype = _DTYPE
    fit_helpers = ("encode", "decode", "iwae")

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
        _check_dims(
            n_classes=n_classes, latent_dim=latent_dim, input_dim=input_dim, iwae_particles=iwae_particles
        )
        if n_classes < 2:
            raise ValueError(f"n_classes must be at least 2; got {n_classes!r}.")
        if likelihood not in _LIKELIHOODS:
            raise ValueError(
                f"likelihood={likelihood!r} is not known; expected one of: {', '.join(_LIKELIHOODS)}."
            )
        if aux_loss_multiplier is not None and (
            isinstance(aux_loss_multiplier, bool)
            or not isinstance(aux_loss_multiplier, int | float)
            or aux_loss_multiplier < 0
        ):
            raise ValueError(
                f"aux_loss_multiplier must be a non-negative number or None; got {aux_loss_multiplier!r}."
            )
        self.n_classes, self.latent_dim, self.input_dim = int(n_classes), int(latent_dim), int(input_dim)
        self.hidden_dims = _check_hidden(hidden_dims)
        self.likelihood = likelihood
        self.aux_loss_multiplier = None if aux_loss_multiplier is None else float(aux_loss_multiplier)
        self.iwae_particles = int(iwae_particles)
        self._lik = _Likelihood(likelihood)
        self._build()

    def _build(self) -> None:
        c, d, h, latent = self.n_classes, self.input_dim, self.hidden_dims, self.latent_dim
        self.encoder_y = _mlp((d, *h, c))
        self.encoder_z = _Gaussian((d + c, *h, latent))
        self.decoder = _Decoder((latent + c, *reversed(h), d), self.likelihood == "gaussian")

    def _modules(self) -> dict[str, nn.Module]:
        return {"encoder_y": self.encoder_y, "encoder_z": self.encoder_z, "decoder": self.decoder}

    def _alpha(self, n: int) -> float:
        return 0.1 * n if self.aux_loss_multiplier is None else self.aux_loss_multiplier

    def _reconstruction(
        self, x: Tensor, y1h: Tensor, loc: Tensor, scale: Tensor, num_particles: int
    ) -> Tensor:
        """One-sample (or ``num_particles``-mean) estimate of ``E_q log p(x | y, z)``."""
        shape = ((num_particles,) if num_particles > 1 else ()) + tuple(loc.shape)
        z = loc + scale * torch.randn(shape, dtype=loc.dtype)
        out = self.decoder(_with_class(z, y1h))
        rec = self._lik.log_prob(out, x, getattr(self.decoder, "log_scale", None))
        return rec.mean(0) if num_particles > 1 else rec

    # ------------------------------------------------------------------ Pyro pair
    def model(self, data: tuple[Tensor, Tensor] | None = None, subsample_size: int | None = None) -> Tensor:
        pyro.module("decoder", self.decoder)
        c = self.n_classes
        n = 1 if data is None else data[0].shape[0]
        with pyro.plate("data", n, subsample_size=subsample_size) as plate_idx:
            idx: Tensor = plate_idx  # type: ignore[assignment]
            b = idx.shape[0]
            z = pyro.sample("z", dist.Normal(torch.zeros(b, self.latent_dim, dtype=_DTYPE), 1.0).to_event(1))
            prior = dist.Categorical(logits=torch.zeros(b, c, dtype=_DTYPE))
            if data is None:
                y = pyro.sample("y", prior)
                x = None
            else:
                x, labels = data[0].index_select(0, idx), data[1].index_select(0, idx)
                labelled = labels >= 0
                y = pyro.sample("y", prior, obs=labels.clamp(min=0), obs_mask=labelled)  # type: ignore[arg-type]
                pyro.module("encoder_y", self.encoder_y)
                log_q = (
                    self.encoder_y(x).log_softmax(-1).gather(-1, labels.clamp(min=0).unsqueeze(-1))[..., 0]
                )
                pyro.factor("classify", self._alpha(n) * log_q * labelled)  # the auxiliary term
            out = self.decoder(_with_class(z, _one_hot(y, c)))
            likelihood = self._lik.dist(out, getattr(self.decoder, "log_scale", None))
            return pyro.sample("x", likelihood, obs=x)

    def guide(self, data: tuple[Tensor, Tensor] | None = None, subsample_size: int | None = None) -> None:
        pyro.module("encoder_y", self.encoder_y)
        pyro.module("encoder_z", self.encoder_z)
        if data is None:
            return
        with pyro.plate("data", data[0].shape[0], subsample_size=subsample_size) as plate_idx:
            idx: Tensor = plate_idx  # type: ignore[assignment]
            x, labels = data[0].index_select(0, idx), data[1].index_select(0, idx)
            labelled = labels >= 0
            with pyro.poutine.mask(mask=~labelled):  # type: ignore[call-overload]
                guess = pyro.sample(
                    "y_unobserved",
                    dist.Categorical(logits=self.encoder_y(x)),
                    infer={"enumerate": "parallel"},
                )
            y = torch.where(labelled, labels.clamp(min=0), guess)
            loc, scale = self.encoder_z(_with_class(x, _one_hot(y, self.n_classes)))
            pyro.sample("z", dist.Normal(loc, scale).to_event(1))

    def roles(self, data: Any) -> Any:
        with pyro.get_param_store().scope():
            return super().roles(data)

    def svi_objective(self, data: Any) -> _M2Objective:
        return _M2Objective(self, data)

    # ------------------------------------------------------------------ data
    def prepare_data(self, data: Any) -> tuple[Tensor, Tensor]:
        if isinstance(data, tuple) and len(data) == 2:
            x = as_tensor(data[0], "X", dtype=_DTYPE)
            y = as_tensor(data[1], "y", dtype=torch.float64)
            if y.dim() != 1 or len(y) != len(x):
                raise ValueError(
                    f"y must have shape ({len(x)},), one label per row of X; got {tuple(y.shape)}."
                )
            bad = (y != torch.round(y)) | (y < -1) | (y >= self.n_classes)
            if bad.any():
                raise ValueError(
                    f"y holds {int(bad.sum())} values that are not class labels in 0..{self.n_classes - 1} "
                    f"or -1 (unlabelled), e.g. {float(y[bad][0])!r}."
                )
            labels = y.long()
        else:
            x = as_tensor(data, "X", dtype=_DTYPE)
            labels = torch.full((len(x),), -1, dtype=torch.long)
        if x.dim() != 2 or x.shape[1] != self.input_dim:
            raise ValueError(
                f"X must have shape (n_items, {self.input_dim}) (input_dim={self.input_dim}); got {tuple(x.shape)}."
            )
        self._lik.validate(x, "X")
        return x, labels

    def get_config(self) -> dict[str, Any]:
        return {
            "n_classes": self.n_classes,
            "latent_dim": self.latent_dim,
            "input_dim": self.input_dim,
            "hidden_dims": list(self.hidden_dims),
            "likelihood": self.likelihood,
            "aux_loss_multiplier": self.aux_loss_multiplier,
            "iwae_particles": self.iwae_particles,
        }

    def num_parameters(self, params: Mapping[str, Tensor], data: Any) -> int:
        return int(sum(v.numel() for k, v in params.items() if k.startswith("decoder" + _SEP)))

    # ------------------------------------------------------------------ scoring, latents
    def _iwae(self, x: Tensor, params: Mapping[str, Tensor], num_particles: int) -> Tensor:
        c = self.n_classes
        log_scale = params.get(f"decoder{_SEP}log_scale")
        gen = torch.Generator().manual_seed(0)
        eye = torch.eye(c, dtype=_DTYPE).unsqueeze(1)
        rows = []
        chunk = max(1, 20000 // (num_particles * c))
        with torch.no_grad():
            for start in range(0, len(x), chunk):
                xb = x[start : start + chunk]
                loc, scale = _call(self.encoder_z, params, "encoder_z", _with_class(xb, eye))  # (C, b, L)
                eps = torch.randn((num_particles,) + tuple(loc.shape), generator=gen, dtype=loc.dtype)
                z = loc + scale * eps  # (K, C, b, L)
                out = _call(self.decoder, params, "decoder", _with_class(z, eye))
                log_w = (
                    self._lik.log_prob(out, xb, log_scale)
                    + _normal_log_prob(z, torch.zeros_like(z), torch.ones_like(z))
                    - _normal_log_prob(z, loc, scale)
                )
                per_class = torch.logsumexp(log_w, 0) - math.log(num_particles) - math.log(c)  # (C, b)
                rows.append(torch.logsumexp(per_class, 0))
        return torch.cat(rows)

    def log_prob_items(self, data: Any, params: Mapping[str, Tensor]) -> Tensor:
        """IWAE estimate of ``log p(x)`` per item: the class summed exactly, ``z`` importance-sampled."""
        return self._iwae(data[0], params, self.iwae_particles)

    def latent_posterior(self, data: Any, params: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """The classifier ``q(y | x)``, per item: ``{"y": (n, n_classes)}``."""
        with torch.no_grad():
            return {"y": _call(self.encoder_y, params, "encoder_y", data[0]).softmax(-1)}

    def latent_map(self, data: Any, params: Mapping[str, Tensor]) -> dict[str, Tensor]:
        return {"y": self.latent_posterior(data, params)["y"].argmax(-1)}

    def sample_items(
        self, n: int, params: Mapping[str, Tensor], *, generator: torch.Generator | None = None, **kwargs: Any
    ) -> dict[str, Any]:
        with torch.no_grad():
            y = torch.randint(self.n_classes, (n,), generator=generator)
            z = torch.randn(n, self.latent_dim, generator=generator, dtype=_DTYPE)
            out = _call(self.decoder, params, "decoder", _with_class(z, _one_hot(y, self.n_classes)))
            x = self._lik.sample(out, params.get(f"decoder{_SEP}log_scale"), generator)
        return {"data": x, "y": y}

    # ------------------------------------------------------------------ fit helpers
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
            return _call(self.encoder_z, fit.params, "encoder_z", torch.cat([xs, y1h], -1))

    def decode(self, fit: Any, z: Any, y: Any) -> Tensor:
        """Mean of ``p(x | z, y)`` for codes ``z`` ``(n, latent_dim)`` and classes ``y`` (one or ``n``)."""
        zs = as_tensor(z, "z", dtype=_DTYPE).reshape(-1, self.latent_dim)
        ys = torch.as_tensor(y).long().reshape(-1).expand(len(zs))
        with torch.no_grad():
            out = _call(self.decoder, fit.params, "decoder", _with_class(zs, _one_hot(ys, self.n_classes)))
            return self._lik.mean(out, fit.params.get(f"decoder{_SEP}log_scale"))

    def iwae(self, fit: Any, x: Any = None, num_particles: int | None = None) -> Tensor:
        """IWAE estimate of ``log p(x)`` per item with ``num_particles`` samples per class."""
        k = self.iwae_particles if num_particles is None else num_particles
        _check_dims(num_particles=k)
        return self._iwae(fit._data(x)[0], fit.params, int(k))

    def __repr__(self) -> str:
        return (
            f"SemiSupervisedVAE(n_classes={self.n_classes}, latent_dim={self.latent_dim}, "
            f"input_dim={self.input_dim}, hidden_dims={self.hidden_dims}, likelihood={self.likelihood!r})"
        )


class _CVAEObjective(_VAEObjective):
    """The conditional VAE's negative ELBO, KL in closed form."""

    def __init__(self, cvae: ConditionalVAE, data: tuple[Tensor, Tensor]) -> None:
        cvae._build()
        pyro.module("encoder", cvae.encoder)
        pyro.module("decoder", cvae.decoder)
        self.vae = cvae  # type: ignore[assignment]
        self.data, self.labels = data[0], _one_hot(data[1], cvae.n_classes)
        self.n = len(self.data)

    def loss(self, index: Tensor | None, num_particles: int) -> Tensor:
        x, y1h = (self.data, self.labels) if index is None else (self.data[index], self.labels[index])
        loc, scale = self.vae.encoder(torch.cat([x, y1h], -1))
        shape = ((num_particles,) if num_particles > 1 else ()) + tuple(loc.shape)
        z = loc + scale * torch.randn(shape, dtype=loc.dtype)
        out = self.vae.decoder(_with_class(z, y1h))
        rec = self.vae._lik.log_prob(out, x, getattr(self.vae.decoder, "log_scale", None))
        if num_particles > 1:
            rec = rec.mean(0)
        return (self.n / len(x)) * (_kl_std_normal(loc, scale) - rec).sum()


class ConditionalVAE(_LabelledData, _VAEDefaults, GenerativeModel):
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

    data_plate_name = "data"
    dtype = _DTYPE
    fit_helpers = ("encode", "decode", "iwae")

    def __init__(
        self,
        n_classes: int,
        latent_dim: int,
        input_dim: int,
        hidden_dims: Sequence[int] = (256,),
        likelihood: str = "bernoulli",
        iwae_particles: int = 100,
    ) -> None:
        _check_dims(
            n_classes=n_classes, latent_dim=latent_dim, input_dim=input_dim, iwae_particles=iwae_particles
        )
        if likelihood not in _LIKELIHOODS:
            raise ValueError(
                f"likelihood={likelihood!r} is not known; expected one of: {', '.join(_LIKELIHOODS)}."
            )
        self.n_classes, self.latent_dim, self.input_dim = int(n_classes), int(latent_dim), int(input_dim)
        self.hidden_dims = _check_hidden(hidden_dims)
        self.likelihood = likelihood
        self.iwae_particles = int(iwae_particles)
        self._lik = _Likelihood(likelihood)
        self._build()

    def _build(self) -> None:
        c, d, h, latent = self.n_classes, self.input_dim, self.hidden_dims, self.latent_dim
        self.encoder = _Gaussian((d + c, *h, latent))
        self.decoder = _Decoder((latent + c, *reversed(h), d), self.likelihood == "gaussian")

    # ------------------------------------------------------------------ Pyro pair
    def model(self, data: tuple[Tensor, Tensor] | None = None, subsample_size: int | None = None) -> Tensor:
        pyro.module("decoder", self.decoder)
        n = 1 if data is None else data[0].shape[0]
        with pyro.plate("data", n, subsample_size=subsample_size) as plate_idx:
            idx: Tensor = plate_idx  # type: ignore[assignment]
            b = idx.shape[0]
            z = pyro.sample("z", dist.Normal(torch.zeros(b, self.latent_dim, dtype=_DTYPE), 1.0).to_event(1))
            if data is None:
                x, y = None, torch.zeros(b, dtype=torch.long)
            else:
                x, y = data[0].index_select(0, idx), data[1].index_select(0, idx)
            out = self.decoder(_with_class(z, _one_hot(y, self.n_classes)))
            likelihood = self._lik.dist(out, getattr(self.decoder, "log_scale", None))
            return pyro.sample("x", likelihood, obs=x)

    def guide(self, data: tuple[Tensor, Tensor] | None = None, subsample_size: int | None = None) -> None:
        pyro.module("encoder", self.encoder)
        if data is None:
            return
        with pyro.plate("data", data[0].shape[0], subsample_size=subsample_size) as plate_idx:
            idx: Tensor = plate_idx  # type: ignore[assignment]
            x, y = data[0].index_select(0, idx), data[1].index_select(0, idx)
            loc, scale = self.encoder(torch.cat([x, _one_hot(y, self.n_classes)], -1))
            pyro.sample("z", dist.Normal(loc, scale).to_event(1))

    def roles(self, data: Any) -> Any:
        with pyro.get_param_store().scope():
            return super().roles(data)

    def svi_objective(self, data: Any) -> _CVAEObjective:
        return _CVAEObjective(self, data)

    # ------------------------------------------------------------------ data
    def prepare_data(self, data: Any) -> tuple[Tensor, Tensor]:
        if not (isinstance(data, tuple) and len(data) == 2):
            raise TypeError(
                f"{self.name} takes data as a tuple (X, y) with a class label for every row; "
                f"got {type(data).__name__}."
            )
        x = as_tensor(data[0], "X", dtype=_DTYPE)
        y = as_tensor(data[1], "y", dtype=torch.float64)
        if x.dim() != 2 or x.shape[1] != self.input_dim:
            raise ValueError(
                f"X must have shape (n_items, {self.input_dim}) (input_dim={self.input_dim}); got {tuple(x.shape)}."
            )
        if y.dim() != 1 or len(y) != len(x):
            raise ValueError(f"y must have shape ({len(x)},), one label per row of X; got {tuple(y.shape)}.")
        bad = (y != torch.round(y)) | (y < 0) | (y >= self.n_classes)
        if bad.any():
            raise ValueError(
                f"y holds {int(bad.sum())} values that are not class labels in 0..{self.n_classes - 1}, "
                f"e.g. {float(y[bad][0])!r}; a ConditionalVAE needs every label."
            )
        self._lik.validate(x, "X")
        return x, y.long()

    def get_config(self) -> dict[str, Any]:
        return {
            "n_classes": self.n_classes,
            "latent_dim": self.latent_dim,
            "input_dim": self.input_dim,
            "hidden_dims": list(self.hidden_dims),
            "likelihood": self.likelihood,
            "iwae_particles": self.iwae_particles,
        }

    def num_parameters(self, params: Mapping[str, Tensor], data: Any) -> int:
        return int(sum(v.numel() for k, v in params.items() if k.startswith("decoder" + _SEP)))

    # ------------------------------------------------------------------ scoring
    def _iwae(self, data: tuple[Tensor, Tensor], params: Mapping[str, Tensor], num_particles: int) -> Tensor:
        x, y1h = data[0], _one_hot(data[1], self.n_classes)
        log_scale = params.get(f"decoder{_SEP}log_scale")
        gen = torch.Generator().manual_seed(0)
        rows = []
        chunk = max(1, 20000 // num_particles)
        with torch.no_grad():
            for start in range(0, len(x), chunk):
                xb, yb = x[start : start + chunk], y1h[start : start + chunk]
                loc, scale = _call(self.encoder, params, "encoder", torch.cat([xb, yb], -1))
                z = loc + scale * torch.randn(
                    (num_particles,) + tuple(loc.shape), generator=gen, dtype=loc.dtype
                )
                out = _call(self.decoder, params, "decoder", _with_class(z, yb))
                log_w = (
                    self._lik.log_prob(out, xb, log_scale)
                    + _normal_log_prob(z, torch.zeros_like(z), torch.ones_like(z))
                    - _normal_log_prob(z, loc, scale)
                )
                rows.append(torch.logsumexp(log_w, 0) - math.log(num_particles))
        return torch.cat(rows)

    def log_prob_items(self, data: Any, params: Mapping[str, Tensor]) -> Tensor:
        """IWAE estimate of ``log p(x | y)`` per item, with ``iwae_particles`` samples (fixed seed)."""
        return self._iwae(data, params, self.iwae_particles)

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
            ys = torch.as_tensor(y).long().reshape(-1).expand(n)
            if bool(((ys < 0) | (ys >= self.n_classes)).any()):
                raise ValueError(f"y must hold class labels in 0..{self.n_classes - 1}; got {y!r}.")
        with torch.no_grad():
            z = torch.randn(n, self.latent_dim, generator=generator, dtype=_DTYPE)
            out = _call(self.decoder, params, "decoder", _with_class(z, _one_hot(ys, self.n_classes)))
            x = self._lik.sample(out, params.get(f"decoder{_SEP}log_scale"), generator)
        return {"data": x, "y": ys}

    # ------------------------------------------------------------------ fit helpers
    def encode(self, fit: Any, x: Any, y: Any) -> tuple[Tensor, Tensor]:
        """Posterior mean and scale of ``z`` given ``x`` and its class ``y`` (one or one per row)."""
        xs = as_tensor(x, "x", dtype=_DTYPE).reshape(-1, self.input_dim)
        ys = torch.as_tensor(y).long().reshape(-1).expand(len(xs))
        xs, ys = self.prepare_data((xs, ys))
        with torch.no_grad():
            return _call(
                self.encoder, fit.params, "encoder", torch.cat([xs, _one_hot(ys, self.n_classes)], -1)
            )

    def decode(self, fit: Any, z: Any, y: Any) -> Tensor:
        """Mean of ``p(x | z, y)`` for codes ``z`` ``(n, latent_dim)`` and classes ``y`` (one or ``n``)."""
        zs = as_tensor(z, "z", dtype=_DTYPE).reshape(-1, self.latent_dim)
        ys = torch.as_tensor(y).long().reshape(-1).expand(len(zs))
        with torch.no_grad():
            out = _call(self.decoder, fit.params, "decoder", _with_class(zs, _one_hot(ys, self.n_classes)))
            return self._lik.mean(out, fit.params.get(f"decoder{_SEP}log_scale"))

    def iwae(self, fit: Any, data: Any = None, num_particles: int | None = None) -> Tensor:
        """IWAE estimate of ``log p(x | y)`` for ``data = (X, y)`` with ``num_particles`` samples."""
        k = self.iwae_particles if num_particles is None else num_particles
        _check_dims(num_particles=k)
        return self._iwae(fit._data(data), fit.params, int(k))

    def __repr__(self) -> str:
        return (
            f"ConditionalVAE(n_classes={self.n_classes}, latent_dim={self.latent_dim}, "
            f"input_dim={self.input_dim}, hidden_dims={self.hidden_dims}, likelihood={self.likelihood!r})"
        )
