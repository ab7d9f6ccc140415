"""ChEES-HMC: many chains in lockstep on one batched potential (``method="mcmc", kernel="chees"``).

Hoffman, Radul and Sountsov (2021), "An adaptive MCMC scheme for setting trajectory lengths in
Hamiltonian Monte Carlo" (AISTATS).  Every chain shares one step size, one trajectory length and
one diagonal mass matrix, so a leapfrog step of all chains is one evaluation of the potential
and its gradient on a ``(chains, dim)`` tensor:

- the potential of all chains at once: the model is traced once with the chains as an extra
  plate left of its own plates, every continuous site conditioned on a ``(chains, ...)`` value;
  discrete latents are summed out by tensor variable elimination down to the chains plate
  (``pyro.ops.contract``); the result is checked against Pyro's own one-state potential at every
  chain's starting point before sampling starts, so a model that does not broadcast over the
  extra dim is caught (a ``ValueError`` naming the reason, never silent wrong answers);
- the potential and its gradient are traced together to one static graph of ATen operations
  (``make_fx``) and compiled with ``torch.jit.trace``, which removes Pyro's per-call tracing
  cost; the compiled function is checked against the uncompiled one at two sets of points, and a
  model whose trace reads tensor values (Python control flow), or that the tracers cannot
  follow, runs uncompiled (``fit.extras["chees"]["compiled"]`` says which);
- each transition integrates ``ceil(h * T / eps)`` leapfrog steps, ``h`` a Halton (van der Corput)
  jitter in (0, 1) shifted by the seed, and accepts per chain by Metropolis; an energy error
  above 1000 (or a non-finite one) is a divergence and rejected;
- warm-up: the step size ``eps`` by dual averaging (Hoffman and Gelman 2014) on the mean of
  the chains' acceptance probabilities (a divergent transition counts as 0), the trajectory
  length ``T`` by Adam on the gradient of the ChEES criterion
  ``E[(|x' - mean x'|^2 - |x - mean x|^2)^2] / 4`` with respect to ``log T`` (acceptance-weighted
  over chains), the diagonal inverse mass matrix from the variance of every chain's warm-up draws
  over Stan's doubling windows (regularised towards 1e-3 as Stan does).  After warm-up ``eps``
  and ``T`` are fixed at their running averages.

All chains cost about one: the model is evaluated once per leapfrog step for all of them.  With
few chains the across-chain ChEES gradient is noisy; 16 to 64 chains adapt better (the defaults
keep the backend's ``num_chains``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from probgen.inference._potential import BatchedPotential

__all__ = ["BatchedPotential", "ChEESResult", "run_chees"]  # BatchedPotential: re-exported from _potential

#: An energy error above this is a divergence (Stan's and NumPyro's threshold).
_MAX_ENERGY_ERROR = 1000.0
#: Adam's learning rate and second-moment decay for log T (the paper's and TFP's values).
_ADAM_RATE = 0.025
_ADAM_BETA2 = 0.95
#: Weight of the newest value in the running averages of eps and T: t ** -_AVERAGE_DECAY.
_AVERAGE_DECAY = 0.5


def _van_der_corput(i: int) -> float:
    """The ``i``-th point (``i >= 1``) of the base-2 van der Corput sequence, in (0, 1)."""
    out, denom = 0.0, 1.0
    while i:
        denom *= 2.0
        out += (i & 1) / denom
        i >>= 1
    return out


def _stan_windows(warmup: int) -> tuple[int, list[int]]:
    """End of the initial buffer, and the warm-up iterations after which the mass matrix is
    updated (Stan's doubling windows: 75 + 25, 50, 100, ... + 50 iterations by default)."""
    if warmup < 20:
        return warmup, []
    init, term, base = 75, 50, 25
    if init + term + base > warmup:
        init, term = int(0.15 * warmup), int(0.1 * warmup)
        base = warmup - init - term
    ends = []
    start, size = init, base
    while True:
        end = start + size
        if end + 2 * size > warmup - term:  # the last window stretches to the terminal buffer
            ends.append(warmup - term)
            break
        ends.append(end)
        start, size = end, 2 * size
    return init, ends


@dataclass
class _DualAveraging:
    """Nesterov dual averaging of log step size (Hoffman and Gelman 2014, Stan's constants)."""

    mu: float
    target: float
    gamma: float = 0.05
    t0: float = 10.0
    kappa: float = 0.75
    t: int = 0
    h_bar: float = 0.0
    log_x_bar: float = 0.0

    def update(self, accept: float) -> float:
        self.t += 1
        eta = 1.0 / (self.t + self.t0)
        self.h_bar = (1 - eta) * self.h_bar + eta * (self.target - accept)
        log_x = self.mu - math.sqrt(self.t) / self.gamma * self.h_bar
        w = self.t ** (-self.kappa)
        self.log_x_bar = w * log_x + (1 - w) * self.log_x_bar
        return math.exp(log_x)


@dataclass
class ChEESResult:
    """Draws and per-draw statistics of a ChEES run.

    ``draws``: unconstrained states ``(C, S, D)``; ``stats``: arrays ``(C, S)`` by name;
    ``step_size`` and ``trajectory_length``: the values kept after warm-up; ``inverse_mass``:
    the diagonal inverse mass matrix ``(D,)``.
    """

    draws: Tensor
    stats: dict[str, np.ndarray]
    step_size: float
    trajectory_length: float
    inverse_mass: Tensor
    compiled: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


def _find_step_size(
    potential: BatchedPotential, z: Tensor, pe: Tensor, grad: Tensor, inv_mass: Tensor
) -> float:
    """Stan's heuristic: double or halve one leapfrog step until the mean acceptance crosses 1/2."""
    eps = 1.0
    direction = 0
    for _ in range(60):
        p = torch.randn_like(z) / inv_mass.sqrt()
        h0 = pe + 0.5 * (p * p * inv_mass).sum(-1)
        z1, p1, pe1, _ = _leapfrog(potential, z, p, grad, eps, 1, inv_mass)
        h1 = pe1 + 0.5 * (p1 * p1 * inv_mass).sum(-1)
        delta = torch.nan_to_num(h0 - h1, nan=-math.inf)
        log_accept = float(torch.logsumexp(torch.clamp(delta, max=0.0), 0)) - math.log(len(delta))
        step = 1 if log_accept > math.log(0.5) else -1
        if direction == 0:
            direction = step
        elif step != direction:
            break
        eps = eps * 2.0 if direction == 1 else eps / 2.0
        if not 1e-7 < eps < 1e7:
            break
    return eps


def _leapfrog(
    potential: BatchedPotential, z: Tensor, p: Tensor, grad: Tensor, eps: float, steps: int, inv_mass: Tensor
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``steps`` leapfrog steps of every chain; returns position, momentum, potential, gradient."""
    pe = torch.zeros(z.shape[0], dtype=z.dtype)
    p = p - 0.5 * eps * grad
    for i in range(steps):
        z = z + eps * inv_mass * p
        pe, grad = potential.value_and_grad(z)
        if i < steps - 1:
            p = p - eps * grad
    p = p - 0.5 * eps * grad
    return z, p, pe, grad


def run_chees(
    potential: BatchedPotential,
    init: Tensor,
    *,
    num_warmup: int,
    num_samples: int,
    target_accept_prob: float,
    max_steps: int,
    initial_step_size: float | None,
    generator_seed: int,
    progress: bool = False,
    keep_warmup: bool = False,
) -> ChEESResult:
    """Warm up and sample every chain of ``potential`` in lockstep from ``init`` ``(C, D)``.

    Returns a :class:`ChEESResult`; ``stats`` holds ``diverging``, ``step_size``, ``n_steps``,
    ``acceptance_rate``, ``lp`` (minus the potential of the state drawn), ``energy`` (the
    Hamiltonian of the state drawn, with its momentum) and ``trajectory_length`` per post-warm-up draw.
    ``keep_warmup=True`` keeps the warm-up iterations too, in ``extra["warmup_draws"]`` ``(C,
    num_warmup, D)`` and ``extra["warmup_stats"]``.
    """
    C, D = init.shape
    z = init.detach().clone()
    pe, grad = potential.value_and_grad(z)
    if not bool(torch.isfinite(pe).all()):
        bad = [c for c in range(C) if not bool(torch.isfinite(pe[c]))]
        raise ValueError(f"chain(s) {bad} start at a point of zero density; give other starting points")
    inv_mass = torch.ones(D, dtype=z.dtype)
    eps = (
        initial_step_size
        if initial_step_size is not None
        else _find_step_size(potential, z, pe, grad, inv_mass)
    )
    da = _DualAveraging(mu=math.log(10 * eps), target=target_accept_prob)
    # trajectory length: start at a few steps' worth, adapted on log T by Adam
    log_T = math.log(eps * 4)
    adam_v = 0.0
    adam_t = 0
    T_avg_log = log_T
    eps_avg_log = math.log(eps)
    buffer, ends = _stan_windows(num_warmup)
    windows = set(ends)
    window_draws: list[Tensor] = []
    shift = float(np.random.default_rng(generator_seed).uniform())

    keep = torch.empty(C, num_samples, D, dtype=z.dtype)
    names = ("diverging", "step_size", "n_steps", "acceptance_rate", "lp", "energy", "trajectory_length")
    stats = {k: np.zeros((C, num_samples)) for k in names}
    warm_keep = torch.empty(C, num_warmup if keep_warmup else 0, D, dtype=z.dtype)
    warm_stats = {k: np.zeros((C, warm_keep.shape[1])) for k in names}
    total = num_warmup + num_samples
    bar = tqdm(range(total), disable=not progress, desc="chees")
    n_warm_div = 0
    for it in bar:
        warm = it < num_warmup
        T = math.exp(log_T) if warm else math.exp(T_avg_log)
        step = eps if warm else math.exp(eps_avg_log)
        jitter = (_van_der_corput(it + 1) + shift) % 1.0 or 0.5
        n_steps = int(min(max_steps, max(1, math.ceil(jitter * T / step))))
        p = torch.randn(C, D, dtype=z.dtype) / inv_mass.sqrt()
        kinetic = 0.5 * (p * p * inv_mass).sum(-1)
        h0 = pe + kinetic
        z1, p1, pe1, grad1 = _leapfrog(potential, z, p, grad, step, n_steps, inv_mass)
        h1 = pe1 + 0.5 * (p1 * p1 * inv_mass).sum(-1)
        delta = h1 - h0
        finite = torch.isfinite(delta) & torch.isfinite(grad1).all(-1)
        diverging = ~finite | (delta > _MAX_ENERGY_ERROR)
        accept_prob = torch.where(diverging, torch.zeros_like(delta), torch.exp(torch.clamp(-delta, max=0.0)))
        accepted = torch.rand(C, dtype=z.dtype) < accept_prob
        z_prev = z
        z = torch.where(accepted[:, None], z1, z)
        pe = torch.where(accepted, pe1, pe)
        grad = torch.where(accepted[:, None], grad1, grad)
        if keep_warmup or not warm:
            out, out_stats, s = (warm_keep, warm_stats, it) if warm else (keep, stats, it - num_warmup)
            out[:, s] = z
            out_stats["diverging"][:, s] = diverging.numpy()
            out_stats["step_size"][:, s] = step
            out_stats["n_steps"][:, s] = n_steps
            out_stats["acceptance_rate"][:, s] = accept_prob.numpy()
            out_stats["lp"][:, s] = (-pe).numpy()
            out_stats["energy"][:, s] = torch.where(accepted, h1, h0).numpy()
            out_stats["trajectory_length"][:, s] = T
        if warm:
            n_warm_div += int(diverging.sum())
            ok = ~diverging
            # step size: the chains' mean acceptance probability (divergent chains count as 0)
            eps = da.update(float(accept_prob.mean()))
            w = (it + 1) ** (-_AVERAGE_DECAY)
            eps_avg_log = w * math.log(eps) + (1 - w) * eps_avg_log
            # trajectory length: ChEES gradient with respect to log T
            if bool(ok.any()):
                weights = accept_prob * ok
                mean_new = (weights[:, None] * torch.where(ok[:, None], z1, 0.0)).sum(
                    0
                ) / weights.sum().clamp(min=1e-10)
                mean_old = z_prev.mean(0)
                new_c = torch.where(ok[:, None], z1 - mean_new, 0.0)
                old_c = z_prev - mean_old
                velocity = torch.where(ok[:, None], inv_mass * p1, 0.0)
                g_chain = jitter * T * ((new_c**2).sum(-1) - (old_c**2).sum(-1)) * (new_c * velocity).sum(-1)
                g = float((weights * g_chain).sum() / weights.sum().clamp(min=1e-10))
                if math.isfinite(g):
                    adam_t += 1
                    adam_v = _ADAM_BETA2 * adam_v + (1 - _ADAM_BETA2) * g * g
                    v_hat = adam_v / (1 - _ADAM_BETA2**adam_t)
                    log_T += _ADAM_RATE * g / (math.sqrt(v_hat) + 1e-8)
                    log_T = min(log_T, math.log(max_steps * eps))
                    T_avg_log = w * log_T + (1 - w) * T_avg_log
            window_draws.append(z.clone())
            if it + 1 == buffer:  # the initial buffer only finds the typical set: not used
                window_draws = []
            if it + 1 in windows:
                draws = torch.cat(window_draws)
                n = draws.shape[0]
                var = draws.var(0) if n > 1 else torch.ones(D, dtype=z.dtype)
                new_inv = (n / (n + 5.0)) * var + 1e-3 * (5.0 / (n + 5.0))
                inv_mass = new_inv.to(z.dtype)
                window_draws = []
                eps = _find_step_size(potential, z, pe, grad, inv_mass)
                da = _DualAveraging(mu=math.log(10 * eps), target=target_accept_prob)
                eps_avg_log = math.log(eps)
            if it + 1 == num_warmup:
                eps_avg_log = da.log_x_bar if da.t else math.log(eps)
    bar.close()
    return ChEESResult(
        draws=keep,
        stats=stats,
        step_size=math.exp(eps_avg_log),
        trajectory_length=math.exp(T_avg_log),
        inverse_mass=inv_mass,
        extra={"warmup_divergences": n_warm_div}
        | ({"warmup_draws": warm_keep, "warmup_stats": warm_stats} if keep_warmup else {}),
    )
