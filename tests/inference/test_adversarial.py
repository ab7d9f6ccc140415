"""The adversarial backend: generic over the hook, one step checked against a loop by hand, options."""

from __future__ import annotations

import math

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
import torch.nn.functional as F

import probgen as pg
from probgen.inference.adversarial import Adversarial
from probgen.model import GenerativeModel


class _ShiftScale:
    """Generator ``x = mu + exp(log_s) z``; discriminator ``D(x) = w0 x + w1 x^2 + b`` (quadratic:
    it can tell any two Gaussians apart, so the only equilibrium is the data's mean and scale)."""

    def __init__(self, start: tuple[float, float] = (0.0, 0.0), frozen: bool = False) -> None:
        self.mu = torch.tensor([start[0]], requires_grad=not frozen)
        self.log_s = torch.tensor([start[1]], requires_grad=not frozen)
        self.unused = torch.zeros(1, requires_grad=True)  # a frozen generator still hands one over
        self.w = torch.tensor([0.1, -0.1], requires_grad=True)
        self.b = torch.zeros(1, requires_grad=True)
        self.calls = {"generate": 0, "discriminate": 0}

    def generator_parameters(self) -> list[torch.Tensor]:
        return [p for p in (self.mu, self.log_s, self.unused) if p.requires_grad]

    def discriminator_parameters(self) -> list[torch.Tensor]:
        return [self.w, self.b]

    def generate(self, n: int) -> torch.Tensor:
        self.calls["generate"] += 1
        return self.mu + self.log_s.exp() * torch.randn(n, 1)

    def discriminate(self, x: torch.Tensor) -> torch.Tensor:
        self.calls["discriminate"] += 1
        return torch.cat([x, x**2], -1) @ self.w + self.b

    def params(self) -> dict[str, torch.Tensor]:
        return {k: getattr(self, k).detach().clone() for k in ("mu", "log_s", "w", "b")}


class _ShiftGAN(GenerativeModel):
    """A model the GAN family knows nothing about: only the hook makes it trainable."""

    data_plate_name = "data"
    dtype = torch.float32
    density = "none"

    def __init__(self, **kwargs) -> None:
        self.kwargs = kwargs
        self.objective: _ShiftScale | None = None

    def model(self, data=None):
        with pyro.plate("data", 1 if data is None else len(data)):
            z = pyro.sample("z", dist.Normal(torch.zeros(1), 1.0).to_event(1))
            return pyro.deterministic("x", z, event_dim=1)

    def adversarial_objective(self, data):
        self.objective = _ShiftScale(**self.kwargs)
        return self.objective


def _gaussian_data(n: int = 2000, loc: float = 3.0, scale: float = 0.5) -> torch.Tensor:
    return loc + scale * torch.randn(n, 1, generator=torch.Generator().manual_seed(0))


def _fit(model, data, **options):
    return pg.fit(model, data, method="adversarial", seed=0, progress=False, **options)


def test_any_model_offering_the_hook_is_trained_to_the_data_distribution():
    fit = _fit(_ShiftGAN(), _gaussian_data(2000, loc=1.0, scale=2.0), num_steps=1500, lr=0.01)
    assert fit.converged and fit.method == "adversarial"
    assert fit.params["mu"].item() == pytest.approx(1.0, abs=0.15)  # the start was 0
    assert math.exp(fit.params["log_s"].item()) == pytest.approx(2.0, abs=0.2)  # the start was 1


def _by_hand(
    data: torch.Tensor, num_steps: int, lr: float, gamma: float, n_critic: int
) -> dict[str, torch.Tensor]:
    """The documented algorithm written out in plain PyTorch: full batches, the same noise draws."""
    torch.manual_seed(0)  # what pg.fit(seed=0) seeds
    mu, log_s = torch.zeros(1, requires_grad=True), torch.zeros(1, requires_grad=True)
    w, b = torch.tensor([0.1, -0.1], requires_grad=True), torch.zeros(1, requires_grad=True)
    g_opt = torch.optim.Adam([mu, log_s], lr=lr, betas=(0.5, 0.999))
    d_opt = torch.optim.Adam([w, b], lr=lr, betas=(0.5, 0.999))

    def d(x):
        return torch.cat([x, x**2], -1) @ w + b

    n = len(data)
    for _ in range(num_steps):
        for _ in range(n_critic):
            real = data.clone().requires_grad_(True)
            fake = (mu + log_s.exp() * torch.randn(n, 1)).detach()
            d_real = d(real)
            loss = -F.logsigmoid(d_real).mean() - F.logsigmoid(-d(fake)).mean()
            grad = torch.autograd.grad(d_real.sum(), real, create_graph=True)[0]
            loss = loss + gamma / 2 * (grad**2).sum(-1).mean()
            d_opt.zero_grad()
            loss.backward()
            d_opt.step()
        g_loss = -F.logsigmoid(d(mu + log_s.exp() * torch.randn(n, 1))).mean()
        g_opt.zero_grad()
        g_loss.backward()
        g_opt.step()
    return {"mu": mu, "log_s": log_s, "w": w, "b": b}


@pytest.mark.parametrize("gamma, n_critic", [(1.0, 1), (5.0, 2)])
def test_steps_equal_the_non_saturating_loss_with_r1_and_adam_written_by_hand(gamma, n_critic):
    data = _gaussian_data(200)
    fit = _fit(
        _ShiftGAN(),
        data,
        num_steps=5,
        lr=0.05,
        gradient_penalty=gamma,
        n_critic=n_critic,
        subsample_size=None,
    )
    want = _by_hand(data, 5, 0.05, gamma, n_critic)
    for k, v in want.items():
        torch.testing.assert_close(fit.params[k], v.detach(), rtol=1e-5, atol=1e-6)


