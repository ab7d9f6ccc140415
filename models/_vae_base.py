"""What every VAE family shares: networks, the Pyro pair's skeleton, the ELBO fast path, IWAE scores.

A family is a subclass of :class:`_VAEBase` (or of :class:`_LabelledVAE` for data ``(X, y)``) that
names its networks (:meth:`_VAEBase._networks`) and says how a class conditions them: the Pyro
model and guide, the closed-form-KL objective, importance-weighted scores, generation and the
decoder's mean are written once here.

The networks the model holds are Pyro's working copies (``pyro.module`` registers them in the
param store, and Pyro's ELBOs train them in place); each fit re-initialises them in place inside
its own seeded state and keeps its weights in ``fit.params``, which every helper evaluates
(``torch.func.functional_call``), never the copies the model holds.
"""

from __future__ import annotations

import abc
import dataclasses
import inspect
import math
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from probgen.fit import Fit
from probgen.model import GenerativeModel, as_tensor
from probgen.models._vae_plots import _VAEPicture
from probgen.state import isolated_rng
from probgen.validation import positive_int

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


def _reinitialise(module: nn.Module) -> None:
    """Fresh weights in place, drawn as constructing the module draws them."""
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.Linear):
                m.reset_parameters()
            elif isinstance(m, _Decoder) and hasattr(m, "log_scale"):
                m.log_scale.zero_()


def _check_dims(**dims: Any) -> None:
    for name, v in dims.items():
        positive_int(v, name)


def _check_hidden(hidden_dims: Any) -> tuple[int, ...]:
    try:
        hidden = tuple(hidden_dims)
    except TypeError:
        raise ValueError(f"hidden_dims must be a sequence of positive ints; got {hidden_dims!r}.") from None
    for h in hidden:
        _check_dims(hidden_dims=h)
    return tuple(int(h) for h in hidden)


def _call(module: nn.Module, params: Mapping[str, Tensor], name: str, *args: Any) -> Any:
    """Run ``module`` on the weights ``params[name$$$...]`` (the fit's, not the object's)."""
    prefix = name + _SEP
    weights = {k[len(prefix) :]: v for k, v in params.items() if k.startswith(prefix)}
    return torch.func.functional_call(module, weights, args)


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
        """``log p(x | out)`` summed over features (the same numbers as :meth:`dist`); NaN cells of
        ``x`` (missing) contribute nothing: the observed cells' marginal, features being
        independent given ``z``."""
        seen = ~torch.isnan(x)
        if bool(seen.all()):
            return self._log_prob(out, x, log_scale).sum(-1)
        cells = self._log_prob(out, x.nan_to_num(0.0), log_scale)
        return cells.masked_fill(~seen.expand_as(cells), 0.0).sum(-1)

    def _log_prob(self, out: Tensor, x: Tensor, log_scale: Tensor | None) -> Tensor:
        """``log p(x | out)`` per feature."""
        if self.kind == "bernoulli":
            return -F.binary_cross_entropy_with_logits(out, x.expand_as(out), reduction="none")
        if self.kind == "continuous_bernoulli":
            return torch.distributions.ContinuousBernoulli(logits=out, validate_args=False).log_prob(x)
        assert log_scale is not None
        return -0.5 * ((x - out) / log_scale.exp()) ** 2 - log_scale - 0.5 * math.log(2 * math.pi)

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
        x = x[~torch.isnan(x)]  # missing cells (missing="marginalize") are not values to check
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


def _encoder_input(x: Tensor) -> Tensor:
    """What ``q(z | x)`` reads: ``x`` with missing cells (NaN) set to zero, as zero-imputation
    amortises the posterior given the observed cells (Mattei & Frellsen's MIWAE; no mask input,
    so one encoder serves complete and incomplete items alike)."""
    return x.nan_to_num(0.0)


def _kl_std_normal(loc: Tensor, scale: Tensor) -> Tensor:
    """``KL(N(loc, scale) || N(0, 1))`` summed over the last axis."""
    return (0.5 * (loc**2 + scale**2 - 1.0) - scale.log()).sum(-1)


def _normal_log_prob(z: Tensor, loc: Tensor, scale: Tensor) -> Tensor:
    return (-0.5 * ((z - loc) / scale) ** 2 - scale.log() - 0.5 * math.log(2 * math.pi)).sum(-1)


