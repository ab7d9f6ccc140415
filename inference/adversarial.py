"""Adversarial training of implicit models (``method="adversarial"``).

Serves any model offering the ``adversarial_objective`` hook (a generator and a discriminator,
see :meth:`probgen.GenerativeModel.adversarial_objective`), whatever its class.  The two networks
are trained in turn with the non-saturating GAN loss (Goodfellow et al. 2014): the discriminator
minimises ``softplus(-D(x_real)) + softplus(D(x_fake))`` (the logistic loss of telling real from
fake), the generator minimises ``softplus(-D(G(z)))`` (``-log sigmoid D``, whose gradient does not
vanish when the discriminator wins).  An optional R1 gradient penalty on real items (Mescheder et
al. 2018), ``gamma / 2 * E ||grad_x D(x_real)||^2``, keeps the discriminator smooth near the data
and the training stable.  Both use Adam with the usual GAN betas ``(0.5, 0.999)``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from probgen.backend import BackendBase, Option, register_backend
from probgen.capabilities import Implicit
from probgen.errors import ModelNotSupportedError
from probgen.fit import Fit
from probgen.model import GenerativeModel

__all__ = ["Adversarial"]

#: The discriminator's loss when it cannot tell real from fake at all: ``2 log 2``.
_CHANCE = 2.0 * math.log(2.0)
#: Mean discriminator loss (last tenth of the steps) below which it is said to win outright.
_WIN = 0.05
_HOOK = "adversarial_objective"


class Adversarial(BackendBase):
    """Adversarial training: a generator against a discriminator (GANs and other implicit models).

    Options (with defaults):

    ``num_steps`` : int, default 3000
        Generator updates.
    ``lr`` : float, default 1e-3
        Adam's learning rate, for both networks.
    ``betas`` : tuple of two floats, default (0.5, 0.999)
        Adam's moment decay rates, for both networks (the usual choice for GANs).
    ``subsample_size`` : int or None, default 128
        Real items per minibatch (and fake items generated per step); all items when the data
        have fewer; ``None`` uses every item each step.  Minibatches walk through a fresh
        permutation of the items each epoch.
    ``n_critic`` : int, default 1
        Discriminator updates per generator update.
    ``gradient_penalty`` : float, default 1.0
        Weight ``gamma`` of the R1 penalty ``gamma / 2 * E ||grad_x D(x_real)||^2``; 0 turns it off.

    ``fit.history`` is the generator's loss per step, ``fit.extras["discriminator_loss"]`` the
    discriminator's logistic loss (penalty excluded) at its last update of each step; when
    neither network wins both hover near ``log 2`` and ``2 log 2`` respectively.
    ``fit.params`` holds every weight of both networks (the hook's ``params()``).

    A GAN has no convergence criterion (no objective that settles at an optimum), so
    ``fit.converged`` only says that training finished with finite losses and that the
    discriminator did not win outright (its mean loss over the last tenth of the steps stayed
    above 0.05, far below the ``2 log 2`` of a discriminator that cannot tell real from fake:
    a winning discriminator means the generator's items are easy to tell from the data).  It is
    not evidence that the samples are good: judge them with a two-sample test against held-out
    data (``probgen.mmd_test``).  ``fit.extras["convergence"]`` lists what went wrong (empty
    otherwise).  A non-finite loss stops training with ``FloatingPointError``.

    Examples
    --------
    >>> import torch, probgen as pg
    >>> from probgen.models import GAN
    >>> x = torch.randn(100, 1)
    >>> fit = pg.fit(GAN(1, 1, hidden_dims=(8,)), x, method="adversarial", num_steps=20, progress=False)
    >>> fit.history.shape, fit.extras["discriminator_loss"].shape
    ((20,), (20,))
    """

    name = "adversarial"
    requires = (Implicit,)
    likelihood = False
    options = (
        Option("num_steps", "int", 3000, "generator updates"),
        Option("lr", "float", 1e-3, "Adam learning rate of both networks"),
        Option("betas", "any", (0.5, 0.999), "Adam's betas"),
        Option("subsample_size", "int", 128, "items per minibatch", none=True, aliases=("batch_size",)),
        Option("n_critic", "int", 1, "discriminator updates per generator update"),
        Option("gradient_penalty", "float0", 1.0, "weight of the R1 penalty on real data (0: off)"),
    )

    def fit(self, model: GenerativeModel, data: Any, *, seed: int, progress: bool, **options: Any) -> Fit:
        if not isinstance(model, Implicit):
            raise ModelNotSupportedError(
                f"method='adversarial' cannot fit {model.name}: {self.supports(model, data)}."
            )
        defaults: dict[str, Any] = self.defaults()
        options = self.check_options(options)
        explicit_size = "subsample_size" in options
        o = {**defaults, **options}
        lr, gp = o["lr"], o["gradient_penalty"]
        betas = o["betas"]
        if (
            not isinstance(betas, tuple | list)
            or len(betas) != 2
            or not all(isinstance(b, int | float) and not isinstance(b, bool) and 0 <= b < 1 for b in betas)
        ):
            raise ValueError(f"betas must be two numbers in [0, 1), e.g. (0.5, 0.999); got {betas!r}.")
        n = model.num_items(data)
        size = o["subsample_size"]
        if size is None:
            size = n
        elif size > n:
            if explicit_size:
                raise ValueError(
                    f"subsample_size must be an int in [1, {n}] (the number of items) or None; got {size!r}."
                )
            size = n
        size = int(size)

        objective = model.adversarial_objective(data)  # fresh weights, in the param store
        g_params = list(objective.generator_parameters())
        d_params = list(objective.discriminator_parameters())
        for which, group in (("generator", g_params), ("discriminator", d_params)):
            if not group:
                raise ValueError(
                    f"{model.name}'s adversarial_objective() returned no {which} parameters; it must hand "
                    f"over the {which}'s trainable leaf tensors (requires_grad=True)."
                )
        adam = {"lr": float(lr), "betas": (float(betas[0]), float(betas[1]))}
        g_opt = torch.optim.Adam(g_params, **adam)  # type: ignore[arg-type]
        d_opt = torch.optim.Adam(d_params, **adam)  # type: ignore[arg-type]

        perm, pos = torch.arange(n), n

        def real_batch() -> torch.Tensor:
            nonlocal perm, pos
            if size == n:
                return data
            if pos + size > n:
                perm, pos = torch.randperm(n), 0
            index = perm[pos : pos + size]
            pos += size
            return data.index_select(0, index)

        g_losses = np.empty(o["num_steps"])
        d_losses = np.empty(o["num_steps"])
        with tqdm(total=o["num_steps"], disable=not progress, desc="adversarial", leave=False) as bar:
            for step in range(o["num_steps"]):
                for _ in range(o["n_critic"]):
                    real = real_batch()
                    if gp:
                        real = real.detach().requires_grad_(True)
                    with torch.no_grad():
                        fake = objective.generate(size)
                    d_real = objective.discriminate(real)
                    d_loss = F.softplus(-d_real).mean() + F.softplus(objective.discriminate(fake)).mean()
                    loss = d_loss
                    if gp:
                        (grad,) = torch.autograd.grad(d_real.sum(), real, create_graph=True)
                        loss = loss + 0.5 * gp * grad.pow(2).sum(-1).mean()
                    d_opt.zero_grad(set_to_none=True)
                    loss.backward()
                    d_opt.step()
                g_loss = F.softplus(-objective.discriminate(objective.generate(size))).mean()
                g_opt.zero_grad(set_to_none=True)
                g_loss.backward()
                g_opt.step()
                g_losses[step], d_losses[step] = float(g_loss.detach()), float(d_loss.detach())
                if not (math.isfinite(g_losses[step]) and math.isfinite(d_losses[step])):
                    raise FloatingPointError(
                        f"adversarial losses became non-finite at step {step} (generator {g_losses[step]}, "
                        f"discriminator {d_losses[step]}); lower lr (now {lr}), raise gradient_penalty "
                        f"(now {gp}) or standardise the data."
                    )
                bar.update(1)
                if (step + 1) % 100 == 0:
                    bar.set_postfix(g=f"{g_losses[step]:.3f}", d=f"{d_losses[step]:.3f}")

        problems: list[str] = []
        tail = float(d_losses[-max(1, o["num_steps"] // 10) :].mean())
        if tail < _WIN:
            problems.append(
                f"the discriminator won outright (mean loss {tail:.3g} over the last tenth of the steps, "
                f"against {_CHANCE:.3f} when it cannot tell real from fake): the generated items are easy "
                "to tell from the data; raise gradient_penalty, lower lr or change num_steps"
            )
        for p in g_params + d_params:
            p.grad = None
        return Fit(
            model=model,
            data=data,
            method=self.name,
            params={k: v.detach().clone() for k, v in objective.params().items()},
            history=g_losses,
            converged=not problems,
            seed=seed,
            extras={
                "discriminator_loss": d_losses,
                "convergence": problems,
                "optim": f"Adam(lr={lr}, betas={tuple(betas)})",
            },
        )


register_backend("adversarial", Adversarial)