def test_the_penalty_changes_the_steps():
    data = _gaussian_data(200)
    with_gp = _fit(_ShiftGAN(), data, num_steps=5, lr=0.05, gradient_penalty=5.0, subsample_size=None)
    without = _by_hand(data, 5, 0.05, 0.0, 1)
    assert not torch.allclose(with_gp.params["w"], without["w"].detach(), atol=1e-4)


def test_history_extras_and_calls_per_step():
    model = _ShiftGAN()
    fit = _fit(model, _gaussian_data(300), num_steps=7, n_critic=3, subsample_size=50)
    assert fit.history.shape == (7,) and fit.extras["discriminator_loss"].shape == (7,)
    assert np.isfinite(fit.history).all() and fit.extras["convergence"] == []
    assert model.objective is not None
    # per step: n_critic x (one fake batch, real and fake scored) + one generator batch scored
    assert model.objective.calls == {"generate": 7 * 4, "discriminate": 7 * (2 * 3 + 1)}
    # the generator's loss is -log sigmoid D(G(z)): log 2 when D cannot tell at all, so it starts near it
    assert fit.history[0] == pytest.approx(math.log(2.0), abs=0.5)


def test_converged_is_false_when_the_discriminator_wins_outright():
    # a generator that cannot move, far from the data: the discriminator separates them perfectly
    fit = _fit(
        _ShiftGAN(start=(-5.0, -3.0), frozen=True),
        _gaussian_data(),
        num_steps=300,
        lr=0.05,
        gradient_penalty=0.0,
    )
    assert not fit.converged
    assert "the discriminator won outright" in fit.extras["convergence"][0]
    assert fit.extras["discriminator_loss"][-30:].mean() < 0.05


def test_a_model_without_the_hook_is_refused_with_the_reason():
    @pg.model
    def normal(data=None):
        loc = pyro.sample("loc", dist.Normal(0.0, 10.0))
        with pyro.plate("items", 3 if data is None else len(data)):
            pyro.sample("obs", dist.Normal(loc, 1.0), obs=data)

    data = torch.randn(10)
    reason = Adversarial().supports(normal, data)
    assert reason is not None and "adversarial_objective" in reason
    with pytest.raises(
        pg.ModelNotSupportedError,
        match=r"does not offer the capability Implicit \(adversarial_objective\).*Methods that can: ",
    ):
        pg.fit(normal, data, method="adversarial", progress=False)
    assert Adversarial().supports(_ShiftGAN(), _gaussian_data(10)) is None


def test_an_objective_with_no_trainable_parameters_is_refused():
    class _Empty(_ShiftScale):
        def discriminator_parameters(self):
            return []

    class _EmptyGAN(_ShiftGAN):
        def adversarial_objective(self, data):
            return _Empty()

    with pytest.raises(ValueError, match=r"_EmptyGAN's adversarial_objective\(\) returned no discriminator"):
        _fit(_EmptyGAN(), _gaussian_data(20), num_steps=3)


@pytest.mark.parametrize(
    "options, match",
    [
        (
            {"num_step": 10},
            r"Unknown adversarial option\(s\) \['num_step'\]; expected some of: betas, "
            r"gradient_penalty, lr, n_critic, num_steps, subsample_size",
        ),
        ({"num_steps": 0}, "num_steps must be a positive int; got 0"),
        ({"n_critic": 1.5}, "n_critic must be a positive int; got 1.5"),
        ({"lr": -1.0}, "lr must be a positive number; got -1.0"),
        ({"lr": float("nan")}, "lr must be a positive number"),
        ({"gradient_penalty": -0.1}, "gradient_penalty must be a non-negative number"),
        ({"betas": (0.5,)}, r"betas must be two numbers in \[0, 1\)"),
        ({"betas": (0.5, 1.0)}, r"betas must be two numbers in \[0, 1\)"),
        ({"subsample_size": 0}, "subsample_size must be a positive int or None; got 0"),
        ({"subsample_size": 11}, r"subsample_size must be an int in \[1, 10\]"),
    ],
)
def test_bad_options_are_refused(options, match):
    model = _ShiftGAN()
    with pytest.raises(ValueError, match=match):
        _fit(model, _gaussian_data(10), **options)
    assert model.objective is None  # refused before any work


def test_the_default_minibatch_is_all_items_when_fewer_than_128():
    model = _ShiftGAN()
    fit = _fit(model, _gaussian_data(10), num_steps=3)
    assert fit.history.shape == (3,)


def test_progress_bar_only_when_asked(capsys):
    _fit(_ShiftGAN(), _gaussian_data(50), num_steps=5)
    assert capsys.readouterr().err == ""
    pg.fit(_ShiftGAN(), _gaussian_data(50), method="adversarial", seed=0, progress=True, num_steps=5)
    assert "adversarial" in capsys.readouterr().err


def test_non_finite_losses_stop_training_with_advice():
    class _Exploding(_ShiftScale):
        def discriminate(self, x):
            return super().discriminate(x) * float("inf")

    class _ExplodingGAN(_ShiftGAN):
        def adversarial_objective(self, data):
            return _Exploding()

    with pytest.raises(FloatingPointError, match="non-finite at step 0.*lower lr"):
        _fit(_ExplodingGAN(), _gaussian_data(20), num_steps=3, gradient_penalty=0.0)