def _one_hot(y: Tensor, n_classes: int) -> Tensor:
    return F.one_hot(y, n_classes).to(_DTYPE)


def _with_class(a: Tensor, y1h: Tensor | None) -> Tensor:
    """``cat([a, one_hot(y)], -1)``, broadcasting ``a`` over enumerated classes (``a`` when None)."""
    if y1h is None:
        return a
    shape = torch.broadcast_shapes(a.shape[:-1], y1h.shape[:-1])
    return torch.cat([a.expand(shape + a.shape[-1:]), y1h.expand(shape + y1h.shape[-1:])], -1)


class _ELBOObjective:
    """Negative ELBO with the KL in closed form, the class (if any) given (see ``svi_objective``)."""

    def __init__(self, vae: _VAEBase, data: Any) -> None:
        self.vae = vae
        self.nets = vae._fresh_networks()  # in the param store, from the fit's seeded generator
        self.x, self.cond = vae._given_condition(data)
        self.n = len(self.x)

    def parameters(self) -> list[Tensor]:
        return [p for mod in self.nets.values() for p in mod.parameters()]

    def loss(self, index: Tensor | None, num_particles: int) -> Tensor:
        x = self.x if index is None else self.x.index_select(0, index)
        c = self.cond if self.cond is None or index is None else self.cond.index_select(0, index)
        loc, scale = self.nets[self.vae._encoder](_with_class(_encoder_input(x), c))
        rec = self.vae._reconstruction(x, c, loc, scale, num_particles)
        return (self.n / len(x)) * (_kl_std_normal(loc, scale) - rec).sum()

    def params(self) -> dict[str, Tensor]:
        return self.vae._weights(self.nets)


@dataclasses.dataclass(frozen=True, eq=False, repr=False)
class VAEFit(Fit):
    """A fitted VAE: codes of items, items of codes, and the IWAE score."""

    @property
    def vae(self) -> Any:
        """The fitted VAE model."""
        return self.model

    def iwae(self, x: Any = None, num_particles: int | None = None) -> Tensor:
        """IWAE estimate of ``log p(x)`` per item (``log p(x | y)`` for labelled families, given
        ``(X, y)``) with ``num_particles`` samples."""
        out: Tensor = self.vae.iwae(self, x, num_particles)
        return out


@dataclasses.dataclass(frozen=True, eq=False, repr=False)
class LabelledVAEFit(VAEFit):
    """A fitted semi-supervised or conditional VAE: codes and decodings given a class."""

    def encode(self, x: Any, y: Any = None) -> tuple[Tensor, Tensor]:
        """Posterior mean and scale of ``z`` given ``x`` and class ``y`` (semi-supervised: the
        predicted class when None)."""
        out: tuple[Tensor, Tensor] = self.vae.encode(self, x, y)
        return out

    def decode(self, z: Any, y: Any) -> Tensor:
        """Mean of ``p(x | z, y)`` for codes ``z`` and classes ``y``."""
        out: Tensor = self.vae.decode(self, z, y)
        return out


