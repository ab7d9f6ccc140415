"""Contrastive-divergence backend: served by hooks (not by family), exact answers, options, refusals."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pyro
import pyro.distributions as dist
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

import probgen as pg
from probgen.errors import ModelNotSupportedError
from probgen.inference.cd import CD
from probgen.model import GenerativeModel, as_tensor


class _IndependentBits(GenerativeModel):
    """Energy model ``F(x) = -x.bias`` (independent bits): its MLE is ``bias = logit(mean x)``."""

    data_plate_name = "data"
    dtype = torch.float32
    density = "unnormalised"

    def __init__(self, d: int) -> None:
        self.d = d

    def model(self, data: Any = None) -> Any:
        bias = pyro.param("bias", torch.zeros(self.d))
        with pyro.plate("data", 1 if data is None else len(data)):
            if data is None:
                return pyro.sample("x", dist.Bernoulli(logits=bias).to_event(1))
            pyro.factor("x", data @ bias)
            return data

    def prepare_data(self, data: Any) -> Tensor:
        return as_tensor(data, "data", dtype=torch.float32)

    def free_energy(self, data: Any, params: Any = None) -> Tensor:
        return -(data @ params["bias"])

    def gibbs_step(
        self, data: Tensor, params: Mapping[str, Tensor], *, generator: torch.Generator | None = None
    ) -> Tensor:
        p = torch.sigmoid(params["bias"].detach()).expand_as(data).contiguous()
        return torch.bernoulli(p, generator=generator)  # an exact draw: the bits are independent

    def init_params(self, data: Any, *, init: Any, generator: torch.Generator) -> dict[str, Tensor]:
        return {"bias": torch.zeros(self.d)}


class _GaussianEnergy(_IndependentBits):
    """``F(x) = |x - loc|^2 / 2`` (a unit Gaussian): its MLE is ``loc = mean x``; real-valued data."""

    def model(self, data: Any = None) -> Any:
        loc = pyro.param("loc", torch.zeros(self.d))
        with pyro.plate("data", 1 if data is None else len(data)):
            pyro.factor("x", -0.5 * ((data - loc) ** 2).sum(-1))
            return data

    def free_energy(self, data: Any, params: Any = None) -> Tensor:
        return 0.5 * ((data - params["loc"]) ** 2).sum(-1)

    def gibbs_step(
        self, data: Tensor, params: Mapping[str, Tensor], *, generator: torch.Generator | None = None
    ) -> Tensor:
        return params["loc"].detach() + torch.randn(data.shape, generator=generator)

    def init_params(self, data: Any, *, init: Any, generator: torch.Generator) -> dict[str, Tensor]:
        return {"loc": torch.zeros(self.d)}


class _OnlyFreeEnergy(_IndependentBits):
    gibbs_step = None  # type: ignore[assignment]  (a capability's method set to None is not offered)
    init_params = None  # type: ignore[assignment]


def _bits(n: int = 2000) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(0)
    p = torch.tensor([0.2, 0.5, 0.7, 0.9, 0.35])
    return (torch.rand(n, 5, generator=g) < p).float(), p


@pytest.mark.parametrize("persistent", [True, False], ids=["pcd", "cd-1"])
def test_cd_reaches_the_maximum_likelihood_of_a_model_it_does_not_know(persistent):
    x, _ = _bits()
    fit = pg.fit(
        _IndependentBits(5), x, method="cd", seed=0, progress=False, persistent=persistent, num_steps=1500
    )
    mle = torch.logit(x.mean(0))
    torch.testing.assert_close(fit.params["bias"], mle, atol=0.1, rtol=0)
    # the history is the pseudo-log-likelihood per item; for independent bits it is the log-likelihood
    assert fit.extras["history"] == "pseudo_log_likelihood"
    exact = float(
        -F.binary_cross_entropy_with_logits(fit.params["bias"].expand_as(x), x, reduction="none")
        .sum(-1)
        .mean()
    )
    assert fit.history[-1] == pytest.approx(exact, abs=0.25)


def test_cd_fits_a_real_valued_energy_model_and_monitors_reconstruction():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(1000, 3, generator=g) + torch.tensor([1.0, -2.0, 0.5])
    fit = pg.fit(_GaussianEnergy(3), x, method="cd", seed=0, progress=False, num_steps=1500, k=2)
    torch.testing.assert_close(fit.params["loc"], x.mean(0), atol=0.1, rtol=0)
    assert fit.extras["history"] == "reconstruction_error"
    assert fit.history[-1] == pytest.approx(2.0, abs=0.3)  # E|x - x'|^2 per feature, x' an independent draw


def test_history_has_one_value_per_epoch_and_convergence_is_reported_honestly():
    x, _ = _bits(100)
    fit = pg.fit(_IndependentBits(5), x, method="cd", seed=0, progress=False, num_steps=50, subsample_size=20)
    assert fit.history.shape == (10,)  # 50 steps of 20 items over 100 items
    short = pg.fit(
        _IndependentBits(5), x, method="cd", seed=0, progress=False, num_steps=10, subsample_size=20
    )
    assert not short.converged and "too few to judge convergence" in short.extras["convergence"][0]
    moving = pg.fit(
        _IndependentBits(5),
        x,
        method="cd",
        seed=0,
        progress=False,
        num_steps=60,
        subsample_size=20,
        lr=0.005,
        tol=1e-6,
    )
    assert not moving.converged and "still improved" in moving.extras["convergence"][0]
    settled = pg.fit(
        _IndependentBits(5), x, method="cd", seed=0, progress=False, num_steps=500, subsample_size=20
    )
    assert settled.converged and settled.extras["convergence"] == []


def test_a_model_without_the_hooks_is_refused_with_their_names():
    with pytest.raises(
        ModelNotSupportedError, match=r"does not offer the capability EnergyBased \(gibbs_step, init_params\)"
    ):
        pg.fit(_OnlyFreeEnergy(5), _bits(20)[0], method="cd", progress=False)

    @pg.model
    def coin(data=None):
        p = pyro.sample("p", dist.Beta(1.0, 1.0))
        with pyro.plate("flips", 4 if data is None else len(data)):
            pyro.sample("obs", dist.Bernoulli(p), obs=data)

    assert CD().supports(coin, torch.ones(4)) is not None
    with pytest.raises(
        ModelNotSupportedError,
        match=r"does not offer the capability EnergyBased \(free_energy, gibbs_step, init_params\)",
    ):
        pg.fit(coin, torch.ones(4), method="cd", progress=False)


def test_unknown_options_are_refused_with_the_known_ones():
    with pytest.raises(
        ValueError, match=r"Unknown CD option\(s\) \['num_epochs'\]; expected some of: .*num_steps"
    ):
        pg.fit(_IndependentBits(5), _bits(20)[0], method="cd", progress=False, num_epochs=3)


@pytest.mark.parametrize(
    "option, value, error, match",
    [
        ("num_steps", 0, ValueError, "num_steps must be a positive int"),
        ("num_steps", 2.5, ValueError, "num_steps must be a positive int"),
        ("k", 0, ValueError, "k must be a positive int"),
        ("lr", -0.1, ValueError, "lr must be a positive number"),
        ("lr", float("nan"), ValueError, "lr must be a positive number"),
        ("lr_decay", 0.0, ValueError, r"lr_decay must be in \(0, 1\]"),
        ("persistent", "yes", TypeError, "persistent must be a bool"),
        ("subsample_size", 0, ValueError, "subsample_size must be a positive int or None"),
        ("momentum", 1.0, ValueError, r"momentum must be in \[0, 1\)"),
        ("weight_decay", -1.0, ValueError, "weight_decay must be a non-negative number"),
        ("tol", -1.0, ValueError, "tol must be a non-negative number"),
    ],
)
def test_bad_option_values_are_refused(option, value, error, match):
    with pytest.raises(error, match=match):
        pg.fit(_IndependentBits(5), _bits(20)[0], method="cd", progress=False, **{option: value})


def test_weight_decay_shrinks_towards_zero_as_the_penalised_optimum_says():
    # penalised optimum of mean x.b - log(1 + e^b) - wd/2 b^2: sigmoid(b) + wd b = mean x
    x, _ = _bits()
    wd = 0.5
    fit = pg.fit(_IndependentBits(5), x, method="cd", seed=0, progress=False, num_steps=1500, weight_decay=wd)
    b = fit.params["bias"]
    torch.testing.assert_close(torch.sigmoid(b) + wd * b, x.mean(0), atol=0.03, rtol=0)


def test_progress_bar_only_on_request(capfd):
    x, _ = _bits(50)
    pg.fit(_IndependentBits(5), x, method="cd", seed=0, progress=False, num_steps=20)
    assert "CD" not in capfd.readouterr().err
    pg.fit(_IndependentBits(5), x, method="cd", seed=0, progress=True, num_steps=20)
    assert "CD" in capfd.readouterr().err


class _FusedBits(_IndependentBits):
    """Independent bits running their own updates (the FusedCD capability): plain SGD on the exact
    gradient ``mean(batch) - sigmoid(bias)``, with every call the backend makes recorded."""

    def __init__(self, d: int) -> None:
        super().__init__(d)
        self.calls: list[tuple[Tensor, list[float]]] = []
        self.bias = torch.zeros(d)

    def cd_updater(
        self,
        params: Mapping[str, Tensor],
        chains: Tensor | None,
        *,
        batch_size: int,
        k: int,
        momentum: float,
        weight_decay: float,
        generator: torch.Generator,
    ) -> Any:
        model, bias = self, params["bias"].detach().clone()
        self.bias = bias

        class Updater:
            def run(self, data: Tensor, order: Tensor, lrs: Any) -> None:
                model.calls.append((order.clone(), list(lrs)))
                for i, lr in enumerate(lrs):
                    batch = data[order[i * batch_size : (i + 1) * batch_size]]
                    bias.add_(batch.mean(0) - torch.sigmoid(bias), alpha=lr)

            def params(self) -> dict[str, Tensor]:
                return {"bias": bias}

        return Updater()


def test_a_model_with_its_own_updates_gets_epochs_rates_and_the_monitor_from_the_backend():
    x, _ = _bits(105)  # 105 items in minibatches of 10: 11 updates an epoch, the last of 5 items
    model = _FusedBits(5)
    fit = pg.fit(model, x, method="cd", seed=0, progress=False, num_steps=30, subsample_size=10, lr=0.2)
    assert [len(lrs) for _, lrs in model.calls] == [11, 11, 8]  # whole epochs, then what is left
    rates = [lr for _, lrs in model.calls for lr in lrs]
    expected = [0.2 * (1.0 - 0.9 * step / 30) for step in range(30)]  # linear decay to lr * lr_decay
    assert rates == pytest.approx(expected, rel=1e-12)
    for order, _ in model.calls:  # each epoch visits every item once, in a fresh order
        assert torch.equal(order.sort().values, torch.arange(105))
    assert not torch.equal(model.calls[0][0], model.calls[1][0])
    assert fit.history.shape == (3,) and fit.extras["history"] == "pseudo_log_likelihood"
    assert torch.equal(fit.params["bias"], model.bias) and fit.params["bias"] is not model.bias
    long = pg.fit(_FusedBits(5), _bits()[0], method="cd", seed=0, progress=False, num_steps=1500, lr=0.2)
    torch.testing.assert_close(long.params["bias"], torch.logit(_bits()[0].mean(0)), atol=0.1, rtol=0)