class _VAEBase(_VAEPicture, GenerativeModel):
    """A VAE family: ``z ~ N(0, I)``, ``x | z, c ~ p(x | decoder(z, c))``, guide ``q(z | x, c)``.

    Subclasses name their networks (:meth:`_networks`), the encoder of ``z`` (:attr:`_encoder`),
    how the Pyro pair conditions on a class (:meth:`_model_class`, :meth:`_guide_class`) and how
    prepared data are scored (:meth:`_score`); ``c`` is a one-hot class or nothing.
    """

    data_plate_name = "data"
    dtype = _DTYPE
    fit_class: ClassVar[type[VAEFit]] = LabelledVAEFit
    #: Pyro module name of the network ``q(z | x, c)``
    _encoder = "encoder"
    #: constructor arguments shown by ``repr``
    _shown: tuple[str, ...] = ("input_dim", "latent_dim", "hidden_dims", "likelihood")

    def __init__(self, likelihood: str, hidden_dims: Sequence[int], **dims: Any) -> None:
        _check_dims(**dims)
        if dims.get("n_classes", 2) < 2:
            raise ValueError(f"n_classes must be at least 2; got {dims['n_classes']!r}.")
        if likelihood not in _LIKELIHOODS:
            raise ValueError(
                f"likelihood={likelihood!r} is not known; expected one of: {', '.join(_LIKELIHOODS)}."
            )
        self.n_classes = int(dims.get("n_classes", 0))
        self.input_dim, self.latent_dim = int(dims["input_dim"]), int(dims["latent_dim"])
        self.iwae_particles = int(dims["iwae_particles"])
        self.hidden_dims = _check_hidden(hidden_dims)
        self.likelihood = likelihood
        self._lik = _Likelihood(likelihood)
        # built with a generator of their own: constructing a model leaves torch's global random
        # state as it was (every fit re-initialises the weights from its own seed anyway)
        with isolated_rng(0):
            self._nets = self._networks()
        self.decoder = self._nets["decoder"]

    @abc.abstractmethod
    def _networks(self) -> dict[str, nn.Module]:
        """Freshly initialised networks by Pyro module name (the decoder is ``"decoder"``)."""

    def _fresh_networks(self) -> dict[str, nn.Module]:
        """The networks re-initialised in place (as constructing them draws) and in the param store."""
        for name, mod in self._nets.items():
            _reinitialise(mod)
            pyro.module(name, mod)
        return self._nets

    @staticmethod
    def _weights(nets: Mapping[str, nn.Module]) -> dict[str, Tensor]:
        return {
            f"{n}{_SEP}{k}": v.detach().clone() for n, mod in nets.items() for k, v in mod.named_parameters()
        }

    def _log_scale(self, params: Mapping[str, Tensor] | None = None) -> Tensor | None:
        if params is None:
            return getattr(self.decoder, "log_scale", None)
        return params.get(f"decoder{_SEP}log_scale")

    # ------------------------------------------------------------------ class conditioning
    def _model_class(self, data: Any, idx: Tensor, n: int) -> tuple[Tensor | None, Tensor | None]:
        """Inside the model's plate: the items ``x`` at ``idx`` (None when generating) and the
        one-hot class the decoder reads (None: no class)."""
        return (None if data is None else data.index_select(0, idx)), None

    def _guide_class(self, data: Any, idx: Tensor) -> tuple[Tensor, Tensor | None]:
        """Inside the guide's plate: the items at ``idx`` and the one-hot class ``q(z | x, c)`` reads."""
        return data.index_select(0, idx), None

    def _given_condition(self, data: Any) -> tuple[Tensor, Tensor | None]:
        """Every item and its one-hot class when the class is given (the fast path's inputs)."""
        return data, None

    # ------------------------------------------------------------------ Pyro pair
    def model(self, data: Any = None, subsample_size: int | None = None) -> Tensor:
        pyro.module("decoder", self.decoder)
        n = 1 if data is None else self.num_items(data)
        with pyro.plate("data", n, subsample_size=subsample_size) as plate_idx:
            idx: Tensor = plate_idx  # type: ignore[assignment]
            z = pyro.sample(
                "z", dist.Normal(torch.zeros(idx.shape[0], self.latent_dim, dtype=_DTYPE), 1.0).to_event(1)
            )
            x, c = self._model_class(data, idx, n)
            likelihood = self._lik.dist(self.decoder(_with_class(z, c)), self._log_scale())
            return pyro.sample("x", likelihood, obs=x)

    def guide(self, data: Any = None, subsample_size: int | None = None) -> None:
        for name, mod in self._nets.items():
            if name != "decoder":
                pyro.module(name, mod)
        if data is None:
            return
        with pyro.plate("data", self.num_items(data), subsample_size=subsample_size) as plate_idx:
            idx: Tensor = plate_idx  # type: ignore[assignment]
            x, c = self._guide_class(data, idx)
            loc, scale = self._nets[self._encoder](_with_class(_encoder_input(x), c))
            pyro.sample("z", dist.Normal(loc, scale).to_event(1))

    def roles(self, data: Any) -> Any:
        # tracing registers the networks with pyro.module: keep the user's param store untouched
        with pyro.get_param_store().scope():
            return super().roles(data)

    def svi_objective(self, data: Any) -> Any:
        """The ELBO with its KL in closed form, in plain PyTorch (the SVI fast path)."""
        return _ELBOObjective(self, data)

    def svi_defaults(self, data: Any) -> dict[str, Any]:
        """Minibatches of 128 items (all of them when fewer) and Adam at ``lr=1e-3``, the usual VAE setting."""
        return {"subsample_size": min(128, self.num_items(data)), "lr": 1e-3}

    def _reconstruction(
        self, x: Tensor, c: Tensor | None, loc: Tensor, scale: Tensor, num_particles: int
    ) -> Tensor:
        """One-sample (or ``num_particles``-mean) estimate of ``E_q log p(x | z, c)``."""
        shape = ((num_particles,) if num_particles > 1 else ()) + tuple(loc.shape)
        z = loc + scale * torch.randn(shape, dtype=loc.dtype)
        rec = self._lik.log_prob(self.decoder(_with_class(z, c)), x, self._log_scale())
        return rec.mean(0) if num_particles > 1 else rec

    # ------------------------------------------------------------------ configuration
    def get_config(self) -> dict[str, Any]:
        """The constructor's arguments, read back by name."""
        config = {
            k: getattr(self, k) for k in inspect.signature(type(self).__init__).parameters if k != "self"
        }
        config["hidden_dims"] = list(self.hidden_dims)
        return config

    def num_parameters(self, params: Mapping[str, Tensor], data: Any) -> int:
        return int(sum(v.numel() for k, v in params.items() if k.startswith("decoder" + _SEP)))

    def __repr__(self) -> str:
        return f"{self.name}(" + ", ".join(f"{k}={getattr(self, k)!r}" for k in self._shown) + ")"

    # ------------------------------------------------------------------ scoring, generation
    def _score(self, data: Any, params: Mapping[str, Tensor], num_particles: int) -> Tensor:
        """IWAE estimate of ``log p(x)`` per item of prepared ``data``."""
        return self._iwae(data, None, params, num_particles)

    def _iwae(
        self,
        x: Tensor,
        cond: Tensor | None,
        params: Mapping[str, Tensor],
        num_particles: int,
        classes: int = 0,
    ) -> Tensor:
        """``log mean_k p(x, z_k | c) / q(z_k | x, c)`` per item, ``z_k ~ q`` (fixed seed), for one-hot
        classes ``cond`` per item; with ``classes``, ``cond`` enumerates them ``(C, 1, C)`` and the
        class is summed out under a uniform prior."""
        log_scale = self._log_scale(params)
        gen = torch.Generator().manual_seed(0)
        rows = []
        chunk = max(1, 20000 // (num_particles * max(classes, 1)))
        with torch.no_grad():
            for start in range(0, len(x), chunk):
                xb = x[start : start + chunk]
                cb = cond if cond is None or classes else cond[start : start + chunk]
                loc, scale = _call(
                    self._nets[self._encoder], params, self._encoder, _with_class(_encoder_input(xb), cb)
                )
                z = loc + scale * torch.randn(
                    (num_particles,) + tuple(loc.shape), generator=gen, dtype=loc.dtype
                )
                out = _call(self.decoder, params, "decoder", _with_class(z, cb))
                log_w = (
                    self._lik.log_prob(out, xb, log_scale)
                    + _normal_log_prob(z, torch.zeros_like(z), torch.ones_like(z))
                    - _normal_log_prob(z, loc, scale)
                )
                est = torch.logsumexp(log_w, 0) - math.log(num_particles)
                rows.append(torch.logsumexp(est - math.log(classes), 0) if classes else est)
        return torch.cat(rows)

    def log_prob_items(self, data: Any, params: Mapping[str, Tensor]) -> Tensor:
        """IWAE estimate of ``log p(x)`` per item, with ``iwae_particles`` samples (fixed seed)."""
        return self._score(data, params, self.iwae_particles)

    def iwae(self, fit: Any, x: Any = None, num_particles: int | None = None) -> Tensor:
        """IWAE estimate of ``log p(x)`` per item with ``num_particles`` samples (default ``iwae_particles``)."""
        k = self.iwae_particles if num_particles is None else num_particles
        _check_dims(num_particles=k)
        return self._score(fit._data(x), fit.params, int(k))

    def _generate(
        self, n: int, params: Mapping[str, Tensor], generator: torch.Generator | None, c: Tensor | None
    ) -> tuple[Tensor, Tensor]:
        """``n`` items from ``p(x | z, c)`` with ``z ~ N(0, I)``: ``(x, z)``."""
        with torch.no_grad():
            z = torch.randn(n, self.latent_dim, generator=generator, dtype=_DTYPE)
            out = _call(self.decoder, params, "decoder", _with_class(z, c))
            return self._lik.sample(out, self._log_scale(params), generator), z

    def _decoded_mean(self, params: Mapping[str, Tensor], z: Tensor, c: Tensor | None) -> Tensor:
        """Mean of ``p(x | z, c)`` at the decoder weights of ``params``."""
        with torch.no_grad():
            return self._lik.mean(
                _call(self.decoder, params, "decoder", _with_class(z, c)), self._log_scale(params)
            )

    # ------------------------------------------------------------------ the picture's hooks
    def _codes(self, params: Mapping[str, Tensor], x: Tensor, cond: Tensor | None) -> Tensor:
        """Posterior means of ``z`` (the encoder's) for items ``x`` under the one-hot class ``cond``."""
        with torch.no_grad():
            loc: Tensor = _call(
                self._nets[self._encoder], params, self._encoder, _with_class(_encoder_input(x), cond)
            )[0]
        return loc

    def _plot_inputs(self, data: Any, params: Mapping[str, Tensor]) -> tuple[Tensor, Tensor | None, Any]:
        """Items, no class condition, no labels (the unlabelled VAE)."""
        return self.prepare_data(data), None, None


class _LabelledVAE(_VAEBase):
    """A VAE family over data ``(X, y)``: a class per item, ``-1`` where unlabelled (when allowed)."""

    _shown = ("n_classes", "latent_dim", "input_dim", "hidden_dims", "likelihood")

    def num_items(self, data: Any) -> int:
        return len(data[0])

    def observed_arrays(self, data: Any) -> dict[str, Tensor]:
        return {"x": data[0]}

    def data_to_arrays(self, data: Any) -> dict[str, Tensor]:
        return {"X": data[0], "y": data[1]}

    def data_from_arrays(self, arrays: Mapping[str, Tensor]) -> Any:
        return (arrays["X"].to(_DTYPE), arrays["y"].long()) if "X" in arrays else None

    def _checked(self, x: Any, y: Any, lowest: int, allowed: str, after: str) -> tuple[Tensor, Tensor]:
        """``(X, y)`` validated: ``X`` of ``input_dim`` features, one label per row in ``lowest ..
        n_classes-1`` (``allowed`` and ``after`` complete the message that refuses others);
        no ``y``: every row unlabelled (-1)."""
        xs = as_tensor(x, "X", dtype=_DTYPE)
        labels = None
        if y is not None:
            ys = as_tensor(y, "y", dtype=torch.float64)
            if ys.dim() != 1 or len(ys) != len(xs):
                raise ValueError(
                    f"y must have shape ({len(xs)},), one label per row of X; got {tuple(ys.shape)}."
                )
            bad = (ys != torch.round(ys)) | (ys < lowest) | (ys >= self.n_classes)
            if bad.any():
                raise ValueError(
                    f"y holds {int(bad.sum())} values that are not class labels in 0..{self.n_classes - 1}"
                    f"{allowed}, e.g. {float(ys[bad][0])!r}{after}"
                )
            labels = ys.long()
        if xs.dim() != 2 or xs.shape[1] != self.input_dim:
            raise ValueError(
                f"X must have shape (n_items, {self.input_dim}) (input_dim={self.input_dim}); got {tuple(xs.shape)}."
            )
        self._lik.validate(xs, "X")
        return xs, torch.full((len(xs),), -1, dtype=torch.long) if labels is None else labels

    def _plot_inputs(self, data: Any, params: Mapping[str, Tensor]) -> tuple[Tensor, Tensor | None, Any]:
        """Items, their classes one-hot (unlabelled rows: the classifier's, where there is one) and
        those classes as labels."""
        x, y = self.prepare_data(data)
        unlabelled = y < 0
        if bool(unlabelled.any()):
            y = torch.where(unlabelled, self.latent_map((x, y), params)["y"], y)
        return x, _one_hot(y, self.n_classes), y.numpy()

    def _classes(self, y: Any, n: int) -> Tensor:
        return torch.as_tensor(y).long().reshape(-1).expand(n)

    def decode(self, fit: Any, z: Any, y: Any) -> Tensor:
        """Mean of ``p(x | z, y)`` for codes ``z`` ``(n, latent_dim)`` and classes ``y`` (one or ``n``)."""
        zs = as_tensor(z, "z", dtype=_DTYPE).reshape(-1, self.latent_dim)
        return self._decoded_mean(fit.params, zs, _one_hot(self._classes(y, len(zs)), self.n_classes))
